#!/usr/bin/env bash
# A full lake file system: a local lake on a 512 kB tmpfs. A batch that does not fit is
# 53100 naming the path; the slot stays, no file or manifest of the batch is visible;
# once the file system is larger (remounted), the next batch lands every change once.
# Mounting needs root (or sudo): without it the script says so and skips.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with DuckDB"; exit 1; }
throwaway_server e2e-lake-disk-full yes
lake=$dir/lake
mkdir -p "$lake"
if ! as_root mount -t tmpfs -o size=512k,mode=0755 tmpfs "$lake" 2>/dev/null; then
    echo "skipped: cannot mount a tmpfs here (needs root or sudo)"; exit 0
fi
trap 'as_root umount "$lake" 2>/dev/null || true; stop_server "$dir"' EXIT
as_root chown "$(server_user)" "$lake"
q -c "CREATE EXTENSION pg_platform" >/dev/null
q -c "CREATE TABLE public.blob (id int PRIMARY KEY, body bytea)" >/dev/null
q -c "SELECT * FROM platform.create_lake_sink('full', '$lake', tables => 'public.blob', background => false, backfill => false)" >/dev/null
q -c "INSERT INTO public.blob SELECT g, '\\x00'::bytea FROM generate_series(1, 5) g" >/dev/null
[ "$(q -c "SELECT rows FROM platform.lake_sync('full')")" = 5 ] || { echo "the first batch did not land"; exit 1; }
visible() { find "$lake" \( -name '*.parquet' -o -name '*.json' \) -not -name '_schema.json' | sort; }
visible >"$dir/before.txt"
slot=$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_full'")
# About 2.5 MB of incompressible bytes: more than the file system holds.
q -c "INSERT INTO public.blob SELECT g, decode(repeat(md5(g::text || random()::text), 4), 'hex') FROM generate_series(6, 40005) g" >/dev/null
out=$(PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres \
      -v ON_ERROR_STOP=1 -c "\\set VERBOSITY verbose" -c "SELECT rows FROM platform.lake_sync('full')" 2>&1) \
    && { echo "a batch larger than the file system landed: $out"; exit 1; }
echo "$out" | grep "ERROR:" | head -1
echo "$out" | grep -q "ERROR:  53100:.*$lake" || { echo "a full file system is not 53100 naming the path:"; echo "$out"; exit 1; }
[ "$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_full'")" = "$slot" ] \
    || { echo "the slot moved past a batch that did not fit"; exit 1; }
visible >"$dir/after.txt"
diff "$dir/before.txt" "$dir/after.txt" >/dev/null || { echo "the failed batch left files visible:"; diff "$dir/before.txt" "$dir/after.txt"; exit 1; }
# Room again: the sink lands everything once.
as_root mount -o remount,size=64m "$lake"
for _ in $(seq 1 10); do [ "$(q -c "SELECT rows FROM platform.lake_sync('full')")" = 0 ] && break; done
"$py" - "$lake" <<'PY'
import sys, duckdb
lake = sys.argv[1]
got = duckdb.connect().execute(
    f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM read_parquet('{lake}/public/blob/**/*.parquet', union_by_name = true)"
).fetchone()
if got != (40005, 40005, 1, 40005):
    sys.exit(f"after the remount the lake holds (rows, ids, min, max) = {got}, expected 40005 rows once each")
print(f"lake disk full: {got[0]} changes once after the file system grew")
PY
echo "lake on a full file system: 53100 naming the path, slot kept, nothing visible; landed once with room again"
