"""The pipeline people build by hand, for the lake benchmark: wal2json (format-version 2)
read with psycopg2 through a server-side cursor, rows collected per table and written as
zstd Parquet files with pyarrow, each file fsynced, then the slot consumed.

    python wal2json_parquet.py DSN SLOT OUT_DIR   -> prints "rows seconds peak_rss_mb"

OUT_DIR may be s3://bucket/prefix: the files go there through pyarrow's S3 file system
(endpoint AWS_ENDPOINT_URL, keys from the environment); a finished PUT is durable.
"""
import json
import os
import resource
import sys
import time

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq

dsn, slot, out = sys.argv[1:4]
s3 = None
if out.startswith("s3://"):
    import pyarrow.fs as pfs
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    s3 = pfs.S3FileSystem(endpoint_override=endpoint.split("://")[-1] or None,
                          scheme=endpoint.split("://")[0] if endpoint else "https",
                          region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    out = out.removeprefix("s3://")
else:
    os.makedirs(out, exist_ok=True)
t0 = time.monotonic()
conn = psycopg2.connect(dsn)
cur = conn.cursor(name="changes")
cur.itersize = 10000
cur.execute(
    "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, "
    "'format-version', '2', 'include-timestamp', '1', 'include-xids', '1')",
    (slot,))
tables = {}
rows = 0
last_lsn = None
batch = 0


def flush():
    global batch
    for (schema, table), recs in tables.items():
        if not recs:
            continue
        path = os.path.join(out, f"{schema}.{table}.{batch:06d}.parquet")
        pq.write_table(pa.Table.from_pylist(recs), path, compression="zstd", filesystem=s3)
        if s3 is None:
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        recs.clear()
    batch += 1


for lsn, data in cur:
    last_lsn = lsn
    m = json.loads(data)
    action = m.get("action")
    if action not in ("I", "U", "D"):
        continue
    rec = {c["name"]: c["value"] for c in m.get("columns") or m.get("identity") or []}
    rec["_op"] = action
    rec["_lsn"] = lsn
    rec["_xid"] = m.get("xid")
    rec["_commit_ts"] = m.get("timestamp")
    recs = tables.setdefault((m["schema"], m["table"]), [])
    recs.append(rec)
    rows += 1
    if len(recs) >= 100_000:
        flush()
flush()
cur.close()
if last_lsn:
    conn.cursor().execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, last_lsn))
conn.commit()
secs = time.monotonic() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{rows} {secs:.3f} {peak:.0f}")
