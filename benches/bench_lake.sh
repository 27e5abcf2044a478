# Lake sink: rows per second from committed WAL to durable Parquet on the reference
# transaction table (inserts in 1k-row transactions, then updates and deletes), against
# the pipeline people build by hand (wal2json read with psycopg2 into pyarrow Parquet,
# benches/lake/wal2json_parquet.py) on the same WAL; the backend's peak memory for one
# huge transaction; and freshness (commit to durable file, p50/p99, over the files not
# merged yet) with the file count under a steady pgbench write load with the worker
# landing continuously (60 s; LAKE_SOAK_SECONDS=3600 for the hour the issue asks about).
# The same changes are landed into an S3 bucket (moto on 127.0.0.1) by the sink and by
# the hand-built pipeline writing through pyarrow's S3 file system.
set -euo pipefail
. scripts/lib.sh
root=$(pwd)
note() { echo "bench lake: $*" >&2; }
if [ "$SMOKE" = 1 ]; then inserts=2000; updates=200; deletes=100; big=5000; fresh_secs=3; else inserts=200000; updates=20000; deletes=10000; big=1000000; fresh_secs=${LAKE_SOAK_SECONDS:-60}; fi
changes=$((inserts + updates + deletes))
db=bench_lake
lake=$BENCH_DIR/lake
py=$(lake_python 2>/dev/null) || py=
sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
sql $db "CREATE EXTENSION pg_platform" "SELECT platform.create_payments_schema('lk')" \
        "SELECT count(*) FROM platform.generate_payments('lk', 2000, 100, 0)" >/dev/null
sql $db "SELECT platform.create_lake_sink('bench', '$lake', tables => 'lk.transaction', background => false)" \
        "SELECT pg_create_logical_replication_slot('bench_w2j', 'wal2json')" >/dev/null
# The same changes into a bucket: an S3 sink and a second wal2json slot on the same WAL,
# both writing to moto's S3 server on 127.0.0.1 (from the lake venv; both pay for it).
s3=
if [ -n "$py" ] && dir=$BENCH_DIR port=$BENCH_PORT start_moto "$py" lake-bench >/dev/null; then
    trap 'kill $moto 2>/dev/null || true' EXIT
    sleep 0.5
    sql $db "SELECT platform.create_lake_sink('bench_s3', 's3://lake-bench/raw', tables => 'lk.transaction', background => false)" \
            "SELECT pg_create_logical_replication_slot('bench_w2j_s3', 'wal2json')" >/dev/null && s3=yes
fi
sql $db "DO \$\$ BEGIN
           FOR i IN 0..$((inserts / 1000 - 1)) LOOP
             INSERT INTO lk.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                                         location_id, ip_address, amount, currency, status_id)
             SELECT id, occurred_at, customer_id, merchant_id, payment_method_id, device_id, location_id,
                    ip_address::inet, amount::numeric(18,2), currency, status_id
               FROM platform.generate_transaction_rows(i * 1000 + 1, 1000, $inserts, 42, 2000, 100, '2026-01-01', 90);
             COMMIT;
           END LOOP;
           UPDATE lk.transaction SET status_id = 4, fraud_score = 0.5 WHERE id <= $updates;
           COMMIT;
           DELETE FROM lk.transaction WHERE id > $((inserts - deletes));
         END \$\$" >/dev/null
# Warm the WAL into the page cache (both read the same WAL afterwards).
sql $db "SELECT pg_create_logical_replication_slot('bench_warm', 'test_decoding')" \
        "SELECT count(*) FROM pg_logical_slot_get_changes('bench_warm', NULL, NULL)" \
        "SELECT pg_drop_replication_slot('bench_warm')" >/dev/null

t0=$(date +%s.%N)
landed=0
for _ in $(seq 1 1000); do
    r=$(sql $db "SELECT rows FROM platform.lake_sync('bench')")
    [ "$r" = 0 ] && break
    landed=$((landed + r))
