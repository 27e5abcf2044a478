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
\echo '7. PII: customer names and e-mails encrypted at rest, per customer; plaintext only for platform_pii_reader'
SELECT platform.create_key('customer_pii') AS key_version;
-- A plaintext index keeps plaintext on disk: the blind index replaces it for lookups.
DROP INDEX payments.customer_email_idx;
CALL platform.protect_column('payments.customer', 'email', 'customer_pii', subject_column => 'id', mask => 'email', blind_index => true);
CALL platform.protect_column('payments.customer', 'full_name', 'customer_pii', subject_column => 'id', mask => 'name');
SELECT tbl AS "table", column_name, key_name, subject_column, mask, blind_index, view_name, state FROM platform.protected_columns ORDER BY id;
\echo 'what the table stores (and what CDC, dumps and the lake receive): ciphertext'
SELECT id, left(encode(full_name_encrypted, 'hex'), 24) || '...' AS full_name_encrypted, left(encode(email_encrypted, 'hex'), 24) || '...' AS email_encrypted
  FROM payments.customer ORDER BY id LIMIT 2;
\echo 'the analyst (platform_readonly) reads the view: masked'
SET SESSION AUTHORIZATION quickstart_analyst;
SELECT id, full_name, email FROM payments.customer_view ORDER BY id LIMIT 2;
RESET SESSION AUTHORIZATION;
\echo 'a support agent (platform_pii_reader) reads plaintext and finds a customer by e-mail through the blind index'
DROP ROLE IF EXISTS quickstart_support;
CREATE ROLE quickstart_support LOGIN IN ROLE platform_readonly, platform_pii_reader;
SELECT email AS lookup FROM payments.customer_view WHERE id = 2 \gset
SET SESSION AUTHORIZATION quickstart_support;
SELECT id, full_name, email FROM payments.customer_view WHERE email = :'lookup';
EXPLAIN (COSTS OFF) SELECT id FROM payments.customer_view WHERE email = :'lookup';
RESET SESSION AUTHORIZATION;
\echo 'erasure on request (GDPR): forget customer 1; its name and e-mail are unreadable everywhere a copy went'
SELECT platform.forget_subject('customer_pii', '1') AS forgotten;
SET platform.pii_forgotten_read = 'null';
SELECT id, full_name, email FROM payments.customer_view WHERE id IN (1, 2) ORDER BY id;
RESET platform.pii_forgotten_read;
\echo 'who read protected columns, and how many rows (counted per statement, no write per row)'
SELECT role, table_name, column_name, statements, plaintext_values, masked_values FROM platform.pii_access ORDER BY 1, 3;
\echo '8. Audit: who changed which payment, recorded in the same transaction, hash-chained'
SELECT platform.audit_table('payments.transaction') AS audited, platform.audit_table('payments.transaction_state_change') AS audited_too;
SELECT min(id) AS tx2 FROM payments.transaction WHERE status_id = 2 \gset
BEGIN;
SELECT transaction_id, to_status_id FROM payments.change_transaction_status(:tx2, 'refunded', 'customer asked for a refund');
ROLLBACK;
\echo 'rolled back: the change and its audit rows are gone together'
SELECT count(*) AS audit_rows_after_rollback FROM platform.audit_log WHERE operation IN ('INSERT', 'UPDATE', 'DELETE');
SELECT transaction_id, to_status_id FROM payments.change_transaction_status(:tx2, 'refunded', 'customer asked for a refund');
SELECT operation, table_name, statement_seq AS stmt, primary_key, old_values, new_values ->> 'to_status_id' AS new_to_status,
       current_user_name, role_class
  FROM platform.audit_trail WHERE operation IN ('INSERT', 'UPDATE', 'DELETE') ORDER BY xid, statement_seq, row_seq;
SELECT platform.seal_audit() > 0 AS sealed;
SELECT intact, blocks_checked > 0 AS chained, problem FROM platform.verify_audit();
\echo 'an UPDATE of the audit log is refused, for the superuser too; expected: append-only'
\set ON_ERROR_STOP 0
UPDATE platform.audit_log SET role_class = 'other';
\set ON_ERROR_STOP 1
SELECT setting, current_value, ok FROM platform.audit_settings() ORDER BY setting;
\echo '9. Fraud scoring: the generator planted labelled fraud; a model trained in SQL on January and February ranks March; new payments are scored inside their own transaction'
SELECT coalesce(fraud_label, 'legitimate') AS label, count(*) AS payments FROM payments.transaction GROUP BY 1 ORDER BY 2 DESC;
-- What a model reads: the payment, its merchant's industry and where it took place; the label only for training.
CREATE VIEW payments.fraud_history AS
SELECT t.payment_method_id::text AS card, t.amount, t.occurred_at, t.merchant_id::text AS merchant,
       m.industry AS category, l.latitude AS lat, l.longitude AS lon, t.fraud_label IS NOT NULL AS is_fraud
  FROM payments.transaction t
  JOIN payments.merchant m ON m.id = t.merchant_id
  JOIN payments.location l ON l.id = t.location_id;
