#!/usr/bin/env bash
# Exactly once through crashes: writers change public.ledger (recording each committed
# change in public.history in the same transaction) while platform.lake_sync runs in a
# loop and the background worker lands batches too; in each of LAKE_CRASH_ITERATIONS
# (default 50) rounds the backend running lake_sync, the worker, or the whole server is
# killed with SIGKILL at a random moment; the worker compacts and merges the day's small
# files every 2 s meanwhile, so kills land in merges too. At the end the
# lake must hold every committed change exactly once (DuckDB and pyarrow read it), every
# file must belong to a manifest, and replaying the lake must give the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with DuckDB and pyarrow"; exit 1; }
# LAKE_CRASH_TARGET=s3 runs the same loop against an S3 lake (moto on 127.0.0.1); the
# bucket is then copied to a directory and checked the same way.
target=${LAKE_CRASH_TARGET:-local}
throwaway_server "e2e-lake-$target" yes
lake=$dir/lake
url=$lake
iterations=${LAKE_CRASH_ITERATIONS:-50}
# A start can still find the old shared memory attached for a moment after the killed
# processes are gone (seen in CI: "pre-existing shared memory block is still in use"):
# it is retried for up to 30 s.
restart() {
    for _ in $(seq 1 60); do
        as_server_user env -u RUST_BACKTRACE pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "the server does not start again after SIGKILL:"; tail -n 20 "$dir/server.log"
    ps -eo pid,pgid,ppid,stat,lstart,cmd | grep -E "postgres|postmaster" | grep -v grep
    ipcs -m
    exit 1
}
up() { for _ in $(seq 1 300); do q -c "SELECT 1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server does not come back"; cat "$dir/server.log"; exit 1; }

moto=
if [ "$target" = s3 ]; then
    start_moto "$py" lake-crash
    trap 'kill $moto 2>/dev/null || true; stop_server "$dir"' EXIT
    url=s3://lake-crash/lake
