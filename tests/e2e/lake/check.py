"""Checks a lake sink's files against the change history the writers recorded.

    python check.py LAKE_DIR HISTORY_CSV STATE_CSV [READ_SQL]

HISTORY_CSV: every committed change of public.ledger (id, op, amount) made after the sink
was created, as the writers recorded it in the same transactions. Rows from before come
as the backfill's snapshot rows (_op = 'r'): each at most once, and the replay of
snapshot rows and changes in commit order must give the table. STATE_CSV: the table's rows at the end (id, amount).
READ_SQL: the DuckDB query platform.lake_read_sql gives for the table, its lake URL
replaced by LAKE_DIR (all files, Hive partitions, when absent).
Read with DuckDB and pyarrow (types). Exits non-zero with what differs.
"""
import collections
import csv
import decimal
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq

lake, history_csv, state_csv = sys.argv[1:4]
table_dir = os.path.join(lake, "public", "ledger")
read_sql = sys.argv[4] if len(sys.argv) > 4 else \
    f"SELECT * FROM read_parquet('{table_dir}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
problems = []

# Every data file is named by a committed manifest (a merge's manifest names the merged
# file in place of those it replaced), and nothing is left pending.
manifests = os.path.join(lake, "_pg_platform", "crash", "commits")
listed, replaced = set(), set()
merges = 0
for m in os.listdir(manifests):
    if m.endswith(".json"):
        with open(os.path.join(manifests, m)) as f:
            body = json.load(f)
        listed.update(x["path"] for x in body["files"])
        replaced.update(body.get("merge_of", []))
        merges += "merge_of" in body
listed -= replaced
on_disk = set()
for d, _, names in os.walk(lake):
    for n in names:
        rel = os.path.relpath(os.path.join(d, n), lake)
        if n.endswith(".pending"):
            problems.append(f"left pending: {rel}")
        if n.endswith(".parquet") and not rel.startswith(("current/", "_pg_platform/")):
            on_disk.add(rel)
if on_disk != listed:
    problems.append(f"files without a manifest: {sorted(on_disk - listed)[:5]}, "
                    f"manifest files missing: {sorted(listed - on_disk)[:5]}")

con = duckdb.connect()
rows = con.execute(
    f"SELECT id, _op::text, amount, _lsn, _commit_lsn, _commit_year, _commit_day FROM ({read_sql})"
).fetchall()

# Each change once: the same (lsn, op, id) twice is a duplicate.
seen = collections.Counter((r[3], r[1], r[0]) for r in rows)
dups = [k for k, n in seen.items() if n > 1]
if dups:
    problems.append(f"{len(dups)} changes landed twice, e.g. {dups[:3]}")

lake_changes = collections.Counter(
    (r[0], r[1], None if r[2] is None else decimal.Decimal(r[2]).quantize(decimal.Decimal("0.01")))
    for r in rows if r[1] != "r")
snap = collections.Counter(r[0] for r in rows if r[1] == "r")
twice = [k for k, n in snap.items() if n > 1]
if twice:
    problems.append(f"{len(twice)} rows snapshot twice, e.g. {twice[:3]}")
with open(history_csv) as f:
    history = collections.Counter(
        (int(r[0]), r[1], decimal.Decimal(r[2]) if r[2] else None) for r in csv.reader(f))
missing = history - lake_changes
extra = lake_changes - history
if missing:
    problems.append(f"{sum(missing.values())} committed changes missing from the lake, e.g. {list(missing)[:3]}")
if extra:
    problems.append(f"{sum(extra.values())} changes in the lake that were never committed, e.g. {list(extra)[:3]}")

# Replaying the lake in commit order gives the table's final state.
state = {}
for r in sorted(rows, key=lambda r: (r[4], r[3], 0 if r[1] == "d" else 1)):
    if r[1] == "d":
        state.pop(r[0], None)
    else:
        state[r[0]] = decimal.Decimal(r[2]).quantize(decimal.Decimal("0.01"))
with open(state_csv) as f:
    final = {int(r[0]): decimal.Decimal(r[1]) for r in csv.reader(f)}
if state != final:
    diff = set(state.items()) ^ set(final.items())
    problems.append(f"replaying the lake does not give the table: {len(diff)} rows differ, e.g. {sorted(diff)[:3]}")

# pyarrow sees the types the plugin announces.
some = next(iter(sorted(on_disk)), None)
if some:
    schema = pq.read_schema(os.path.join(lake, some))
    want = {"id": "int64", "amount": "decimal128(12, 2)", "_commit_ts": "timestamp[us, tz=UTC]", "_lsn": "int64"}
    for k, v in want.items():
        if str(schema.field(k).type) != v:
            problems.append(f"column {k} is {schema.field(k).type}, expected {v}")

if not merges:
    problems.append("no merge manifest: the lake was never merged")
if problems:
    print("lake check FAILED:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"lake check: {sum(history.values())} committed changes, each exactly once, and {sum(snap.values())} "
      f"backfilled rows in {len(on_disk)} files ({merges} merges); replay equals the table ({len(final)} rows)")
