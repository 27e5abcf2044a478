//! Audit tests. Everything that matters here is about committed work and several
//! sessions, so the tests run through autocommit clients. The log is shared by every test
//! of the server: each test reads the rows of its own tables.

use crate::testing::{client, client_as, expect_error, one};

fn run(c: &mut postgres::Client, sql: &str) {
    if let Err(e) = c.batch_execute(sql) {
        match e.as_db_error() {
            Some(d) => panic!("{sql}: {} {}", d.code().code(), d.message()),
            None => panic!("{sql}: {e}"),
        }
    }
}

fn rows(c: &mut postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Tests that change the log's own catalog rows (the tampering below) or drop its
/// partitions (retention) take turns. A tampering transaction holds the pg_trigger and
/// pg_class rows of the log and its partitions, and may then wait for the lock a
/// retention pass holds on the log while that pass waits to drop a partition whose rows
/// the tamperer holds: a deadlock that only a superuser's catalog trick can make, and the
/// deadlock detector may end either side.
static LOG_CATALOG_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn log_catalog_turn() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the turn leaves nothing the next one relies on.
    LOG_CATALOG_TURN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `sql` with the log's guard triggers disabled in `pg_trigger` directly, as only a
/// superuser going around SQL can (a GRANT and REVOKE on each table make every session
/// reload it), then puts the guard back.
fn tamper(c: &mut postgres::Client, sql: &str) {
    run(c, &tamper_sql(sql));
}

fn tamper_sql(sql: &str) -> String {
    let guarded = "tgname = 'refuse_change' AND (tgrelid IN ('platform.audit_log'::regclass, 'platform.audit_block'::regclass)
                      OR tgrelid IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = 'platform.audit_log'::regclass))";
    let reload = "DO $$ DECLARE r regclass; BEGIN
                    FOR r IN SELECT 'platform.audit_block'::regclass UNION ALL SELECT 'platform.audit_log'::regclass
                             UNION ALL SELECT inhrelid::regclass FROM pg_catalog.pg_inherits WHERE inhparent = 'platform.audit_log'::regclass LOOP
                      EXECUTE format('GRANT SELECT ON %s TO PUBLIC', r);
                      EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', r);
                    END LOOP; END $$";
    format!(
        "UPDATE pg_catalog.pg_trigger SET tgenabled = 'D' WHERE {guarded}; {reload};
         {sql};
         UPDATE pg_catalog.pg_trigger SET tgenabled = 'A' WHERE {guarded}; {reload}"
    )
}

#[test]
fn each_operation_is_recorded_with_its_images_and_actor() {
    let mut c = client();
    run(
        &mut c,
        "DROP TABLE IF EXISTS public.t_aud_account;
         CREATE TABLE public.t_aud_account (id int PRIMARY KEY, owner text, balance numeric(12,2), pin text);
         SELECT platform.audit_table('public.t_aud_account', exclude_columns => '{pin}', include_statement => true);
         DROP ROLE IF EXISTS t_aud_admin; CREATE ROLE t_aud_admin LOGIN IN ROLE platform_admin;
         DROP ROLE IF EXISTS t_aud_dev; CREATE ROLE t_aud_dev LOGIN IN ROLE platform_developer;
         DROP ROLE IF EXISTS t_aud_ro; CREATE ROLE t_aud_ro LOGIN IN ROLE platform_readonly;
         DROP ROLE IF EXISTS t_aud_auditor; CREATE ROLE t_aud_auditor LOGIN IN ROLE platform_auditor;
         DROP ROLE IF EXISTS t_aud_other; CREATE ROLE t_aud_other LOGIN;
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.t_aud_account
            TO t_aud_admin, t_aud_dev, t_aud_ro, t_aud_auditor, t_aud_other;",
    );
    let settings: String = one(
        &mut c,
        "SELECT include_statement || ' ' || exclude_columns::text || ' ' || fully_enabled
           FROM platform.audited_tables WHERE table_name = 'public.t_aud_account'::regclass",
    );
    assert_eq!(settings, "true {pin} true");
    // Each class logs in as itself: session_user and current_user are the login role.
    run(
        &mut client_as("t_aud_dev"),
        "SET application_name = 'teller-app';
         INSERT INTO public.t_aud_account VALUES (1, 'ann', 10.00, '1234'), (2, 'bob', 5.00, '9999')",
    );
    run(
        &mut client_as("t_aud_other"),
        "UPDATE public.t_aud_account SET balance = 12.50 WHERE id = 1",
    );
    run(
        &mut client_as("t_aud_ro"),
        "INSERT INTO public.t_aud_account VALUES (3, 'cy', 1.00, NULL)",
    );
    run(
        &mut client_as("t_aud_auditor"),
        "UPDATE public.t_aud_account SET pin = '0000' WHERE id = 3",
    );
    run(
        &mut client_as("t_aud_admin"),
        "DELETE FROM public.t_aud_account WHERE id = 2",
    );
    run(&mut c, "TRUNCATE public.t_aud_account");
    let log = rows(
        &mut c,
        "SELECT concat_ws(' | ', operation, statement_seq, row_seq, primary_key::text, old_values::text, new_values::text,
                          current_user_name, role_class, application_name,
                          session_user_name = current_user_name, backend_pid > 0, statement IS NOT NULL)
           FROM platform.audit_trail WHERE table_name = 'public.t_aud_account' AND operation NOT IN ('DDL', 'DROP') ORDER BY xid, statement_seq, row_seq",
    );
    // The log stores who and from where on a statement's first row only; the trail view
    // above shows them on each.
    let stored: String = one(
        &mut c,
        "SELECT string_agg(row_seq || ':' || num_nonnulls(session_user_name, current_user_name, role_class,
                                                    application_name, backend_pid, statement)
                           || ':' || (row_seq = 1 OR num_nulls(client_addr, client_port) = 2), ' ' ORDER BY row_seq)
           FROM platform.audit_log WHERE table_name = 'public.t_aud_account' AND operation = 'INSERT' AND new_values->>'owner' IN ('ann', 'bob')",
    );
    assert_eq!(stored, "1:6:true 2:0:true");
    let expected = [
        r#"INSERT | 1 | 1 | {"id":1} | {"id":1,"owner":"ann","balance":"10.00"} | t_aud_dev | developer | teller-app | t | t | t"#,
        r#"INSERT | 1 | 2 | {"id":2} | {"id":2,"owner":"bob","balance":"5.00"} | t_aud_dev | developer | teller-app | t | t | t"#,
        r#"UPDATE | 1 | 1 | {"id":1} | {"balance":"10.00"} | {"balance":"12.50"} | t_aud_other | other | pgrx_tests | t | t | t"#,
        r#"INSERT | 1 | 1 | {"id":3} | {"id":3,"owner":"cy","balance":"1.00"} | t_aud_ro | readonly | pgrx_tests | t | t | t"#,
        r#"UPDATE | 1 | 1 | {"id":3} | {} | {} | t_aud_auditor | auditor | pgrx_tests | t | t | t"#,
        r#"DELETE | 1 | 1 | {"id":2} | {"id":2,"owner":"bob","balance":"5.00"} | t_aud_admin | admin | pgrx_tests | t | t | t"#,
    ];
    assert_eq!(log.len(), 7, "{log:#?}");
    for (got, want) in log.iter().zip(expected) {
        // application_name of the test client is whatever the driver sets: compare the rest.
        let strip = |s: &str| {
            let mut parts: Vec<&str> = s.split(" | ").collect();
            let n = parts.len();
            parts.remove(n - 4);
            parts.join(" | ")
        };
        assert_eq!(strip(got), strip(want));
    }
    assert!(log[0].contains("teller-app"), "{}", log[0]);
    assert!(log[6].starts_with("TRUNCATE | 1 | 1 | "), "{}", log[6]);
    assert!(
        log[6].contains(" | admin | "),
        "a superuser is an admin: {}",
        log[6]
    );
    // Several statements in one transaction: numbered in order, one transaction id.
    run(
        &mut c,
        "BEGIN; INSERT INTO public.t_aud_account VALUES (7, 'x', 0, NULL);
                 UPDATE public.t_aud_account SET owner = 'y' WHERE id = 7; COMMIT",
    );
    let seq: String = one(
        &mut c,
        "SELECT string_agg(statement_seq::text, ',' ORDER BY xid, statement_seq, row_seq) || ' ' || count(DISTINCT xid)
           FROM platform.audit_log WHERE table_name = 'public.t_aud_account' AND primary_key::text = '{\"id\":7}'",
    );
    assert_eq!(seq, "1,2 1");
    // DDL is recorded too, with its actor.
    run(
        &mut c,
        "ALTER TABLE public.t_aud_account OWNER TO t_aud_admin;
         SET ROLE t_aud_admin; ALTER TABLE public.t_aud_account ADD COLUMN note text; RESET ROLE",
    );
    let ddl: String = one(
        &mut c,
        "SELECT new_values::text || ' ' || current_user_name FROM platform.audit_log
          WHERE operation = 'DDL' AND table_name = 'public.t_aud_account' ORDER BY xid DESC, statement_seq DESC, row_seq DESC LIMIT 1",
    );
    assert_eq!(
        ddl,
        r#"{"command_tag":"ALTER TABLE","object_type":"table"} t_aud_admin"#
    );
    // platform.audit_ddl = off stops recording DDL (for this session here).
    let ddl_rows = "SELECT count(*) FROM platform.audit_log WHERE operation = 'DDL' AND table_name = 'public.t_aud_account'";
    let before: i64 = one(&mut c, ddl_rows);
    run(&mut c, "SET platform.audit_ddl = off; ALTER TABLE public.t_aud_account ADD COLUMN quiet text; RESET platform.audit_ddl");
    assert_eq!(
        one::<i64>(&mut c, ddl_rows),
        before,
        "DDL recorded with platform.audit_ddl = off"
    );
    // Unaudited: nothing more is recorded.
    assert!(one::<bool>(
        &mut c,
        "SELECT platform.unaudit_table('public.t_aud_account')"
    ));
    run(
        &mut c,
        "INSERT INTO public.t_aud_account VALUES (8, 'z', 0, NULL)",
    );
    assert_eq!(
        one::<i64>(&mut c, "SELECT count(*) FROM platform.audit_log WHERE table_name = 'public.t_aud_account' AND primary_key::text = '{\"id\":8}'"),
        0
    );
    run(&mut c, "DROP TABLE public.t_aud_account;
                 DROP ROLE t_aud_admin; DROP ROLE t_aud_dev; DROP ROLE t_aud_ro; DROP ROLE t_aud_auditor; DROP ROLE t_aud_other");
}

