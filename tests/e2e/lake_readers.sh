#!/usr/bin/env bash
# The lake as DuckDB and pyarrow read it: every type the CDC plugin maps (numeric
# precision, timestamptz instants, NULLs, lists, bytea, uuid, json, interval), a
# partitioned table landing under its root, the query platform.lake_read_sql returns,
# and the published schema file; each value compared with PostgreSQL's own. Then a
# protected PII column: only its ciphertext reaches the lake, and forget_subject makes the
# lake's copy unreadable too.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with DuckDB and pyarrow"; exit 1; }
throwaway_server e2e-lake-readers yes
lake=$dir/lake
q -c "CREATE EXTENSION pg_platform" >/dev/null
q >/dev/null <<'SQL'
CREATE TABLE public.typed (
  id int PRIMARY KEY, n numeric(38,10), amount numeric(12,2), big int8, f float8, r float4, ok bool,
  t text, d date, ts timestamp, tstz timestamptz, iv interval, u uuid, j jsonb, b bytea,
  tags text[], nums int[]);
CREATE TABLE public.events (id bigint, at timestamptz NOT NULL, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2026_11 PARTITION OF public.events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE public.events_2026_12 PARTITION OF public.events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
SQL
q -c "SELECT * FROM platform.create_lake_sink('readers', '$lake', tables => 'public.*', background => false)" >/dev/null
q >/dev/null <<'SQL'
SET TIME ZONE 'America/New_York';
INSERT INTO public.typed VALUES
 (1, 1234567890123456789012345678.0123456789, -0.01, 9223372036854775807, 3.141592653589793, 1.5, true,
  'café – ☕', '1999-12-31', '2026-03-01 12:34:56.789012', '2026-03-01 12:34:56.789012-05', '1 mon 2 days 03:04:05.000006',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2, {"x": null}]}', '\x00ff10', '{a,NULL,"c d"}', '{1,2,3}'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -0.0000000001, 99999999.99, -1, -0.0, 'NaN', false, '', '1970-01-01', '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999+00',
  '-1 days', '00000000-0000-0000-0000-000000000000', '[]', '\x', '{}', '{NULL}');
INSERT INTO public.events VALUES (1, '2026-11-30 23:00:00+00', 'nov'), (2, '2026-12-01 01:00:00+00', 'dec');
UPDATE public.events SET v = 'dec2' WHERE id = 2;
SQL
q -c "SELECT rows FROM platform.lake_sync('readers')" >/dev/null
q -c "\\copy (SELECT id, n::text, amount::text, big, f::text, r::text, ok, t, d::text, (extract(epoch FROM ts) * 1000000)::int8,
               (extract(epoch FROM tstz) * 1000000)::int8, extract(month FROM iv)::int + extract(year FROM iv)::int * 12,
               extract(day FROM iv)::int, replace(u::text, '-', ''), j::text, encode(b, 'hex'), tags::text, nums::text
          FROM public.typed ORDER BY id) TO '$dir/typed.csv' CSV"
read_typed=$(q -c "SELECT platform.lake_read_sql('readers', 'public.typed')")
read_events=$(q -c "SELECT platform.lake_read_sql('readers', 'public.events')")
"$py" - "$lake" "$dir/typed.csv" "$read_typed" "$read_events" <<'PY'
import csv, datetime, decimal, json, math, os, sys
import duckdb, pyarrow.parquet as pq
lake, typed_csv, read_typed, read_events = sys.argv[1:5]
problems = []
def check(what, got, want):
    if got != want:
        problems.append(f"{what}: lake {got!r}, PostgreSQL {want!r}")
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
rows = {r[0]: r for r in con.execute(f"SELECT id, n, amount, big, f, r, ok, t, d, epoch_us(ts), epoch_us(tstz), iv, u, j, b, tags, nums, _op, _commit_year FROM ({read_typed})").fetchall()}
with open(typed_csv) as f:
    pg = {int(r[0]): r for r in csv.reader(f)}
check("row count", sorted(rows), sorted(pg))
for i, want in pg.items():
    got = rows[i]
    null = lambda v: v == ""
    check(f"{i} numeric(38,10)", got[1], None if null(want[1]) else decimal.Decimal(want[1]))
    check(f"{i} numeric(12,2)", got[2], None if null(want[2]) else decimal.Decimal(want[2]))
    check(f"{i} int8", got[3], None if null(want[3]) else int(want[3]))
    if not null(want[4]):
        check(f"{i} float8", repr(got[4]), repr(float(want[4])))
    if not null(want[5]) and want[5] != "NaN":
        check(f"{i} float4", got[5], float(want[5]))
    if want[5] == "NaN":
        check(f"{i} float4 NaN", math.isnan(got[5]), True)
    check(f"{i} bool", got[6], None if null(want[6]) else want[6] == "t")
    check(f"{i} text", got[7], None if null(want[7]) and i == 2 else want[7])
    check(f"{i} date", None if got[8] is None else got[8].isoformat(), None if null(want[8]) else want[8])
    check(f"{i} timestamp", got[9], None if null(want[9]) else int(want[9]))
    check(f"{i} timestamptz", got[10], None if null(want[10]) else int(want[10]))
    if not null(want[11]):
        check(f"{i} interval months,days", (got[11]["months"], got[11]["days"]), (int(want[11]), int(want[12])))
    check(f"{i} uuid", None if got[12] is None else bytes(got[12]).hex(), None if null(want[13]) else want[13])
    check(f"{i} jsonb", None if got[13] is None else json.loads(got[13]), None if null(want[14]) else json.loads(want[14]))
    check(f"{i} bytea", None if got[14] is None else bytes(got[14]).hex(), None if i == 2 else want[15])
    check(f"{i} op", got[17], "i")
