#!/usr/bin/env bash
# Multipart uploads to an S3 lake (moto, on 127.0.0.1, which like S3 refuses parts under
# 5 MB but the last): with platform.lake_s3_part_mb = 5, a batch file of about 30 MB goes
# up in parts (its ETag says how many), streamed from the staged file, and reads back with
# every byte. A batch that fails between two parts leaves an unfinished upload that the
# next try aborts before it starts again: none is left in the bucket, the slot does not
# move meanwhile, and the rows land once. The completion is create-only: another object
# under the file's name is a conflict (42710), never overwritten, and the upload's parts
# are dropped. Small files (manifests, schemas) stay one PUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with pyarrow and moto"; exit 1; }
throwaway_server e2e-lake-s3-multipart yes
start_moto "$py" lake-mp
trap 'kill $moto 2>/dev/null || true; stop_server "$dir"' EXIT
endpoint=$s3_endpoint
q -c "ALTER SYSTEM SET platform.lake_s3_part_mb = 5" -c "ALTER SYSTEM SET platform.lake_s3_timeout = 20" \
  -c "SELECT pg_reload_conf()" >/dev/null
q -c "CREATE EXTENSION pg_platform" >/dev/null
q -c "CREATE TABLE public.blobs (id int PRIMARY KEY, body bytea NOT NULL)" >/dev/null
q -c "SELECT * FROM platform.create_lake_sink('mp', 's3://lake-mp/raw', tables => 'public.blobs', background => false)" >/dev/null
q -c "SELECT rows FROM platform.lake_sync('mp')" >/dev/null
slot() { q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_mp'"; }
# The bucket as moto has it: unfinished uploads, and each object's ETag, size and MD-5.
bucket() {
    "$py" - "$endpoint" <<'PY'
import json, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
uploads = s3.list_multipart_uploads(Bucket="lake-mp").get("Uploads", [])
objects = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-mp"):
    for o in page.get("Contents", []):
        h = s3.head_object(Bucket="lake-mp", Key=o["Key"])
        objects[o["Key"]] = {"etag": o["ETag"].strip('"'), "size": o["Size"],
                             "md5": h["Metadata"].get("pg-platform-md5")}
print(json.dumps({"uploads": [u["Key"] for u in uploads], "objects": objects}))
PY
}
# 32 random bytes per row: the Parquet file cannot be much smaller than the rows.
insert() {
    q -c "INSERT INTO public.blobs SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex')
            FROM generate_series($1, $2) g" >/dev/null
}

# A batch that fails after its first part (as an ERROR or a crash there would leave it).
insert 1 900000
before=$(slot)
expect_error XX000 "SET platform.lake_fault = 'after_part'; SELECT rows FROM platform.lake_sync('mp')"
[ "$(slot)" = "$before" ] || { echo "the slot moved past a file that is not in the bucket"; exit 1; }
state=$(bucket)
"$py" -c 'import json, sys; s = json.loads(sys.argv[1]); u = s["uploads"]
assert len(u) == 1 and u[0].startswith("raw/public/blobs/"), s
assert not any(k.startswith("raw/public/blobs/") and k.endswith(".parquet") for k in s["objects"]), s' "$state" \
    || { echo "the interrupted upload is not as expected: $state"; exit 1; }
as_root find "$dir/data/pg_platform/lake/mp" -name '*.parquet.upload' | grep -q . \
    || { echo "the interrupted upload left no marker next to its staged file"; exit 1; }

# The next try aborts it, uploads again in parts and commits.
[ "$(q -c "SELECT rows FROM platform.lake_sync('mp')")" = 900000 ] || { echo "the retried batch did not land its rows"; exit 1; }
[ "$(q -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_mp' AND confirmed_flush_lsn > '$before'")" = 1 ] \
    || { echo "the slot did not move after the batch landed"; exit 1; }
if as_root find "$dir/data/pg_platform/lake/mp" -name '*.parquet*' | grep -q .; then
    echo "the staging directory keeps data files or upload markers"; as_root find "$dir/data/pg_platform/lake/mp"; exit 1
fi

# A second batch whose completion meets another writer's object under its name.
insert 900001 1200000
before=$(slot)
expect_error XX000 "SET platform.lake_fault = 'after_part'; SELECT rows FROM platform.lake_sync('mp')" >/dev/null
staged=$(as_root find "$dir/data/pg_platform/lake/mp/public" -name '*.parquet' | head -1)
[ -n "$staged" ] || { echo "the failed batch left nothing staged"; exit 1; }
foreign_key="raw/${staged#"$dir/data/pg_platform/lake/mp/"}"
"$py" -c 'import sys, boto3; boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").put_object(Bucket="lake-mp", Key=sys.argv[2], Body=b"someone else")' "$endpoint" "$foreign_key"
expect_error 42710 "SELECT rows FROM platform.lake_sync('mp')" | tee "$dir/conflict.txt"
grep -q "s3://lake-mp/$foreign_key" "$dir/conflict.txt" || { echo "the conflict does not name the object"; exit 1; }
[ "$(slot)" = "$before" ] || { echo "the slot moved past a batch that met a conflict"; exit 1; }
"$py" - "$endpoint" "$foreign_key" <<'PY' || exit 1
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
body = s3.get_object(Bucket="lake-mp", Key=sys.argv[2])["Body"].read()
assert body == b"someone else", "the other writer's object was overwritten"
uploads = s3.list_multipart_uploads(Bucket="lake-mp").get("Uploads", [])
assert not uploads, f"a refused upload keeps its parts: {uploads}"
s3.delete_object(Bucket="lake-mp", Key=sys.argv[2])
PY
[ "$(q -c "SELECT rows FROM platform.lake_sync('mp')")" = 300000 ] || { echo "the batch did not land once the conflict was gone"; exit 1; }
[ "$(q -c "SELECT rows FROM platform.lake_sync('mp')")" = 0 ] || { echo "a batch landed twice"; exit 1; }

# What the bucket holds: the data files in parts, everything else in one PUT, nothing
# unfinished; every row once with its bytes, as pyarrow reads the bucket.
state=$(bucket)
expected=$(q -c "SELECT count(*) || ' ' || encode(sha256(string_agg(body, ''::bytea ORDER BY id)), 'hex') FROM public.blobs")
"$py" - "$endpoint" "$state" "$expected" <<'PY' || exit 1
import hashlib, json, sys
import pyarrow.compute as pc, pyarrow.dataset as ds, pyarrow.fs as pfs
endpoint, state, expected = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
assert not state["uploads"], state["uploads"]
data = {k: o for k, o in state["objects"].items() if k.startswith("raw/public/blobs/") and k.endswith(".parquet")}
assert len(data) == 2, data
for k, o in data.items():
    parts = int(o["etag"].split("-")[1]) if "-" in o["etag"] else 1
    assert o["size"] > 5 << 20 and parts == -(-o["size"] // (5 << 20)), (k, o)
    assert o["md5"], (k, o)
small = {k: o for k, o in state["objects"].items() if k not in data}
assert small and all("-" not in o["etag"] for o in small.values()), small
s3 = pfs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", region="us-east-1")
t = ds.dataset(["lake-mp/" + k for k in data], format="parquet", filesystem=s3).to_table(columns=["id", "body", "_op"])
assert set(t.column("_op").to_pylist()) == {"i"}, "only inserts"
t = t.sort_by("id")
ids = t.column("id").to_pylist()
assert ids == list(range(1, len(ids) + 1)), "each row once"
digest = hashlib.sha256(b"".join(t.column("body").to_pylist())).hexdigest()
assert f"{len(ids)} {digest}" == expected, (len(ids), digest, expected)
print(f"{len(ids)} rows in {len(data)} files of {', '.join(str(o['size'] >> 20) + ' MB in ' + o['etag'].split('-')[1] + ' parts' for o in data.values())}")
PY
if as_root grep -qF "$s3_secret" "$dir/server.log" "$dir"/data/log/* 2>/dev/null; then
    echo "the S3 secret key appears in the server's messages"; exit 1
fi
echo "S3 multipart: files above platform.lake_s3_part_mb go up in parts, an interrupted upload is aborted and redone, a conflicting object is never overwritten, every row once"
