//! PII encryption tests. The test server gets its master key from
//! `platform.master_key_command` (see `lib.rs`); the master key file checks and the log
//! checks run against their own server in `tests/e2e/pii_master_key.sh`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text(sql: &str) -> String {
        crate::sql::read::<String>(sql, &[]).unwrap_or_default()
    }

    #[pg_test]
    fn values_round_trip_and_each_encryption_differs() {
        crate::sql::run("SELECT platform.create_key('t_roundtrip')");
        assert_eq!(
            text("SELECT platform.decrypt(platform.encrypt('alice@example.com', 't_roundtrip', 'customer.email'), 'customer.email')"),
            "alice@example.com"
        );
        assert_eq!(
            text("SELECT encode(platform.decrypt_bytea(platform.encrypt('\\x00ff10'::bytea, 't_roundtrip', 'c'), 'c'), 'hex')"),
            "00ff10"
        );
        assert_eq!(
            text("SELECT (platform.encrypt('x', 't_roundtrip', 'c') <> platform.encrypt('x', 't_roundtrip', 'c'))::text"),
            "true"
        );
        // Header (10) + nonce (12) + plaintext + tag (16).
        assert_eq!(
            text("SELECT length(platform.encrypt('abcde', 't_roundtrip', 'c'))::text"),
            "43"
        );
        assert_eq!(
            text("SELECT encode(substr(platform.encrypt('x', 't_roundtrip', 'c'), 1, 2), 'hex')"),
            "a100"
        );
        // NULL in, NULL out.
        assert_eq!(
            text("SELECT (platform.encrypt(NULL::text, 't_roundtrip', 'c') IS NULL)::text"),
            "true"
        );
    }

    #[pg_test]
    fn blind_index_is_keyed_and_survives_rotation() {
        crate::sql::run(
            "SELECT platform.create_key('t_blind_a'); SELECT platform.create_key('t_blind_b');",
        );
        let a = text("SELECT encode(platform.blind_index('bob@example.com', 't_blind_a'), 'hex')");
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            text("SELECT encode(platform.blind_index('bob@example.com', 't_blind_a'), 'hex')")
        );
        assert_ne!(
            a,
            text("SELECT encode(platform.blind_index('bob@example.com', 't_blind_b'), 'hex')")
        );
        assert_ne!(
            a,
            text("SELECT encode(platform.blind_index('Bob@example.com', 't_blind_a'), 'hex')")
        );
        crate::sql::run("SELECT platform.rotate_key('t_blind_a')");
        assert_eq!(
            a,
            text("SELECT encode(platform.blind_index('bob@example.com', 't_blind_a'), 'hex')")
        );
    }
}

