#!/usr/bin/env bash
# The background worker runs partition maintenance on its own: it makes partitions ahead,
# rescues rows from the default partition, logs a line per action, and a table whose
# maintenance fails is reported and retried without stopping the others or the worker.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
throwaway_server e2e-partworker yes
q -c "CREATE EXTENSION pg_platform" \
  -c "SET TimeZone = 'UTC'" \
  -c "CREATE TABLE public.events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)" \
  -c "CREATE TABLE public.broken (at timestamptz NOT NULL) PARTITION BY RANGE (at)" \
  -c "SELECT count(*) FROM platform.partition_by_time('public.events', 'at', '1 day', premake => 1)" \
  -c "SELECT count(*) FROM platform.partition_by_time('public.broken', 'at', '1 day', premake => 1)" >/dev/null
# Work for the worker: more partitions ahead, a stray row, and a table whose next
# partition name is taken by an unrelated table (its maintenance must fail alone).
q -c "SELECT platform.set_premake('public.events', 5)" \
  -c "SELECT platform.set_premake('public.broken', 5)" \
  -c "INSERT INTO public.events VALUES (1, now() + interval '30 days')" \
  -c "CREATE TABLE public.broken_p$(q -c "SELECT to_char((now() AT TIME ZONE 'UTC')::date + 2, 'YYYYMMDD')") (x int)" >/dev/null
worker_pid=$(q -c "SELECT pid FROM platform.worker_status()")
q -c "ALTER SYSTEM SET platform.maintenance_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 60); do
    made=$(q -c "SELECT count(*) FROM platform.partitions WHERE parent = 'public.events'::regclass AND NOT is_default")
    stray=$(q -c "SELECT count(*) FROM ONLY public.events_default")
    [ "$made" = 7 ] && [ "$stray" = 0 ] && break
    sleep 1
done
[ "$made" = 7 ] || { echo "worker made $made partitions of public.events, expected 6 ahead + 1 rescued"; exit 1; }
[ "$stray" = 0 ] || { echo "worker left $stray rows in the default partition"; exit 1; }
grep -q "pg_platform: public.events: moved 1 rows from the default partition" "$dir/server.log" \
    || { echo "no log line for the rescue"; exit 1; }
grep -q "partition maintenance of public.broken failed: relation public.broken_p.* already exists" "$dir/server.log" \
    || { echo "the failing table was not reported"; tail -20 "$dir/server.log"; exit 1; }
[ "$(q -c "SELECT pid FROM platform.worker_status()")" = "$worker_pid" ] \
    || { echo "the worker restarted after a failing table"; exit 1; }
echo "worker: partitions made ahead, default partition rescued, a failing table reported without stopping it"
