#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error};
    use serde_json::{json, Value};

    /// Creates a slot using the plugin; returns the client.
    fn slot(c: &mut postgres::Client, name: &str) {
        c.batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}';
             SELECT pg_create_logical_replication_slot('{name}', 'pg_platform');"
        ))
        .unwrap_or_else(|e| panic!("create slot {name}: {e}"));
    }

    /// Drains the slot and parses every message.
    fn changes(c: &mut postgres::Client, name: &str, options: &[&str]) -> Vec<Value> {
        let opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        let rows = c
            .query(
                "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, VARIADIC $2::text[])",
                &[&name, &opts],
            )
            .unwrap_or_else(|e| panic!("get changes from {name}: {e}"));
        rows.iter()
            .map(|r| {
                let data: String = r.get(0);
                serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"))
            })
            .collect()
    }

    /// Drains and drops a slot, looking only at `tables` (a glob) and no messages: other
    /// tests write to the same database at the same time.
    fn drain_tables(
        c: &mut postgres::Client,
        name: &str,
        tables: &str,
        extra: &[&str],
    ) -> Vec<Value> {
        let mut options = vec!["include_tables", tables, "include_messages", "off"];
        options.extend_from_slice(extra);
        let msgs = changes(c, name, &options);
        drop_slot(c, name);
        msgs
    }

    fn drop_slot(c: &mut postgres::Client, name: &str) {
        let _ = c.batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')"));
    }

    fn of_kind<'a>(msgs: &'a [Value], kind: &str) -> Vec<&'a Value> {
        msgs.iter().filter(|m| m["kind"] == kind).collect()
    }

    #[test]
    fn every_type_round_trips_exactly() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_types; DROP TYPE IF EXISTS cdc_mood; DROP DOMAIN IF EXISTS cdc_positive;
             CREATE TYPE cdc_mood AS ENUM ('sad', 'happy');
             CREATE DOMAIN cdc_positive AS int CHECK (VALUE > 0);
             CREATE TABLE cdc_types (
               id int PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, n38 numeric(38,10), n numeric,
               b bool, t text, vc varchar(10), ch char(3), nm name, by bytea, d date, tm time,
               ts timestamp, tstz timestamptz, iv interval, u uuid, ip inet, net cidr, j json, jb jsonb,
               mood cdc_mood, pos cdc_positive, ints int[], texts text[], grid int[][], pt point);",
        )
        .expect("create table");
        slot(&mut c, "cdc_types");
        c.batch_execute(
            "SET TIME ZONE 'Europe/Paris';
             INSERT INTO cdc_types VALUES
              (1, -32768, 9223372036854775807, 'NaN', '-0', 1234567890123456789012345678.0123456789,
               '-0.000000000000000000000000000000000000001', true, 'tab\t\"quote\" é', 'short', 'ab',
               'a name', '\\x00ff10', '1900-01-01', '23:59:59.999999', '1969-12-31 23:59:59.5',
               '3000-01-01 00:00:00+00', '1 year 2 mons 3 days 04:05:06.000007',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8', '{\"a\": [1, 2]}',
               '{\"b\": 1, \"a\": 2}', 'happy', 7, '{1,NULL,3}', '{}', '{{1,2},{3,4}}', '(1.5,2)'),
              (2, NULL, NULL, 'Infinity', '-Infinity', NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL,
               'infinity', NULL, '-infinity', 'infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, '{NULL}', NULL, NULL),
              (3, 0, 0, 1.5e-45, 1e300, 0, 1e20, false, '', '', '', '', '', '2000-01-01', '00:00', '2000-01-01',
               '1970-01-01 00:00:00+00', '-1 days', '00000000-0000-0000-0000-000000000000', '::1', '::/0', '[]', 'null',
               'sad', 1, '{}', '{\"\"}', '{}', '(0,0)');",
        )
        .expect("insert");
        let msgs = drain_tables(&mut c, "cdc_types", "public.cdc_types", &[]);

        let rel = of_kind(&msgs, "relation");
        assert_eq!(rel.len(), 1, "{msgs:?}");
        let arrow: Vec<(String, String)> = rel[0]["columns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("").to_string(),
                            c["arrow"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want = [
            ("id", "int32"),
            ("i2", "int16"),
            ("i8", "int64"),
            ("f4", "float32"),
            ("f8", "float64"),
            ("n38", "decimal128(38,10)"),
            ("n", "utf8(decimal)"),
            ("b", "bool"),
            ("t", "utf8"),
            ("vc", "utf8"),
            ("ch", "utf8"),
            ("nm", "utf8"),
            ("by", "binary"),
            ("d", "date32"),
            ("tm", "time64(us)"),
            ("ts", "timestamp(us)"),
            ("tstz", "timestamp(us,UTC)"),
            ("iv", "interval(month_day_nano)"),
            ("u", "fixed_size_binary(16,uuid)"),
            ("ip", "utf8"),
            ("net", "utf8"),
            ("j", "utf8(json)"),
            ("jb", "utf8(json)"),
            ("mood", "dictionary(int32,utf8)"),
            ("pos", "int32"),
            ("ints", "list(int32)"),
            ("texts", "list(utf8)"),
            ("grid", "list(int32)"),
            ("pt", "utf8"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(arrow, want);
        assert_eq!(rel[0]["columns"][0]["key"], true);
        assert_eq!(rel[0]["columns"][0]["nullable"], false);
        assert_eq!(rel[0]["columns"][0]["pg_type"], "integer");
        assert_eq!(rel[0]["columns"][5]["pg_type"], "numeric(38,10)");

        let rows = of_kind(&msgs, "insert");
        assert_eq!(rows.len(), 3);
        let r1 = &rows[0]["new"];
        assert_eq!(r1["i2"], -32768);
        assert_eq!(r1["i8"], json!(9223372036854775807i64));
        assert_eq!(r1["f4"], "NaN");
        assert_eq!(r1["f8"].to_string(), "-0.0");
        assert_eq!(r1["n38"], "1234567890123456789012345678.0123456789");
        assert_eq!(r1["n"], "-0.000000000000000000000000000000000000001");
        assert_eq!(r1["t"], "tab\t\"quote\" é");
        assert_eq!(r1["ch"], "ab ");
        assert_eq!(r1["nm"], "a name");
        assert_eq!(r1["by"], "00ff10");
        assert_eq!(r1["d"], -25567); // 1900-01-01 in days since 1970
        assert_eq!(r1["tm"], json!(86_399_999_999i64));
        assert_eq!(r1["ts"], json!(-500_000i64));
        assert_eq!(r1["tstz"], json!(32_503_680_000_000_000i64)); // 3000-01-01 UTC, after 2262
        assert_eq!(
            r1["iv"],
            json!({"months": 14, "days": 3, "micros": 14_706_000_007i64})
        );
        assert_eq!(r1["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(r1["ip"], "192.168.0.1/24");
        assert_eq!(r1["net"], "10.0.0.0/8");
        assert_eq!(r1["j"], "{\"a\": [1, 2]}");
        assert_eq!(r1["jb"], "{\"a\": 2, \"b\": 1}");
        assert_eq!(r1["mood"], "happy");
        assert_eq!(r1["pos"], 7);
        assert_eq!(r1["ints"], json!([1, null, 3]));
        assert_eq!(r1["texts"], json!([]));
        assert_eq!(r1["grid"], json!([[1, 2], [3, 4]]));
        assert_eq!(r1["pt"], "(1.5,2)");

        let r2 = &rows[1]["new"];
        assert_eq!(r2["f4"], "Infinity");
        assert_eq!(r2["f8"], "-Infinity");
        assert_eq!(r2["n38"], Value::Null);
        assert_eq!(r2["n"], "NaN");
        assert_eq!(r2["d"], "infinity");
        assert_eq!(r2["ts"], "-infinity");
        assert_eq!(r2["tstz"], "infinity");
        assert_eq!(r2["texts"], json!([null]));

        let r3 = &rows[2]["new"];
        assert_eq!(r3["f4"].as_f64().map(|f| f as f32), Some(1.5e-45f32));
        assert_eq!(r3["f8"].as_f64(), Some(1e300));
        assert_eq!(r3["n"], "100000000000000000000");
        assert_eq!(r3["t"], "");
        assert_eq!(r3["d"], 10957);
        assert_eq!(r3["tstz"], 0);
        assert_eq!(r3["iv"], json!({"months": 0, "days": -1, "micros": 0}));
        assert_eq!(r3["jb"], "null");
        assert_eq!(r3["texts"], json!([""]));

        // Transaction framing: begin, relation, rows, commit, with xid, LSNs and time.
        assert_eq!(msgs[0]["kind"], "begin");
        assert_eq!(
            msgs.last().map(|m| m["kind"].clone()),
            Some(json!("commit"))
        );
        let xid = msgs[0]["xid"].clone();
        assert!(rows
            .iter()
            .all(|r| r["xid"] == xid && r["commit_lsn"] == msgs[0]["commit_lsn"]));
        assert!(rows[0]["lsn"].as_str().is_some_and(|l| l.contains('/')));
        assert!(rows[0]["commit_time"]
            .as_i64()
            .is_some_and(|t| t > 1_700_000_000_000_000));
    }

    #[test]
    fn updates_deletes_and_replica_identity() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_ri_default, cdc_ri_full, cdc_ri_nothing;
             CREATE TABLE cdc_ri_default (id int PRIMARY KEY, v text);
             CREATE TABLE cdc_ri_full (id int PRIMARY KEY, v text); ALTER TABLE cdc_ri_full REPLICA IDENTITY FULL;
             CREATE TABLE cdc_ri_nothing (id int, v text); ALTER TABLE cdc_ri_nothing REPLICA IDENTITY NOTHING;
             INSERT INTO cdc_ri_default VALUES (1, 'a'); INSERT INTO cdc_ri_full VALUES (1, 'a');
             INSERT INTO cdc_ri_nothing VALUES (1, 'a');",
        )
        .expect("setup");
        slot(&mut c, "cdc_ri");
        c.batch_execute(
            "UPDATE cdc_ri_default SET v = 'b'; UPDATE cdc_ri_default SET id = 2;
             UPDATE cdc_ri_full SET v = 'b'; DELETE FROM cdc_ri_full;
             DELETE FROM cdc_ri_default; DELETE FROM cdc_ri_nothing;",
        )
        .expect("changes");
        let msgs = drain_tables(&mut c, "cdc_ri", "public.cdc_ri_*", &[]);
        let ups = of_kind(&msgs, "update");
        let dels = of_kind(&msgs, "delete");
        // Default identity: no old row unless the key changed, then the old key only.
        assert_eq!(ups[0]["new"], json!({"id": 1, "v": "b"}));
        assert!(ups[0].get("old").is_none());
        assert_eq!(ups[1]["old"], json!({"id": 1}));
        // Full identity: the whole old row.
        assert_eq!(ups[2]["old"], json!({"id": 1, "v": "a"}));
        assert_eq!(dels[0]["old"], json!({"id": 1, "v": "b"}));
        assert_eq!(dels[1]["old"], json!({"id": 2}));
        // Nothing: a delete without any old data.
        assert_eq!(dels[2]["table"], "cdc_ri_nothing");
        assert!(dels[2].get("old").is_none());
        let rels = of_kind(&msgs, "relation");
        let identity: Vec<&str> = rels
            .iter()
            .filter_map(|r| r["replica_identity"].as_str())
            .collect();
        assert_eq!(identity, vec!["default", "full", "nothing"]);
    }

    #[test]
    fn unchanged_toast_is_marked_not_nulled() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_toast;
             CREATE TABLE cdc_toast (id int PRIMARY KEY, note text, big text);
             ALTER TABLE cdc_toast ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO cdc_toast VALUES (1, 'x', repeat('0123456789', 1000));",
        )
        .expect("setup");
        slot(&mut c, "cdc_toast");
        c.batch_execute("UPDATE cdc_toast SET note = 'y'; UPDATE cdc_toast SET big = 'small now';")
            .expect("update");
        let msgs = drain_tables(&mut c, "cdc_toast", "public.cdc_toast", &[]);
        let ups = of_kind(&msgs, "update");
        assert_eq!(ups[0]["new"], json!({"id": 1, "note": "y"}));
        assert_eq!(ups[0]["unchanged_toast"], json!(["big"]));
        assert_eq!(
            ups[1]["new"],
            json!({"id": 1, "note": "y", "big": "small now"})
        );
        assert!(ups[1].get("unchanged_toast").is_none());
    }

    #[test]
    fn rollbacks_subtransactions_truncate_messages_and_filters() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_a, cdc_b;
             CREATE TABLE cdc_a (id int PRIMARY KEY); CREATE TABLE cdc_b (id int PRIMARY KEY);",
        )
        .expect("setup");
        slot(&mut c, "cdc_misc");
        // One transaction per statement (a multi-statement string is one implicit transaction).
        // Other tests write concurrently: only this test's tables and prefixes are looked at.
        for sql in [
            "BEGIN; INSERT INTO cdc_a VALUES (100); ROLLBACK;",
            "BEGIN; INSERT INTO cdc_a VALUES (1); SAVEPOINT s; INSERT INTO cdc_a VALUES (2); ROLLBACK TO s;
                    INSERT INTO cdc_a VALUES (3); COMMIT;",
            "SELECT pg_logical_emit_message(true, 'cdc_misc_text', 'hello')",
            "SELECT pg_logical_emit_message(false, 'cdc_misc_bytes', '\\x00ff'::bytea)",
            "TRUNCATE cdc_a",
        ] {
            c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let excluded_xid: i64 = crate::testing::one(
            &mut c,
            "INSERT INTO cdc_b VALUES (1) RETURNING txid_current()",
        );
        let msgs = changes(
            &mut c,
            "cdc_misc",
            &[
                "include_tables",
                "public.cdc_a,public.cdc_b",
                "exclude_tables",
                "public.cdc_b",
            ],
        );
        drop_slot(&mut c, "cdc_misc");
        let ids: Vec<i64> = of_kind(&msgs, "insert")
            .iter()
            .filter_map(|m| m["new"]["id"].as_i64())
            .collect();
        assert_eq!(
            ids,
            vec![1, 3],
            "rolled back and aborted-subtransaction rows must be absent"
        );
        assert!(msgs.iter().all(|m| m["table"] != "cdc_b"));
        // The transaction that only touched the excluded table is skipped entirely.
        assert!(msgs.iter().all(|m| m["xid"] != excluded_xid), "{msgs:#?}");
        let m: Vec<&Value> = of_kind(&msgs, "message")
            .into_iter()
            .filter(|m| {
                m["prefix"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("cdc_misc_"))
            })
            .collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["prefix"], "cdc_misc_text");
        assert_eq!(m[0]["content"], "hello");
        assert_eq!(m[0]["transactional"], true);
        // A transactional message has its own transaction, framed by begin and commit.
        let framed = msgs
            .iter()
            .filter(|x| x["kind"] == "begin" && x["xid"] == m[0]["xid"])
            .count();
        assert_eq!(framed, 1);
        assert_eq!(m[1]["content_hex"], "00ff");
        assert_eq!(m[1]["transactional"], false);
        let t = of_kind(&msgs, "truncate");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["table"], "cdc_a");
    }

    #[test]
    fn alter_table_announces_a_new_shape() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_alter; CREATE TABLE cdc_alter (id int PRIMARY KEY, a int);",
        )
        .expect("setup");
        slot(&mut c, "cdc_alter");
        c.batch_execute(
            "INSERT INTO cdc_alter VALUES (1, 1); INSERT INTO cdc_alter VALUES (2, 2);
             ALTER TABLE cdc_alter ADD COLUMN b text; INSERT INTO cdc_alter VALUES (3, 3, 'x');
             ALTER TABLE cdc_alter ALTER COLUMN a TYPE bigint; INSERT INTO cdc_alter VALUES (4, 4, 'y');
             ALTER TABLE cdc_alter DROP COLUMN b; INSERT INTO cdc_alter VALUES (5, 5);",
        )
        .expect("changes");
        let msgs = drain_tables(&mut c, "cdc_alter", "public.cdc_alter", &[]);
        let rels = of_kind(&msgs, "relation");
        assert_eq!(rels.len(), 4, "one relation message per shape: {msgs:#?}");
        let fps: std::collections::HashSet<&str> = rels
            .iter()
            .filter_map(|r| r["fingerprint"].as_str())
            .collect();
        assert_eq!(fps.len(), 4);
        assert_eq!(rels[3]["columns"][1]["arrow"], "int64");
        assert_eq!(rels[3]["columns"].as_array().map(|a| a.len()), Some(2));
        let rows: Vec<Value> = of_kind(&msgs, "insert")
            .iter()
            .map(|m| m["new"].clone())
            .collect();
        assert_eq!(rows[2], json!({"id": 3, "a": 3, "b": "x"}));
        assert_eq!(rows[4], json!({"id": 5, "a": 5}));
    }

    #[test]
    fn large_transactions_stream_when_asked() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_big; CREATE TABLE cdc_big (id int PRIMARY KEY, pad text);",
        )
        .expect("setup");
        slot(&mut c, "cdc_stream");
        c.batch_execute(
            "INSERT INTO cdc_big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        )
        .expect("insert");
        c.batch_execute("SET logical_decoding_work_mem = '64kB'")
            .expect("set");
        let msgs = drain_tables(&mut c, "cdc_stream", "public.cdc_big", &["streaming", "on"]);
        let starts = of_kind(&msgs, "stream_start").len();
        assert!(starts > 1, "expected several streamed chunks, got {starts}");
        assert_eq!(of_kind(&msgs, "stream_commit").len(), 1);
        let inserts = of_kind(&msgs, "insert");
        assert_eq!(inserts.len(), 20000);
        assert!(inserts
            .iter()
            .all(|m| m["streamed"] == true && m.get("commit_lsn").is_none()));
        assert!(of_kind(&msgs, "begin").is_empty());

        // A streamed transaction that rolls back ends with stream_abort, never a commit.
        slot(&mut c, "cdc_stream_abort");
        c.batch_execute(
            "BEGIN; INSERT INTO cdc_big SELECT g, repeat('y', 100) FROM generate_series(100001, 120000) g; ROLLBACK;",
        )
        .expect("rolled back insert");
        c.batch_execute("INSERT INTO cdc_big VALUES (0, 'after')")
            .expect("insert");
        let msgs = drain_tables(
            &mut c,
            "cdc_stream_abort",
            "public.cdc_big",
            &["streaming", "on"],
        );
        assert_eq!(
            of_kind(&msgs, "stream_abort").len(),
            1,
            "{:?}",
            msgs.iter().map(|m| &m["kind"]).collect::<Vec<_>>()
        );
        assert!(of_kind(&msgs, "stream_commit").is_empty());
        let committed: Vec<&Value> = of_kind(&msgs, "insert")
            .into_iter()
            .filter(|m| m.get("streamed").is_none())
            .collect();
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0]["new"]["pad"], "after");
    }

    #[test]
    fn bad_options_are_refused() {
        let mut c = client();
        slot(&mut c, "cdc_bad");
        for (opts, needle) in [
            ("'colour', 'red'", "unknown option \"colour\""),
            ("'include_xids', 'maybe'", "must be a boolean"),
            ("'format_version', '2'", "format_version \"2\""),
            ("'include_tables', 'nodot'", "invalid table pattern"),
            ("'format', 'xml'", "format \"xml\""),
        ] {
            let (code, msg) = expect_error(
                &mut c,
                &format!(
                    "SELECT * FROM pg_logical_slot_peek_changes('cdc_bad', NULL, NULL, {opts})"
                ),
            );
            assert_eq!(code, "22023", "{opts}: {msg}");
            assert!(msg.contains(needle), "{opts}: {msg}");
        }
        drop_slot(&mut c, "cdc_bad");
    }

    #[test]
    fn create_cdc_slot_checks_the_server_first() {
        let mut c = client();
        let _ = c.batch_execute("SELECT pg_drop_replication_slot('cdc_helper')");
        let row = c
            .query_one(
                "SELECT slot_name, lsn FROM platform.create_cdc_slot('cdc_helper')",
                &[],
            )
            .expect("create_cdc_slot");
        assert_eq!(row.get::<_, String>(0), "cdc_helper");
        let plugin: String = crate::testing::one(
            &mut c,
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = 'cdc_helper'",
        );
        assert_eq!(plugin, "pg_platform");
        drop_slot(&mut c, "cdc_helper");

        // Where the server has output_plugin_libraries, a list without pg_platform is
        // refused with the exact setting to use.
        let has_guc: bool = crate::testing::one(
            &mut c,
            "SELECT current_setting('output_plugin_libraries', true) IS NOT NULL",
        );
        if has_guc
            && c.batch_execute("SET output_plugin_libraries = 'pgoutput'")
                .is_ok()
        {
            let (code, msg) = expect_error(
                &mut c,
                "SELECT * FROM platform.create_cdc_slot('cdc_refused')",
            );
            assert_eq!(code, "55000", "{msg}");
            let err = c
                .query_one("SELECT platform.create_cdc_slot('cdc_refused')", &[])
                .expect_err("refused");
            let hint = err
                .as_db_error()
                .and_then(|d| d.hint())
                .unwrap_or_default()
                .to_string();
            assert!(
                hint.contains("output_plugin_libraries = 'pgoutput, pg_platform'"),
                "{hint}"
            );
            c.batch_execute("RESET output_plugin_libraries")
                .expect("reset");
        }
        let exists: bool = crate::testing::one(
            &mut c,
            "SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'cdc_refused')",
        );
        assert!(!exists);
    }

    /// A reader of the binary format that rebuilds the JSON message of the same change, so
    /// a test can prove both formats carry the same information.
    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let s = &self.b[self.at..self.at + n];
            self.at += n;
            s
        }
        fn u8(&mut self) -> u8 {
            self.take(1)[0]
        }
        fn u16(&mut self) -> u16 {
            u16::from_le_bytes(self.take(2).try_into().unwrap_or_default())
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap_or_default())
        }
        fn i32(&mut self) -> i32 {
            self.u32() as i32
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap_or_default())
        }
        fn i64(&mut self) -> i64 {
            self.u64() as i64
        }
        fn bytes(&mut self) -> &'a [u8] {
            let n = self.u32() as usize;
            self.take(n)
        }
        fn string(&mut self) -> String {
            String::from_utf8_lossy(self.bytes()).into_owned()
        }
    }

    fn lsn(l: u64) -> Value {
        json!(format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff))
    }

    fn float_json(f: f64, text: String) -> Value {
        if f.is_nan() {
            json!("NaN")
        } else if f.is_infinite() {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
    }

    fn infinite_i64(v: i64) -> Value {
        match v {
            i64::MAX => json!("infinity"),
            i64::MIN => json!("-infinity"),
            _ => json!(v),
        }
    }

    fn read_value(r: &mut Reader, arrow: &str) -> Value {
        match arrow {
            "bool" => json!(r.u8() != 0),
            "int16" => json!(i16::from_le_bytes(r.take(2).try_into().unwrap_or_default())),
            "int32" => json!(r.i32()),
            "int64" => json!(r.i64()),
            "float32" => {
                let f = f32::from_bits(r.u32());
                float_json(f64::from(f), format!("{f:?}"))
            }
            "float64" => {
                let f = f64::from_bits(r.u64());
                float_json(f, format!("{f:?}"))
            }
            "binary" => json!(r
                .bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()),
            "date32" => match r.i32() {
                i32::MAX => json!("infinity"),
                i32::MIN => json!("-infinity"),
                d => json!(d),
            },
            "time64(us)" => json!(r.i64()),
            "timestamp(us)" | "timestamp(us,UTC)" => infinite_i64(r.i64()),
            "interval(month_day_nano)" => {
                let (m, d, us) = (r.i32(), r.i32(), r.i64());
                json!({"months": m, "days": d, "micros": us})
            }
            "fixed_size_binary(16,uuid)" => {
                let h: String = r.take(16).iter().map(|b| format!("{b:02x}")).collect();
                json!(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            a if a.starts_with("list(") => {
                let elem = &a[5..a.len() - 1];
                let ndim = r.u8() as usize;
                if ndim == 0 {
                    return json!([]);
                }
                let dims: Vec<usize> = (0..ndim).map(|_| r.u32() as usize).collect();
                let total: usize = dims.iter().product();
                let flat: Vec<Value> = (0..total)
                    .map(|_| {
                        if r.u8() == b'n' {
                            Value::Null
                        } else {
                            read_value(r, elem)
                        }
                    })
                    .collect();
                fn nest(dims: &[usize], flat: &mut std::vec::IntoIter<Value>) -> Value {
                    Value::Array(
                        (0..dims[0])
                            .map(|_| {
                                if dims.len() > 1 {
                                    nest(&dims[1..], flat)
                                } else {
                                    flat.next().unwrap_or(Value::Null)
                                }
                            })
                            .collect(),
                    )
                }
                nest(&dims, &mut flat.into_iter())
            }
            _ => json!(r.string()), // decimals, text, json, enums, text output
        }
    }

    fn decode_binary(messages: &[Vec<u8>]) -> Vec<Value> {
        let mut rels: std::collections::HashMap<u32, Value> = Default::default();
        let mut out = Vec::new();
        for m in messages {
            let mut r = Reader { b: m, at: 0 };
            let tag = r.u8();
            let mut v = serde_json::Map::new();
            let head = |r: &mut Reader, v: &mut serde_json::Map<String, Value>, lsn_name: &str| {
                let flags = r.u8();
                if flags & 1 != 0 {
                    v.insert("xid".into(), json!(r.u32()));
                }
                if flags & 2 != 0 {
                    v.insert("commit_lsn".into(), lsn(r.u64()));
                    v.insert("commit_time".into(), infinite_i64(r.i64()));
                }
                if flags & 4 != 0 {
                    v.insert(lsn_name.into(), lsn(r.u64()));
                }
                if flags & 8 != 0 {
                    v.insert("streamed".into(), json!(true));
                }
            };
            match tag {
                b'R' => {
                    let fv = r.u8();
                    let relid = r.u32();
                    let (schema, table, fp) = (r.string(), r.string(), r.string());
                    let ri = match r.u8() {
                        b'f' => "full",
                        b'n' => "nothing",
                        b'i' => "index",
                        _ => "default",
                    };
                    let n = r.u16();
                    let cols: Vec<Value> = (0..n)
                        .map(|_| {
                            let (name, pg_type, arrow, f) = (r.string(), r.string(), r.string(), r.u8());
                            json!({"name": name, "pg_type": pg_type, "arrow": arrow, "nullable": f & 1 != 0, "key": f & 2 != 0})
                        })
                        .collect();
                    let rel = json!({"kind": "relation", "format_version": fv, "schema": schema, "table": table,
                                     "relid": relid, "fingerprint": fp, "replica_identity": ri, "columns": cols});
                    rels.insert(relid, rel.clone());
                    out.push(rel);
                    continue;
                }
                b'B' | b'C' | b'K' => {
                    v.insert(
                        "kind".into(),
                        json!(match tag {
                            b'B' => "begin",
                            b'C' => "commit",
                            _ => "stream_commit",
                        }),
                    );
                    head(&mut r, &mut v, "end_lsn");
                }
                b'I' | b'U' | b'D' | b'T' => {
                    let kind = match tag {
                        b'I' => "insert",
                        b'U' => "update",
                        b'D' => "delete",
                        _ => "truncate",
                    };
                    v.insert("kind".into(), json!(kind));
                    head(&mut r, &mut v, "lsn");
                    let rel = rels.get(&r.u32()).cloned().unwrap_or(Value::Null);
                    v.insert("schema".into(), rel["schema"].clone());
                    v.insert("table".into(), rel["table"].clone());
                    if tag == b'T' {
                        let f = r.u8();
                        v.insert("cascade".into(), json!(f & 1 != 0));
                        v.insert("restart_identity".into(), json!(f & 2 != 0));
                    }
                    let cols = rel["columns"].as_array().cloned().unwrap_or_default();
                    while r.at < r.b.len() {
                        let which = r.u8();
                        let n = r.u16() as usize;
                        let keys_only = which == b'O' && rel["replica_identity"] != "full";
                        let wanted: Vec<&Value> = cols
                            .iter()
                            .filter(|c| !keys_only || c["key"] == true)
                            .collect();
                        assert_eq!(wanted.len(), n);
                        let mut tuple = serde_json::Map::new();
                        let mut unchanged = Vec::new();
                        for c in wanted {
                            let name = c["name"].as_str().unwrap_or("").to_string();
                            match r.u8() {
                                b'n' => {
                                    tuple.insert(name, Value::Null);
                                }
                                b'u' => unchanged.push(json!(name)),
                                _ => {
                                    let val = read_value(&mut r, c["arrow"].as_str().unwrap_or(""));
                                    tuple.insert(name, val);
                                }
                            }
                        }
                        v.insert(
                            if which == b'N' { "new" } else { "old" }.into(),
                            Value::Object(tuple),
                        );
                        if !unchanged.is_empty() {
                            v.insert("unchanged_toast".into(), Value::Array(unchanged));
                        }
                    }
                }
                b'M' => {
                    v.insert("kind".into(), json!("message"));
                    head(&mut r, &mut v, "lsn");
                    v.insert("transactional".into(), json!(r.u8() != 0));
                    v.insert("prefix".into(), json!(r.string()));
                    let content = r.bytes();
                    match std::str::from_utf8(content) {
                        Ok(t) => v.insert("content".into(), json!(t)),
                        Err(_) => v.insert(
                            "content_hex".into(),
                            json!(content
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()),
                        ),
                    };
                }
                b'S' | b'E' => {
                    v.insert(
                        "kind".into(),
                        json!(if tag == b'S' {
                            "stream_start"
                        } else {
                            "stream_stop"
                        }),
                    );
                    v.insert("xid".into(), json!(r.u32()));
                }
                other => panic!("unknown binary message kind {other}"),
            }
            assert_eq!(r.at, r.b.len(), "trailing bytes in {:?}", v.get("kind"));
            out.push(Value::Object(v));
        }
        out
    }

    #[test]
    fn binary_and_json_carry_the_same_information() {
        let mut c = client();
        c.batch_execute(
            "DROP TABLE IF EXISTS cdc_bin, cdc_bin_full;
             CREATE TABLE cdc_bin (id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(10,2),
                                   nu numeric, t text, by bytea, d date, tm time, ts timestamp, tz timestamptz,
                                   iv interval, u uuid, jb jsonb, ip inet, arr int[], grid text[][], big text);
             ALTER TABLE cdc_bin ALTER COLUMN big SET STORAGE EXTERNAL;
             CREATE TABLE cdc_bin_full (id int, v text); ALTER TABLE cdc_bin_full REPLICA IDENTITY FULL;",
        )
        .expect("setup");
        slot(&mut c, "cdc_bin");
        for sql in [
            "INSERT INTO cdc_bin VALUES (1, true, -7, 9007199254740993, 'NaN', -0.0, 12.34, 'Infinity', 'tab\tend', '\\x0001',
               'infinity', '12:00', '1850-06-01 10:00', '2300-01-01 00:00+00', '-3 mons 4 days -00:00:01', gen_random_uuid(),
               '{\"k\": [true, null]}', '::ffff:1.2.3.4', '{1,NULL}', '{{a,b},{NULL,d}}', repeat('z', 5000)),
              (2, NULL, NULL, NULL, 1.5, 2.5e-310, NULL, '-1.5e-20', NULL, NULL, '1969-07-20', NULL, '-infinity', NULL,
               NULL, NULL, NULL, NULL, '{}', NULL, NULL)",
            "UPDATE cdc_bin SET t = 'changed' WHERE id = 1",
            "UPDATE cdc_bin SET id = 3 WHERE id = 2",
            "DELETE FROM cdc_bin WHERE id = 3",
            "INSERT INTO cdc_bin_full VALUES (1, 'x'); UPDATE cdc_bin_full SET v = 'y'; DELETE FROM cdc_bin_full",
            "SELECT pg_logical_emit_message(true, 'p', 'text body')",
            "SELECT pg_logical_emit_message(false, 'p', '\\xdeadbeef'::bytea)",
            "TRUNCATE cdc_bin_full",
        ] {
            c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // Both formats read exactly the same stretch of WAL, whatever other tests write.
        let upto: String = crate::testing::one(&mut c, "SELECT pg_current_wal_lsn()::text");
        let text: Vec<Value> = c
            .query(
                "SELECT data FROM pg_logical_slot_peek_changes('cdc_bin', $1::text::pg_lsn, NULL, 'include_tables', 'public.cdc_bin*')",
                &[&upto],
            )
            .expect("json")
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(Value::Null))
            .collect();
        let bin: Vec<Vec<u8>> = c
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes('cdc_bin', $1::text::pg_lsn, NULL, 'format', 'binary',
                                                                       'include_tables', 'public.cdc_bin*')",
                &[&upto],
            )
            .expect("binary")
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect();
        drop_slot(&mut c, "cdc_bin");
        let decoded = decode_binary(&bin);
        assert_eq!(decoded.len(), text.len());
        for (b, j) in decoded.iter().zip(&text) {
            assert_eq!(b, j);
        }
        assert!(of_kind(&text, "update")
            .iter()
            .any(|m| m["unchanged_toast"] == json!(["big"])));
        let total: usize = bin.iter().map(|m| m.len()).sum::<usize>();
        let total_json: usize = text.iter().map(|m| m.to_string().len()).sum::<usize>();
        assert!(
            total < total_json,
            "binary {total} bytes vs json {total_json}"
        );
    }

    /// In a LATIN1 database change events carry text as UTF-8 (JSON's and the lake's Arrow
    /// strings' encoding), converted by PostgreSQL: an accented value and table name come
    /// out as they are in both formats, where the JSON had U+FFFD and the binary format
    /// LATIN1 bytes it declared UTF-8.
    #[test]
    fn a_latin1_databases_text_comes_out_as_utf8() {
        let mut l = crate::testing::fresh_database(
            "t_cdc_latin1",
            "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        );
        for sql in [
            "CREATE TABLE café (id int PRIMARY KEY, owner text, note varchar(20))",
            "SELECT pg_create_logical_replication_slot('cdc_latin1', 'pg_platform')",
            "INSERT INTO café VALUES (1, 'Zoë', 'crème')",
        ] {
            l.batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let fetch = |l: &mut postgres::Client, format: &str| -> Vec<Vec<u8>> {
            l.query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes('cdc_latin1', NULL, NULL, 'format', $1,
                                                                       'include_messages', 'off')",
                &[&format],
            )
            .expect("latin1 changes")
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect()
        };
        let text: Vec<Value> = fetch(&mut l, "json")
            .iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap_or_else(|e| panic!("not UTF-8 ({e}): {b:?}"));
                serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
            })
            .collect();
        let decoded = decode_binary(&fetch(&mut l, "binary"));
        let _ = l.batch_execute("SELECT pg_drop_replication_slot('cdc_latin1')");
        for msgs in [&text, &decoded] {
            let inserts = of_kind(msgs, "insert");
            assert_eq!(inserts.len(), 1, "{msgs:?}");
            assert_eq!(inserts[0]["table"], "café");
            assert_eq!(
                inserts[0]["new"],
                json!({"id": 1, "owner": "Zoë", "note": "crème"})
            );
        }
        drop(l);
        crate::testing::drop_database("t_cdc_latin1");
    }
}