#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error, one};

    #[test]
    fn tampered_truncated_or_misplaced_ciphertexts_are_refused() {
        let mut c = client();
        c.batch_execute("SELECT platform.create_key('t_tamper') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_tamper')")
            .unwrap_or_else(|e| panic!("{e}"));
        let ct: Vec<u8> = one(
            &mut c,
            "SELECT platform.encrypt('4111 1111 1111 1111', 't_tamper', 'card.number:7')",
        );
        // Every single-bit flip anywhere is refused; none decrypts to anything.
        for byte in 0..ct.len() {
            for bit in [0u8, 3, 7] {
                let mut t = ct.clone();
                t[byte] ^= 1 << bit;
                let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
                let (code, message) = expect_error(
                    &mut c,
                    &format!("SELECT platform.decrypt('\\x{hex}', 'card.number:7')"),
                );
                let allowed: &[&str] = match byte {
                    0 => &["22P03"],                       // format marker
                    1..=9 => &["22P03", "42704", "XX001"], // key kind, id, version: named key absent or wrong
                    _ => &["XX001"],                       // nonce, ciphertext, tag
                };
                assert!(
                    allowed.contains(&code.as_str()),
                    "byte {byte} bit {bit}: {code} {message}"
                );
            }
        }
        let hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
        let (code, message) = expect_error(
            &mut c,
            &format!("SELECT platform.decrypt('\\x{hex}', 'card.number:8')"),
        );
        assert_eq!(code, "XX001", "{message}");
        assert!(
            message.contains("another context than 'card.number:8'"),
            "{message}"
        );
        let (code, _) = expect_error(
            &mut c,
            &format!(
                "SELECT platform.decrypt('\\x{}', 'card.number:7')",
                &hex[..hex.len() - 2]
            ),
        );
        assert_eq!(code, "XX001");
        let (code, message) = expect_error(
            &mut c,
            &format!(
                "SELECT platform.decrypt('\\x{}', 'card.number:7')",
                &hex[..40]
            ),
        );
        assert_eq!(code, "22P03", "{message}");
        let unknown = format!(
            "SELECT platform.decrypt('\\xa1000000ffff00000001{}', 'c')",
            "00".repeat(28)
        );
        let (code, message) = expect_error(&mut c, &unknown);
        assert_eq!(code, "42704", "{message}");
        assert!(message.contains("key id 65535 version 1"), "{message}");
        let (code, _) = expect_error(&mut c, "SELECT platform.decrypt('\\x00', 'c')");
        assert_eq!(code, "22P03");
        // A bytea value that is not UTF-8 is refused as text, and read with decrypt_bytea.
        let (code, message) = expect_error(
            &mut c,
            "SELECT platform.decrypt(platform.encrypt('\\xff00'::bytea, 't_tamper', 'b'), 'b')",
        );
        assert_eq!(code, "22P03", "{message}");
        assert!(message.contains("decrypt_bytea"), "{message}");
    }

    #[test]
    fn rotation_keeps_old_versions_readable_under_concurrent_writes() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS public.t_rotation; CREATE TABLE public.t_rotation (id int PRIMARY KEY, secret bytea);
             SELECT platform.create_key('t_rotate') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_rotate');",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Writers insert before, during and after the rotations: the barriers make sure
        // each phase happens (without them the rotations could all fall before or after
        // every insert, and the writes would use one version).
        let (started, rotated) = (std::sync::Barrier::new(5), std::sync::Barrier::new(5));
        let (started, rotated) = (&started, &rotated);
        std::thread::scope(|s| {
            for w in 0..4 {
                s.spawn(move || {
                    let mut c = client();
                    for i in 0..100 {
                        if i == 50 {
                            started.wait();
                        }
                        if i == 90 {
                            rotated.wait();
                        }
                        let id = w * 100 + i;
                        c.batch_execute(&format!(
                            "INSERT INTO public.t_rotation VALUES ({id}, platform.encrypt('value {id}', 't_rotate', 't_rotation.secret:{id}'))"
                        ))
                        .unwrap_or_else(|e| panic!("insert {id}: {e}"));
                    }
                });
            }
            s.spawn(move || {
                let mut c = client();
                started.wait();
                for _ in 0..5 {
                    c.batch_execute("SELECT platform.rotate_key('t_rotate')")
                        .unwrap_or_else(|e| panic!("rotate: {e}"));
                }
                rotated.wait();
            });
        });
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM public.t_rotation
                                 WHERE platform.decrypt(secret, 't_rotation.secret:' || id) = 'value ' || id"),
            400
        );
        let versions: i64 = one(
            &mut c,
            "SELECT count(DISTINCT get_byte(secret, 9)) FROM public.t_rotation",
        );
        assert!(versions >= 2, "writes used {versions} key versions");
        assert_eq!(
            one::<i32>(
                &mut c,
                "SELECT current_version FROM platform.keys WHERE name = 't_rotate'"
            ),
            6
        );
        c.batch_execute("DROP TABLE public.t_rotation")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_forgotten_subject_is_unreadable_in_every_session() {
        let mut a = client();
        let mut b = client();
        a.batch_execute("SELECT platform.create_key('t_subjects') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_subjects')")
            .unwrap_or_else(|e| panic!("{e}"));
        let suffix: i64 = one(&mut a, "SELECT (random() * 1e9)::int8");
        let (s1, s2) = (format!("cust-{suffix}-1"), format!("cust-{suffix}-2"));
        let v1: Vec<u8> = one(&mut a, &format!("SELECT platform.encrypt_for_subject('Ada Lovelace', 't_subjects', '{s1}', 'customer.full_name')"));
        let v2: Vec<u8> = one(&mut a, &format!("SELECT platform.encrypt_for_subject('Alan Turing', 't_subjects', '{s2}', 'customer.full_name')"));
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let read = |v: &[u8]| {
            format!(
                "SELECT platform.decrypt('\\x{}', 'customer.full_name')",
                hex(v)
            )
        };
        // Session a has the subject key cached when session b destroys it.
        assert_eq!(one::<String>(&mut a, &read(&v1)), "Ada Lovelace");
        assert!(one::<bool>(
            &mut b,
            &format!("SELECT platform.forget_subject('t_subjects', '{s1}')")
        ));
        let (code, message) = expect_error(&mut a, &read(&v1));
        assert_eq!(code, "P0002", "{message}");
        assert!(message.contains("forgotten"), "{message}");
        a.batch_execute("SET platform.pii_forgotten_read = 'null'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one::<Option<String>>(&mut a, &read(&v1)), None);
        assert_eq!(one::<String>(&mut a, &read(&v2)), "Alan Turing");
        // Nothing new is encrypted for a forgotten subject.
        let (code, _) = expect_error(
            &mut b,
            &format!("SELECT platform.encrypt_for_subject('x', 't_subjects', '{s1}', 'c')"),
        );
        assert_eq!(code, "55000");
        assert_eq!(
            one::<String>(
                &mut b,
                &format!(
                    "SELECT forgotten_by FROM platform.forgotten_subjects WHERE subject = '{s1}'"
                )
            ),
            "postgres"
        );
    }

    #[test]
    fn keys_are_guarded() {
        let mut c = client();
        c.batch_execute(
            "SELECT platform.create_key('t_guard') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_guard');
             DROP ROLE IF EXISTS pii_test_dev; CREATE ROLE pii_test_dev; GRANT platform_developer TO pii_test_dev;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            ("SELECT platform.create_key('t_guard')", "42710", "already exists"),
            ("SELECT platform.create_key('')", "22023", "invalid key name"),
            ("SELECT platform.encrypt('x', 'no_such_key', 'c')", "42704", "does not exist"),
            ("SELECT platform.rotate_key('no_such_key')", "42704", "does not exist"),
            ("SELECT platform.forget_subject('no_such_key', 's')", "42704", "does not exist"),
            ("SET ROLE pii_test_dev; SELECT * FROM platform.pii_key_version", "42501", "permission denied"),
            ("SET ROLE pii_test_dev; SELECT * FROM platform.pii_subject_key", "42501", "permission denied"),
            ("SET ROLE pii_test_dev; SHOW platform.master_key_command", "42501", "master_key_command"),
            ("SET ROLE pii_test_dev; SELECT platform.decrypt(platform.encrypt('x', 't_guard', 'c'), 'c')", "42501", "decrypt"),
            ("SET ROLE pii_test_dev; SELECT platform.create_key('t_guard_dev')", "42501", "create_key"),
        ];
        for (sql, state, words) in cases {
            let (code, message) = expect_error(&mut c, sql);
            assert_eq!(code, state, "{sql}: {message}");
            assert!(message.contains(words), "{sql}: {message}");
        }
        // A developer encrypts (through the owner's rights on the key tables) and sees the
        // key list, never key material.
        c.batch_execute("SET ROLE pii_test_dev")
            .unwrap_or_else(|e| panic!("{e}"));
        let n: i64 = one(
            &mut c,
            "SELECT length(platform.encrypt('x', 't_guard', 'c'))::int8",
        );
        let listed: i64 = one(
            &mut c,
            "SELECT count(*) FROM platform.keys WHERE name = 't_guard'",
        );
        c.batch_execute("RESET ROLE; DROP OWNED BY pii_test_dev; DROP ROLE pii_test_dev")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 39);
        assert_eq!(listed, 1);
    }

    #[test]
    fn reencrypt_moves_a_column_to_the_current_version_in_batches() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS public.t_reenc; CREATE TABLE public.t_reenc (id int PRIMARY KEY, v bytea);
             SELECT platform.create_key('t_reenc') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_reenc');
             INSERT INTO public.t_reenc SELECT g, platform.encrypt('value ' || g, 't_reenc', 't_reenc.v') FROM generate_series(1, 2500) g;
             SELECT platform.rotate_key('t_reenc');
             INSERT INTO public.t_reenc SELECT g, platform.encrypt('value ' || g, 't_reenc', 't_reenc.v') FROM generate_series(2501, 2510) g;
             INSERT INTO public.t_reenc VALUES (0, NULL);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            one::<i64>(
                &mut c,
                "SELECT count(*) FROM public.t_reenc WHERE NOT platform.is_current_version(v)"
            ),
            2500
        );
        let (code, _) = expect_error(
            &mut c,
            "CALL platform.reencrypt('public.t_reenc', 'v', 't_reenc.v', 0)",
        );
        assert_eq!(code, "22023");
        let (code, _) = expect_error(
            &mut c,
            "CALL platform.reencrypt('public.t_reenc', 'nope', 't_reenc.v')",
        );
        assert_eq!(code, "42703");
        let (code, _) = expect_error(
            &mut c,
            "CALL platform.reencrypt('public.t_reenc', 'v', 'another.context', 1000)",
        );
        assert_eq!(code, "XX001");
        c.batch_execute("CALL platform.reencrypt('public.t_reenc', 'v', 't_reenc.v', 1000)")
            .unwrap_or_else(|e| panic!("reencrypt: {e}"));
        assert_eq!(
            one::<i64>(
                &mut c,
                "SELECT count(*) FROM public.t_reenc WHERE NOT platform.is_current_version(v)"
            ),
            0
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM public.t_reenc WHERE platform.decrypt(v, 't_reenc.v') = 'value ' || id"),
            2510
        );
        let current: i32 = one(
            &mut c,
            "SELECT current_version FROM platform.keys WHERE name = 't_reenc'",
        );
        assert_eq!(
            one::<i64>(
                &mut c,
                &format!("SELECT count(*) FROM public.t_reenc WHERE get_byte(v, 9) = {current}")
            ),
            2510
        );
        c.batch_execute("DROP TABLE public.t_reenc")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn readers_see_plaintext_and_everyone_else_the_mask() {
        let mut c = client();
        c.batch_execute(
            "SELECT platform.create_key('t_reveal') WHERE NOT EXISTS (SELECT 1 FROM platform.keys WHERE name = 't_reveal');
             DROP TABLE IF EXISTS public.t_reveal; CREATE TABLE public.t_reveal (id int, email bytea, card bytea);
             INSERT INTO public.t_reveal VALUES (1, platform.encrypt('alice@example.com', 't_reveal', 'email'),
                                                    platform.encrypt('4111 1111 1111 1234', 't_reveal', 'card'));
             CREATE OR REPLACE FUNCTION public.t_reveal_domain(v text) RETURNS text LANGUAGE sql AS $$ SELECT split_part(v, '@', 2) $$;
             DROP ROLE IF EXISTS t_reveal_analyst; CREATE ROLE t_reveal_analyst IN ROLE platform_readonly;
             DROP ROLE IF EXISTS t_reveal_reader; CREATE ROLE t_reveal_reader IN ROLE platform_readonly, platform_pii_reader;
             GRANT SELECT ON public.t_reveal TO t_reveal_analyst, t_reveal_reader;
             GRANT EXECUTE ON FUNCTION public.t_reveal_domain(text) TO t_reveal_analyst;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let as_role = |c: &mut postgres::Client, role: &str, sql: &str| -> String {
            c.batch_execute(&format!("SET ROLE {role}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let v: String = one(c, sql);
            c.batch_execute("RESET ROLE")
                .unwrap_or_else(|e| panic!("{e}"));
            v
        };
        let q = "SELECT platform.reveal(email, 'email', 'email') || ' ' || platform.reveal(card, 'card', 'card')
                      || ' ' || platform.reveal(email, 'email') || ' ' || platform.reveal(email, 'email', 'public.t_reveal_domain')
                   FROM public.t_reveal";
        assert_eq!(
            as_role(&mut c, "t_reveal_analyst", q),
            "a****@example.com **** **** **** 1234 [redacted] example.com"
        );
        assert_eq!(
            as_role(&mut c, "t_reveal_reader", q),
            "alice@example.com 4111 1111 1111 1234 alice@example.com alice@example.com"
        );
        // The analyst cannot bypass the mask with decrypt.
        let (code, _) = expect_error(&mut c, "SET ROLE t_reveal_analyst; SELECT platform.decrypt(email, 'email') FROM public.t_reveal");
        assert_eq!(code, "42501");
        let (code, message) = expect_error(
            &mut c,
            "SELECT platform.reveal(email, 'email', 'no_such_mask') FROM public.t_reveal",
        );
        assert_eq!(code, "22023", "{message}");
        c.batch_execute(
            "RESET ROLE; DROP TABLE public.t_reveal; DROP FUNCTION public.t_reveal_domain(text);
             DROP ROLE t_reveal_analyst; DROP ROLE t_reveal_reader;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// In a LATIN1 database text is sealed as UTF-8 and given back in the database's encoding:
/// `encrypt`, `blind_index` and a context with 'Zoë' are no longer refused (pgrx took the
/// LATIN1 bytes for UTF-8, 22021), the plaintext inside is the UTF-8 of the characters
/// (so a ciphertext decrypts to the same text in a database of any encoding), a context
/// differing in one accent does not open it, and a mask works on characters.
#[cfg(test)]
#[test]
fn a_latin1_databases_text_is_sealed_as_utf8() {
    use crate::testing::{expect_error, one};
    let mut l = crate::testing::fresh_database(
        "t_pii_latin1",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let run = |c: &mut postgres::Client, sql: &str| {
        c.batch_execute(sql)
            .unwrap_or_else(|e| match e.as_db_error() {
                Some(d) => panic!("{sql}: {} {}", d.code().code(), d.message()),
                None => panic!("{sql}: {e}"),
            })
    };
    run(
        &mut l,
        "SELECT platform.create_key('t_latin1');
         CREATE TABLE customer (id text PRIMARY KEY, name bytea, name_bi bytea);
         INSERT INTO customer VALUES ('Zoë-1', platform.encrypt('Émile Zola', 't_latin1', 'customer:Zoë-1'),
                                      platform.blind_index('Émile Zola', 't_latin1'))",
    );
    let sealed: String = one(
        &mut l,
        "SELECT platform.decrypt(name, 'customer:Zoë-1') || ' ' ||
                encode(platform.decrypt_bytea(name, 'customer:Zoë-1'), 'hex') || ' ' ||
                (name_bi = platform.blind_index('Émile Zola', 't_latin1')) || ' ' ||
                (name_bi = platform.blind_index('Emile Zola', 't_latin1'))
           FROM customer",
    );
    // 'Émile Zola' in UTF-8: É is c3 89.
    assert_eq!(sealed, "Émile Zola c3896d696c65205a6f6c61 true false");
    let (code, message) = expect_error(
        &mut l,
        "SELECT platform.decrypt(name, 'customer:Zoé-1') FROM customer",
    );
    assert_eq!(code, "XX001", "{message}");
    run(
        &mut l,
        "DROP ROLE IF EXISTS t_latin1_clerk; CREATE ROLE t_latin1_clerk IN ROLE platform_readonly;
         GRANT USAGE ON SCHEMA platform TO t_latin1_clerk; GRANT SELECT ON customer TO t_latin1_clerk",
    );
    run(&mut l, "SET ROLE t_latin1_clerk");
    let masked: String = one(
        &mut l,
        "SELECT platform.reveal(name, 'customer:Zoë-1', 'name') FROM customer",
    );
    assert_eq!(masked, "É**** Z***");
    run(&mut l, "RESET ROLE");
    // A custom mask gets the database's text and gives it back.
    run(
        &mut l,
        "CREATE FUNCTION public.first_word(text) RETURNS text LANGUAGE sql AS $$ SELECT split_part($1, ' ', 1) $$;
         GRANT EXECUTE ON FUNCTION public.first_word(text) TO t_latin1_clerk;
         SET ROLE t_latin1_clerk",
    );
    let custom: String = one(
        &mut l,
        "SELECT platform.reveal(name, 'customer:Zoë-1', 'public.first_word') FROM customer",
    );
    assert_eq!(custom, "Émile");
    run(&mut l, "RESET ROLE");
    // A protected column: values and primary keys that are not ASCII, read, searched
    // through the blind index, written and re-keyed through the view.
    run(
        &mut l,
        "CREATE TABLE client (id text PRIMARY KEY, nom text);
         INSERT INTO client VALUES ('Zoë-1', 'Émile Zola');
         GRANT SELECT ON client TO t_latin1_clerk",
    );
    // A procedure that commits: a statement of its own.
    run(
        &mut l,
        "CALL platform.protect_column('public.client', 'nom', 't_latin1', mask => 'name', blind_index => true)",
    );
    run(
        &mut l,
        "INSERT INTO client_view (id, nom) VALUES ('Zoé-2', 'Zoë Crème');
         UPDATE client_view SET id = 'Zoé-3' WHERE id = 'Zoë-1'",
    );
    let protected: String = one(
        &mut l,
        "SELECT string_agg(id || '=' || nom, ',' ORDER BY id) || ' ' ||
                (SELECT id FROM client_view WHERE nom = 'Zoë Crème') || ' ' ||
                (SELECT count(*) FROM client WHERE position('Zola' IN encode(nom_encrypted, 'escape')) > 0)
           FROM client_view",
    );
    assert_eq!(protected, "Zoé-2=Zoë Crème,Zoé-3=Émile Zola Zoé-2 0");
    run(&mut l, "SET ROLE t_latin1_clerk");
    let clerk: String = one(
        &mut l,
        "SELECT string_agg(nom, ',' ORDER BY id) FROM client_view",
    );
    assert_eq!(clerk, "Z** C****,É**** Z***");
    run(&mut l, "RESET ROLE");
    // Names pass through pgrx as UTF-8, so they must be ASCII here: 'clé' is refused.
    let (code, message) = expect_error(&mut l, "SELECT platform.create_key('clé')");
    assert_eq!(code, "0A000", "{message}");
    drop(l);
    crate::testing::drop_database("t_pii_latin1");
    let _ = crate::testing::client().batch_execute("DROP ROLE t_latin1_clerk");
}
