#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error, one};
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::{Array, RecordBatch};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::path::{Path, PathBuf};

    /// A fresh lake directory for one test (the server, as postgres, creates it).
    fn lake_dir(name: &str) -> PathBuf {
        let p = PathBuf::from(format!("/tmp/pg_platform-test-lake/{name}"));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn drop_sink(c: &mut postgres::Client, name: &str) {
        let _ = c.batch_execute(&format!(
            "SELECT platform.drop_lake_sink(name) FROM platform.lake_sink WHERE name = '{name}';
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_{name}';"
        ));
    }

    fn files_under(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, suffix, out);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }

    /// The int `id` column of `batches`, sorted.
    fn sorted_ids<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Vec<i32> {
        let mut ids: Vec<i32> = batches
            .into_iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .expect("id")
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every row the lake holds for a table, files in name (= LSN) order.
    fn read_table(lake: &Path, table: &str) -> Vec<RecordBatch> {
        let mut paths = Vec::new();
        files_under(&lake.join("public").join(table), ".parquet", &mut paths);
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.build())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for b in reader {
                out.push(b.unwrap_or_else(|e| panic!("{}: {e}", p.display())));
            }
        }
        out
    }

    fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
        let a = b
            .column_by_name(col)
            .unwrap_or_else(|| panic!("no column {col}"));
        let a = arrow_cast_to_strings(a.as_ref());
        a
    }

    /// Utf8 or dictionary-of-utf8 values as strings.
    fn arrow_cast_to_strings(a: &dyn Array) -> Vec<Option<String>> {
        if let Some(d) = a.as_any_dictionary_opt() {
            let values = d.values().as_string::<i32>().clone();
            let keys = d.normalized_keys();
            return (0..a.len())
                .map(|i| (!a.is_null(i)).then(|| values.value(keys[i]).to_string()))
                .collect();
        }
        let s = a.as_string::<i32>();
        (0..a.len())
            .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
            .collect()
    }

    fn sync(c: &mut postgres::Client, sink: &str) -> (i32, i64, bool) {
        let row = c
            .query_one(
                "SELECT files, rows, recovered FROM platform.lake_sync($1)",
                &[&sink],
            )
            .unwrap_or_else(|e| match e.as_db_error() {
                Some(d) => panic!("lake_sync({sink}): {} {}", d.code().code(), d.message()),
                None => panic!("lake_sync({sink}): {e}"),
            });
        (row.get(0), row.get(1), row.get(2))
    }

    #[test]
    fn committed_changes_land_once_with_their_types_and_lake_columns() {
        let mut c = client();
        let lake = lake_dir("types");
        drop_sink(&mut c, "types");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_types;
             CREATE TABLE lake_types (id int PRIMARY KEY, amount numeric(12,2), note text,
                                      at timestamptz, tags text[], raw bytea, big text, n int8);",
        )
        .expect("create table");
        let created: String = one(
            &mut c,
            &format!(
                "SELECT slot_name FROM platform.create_lake_sink('types', '{}', tables => 'public.lake_types', background => false)",
                lake.display()
            ),
        );
        assert_eq!(created, "pg_platform_lake_types");
        // An incompressible 20 kB value is stored out of line, so an update that does not
        // touch it sends it as an unchanged TOAST value.
        c.batch_execute(
            "INSERT INTO lake_types VALUES
               (1, 1234.50, 'first', '2026-03-01 12:00:00+00', '{a,NULL}', '\\x00ff', NULL, 9007199254740993),
               (2, -0.01, NULL, NULL, NULL, NULL, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 700) g), NULL);",
        )
        .expect("inserts");
        let mut t = c.transaction().expect("begin");
        t.batch_execute("INSERT INTO lake_types VALUES (3, 1, 'rolled back')")
            .expect("insert");
        t.rollback().expect("rollback");
        c.batch_execute(
            "UPDATE lake_types SET note = 'second' WHERE id = 2;
             DELETE FROM lake_types WHERE id = 1;",
        )
        .expect("writes");
        let (files, rows, recovered) = sync(&mut c, "types");
        assert_eq!((files, rows, recovered), (1, 4, false));

        let batches = read_table(&lake, "lake_types");
        assert_eq!(batches.len(), 1, "one file, one row group");
        let b = &batches[0];
        assert_eq!(b.num_rows(), 4);
        assert_eq!(
            strings(b, "_op"),
            ["i", "i", "u", "d"].map(|s| Some(s.to_string()))
        );
        let ids = b
            .column_by_name("id")
            .expect("id")
            .as_primitive::<Int32Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 2, 1]);
        let amount = b
            .column_by_name("amount")
            .expect("amount")
            .as_primitive::<Decimal128Type>();
        assert_eq!(amount.value(0), 123450);
        assert_eq!(amount.value(1), -1);
        assert_eq!(amount.precision(), 12);
        assert_eq!(amount.scale(), 2);
        assert!(amount.is_null(3), "a delete carries the key only");
        let at = b
            .column_by_name("at")
            .expect("at")
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_772_366_400_000_000);
        let n = b
            .column_by_name("n")
            .expect("n")
            .as_primitive::<Int64Type>();
        assert_eq!(n.value(0), 9_007_199_254_740_993);
        let tags = b.column_by_name("tags").expect("tags").as_list::<i32>();
        let first = tags.value(0);
        let first = first.as_string::<i32>();
        assert_eq!((first.value(0), first.is_null(1)), ("a", true));
        assert!(tags.is_null(1));
        let raw = b.column_by_name("raw").expect("raw").as_binary::<i32>();
        assert_eq!(raw.value(0), &[0x00, 0xff]);
        // The update did not carry the unchanged TOAST value: NULL and named as unchanged.
        assert_eq!(strings(b, "big")[1].as_ref().map(|s| s.len()), Some(22_400));
        assert!(b.column_by_name("big").expect("big").is_null(2));
        let unchanged = b
            .column_by_name("_unchanged_toast")
            .expect("_unchanged_toast")
            .as_list::<i32>();
        assert!(unchanged.is_null(1));
        assert_eq!(
            strings_of(&unchanged.value(2)),
            vec![Some("big".to_string())]
        );
        let commit_lsn = b
            .column_by_name("_commit_lsn")
            .expect("_commit_lsn")
            .as_primitive::<Int64Type>();
        assert!(commit_lsn.value(0) > 0 && commit_lsn.value(3) > commit_lsn.value(0));

        // Hive-style commit day directories, the manifest, nothing pending.
        let mut all = Vec::new();
        files_under(&lake, "", &mut all);
        let names: Vec<String> = all
            .iter()
            .map(|p| p.strip_prefix(&lake).unwrap_or(p).display().to_string())
            .collect();
        let today: String = one(&mut c, "SELECT to_char(now() AT TIME ZONE 'UTC', '\"_commit_year=\"YYYY/\"_commit_month=\"MM/\"_commit_day=\"DD')");
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("public/lake_types/{today}/"))
                    && n.ends_with(".parquet")),
            "{names:?}"
        );
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("_pg_platform/types/commits/"))
                .count(),
            1,
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with(".pending")), "{names:?}");

        // Nothing new: an empty batch, but the slot still moves to the flushed WAL.
        c.batch_execute(
            "INSERT INTO lake_types VALUES (10, 1, 'later'); DELETE FROM lake_types WHERE id = 10;",
        )
        .expect("writes");
        assert_eq!(sync(&mut c, "types").1, 2);
        c.batch_execute("CREATE TABLE IF NOT EXISTS lake_other (id int PRIMARY KEY); INSERT INTO lake_other VALUES (1) ON CONFLICT DO NOTHING;")
            .expect("other table");
        let flushed: String = one(&mut c, "SELECT pg_current_wal_flush_lsn()::text");
        assert_eq!(sync(&mut c, "types"), (0, 0, false));
        let behind: bool = one(
            &mut c,
            &format!("SELECT confirmed_flush_lsn < '{flushed}' FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_types'"),
        );
        assert!(
            !behind,
            "the idle slot was left behind the WAL flushed before the sync"
        );
        let status: (i64, i64, String) = {
            let r = c
                .query_one(
                    "SELECT rows_landed, files_landed, wal_status FROM platform.lake_status WHERE sink = 'types'",
                    &[],
                )
                .expect("status");
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(status, (6, 2, "reserved".to_string()));
        let per_table: i64 = one(
            &mut c,
            "SELECT rows FROM platform.lake_files WHERE sink = 'types' AND table_name = 'lake_types'",
        );
        assert_eq!(per_table, 6);
        drop_sink(&mut c, "types");
    }

    fn strings_of(a: &dyn Array) -> Vec<Option<String>> {
        arrow_cast_to_strings(a)
    }

    #[test]
    fn a_batch_that_fails_at_any_step_is_finished_or_undone_by_the_next() {
        let mut c = client();
        let lake = lake_dir("faults");
        drop_sink(&mut c, "faults");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_faults; CREATE TABLE lake_faults (id int PRIMARY KEY, v text);",
        )
        .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('faults', $1, tables => 'public.lake_faults', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        let mut expected = 0i64;
        for (i, step) in ["after_files", "after_manifest", "after_advance"]
            .iter()
            .enumerate()
        {
            c.batch_execute(&format!(
                "INSERT INTO lake_faults SELECT g, 'v' FROM generate_series({0} * 100 + 1, {0} * 100 + 100) g",
                i
            ))
            .expect("rows");
            expected += 100;
            let (code, msg) = expect_error(
                &mut c,
                &format!(
                    "SET platform.lake_fault = '{step}'; SELECT platform.lake_sync('faults');"
                ),
            );
            assert_eq!(code, "XX000", "{msg}");
            c.batch_execute("RESET platform.lake_fault").expect("reset");
            // The next run finishes a committed batch (recording it) or redoes an undone one.
            let (_, rows, recovered) = sync(&mut c, "faults");
            if *step == "after_files" {
                assert_eq!((rows, recovered), (100, false), "{step}");
            } else {
                assert_eq!((rows, recovered), (100, true), "{step}");
                assert_eq!(sync(&mut c, "faults"), (0, 0, false), "{step}");
            }
            let ids = sorted_ids(&read_table(&lake, "lake_faults"));
            let mut sorted = ids.clone();
            sorted.dedup();
            assert_eq!(ids.len() as i64, expected, "{step}: every row once");
            assert_eq!(sorted.len() as i64, expected, "{step}: no row twice");
            let mut pending = Vec::new();
            files_under(&lake, ".pending", &mut pending);
            assert!(pending.is_empty(), "{step}: {pending:?}");
        }
        let landed: i64 = one(
            &mut c,
            "SELECT rows_landed FROM platform.lake_sink WHERE name = 'faults'",
        );
        assert_eq!(landed, 300);
        drop_sink(&mut c, "faults");
    }

    #[test]
    fn added_and_dropped_columns_keep_flowing_into_one_file() {
        let mut c = client();
        let lake = lake_dir("shape");
        drop_sink(&mut c, "shape");
        c.batch_execute("DROP TABLE IF EXISTS lake_shape; CREATE TABLE lake_shape (id int PRIMARY KEY, a text, b int);")
            .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('shape', $1, tables => 'public.lake_shape', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        c.batch_execute(
            "INSERT INTO lake_shape VALUES (1, 'x', 1);
             ALTER TABLE lake_shape ADD COLUMN c bool;
             INSERT INTO lake_shape VALUES (2, 'y', 2, true);
             ALTER TABLE lake_shape DROP COLUMN b;
             INSERT INTO lake_shape VALUES (3, 'z', false);",
        )
        .expect("writes");
        assert_eq!(sync(&mut c, "shape").0, 1, "one file for the three shapes");
        let batches = read_table(&lake, "lake_shape");
        let b = &batches[0];
        let bcol = b
            .column_by_name("b")
            .expect("b")
            .as_primitive::<Int32Type>();
        assert_eq!(
            (0..3)
                .map(|i| (!bcol.is_null(i)).then(|| bcol.value(i)))
                .collect::<Vec<_>>(),
            vec![Some(1), Some(2), None]
        );
        let ccol = b.column_by_name("c").expect("c").as_boolean();
        assert!(ccol.is_null(0) && ccol.value(1) && !ccol.value(2));
        // A changed type cannot share a file: the next part begins.
        c.batch_execute(
            "INSERT INTO lake_shape VALUES (4, 'w', true);
             ALTER TABLE lake_shape ALTER COLUMN a TYPE int USING length(a);
             INSERT INTO lake_shape VALUES (5, 7, true);",
        )
        .expect("retype");
        assert_eq!(sync(&mut c, "shape").0, 2);
        drop_sink(&mut c, "shape");
    }

    #[test]
    fn bad_input_is_refused_with_nothing_left_behind() {
        let mut c = client();
        let lake = lake_dir("bad");
        let url = lake.display().to_string();
        let rootonly = lake_dir("rootonly");
        std::fs::create_dir_all(&rootonly).expect("root-only directory");
        drop_sink(&mut c, "bad");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_noident, lake_reserved;
             CREATE TABLE lake_noident (v text);
             CREATE TABLE lake_reserved (id int PRIMARY KEY, _op text);",
        )
        .expect("tables");
        let cases = [
            ("SELECT * FROM platform.lake_sync('nope')".to_string(), "42704"),
            ("SELECT platform.drop_lake_sink('nope')".to_string(), "42704"),
            ("SELECT * FROM platform.lake_compact('nope')".to_string(), "42704"),
            ("SELECT platform.lake_read_sql('nope', 'public.t')".to_string(), "42704"),
            ("SELECT platform.lake_star_schema_sql('nope')".to_string(), "42704"),
            (format!("SELECT * FROM platform.create_lake_sink('Bad-Name', '{url}')"), "22023"),
            ("SELECT * FROM platform.create_lake_sink('bad', 'relative/dir')".to_string(), "22023"),
            ("SELECT * FROM platform.create_lake_sink('bad', 'ftp://host/x')".to_string(), "22023"),
            ("SELECT * FROM platform.create_lake_sink('bad', '/tmp/../etc')".to_string(), "22023"),
            ("SELECT * FROM platform.create_lake_sink('bad', 's3://Bad_Bucket/prefix')".to_string(), "22023"),
            ("SELECT * FROM platform.create_lake_sink('bad', 's3://lake-bucket/a/../b')".to_string(), "22023"),
            // No credentials in the server's environment nor a credentials file.
            ("SELECT * FROM platform.create_lake_sink('bad', 's3://lake-bucket/prefix', tables => 'public.lake_x')".to_string(), "28000"),
            (format!("SELECT * FROM platform.create_lake_sink('bad', '{url}', tables => 'public.lake_noident', background => false)"), "55000"),
            (format!("SELECT * FROM platform.create_lake_sink('bad', '{url}', tables => 'public.lake_reserved', background => false)"), "42939"),
            // The server's user cannot create a directory in one only root may write.
            (format!("SELECT * FROM platform.create_lake_sink('bad', '{}/lake', tables => 'public.lake_x', background => false)", rootonly.display()), "42501"),
        ];
        for (sql, code) in cases {
            let (got, msg) = expect_error(&mut c, &sql);
            assert_eq!(got, code, "{sql}: {msg}");
            let slots: i64 = one(&mut c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_bad'");
            let sinks: i64 = one(
                &mut c,
                "SELECT count(*) FROM platform.lake_sink WHERE name = 'bad'",
            );
            assert_eq!((slots, sinks), (0, 0), "{sql} left a slot or a sink");
        }
        // A slot of the same name owned by another plugin, and a duplicate sink.
        c.batch_execute(
            "SELECT pg_create_logical_replication_slot('pg_platform_lake_bad', 'test_decoding')",
        )
        .expect("foreign slot");
        let (got, msg) = expect_error(&mut c, &format!("SELECT * FROM platform.create_lake_sink('bad', '{url}', tables => 'public.lake_x', background => false)"));
        assert_eq!(got, "55000", "{msg}");
        assert!(msg.contains("test_decoding"), "{msg}");
        c.batch_execute("SELECT pg_drop_replication_slot('pg_platform_lake_bad')")
            .expect("drop");
        c.batch_execute(&format!(
            "SELECT * FROM platform.create_lake_sink('bad', '{url}', tables => 'public.lake_x', background => false)"
        ))
        .expect("create");
        let (got, _) = expect_error(
            &mut c,
            &format!("SELECT * FROM platform.create_lake_sink('bad', '{url}')"),
        );
        assert_eq!(got, "42710");

        // The slot consumed behind the sink's back: a gap, never silently skipped.
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS lake_x (id int PRIMARY KEY); INSERT INTO lake_x VALUES (1) ON CONFLICT DO NOTHING;
             SELECT pg_replication_slot_advance('pg_platform_lake_bad', pg_current_wal_flush_lsn());",
        )
        .expect("advance");
        let (got, msg) = expect_error(&mut c, "SELECT * FROM platform.lake_sync('bad')");
        assert_eq!(got, "55000", "{msg}");
        assert!(msg.contains("consumed outside the sink"), "{msg}");

        // A missing slot is reported in the status and by lake_sync.
        c.batch_execute("SELECT pg_drop_replication_slot('pg_platform_lake_bad')")
            .expect("drop slot");
        let status: String = one(
            &mut c,
            "SELECT wal_status FROM platform.lake_status WHERE sink = 'bad'",
        );
        assert_eq!(status, "missing");
        let (got, msg) = expect_error(&mut c, "SELECT * FROM platform.lake_sync('bad')");
        assert_eq!(got, "55000", "{msg}");
        assert!(c
            .query_one("SELECT platform.drop_lake_sink('bad')", &[])
            .is_ok());
    }

    #[test]
    fn an_unwritable_lake_fails_the_batch_and_resumes_when_fixed() {
        let mut c = client();
        let lake = lake_dir("readonly");
        drop_sink(&mut c, "readonly");
        c.batch_execute("DROP TABLE IF EXISTS lake_ro; CREATE TABLE lake_ro (id int PRIMARY KEY);")
            .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('readonly', $1, tables => 'public.lake_ro', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        c.batch_execute("INSERT INTO lake_ro SELECT generate_series(1, 50)")
            .expect("rows");
        use std::os::unix::fs::PermissionsExt;
        let set_mode = |mode: u32| {
            std::fs::set_permissions(&lake, std::fs::Permissions::from_mode(mode))
                .expect("chmod lake");
        };
        set_mode(0o555);
        let (got, msg) = expect_error(&mut c, "SELECT * FROM platform.lake_sync('readonly')");
        set_mode(0o755);
        assert_eq!(got, "42501", "{msg}");
        let confirmed: String = one(&mut c, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_readonly'");
        let start: String = one(
            &mut c,
            "SELECT start_lsn::text FROM platform.lake_sink WHERE name = 'readonly'",
        );
        assert_eq!(confirmed, start, "the slot did not move");
        assert_eq!(sync(&mut c, "readonly").1, 50);
        drop_sink(&mut c, "readonly");
    }

    fn wait_for<T: PartialEq + std::fmt::Debug + for<'a> postgres::types::FromSql<'a>>(
        c: &mut postgres::Client,
        sql: &str,
        want: T,
    ) {
        let mut got = None;
        for _ in 0..120 {
            let v: T = one(c, sql);
            if v == want {
                return;
            }
            got = Some(v);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("{sql}: waited 60 s for {want:?}, last {got:?}");
    }

    #[test]
    fn the_worker_lands_changes_reports_a_fault_and_resumes() {
        let mut c = client();
        let lake = lake_dir("worker");
        drop_sink(&mut c, "worker");
        c.batch_execute("DROP TABLE IF EXISTS lake_w; CREATE TABLE lake_w (id int PRIMARY KEY);")
            .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('worker', $1, tables => 'public.lake_w')",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        c.batch_execute("INSERT INTO lake_w SELECT generate_series(1, 30)")
            .expect("rows");
        let landed = "SELECT rows_landed FROM platform.lake_status WHERE sink = 'worker'";
        wait_for(&mut c, landed, 30i64);
        // Every directory the next file could go to is made read-only.
        fn chmod_dirs(dir: &Path, mode: u32) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        chmod_dirs(&e.path(), mode);
                    }
                }
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let table_dir = lake.join("public");
        chmod_dirs(&table_dir, 0o555);
        c.batch_execute("INSERT INTO lake_w SELECT generate_series(31, 40)")
            .expect("rows");
        wait_for(
            &mut c,
            "SELECT coalesce(last_error LIKE 'permission denied in the lake:%(42501)', false) FROM platform.lake_status WHERE sink = 'worker'",
            true,
        );
        let still: i64 = one(&mut c, landed);
        chmod_dirs(&table_dir, 0o755);
        assert_eq!(still, 30, "nothing landed while the lake was read-only");
        wait_for(&mut c, landed, 40i64);
        wait_for(
            &mut c,
            "SELECT last_error IS NULL FROM platform.lake_status WHERE sink = 'worker'",
            true,
        );
        let mut pending = Vec::new();
        files_under(&lake, ".pending", &mut pending);
        assert!(pending.is_empty(), "{pending:?}");
        drop_sink(&mut c, "worker");
    }

    /// (id, v, op, commit_lsn, lsn) of every lake row of `table` (columns id int, v int).
    fn lake_changes(lake: &Path, table: &str) -> Vec<(i32, Option<i32>, String, i64, i64)> {
        let mut out = Vec::new();
        for b in read_table(lake, table) {
            let id = b
                .column_by_name("id")
                .expect("id")
                .as_primitive::<Int32Type>();
            let v = b
                .column_by_name("v")
                .expect("v")
                .as_primitive::<Int32Type>();
            let op = strings(&b, "_op");
            let cl = b
                .column_by_name("_commit_lsn")
                .expect("cl")
                .as_primitive::<Int64Type>();
            let l = b
                .column_by_name("_lsn")
                .expect("l")
                .as_primitive::<Int64Type>();
            for (i, o) in op.iter().enumerate() {
                out.push((
                    id.value(i),
                    (!v.is_null(i)).then(|| v.value(i)),
                    o.clone().unwrap_or_default(),
                    cl.value(i),
                    l.value(i),
                ));
            }
        }
        out
    }

    #[test]
    fn a_backfill_hands_off_to_the_change_stream_without_a_row_missed_or_doubled() {
        let mut c = client();
        let lake = lake_dir("backfill");
        drop_sink(&mut c, "backfill");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_bf;
             CREATE TABLE lake_bf (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO lake_bf SELECT g, 0 FROM generate_series(1, 1000) g;",
        )
        .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('backfill', $1, tables => 'public.lake_bf', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        c.batch_execute("SET platform.lake_backfill_chunk_rows = 300")
            .expect("chunk size");
        // A writer changes rows, also ones the chunks have not reached yet, while they run.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut w = client();
            let mut i = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let _ = w.batch_execute(&format!(
                    "UPDATE lake_bf SET v = v + 1 WHERE id IN ({a}, {b});
                     DELETE FROM lake_bf WHERE id = {d};
                     INSERT INTO lake_bf VALUES ({n}, 7) ON CONFLICT (id) DO UPDATE SET v = lake_bf.v + 1;",
                    a = (i * 37) % 1000 + 1,
                    b = (i * 101) % 1000 + 1,
                    d = (i * 53) % 1000 + 1,
                    n = 1000 + i % 50
                ));
            }
        });
        let mut done = false;
        for _ in 0..60 {
            sync(&mut c, "backfill");
            let state: String = one(
                &mut c,
                "SELECT state FROM platform.lake_backfills WHERE sink = 'backfill'",
            );
            if state == "done" {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer");
        assert!(done, "the backfill did not finish");
        sync(&mut c, "backfill");
        let (chunks, rows): (i32, i64) = {
            let r = c
                .query_one(
                    "SELECT chunks, rows FROM platform.lake_backfill WHERE sink = 'backfill'",
                    &[],
                )
                .expect("progress");
            (r.get(0), r.get(1))
        };
        // The writer deletes and adds rows while the chunks run: each chunk takes the next
        // 300 keys and the first that is not followed by more rows ends the backfill. A
        // chunk's key that the writer changed meanwhile lands as the change, not as a
        // snapshot row, so the rows counted may fill fewer chunks than were read (867
        // rows from 4 chunks in one run); the table never holds more than 1 050 rows.
        assert!(
            ((rows + 299) / 300).max(3) <= i64::from(chunks) && chunks <= 4,
            "{chunks} chunks of 300 for {rows} snapshot rows"
        );
        let mut changes = lake_changes(&lake, "lake_bf");
        let snapshot_rows = changes.iter().filter(|r| r.2 == "r").count() as i64;
        assert_eq!(snapshot_rows, rows);
        let mut r_ids: Vec<i32> = changes.iter().filter(|r| r.2 == "r").map(|r| r.0).collect();
        r_ids.sort_unstable();
        let n = r_ids.len();
        r_ids.dedup();
        assert_eq!(n, r_ids.len(), "a row was snapshot twice");
        // Replaying in commit order gives the table.
        changes.sort_by_key(|r| (r.3, r.4));
        let mut state = std::collections::BTreeMap::new();
        for (id, v, op, ..) in &changes {
            if op == "d" {
                state.remove(id);
            } else {
                state.insert(*id, v.unwrap_or(-1));
            }
        }
        let table: Vec<(i32, i32)> = c
            .query("SELECT id, v FROM lake_bf ORDER BY id", &[])
            .expect("table")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let replayed: Vec<(i32, i32)> = state.into_iter().collect();
        if replayed.len() != table.len() {
            let ids: std::collections::BTreeSet<i32> = table.iter().map(|r| r.0).collect();
            for (id, _) in replayed.iter().filter(|r| !ids.contains(&r.0)) {
                let hist: Vec<_> = changes.iter().filter(|c| c.0 == *id).collect();
                eprintln!("extra id {id}: {hist:?}");
            }
        }
        assert_eq!(replayed.len(), table.len());
        let differ: Vec<_> = replayed
            .iter()
            .zip(&table)
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        assert!(
            differ.is_empty(),
            "replay differs from the table: {differ:?}"
        );

        // Restarting a backfill lands every row again; a table outside the sink is refused.
        c.batch_execute("SELECT platform.lake_backfill('backfill', 'public.lake_bf')")
            .expect("restart");
        for _ in 0..10 {
            sync(&mut c, "backfill");
        }
        let again: i64 = one(
            &mut c,
            "SELECT rows FROM platform.lake_backfill WHERE sink = 'backfill' AND state = 'done'",
        );
        let count: i64 = one(&mut c, "SELECT count(*) FROM lake_bf");
        assert_eq!(again, count);
        // A table of exactly three chunks' rows is read in three chunks: the third, full,
        // is known to be the last without a fourth, empty, read.
        c.batch_execute(
            "DELETE FROM lake_bf; INSERT INTO lake_bf SELECT g, 0 FROM generate_series(1, 900) g;
             SELECT platform.lake_backfill('backfill', 'public.lake_bf')",
        )
        .expect("900 rows");
        for _ in 0..10 {
            sync(&mut c, "backfill");
        }
        let progress: String = one(
            &mut c,
            "SELECT state || ' ' || chunks || ' ' || rows FROM platform.lake_backfill WHERE sink = 'backfill'",
        );
        assert_eq!(progress, "done 3 900");
        c.batch_execute("CREATE TABLE IF NOT EXISTS lake_outside (id int PRIMARY KEY)")
            .expect("t");
        let (code, msg) = expect_error(
            &mut c,
            "SELECT platform.lake_backfill('backfill', 'public.lake_outside')",
        );
        assert_eq!(code, "22023", "{msg}");
        let (code, msg) = expect_error(
            &mut c,
            "SELECT platform.lake_backfill('nope', 'public.lake_outside')",
        );
        assert_eq!(code, "42704", "{msg}");
        drop_sink(&mut c, "backfill");
    }

    fn read_file(path: &Path) -> Vec<RecordBatch> {
        let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|b| b.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect()
    }

    #[test]
    fn the_current_zone_applies_every_change_at_one_cut_across_tables() {
        let mut c = client();
        let lake = lake_dir("current");
        drop_sink(&mut c, "current");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_cur_a, lake_cur_b;
             CREATE TABLE lake_cur_a (id int PRIMARY KEY, v text, big text);
             CREATE TABLE lake_cur_b (id int PRIMARY KEY, n int);",
        )
        .expect("tables");
        c.query(
            "SELECT platform.create_lake_sink('current', $1, tables => 'public.lake_cur_*', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        c.batch_execute(
            "INSERT INTO lake_cur_a SELECT g, 'v' || g, CASE WHEN g = 1 THEN (SELECT string_agg(md5(x::text), '') FROM generate_series(1, 700) x) END
               FROM generate_series(1, 5) g;
             INSERT INTO lake_cur_b SELECT g, g FROM generate_series(1, 3) g;",
        )
        .expect("rows");
        sync(&mut c, "current");
        let first: Vec<(String, i64)> = c
            .query(
                "SELECT table_name, rows FROM platform.lake_compact('current') ORDER BY 1",
                &[],
            )
            .expect("compact")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            first,
            vec![
                ("public.lake_cur_a".into(), 5),
                ("public.lake_cur_b".into(), 3)
            ]
        );
        c.batch_execute(
            "UPDATE lake_cur_a SET v = 'x' WHERE id = 1;
             DELETE FROM lake_cur_a WHERE id = 2;
             UPDATE lake_cur_a SET id = 10 WHERE id = 3;
             TRUNCATE lake_cur_b;
             INSERT INTO lake_cur_b VALUES (7, 70);",
        )
        .expect("changes");
        sync(&mut c, "current");
        // What a fold killed while writing leaves behind: the next fold removes it.
        let interrupted = lake.join("current/public/lake_cur_a/0000000000000001.parquet.pending");
        std::fs::write(&interrupted, b"torn").expect("pending");
        let second: Vec<(String, i64, i32)> = c
            .query("SELECT table_name, rows, merged_files FROM platform.lake_compact('current') ORDER BY 1", &[])
            .expect("compact")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            second,
            vec![
                ("public.lake_cur_a".into(), 4, 1),
                ("public.lake_cur_b".into(), 1, 1)
            ],
            "folded into the previous cut: only the new bronze file is read"
        );
        assert!(
            !interrupted.exists(),
            "an interrupted fold's file is removed"
        );
        let pointer: serde_json::Value = serde_json::from_slice(
            &std::fs::read(lake.join("_pg_platform/current/current.json")).expect("pointer"),
        )
        .expect("json");
        assert_eq!(pointer["consistent"], true);
        let path_of = |t: &str| {
            pointer["tables"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["table"] == t))
                .and_then(|e| e["path"].as_str())
                .map(|p| lake.join(p))
                .unwrap_or_else(|| panic!("{t} not in {pointer}"))
        };
        let a = read_file(&path_of("public.lake_cur_a"));
        let ids: Vec<i32> = a
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .expect("id")
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, vec![1, 4, 5, 10]);
        let v = strings(&a[0], "v");
        assert_eq!(v[0].as_deref(), Some("x"));
        let big = strings(&a[0], "big");
        assert_eq!(
            big[0].as_ref().map(|s| s.len()),
            Some(22_400),
            "the unchanged TOAST value is resolved"
        );
        assert!(a[0].column_by_name("_op").is_none());
        let b = read_file(&path_of("public.lake_cur_b"));
        let bids: Vec<i32> = b
            .iter()
            .flat_map(|x| {
                x.column_by_name("id")
                    .expect("id")
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(bids, vec![7], "truncate and insert applied");
        let sql: String = one(
            &mut c,
            "SELECT platform.lake_read_sql('current', 'public.lake_cur_a', 'current')",
        );
        assert!(
            sql.contains(&path_of("public.lake_cur_a").display().to_string()),
            "{sql}"
        );
        let bronze: String = one(
            &mut c,
            "SELECT platform.lake_read_sql('current', 'public.lake_cur_a')",
        );
        assert!(
            bronze.contains("union_by_name = true")
                && bronze.contains("/public/lake_cur_a/**/*.parquet"),
            "{bronze}"
        );
        let (code, msg) = expect_error(
            &mut c,
            "SELECT platform.lake_read_sql('current', 'public.lake_cur_a', 'gold')",
        );
        assert_eq!(code, "22023", "{msg}");
        let (code, msg) = expect_error(
            &mut c,
            "SELECT platform.lake_read_sql('current', 'public.nothing', 'current')",
        );
        assert_eq!(code, "55000", "{msg}");
        let (code, msg) = expect_error(
            &mut c,
            "SELECT * FROM platform.lake_compact('current', 'public.nothing')",
        );
        assert_eq!(code, "22023", "{msg}");
        drop_sink(&mut c, "current");
    }

    #[test]
    fn retention_archives_an_expiring_partition_to_the_lake_before_dropping_it() {
        let mut c = client();
        let lake = lake_dir("archive");
        drop_sink(&mut c, "archive");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_arch, lake_arch_nosink;
             CREATE TABLE lake_arch (id int, at timestamptz NOT NULL, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE lake_arch_nosink (id int, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('public.lake_arch', 'at', '1 day', premake => 1, start => now() - interval '10 days');
             SELECT platform.partition_by_time('public.lake_arch_nosink', 'at', '1 day', premake => 1, start => now() - interval '10 days');
             INSERT INTO lake_arch SELECT g, now() - interval '8 days' - g * interval '1 minute', 'old ' || g FROM generate_series(1, 40) g;
             INSERT INTO lake_arch VALUES (100, now(), 'recent');
             INSERT INTO lake_arch_nosink SELECT g, now() - interval '8 days' FROM generate_series(1, 5) g;",
        )
        .expect("tables");
        c.query(
            "SELECT platform.create_lake_sink('archive', $1, tables => 'public.lake_arch', background => false, backfill => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        let before: i64 = one(
            &mut c,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'lake_arch'::regclass",
        );
        c.batch_execute(
            "SELECT platform.set_retention('public.lake_arch', '3 days', 'archive');
             SELECT platform.set_retention('public.lake_arch_nosink', '3 days', 'archive');
             SELECT platform.run_maintenance('public.lake_arch');
             SELECT platform.run_maintenance('public.lake_arch_nosink');",
        )
        .expect("maintenance");
        let after: i64 = one(
            &mut c,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'lake_arch'::regclass",
        );
        assert!(
            after < before,
            "expired partitions were retired ({before} -> {after})"
        );
        let left: i64 = one(&mut c, "SELECT count(*) FROM lake_arch");
        assert_eq!(left, 1, "only the recent row is still in the table");
        let kept: i64 = one(&mut c, "SELECT count(*) FROM lake_arch_nosink");
        assert_eq!(kept, 5, "without a sink that lands it, nothing is dropped");
        let mut paths = Vec::new();
        files_under(&lake.join("public/lake_arch"), ".parquet", &mut paths);
        assert!(
            paths.iter().all(|p| p
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("archive_lake_arch_p"))
                .unwrap_or(false)),
            "{paths:?}"
        );
        let batches: Vec<RecordBatch> = paths.iter().flat_map(|p| read_file(p)).collect();
        assert!(batches
            .iter()
            .all(|b| strings(b, "_op").iter().all(|o| o.as_deref() == Some("r"))));
        let rows = sorted_ids(&batches);
        assert_eq!(
            rows,
            (1..=40).collect::<Vec<i32>>(),
            "every archived row once"
        );
        let mut manifests = Vec::new();
        files_under(
            &lake.join("_pg_platform/archive/commits"),
            ".json",
            &mut manifests,
        );
        assert_eq!(
            manifests.len() as i64,
            before - after,
            "one manifest per archived partition"
        );
        // Listed with the sink's files: the archived partitions, their files and rows.
        let listed: String = one(
            &mut c,
            "SELECT archived_partitions || ' ' || rows || ' ' || (files = (SELECT sum(files) FROM platform.lake_archive WHERE sink = 'archive'))
               FROM platform.lake_files WHERE sink = 'archive' AND table_name = 'lake_arch'",
        );
        assert_eq!(listed, format!("{} 40 true", before - after));
        drop_sink(&mut c, "archive");
        c.batch_execute("DROP TABLE lake_arch, lake_arch_nosink")
            .expect("drop");
    }

    #[test]
    fn a_retirement_retried_after_its_drop_failed_archives_nothing_twice() {
        let mut c = client();
        let lake = lake_dir("archive_retry");
        drop_sink(&mut c, "archive_retry");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_arch_retry;
             CREATE TABLE lake_arch_retry (id int, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('public.lake_arch_retry', 'at', '1 day', premake => 1, start => now() - interval '10 days');
             INSERT INTO lake_arch_retry SELECT g, date_trunc('day', now() - interval '8 days') + g * interval '1 minute'
               FROM generate_series(1, 25) g;",
        )
        .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('archive_retry', $1, tables => 'public.lake_arch_retry', background => false, backfill => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        let old: String = one(
            &mut c,
            "SELECT DISTINCT tableoid::regclass::text FROM lake_arch_retry",
        );
        // A reader of the expiring partition keeps DROP from its lock: the archive is
        // written, then the retirement fails and rolls back.
        let mut reader = client();
        reader
            .batch_execute(&format!("BEGIN; SELECT count(*) FROM {old}"))
            .expect("reader");
        c.batch_execute(
            "SET platform.maintenance_lock_timeout = '300ms'; SET statement_timeout = '20s';
             SELECT platform.set_retention('public.lake_arch_retry', '3 days', 'archive')",
        )
        .expect("retention");
        let (code, message) = expect_error(
            &mut c,
            "SELECT platform.run_maintenance('public.lake_arch_retry')",
        );
        assert!(code == "55P03" || code == "57014", "{code}: {message}");
        let still: i64 = one(&mut c, "SELECT count(*) FROM lake_arch_retry");
        assert_eq!(still, 25, "the failed retirement dropped nothing");
        let recorded: i64 = one(
            &mut c,
            "SELECT count(*) FROM platform.lake_archive WHERE sink = 'archive_retry'",
        );
        assert_eq!(
            recorded, 0,
            "nor recorded an archive of a partition still there"
        );
        // Paths with their modification times: a file written again would show.
        let archived = || {
            let mut paths = Vec::new();
            files_under(&lake.join("public/lake_arch_retry"), ".parquet", &mut paths);
            paths.sort();
            paths
                .into_iter()
                .map(|p| {
                    let at = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                    (p, at)
                })
                .collect::<Vec<_>>()
        };
        let first = archived();
        assert!(!first.is_empty(), "the archive was written before the drop");
        reader.batch_execute("COMMIT").expect("commit");
        // The retry finds the partition archived (its manifest) and only drops it.
        c.batch_execute("SELECT platform.run_maintenance('public.lake_arch_retry')")
            .expect("retry");
        let left: i64 = one(&mut c, "SELECT count(*) FROM lake_arch_retry");
        assert_eq!(left, 0, "retired on the retry");
        assert_eq!(archived(), first, "no file was written again");
        // The partition that failed is recorded (from its manifest) with its rows, beside
        // the empty expired partitions retired with it, one manifest each.
        let recorded: i64 = one(
            &mut c,
            &format!(
                "SELECT rows FROM platform.lake_archive WHERE sink = 'archive_retry' AND partition_name IN ('{old}', 'public.{old}')"
            ),
        );
        assert_eq!(recorded, 25);
        let mut manifests = Vec::new();
        files_under(
            &lake.join("_pg_platform/archive_retry/commits"),
            ".json",
            &mut manifests,
        );
        let listed: String = one(
            &mut c,
            "SELECT archived_partitions || ' ' || rows FROM platform.lake_files WHERE sink = 'archive_retry'",
        );
        assert_eq!(listed, format!("{} 25", manifests.len()));
        let ids = sorted_ids(
            &first
                .iter()
                .flat_map(|(p, _)| read_file(p))
                .collect::<Vec<_>>(),
        );
        assert_eq!(ids, (1..=25).collect::<Vec<i32>>(), "every row once");
        c.batch_execute("RESET statement_timeout; RESET platform.maintenance_lock_timeout")
            .expect("reset");
        drop_sink(&mut c, "archive_retry");
        c.batch_execute("DROP TABLE lake_arch_retry").expect("drop");
    }

    #[test]
    fn small_files_of_a_folded_day_become_one_file_with_every_row_once() {
        let mut c = client();
        let lake = lake_dir("merge");
        drop_sink(&mut c, "merge");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_m; CREATE TABLE lake_m (id int PRIMARY KEY, v text);",
        )
        .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('merge', $1, tables => 'public.lake_m', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        for i in 0..3 {
            c.batch_execute(&format!(
                "INSERT INTO lake_m SELECT g, 'v' FROM generate_series({0} * 10 + 1, {0} * 10 + 10) g",
                i
            ))
            .expect("rows");
            sync(&mut c, "merge");
        }
        c.batch_execute("UPDATE lake_m SET v = 'w' WHERE id = 5")
            .expect("update");
        sync(&mut c, "merge");
        let count_files = || {
            let mut p = Vec::new();
            files_under(&lake.join("public/lake_m"), ".parquet", &mut p);
            p.len()
        };
        assert_eq!(count_files(), 4);
        // Not folded into the current zone yet: nothing to merge.
        let none: i64 = one(
            &mut c,
            "SELECT count(*) FROM platform.lake_merge('merge', before => current_date + 1)",
        );
        assert_eq!(none, 0);
        c.batch_execute("SELECT count(*) FROM platform.lake_compact('merge')")
            .expect("compact");
        // A merge whose record in PostgreSQL is lost (its transaction rolled back after the
        // switch): the lake holds the merged day; the next merge only redoes the record.
        c.batch_execute(
            "BEGIN; SELECT count(*) FROM platform.lake_merge('merge', before => current_date + 1); ROLLBACK",
        )
        .expect("merge rolled back");
        assert_eq!(count_files(), 1, "the switch is on disk");
        let intents = || {
            let mut p = Vec::new();
            files_under(&lake.join("_pg_platform/merge/merging"), ".json", &mut p);
            p.len()
        };
        assert_eq!(intents(), 1, "the rolled-back merge's intent stays");
        let still: i64 = one(
            &mut c,
            "SELECT count(*) FROM platform.lake_file WHERE sink = 'merge'",
        );
        assert_eq!(still, 4, "the record rolled back");
        let merged: (i32, i64) = {
            let r = c
                .query_one("SELECT merged_files, rows FROM platform.lake_merge('merge', before => current_date + 1)", &[])
                .expect("merge");
            (r.get(0), r.get(1))
        };
        assert_eq!(merged, (4, 31));
        assert_eq!(count_files(), 1);
        assert_eq!(intents(), 0, "a recorded merge's intent goes at commit");
        let ids = sorted_ids(&read_table(&lake, "lake_m"));
        let mut want: Vec<i32> = (1..=30).collect();
        want.push(5);
        want.sort_unstable();
        assert_eq!(ids, want, "every row once, the update too");
        let recorded: (i64, i64) = {
            let r = c
                .query_one(
                    "SELECT count(*), sum(rows)::int8 FROM platform.lake_file WHERE sink = 'merge'",
                    &[],
                )
                .expect("files");
            (r.get(0), r.get(1))
        };
        assert_eq!(recorded, (1, 31));
        // New changes land beside the merged file; compacted and merged again, one file.
        c.batch_execute("INSERT INTO lake_m VALUES (100, 'late')")
            .expect("late");
        sync(&mut c, "merge");
        assert_eq!(count_files(), 2);
        c.batch_execute("SELECT count(*) FROM platform.lake_compact('merge')")
            .expect("compact");
        c.batch_execute(
            "SELECT count(*) FROM platform.lake_merge('merge', before => current_date + 1)",
        )
        .expect("merge");
        assert_eq!(count_files(), 1);
        let total: usize = read_table(&lake, "lake_m")
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(total, 32);
        let (code, msg) = expect_error(&mut c, "SELECT * FROM platform.lake_merge('nope')");
        assert_eq!(code, "42704", "{msg}");
        drop_sink(&mut c, "merge");
    }

    #[test]
    fn a_day_in_progress_merges_its_folded_small_files_and_keeps_the_rest() {
        let mut c = client();
        let lake = lake_dir("merge_recent");
        drop_sink(&mut c, "merge_recent");
        c.batch_execute(
            "DROP TABLE IF EXISTS lake_mr; CREATE TABLE lake_mr (id int PRIMARY KEY, v text);",
        )
        .expect("table");
        c.query(
            "SELECT platform.create_lake_sink('merge_recent', $1, tables => 'public.lake_mr', background => false)",
            &[&lake.display().to_string()],
        )
        .expect("sink");
        let mut next = 0;
        let mut land = |c: &mut postgres::Client, batches: i32| {
            for _ in 0..batches {
                c.batch_execute(&format!(
                    "INSERT INTO lake_mr SELECT g, 'v' FROM generate_series({} + 1, {} + 10) g",
                    next, next
                ))
                .expect("rows");
                next += 10;
                sync(c, "merge_recent");
            }
        };
        let names = || {
            let mut p = Vec::new();
            files_under(&lake.join("public/lake_mr"), ".parquet", &mut p);
            let mut n: Vec<String> = p
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            n.sort();
            n
        };
        let merge = |c: &mut postgres::Client, recent: bool| -> Vec<(i32, i64)> {
            c.query(
                "SELECT merged_files, rows FROM platform.lake_merge('merge_recent', recent => $1)",
                &[&recent],
            )
            .expect("merge")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        };
        land(&mut c, 3);
        c.batch_execute("SELECT count(*) FROM platform.lake_compact('merge_recent')")
            .expect("compact");
        land(&mut c, 1);
        // Today is not a past day: without `recent` nothing merges.
        assert_eq!(merge(&mut c, false), vec![]);
        // The three folded batches become one file; the one landed after the cut stays.
        assert_eq!(merge(&mut c, true), vec![(3, 30)]);
        let after_first = names();
        assert_eq!(after_first.len(), 2, "{after_first:?}");
        assert_eq!(
            after_first
                .iter()
                .filter(|n| n.starts_with("merged_"))
                .count(),
            1
        );
        assert_eq!(
            sorted_ids(&read_table(&lake, "lake_mr")),
            (1..=40).collect::<Vec<i32>>()
        );
        assert_eq!(
            merge(&mut c, true),
            vec![],
            "one small folded file is left alone"
        );
        // The next merge takes the small files folded since, not the earlier merge's file.
        land(&mut c, 2);
        c.batch_execute("SELECT count(*) FROM platform.lake_compact('merge_recent')")
            .expect("compact");
        assert_eq!(merge(&mut c, true), vec![(3, 30)]);
        let after_second = names();
        assert_eq!(after_second.len(), 2, "{after_second:?}");
        assert!(after_second.iter().all(|n| n.starts_with("merged_")));
        assert!(after_second.contains(&after_first[0]) || after_second.contains(&after_first[1]));
        assert_eq!(
            sorted_ids(&read_table(&lake, "lake_mr")),
            (1..=60).collect::<Vec<i32>>(),
            "every row once"
        );
        let recorded: (i64, i64) = {
            let r = c
                .query_one(
                    "SELECT count(*), sum(rows)::int8 FROM platform.lake_file WHERE sink = 'merge_recent'",
                    &[],
                )
                .expect("files");
            (r.get(0), r.get(1))
        };
        assert_eq!(recorded, (2, 60));
        drop_sink(&mut c, "merge_recent");
    }
}