#[test]
fn a_rollback_or_an_aborted_subtransaction_leaves_nothing() {
    let mut c = client();
    run(&mut c, "DROP TABLE IF EXISTS public.t_aud_tx; CREATE TABLE public.t_aud_tx (id int PRIMARY KEY, v text);
                 SELECT platform.audit_table('public.t_aud_tx')");
    run(
        &mut c,
        "BEGIN; INSERT INTO public.t_aud_tx VALUES (1, 'gone'); ROLLBACK",
    );
    run(&mut c, "BEGIN; SAVEPOINT s; INSERT INTO public.t_aud_tx VALUES (2, 'gone too'); ROLLBACK TO SAVEPOINT s;
                 INSERT INTO public.t_aud_tx VALUES (3, 'kept'); COMMIT");
    let log: Vec<String> = rows(&mut c, "SELECT new_values::text FROM platform.audit_log WHERE table_name = 'public.t_aud_tx' AND operation <> 'DDL' ORDER BY xid, statement_seq, row_seq");
    assert_eq!(log, vec![r#"{"id":3,"v":"kept"}"#.to_string()]);
    run(&mut c, "DROP TABLE public.t_aud_tx");
}

#[test]
fn bad_audit_calls_are_refused() {
    let mut c = client();
    run(&mut c, "DROP VIEW IF EXISTS public.t_aud_view; CREATE VIEW public.t_aud_view AS SELECT 1 AS x;
                 DROP TABLE IF EXISTS public.t_aud_bad; CREATE TABLE public.t_aud_bad (id int);
                 DROP ROLE IF EXISTS t_aud_dev2; CREATE ROLE t_aud_dev2 IN ROLE platform_developer;");
    for (sql, code) in [
        ("SELECT platform.audit_table('public.t_aud_view')", "42809"),
        ("SELECT platform.audit_table('platform.audit_log')", "0A000"),
        (
            "SELECT platform.audit_table('public.t_aud_bad', exclude_columns => '{nope}')",
            "42703",
        ),
        (
            "SELECT platform.audit_table('public.t_aud_bad', exclude_columns => ARRAY[NULL]::text[])",
            "22004",
        ),
        (
            "SET ROLE t_aud_dev2; SELECT platform.audit_table('public.t_aud_bad')",
            "42501",
        ),
        (
            "SET ROLE t_aud_dev2; SELECT * FROM platform.audit_log",
            "42501",
        ),
        (
            "SET ROLE t_aud_dev2; SELECT * FROM platform.audit_trail",
            "42501",
        ),
        (
            "SET ROLE t_aud_dev2; SELECT * FROM platform.audit_statement_context(1, now(), '1', 1)",
            "42501",
        ),
        (
            "SELECT * FROM platform.audit_statement_context(1, now(), 'not an xid', 1)",
            "22P02",
        ),
        ("SELECT platform.record_audit_ddl()", "39P03"),
        (
            "SELECT * FROM platform.audit_statement_context(1, now(), '-1', 1)",
            "22P02",
        ),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        run(&mut c, "RESET ROLE");
        assert_eq!(got, code, "{sql}: {message}");
    }
    let triggers: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.t_aud_bad'::regclass",
    );
    assert_eq!(triggers, 0, "a refused call leaves no trigger behind");
    // A statement the log does not hold has no context (NULL arguments neither: STRICT).
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT (SELECT count(*) FROM platform.audit_statement_context(-1, now(), '1', 1))
                  + (SELECT count(*) FROM platform.audit_statement_context(NULL, now(), '1', 1))"
        ),
        0
    );
    run(
        &mut c,
        "DROP VIEW public.t_aud_view; DROP TABLE public.t_aud_bad; DROP ROLE t_aud_dev2",
    );
}

#[test]
fn protected_columns_are_audited_as_ciphertext() {
    let mut c = client();
    run(&mut c, "SELECT platform.create_key('t_aud_pii') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_aud_pii');
                 DROP VIEW IF EXISTS public.t_aud_person_view; DROP TABLE IF EXISTS public.t_aud_person;
                 CREATE TABLE public.t_aud_person (id int PRIMARY KEY, email text)");
    run(
        &mut c,
        "CALL platform.protect_column('public.t_aud_person', 'email', 't_aud_pii')",
    );
    run(&mut c, "SELECT platform.audit_table('public.t_aud_person');
                 INSERT INTO public.t_aud_person_view VALUES (1, 'hidden.person@example.com');
                 UPDATE public.t_aud_person_view SET email = 'other.person@example.com' WHERE id = 1");
    let images: String = one(&mut c, "SELECT string_agg(coalesce(old_values::text, '') || coalesce(new_values::text, ''), ' ')
                                        FROM platform.audit_log WHERE table_name = 'public.t_aud_person' AND operation <> 'DDL'");
    assert!(images.contains("\"email_encrypted\":\"a1"), "{images}");
    assert!(
        !images.contains("person@example.com"),
        "plaintext in the audit log: {images}"
    );
    run(&mut c, "DROP VIEW public.t_aud_person_view; DROP TABLE public.t_aud_person; DROP FUNCTION public.t_aud_person_view_write()");
}

/// The chain under concurrent writers, then each kind of tampering found and put back.
/// One test, so that no other test verifies the log while it is tampered with.
#[test]
fn the_log_is_append_only_and_tampering_is_found() {
    let _turn = log_catalog_turn();
    let mut c = client();
    run(&mut c, "DROP TABLE IF EXISTS public.t_aud_chain; CREATE TABLE public.t_aud_chain (id int PRIMARY KEY, w int, v text);
                 SELECT platform.audit_table('public.t_aud_chain')");
    // 8 writers at once; none waits for another because of the audit.
    std::thread::scope(|s| {
        for w in 0..8 {
            s.spawn(move || {
                let mut c = client();
                for i in 0..50 {
                    let id = w * 1000 + i;
                    run(&mut c, &format!("INSERT INTO public.t_aud_chain VALUES ({id}, {w}, 'v'); UPDATE public.t_aud_chain SET v = 'w' WHERE id = {id}"));
                }
            });
        }
    });
    // And one statement of several rows: who and from where are stored on its first row.
    run(
        &mut c,
        "INSERT INTO public.t_aud_chain SELECT 9000 + g, 9, 'many' FROM generate_series(1, 5) g",
    );
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM platform.audit_log WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'"
        ),
        805
    );
    // Other tests' transactions that began before these rows hold them back first.
    seal_everything(&mut c);
    let verdict =
        "SELECT intact::text || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    assert_eq!(one::<String>(&mut c, verdict), "true ");
    let sealed: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.audit_log l WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'
                                     AND l.xid < (SELECT max(xid_hi) FROM platform.audit_block)",
    );
    let state: String = one(
        &mut c,
        "SELECT format('pending %s (min xid %s), xmin %s, sealed up to %s, activity %s',
                       (SELECT count(*) FROM platform.audit_log_pending), (SELECT min(xid) FROM platform.audit_log_pending),
                       pg_snapshot_xmin(pg_current_snapshot()), (SELECT max(xid_hi) FROM platform.audit_block),
                       (SELECT string_agg(backend_xid || ':' || left(query, 60), '; ') FROM pg_stat_activity WHERE backend_xid IS NOT NULL))",
    );
    assert_eq!(sealed, 805, "every committed row is sealed: {state}");

    // Append-only, for the superuser too, also in replica mode.
    for sql in [
        "UPDATE platform.audit_log SET role_class = 'other' WHERE table_name = 'public.t_aud_chain'",
        "DELETE FROM platform.audit_log WHERE table_name = 'public.t_aud_chain'",
        "TRUNCATE platform.audit_log",
        "SET session_replication_role = replica; DELETE FROM platform.audit_log WHERE table_name = 'public.t_aud_chain'",
        "DELETE FROM platform.audit_block",
    ] {
        let (code, message) = expect_error(&mut c, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("append-only"), "{message}");
    }
    run(&mut c, "RESET session_replication_role");

    // A changed row (done by disabling the guard, as only a superuser can).
    let victim: i64 = one(
        &mut c,
        "SELECT min(id) FROM platform.audit_log WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'
                                                AND (primary_key->>'id')::int < 9000",
    );
    // DDL that would disable the guard is refused too, for the superuser.
    for sql in [
        "ALTER TABLE platform.audit_log DISABLE TRIGGER refuse_change",
        "ALTER TABLE platform.audit_log DROP COLUMN role_class",
        "DROP TRIGGER refuse_change ON platform.audit_log",
        "DROP TABLE platform.audit_block",
        "ALTER TABLE platform.audit_log RENAME TO old_log",
        "TRUNCATE platform.audit_block",
    ] {
        let (code, message) = expect_error(&mut c, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    // What remains is a catalog trick, which the chain is for: disable the guard in
    // pg_trigger directly (a GRANT and REVOKE make every session reload the table).
    let tamper = |c: &mut postgres::Client, sql: &str| tamper(c, sql);
    let full = "SELECT intact::text || ' ' || coalesce(first_bad_block::text, '-') || ' ' || coalesce(first_bad_row::text, '-') || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    run(
        &mut c,
        &format!("CREATE TEMP TABLE saved AS SELECT * FROM platform.audit_log WHERE id = {victim}"),
    );
    // Tampered and put back in one transaction: the other tests verify the whole log
    // meanwhile and must never see it tampered.
    run(&mut c, "BEGIN");
    tamper(
        &mut c,
        &format!("UPDATE platform.audit_log SET new_values = '{{\"id\":0}}' WHERE id = {victim}"),
    );
    let found: String = one(&mut c, full);
    assert!(found.starts_with("false "), "{found}");
    assert!(
        found.contains(&format!(
            " {victim} audit row {victim} does not match its hash"
        )),
        "{found}"
    );
    tamper(&mut c, &format!("UPDATE platform.audit_log l SET new_values = s.new_values FROM saved s WHERE l.id = {victim}"));
    assert_eq!(one::<String>(&mut c, verdict), "true ");

    // A deleted row.
    tamper(
        &mut c,
        &format!("DELETE FROM platform.audit_log WHERE id = {victim}"),
    );
    let found: String = one(&mut c, full);
    assert!(found.starts_with("false "), "{found}");
    assert!(found.contains("rows deleted, added or replaced"), "{found}");
    tamper(&mut c, "INSERT INTO platform.audit_log SELECT * FROM saved");
    assert_eq!(one::<String>(&mut c, verdict), "true ");

    // Who and from where, stored on the statement's first row only: changed there, the
    // first row is found; a lie written on a later row is found on that row; the first
    // row deleted leaves the later ones unverifiable.
    let statement =
        "FROM platform.audit_log WHERE table_name = 'public.t_aud_chain' AND operation = 'INSERT'
                       AND (primary_key->>'id')::int > 9000";
    run(
        &mut c,
        &format!("CREATE TEMP TABLE saved_statement AS SELECT * {statement}"),
    );
    let first: i64 = one(&mut c, &format!("SELECT id {statement} AND row_seq = 1"));
    let second: i64 = one(&mut c, &format!("SELECT id {statement} AND row_seq = 2"));
    let app: String = one(&mut c, "SELECT current_setting('application_name')");
    let put_back = "DELETE FROM platform.audit_log WHERE id IN (SELECT id FROM saved_statement);
                    INSERT INTO platform.audit_log SELECT * FROM saved_statement";
    for (sql, bad) in [
        (format!("UPDATE platform.audit_log SET role_class = 'readonly' WHERE id = {first}"), first),
        (format!("UPDATE platform.audit_log SET application_name = 'elsewhere' WHERE id = {first}"), first),
        (
            format!("UPDATE platform.audit_log SET (session_user_name, current_user_name, role_class, backend_pid)
                       = ('mallory', 'mallory', 'other', 1) WHERE id = {second}"),
            second,
        ),
        (format!("DELETE FROM platform.audit_log WHERE id = {first}"), second),
    ] {
        tamper(&mut c, &sql);
        // The trail shows what the first row says (nothing once it is gone).
        let shown: String = one(
            &mut c,
            &format!("SELECT coalesce(session_user_name, '-') || ' ' || coalesce(role_class, '-') || ' ' || coalesce(application_name, '-')
                        FROM platform.audit_trail WHERE id = {second}"),
        );
        assert_eq!(
            shown,
            match bad {
                b if b == first && sql.contains("readonly") => format!("postgres readonly {app}"),
                b if b == first => "postgres admin elsewhere".to_string(),
                b if b == second && sql.contains("mallory") => "mallory other -".to_string(),
                _ => "- - -".to_string(),
            },
            "{sql}"
        );
        let found: String = one(&mut c, full);
        assert!(
            found.contains(&format!(" {bad} audit row {bad} does not match its hash")),
            "{sql}: {found}"
        );
        tamper(&mut c, put_back);
        assert_eq!(one::<String>(&mut c, verdict), "true ", "{sql}");
    }

    // Reordered blocks (two blocks swap places).
    let blocks: i64 = one(&mut c, "SELECT count(*) FROM platform.audit_block");
    if blocks >= 2 {
        tamper(&mut c, "UPDATE platform.audit_block SET block_no = -block_no WHERE block_no IN (1, 2);
                        UPDATE platform.audit_block SET block_no = CASE block_no WHEN -1 THEN 2 ELSE 1 END WHERE block_no < 0");
        let found: String = one(&mut c, full);
        assert!(found.starts_with("false 1 "), "{found}");
        tamper(&mut c, "UPDATE platform.audit_block SET block_no = -block_no WHERE block_no IN (1, 2);
                        UPDATE platform.audit_block SET block_no = CASE block_no WHEN -1 THEN 2 ELSE 1 END WHERE block_no < 0");
        assert_eq!(one::<String>(&mut c, verdict), "true ");
    }
    run(&mut c, "COMMIT");
    // verify_audit(since) checks the blocks sealed since then, and what is not sealed yet.
    let recent: String = one(
        &mut c,
        "SELECT intact || ' ' || (blocks_checked <= (SELECT count(*) FROM platform.audit_block))
           FROM platform.verify_audit(now() - interval '1 minute')",
    );
    assert_eq!(recent, "true true");
    run(&mut c, "DROP TABLE public.t_aud_chain");
}

#[test]
fn audit_settings_report_what_is_missing() {
    let mut c = client();
    let report: Vec<String> = rows(
        &mut c,
        "SELECT setting || '=' || ok FROM platform.audit_settings() ORDER BY setting",
    );
    let report = report.join(" ");
    assert!(report.contains("log_connections=false"), "{report}");
    assert!(report.contains("shared_preload_libraries=true"), "{report}");
    assert!(report.contains("platform.audit_ddl=true"), "{report}");
    assert!(
        report.contains("event triggers platform_audit_ddl, platform_audit_drop=true"),
        "{report}"
    );
}

#[test]
fn the_worker_seals_without_being_asked() {
    let mut c = client();
    run(&mut c, "DROP TABLE IF EXISTS public.t_aud_worker; CREATE TABLE public.t_aud_worker (id int PRIMARY KEY);
                 SELECT platform.audit_table('public.t_aud_worker');
                 INSERT INTO public.t_aud_worker SELECT generate_series(1, 10)");
    // A block only takes rows of transactions older than every running one: other tests'
    // long transactions hold the rows back first. Then the worker, running every second
    // here (platform.worker_naptime = 1), seals them within a few rounds.
    let mut behind = true;
    for _ in 0..1200 {
        behind = one::<bool>(
            &mut c,
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) <= (SELECT max(xid) FROM platform.audit_log
                                                                  WHERE table_name = 'public.t_aud_worker')",
        );
        if !behind {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(!behind, "an older transaction stayed open for 5 minutes");
    let sealed = "SELECT count(*) FROM platform.audit_log l WHERE table_name = 'public.t_aud_worker' AND operation = 'INSERT'
                    AND EXISTS (SELECT 1 FROM platform.audit_block b WHERE b.cluster_id = l.cluster_id
                                   AND l.xid >= b.xid_lo AND l.xid < b.xid_hi)";
    // Within 45 seconds: a worker that exits is restarted after 30 (its log lines are in
    // the failure message if it never comes back).
    let mut count = 0;
    for _ in 0..180 {
        count = one::<i64>(&mut c, sealed);
        if count == 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let state: String = one(
        &mut c,
        "SELECT format('worker %s; pending %s (min xid %s), xmin %s, sealed up to %s, our max xid %s, backends: %s',
                       (SELECT string_agg(pid || ' since ' || backend_start, ', ') FROM platform.worker_status()),
                       (SELECT count(*) FROM platform.audit_log_pending), (SELECT min(xid) FROM platform.audit_log_pending),
                       pg_snapshot_xmin(pg_current_snapshot()), (SELECT max(xid_hi) FROM platform.audit_block),
                       (SELECT max(xid) FROM platform.audit_log WHERE table_name = 'public.t_aud_worker'),
                       (SELECT string_agg(coalesce(backend_type, '?') || '/' || coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-')
                                          || ' xid ' || coalesce(backend_xid::text, '-') || ' ' || left(query, 40), '; ')
                          FROM pg_stat_activity WHERE datname = current_database()))",
    );
    let log: String = if count == 10 {
        String::new()
    } else {
        one(
            &mut c,
            "SELECT coalesce(string_agg(l, E'\n'), '') FROM (
                 SELECT l FROM pg_ls_logdir() f, regexp_split_to_table(pg_read_file('log/' || f.name), E'\n') l
                  WHERE l ~ 'worker|background|terminated|exited|panicked|FATAL' ORDER BY f.modification LIMIT 200) x",
        )
    };
    assert_eq!(
        count, 10,
        "the worker sealed the rows within 45 seconds of their transaction becoming the oldest: {state}\n{log}"
    );
    run(&mut c, "DROP TABLE public.t_aud_worker");
}

#[test]
fn the_log_is_partitioned_by_month_and_its_partitions_are_guarded() {
    let mut c = client();
    run(&mut c, "DROP TABLE IF EXISTS public.t_aud_part; CREATE TABLE public.t_aud_part (id int PRIMARY KEY);
                 SELECT platform.audit_table('public.t_aud_part');
                 INSERT INTO public.t_aud_part VALUES (1)");
    // Registered with the partition capability: monthly in UTC, 3 months ahead, no default.
    let config: String = one(
        &mut c,
        "SELECT control || ' ' || step || ' ' || premake || ' ' || time_zone || ' ' || with_default
           FROM platform.partition_config WHERE parent = 'platform.audit_log'::regclass",
    );
    assert_eq!(config, "event_time 1 mon 3 UTC false");
    let ahead: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.partitions WHERE parent = 'platform.audit_log'::regclass
            AND upper_bound::timestamptz > now() AND NOT is_default",
    );
    assert!(ahead >= 4, "the current month and 3 ahead: {ahead}");
    // The row sits in the partition of this month.
    let holder: String = one(
        &mut c,
        "SELECT tableoid::regclass::text FROM platform.audit_log WHERE table_name = 'public.t_aud_part' AND operation = 'INSERT'",
    );
    let expected: String = one(
        &mut c,
        "SELECT partition::text FROM platform.partitions WHERE parent = 'platform.audit_log'::regclass
            AND lower_bound::timestamptz <= now() AND upper_bound::timestamptz > now()",
    );
    assert_eq!(holder, expected);
    // Each partition carries only the log's BRIN index on xid (no btree a writer would
    // pay for per row), and sealing's transaction-id range search goes through it.
    let indexes: String = one(
        &mut c,
        "SELECT string_agg(DISTINCT am.amname || ' ' || pg_get_indexdef(i.indexrelid, 1, true), ', ')
                || ' ' || (count(*) = (SELECT count(*) FROM pg_inherits WHERE inhparent = 'platform.audit_log'::regclass))
           FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_am am ON am.oid = x.relam
          WHERE i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'platform.audit_log'::regclass)",
    );
    assert_eq!(indexes, "brin xid true");
    run(&mut c, "SET enable_seqscan = off");
    let plan = rows(
        &mut c,
        "EXPLAIN (COSTS OFF) SELECT l.row_hash FROM platform.audit_log l
          WHERE l.xid >= '3'::xid8 AND l.xid < '4000000000'::xid8",
    )
    .join(" ");
    run(&mut c, "RESET enable_seqscan");
    assert!(
        plan.contains("Bitmap Index Scan on") && plan.contains("_xid_idx"),
        "{plan}"
    );
    // Partitions are as append-only as the log, for the superuser too.
    for sql in [
        format!("UPDATE {expected} SET role_class = 'other' WHERE table_name = 'public.t_aud_part'"),
        format!("SET session_replication_role = replica; DELETE FROM {expected} WHERE table_name = 'public.t_aud_part'"),
        format!("TRUNCATE {expected}"),
        format!("DROP TABLE {expected}"),
        format!("ALTER TABLE platform.audit_log DETACH PARTITION {expected}"),
        format!("ALTER TABLE {expected} DISABLE TRIGGER refuse_change"),
        format!("ALTER TABLE {expected} RENAME TO old_part"),
        "CREATE TABLE public.t_aud_catchall PARTITION OF platform.audit_log DEFAULT".to_string(),
    ] {
        let (code, message) = expect_error(&mut c, &sql);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    run(&mut c, "RESET session_replication_role");
    run(&mut c, "DROP TABLE public.t_aud_part");
}

/// Inserts audit rows dated `at`, hashed as the trigger would hash them, in `tx`: once it
/// commits, the next seal takes them like any other row.
fn insert_dated_rows(
    tx: &mut postgres::Transaction,
    table: &str,
    at: &str,
    operation: &str,
    images: &[String],
) {
    let row = tx
        .query_one(
            "SELECT pg_current_xact_id()::text, (extract(epoch FROM $1::text::timestamptz) * 1000000)::int8,
                    (SELECT system_identifier FROM pg_control_system())",
            &[&at],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let (xid, us, cluster): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
    for (i, image) in images.iter().enumerate() {
        let seq = i as i32 + 1;
        let record = super::chain::Record {
            cluster_id: cluster,
            event_time_us: us,
            xid: xid.parse().unwrap_or(0),
            statement_seq: 1,
            row_seq: seq,
            operation: operation.into(),
            table_name: table.into(),
            new_values: Some(image.clone()),
            session_user: "postgres".into(),
            current_user: "postgres".into(),
            role_class: "admin".into(),
            backend_pid: 1,
            ..Default::default()
        };
        tx.execute(
            "INSERT INTO platform.audit_log (cluster_id, event_time, xid, statement_seq, row_seq, operation, table_name,
                                             new_values, session_user_name, current_user_name, role_class, backend_pid, row_hash)
             VALUES ($1, 'epoch'::timestamptz + $2::int8 * interval '1 microsecond', $3::text::xid8, 1, $4, $5, $6, $7::text::json,
                     'postgres', 'postgres', 'admin', 1, $8)",
            &[&cluster, &us, &xid, &seq, &operation, &table, &image, &record.hash().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn write_dated_rows(c: &mut postgres::Client, table: &str, at: &str, n: i32) {
    let mut tx = c.transaction().unwrap_or_else(|e| panic!("{e}"));
    let images: Vec<String> = (1..=n).map(|i| format!("{{\"id\":{i}}}")).collect();
    insert_dated_rows(&mut tx, table, at, "INSERT", &images);
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// Runs the log's maintenance, again while it gives up on its lock or is chosen as a
/// deadlock's victim (other tests and the worker's sealer write to the log all along;
/// maintenance waits at most `platform.maintenance_lock_timeout`).
fn retire_log(c: &mut postgres::Client) -> i32 {
    for _ in 0..300 {
        match c.query_one(
            "SELECT partitions_retired FROM platform.run_maintenance('platform.audit_log')",
            &[],
        ) {
            Ok(r) => return r.get(0),
            Err(e) => match e.as_db_error() {
                Some(d) if d.code().code() == "55P03" || d.code().code() == "40P01" => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Some(d) => panic!(
                    "run_maintenance('platform.audit_log'): {} {} {:?}",
                    d.code().code(),
                    d.message(),
                    d.detail()
                ),
                None => panic!("run_maintenance('platform.audit_log'): {e}"),
            },
        }
    }
    panic!("maintenance of platform.audit_log never got its lock")
}

/// Waits until every transaction up to now has ended, then seals.
fn seal_everything(c: &mut postgres::Client) {
    let target: String = one(c, "SELECT pg_current_xact_id()::text");
    for _ in 0..1200 {
        if one::<bool>(
            c,
            &format!("SELECT pg_snapshot_xmin(pg_current_snapshot()) > '{target}'::xid8"),
        ) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    run(c, "SELECT platform.seal_audit()");
}

#[test]
fn retention_retires_sealed_partitions_and_verification_accounts_for_them() {
    let _turn = log_catalog_turn();
    let mut c = client();
    // Retention waits briefly for its lock and is retried: the other tests' audited
    // writes queue behind a waiting retention no longer than that.
    run(&mut c, "SET platform.maintenance_lock_timeout = '200ms'");
    run(&mut c, "DROP TABLE IF EXISTS public.t_aud_keep; CREATE TABLE public.t_aud_keep (id int PRIMARY KEY);
                 SELECT platform.audit_table('public.t_aud_keep')");
    // Two old months of the log, made the way pg_restore or maintenance make partitions.
    for (name, from, to) in [
        ("platform.audit_log_p20200101", "2020-01-01", "2020-02-01"),
        ("platform.audit_log_p20200201", "2020-02-01", "2020-03-01"),
    ] {
        run(&mut c, &format!(
            "DROP TABLE IF EXISTS {name};
             CREATE TABLE {name} (LIKE platform.audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
             ALTER TABLE platform.audit_log ATTACH PARTITION {name} FOR VALUES FROM ('{from} 00:00 UTC') TO ('{to} 00:00 UTC')"
        ));
    }
    write_dated_rows(&mut c, "public.t_aud_jan", "2020-01-15 12:00 UTC", 3);
    write_dated_rows(&mut c, "public.t_aud_feb", "2020-02-15 12:00 UTC", 2);
    seal_everything(&mut c);
    let verdict =
        "SELECT intact::text || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    assert_eq!(one::<String>(&mut c, verdict), "true ");
    let jan_block: String = one(
        &mut c,
        "SELECT row_count || ' ' || time_lo AT TIME ZONE 'UTC' || ' ' || time_hi AT TIME ZONE 'UTC' FROM platform.audit_block
          WHERE time_lo = '2020-01-01 00:00 UTC'",
    );
    assert_eq!(
        jan_block, "3 2020-01-01 00:00:00 2020-02-01 00:00:00",
        "a block per partition"
    );

    // Retention retires both old months (oldest first), recording each, and the chain
    // still verifies: their blocks are expired, not missing.
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', '1 year')",
    );
    let retired = retire_log(&mut c);
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', NULL)",
    );
    assert_eq!(retired, 2);
    assert!(one::<Option<i64>>(
        &mut c,
        "SELECT to_regclass('platform.audit_log_p20200101')::oid::int8"
    )
    .is_none());
    let records = rows(
        &mut c,
        "SELECT table_name || ' ' || (new_values->>'rows') || ' ' || (new_values->>'action') FROM platform.audit_log
          WHERE operation = 'RETENTION' AND table_name LIKE 'platform.audit_log_p2020%' ORDER BY xid, statement_seq, row_seq",
    );
    assert_eq!(
        records,
        vec![
            "platform.audit_log_p20200101 3 drop".to_string(),
            "platform.audit_log_p20200201 2 drop".to_string()
        ]
    );
    assert_eq!(one::<String>(&mut c, verdict), "true ");

    // A partition of the past holding rows not sealed yet waits: a transaction that began
    // before them is still open.
    run(&mut c, "DROP TABLE IF EXISTS platform.audit_log_p20190101;
                 CREATE TABLE platform.audit_log_p20190101 (LIKE platform.audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
                 ALTER TABLE platform.audit_log ATTACH PARTITION platform.audit_log_p20190101 FOR VALUES FROM ('2019-01-01 00:00 UTC') TO ('2019-02-01 00:00 UTC')");
    let mut old_tx = client();
    run(&mut old_tx, "BEGIN; SELECT pg_current_xact_id()");
    write_dated_rows(&mut c, "public.t_aud_1919", "2019-01-10 00:00 UTC", 1);
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', '1 year')",
    );
    let retired = retire_log(&mut c);
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', NULL)",
    );
    assert_eq!(retired, 0, "unsealed rows hold the partition back");
    run(&mut old_tx, "COMMIT");
    seal_everything(&mut c);
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', '1 year')",
    );
    let retired = retire_log(&mut c);
    run(
        &mut c,
        "SELECT platform.set_retention('platform.audit_log', NULL)",
    );
    assert_eq!(retired, 1);
    assert_eq!(one::<String>(&mut c, verdict), "true ");

    // A forged RETENTION row (with a correct hash) whose horizon would pass the whole log
    // off as expired hides nothing: a changed row is still found. Never committed.
    let victim: i64 = one(
        &mut c,
        "SELECT min(id) FROM platform.audit_log WHERE operation = 'RETENTION' AND table_name = 'platform.audit_log_p20200101'",
    );
    let mut tx = c.transaction().unwrap_or_else(|e| panic!("{e}"));
    insert_dated_rows(
        &mut tx,
        "platform.audit_log_p20990101",
        "now",
        "RETENTION",
        &["{\"action\":\"drop\",\"rows\":0,\"range_from_us\":0,\"range_to_us\":4102444800000000,\"horizon_us\":4102444800000000}".to_string()],
    );
    tx.batch_execute(&tamper_sql(&format!(
        "UPDATE platform.audit_log SET role_class = 'other' WHERE id = {victim}"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let found: String = tx
        .query_one(verdict, &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    tx.rollback().unwrap_or_else(|e| panic!("{e}"));
    assert!(found.starts_with("false "), "{found}");
    assert!(
        found.contains(&format!("audit row {victim} does not match its hash")),
        "{found}"
    );
    run(&mut c, "DROP TABLE public.t_aud_keep");
}

/// The writer keeps the log's indexes itself and caches their descriptions per backend: an
/// index added (or dropped) while a session writes is kept from its next statement on,
/// and indexes it cannot keep itself (unique, partial, on expressions) go through the
/// executor. Each index, read alone, finds exactly the rows a sequential scan finds.
#[test]
fn indexes_added_to_the_log_are_kept_by_the_writer() {
    let mut c = client();
    run(
        &mut c,
        "DROP TABLE IF EXISTS public.t_aud_idx; CREATE TABLE public.t_aud_idx (id int PRIMARY KEY, v text);
         SELECT platform.audit_table('public.t_aud_idx');
         INSERT INTO public.t_aud_idx SELECT g, 'before' FROM generate_series(1, 50) g",
    );
    // Another session adds indexes while this one keeps its cached description.
    let mut admin = client();
    run(
        &mut admin,
        "CREATE INDEX t_aud_idx_plain ON platform.audit_log (table_name);
         CREATE UNIQUE INDEX t_aud_idx_unique ON platform.audit_log (id, event_time);
         CREATE INDEX t_aud_idx_expr ON platform.audit_log (lower(operation));
         CREATE INDEX t_aud_idx_partial ON platform.audit_log (row_seq) WHERE table_name = 'public.t_aud_idx'",
    );
    run(
        &mut c,
        "INSERT INTO public.t_aud_idx SELECT g, 'after' FROM generate_series(51, 120) g;
         UPDATE public.t_aud_idx SET v = 'updated' WHERE id <= 10",
    );
    // Counted by an index alone and by a sequential scan, in one snapshot (other tests
    // write to the log meanwhile).
    let both = |c: &mut postgres::Client, filter: &str| -> (i64, i64) {
        let count = |c: &mut postgres::Client, index: bool| -> i64 {
            run(
                c,
                &format!("SET LOCAL enable_seqscan = {0}; SET LOCAL enable_bitmapscan = {1}; SET LOCAL enable_indexscan = {1}", !index, index),
            );
            one(
                c,
                &format!("SELECT count(*) FROM platform.audit_log WHERE {filter}"),
            )
        };
        run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ");
        let seq = count(c, false);
        let index = count(c, true);
        run(c, "COMMIT");
        (seq, index)
    };
    assert_eq!(
        both(
            &mut c,
            "table_name = 'public.t_aud_idx' AND operation <> 'DDL'"
        ),
        (130, 130)
    );
    assert_eq!(
        both(&mut c, "table_name = 'public.t_aud_idx' AND row_seq > 60"),
        (10, 10)
    );
    let (seq, index) = both(&mut c, "lower(operation) = 'update'");
    assert!(seq >= 10, "{seq} UPDATE rows");
    assert_eq!(seq, index);
    let (seq, index) = both(&mut c, "id > 0 AND event_time > '-infinity'");
    assert_eq!(seq, index);
    // Dropped again: the writer stops keeping them from the next statement on.
    run(
        &mut admin,
        "DROP INDEX platform.t_aud_idx_plain, platform.t_aud_idx_unique, platform.t_aud_idx_expr, platform.t_aud_idx_partial",
    );
    run(&mut c, "INSERT INTO public.t_aud_idx VALUES (500, 'last')");
    let n: i64 = one(&mut c, "SELECT count(*) FROM platform.audit_log WHERE table_name = 'public.t_aud_idx' AND operation <> 'DDL'");
    assert_eq!(n, 131);
    run(&mut c, "DROP TABLE public.t_aud_idx");
}

/// A statement is written in chunks of 1000 rows with one index insert per heap block for
/// the log's BRIN index: a 2 500-row insert and update keep every row with contiguous
/// sequence numbers and the right images across the chunks, and the BRIN index finds
/// every row, also rows that land in a block range summarized before they came.
#[test]
fn large_statements_are_written_whole_across_chunks_and_found_by_the_log_index() {
    let mut c = client();
    run(
        &mut c,
        "DROP TABLE IF EXISTS public.t_aud_big; CREATE TABLE public.t_aud_big (id int PRIMARY KEY, v text, n numeric(12,2));
         SELECT platform.audit_table('public.t_aud_big');
         INSERT INTO public.t_aud_big SELECT g, 'v' || g, g * 1.25 FROM generate_series(1, 2500) g",
    );
    let of = |op: &str| {
        format!(
            "FROM platform.audit_log WHERE table_name = 'public.t_aud_big' AND operation = '{op}'"
        )
    };
    let shape = |c: &mut postgres::Client, op: &str| -> String {
        one(
            c,
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT row_seq) || ' ' || min(row_seq) || ' ' || max(row_seq)
                        || ' ' || count(DISTINCT xid) || ' ' || count(DISTINCT statement_seq) {}",
                of(op)
            ),
        )
    };
    assert_eq!(shape(&mut c, "INSERT"), "2500 2500 1 2500 1 1");
    // One value of the log's sequence per chunk: the chunk's rows are numbered from it,
    // and no id is given twice in the whole log.
    assert_eq!(
        one::<String>(
            &mut c,
            &format!(
                "SELECT string_agg((hi - lo + 1) || '/' || n, ' ' ORDER BY chunk)
                   FROM (SELECT (row_seq - 1) / 1000 AS chunk, min(id) AS lo, max(id) AS hi, count(*) AS n {} GROUP BY 1) c",
                of("INSERT")
            )
        ),
        "1000/1000 1000/1000 500/500"
    );
    assert!(one::<bool>(
        &mut c,
        "SELECT count(*) = count(DISTINCT id) FROM platform.audit_log"
    ));
    // One-row statements of a session take the ids a value of the sequence reserved in
    // turn (a call to nextval per 1000 rows, not per statement); a 1000-row chunk that
    // does not fit in what is left takes a value of its own, contiguous again.
    run(
        &mut c,
        "DROP TABLE IF EXISTS public.t_aud_ids; CREATE TABLE public.t_aud_ids (id int PRIMARY KEY, v text);
         SELECT platform.audit_table('public.t_aud_ids')",
    );
    run(
        &mut c,
        "INSERT INTO public.t_aud_ids VALUES (1, 'a');
         INSERT INTO public.t_aud_ids VALUES (2, 'b');
         UPDATE public.t_aud_ids SET v = 'c' WHERE id = 1;
         DELETE FROM public.t_aud_ids WHERE id = 2;
         INSERT INTO public.t_aud_ids SELECT g, 'w' FROM generate_series(11, 1010) g;",
    );
    let last = "FROM platform.audit_log WHERE table_name = 'public.t_aud_ids' AND xid = \
                (SELECT max(xid) FROM platform.audit_log WHERE table_name = 'public.t_aud_ids')";
    assert_eq!(
        one::<String>(
            &mut c,
            &format!(
                "SELECT string_agg(statement_seq || ':' || operation || ':' || (id - first), ' ' ORDER BY statement_seq)
                   FROM (SELECT *, min(id) OVER () AS first {last} AND statement_seq < 5) r"
            )
        ),
        "1:INSERT:0 2:INSERT:1 3:UPDATE:2 4:DELETE:3"
    );
    assert_eq!(
        one::<String>(
            &mut c,
            &format!(
                "SELECT max(id) - min(id) + 1 || '/' || count(*) {last} AND statement_seq = 5"
            )
        ),
        "1000/1000"
    );
    assert!(one::<bool>(
        &mut c,
        "SELECT count(*) = count(DISTINCT id) FROM platform.audit_log"
    ));
    // Who and from where: on the first row only, also past the chunks' edges; the trail
    // view shows them on all 2500.
    assert_eq!(
        one::<String>(
            &mut c,
            &format!(
                "SELECT count(session_user_name) || ' ' || count(*) FILTER (WHERE num_nulls(session_user_name, current_user_name,
                        role_class, client_addr, client_port, application_name, backend_pid, statement) = 8) {}",
                of("INSERT")
            )
        ),
        "1 2499"
    );
    assert_eq!(
        one::<String>(
            &mut c,
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT (session_user_name, current_user_name, role_class, client_addr,
                        client_port, application_name, backend_pid)) || ' ' || bool_and(backend_pid = pg_backend_pid())
                        || ' ' || bool_and(session_user_name = session_user) {}",
                of("INSERT").replace("platform.audit_log", "platform.audit_trail")
            )
        ),
        "2500 1 true true"
    );
    // Rows at the chunks' edges carry their own images and keys.
    let images: Vec<String> = rows(
        &mut c,
        &format!(
            "SELECT row_seq || ' ' || primary_key || ' ' || new_values {} AND row_seq IN (1, 1000, 1001, 2500) ORDER BY row_seq",
            of("INSERT")
        ),
    );
    assert_eq!(
        images,
        [
            r#"1 {"id":1} {"id":1,"v":"v1","n":"1.25"}"#,
            r#"1000 {"id":1000} {"id":1000,"v":"v1000","n":"1250.00"}"#,
            r#"1001 {"id":1001} {"id":1001,"v":"v1001","n":"1251.25"}"#,
            r#"2500 {"id":2500} {"id":2500,"v":"v2500","n":"3125.00"}"#,
        ]
    );
    // Every block range of the log summarized, then more rows written: those landing in a
    // summarized range must widen its summary.
    run(
        &mut c,
        "SELECT pg_catalog.brin_summarize_new_values(i.indexrelid::regclass)
           FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
           JOIN pg_catalog.pg_am a ON a.oid = x.relam
          WHERE a.amname = 'brin'
            AND i.indrelid IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = 'platform.audit_log'::regclass);
         UPDATE public.t_aud_big SET n = n + 1 WHERE id % 2 = 0 OR id > 2000",
    );
    assert_eq!(shape(&mut c, "UPDATE"), "1500 1500 1 1500 1 1");
    let update: Vec<String> = rows(
        &mut c,
        &format!(
            "SELECT old_values || ' ' || new_values {} AND primary_key::text = '{{\"id\":2500}}'",
            of("UPDATE")
        ),
    );
    assert_eq!(update, [r#"{"n":"3125.00"} {"n":"3126.00"}"#]);
    // Each statement's rows, counted through the BRIN index alone and by a sequential
    // scan, in one snapshot.
    for op in ["INSERT", "UPDATE"] {
        let xid: String = one(&mut c, &format!("SELECT min(xid::text) {}", of(op)));
        let filter = format!(
            "xid = '{xid}'::xid8 AND table_name = 'public.t_aud_big' AND operation = '{op}'"
        );
        run(&mut c, "BEGIN ISOLATION LEVEL REPEATABLE READ");
        run(
            &mut c,
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off",
        );
        let plan = rows(
            &mut c,
            &format!("EXPLAIN SELECT count(*) FROM platform.audit_log WHERE {filter}"),
        )
        .join("\n");
        assert!(plan.contains("Bitmap Index Scan"), "{plan}");
        let by_index: i64 = one(
            &mut c,
            &format!("SELECT count(*) FROM platform.audit_log WHERE {filter}"),
        );
        run(
            &mut c,
            "SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = off",
        );
        let by_scan: i64 = one(
            &mut c,
            &format!("SELECT count(*) FROM platform.audit_log WHERE {filter}"),
        );
        run(&mut c, "COMMIT");
        assert_eq!((op, by_index), (op, by_scan));
        assert_eq!(by_scan, if op == "INSERT" { 2500 } else { 1500 });
    }
    // The rows' hashes hold.
    let recent: String = one(
        &mut c,
        "SELECT intact || ' ' || coalesce(problem, '') FROM platform.verify_audit(now() - interval '1 minute')",
    );
    assert_eq!(recent, "true ");
    run(&mut c, "DROP TABLE public.t_aud_big, public.t_aud_ids");
}

/// In a LATIN1 database the log records text as it is, not as U+FFFD: DDL on a table with
/// an accented name goes through (the event trigger had refused it as not UTF-8), images,
/// names and statements are stored in the database's encoding and hashed as UTF-8,
/// and the chain verifies, sealed or not; a tampered accented image is found.
#[test]
fn a_latin1_databases_text_is_recorded_as_it_is() {
    let mut l = crate::testing::fresh_database(
        "t_audit_latin1",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    // One statement at a time: each is the statement text its rows record.
    for sql in [
        "CREATE TABLE café (id int PRIMARY KEY, owner text, note varchar(20), pièce text)",
        // An excluded column whose name is not ASCII stays out of the images.
        "SELECT platform.audit_table('café', exclude_columns => '{pièce}', include_statement => true)",
        "SET application_name = 'caisse-é'",
        "INSERT INTO café VALUES (1, 'Zoë', 'crème', 'n° 1')",
        "UPDATE café SET owner = 'Zoé', pièce = 'n° 2' WHERE id = 1",
        "UPDATE café SET pièce = 'n° 3' WHERE id = 1",
        "SET application_name = ''",
    ] {
        run(&mut l, sql);
    }
    // A name that is not the column's is refused and the trigger keeps its exclusions.
    // The message names them with their non-ASCII characters as Unicode escapes: sent as
    // UTF-8 they came out garbled (`piÃ©ce`), PostgreSQL taking them for LATIN1.
    let (code, message) = expect_error(
        &mut l,
        "SELECT platform.audit_table('café', exclude_columns => '{piéce}')",
    );
    assert_eq!(code, "42703", "{message}");
    assert!(
        message.contains(r#"column "pi\00E9ce" of public."caf\00E9" does not exist"#),
        "{message}"
    );
    assert_eq!(
        one::<String>(
            &mut l,
            "SELECT exclude_columns::text || ' ' || include_statement FROM platform.audited_tables WHERE table_name = 'café'::regclass"
        ),
        "{pièce} true"
    );
    // PostgreSQL itself keeps application_name ASCII ('?' for anything else).
    let logged = rows(
        &mut l,
        "SELECT operation || ' ' || table_name || ' ' || coalesce(old_values::text, '-') || ' ' ||
                coalesce(new_values::text, '-') || ' ' || coalesce(application_name, '-') || ' ' || coalesce(statement, '-')
           FROM platform.audit_log WHERE table_name = 'public.\"café\"' AND operation IN ('INSERT', 'UPDATE')
          ORDER BY xid, statement_seq, row_seq",
    );
    assert_eq!(
        logged,
        [
            "INSERT public.\"café\" - {\"id\":1,\"owner\":\"Zoë\",\"note\":\"crème\"} caisse-? INSERT INTO café VALUES (1, 'Zoë', 'crème', 'n° 1')",
            "UPDATE public.\"café\" {\"owner\":\"Zoë\"} {\"owner\":\"Zoé\"} caisse-? UPDATE café SET owner = 'Zoé', pièce = 'n° 2' WHERE id = 1",
            "UPDATE public.\"café\" {} {} caisse-? UPDATE café SET pièce = 'n° 3' WHERE id = 1",
        ]
    );
    let verify = "SELECT intact::text || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    assert_eq!(one::<String>(&mut l, verify), "true ");
    run(&mut l, "SELECT platform.seal_audit()");
    assert_eq!(one::<String>(&mut l, verify), "true ");
    // The CREATE TABLE came before the log had a partition: sealing moved it in.
    assert_eq!(
        one::<String>(
            &mut l,
            "SELECT string_agg(DISTINCT new_values::text, ',') FROM platform.audit_log
              WHERE operation = 'DDL' AND table_name = 'public.\"café\"' AND new_values::text LIKE '%CREATE TABLE%'"
        ),
        "{\"command_tag\":\"CREATE TABLE\",\"object_type\":\"table\"}"
    );
    tamper(
        &mut l,
        "UPDATE platform.audit_log SET new_values = '{\"owner\":\"Zoe\"}' WHERE operation = 'UPDATE' AND table_name = 'public.\"café\"'",
    );
    assert!(one::<String>(&mut l, verify).starts_with("false "));
    drop(l);
    crate::testing::drop_database("t_audit_latin1");
}

/// The writer keeps the log's oids and a block of ids per backend: a session that drops
/// and creates the extension again writes into the new log, numbered by the new sequence,
/// and both the old rows' loss and the new rows' chain are what they should be.
#[test]
fn a_session_writes_into_a_log_made_again_after_it_kept_the_old_one() {
    let mut d = crate::testing::fresh_database("t_audit_again", "");
    run(
        &mut d,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         SELECT platform.audit_table('t')",
    );
    run(&mut d, "INSERT INTO t VALUES (1, 'a')");
    run(&mut d, "INSERT INTO t VALUES (2, 'b')");
    let old_log: u32 =
        one::<i64>(&mut d, "SELECT 'platform.audit_log'::regclass::oid::int8") as u32;
    run(&mut d, "DROP EXTENSION pg_platform CASCADE");
    run(
        &mut d,
        "CREATE EXTENSION pg_platform;
         SELECT platform.audit_table('t')",
    );
    run(&mut d, "INSERT INTO t VALUES (3, 'c')");
    run(&mut d, "UPDATE t SET v = 'd' WHERE id = 3");
    let new_log: u32 =
        one::<i64>(&mut d, "SELECT 'platform.audit_log'::regclass::oid::int8") as u32;
    assert_ne!(old_log, new_log);
    assert_eq!(
        one::<String>(
            &mut d,
            "SELECT string_agg(operation || ' ' || coalesce(new_values::text, ''), ', ' ORDER BY id)
               FROM platform.audit_log WHERE table_name = 'public.t' AND operation IN ('INSERT', 'UPDATE')"
        ),
        "INSERT {\"id\":3,\"v\":\"c\"}, UPDATE {\"v\":\"d\"}"
    );
    // Numbered from the new sequence's first value, not from what the old one had left
    // (the extension's own DDL rows wait in the pending table until a partition exists).
    assert_eq!(
        one::<String>(
            &mut d,
            "SELECT min(id) || ' ' || (count(*) = count(DISTINCT id)) || ' ' || (SELECT is_called FROM platform.audit_log_id_seq)
               FROM (SELECT id FROM platform.audit_log UNION ALL SELECT id FROM platform.audit_log_pending) l"
        ),
        "1 true true"
    );
    run(&mut d, "SELECT platform.seal_audit()");
    assert_eq!(
        one::<String>(
            &mut d,
            "SELECT intact::text || ' ' || coalesce(problem, '') FROM platform.verify_audit()"
        ),
        "true "
    );
    drop(d);
    crate::testing::drop_database("t_audit_again");
}
