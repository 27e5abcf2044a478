#!/usr/bin/env bash
# S3 lakes against a local S3-compatible server (moto, from PyPI) on 127.0.0.1: a sink on
# s3://bucket/prefix lands a backfill and every later change exactly once, as pyarrow
# reads them through its S3 file system (types and values as PostgreSQL has them); every
# data file belongs to a manifest in the bucket, nothing pending is visible, the staging
# directory keeps no data. A missing bucket and an unreachable endpoint are clear errors
# that leave no sink; a frozen S3 server fails the batch without moving the slot, and the
# sink lands everything once when the server answers again (by lake_sync, and by the
# worker, whose failure shows in lake_status meanwhile); so does a server killed and
# started again; an object of another writer under a batch's name is a conflict (42710),
# never overwritten. Small files are merged in the bucket, read once by lake_read_sql's
# query before, after and between the merged file's upload and the others' deletes. Partition retention archives
# to the bucket; the current zone is folded from the bucket and read back through its
# pointer. The secret key appears in no message, status or server log line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with pyarrow and moto"; exit 1; }
throwaway_server e2e-lake-s3 yes

closed=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_moto "$py" lake-e2e
trap 'kill -CONT $moto 2>/dev/null || true; kill $moto 2>/dev/null || true; stop_server "$dir"' EXIT
endpoint=$s3_endpoint
secret=$s3_secret
q -c "ALTER SYSTEM SET platform.lake_s3_timeout = 3" -c "SELECT pg_reload_conf()" >/dev/null
q -c "CREATE EXTENSION pg_platform" >/dev/null
q >/dev/null <<'SQL'
CREATE TABLE public.s3t (id int PRIMARY KEY, amount numeric(12,2), at timestamptz, note text, tags text[], raw bytea);
INSERT INTO public.s3t SELECT g, g * 1.25, '2026-12-01 10:00:00+00'::timestamptz + g * interval '1 second',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'row ' || g END, ARRAY['t' || g, NULL], '\x00ff'::bytea
  FROM generate_series(1, 100) g;
SQL

# Bad input: a bucket that does not exist, an endpoint nobody listens on; no sink is left.
expect_error 58P01 "SELECT * FROM platform.create_lake_sink('s3none', 's3://no-such-bucket/x', tables => 'public.s3t')"
q -c "ALTER SYSTEM SET platform.lake_s3_endpoint = 'http://127.0.0.1:$closed'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
expect_error 08006 "SELECT * FROM platform.create_lake_sink('s3down', 's3://lake-e2e/x', tables => 'public.s3t')"
q -c "ALTER SYSTEM SET platform.lake_s3_endpoint = '$endpoint'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
expect_error 22023 "SELECT * FROM platform.create_lake_sink('s3bad', 's3://Bad_Bucket/x')"
[ "$(q -c "SELECT count(*) FROM platform.lake_sink")" = 0 ] || { echo "a refused sink was left behind"; exit 1; }
[ "$(q -c "SELECT count(*) FROM pg_replication_slots")" = 0 ] || { echo "a refused sink left its slot"; exit 1; }

q -c "SELECT * FROM platform.create_lake_sink('s3lake', 's3://lake-e2e/raw/', tables => 'public.s3t', background => false)" >/dev/null
drain() {
    local rows
    for _ in $(seq 1 20); do
        rows=$(q -c "SELECT rows FROM platform.lake_sync('s3lake')")
        [ "$rows" = 0 ] && [ "$(q -c "SELECT state FROM platform.lake_backfills WHERE sink = 's3lake'")" = done ] && return 0
    done
    echo "the S3 sink does not catch up"; exit 1
}
# The backfill of the rows already there first, then changes.
drain
q >/dev/null <<'SQL'
INSERT INTO public.s3t SELECT g, g * 1.25, '2026-12-01 10:00:00+00'::timestamptz + g * interval '1 second', 'row ' || g, '{}', NULL
  FROM generate_series(101, 150) g;
UPDATE public.s3t SET amount = 0.01, note = 'changed' WHERE id = 5;
DELETE FROM public.s3t WHERE id = 6;
SQL
drain
case "$(q -c "SELECT platform.lake_read_sql('s3lake', 'public.s3t')")" in
    "SELECT * EXCLUDE (_pg_platform_file) FROM read_parquet('s3://lake-e2e/raw/public/s3t/**/*.parquet', hive_partitioning = true,"*"FROM glob('s3://lake-e2e/raw/public/s3t/**/*.parquet')"*) ;;
    *) echo "lake_read_sql does not name the bucket's files"; q -c "SELECT platform.lake_read_sql('s3lake', 'public.s3t')"; exit 1;;