done
t1=$(date +%s.%N)
ours=$(awk -v n="$landed" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')
[ "$landed" = "$((inserts + updates + deletes))" ] || note "lake sink landed $landed rows, expected $changes"
if [ -n "$py" ]; then
    read -r theirs_rows theirs_secs theirs_mb < <("$py" "$root/benches/lake/wal2json_parquet.py" \
        "host=$BENCH_DIR port=$BENCH_PORT user=postgres dbname=$db" bench_w2j "$BENCH_DIR/w2j")
    theirs=$(awk -v n="$theirs_rows" -v s="$theirs_secs" 'BEGIN { printf "%d", n / s }')
else
    note "no Python venv with psycopg2 and pyarrow: the hand-built pipeline is skipped"
    theirs=0
fi
result "lake: committed WAL to durable Parquet ($changes changes)" "rows/s" "$ours" "wal2json + psycopg2 + pyarrow" "$theirs" higher
result "lake: committed WAL to durable Parquet ($changes changes)" "rows/s" "$ours" "goal (200k rows/s)" 200000 higher
sql $db "SELECT pg_drop_replication_slot('bench_w2j')" >/dev/null
if [ -n "$s3" ]; then
    t0=$(date +%s.%N)
    landed=0
    for _ in $(seq 1 1000); do
        r=$(sql $db "SELECT rows FROM platform.lake_sync('bench_s3')")
        [ "$r" = 0 ] && break
        landed=$((landed + r))
    done
    t1=$(date +%s.%N)
    [ "$landed" = "$changes" ] || note "S3 lake sink landed $landed rows, expected $changes"
    ours_s3=$(awk -v n="$landed" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')
    read -r theirs_rows theirs_secs _ < <(AWS_ENDPOINT_URL=$s3_endpoint "$py" "$root/benches/lake/wal2json_parquet.py" \
        "host=$BENCH_DIR port=$BENCH_PORT user=postgres dbname=$db" bench_w2j_s3 s3://lake-bench/w2j)
    theirs_s3=$(awk -v n="$theirs_rows" -v s="$theirs_secs" 'BEGIN { printf "%d", n / s }')
    result "lake: committed WAL to Parquet in a bucket (moto, 127.0.0.1)" "rows/s" "$ours_s3" "wal2json + psycopg2 + pyarrow S3" "$theirs_s3" higher
    sql $db "SELECT pg_drop_replication_slot('bench_w2j_s3')" "SELECT platform.drop_lake_sink('bench_s3')" >/dev/null
    kill "$moto" 2>/dev/null || true
fi

# Peak memory of the backend landing one transaction of $big rows, against $((big / 10)),
# and against PostgreSQL's own decoding of the same transaction (a peek that only counts).
vmhwm="SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\\s+(\\d+)'))[1]::int / 1024"
peak_mb() {  # rows -> "ours decode_only" MB of peak RSS
    sql $db "SELECT pg_create_logical_replication_slot('bench_peek', 'pg_platform')" >/dev/null
    sql $db "INSERT INTO lk.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                                         location_id, ip_address, amount, currency, status_id)
             SELECT id + 10000000, occurred_at, customer_id, merchant_id, payment_method_id, device_id, location_id,
                    ip_address::inet, amount::numeric(18,2), currency, status_id
               FROM platform.generate_transaction_rows(1, $1, $1, 7, 2000, 100, '2026-01-01', 90)" >/dev/null
    local ours theirs
    ours=$(sql $db "SELECT rows FROM platform.lake_sync('bench')" "$vmhwm" | tail -1)
    theirs=$(sql $db "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('bench_peek', NULL, NULL, 'format', 'binary')" "$vmhwm" | tail -1)
    sql $db "SELECT pg_drop_replication_slot('bench_peek')" "DELETE FROM lk.transaction WHERE id > 10000000" \
            "SELECT rows FROM platform.lake_sync('bench')" >/dev/null
    echo "$ours $theirs"
}
read -r small_mb small_decode <<<"$(peak_mb $((big / 10)))"
read -r big_mb big_decode <<<"$(peak_mb "$big")"
result "lake: backend peak RSS landing one transaction of $big rows" "MB" "$big_mb" "the same for $((big / 10)) rows" "$small_mb" lower
result "lake: backend peak RSS landing one transaction of $big rows" "MB" "$big_mb" "PostgreSQL decoding it (peek, count only)" "$big_decode" lower
sql $db "SELECT platform.drop_lake_sink('bench')" >/dev/null

# Freshness: the worker (serving database postgres) lands a table pgbench inserts into.
sql postgres "CREATE EXTENSION IF NOT EXISTS pg_platform" "DROP TABLE IF EXISTS public.lake_fresh" \
    "SELECT platform.drop_lake_sink(name) FROM platform.lake_sink WHERE name = 'fresh'" \
    "CREATE TABLE public.lake_fresh (id bigserial PRIMARY KEY, account int, amount numeric(12,2), at timestamptz DEFAULT clock_timestamp())" \
    "SELECT platform.create_lake_sink('fresh', '$lake-fresh', tables => 'public.lake_fresh')" >/dev/null 2>&1 || true
if sql postgres "SELECT 1 FROM platform.lake_sink WHERE name = 'fresh'" | grep -q 1; then
    echo "INSERT INTO public.lake_fresh (account, amount) VALUES (random() * 1000, random() * 100);" >"$BENCH_DIR/fresh.sql"
    # LAKE_SOAK_COMPACT=S: the worker compacts (and merges the day's folded files) every S
    # seconds of the soak, the first time S seconds in.
    if [ -n "${LAKE_SOAK_COMPACT:-}" ]; then
        sql postgres "ALTER SYSTEM SET platform.lake_compact_interval = $LAKE_SOAK_COMPACT" "SELECT pg_reload_conf()" >/dev/null
    fi
    pgbench -n -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -c 2 -R 500 -T "$fresh_secs" -f "$BENCH_DIR/fresh.sql" postgres >/dev/null 2>&1
    sleep 5
    sql postgres "ALTER SYSTEM RESET platform.lake_compact_interval" "SELECT pg_reload_conf()" >/dev/null
    sql postgres "COPY (SELECT path, extract(epoch FROM landed_at) FROM platform.lake_file WHERE sink = 'fresh') TO '$BENCH_DIR/fresh-files.csv' CSV" >/dev/null
    if [ -n "$py" ]; then
        read -r p50 p99 files mean_kb < <("$py" - "$lake-fresh" "$BENCH_DIR/fresh-files.csv" <<'PY'
import csv, sys, duckdb
lake, files_csv = sys.argv[1:3]
landed = {r[0]: float(r[1]) for r in csv.reader(open(files_csv))}
con = duckdb.connect()
con.execute("CREATE TABLE landed (path text, t double)")
con.executemany("INSERT INTO landed VALUES (?, ?)", [(lake + "/" + p, t) for p, t in landed.items()])
p50, p99 = con.execute(f"""
  SELECT quantile_cont(l.t - epoch(f._commit_ts), 0.5), quantile_cont(l.t - epoch(f._commit_ts), 0.99)
    FROM read_parquet('{lake}/public/lake_fresh/**/*.parquet', filename = true, hive_partitioning = true) f
    JOIN landed l ON l.path = f.filename
   WHERE NOT f.filename LIKE '%/merged_%'""").fetchone()
size = con.execute(f"SELECT avg(size) FROM (SELECT size FROM read_blob('{lake}/public/lake_fresh/**/*.parquet'))").fetchone()[0]
print(f"{p50:.2f} {p99:.2f} {len(landed)} {size / 1024:.0f}")
PY
)
        result "lake: freshness under pgbench at 500 tps, p50" "s" "$p50" "goal (p99 under 5 s)" 5 lower
        result "lake: freshness under pgbench at 500 tps, p99" "s" "$p99" "goal (p99 under 5 s)" 5 lower
        note "lake: $files files of $mean_kb kB on average after ${fresh_secs} s at 500 tps (one per batch of platform.lake_batch_max_age until the worker's compaction, every ${LAKE_SOAK_COMPACT:-platform.lake_compact_interval} s, merges the day's folded ones; freshness is measured over the files not merged yet)"
    fi
    sql postgres "SELECT platform.drop_lake_sink('fresh')" "DROP TABLE public.lake_fresh" >/dev/null
fi
sql postgres "DROP DATABASE $db" >/dev/null
