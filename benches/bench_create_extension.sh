# CREATE EXTENSION time (median of several installs in one database) against pgcrypto,
# which ships with PostgreSQL; a DBA runs this in every new database.
if [ "$SMOKE" = 1 ]; then runs=3; else runs=25; fi
median_ms() {
    sql postgres "DO \$\$
        DECLARE t timestamptz; times float8[] := '{}';
        BEGIN
          FOR i IN 1..$runs LOOP
            t := clock_timestamp();
            EXECUTE 'CREATE EXTENSION $1';
            times := times || extract(epoch FROM clock_timestamp() - t) * 1000;
            EXECUTE 'DROP EXTENSION $1 CASCADE';
          END LOOP;
          PERFORM set_config('bench.median', (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(times) x)::text, false);
        END \$\$;" "SELECT round(current_setting('bench.median')::numeric, 2)" | tail -1
}
sql postgres "DROP EXTENSION IF EXISTS pg_platform CASCADE" >/dev/null
ours=$(median_ms pg_platform)
theirs=$(median_ms pgcrypto)
result "CREATE EXTENSION" "ms (median of $runs)" "$ours" "CREATE EXTENSION pgcrypto" "$theirs" lower
