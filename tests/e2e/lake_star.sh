#!/usr/bin/env bash
# The analysts' star schema: the reference payments schema, generated, landed by a sink
# (backfill, then status changes and new payments as changes), compacted into the current
# zone; the DuckDB script of platform.lake_star_schema_sql builds the star, and its three
# questions (sql/lake/star_queries.duckdb.sql) must give exactly the answers the same
# questions asked in SQL of the PostgreSQL tables give.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with DuckDB"; exit 1; }
throwaway_server e2e-lake-star yes
q -c "CREATE EXTENSION pg_platform" -c "SELECT platform.create_payments_schema('payments')" >/dev/null
q -c "SELECT count(*) FROM platform.generate_payments('payments', 800, 80, 30000, days => 400, start_at => '2025-06-01')" >/dev/null
q -c "SELECT * FROM platform.create_lake_sink('star', '$dir/lake', tables => 'payments.*', background => false)" >/dev/null
q -c "SELECT rows FROM platform.lake_sync('star')" >/dev/null
# Changes after the backfill: disputes lost, refunds, and new payments.
q >/dev/null <<'SQL'
SELECT count(*) FROM (SELECT payments.change_transaction_status(id, 'disputed', 'cardholder claims fraud')
                        FROM payments.transaction WHERE status_id = 2 AND id % 97 = 0) s;
SELECT count(*) FROM (SELECT payments.change_transaction_status(id, 'chargeback', 'dispute lost')
                        FROM payments.transaction WHERE status_id = 5 AND id % 2 = 0) s;
SELECT count(*) FROM (SELECT payments.change_transaction_status(id, 'refunded', 'merchant refund')
                        FROM payments.transaction WHERE status_id = 2 AND id % 89 = 0) s;
UPDATE payments.customer SET segment = 'premium' WHERE id % 50 = 1;
INSERT INTO payments.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                                  location_id, ip_address, amount, currency, status_id, tax_amount)
SELECT id + 1000000, occurred_at + interval '20 days', customer_id, merchant_id, payment_method_id, device_id,
       location_id, ip_address::inet, amount::numeric(18,2), currency, status_id, tax_amount::numeric(18,2)
  FROM platform.generate_transaction_rows(1, 2000, 2000, 7, 800, 80, '2026-06-01', 30);
SQL
q -c "SELECT rows FROM platform.lake_sync('star')" >/dev/null
q -c "SELECT count(*) FROM platform.lake_compact('star')" >/dev/null
q -c "SELECT platform.lake_star_schema_sql('star')" >"$dir/star.sql"
pg_answer() { q -c "\\copy ($1) TO STDOUT CSV"; }
pg_answer "SELECT extract(year FROM d)::int, extract(month FROM d)::int, sum(t.tax_amount)
             FROM payments.transaction t
             JOIN payments.location l ON l.id = t.location_id
             JOIN payments.merchant m ON m.id = t.merchant_id
             CROSS JOIN LATERAL (SELECT (t.occurred_at AT TIME ZONE 'UTC')::date AS d) x
            WHERE t.status_id = 2 AND l.country = 'FR'
              AND m.industry IN ('grocery', 'clothing', 'electronics', 'pharmacy', 'jewelry')
            GROUP BY 1, 2 ORDER BY 1, 2" >"$dir/q1.csv"
pg_answer "SELECT (t.occurred_at AT TIME ZONE 'UTC')::date, count(*)
             FROM payments.transaction t
             JOIN payments.payment_method p ON p.id = t.payment_method_id
             JOIN payments.merchant m ON m.id = t.merchant_id
            WHERE t.status_id = 7 AND p.kind = 'card' AND m.size = 'small'
            GROUP BY 1 ORDER BY 1" >"$dir/q2.csv"
pg_answer "SELECT extract(year FROM t.occurred_at AT TIME ZONE 'UTC')::int, sum(t.amount)
             FROM payments.transaction t
             JOIN payments.location l ON l.id = t.location_id
             JOIN payments.customer c ON c.id = t.customer_id
            WHERE t.status_id = 2 AND l.country = 'FR' AND c.segment = 'premium'
            GROUP BY 1 ORDER BY 1" >"$dir/q3.csv"
"$py" - "$dir/star.sql" "$root/sql/lake/star_queries.duckdb.sql" "$dir" <<'PY'
import csv, decimal, sys
import duckdb
script, queries, work = sys.argv[1:4]
con = duckdb.connect()
con.execute(open(script).read())
tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
want_tables = {"dim_date", "dim_customer", "dim_merchant", "dim_location", "dim_payment_method",
               "fact_revenue", "fact_fraud_analysis", "fact_customer_segmentation"}
problems = [f"missing {t}" for t in sorted(want_tables - set(tables))]
def norm(v):
    try:
        d = decimal.Decimal(str(v))
    except decimal.InvalidOperation:
        return str(v)
    return str(int(d)) if d == d.to_integral_value() else str(d.normalize())
qs = [q.strip() for q in open(queries).read().split(";") if "SELECT" in q]
for i, q in enumerate(qs, 1):
    lake = [[norm(x) for x in r] for r in con.execute(q).fetchall()]
    with open(f"{work}/q{i}.csv") as f:
        pg = [[norm(x) for x in r] for r in csv.reader(f)]
    if not lake:
        problems.append(f"query {i}: no rows from the lake")
    if lake != pg:
        diff = [(a, b) for a, b in zip(lake, pg) if a != b][:3]
        problems.append(f"query {i}: lake and PostgreSQL differ ({len(lake)} vs {len(pg)} rows), e.g. {diff}")
    else:
        print(f"query {i}: {len(lake)} rows, the same from the lake as from PostgreSQL")
holidays = con.execute("SELECT count(*) FROM dim_date WHERE is_holiday AND month = 7 AND day = 14").fetchone()[0]
if holidays < 1:
    problems.append("dim_date has no 14 July holiday")
premium = con.execute("SELECT count(*) FILTER (WHERE segment = 'Premium'), count(*) FROM dim_customer").fetchone()
if not 0 < premium[0] < premium[1]:
    problems.append(f"dim_customer segments look wrong: {premium}")
if problems:
    print("star schema FAILED:"); [print("  " + p) for p in problems]; sys.exit(1)
print("star schema: built from the current zone; the three analyst queries agree with PostgreSQL")
PY
