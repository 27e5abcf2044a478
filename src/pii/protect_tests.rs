//! Tests of `platform.protect_column`, its view, triggers, blind-index lookups and read
//! counting. `CALL platform.protect_column` commits per batch, so everything here runs
//! through autocommit sessions.

use crate::testing::{client, expect_error, one};

fn run(c: &mut postgres::Client, sql: &str) {
    if let Err(e) = c.batch_execute(sql) {
        match e.as_db_error() {
            Some(d) => panic!(
                "{sql}: {} {} {:?}",
                d.code().code(),
                d.message(),
                d.where_()
            ),
            None => panic!("{sql}: {e}"),
        }
    }
}

fn as_role<T: for<'a> postgres::types::FromSql<'a>>(
    c: &mut postgres::Client,
    role: &str,
    sql: &str,
) -> T {
    run(c, &format!("SET ROLE {role}"));
    let v = one(c, sql);
    run(c, "RESET ROLE");
    v
}

fn error_as(c: &mut postgres::Client, role: &str, sql: &str) -> (String, String) {
    let out = expect_error(c, &format!("SET ROLE {role}; {sql}"));
    run(c, "RESET ROLE");
    out
}

const SETUP: &str = "
SELECT platform.create_key('t_pc') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_pc');
DROP VIEW IF EXISTS public.t_pc_customer_view; DROP TABLE IF EXISTS public.t_pc_customer;
CREATE TABLE public.t_pc_customer (
    id         bigint PRIMARY KEY,
    full_name  varchar(40) NOT NULL,
    email      text NOT NULL,
    phone      text,
    note       text DEFAULT 'new',
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.t_pc_customer (id, full_name, email, phone)
SELECT i, 'Person Number' || i, 'user' || i || '@example.com', '+49 30 1234' || i FROM generate_series(1, 25) i;
DROP ROLE IF EXISTS t_pc_app; CREATE ROLE t_pc_app IN ROLE platform_readonly;
DROP ROLE IF EXISTS t_pc_reader; CREATE ROLE t_pc_reader IN ROLE platform_readonly, platform_pii_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.t_pc_customer TO t_pc_app;
GRANT SELECT ON public.t_pc_customer TO t_pc_reader;
";

#[test]
fn a_protected_column_is_ciphertext_in_the_table_and_plaintext_or_mask_in_the_view() {
    let mut c = client();
    run(&mut c, SETUP);
    run(
        &mut c,
        "CALL platform.protect_column('public.t_pc_customer', 'email', 't_pc', mask => 'email',
                                              blind_index => true, batch_size => 7)",
    );
    run(
        &mut c,
        "CALL platform.protect_column('public.t_pc_customer', 'full_name', 't_pc', mask => 'name')",
    );
    // The table: no plaintext column, every value encrypted, nothing readable in the bytes.
    let plaintext_columns: i64 = one(&mut c, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.t_pc_customer'::regclass
                                               AND attname IN ('email', 'full_name') AND NOT attisdropped");
    assert_eq!(plaintext_columns, 0);
    let encrypted: i64 = one(&mut c, "SELECT count(*) FROM public.t_pc_customer WHERE email_encrypted IS NOT NULL
                                       AND full_name_encrypted IS NOT NULL AND email_blind_index IS NOT NULL
                                       AND position('example' IN encode(email_encrypted, 'escape')) = 0");
    assert_eq!(encrypted, 25);
    let not_null: bool = one(&mut c, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'public.t_pc_customer'::regclass AND attname = 'email_encrypted'");
    assert!(
        not_null,
        "NOT NULL of the plaintext carries over to the ciphertext"
    );
    // A legacy writer cannot put plaintext into the ciphertext column.
    let (code, _) = expect_error(&mut c, "UPDATE public.t_pc_customer SET email_encrypted = convert_to('eve@example.com', 'UTF8') WHERE id = 1");
    assert_eq!(code, "23514");
    // The view: the table's columns in their order and types, the plaintext ones decrypted.
    let shape: String = one(&mut c, "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                                      FROM pg_attribute WHERE attrelid = 'public.t_pc_customer_view'::regclass AND attnum > 0");
    assert_eq!(shape, "id bigint, full_name character varying(40), email text, phone text, note text, created_at timestamp with time zone");
    let q = "SELECT full_name || ' ' || email FROM public.t_pc_customer_view WHERE id = 3";
    assert_eq!(
        as_role::<String>(&mut c, "t_pc_reader", q),
        "Person Number3 user3@example.com"
    );
    assert_eq!(
        as_role::<String>(&mut c, "t_pc_app", q),
        "P***** N****** u****@example.com"
    );
    // The view has the table's privileges (and owner); nothing more.
    let (code, _) = error_as(
        &mut c,
        "t_pc_reader",
        "DELETE FROM public.t_pc_customer_view WHERE id = 1",
    );
    assert_eq!(code, "42501");

    // Writes through the view by a role that never sees plaintext.
    let note: String = as_role(&mut c, "t_pc_app", "INSERT INTO public.t_pc_customer_view (id, full_name, email)
                                                  VALUES (100, 'Zoe Quinn', 'zoe@example.com') RETURNING note");
    assert_eq!(note, "new", "the table's defaults apply through the view");
    assert_eq!(
        as_role::<String>(
            &mut c,
            "t_pc_reader",
            "SELECT email FROM public.t_pc_customer_view WHERE id = 100"
        ),
        "zoe@example.com"
    );
    let id: i32 = one(&mut c, "SELECT id FROM platform.protected_columns WHERE tbl = 'public.t_pc_customer'::regclass AND column_name = 'email'");
    let direct: String = one(&mut c, &format!("SELECT platform.decrypt(email_encrypted, 'pii:{id}:100') FROM public.t_pc_customer WHERE id = 100"));
    assert_eq!(
        direct, "zoe@example.com",
        "the documented context is pii:<id>:<primary key>"
    );
    // Updating another column keeps the ciphertext (the masked value is not written back).
    let before: Vec<u8> = one(
        &mut c,
        "SELECT email_encrypted FROM public.t_pc_customer WHERE id = 3",
    );
    as_role::<i64>(&mut c, "t_pc_app", "WITH u AS (UPDATE public.t_pc_customer_view SET phone = '000' WHERE id = 3 RETURNING 1) SELECT count(*) FROM u");
    let after: Vec<u8> = one(
        &mut c,
        "SELECT email_encrypted FROM public.t_pc_customer WHERE id = 3",
    );
    assert_eq!(before, after);
    // A new value is encrypted and found by equality through the blind index.
    run(&mut c, "SET ROLE t_pc_app; UPDATE public.t_pc_customer_view SET email = 'new3@example.com' WHERE id = 3; RESET ROLE");
    let found: i64 = as_role(
        &mut c,
        "t_pc_reader",
        "SELECT id FROM public.t_pc_customer_view WHERE email = 'new3@example.com'",
    );
    assert_eq!(found, 3);
    run(&mut c, "SET ROLE t_pc_reader; SET enable_seqscan = off;
                 PREPARE t_pc_lookup(text) AS SELECT id FROM public.t_pc_customer_view WHERE email = $1");
    let plan: Vec<String> = c
        .query(
            "EXPLAIN (COSTS OFF) EXECUTE t_pc_lookup('user5@example.com')",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("t_pc_customer_email_blind_index_idx"),
        "{plan}"
    );
    let five: i64 = one(&mut c, "EXECUTE t_pc_lookup('user5@example.com')");
    assert_eq!(five, 5);
    run(
        &mut c,
        "DEALLOCATE t_pc_lookup; RESET enable_seqscan; RESET ROLE",
    );
    // The trigger runs as the table's owner: operators of a schema the writer puts first
    // in its search_path are never called by it.
    run(&mut c, "DROP SCHEMA IF EXISTS t_pc_evil CASCADE; CREATE SCHEMA t_pc_evil; CREATE TABLE t_pc_evil.loot (who text);
                 GRANT USAGE ON SCHEMA t_pc_evil TO PUBLIC; GRANT INSERT ON t_pc_evil.loot TO PUBLIC;
                 CREATE FUNCTION t_pc_evil.spy(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
                     $$ BEGIN INSERT INTO t_pc_evil.loot VALUES (current_user); RETURN a OPERATOR(pg_catalog.=) b; END $$;
                 CREATE OPERATOR t_pc_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = t_pc_evil.spy);
                 CREATE OPERATOR t_pc_evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = t_pc_evil.spy);");
    // A fresh session: its caches (keys, registrations, the audit log's partitions) load
    // under that search_path, as the extension's owner.
    let mut fresh = client();
    run(&mut fresh, "SET ROLE t_pc_app; SET search_path = t_pc_evil, pg_catalog, public;
                 UPDATE public.t_pc_customer_view SET phone = '111' WHERE id = 4;
                 INSERT INTO public.t_pc_customer_view (id, full_name, email) VALUES (101, 'Eve', 'eve@example.com');
                 DELETE FROM public.t_pc_customer_view WHERE id = 101;
                 RESET search_path; RESET ROLE");
    drop(fresh);
    assert_eq!(
        one::<i64>(&mut c, "SELECT count(*) FROM t_pc_evil.loot"),
        0,
        "a caller's operator ran inside the trigger"
    );
    run(&mut c, "DROP SCHEMA t_pc_evil CASCADE");
    // A changed primary key re-binds the value to the new row.
    run(
        &mut c,
        "SET ROLE t_pc_app; UPDATE public.t_pc_customer_view SET id = 300 WHERE id = 3; RESET ROLE",
    );
    assert_eq!(
        as_role::<String>(
            &mut c,
            "t_pc_reader",
            "SELECT email FROM public.t_pc_customer_view WHERE id = 300"
        ),
        "new3@example.com"
    );
    let deleted: i64 = as_role(&mut c, "t_pc_app", "WITH d AS (DELETE FROM public.t_pc_customer_view WHERE id = 300 RETURNING 1) SELECT count(*) FROM d");
    assert_eq!(deleted, 1);
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM public.t_pc_customer WHERE id IN (3, 300)"
        ),
        0
    );
    // Rotation: reencrypt knows each row's context of a protected column.
    run(&mut c, "SELECT platform.rotate_key('t_pc')");
    run(
        &mut c,
        "CALL platform.reencrypt('public.t_pc_customer', 'email_encrypted', NULL, 5)",
    );
    let current: i64 = one(&mut c, "SELECT count(*) FROM public.t_pc_customer WHERE platform.is_current_version(email_encrypted) ");
    assert_eq!(current, 25);
    assert_eq!(
        as_role::<String>(
            &mut c,
            "t_pc_reader",
            "SELECT email FROM public.t_pc_customer_view WHERE id = 100"
        ),
        "zoe@example.com"
    );
    let (code, _) = expect_error(
        &mut c,
        "CALL platform.reencrypt('public.t_pc_customer', 'email_blind_index', NULL)",
    );
    assert_eq!(code, "22004");
    // A ciphertext copied to another row does not decrypt there.
    run(&mut c, "UPDATE public.t_pc_customer SET email_encrypted = (SELECT email_encrypted FROM public.t_pc_customer WHERE id = 1) WHERE id = 2");
    let (code, _) = error_as(
        &mut c,
        "t_pc_reader",
        "SELECT email FROM public.t_pc_customer_view WHERE id = 2",
    );
    assert_eq!(code, "XX001");

    // Read counting: one statement, rows per role, plaintext or masked, no per-row write.
    run(&mut c, "SELECT platform.reset_pii_access()");
    as_role::<i64>(
        &mut c,
        "t_pc_app",
        "SELECT count(email) FROM public.t_pc_customer_view WHERE id BETWEEN 4 AND 9",
    );
    as_role::<i64>(
        &mut c,
        "t_pc_reader",
        "SELECT count(email) FROM public.t_pc_customer_view WHERE id BETWEEN 4 AND 6",
    );
    let counted: String = one(&mut c, "SELECT string_agg(role || ' ' || column_name || ' ' || statements || ' ' || plaintext_values || ' ' || masked_values, '; ' ORDER BY role)
                                        FROM platform.pii_access WHERE table_name = 'public.t_pc_customer'::regclass");
    assert_eq!(counted, "t_pc_app email 1 0 6; t_pc_reader email 1 3 0");
    // The lookup helper the planner adds is no way around the view's privileges.
    run(
        &mut c,
        "DROP ROLE IF EXISTS t_pc_nosee; CREATE ROLE t_pc_nosee IN ROLE platform_readonly",
    );
    let (code, _) = error_as(
        &mut c,
        "t_pc_nosee",
        &format!("SELECT platform.protected_blind_index('user5@example.com', {id})"),
    );
    assert_eq!(code, "42501");
    run(&mut c, "DROP ROLE t_pc_nosee");
    let (code, _) = error_as(&mut c, "t_pc_app", "SELECT * FROM platform.pii_access");
    assert_eq!(code, "42501", "only admins and auditors see who read what");

    run(&mut c, "DROP VIEW public.t_pc_customer_view; DROP TABLE public.t_pc_customer; DROP FUNCTION public.t_pc_customer_view_write();
                 DROP ROLE t_pc_app; DROP ROLE t_pc_reader");
    let left: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.protected_columns WHERE tbl::text LIKE '%t_pc_customer%'",
    );
    assert_eq!(left, 0, "dropping the table forgets its registrations");
}

#[test]
fn bad_protect_column_calls_are_refused_and_leave_nothing_behind() {
    let mut c = client();
    run(
        &mut c,
        &SETUP
            .replace("t_pc_customer", "t_pcb_customer")
            .replace("t_pc_app", "t_pcb_app")
            .replace("t_pc_reader", "t_pcb_reader")
            .replace("'t_pc'", "'t_pcb'"),
    );
    run(&mut c, "DROP TABLE IF EXISTS public.t_pcb_nokey; CREATE TABLE public.t_pcb_nokey (email text);
                 CREATE INDEX t_pcb_email_idx ON public.t_pcb_customer (email);
                 DROP VIEW IF EXISTS public.t_pcb_taken; CREATE VIEW public.t_pcb_taken AS SELECT 1 AS x;");
    let shape = "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'public.t_pcb_customer'::regclass AND attnum > 0 AND NOT attisdropped";
    let before: String = one(&mut c, shape);
    let cases = [
        ("'public.t_pcb_customer', 'nope', 't_pcb'", "42703"),
        ("'public.t_pcb_customer', 'created_at', 't_pcb'", "42804"),
        ("'public.t_pcb_customer', 'id', 't_pcb'", "42804"),
        ("'public.t_pcb_nokey', 'email', 't_pcb'", "55000"),
        ("'public.t_pcb_taken', 'x', 't_pcb'", "42809"),
        ("'public.t_pcb_customer', 'phone', 'no_such_key'", "42704"),
        (
            "'public.t_pcb_customer', 'phone', 't_pcb', mask => 'no_such_mask'",
            "22023",
        ),
        (
            "'public.t_pcb_customer', 'phone', 't_pcb', subject_column => 'nope'",
            "42703",
        ),
        (
            "'public.t_pcb_customer', 'phone', 't_pcb', view_name => 't_pcb_taken'",
            "42P07",
        ),
        (
            "'public.t_pcb_customer', 'phone', 't_pcb', batch_size => 0",
            "22023",
        ),
        ("'public.t_pcb_customer', 'email', 't_pcb'", "2BP01"),
    ];
    for (args, expected) in cases {
        let (code, message) =
            expect_error(&mut c, &format!("CALL platform.protect_column({args})"));
        assert_eq!(code, expected, "{args}: {message}");
    }
    let (_, message) = expect_error(
        &mut c,
        "CALL platform.protect_column('public.t_pcb_customer', 'email', 't_pcb')",
    );
    assert!(
        message.contains("t_pcb_email_idx"),
        "the message names the dependent index: {message}"
    );
    assert_eq!(one::<String>(&mut c, shape), before, "no column was added");
    let registered: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.protected_columns WHERE tbl::text LIKE '%t_pcb%'",
    );
    assert_eq!(registered, 0);
    // Protecting twice is refused; so is the primary key.
    run(
        &mut c,
        "CALL platform.protect_column('public.t_pcb_customer', 'phone', 't_pcb')",
    );
    let (code, _) = expect_error(
        &mut c,
        "CALL platform.protect_column('public.t_pcb_customer', 'phone', 't_pcb')",
    );
    assert_eq!(code, "42710");
    // A non-admin may not protect columns, nor call the steps.
    let (code, _) = error_as(
        &mut c,
        "t_pcb_app",
        "CALL platform.protect_column('public.t_pcb_customer', 'full_name', 't_pcb')",
    );
    assert_eq!(code, "42501");
    run(&mut c, "DROP VIEW public.t_pcb_customer_view; DROP TABLE public.t_pcb_customer; DROP TABLE public.t_pcb_nokey;
                 DROP VIEW public.t_pcb_taken; DROP FUNCTION public.t_pcb_customer_view_write(); DROP ROLE t_pcb_app; DROP ROLE t_pcb_reader");
}

#[test]
fn per_subject_protection_resumes_after_a_failure_and_forgets_a_subject() {
    let mut c = client();
    run(&mut c, "SELECT platform.create_key('t_pcs') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_pcs');
                 DROP VIEW IF EXISTS public.t_pcs_profile_view; DROP TABLE IF EXISTS public.t_pcs_profile;
                 CREATE TABLE public.t_pcs_profile (id int PRIMARY KEY, customer_id bigint, email text);
                 INSERT INTO public.t_pcs_profile SELECT i, i % 5, 'p' || i || '@example.com' FROM generate_series(1, 20) i;
                 UPDATE public.t_pcs_profile SET customer_id = NULL WHERE id = 20;");
    let (code, message) = expect_error(&mut c, "CALL platform.protect_column('public.t_pcs_profile', 'email', 't_pcs',
                                                     subject_column => 'customer_id', batch_size => 6)");
    assert_eq!(code, "23502", "{message}");
    // Committed batches stay; the rest waits for the fix, then the same call resumes.
    let state: String = one(
        &mut c,
        "SELECT state FROM platform.protected_columns WHERE tbl = 'public.t_pcs_profile'::regclass",
    );
    assert_eq!(state, "converting");
    let (code, _) = expect_error(
        &mut c,
        "CALL platform.protect_column('public.t_pcs_profile', 'email', 't_pcs', mask => 'email')",
    );
    assert_eq!(code, "55000", "resuming with other settings is refused");
    run(
        &mut c,
        "UPDATE public.t_pcs_profile SET customer_id = 0 WHERE id = 20",
    );
    run(&mut c, "CALL platform.protect_column('public.t_pcs_profile', 'email', 't_pcs', subject_column => 'customer_id', batch_size => 6)");
    let readable: i64 = one(
        &mut c,
        "SELECT count(*) FROM public.t_pcs_profile_view WHERE email = 'p' || id || '@example.com'",
    );
    assert_eq!(readable, 20);
    let subject_keys: i64 = one(
        &mut c,
        "SELECT subject_keys FROM platform.keys WHERE name = 't_pcs'",
    );
    assert_eq!(subject_keys, 5);
    // Writing without a subject is refused, nothing written.
    let (code, _) = expect_error(
        &mut c,
        "INSERT INTO public.t_pcs_profile_view VALUES (99, NULL, 'x@example.com')",
    );
    assert_eq!(code, "23502");
    // Forgetting customer 2 makes exactly its rows unreadable, everywhere.
    run(&mut c, "SELECT platform.forget_subject('t_pcs', '2')");
    let (code, _) = expect_error(
        &mut c,
        "SELECT email FROM public.t_pcs_profile_view WHERE customer_id = 2",
    );
    assert_eq!(code, "P0002");
    run(&mut c, "SET platform.pii_forgotten_read = 'null'");
    let gone: i64 = one(
        &mut c,
        "SELECT count(*) FROM public.t_pcs_profile_view WHERE customer_id = 2 AND email IS NULL",
    );
    assert_eq!(gone, 4);
    let others: i64 = one(&mut c, "SELECT count(*) FROM public.t_pcs_profile_view WHERE customer_id <> 2 AND email = 'p' || id || '@example.com'");
    assert_eq!(others, 16);
    run(&mut c, "RESET platform.pii_forgotten_read; DROP VIEW public.t_pcs_profile_view; DROP TABLE public.t_pcs_profile;
                 DROP FUNCTION public.t_pcs_profile_view_write()");
}

#[test]
fn protection_under_concurrent_writers_loses_no_row() {
    let mut c = client();
    run(&mut c, "SELECT platform.create_key('t_pcw') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_pcw');
                 DROP VIEW IF EXISTS public.t_pcw_view; DROP TABLE IF EXISTS public.t_pcw;
                 CREATE TABLE public.t_pcw (id bigint PRIMARY KEY, email text);
                 INSERT INTO public.t_pcw SELECT i, 'w' || i || '@example.com' FROM generate_series(1, 3000) i;");
    let written = std::thread::scope(|s| {
        let writers: Vec<_> = (0..3)
            .map(|w| {
                s.spawn(move || {
                    let mut c = client();
                    let mut ok = Vec::new();
                    for i in 0..400 {
                        let id = 10_000 + w * 1000 + i;
                        // Plaintext writes to the table work until the column is dropped.
                        match c.batch_execute(&format!(
                            "INSERT INTO public.t_pcw VALUES ({id}, 'w{id}@example.com')"
                        )) {
                            Ok(()) => ok.push(id),
                            Err(_) => break,
                        }
                    }
                    ok.len() as i64
                })
            })
            .collect();
        let mut p = client();
        run(&mut p, "CALL platform.protect_column('public.t_pcw', 'email', 't_pcw', view_name => 't_pcw_view', batch_size => 100)");
        writers
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum::<i64>()
    });
    let rows: i64 = one(&mut c, "SELECT count(*) FROM public.t_pcw");
    assert_eq!(rows, 3000 + written);
    let readable: i64 = one(
        &mut c,
        "SELECT count(*) FROM public.t_pcw_view WHERE email = 'w' || id || '@example.com'",
    );
    assert_eq!(
        readable, rows,
        "every row, also those written during the conversion, is encrypted and readable"
    );
    run(&mut c, "DROP VIEW public.t_pcw_view; DROP TABLE public.t_pcw; DROP FUNCTION public.t_pcw_view_write()");
}
