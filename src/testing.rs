//! Helpers shared by the capabilities' tests.
//!
//! `#[pg_test]` functions run inside one transaction that is rolled back. Behaviour that
//! needs commits, several sessions, a slot or an exact SQLSTATE is tested from plain
//! `#[test]` functions through [`client`], an autocommit connection to the same test server.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Starting the test server is what running a first in-server test does.
    #[pg_test]
    fn harness_ready() {}
}

/// A new autocommit session on the test server (started if needed), as its superuser.
#[cfg(test)]
pub fn client() -> postgres::Client {
    if let Err(e) = pgrx_tests::run_test(
        "harness_ready",
        None,
        crate::pg_test::postgresql_conf_options(),
    ) {
        panic!("the test server did not start: {e:?}");
    }
    match pgrx_tests::client() {
        Ok((client, _session)) => client,
        Err(e) => panic!("cannot connect to the test server: {e:?}"),
    }
}

/// A new session on the test server logged in as `user` (a LOGIN role; the test server
/// trusts local connections).
#[cfg(test)]
pub fn client_as(user: &str) -> postgres::Client {
    connect(user, None)
}

/// A new session on the test server's database `database`, as its superuser.
#[cfg(test)]
pub fn client_in(database: &str) -> postgres::Client {
    connect("", Some(database))
}

/// A session in a new database `name` made with `options` (an encoding, say), with the
/// extension created in it; a database a failed run left behind is dropped first.
/// [`drop_database`] removes it at the end of the test.
#[cfg(test)]
pub fn fresh_database(name: &str, options: &str) -> postgres::Client {
    let mut c = client();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name} {options}"),
    ] {
        if let Err(e) = c.batch_execute(&sql) {
            panic!("{sql}: {e}");
        }
    }
    let mut d = client_in(name);
    if let Err(e) = d.batch_execute("CREATE EXTENSION pg_platform") {
        panic!("CREATE EXTENSION pg_platform in {name}: {e}");
    }
    d
}

/// Drops a database [`fresh_database`] made, closing its sessions.
#[cfg(test)]
pub fn drop_database(name: &str) {
    let sql = format!("DROP DATABASE {name} WITH (FORCE)");
    if let Err(e) = client().batch_execute(&sql) {
        panic!("{sql}: {e}");
    }
}

/// A session as `user` ("": the superuser `client` logs in as) to `database` (None: the
/// test database).
#[cfg(test)]
fn connect(user: &str, database: Option<&str>) -> postgres::Client {
    let mut c = client();
    let row = match c.query_one(
        "SELECT coalesce(host(inet_server_addr()), 'localhost'), current_setting('port')::int4, current_database()::text,
                session_user::text",
        &[],
    ) {
        Ok(row) => row,
        Err(e) => panic!("cannot read the test server's address: {e}"),
    };
    let (host, port, db, me): (String, i32, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let user = if user.is_empty() { me.as_str() } else { user };
    match postgres::Config::new()
        .host(&host)
        .port(port as u16)
        .user(user)
        .dbname(database.unwrap_or(&db))
        .connect(postgres::NoTls)
    {
        Ok(c) => c,
        Err(e) => panic!("cannot log in as {user} to {database:?}: {e}"),
    }
}

/// The SQLSTATE and message of a statement that must fail.
#[cfg(test)]
pub fn expect_error(client: &mut postgres::Client, sql: &str) -> (String, String) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => match e.as_db_error() {
            Some(db) => (db.code().code().to_string(), db.message().to_string()),
            None => panic!("expected a database error from {sql}, got {e}"),
        },
    }
}

/// A single value from a query that must return exactly one row.
#[cfg(test)]
pub fn one<T: for<'a> postgres::types::FromSql<'a>>(client: &mut postgres::Client, sql: &str) -> T {
    match client.query_one(sql, &[]) {
        Ok(row) => row.get(0),
        Err(e) => match e.as_db_error() {
            Some(d) => panic!("{sql}: {} {}", d.code().code(), d.message()),
            None => panic!("{sql}: {e}"),
        },
    }
}
