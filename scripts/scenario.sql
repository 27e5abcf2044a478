-- The payments scenario the quickstart runs (psql script; variables transactions,
-- customers, merchants). Expected failures are shown, not hidden: psql prints their ERROR.
\pset footer off
SET client_min_messages = warning;
\set VERBOSITY default

\echo '1. Install the extension'
CREATE EXTENSION IF NOT EXISTS pg_platform;
SELECT extname, extversion, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'pg_platform';
SELECT rolname AS group_role, rolcanlogin AS can_login FROM pg_roles WHERE rolname LIKE 'platform\_%' ORDER BY rolname;
SELECT database, pid, configured FROM platform.worker_status();

\echo '2. Create the reference payments schema and fill it (deterministic, seed 42)'
SELECT platform.create_payments_schema('payments');
SELECT clock_timestamp() AS t0 \gset
SELECT table_name, rows_inserted, round(seconds::numeric, 3) AS seconds FROM platform.generate_payments('payments', :customers, :merchants, :transactions, seed => 42);
SELECT round(:transactions / greatest(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz), 0.001)) AS transactions_per_second \gset
\echo 'generated' :transactions 'transactions at' :transactions_per_second 'rows/s'
SELECT tableoid::regclass AS partition, count(*) AS transactions, min(occurred_at)::date AS first_day, max(occurred_at)::date AS last_day
  FROM payments.transaction GROUP BY 1 ORDER BY 1;
SELECT s.code AS status, count(*) AS transactions, round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct
  FROM payments.transaction t JOIN payments.transaction_status s ON s.id = t.status_id GROUP BY 1 ORDER BY 2 DESC;

\echo '3. Least privilege: apply the access model, then try to write as a readonly login'
SELECT platform.apply_rbac('payments');
DROP ROLE IF EXISTS quickstart_analyst;
CREATE ROLE quickstart_analyst LOGIN IN ROLE platform_readonly;
SET SESSION AUTHORIZATION quickstart_analyst;
SELECT count(*) AS rows_the_analyst_can_read FROM payments.transaction;
\echo 'expected: permission denied'
\set ON_ERROR_STOP 0
UPDATE payments.transaction SET amount = 0.01 WHERE id = 1;
\set ON_ERROR_STOP 1
RESET SESSION AUTHORIZATION;

\echo '4. ACID status change: the status and its state-change row commit together'
-- A CDC slot first, so step 5 can show what a consumer receives. Not temporary: a temporary
-- slot is dropped by the first error, and this step raises one on purpose.
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'quickstart';
SELECT slot_name AS cdc_slot FROM platform.create_cdc_slot('quickstart');
SELECT min(id) AS tx FROM payments.transaction WHERE status_id = 2 \gset
SELECT :tx AS transaction, s.code AS status FROM payments.transaction t JOIN payments.transaction_status s ON s.id = t.status_id WHERE t.id = :tx;
BEGIN;
SELECT transaction_id, from_status_id, to_status_id, reason FROM payments.change_transaction_status(:tx, 'refunded', 'customer asked for a refund');
\echo 'now an illegal change in the same transaction (refunded is final); expected: not allowed'
\set ON_ERROR_STOP 0
SELECT * FROM payments.change_transaction_status(:tx, 'successful', 'undo the refund');
\set ON_ERROR_STOP 1
ROLLBACK;
\echo 'after ROLLBACK: the refund is gone too, and no state-change row was kept'
SELECT s.code AS status, (SELECT count(*) FROM payments.transaction_state_change WHERE transaction_id = :tx) AS state_changes
  FROM payments.transaction t JOIN payments.transaction_status s ON s.id = t.status_id WHERE t.id = :tx;
SELECT transaction_id, from_status_id, to_status_id, reason, changed_by FROM payments.change_transaction_status(:tx, 'disputed', 'cardholder opened a dispute');
SELECT s.code AS status, (SELECT count(*) FROM payments.transaction_state_change WHERE transaction_id = :tx) AS state_changes
  FROM payments.transaction t JOIN payments.transaction_status s ON s.id = t.status_id WHERE t.id = :tx;
\echo '5. CDC: what a consumer of the pg_platform output plugin received (committed work only)'
SELECT m->>'kind' AS kind, m->>'table' AS "table", m->>'xid' AS xid,
       coalesce(m->'new'->>'status_id', m->'new'->>'to_status_id') AS new_status,
       m->'new'->>'reason' AS reason
  FROM (SELECT data::jsonb AS m
          FROM pg_logical_slot_get_changes('quickstart', NULL, NULL,
                                           'include_tables', 'payments.transaction*')) d
 WHERE m->>'kind' <> 'relation';
SELECT pg_drop_replication_slot('quickstart');
\echo '6. Partition management: monthly partitions made 3 months ahead, 7-year retention, a maintenance worker'
SELECT parent, partitions_created, partitions_retired, rows_moved
  FROM platform.partition_by_time('payments.transaction', 'occurred_at', '1 month', premake => 3,
                                  start => '2026-01-01', retention => '7 years');
SELECT count(*) FILTER (WHERE NOT is_default) AS partitions, min(lower_bound) AS first_from, max(upper_bound) AS last_until
  FROM platform.partitions WHERE parent = 'payments.transaction'::regclass;
\echo 'a second pass has nothing to do'
SELECT parent, partitions_created AS created_by_second_pass FROM platform.run_maintenance('payments.transaction');
\echo 'scenario complete'