fi
q -c "CREATE EXTENSION pg_platform" >/dev/null
q >/dev/null <<'SQL'
CREATE TABLE public.ledger (id bigserial PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL, note text);
CREATE TABLE public.history (seq bigserial PRIMARY KEY, id bigint NOT NULL, op text NOT NULL, amount numeric(12,2));
-- One transaction of n inserts, n/2 updates and n/5 deletes, each recorded in history.
CREATE FUNCTION public.write_some(n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN INSERT INTO ledger (account, amount, note)
           SELECT (random() * 100)::int, round((random() * 1000)::numeric, 2), repeat('x', (random() * 40)::int)
             FROM generate_series(1, n) RETURNING id, amount LOOP
    INSERT INTO history (id, op, amount) VALUES (r.id, 'i', r.amount);
  END LOOP;
  FOR r IN UPDATE ledger SET amount = amount + 0.01
            WHERE id IN (SELECT id FROM ledger WHERE id > (SELECT max(id) - 300 FROM ledger) ORDER BY random() LIMIT n / 2)
           RETURNING id, amount LOOP
    INSERT INTO history (id, op, amount) VALUES (r.id, 'u', r.amount);
  END LOOP;
  FOR r IN DELETE FROM ledger
            WHERE id IN (SELECT id FROM ledger WHERE id > (SELECT max(id) - 300 FROM ledger) ORDER BY random() LIMIT n / 5)
           RETURNING id LOOP
    INSERT INTO history (id, op) VALUES (r.id, 'd');
  END LOOP;
END $$;
SQL
# Rows from before the sink: its backfill lands them (200-row chunks) while the writers
# and the kills go on.
for _ in $(seq 1 40); do q -c "SELECT public.write_some(60)" >/dev/null; done
boundary=$(q -c "SELECT max(seq) FROM public.history")
q -c "ALTER SYSTEM SET platform.lake_backfill_chunk_rows = 200" -c "SELECT pg_reload_conf()" >/dev/null
q -c "SELECT * FROM platform.create_lake_sink('crash', '$url', tables => 'public.ledger')" >/dev/null
# The worker lands a batch whenever changes are 0.2 s old, and compacts and merges the
# day's small files every 2 s: kills land in merges too.
q -c "ALTER SYSTEM SET platform.lake_batch_max_age = 200" -c "ALTER SYSTEM SET platform.lake_sync_interval = 50" \
  -c "ALTER SYSTEM SET platform.lake_compact_interval = 2" -c "SELECT pg_reload_conf()" >/dev/null

# Writers: a failed transaction (crash, deadlock) is simply not in the history.
stop=$dir/stop-writers
writer() { while [ ! -e "$stop" ]; do q -c "SELECT public.write_some($((RANDOM % 30 + 1)))" >/dev/null 2>&1 || sleep 0.2; done; }
writer & w1=$!
writer & w2=$!
trap 'touch "$stop"; kill $w1 $w2 $moto 2>/dev/null || true; stop_server "$dir"' EXIT

interrupted=0
for i in $(seq 1 "$iterations"); do
    sleep "0.$((RANDOM % 6))"
    # One round in three the backend also compacts and merges, in the same transaction.
    work="SELECT rows FROM platform.lake_sync('crash')"
    [ $((RANDOM % 3)) = 0 ] && work="$work; SELECT count(*) FROM platform.lake_compact('crash'); SELECT count(*) FROM platform.lake_merge('crash', recent => true)"
    PGAPPNAME=lake_crash q -c "$work" >"$dir/sync.out" 2>&1 &
    sync_pid=$!
    sleep "0.$(printf '%03d' $((RANDOM % 400)))"
    choice=$((RANDOM % 3))
    if [ $choice = 0 ]; then
        mode=backend
        pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'lake_crash'" 2>/dev/null || true)
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    elif [ $choice = 1 ]; then
        mode=worker
        pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_platform worker'" 2>/dev/null || true)
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    else
        mode=server
        pm=$(head -1 "$dir/data/postmaster.pid")
        # pg_ctl starts the postmaster in a session of its own: killing that process
        # group kills it and every backend at once, even one it is forking (killing the
        # children first missed one forked meanwhile, which kept the old shared memory
        # attached, and the restart refused to start).
        kill -9 -- "-$pm" 2>/dev/null || true
        # A child that made itself a session leader (PostgreSQL's children may) is not in
        # that group: busy, it notices the postmaster's death late and keeps the shared
        # memory attached. As in a real crash of the machine, it dies too: any server
        # process left without its postmaster (now a child of PID 1) is killed.
        pkill -9 -P "$pm" 2>/dev/null || true
        for _ in $(seq 1 100); do
            pkill -9 -P 1 -f '^postgres: ' 2>/dev/null || true
            pgrep -g "$pm" >/dev/null 2>&1 || pgrep -P 1 -f '^postgres: ' >/dev/null 2>&1 || break
            sleep 0.05
        done
        restart
    fi
    if wait "$sync_pid"; then result="finished first"; else result="killed mid-batch"; interrupted=$((interrupted + 1)); fi
    up
    echo "round $i: killed the $mode, lake_sync $result"
    grep -v "terminat\|connection\|server closed\|^[0-9]*$\|shut down\|recovery mode" "$dir/sync.out" | sed 's/^/  /' || true
done
touch "$stop"
wait $w1 $w2 2>/dev/null || true

# Drain: batches until one lands nothing (and the backfill is done).
for _ in $(seq 1 200); do
    rows=$(q -c "SELECT rows FROM platform.lake_sync('crash')")
    [ "$rows" = 0 ] && [ "$(q -c "SELECT state FROM platform.lake_backfills WHERE sink = 'crash'")" = done ] && break
done
[ "$rows" = 0 ] || { echo "the sink does not catch up"; exit 1; }
# A merge the last kill interrupted is finished by the next one (which also merges what
# the last compaction folded, so the check below always sees merged files).
q -c "ALTER SYSTEM SET platform.lake_compact_interval = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
q -c "SELECT count(*) FROM platform.lake_compact('crash')" >/dev/null
q -c "SELECT count(*) FROM platform.lake_merge('crash', recent => true)" >/dev/null
read_sql=$(q -c "SELECT platform.lake_read_sql('crash', 'public.ledger')")
read_sql=${read_sql//"$url"/"$lake"}
q -c "\\copy (SELECT id, op, amount FROM public.history WHERE seq > $boundary) TO '$dir/history.csv' CSV"
[ "$(q -c "SELECT state FROM platform.lake_backfills WHERE sink = 'crash'")" = done ] \
    || { echo "the backfill did not finish:"; q -c "SELECT * FROM platform.lake_backfills"; exit 1; }
q -c "\\copy (SELECT id, amount FROM public.ledger) TO '$dir/state.csv' CSV"
echo "$interrupted of $iterations kills interrupted the lake_sync call (the worker's batches are killed too)"
[ "$interrupted" -ge $((iterations / 20)) ] || { echo "too few kills hit a running batch to test recovery"; exit 1; }
if [ "$target" = s3 ]; then
    "$py" - "$s3_endpoint" "$lake" <<'PY'
import os, sys, boto3
endpoint, lake = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-crash", Prefix="lake/"):
    for o in page.get("Contents", []):
        path = os.path.join(lake, o["Key"][len("lake/"):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file("lake-crash", o["Key"], path)
PY
fi
"$py" "$root/tests/e2e/lake/check.py" "$lake" "$dir/history.csv" "$dir/state.csv" "$read_sql"
