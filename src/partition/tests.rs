//! Partition management tests. In-server tests check what one transaction does; the
//! integration tests (commits, SQLSTATEs, concurrent sessions) go through a client.
//! Expected values are computed from `now()` in SQL, so the tests hold on any date.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn value<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
        crate::sql::read::<T>(sql, &[])
    }

    fn int(sql: &str) -> i64 {
        value::<i64>(sql).unwrap_or(-1)
    }

    fn text(sql: &str) -> String {
        value::<String>(sql).unwrap_or_default()
    }

    #[pg_test]
    fn monthly_partitions_follow_the_calendar_and_dst() {
        crate::sql::run(
            "SET LOCAL TimeZone = 'Europe/Berlin';
             CREATE SCHEMA pm; CREATE TABLE pm.ev (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at))
                 PARTITION BY RANGE (at);",
        );
        let created = int(
            "SELECT partitions_created::int8 FROM platform.partition_by_time('pm.ev', 'at', '1 month',
                 premake => 3, start => '2026-01-10')",
        );
        // January 2026 up to the current month, plus three ahead.
        let expected = int(
            "SELECT ((extract(year FROM now()) - 2026) * 12 + extract(month FROM now()) - 1 + 4)::int8",
        );
        assert_eq!(created, expected);
        assert_eq!(
            int("SELECT count(*) FROM platform.partitions WHERE parent = 'pm.ev'::regclass"),
            expected + 1
        );
        assert_eq!(int("SELECT count(*) FROM platform.partitions WHERE parent = 'pm.ev'::regclass AND is_default"), 1);
        // March loses an hour to summer time, October gains one back.
        assert_eq!(
            text("SELECT (upper_bound::timestamptz - lower_bound::timestamptz)::text FROM platform.partitions
                   WHERE partition = 'pm.ev_p20260301'::regclass"),
            "30 days 23:00:00"
        );
        assert_eq!(
            text("SELECT (upper_bound::timestamptz - lower_bound::timestamptz)::text FROM platform.partitions
                   WHERE partition = 'pm.ev_p20261001'::regclass"),
            "31 days 01:00:00"
        );
        assert_eq!(text("SELECT lower_bound FROM platform.partitions WHERE partition = 'pm.ev_p20260101'::regclass"), "2026-01-01 00:00:00+01");
        // Partitions carry the parent's primary key.
        assert_eq!(
            int("SELECT count(*) FROM pg_index WHERE indrelid = 'pm.ev_p20260201'::regclass AND indisprimary"),
            1
        );
        // A second pass finds nothing to do.
        assert_eq!(
            text("SELECT format('%s/%s/%s/%s', partitions_created, partitions_retired, rows_moved, privileges_synced)
                    FROM platform.run_maintenance('pm.ev')"),
            "0/0/0/0"
        );
    }

    #[pg_test]
    fn daily_and_weekly_partitions_across_a_dst_change() {
        crate::sql::run(
            "SET LOCAL TimeZone = 'Europe/Berlin';
             CREATE SCHEMA pd;
             CREATE TABLE pd.day (at timestamptz) PARTITION BY RANGE (at);
             CREATE TABLE pd.week (at timestamptz) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('pd.day', 'at', '1 day', premake => 1, start => '2026-10-24 12:00');
             SELECT platform.partition_by_time('pd.week', 'at', '1 week', premake => 1, start => '2026-10-20');",
        );
        let span = |p: &str| {
            text(&format!(
                "SELECT (upper_bound::timestamptz - lower_bound::timestamptz)::text FROM platform.partitions
                  WHERE partition = '{p}'::regclass"
            ))
        };
        assert_eq!(span("pd.day_p20261024"), "1 day");
        assert_eq!(span("pd.day_p20261025"), "1 day 01:00:00");
        assert_eq!(text("SELECT lower_bound FROM platform.partitions WHERE partition = 'pd.day_p20261026'::regclass"), "2026-10-26 00:00:00+01");
        // Weeks start on Monday: 2026-10-19 holds the 20th and the clock change of the 25th.
        assert_eq!(span("pd.week_p20261019"), "7 days 01:00:00");
        // Days are contiguous from the 24th of October up to tomorrow.
        assert_eq!(
            int("SELECT count(*) FROM platform.partitions WHERE parent = 'pd.day'::regclass AND NOT is_default"),
            int("SELECT (now()::date - '2026-10-24'::date + 2)::int8")
        );
    }

    #[pg_test]
    fn hourly_partitions_count_absolute_hours_in_utc() {
        crate::sql::run(
            "SET LOCAL TimeZone = 'America/New_York';
             CREATE SCHEMA ph; CREATE TABLE ph.tick (at timestamptz) PARTITION BY RANGE (at);",
        );
        let created = int("SELECT partitions_created::int8 FROM platform.partition_by_time('ph.tick', 'at', '6 hours', premake => 5)");
        assert_eq!(created, 6);
        assert_eq!(
            text("SELECT time_zone FROM platform.partition_config WHERE parent = 'ph.tick'::regclass"),
            "UTC"
        );
        let current = text(
            "SELECT 'ph.tick_p' || to_char(date_trunc('day', now() AT TIME ZONE 'UTC')
                      + floor(extract(hour FROM now() AT TIME ZONE 'UTC') / 6) * interval '6 hours', 'YYYYMMDD_HH24MI')",
        );
        assert_eq!(
            int(&format!(
                "SELECT count(*) FROM pg_class WHERE oid = to_regclass('{current}')"
            )),
            1
        );
        assert_eq!(
            int("SELECT count(*) FROM platform.partitions WHERE parent = 'ph.tick'::regclass AND NOT is_default
                   AND upper_bound::timestamptz - lower_bound::timestamptz <> interval '6 hours'"),
            0
        );
    }

    #[pg_test]
    fn date_columns_and_leap_years() {
        crate::sql::run(
            "CREATE SCHEMA pl; CREATE TABLE pl.ledger (day date NOT NULL, amount numeric) PARTITION BY RANGE (day);
             SELECT platform.partition_by_time('pl.ledger', 'day', '1 month', premake => 0, start => '2024-01-01');",
        );
        let days = |p: &str| {
            int(&format!(
                "SELECT (upper_bound::date - lower_bound::date)::int8 FROM platform.partitions WHERE partition = '{p}'::regclass"
            ))
        };
        assert_eq!(days("pl.ledger_p20240201"), 29);
        assert_eq!(days("pl.ledger_p20250201"), 28);
        assert_eq!(days("pl.ledger_p20241201"), 31);
        assert_eq!(text("SELECT lower_bound FROM platform.partitions WHERE partition = 'pl.ledger_p20240201'::regclass"), "2024-02-01");
    }

    #[pg_test]
    fn rows_in_the_default_partition_are_moved_to_new_partitions() {
        crate::sql::run(
            "SET LOCAL TimeZone = 'UTC';
             CREATE SCHEMA pr;
             CREATE TABLE pr.pay (id bigint, at timestamptz NOT NULL, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('pr.pay', 'at', '1 day', premake => 1);
             INSERT INTO pr.pay SELECT g, '2020-05-05 10:00+00'::timestamptz + g * interval '1 hour', 'old' FROM generate_series(1, 30) g;
             INSERT INTO pr.pay SELECT 100 + g, now() + interval '90 days', 'future' FROM generate_series(1, 5) g;
             INSERT INTO pr.pay VALUES (200, now(), 'current');",
        );
        assert_eq!(int("SELECT count(*) FROM ONLY pr.pay_default"), 35);
        let digest =
            "SELECT md5(string_agg(format('%s|%s|%s', id, at, note), ',' ORDER BY id)) FROM pr.pay";
        let before = text(digest);
        let created_and_moved =
            text("SELECT format('%s/%s', partitions_created, rows_moved) FROM platform.run_maintenance('pr.pay')");
        // 30 hours from 2020-05-05 11:00 span two days; the future rows one more.
        assert_eq!(created_and_moved, "3/35");
        assert_eq!(int("SELECT count(*) FROM ONLY pr.pay_default"), 0);
        assert_eq!(text(digest), before);
        assert_eq!(int("SELECT count(*) FROM pr.pay_p20200505"), 13);
        assert_eq!(int("SELECT count(*) FROM pr.pay_p20200506"), 17);
    }

    #[pg_test]
    fn retention_drops_or_detaches_whole_expired_partitions() {
        crate::sql::run(
            "SET LOCAL TimeZone = 'UTC';
             CREATE SCHEMA pt;
             CREATE TABLE pt.a (at timestamptz) PARTITION BY RANGE (at);
             CREATE TABLE pt.b (at timestamptz) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('pt.a', 'at', '1 day', premake => 2, start => now() - interval '10 days');
             SELECT platform.partition_by_time('pt.b', 'at', '1 day', premake => 2, start => now() - interval '10 days');
             INSERT INTO pt.a SELECT now() - g * interval '1 day' FROM generate_series(0, 9) g;",
        );
        let expired = "SELECT count(*) FROM platform.partitions WHERE parent = 'pt.%'::regclass AND NOT is_default
                         AND upper_bound::timestamptz <= now() - interval '3 days'";
        let expected = int(&expired.replace('%', "a"));
        // Days from 10 to 4 days ago (one more exactly at midnight).
        assert!((7..=8).contains(&expected), "{expected}");
        let oldest_b = text("SELECT min(partition::text) FROM platform.partitions WHERE parent = 'pt.b'::regclass AND NOT is_default");
        crate::sql::run(
            "SELECT platform.set_retention('pt.a', '3 days');
             SELECT platform.set_retention('pt.b', '3 days', 'detach');",
        );
        assert_eq!(
            int("SELECT partitions_retired::int8 FROM platform.run_maintenance('pt.a')"),
            expected
        );
        assert_eq!(
            int("SELECT partitions_retired::int8 FROM platform.run_maintenance('pt.b')"),
            expected
        );
        assert_eq!(int(&expired.replace('%', "a")), 0);
        // Rows of the kept days are still there, expired ones are gone with their partitions.
        assert_eq!(int("SELECT count(*) FROM pt.a"), int("SELECT count(*) FROM generate_series(0, 9) g WHERE date_trunc('day', now() - g * interval '1 day') + interval '1 day' > now() - interval '3 days'"));
        // Detached partitions stay as plain tables.
        assert_eq!(
            text(&format!(
                "SELECT relispartition::text FROM pg_class WHERE oid = '{oldest_b}'::regclass"
            )),
            "false"
        );
        // Retention never creates what it would retire on the next pass.
        assert_eq!(
            int("SELECT partitions_created::int8 FROM platform.run_maintenance('pt.a')"),
            0
        );
    }

    #[pg_test]
    fn later_grants_on_the_parent_reach_every_partition() {
        crate::sql::run(
            "CREATE ROLE partition_test_owner NOLOGIN;
             CREATE SCHEMA ppriv AUTHORIZATION partition_test_owner;
             CREATE TABLE ppriv.t (at timestamp) PARTITION BY RANGE (at);
             ALTER TABLE ppriv.t OWNER TO partition_test_owner;
             SELECT platform.partition_by_time('ppriv.t', 'at', '1 day', premake => 2);",
        );
        assert_eq!(
            int("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'ppriv.t'::regclass AND c.relowner <> 'partition_test_owner'::regrole"),
            0
        );
        crate::sql::run("GRANT SELECT, INSERT ON ppriv.t TO platform_readonly");
        let partitions =
            int("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ppriv.t'::regclass");
        assert_eq!(
            int("SELECT privileges_synced::int8 FROM platform.run_maintenance('ppriv.t')"),
            partitions
        );
        assert_eq!(
            int(
                "SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'ppriv.t'::regclass
                   AND has_table_privilege('platform_readonly', i.inhrelid, 'SELECT, INSERT')"
            ),
            partitions
        );
        crate::sql::run("REVOKE INSERT ON ppriv.t FROM platform_readonly");
        assert_eq!(
            int("SELECT privileges_synced::int8 FROM platform.run_maintenance('ppriv.t')"),
            partitions
        );
        assert_eq!(
            int(
                "SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'ppriv.t'::regclass
                   AND has_table_privilege('platform_readonly', i.inhrelid, 'INSERT')"
            ),
            0
        );
    }
}

#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error, one};

    #[test]
    fn bad_input_is_refused_with_nothing_registered_or_created() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS pbad CASCADE; CREATE SCHEMA pbad;
             CREATE TABLE pbad.plain (at timestamptz);
             CREATE TABLE pbad.listed (region text) PARTITION BY LIST (region);
             CREATE TABLE pbad.other (id int, at timestamptz) PARTITION BY RANGE (id);
             CREATE TABLE pbad.two (a timestamptz, b timestamptz) PARTITION BY RANGE (a, b);
             CREATE TABLE pbad.ok (at timestamptz, day date) PARTITION BY RANGE (at);
             CREATE TABLE pbad.dated (day date) PARTITION BY RANGE (day);",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        let cases = [
            ("SELECT platform.partition_by_time('pbad.plain', 'at', '1 day')", "42809", "is not partitioned"),
            ("SELECT platform.partition_by_time('pbad.listed', 'region', '1 day')", "42809", "partitioned by list"),
            ("SELECT platform.partition_by_time('pbad.other', 'at', '1 day')", "22023", "partitioned by column \"id\""),
            ("SELECT platform.partition_by_time('pbad.other', 'id', '1 day')", "42804", "has type integer"),
            ("SELECT platform.partition_by_time('pbad.two', 'a', '1 day')", "42809", "one plain column"),
            ("SELECT platform.partition_by_time('pbad.ok', 'nope', '1 day')", "42703", "\"nope\""),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '30 minutes')", "22023", "smallest step is 1 hour"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 month 2 days')", "22023", "not a mix"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '2 years')", "22023", "largest step"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 day', premake => -1)", "22023", "premake -1"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 day', retention => '-1 day')", "22023", "positive interval"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 day', retention_action => 'purge')", "22023", "drop, detach or archive"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 day', time_zone => 'Mars/Olympus')", "22023", "time zone"),
            ("SELECT platform.partition_by_time('pbad.dated', 'day', '1 hour')", "22023", "date column"),
            ("SELECT platform.partition_by_time('pbad.ok', 'at', '1 hour', start => now() - interval '5 years')", "54000", "new partitions"),
            ("SELECT platform.partition_by_time('pbad.missing', 'at', '1 day')", "42P01", "does not exist"),
            ("SELECT platform.run_maintenance('pbad.ok')", "42704", "not registered"),
            ("SELECT platform.set_retention('pbad.ok', '1 day')", "42704", "not registered"),
            ("SELECT platform.undo_partitioning('pbad.ok')", "42704", "not registered"),
        ];
        for (sql, state, words) in cases {
            let (code, message) = expect_error(&mut c, sql);
            assert_eq!(code, state, "{sql}: {message}");
            assert!(message.contains(words), "{sql}: {message}");
        }
        assert_eq!(
            one::<i64>(
                &mut c,
                "SELECT count(*) FROM platform.partition_config WHERE parent::text LIKE 'pbad.%'"
            ),
            0
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                                 JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = 'pbad'"),
            0
        );
        // Only the table's owner (or a member of the owning role) may register it.
        c.batch_execute(
            "DROP ROLE IF EXISTS partition_not_owner; CREATE ROLE partition_not_owner;
             GRANT platform_developer TO partition_not_owner; GRANT USAGE ON SCHEMA pbad TO partition_not_owner;",
        )
        .unwrap_or_else(|e| panic!("role: {e}"));
        let (code, message) = expect_error(
            &mut c,
            "SET ROLE partition_not_owner; SELECT platform.partition_by_time('pbad.ok', 'at', '1 day')",
        );
        c.batch_execute(
            "RESET ROLE; DROP OWNED BY partition_not_owner; DROP ROLE partition_not_owner",
        )
        .unwrap_or_else(|e| panic!("drop role: {e}"));
        assert_eq!(code, "42501", "{message}");
        assert!(
            message.contains("must be owner of table pbad.ok"),
            "{message}"
        );
        // Registered once; a second registration is refused.
        c.batch_execute(
            "SELECT platform.partition_by_time('pbad.ok', 'at', '1 day', premake => 1)",
        )
        .unwrap_or_else(|e| panic!("register: {e}"));
        let (code, _) = expect_error(
            &mut c,
            "SELECT platform.partition_by_time('pbad.ok', 'at', '1 hour')",
        );
        assert_eq!(code, "42710");
        c.batch_execute("DROP SCHEMA pbad CASCADE")
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
    }

    #[test]
    fn a_dropped_parent_is_forgotten_or_reported() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS pdrop CASCADE; CREATE SCHEMA pdrop;
             CREATE TABLE pdrop.a (at timestamptz) PARTITION BY RANGE (at);
             CREATE TABLE pdrop.b (at timestamptz) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('pdrop.a', 'at', '1 day', premake => 1);
             SELECT platform.partition_by_time('pdrop.b', 'at', '1 day', premake => 1);",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        let b_oid: u32 = one(&mut c, "SELECT 'pdrop.b'::regclass::oid");
        // DROP TABLE removes the registration (event trigger).
        c.batch_execute("DROP TABLE pdrop.a")
            .unwrap_or_else(|e| panic!("drop: {e}"));
        assert_eq!(
            one::<i64>(
                &mut c,
                "SELECT count(*) FROM platform.partition_config WHERE parent::text = 'pdrop.a'"
            ),
            0
        );
        // With event triggers off, the registration outlives the table: maintenance says so.
        c.batch_execute("SET session_replication_role = replica; DROP TABLE pdrop.b; RESET session_replication_role;")
            .unwrap_or_else(|e| panic!("drop b: {e}"));
        let (code, message) = expect_error(
            &mut c,
            &format!("SELECT platform.run_maintenance({b_oid}::oid::regclass)"),
        );
        assert_eq!(code, "42P01", "{message}");
        assert!(message.contains("no longer exists"), "{message}");
        let reported: String = one(
            &mut c,
            &format!("SELECT error FROM platform.run_maintenance() WHERE parent = {b_oid}::oid::regclass"),
        );
        assert!(reported.contains("no longer exists (42P01)"), "{reported}");
        c.batch_execute(&format!(
            "SELECT platform.undo_partitioning({b_oid}::oid::regclass); DROP SCHEMA pdrop CASCADE"
        ))
        .unwrap_or_else(|e| panic!("cleanup: {e}"));
    }

    #[test]
    fn concurrent_maintenance_runs_create_each_partition_once() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS pconc CASCADE; CREATE SCHEMA pconc;
             CREATE TABLE pconc.t (at timestamptz) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('pconc.t', 'at', '1 day', premake => 1);
             SELECT platform.set_premake('pconc.t', 40);",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        // Both succeed (a partition made twice would fail the second); other tests' passes
        // over all tables may take part, so the final state is what is checked.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut c = client();
                    if let Err(e) = c.batch_execute("SELECT platform.run_maintenance('pconc.t')") {
                        panic!("concurrent maintenance failed: {e}");
                    }
                });
            }
        });
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM platform.partitions WHERE parent = 'pconc.t'::regclass AND NOT is_default"),
            41
        );
        c.batch_execute("DROP SCHEMA pconc CASCADE")
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
    }

    #[test]
    fn rescue_under_concurrent_inserts_loses_no_row() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS presc CASCADE; CREATE SCHEMA presc; CREATE TABLE presc.t (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('presc.t', 'at', '1 day', premake => 1);",
        )
        .unwrap_or_else(|e| panic!("setup 2: {e}"));
        const WRITERS: i64 = 3;
        const ROWS: i64 = 400;
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                s.spawn(move || {
                    let mut c = client();
                    for i in 0..ROWS {
                        // Rows spread over 60 future days: most land in the default partition.
                        let id = w * ROWS + i;
                        if let Err(e) = c.batch_execute(&format!(
                            "INSERT INTO presc.t VALUES ({id}, now() + interval '{} days')",
                            5 + id % 60
                        )) {
                            panic!("insert {id} failed: {e}");
                        }
                    }
                });
            }
            s.spawn(|| {
                let mut c = client();
                for _ in 0..15 {
                    if let Err(e) = c.batch_execute("SELECT platform.run_maintenance('presc.t')") {
                        panic!("maintenance failed: {e}");
                    }
                }
            });
        });
        c.batch_execute("SELECT platform.run_maintenance('presc.t')")
            .unwrap_or_else(|e| panic!("final pass: {e}"));
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM presc.t"),
            WRITERS * ROWS
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(DISTINCT id) FROM presc.t"),
            WRITERS * ROWS
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM ONLY presc.t_default"),
            0
        );
        c.batch_execute("DROP SCHEMA presc CASCADE")
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
    }

    #[test]
    fn maintenance_gives_up_on_a_busy_table_instead_of_queueing_traffic() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS plock CASCADE; CREATE SCHEMA plock;
             CREATE TABLE plock.t (at timestamptz) PARTITION BY RANGE (at);
             SELECT platform.partition_by_time('plock.t', 'at', '1 day', premake => 1);
             SELECT platform.set_premake('plock.t', 5);",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        let (code, message) = expect_error(&mut c, "SELECT platform.set_premake('plock.t', -2)");
        assert_eq!(code, "22023", "{message}");
        // An application transaction that wrote to the table and is still open.
        let mut app = client();
        app.batch_execute("BEGIN; INSERT INTO plock.t VALUES (now())")
            .unwrap_or_else(|e| panic!("app: {e}"));
        c.batch_execute("SET platform.maintenance_lock_timeout = '200ms'")
            .unwrap_or_else(|e| panic!("{e}"));
        let (code, message) = expect_error(&mut c, "SELECT platform.run_maintenance('plock.t')");
        assert_eq!(code, "55P03", "{message}");
        let reported: String = one(
            &mut c,
            "SELECT error FROM platform.run_maintenance() WHERE parent = 'plock.t'::regclass",
        );
        assert!(reported.contains("(55P03)"), "{reported}");
        // The session's own lock_timeout is untouched by maintenance's.
        assert_eq!(one::<String>(&mut c, "SHOW lock_timeout"), "0");
        app.batch_execute("COMMIT")
            .unwrap_or_else(|e| panic!("commit: {e}"));
        assert_eq!(
            one::<i32>(
                &mut c,
                "SELECT partitions_created FROM platform.run_maintenance('plock.t')"
            ),
            4
        );
        c.batch_execute("DROP SCHEMA plock CASCADE")
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
    }
}