esac

# A frozen S3 server: the batch fails (timeout), the slot stays; thawed, it lands once.
slot_before=$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake'")
q -c "INSERT INTO public.s3t SELECT g, 2, now(), 'late', NULL, NULL FROM generate_series(200, 219) g" >/dev/null
kill -STOP "$moto"
expect_error 08006 "SELECT rows FROM platform.lake_sync('s3lake')"
[ "$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake'")" = "$slot_before" ] \
    || { echo "the slot moved past a batch the bucket does not hold"; exit 1; }
kill -CONT "$moto"
# The batch is staged, not uploaded. Another object under one of its names (another
# writer on the same prefix) is a conflict, never overwritten; gone, the batch lands.
staged=$(as_root find "$dir/data/pg_platform/lake/s3lake/public" -name '*.parquet' | head -1)
[ -n "$staged" ] || { echo "the failed batch left nothing staged to upload again"; exit 1; }
foreign_key="raw/${staged#"$dir/data/pg_platform/lake/s3lake/"}"
"$py" -c 'import sys, boto3; boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").put_object(Bucket="lake-e2e", Key=sys.argv[2], Body=b"someone else")' "$endpoint" "$foreign_key"
expect_error 42710 "SELECT rows FROM platform.lake_sync('s3lake')" | tee "$dir/conflict.txt"
grep -q "s3://lake-e2e/$foreign_key" "$dir/conflict.txt" || { echo "the conflict does not name the object"; exit 1; }
[ "$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake'")" = "$slot_before" ] \
    || { echo "the slot moved past a batch that met a conflict"; exit 1; }
"$py" -c 'import sys, boto3; boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").delete_object(Bucket="lake-e2e", Key=sys.argv[2])' "$endpoint" "$foreign_key"
drain
[ "$(q -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake' AND confirmed_flush_lsn > '$slot_before'")" = 1 ] \
    || { echo "the slot did not move after the thaw"; exit 1; }

# The S3 server stopped and started again (its objects saved and put back, as a server
# with storage keeps them): batches fail meanwhile, and land once it is back.
"$py" - "$endpoint" "$dir/bucket-save" <<'PY'
import json, os, sys, boto3
endpoint, out = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
saved = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-e2e"):
    for o in page.get("Contents", []):
        path = os.path.join(out, "objects", str(len(saved)))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file("lake-e2e", o["Key"], path)
        saved.append([o["Key"], s3.head_object(Bucket="lake-e2e", Key=o["Key"])["Metadata"]])
json.dump(saved, open(os.path.join(out, "index.json"), "w"))
PY
kill -9 "$moto"; wait "$moto" 2>/dev/null || true
slot_before=$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake'")
q -c "INSERT INTO public.s3t SELECT g, 4, now(), 'while S3 was down', NULL, NULL FROM generate_series(400, 409) g" >/dev/null
expect_error 08006 "SELECT rows FROM platform.lake_sync('s3lake')"
[ "$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake'")" = "$slot_before" ] \
    || { echo "the slot moved while S3 was down"; exit 1; }
"$(dirname "$py")/moto_server" -H 127.0.0.1 -p "${endpoint##*:}" >>"$dir/moto.log" 2>&1 &
moto=$!
"$py" - "$endpoint" "$dir/bucket-save" <<'PY'
import json, os, sys, time, boto3
endpoint, out = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for _ in range(200):
    try:
        s3.create_bucket(Bucket="lake-e2e")
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("moto does not start again")
for i, (key, meta) in enumerate(json.load(open(os.path.join(out, "index.json")))):
    s3.upload_file(os.path.join(out, "objects", str(i)), "lake-e2e", key, ExtraArgs={"Metadata": meta})
PY
drain
[ "$(q -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_s3lake' AND confirmed_flush_lsn > '$slot_before'")" = 1 ] \
    || { echo "the slot did not move once S3 was back"; exit 1; }
if find "$dir/data/pg_platform/lake/s3lake" -name '*.parquet*' | grep -q .; then
    echo "the staging directory keeps data files after their upload"; find "$dir/data/pg_platform/lake/s3lake"; exit 1
fi