check("text[]", rows[1][15], ["a", None, "c d"])
check("int[] with NULL", rows[3][16], [None])
check("empty text[]", rows[3][15], [])
check("commit year partition key", rows[1][18], datetime.datetime.now(datetime.timezone.utc).year)
events = con.execute(f"SELECT id, v, _op FROM ({read_events}) ORDER BY _commit_lsn, _lsn").fetchall()
check("partitioned table under its root", events, [(1, "nov", "i"), (2, "dec", "i"), (2, "dec2", "u")])
check("no directory per partition", sorted(os.listdir(os.path.join(lake, "public"))), ["events", "typed"])
some = next(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(lake, "public", "typed")) for f in fs if f.endswith(".parquet"))
schema = pq.read_schema(some)
for name, want in {"n": "decimal128(38, 10)", "tstz": "timestamp[us, tz=UTC]", "ts": "timestamp[us]", "tags": "list<item: string>",
                   "b": "binary", "u": "extension<arrow.uuid>", "d": "date32[day]", "big": "int64", "r": "float",
                   "_commit_ts": "timestamp[us, tz=UTC]", "_unchanged_toast": "list<item: string>"}.items():
    check(f"pyarrow type of {name}", str(schema.field(name).type), want)
meta = pq.read_metadata(some).metadata
check("footer start_lsn", b"pg_platform.start_lsn" in meta, True)
published = json.load(open(os.path.join(lake, "public", "typed", "_schema.json")))
check("published schema columns", [f["name"] for f in published["fields"]][:3], ["id", "n", "amount"])
check("published pg_type", published["fields"][1]["pg_type"], "numeric(38,10)")
if problems:
    print("lake readers FAILED:"); [print("  " + p) for p in problems]; sys.exit(1)
print(f"lake readers: DuckDB and pyarrow read {len(rows)} typed rows and a partitioned table exactly as PostgreSQL holds them")
PY

# PII: protect customer.email per subject, write through the view, land, forget.
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | as_server_user tee "$dir/master.key" >/dev/null
as_server_user chmod 600 "$dir/master.key"
q -c "ALTER SYSTEM SET platform.master_key_file = '$dir/master.key'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
q -c "SELECT platform.create_key('lake_pii')" \
  -c "CREATE TABLE public.customer (id int PRIMARY KEY, email text)" >/dev/null
q -c "CALL platform.protect_column('public.customer', 'email', 'lake_pii', subject_column => 'id', mask => 'email')" >/dev/null
q -c "INSERT INTO public.customer_view (id, email) VALUES (9001, 'ada.lovelace@example.com')" >/dev/null
q -c "SELECT rows FROM platform.lake_sync('readers')" >/dev/null
if grep -r -q -a 'ada.lovelace@example.com' "$lake"; then echo "the plaintext e-mail is in the lake"; exit 1; fi
hex=$("$py" - "$(q -c "SELECT platform.lake_read_sql('readers', 'public.customer')")" <<'PY'
import sys, duckdb
rows = duckdb.connect().execute(f"SELECT email_encrypted FROM ({sys.argv[1]}) WHERE id = 9001 AND _op = 'i'").fetchall()
print(bytes(rows[0][0]).hex())
PY
)
ctx="pii:$(q -c "SELECT id FROM platform.protected_columns WHERE tbl = 'public.customer'::regclass"):9001"
[ "$(q -c "SELECT platform.decrypt('\\x$hex'::bytea, '$ctx')")" = ada.lovelace@example.com ] \
    || { echo "the lake's ciphertext does not decrypt with the key"; exit 1; }
q -c "SELECT platform.forget_subject('lake_pii', '9001')" >/dev/null
err=$(q -c "SELECT platform.decrypt('\\x$hex'::bytea, '$ctx')" 2>&1 || true)
echo "$err" | grep -q ERROR || { echo "the lake's copy is still readable after forget_subject: $err"; exit 1; }
echo "lake PII: only ciphertext landed; after forget_subject the lake's copy no longer decrypts"