SELECT platform.fraud_train('payments', $$SELECT * FROM payments.fraud_history WHERE occurred_at < '2026-03-01'$$, 'is_fraud', 'gbdt') AS version \gset
\o /dev/null
SELECT platform.fraud_deploy('payments', :version);
\o
SELECT name, version, kind, aliases, training ->> 'train_payments' AS trained_on, training ->> 'validation_payments' AS validated_on FROM platform.fraud_models WHERE name = 'payments';
SELECT model, payments, frauds, round(auc_pr::numeric, 3) AS auc_pr, round(auc_roc::numeric, 3) AS auc_roc,
       round(recall_at_1pct_fpr::numeric, 3) AS recall_at_1pct_fpr
  FROM (SELECT 'gbdt v' || :version AS model, * FROM platform.fraud_evaluate('payments', :version,
                $$SELECT * FROM payments.fraud_history WHERE occurred_at >= '2026-03-01'$$, 'is_fraud')
        UNION ALL
        SELECT 'built-in anomaly score', * FROM platform.fraud_evaluate('builtin', NULL,
                $$SELECT * FROM payments.fraud_history WHERE occurred_at >= '2026-03-01'$$, 'is_fraud')) e;
\echo 'every payment inserted from now on is scored before it is stored; a review holds it and records the state change'
-- The cards' profiles continue from the history; the trigger reads the payment's row and
-- looks up what the model also saw: its merchant's industry and where it took place.
SELECT platform.fraud_rebuild_profiles($$SELECT * FROM payments.fraud_history$$) AS cards_profiled;
SELECT platform.score_payments('payments.transaction', '{"card": "payment_method_id", "amount": "amount",
    "occurred_at": "occurred_at", "merchant": "merchant_id", "score": "fraud_score", "id": "id",
    "category": {"query": "SELECT industry FROM payments.merchant WHERE id = $1::bigint", "arg": "merchant_id"},
    "lat": {"query": "SELECT latitude FROM payments.location WHERE id = $1::bigint", "arg": "location_id"},
    "lon": {"query": "SELECT longitude FROM payments.location WHERE id = $1::bigint", "arg": "location_id"},
    "status": "status_id", "review_status": 8, "state_changes": "payments.transaction_state_change"}') AS scored;
\o /dev/null
SELECT platform.fraud_set_rule('quickstart_allow_ordinary', 'allow', 'amount <= 5000');
SELECT platform.fraud_set_rule('quickstart_review_large', 'review', 'amount > 5000');
SELECT platform.fraud_set_rule('quickstart_block_huge', 'block', 'amount > 20000');
\o
SELECT name AS rule, action, condition FROM platform.fraud_rules WHERE name LIKE 'quickstart%' ORDER BY name;
SELECT max(id) AS last_id FROM payments.transaction \gset
INSERT INTO payments.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, location_id, amount, currency, status_id)
SELECT :last_id + 1, timestamptz '2026-04-01 10:00+00', customer_id, merchant_id, payment_method_id, location_id, amount, currency, 1
  FROM payments.transaction WHERE id = 1
UNION ALL
SELECT :last_id + 2, timestamptz '2026-04-01 10:05+00', customer_id, merchant_id, payment_method_id, location_id, 9000, currency, 1
  FROM payments.transaction WHERE id = 1;
SELECT t.id, t.amount, s.code AS status, round(t.fraud_score::numeric, 3) AS fraud_score, c.reason AS state_change
  FROM payments.transaction t JOIN payments.transaction_status s ON s.id = t.status_id
  LEFT JOIN payments.transaction_state_change c ON c.transaction_id = t.id AND c.transaction_occurred_at = t.occurred_at
 WHERE t.id > :last_id ORDER BY t.id;
\echo 'a payment a block rule refuses; expected: payment blocked, with the reasons'
\set ON_ERROR_STOP 0
INSERT INTO payments.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, location_id, amount, currency, status_id)
SELECT :last_id + 3, timestamptz '2026-04-01 10:10+00', customer_id, merchant_id, payment_method_id, location_id, 25000, currency, 1
  FROM payments.transaction WHERE id = 1;
\set ON_ERROR_STOP 1
SELECT count(*) AS blocked_payments_stored FROM payments.transaction WHERE id = :last_id + 3;
SELECT platform.unscore_payments('payments.transaction') AS unscored;
\echo '10. Lake: committed changes land as Parquet files, exactly once, after a backfill of what the tables hold'
SELECT sink, slot_name FROM platform.create_lake_sink('quickstart', :'lake_dir', tables => 'payments.*', background => false);
SELECT rows AS rows_landed, files FROM platform.lake_sync('quickstart');
SELECT table_name, state, rows FROM platform.lake_backfills WHERE sink = 'quickstart' ORDER BY table_name;
SELECT min(id) AS tx3 FROM payments.transaction WHERE status_id = 2 \gset
SELECT transaction_id, to_status_id FROM payments.change_transaction_status(:tx3, 'refunded', 'merchant refunded the order');
\echo 'the status change and its state-change row, landed by the next batch'
SELECT rows AS rows_landed, files FROM platform.lake_sync('quickstart');
SELECT table_name, files, rows FROM platform.lake_files WHERE sink = 'quickstart' AND table_name LIKE 'transaction%' ORDER BY table_name;
\echo 'the current state of every table at one cut, and the DuckDB query that reads it'
SELECT table_name, rows, merged_files FROM platform.lake_compact('quickstart') WHERE table_name LIKE 'payments.transaction%' ORDER BY 1;
SELECT platform.lake_read_sql('quickstart', 'payments.transaction', 'current') AS duckdb_sql;
SELECT wal_status, lag_bytes < 1000000 AS caught_up, rows_landed > 0 AS landed, last_error FROM platform.lake_status;
\echo 'scenario complete'