# The worker on a frozen S3 server: the failure is in lake_status.last_error (SQLSTATE
# and object, no secret) and the sink lands by itself once the server answers again.
q -c "UPDATE platform.lake_sink SET background = true WHERE name = 's3lake'" >/dev/null
kill -STOP "$moto"
q -c "INSERT INTO public.s3t SELECT g, 3, now(), 'by the worker', NULL, NULL FROM generate_series(300, 309) g" >/dev/null
for _ in $(seq 1 150); do
    [ -n "$(q -c "SELECT last_error FROM platform.lake_status WHERE sink = 's3lake' AND last_error LIKE '%(08006)'")" ] && break
    sleep 0.2
done
q -c "SELECT last_error FROM platform.lake_status WHERE sink = 's3lake'" >"$dir/worker_error.txt"
grep -q "^S3 PUT of s3://lake-e2e/raw/.*(08006)$" "$dir/worker_error.txt" \
    || { echo "the worker's S3 failure is not in lake_status:"; cat "$dir/worker_error.txt"; exit 1; }
kill -CONT "$moto"
for _ in $(seq 1 150); do
    # A batch that succeeds clears the error.
    [ "$(q -c "SELECT last_error IS NULL FROM platform.lake_status WHERE sink = 's3lake'")" = t ] && break
    sleep 0.2
done
[ "$(q -c "SELECT last_error IS NULL FROM platform.lake_status WHERE sink = 's3lake'")" = t ] \
    || { echo "the worker did not resume after the thaw"; q -c "SELECT * FROM platform.lake_status"; exit 1; }
q -c "UPDATE platform.lake_sink SET background = false WHERE name = 's3lake'" >/dev/null
sleep 1
drain

# The current zone, folded from the bucket's files and uploaded with its pointer last.
[ "$(q -c "SELECT rows FROM platform.lake_compact('s3lake')")" = "$(q -c "SELECT count(*) FROM public.s3t")" ] \
    || { echo "the current zone of the S3 sink does not hold the table's rows"; exit 1; }
current=$(q -c "SELECT platform.lake_read_sql('s3lake', 'public.s3t', zone => 'current')")
case "$current" in "SELECT * FROM read_parquet('s3://lake-e2e/raw/current/public/s3t/"*) ;; *) echo "current zone query: $current"; exit 1;; esac

