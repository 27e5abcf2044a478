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
           FROM platform.audit_log WHERE table_name = 'public.t_aud_account' AND operation NOT IN ('DDL', 'DROP') ORDER BY id",
    );
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
        "SELECT string_agg(statement_seq::text, ',' ORDER BY id) || ' ' || count(DISTINCT xid)
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
          WHERE operation = 'DDL' AND table_name = 'public.t_aud_account' ORDER BY id DESC LIMIT 1",
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
    let log: Vec<String> = rows(&mut c, "SELECT new_values::text FROM platform.audit_log WHERE table_name = 'public.t_aud_tx' AND operation <> 'DDL' ORDER BY id");
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
            "SET ROLE t_aud_dev2; SELECT platform.audit_table('public.t_aud_bad')",
            "42501",
        ),
        (
            "SET ROLE t_aud_dev2; SELECT * FROM platform.audit_log",
            "42501",
        ),
        ("SELECT platform.record_audit_ddl()", "39P03"),
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
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM platform.audit_log WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'"
        ),
        800
    );
    run(&mut c, "SELECT platform.seal_audit()");
    let verdict =
        "SELECT intact::text || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    assert_eq!(one::<String>(&mut c, verdict), "true ");
    let sealed: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.audit_log l WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'
                                     AND l.xid < (SELECT max(xid_hi) FROM platform.audit_block)",
    );
    assert_eq!(sealed, 800, "every committed row is sealed");

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
        "SELECT min(id) FROM platform.audit_log WHERE table_name = 'public.t_aud_chain' AND operation <> 'DDL'",
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
    let tamper = |c: &mut postgres::Client, sql: &str| {
        run(
            c,
            &format!(
                "UPDATE pg_catalog.pg_trigger SET tgenabled = 'D' WHERE tgname = 'refuse_change'
                AND tgrelid IN ('platform.audit_log'::regclass, 'platform.audit_block'::regclass);
             GRANT SELECT ON platform.audit_log, platform.audit_block TO PUBLIC;
             REVOKE SELECT ON platform.audit_log, platform.audit_block FROM PUBLIC;
             {sql};
             UPDATE pg_catalog.pg_trigger SET tgenabled = 'A' WHERE tgname = 'refuse_change'
                AND tgrelid IN ('platform.audit_log'::regclass, 'platform.audit_block'::regclass);
             GRANT SELECT ON platform.audit_log, platform.audit_block TO PUBLIC;
             REVOKE SELECT ON platform.audit_log, platform.audit_block FROM PUBLIC"
            ),
        );
    };
    let full = "SELECT intact::text || ' ' || coalesce(first_bad_block::text, '-') || ' ' || coalesce(first_bad_row::text, '-') || ' ' || coalesce(problem, '') FROM platform.verify_audit()";
    run(
        &mut c,
        &format!("CREATE TEMP TABLE saved AS SELECT * FROM platform.audit_log WHERE id = {victim}"),
    );
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
    let mut count = 0;
    for _ in 0..60 {
        count = one::<i64>(&mut c, sealed);
        if count == 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(
        count, 10,
        "the worker sealed the rows within 15 seconds of their transaction becoming the oldest"
    );
    run(&mut c, "DROP TABLE public.t_aud_worker");
}
