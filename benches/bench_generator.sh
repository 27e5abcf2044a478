# Generator throughput: platform.generate_payments (3NF rows with foreign keys, four
# indexes, monthly partitions) against pgbench -i, PostgreSQL's own data generator
# (COPY into one unindexed table, then a primary key), in rows per second.
if [ "$SMOKE" = 1 ]; then tx=20000; scale=1; else tx=${BENCH_GENERATOR_TRANSACTIONS:-1000000}; scale=10; fi
sql postgres "CREATE EXTENSION IF NOT EXISTS pg_platform" >/dev/null
sql postgres "DROP SCHEMA IF EXISTS bench_gen CASCADE" >/dev/null
sql postgres "SELECT platform.create_payments_schema('bench_gen')" >/dev/null
# Both sides are timed the same way: wall time of one client command. The generator also
# reports the seconds it spent on the transaction table alone.
t0=$(date +%s.%N)
tx_seconds=$(sql postgres "SELECT seconds FROM platform.generate_payments('bench_gen', $((tx / 20)), $((tx / 300 + 1)), $tx)
                           WHERE table_name = 'transaction'")
t1=$(date +%s.%N)
ours=$(awk -v n="$tx" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')
ours_tx=$(awk -v n="$tx" -v s="$tx_seconds" 'BEGIN { printf "%d", n / s }')
sql postgres "CREATE DATABASE bench_pgbench" >/dev/null
t0=$(date +%s.%N)
pgbench -i -q -s "$scale" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres bench_pgbench >/dev/null 2>&1
t1=$(date +%s.%N)
theirs=$(awk -v n=$((scale * 100000)) -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')
sql postgres "DROP DATABASE bench_pgbench" >/dev/null
sql postgres "DROP SCHEMA bench_gen CASCADE" >/dev/null
result "generator, whole load ($tx transactions + customers, merchants, ...)" "transactions/s" "$ours" "pgbench -i -s $scale" "$theirs" higher
result "generator, transaction table only (before keys and indexes)" "rows/s" "$ours_tx" "pgbench -i -s $scale" "$theirs" higher