# Merging the small files of the day, in the bucket: the merged file is uploaded before
# the files it replaces are deleted; lake_read_sql's query skips the files a merged
# file's LSN range covers, so a reader between the two sees each change once. Checked
# with DuckDB on copies of the bucket before, after, and as it is in between.
bronze_copy() {
    "$py" - "$endpoint" "$1" <<'PY'
import os, sys, boto3
endpoint, out = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-e2e", Prefix="raw/public/s3t/"):
    for o in page.get("Contents", []):
        if o["Key"].endswith(".parquet"):
            path = os.path.join(out, o["Key"][len("raw/"):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file("lake-e2e", o["Key"], path)
PY
}
bronze_copy "$dir/before"
files_before=$(q -c "SELECT count(*) FROM platform.lake_file WHERE sink = 's3lake'")
merged=$(q -c "SELECT sum(merged_files) FROM platform.lake_merge('s3lake', recent => true)")
[ "${merged:-0}" -ge 2 ] || { echo "lake_merge merged no files of the S3 sink (files: $files_before)"; exit 1; }
[ "$(q -c "SELECT count(*) FROM platform.lake_file WHERE sink = 's3lake'")" = $((files_before - merged + 1)) ] \
    || { echo "lake_file does not list the merged file in place of the $merged it replaces"; exit 1; }
[ "$(q -c "SELECT count(*) FROM platform.lake_merge('s3lake', recent => true)")" = 0 ] \
    || { echo "a second merge found more to merge"; exit 1; }
bronze_copy "$dir/after"
mkdir -p "$dir/between" && cp -r "$dir/before/." "$dir/between/" && cp -r "$dir/after/." "$dir/between/"
read_sql=$(q -c "SELECT platform.lake_read_sql('s3lake', 'public.s3t')")
"$py" - "$read_sql" "$dir" <<'PY'
import collections, os, sys, duckdb
read_sql, d = sys.argv[1:3]
con = duckdb.connect()
def changes(copy, sql):
    q = sql.replace("s3://lake-e2e/raw", os.path.join(d, copy))
    return collections.Counter(con.execute(f"SELECT _op::text, id, _lsn FROM ({q})").fetchall())
plain = "SELECT * FROM read_parquet('s3://lake-e2e/raw/public/s3t/**/*.parquet', union_by_name = true)"
before, after, between = (changes(c, read_sql) for c in ("before", "after", "between"))
problems = []
if after != before:
    problems.append(f"the merge changed the changes: {sum((before - after).values())} lost, {sum((after - before).values())} added")
if between != before:
    problems.append(f"a reader between upload and deletes sees {sum((between - before).values())} extra, {sum((before - between).values())} missing")
if max(before.values()) != 1:
    problems.append("a change twice before the merge")
if sum(changes("between", plain).values()) <= sum(before.values()):
    problems.append("the in-between copy holds no file twice: the test tests nothing")
merged = [n for _, _, ns in os.walk(os.path.join(d, "after")) for n in ns if n.startswith("merged_")]
if len(merged) != 1:
    problems.append(f"merged files in the bucket: {merged}")
if problems:
    sys.exit("\n".join(problems))
print(f"lake s3 merge: {sum(before.values())} changes read once before, after and between ({merged[0]})")
PY
q -c "\\copy (SELECT id, amount::text, (extract(epoch FROM at) * 1000000)::int8, note, tags::text, encode(raw, 'hex') FROM public.s3t ORDER BY id) TO '$dir/s3t.csv' CSV"
"$py" - "$endpoint" "$dir/s3t.csv" <<'PY'
import csv, decimal, json, sys
import boto3, pyarrow.dataset as ds, pyarrow.fs as pafs
endpoint, state_csv = sys.argv[1:3]
problems = []
def check(what, got, want):
    if got != want:
        problems.append(f"{what}: lake {got!r}, expected {want!r}")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-e2e", Prefix="raw/") for o in p.get("Contents", [])]
data = sorted(k for k in keys if k.endswith(".parquet") and not k.startswith("raw/current/"))
check("pending objects", [k for k in keys if k.endswith(".pending") or k.endswith(".tmp")], [])
manifests = [k for k in keys if k.startswith("raw/_pg_platform/s3lake/commits/") and k.endswith(".json")]
listed = set()
replaced = set()
for m in manifests:
    body = json.loads(s3.get_object(Bucket="lake-e2e", Key=m)["Body"].read())
    listed.update("raw/" + f["path"] for f in body["files"])
    replaced.update("raw/" + f for f in body.get("merge_of", []))
listed -= replaced
check("data files without a manifest", sorted(set(data) - listed), [])
check("manifest files missing", sorted(listed - set(data)), [])
check("schema file", "raw/public/s3t/_schema.json" in keys, True)
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
table = ds.dataset([k.replace("raw/", "lake-e2e/raw/", 1) for k in data], filesystem=fs, format="parquet",
                   partitioning="hive").to_table()
check("amount type", str(table.schema.field("amount").type), "decimal128(12, 2)")
check("at type", str(table.schema.field("at").type), "timestamp[us, tz=UTC]")
check("tags type", str(table.schema.field("tags").type), "list<item: string>")
check("raw type", str(table.schema.field("raw").type), "binary")
rows = table.to_pylist()
changes = {}
for r in rows:
    changes.setdefault((r["_op"], r["id"]), []).append(r)
check("changes landed twice", sorted(k for k, v in changes.items() if len(v) > 1), [])
want_ops = {("r", i) for i in range(1, 101)} | {("i", i) for i in range(101, 151)} | {("u", 5), ("d", 6)} \
    | {("i", i) for i in range(200, 220)} | {("i", i) for i in range(300, 310)} | {("i", i) for i in range(400, 410)}
check("changes", sorted(set(changes) - want_ops), [])
check("changes missing", sorted(want_ops - set(changes)), [])
# The table's state, replayed from the lake in LSN order, equals PostgreSQL's.
state = {}
for r in sorted(rows, key=lambda r: (r["_lsn"], r["_op"] != "d")):
    if r["_op"] == "d":
        state.pop(r["id"], None)
    else:
        state[r["id"]] = r
with open(state_csv) as f:
    pg = {int(x[0]): x for x in csv.reader(f)}
check("replayed ids", sorted(state), sorted(pg))
for i, want in pg.items():
    got = state.get(i)
    if got is None:
        continue
    check(f"{i} amount", got["amount"], decimal.Decimal(want[1]) if want[1] else None)
    check(f"{i} at", None if got["at"] is None else int(got["at"].timestamp() * 1_000_000), int(want[2]) if want[2] else None)
    check(f"{i} note", got["note"], want[3] if want[3] else None)
    check(f"{i} raw", None if got["raw"] is None else got["raw"].hex(), want[5] if want[5] else None)
# The current zone: the pointer names one file per table, whose rows are the table's.
pointer = json.loads(s3.get_object(Bucket="lake-e2e", Key="raw/_pg_platform/s3lake/current.json")["Body"].read())
current = [t for t in pointer["tables"] if t["table"] == "public.s3t"]
check("current zone tables", len(current), 1)
if current:
    cur = ds.dataset("lake-e2e/raw/" + current[0]["path"], filesystem=fs, format="parquet").to_table().to_pylist()
    check("current ids", sorted(r["id"] for r in cur), sorted(pg))
    check("current amounts", {r["id"]: r["amount"] for r in cur}, {i: decimal.Decimal(w[1]) if w[1] else None for i, w in pg.items()})
if problems:
    print("\n".join(problems[:20]))
    sys.exit(1)
print(f"lake s3 check: {len(rows)} changes in {len(data)} objects under {len(manifests)} manifests, each once; the replay equals the table ({len(pg)} rows)")
PY

# Retention's archive action writes an expiring partition to the bucket before dropping it.
q >/dev/null <<'SQL'
CREATE TABLE public.s3p (id int, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
SELECT platform.partition_by_time('public.s3p', 'at', '1 day', premake => 1, start => now() - interval '10 days');
INSERT INTO public.s3p SELECT g, date_trunc('day', now() - interval '8 days') + g * interval '1 minute' FROM generate_series(1, 30) g;
SQL
q -c "SELECT * FROM platform.create_lake_sink('s3arch', 's3://lake-e2e/arch', tables => 'public.s3p', background => false, backfill => false)" >/dev/null
q -c "SELECT platform.set_retention('public.s3p', '3 days', 'archive')" -c "SELECT platform.run_maintenance('public.s3p')" >/dev/null
[ "$(q -c "SELECT count(*) FROM public.s3p")" = 0 ] || { echo "the expired partition was not retired"; exit 1; }
[ "$(q -c "SELECT sum(rows) FROM platform.lake_archive WHERE sink = 's3arch'")" = 30 ] \
    || { echo "the archive is not recorded"; q -c "SELECT * FROM platform.lake_archive"; exit 1; }
"$py" - "$endpoint" <<'PY'
import sys
import boto3, pyarrow.dataset as ds, pyarrow.fs as pafs
endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake-e2e", Prefix="arch/").get("Contents", [])]
data = [k for k in keys if k.endswith(".parquet")]
manifests = [k for k in keys if "/_pg_platform/s3arch/commits/archive_" in k]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
rows = ds.dataset(["lake-e2e/" + k for k in data], filesystem=fs, format="parquet").to_table().to_pylist()
ids = sorted(r["id"] for r in rows)
ok = ids == list(range(1, 31)) and all(r["_op"] == "r" for r in rows) and len(manifests) >= 1 \
    and all(k.split("/")[-1].startswith("archive_") for k in data)
if not ok:
    sys.exit(f"archive in the bucket: ids {ids}, objects {keys}")
print(f"lake s3 archive: {len(rows)} rows in {len(data)} objects, {len(manifests)} manifests")
PY

# The secret key is nowhere in what the server said.
q -c "SELECT coalesce(last_error, '') FROM platform.lake_status" >"$dir/status.txt"
if grep -q "$secret" "$dir/server.log" "$dir/status.txt" "$dir"/data/log/* 2>/dev/null; then
    echo "the S3 secret key appears in the server's messages"; exit 1
fi
# A dropped sink's staging directory goes at commit, not before (a rollback keeps it).
q -c "BEGIN" -c "SELECT platform.drop_lake_sink('s3arch')" -c "ROLLBACK" >/dev/null
as_root test -d "$dir/data/pg_platform/lake/s3arch" || { echo "a rolled-back drop removed the staging directory"; exit 1; }
q -c "SELECT platform.drop_lake_sink('s3lake')" -c "SELECT platform.drop_lake_sink('s3arch')" >/dev/null
for s in s3lake s3arch; do
    if as_root test -e "$dir/data/pg_platform/lake/$s"; then echo "the dropped sink $s left its staging directory"; exit 1; fi
done
echo "S3 lake: backfill, changes and an archived partition landed exactly once through a frozen, then a restarted S3 server and a conflicting object; small files merged in the bucket; bad buckets and endpoints refused"
