-- pg_platform 0.4.0 -> 0.5.0

-- The generator's row functions now return the customer segment, the tax amount and the
-- fraud label, and generate_payments takes a fraud rate: their signatures or result types
-- change, so they are dropped here and created again below (with their grants).
-- Payments schemas made before keep their tables: the generator fills the columns they
-- have (ALTER TABLE <schema>.transaction ADD COLUMN fraud_label text to get labels).
DROP FUNCTION platform.generate_customer_rows(bigint, bigint, bigint, timestamptz);
DROP FUNCTION platform.generate_transaction_rows(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz, integer);
DROP FUNCTION platform.generate_payments(text, integer, integer, bigint, bigint, timestamptz, integer);

-- The audit log's btree primary key becomes a BRIN index on xid (what sealing and
-- verification search by): a writer no longer pays a btree insert and its WAL per audit
-- row. Dropping the key drops it on every partition; the BRIN index is built on each.
ALTER TABLE platform.audit_log DROP CONSTRAINT audit_log_pkey;
CREATE OPERATOR CLASS platform.xid8_minmax_ops FOR TYPE xid8 USING brin AS
    OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
    FUNCTION 1 pg_catalog.brin_minmax_opcinfo(internal),
    FUNCTION 2 pg_catalog.brin_minmax_add_value(internal, internal, internal, internal),
    FUNCTION 3 pg_catalog.brin_minmax_consistent(internal, internal, internal),
    FUNCTION 4 pg_catalog.brin_minmax_union(internal, internal, internal);
CREATE INDEX audit_log_xid ON platform.audit_log USING brin (xid platform.xid8_minmax_ops)
    WITH (pages_per_range = 32, autosummarize = on);

-- Each value of the log's sequence is a chunk of 1000 ids (the writer numbers a chunk's
-- rows from its value); ids already given are below the next value.
ALTER SEQUENCE platform.audit_log_id_seq INCREMENT BY 1000 CACHE 100;

-- Rows written before keep who and from where on every row.
ALTER TABLE platform.audit_log
    ALTER COLUMN session_user_name DROP NOT NULL, ALTER COLUMN current_user_name DROP NOT NULL,
    ALTER COLUMN role_class DROP NOT NULL, ALTER COLUMN backend_pid DROP NOT NULL;
ALTER TABLE platform.audit_log_pending
    ALTER COLUMN session_user_name DROP NOT NULL, ALTER COLUMN current_user_name DROP NOT NULL,
    ALTER COLUMN role_class DROP NOT NULL, ALTER COLUMN backend_pid DROP NOT NULL;

-- The context of a statement, from its first row, for platform.audit_trail.
CREATE  FUNCTION "audit_statement_context"(
	"cluster_id" bigint, /* i64 */
	"event_time" timestamp with time zone, /* pgrx :: datum :: TimestampWithTimeZone */
	"xid" TEXT, /* & str */
	"statement_seq" INT /* i32 */
) RETURNS TABLE (
	"session_user_name" text,  /* Option < ServerText > */
	"current_user_name" text,  /* Option < ServerText > */
	"role_class" text,  /* Option < ServerText > */
	"client_addr" TEXT,  /* Option < String > */
	"client_port" INT,  /* Option < i32 > */
	"application_name" text,  /* Option < ServerText > */
	"backend_pid" INT,  /* Option < i32 > */
	"statement" text  /* Option < ServerText > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'audit_statement_context_wrapper';

-- Who ran a statement and from where (session_user_name .. statement) are stored on its
-- first row (row_seq 1) only; this view shows them on every row, looked up once per
-- statement (platform.audit_statement_context keeps the last ones a query found).
CREATE VIEW platform.audit_trail AS
SELECT l.id, l.cluster_id, l.event_time, l.xid, l.statement_seq, l.row_seq, l.operation,
       l.table_oid, l.table_name, l.primary_key, l.old_values, l.new_values,
       CASE WHEN l.session_user_name IS NULL THEN f.session_user_name ELSE l.session_user_name END AS session_user_name,
       CASE WHEN l.session_user_name IS NULL THEN f.current_user_name ELSE l.current_user_name END AS current_user_name,
       CASE WHEN l.session_user_name IS NULL THEN f.role_class ELSE l.role_class END AS role_class,
       CASE WHEN l.session_user_name IS NULL THEN f.client_addr::inet ELSE l.client_addr END AS client_addr,
       CASE WHEN l.session_user_name IS NULL THEN f.client_port ELSE l.client_port END AS client_port,
       CASE WHEN l.session_user_name IS NULL THEN f.application_name ELSE l.application_name END AS application_name,
       CASE WHEN l.session_user_name IS NULL THEN f.backend_pid ELSE l.backend_pid END AS backend_pid,
       CASE WHEN l.session_user_name IS NULL THEN f.statement ELSE l.statement END AS statement,
       l.row_hash
  FROM platform.audit_log l
  LEFT JOIN LATERAL (
      SELECT c.* FROM platform.audit_statement_context(l.cluster_id, l.event_time, l.xid::text, l.statement_seq) c
       WHERE l.session_user_name IS NULL) f ON true;
COMMENT ON VIEW platform.audit_trail IS 'platform.audit_log with who ran each statement and from where on every row (the log stores them on the statement''s first row).';
GRANT SELECT ON platform.audit_trail TO platform_admin, platform_auditor;
REVOKE EXECUTE ON FUNCTION platform.audit_statement_context(bigint, timestamptz, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.audit_statement_context(bigint, timestamptz, text, integer) TO platform_admin, platform_auditor;

-- A card's profile is rewritten at every payment: room left on each page keeps the new
-- version on the old one's page (a HOT update, no index entry, no page added). A profile
-- (at most 6 kB) stays in its row, uncompressed: above the default 2 kB target each read
-- fetched it from the TOAST table and each payment rewrote it there. Profiles stored out of
-- line before come back into their rows at their next payment.
ALTER TABLE platform.fraud_profile SET (fillfactor = 50, toast_tuple_target = 8160);

-- The lake sink: its tables, views and functions; the fraud review trigger and batch scoring.

CREATE TABLE platform.lake_sink (
    name           text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,39}$'),
    lake_url       text NOT NULL,
    slot_name      name NOT NULL UNIQUE,
    tables         text,
    background     boolean NOT NULL DEFAULT true,
    start_lsn      pg_lsn NOT NULL,
    last_end_lsn   pg_lsn NOT NULL,
    last_batch_at  timestamptz,
    batches        bigint NOT NULL DEFAULT 0,
    rows_landed    bigint NOT NULL DEFAULT 0,
    files_landed   bigint NOT NULL DEFAULT 0,
    bytes_landed   bigint NOT NULL DEFAULT 0,
    last_error     text,
    last_error_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE platform.lake_sink IS 'pg_platform lake sinks: where each lands its files, which tables, and how far it got.';
CREATE TABLE platform.lake_batch (
    sink        text NOT NULL REFERENCES platform.lake_sink (name) ON DELETE CASCADE,
    start_lsn   pg_lsn NOT NULL,
    end_lsn     pg_lsn NOT NULL,
    files       integer NOT NULL,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    landed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, start_lsn)
);
COMMENT ON TABLE platform.lake_batch IS 'pg_platform lake batches with data, one per manifest under <lake>/_pg_platform/<sink>/commits/.';
CREATE TABLE platform.lake_backfill (
    sink        text NOT NULL REFERENCES platform.lake_sink (name) ON DELETE CASCADE,
    table_name  text NOT NULL,
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    last_key    text[],
    rows        bigint NOT NULL DEFAULT 0,
    chunks      integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (sink, table_name)
);
COMMENT ON TABLE platform.lake_backfill IS 'pg_platform lake backfills: the snapshot of a table''s existing rows, landed in primary key order, a chunk per batch.';
CREATE TABLE platform.lake_file (
    sink        text NOT NULL,
    path        text NOT NULL,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    commit_day  date NOT NULL,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    start_lsn   pg_lsn NOT NULL,
    end_lsn     pg_lsn NOT NULL,
    min_lsn     pg_lsn NOT NULL,
    max_lsn     pg_lsn NOT NULL,
    landed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, path),
    FOREIGN KEY (sink, start_lsn) REFERENCES platform.lake_batch (sink, start_lsn) ON DELETE CASCADE
);
COMMENT ON TABLE platform.lake_file IS 'pg_platform lake files (paths relative to the lake root).';
CREATE TABLE platform.lake_archive (
    sink           text NOT NULL REFERENCES platform.lake_sink (name) ON DELETE CASCADE,
    partition_name text NOT NULL,
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    lsn            pg_lsn NOT NULL,
    files          integer NOT NULL,
    rows           bigint NOT NULL,
    bytes          bigint NOT NULL,
    first_day      date,
    last_day       date,
    archived_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, partition_name)
);
COMMENT ON TABLE platform.lake_archive IS 'pg_platform partitions archived to a lake by partition retention (manifest <lake>/_pg_platform/<sink>/commits/archive_<partition>.json) before they were dropped or detached.';
SELECT pg_catalog.pg_extension_config_dump('platform.lake_archive', '');
SELECT pg_catalog.pg_extension_config_dump('platform.lake_sink', '');
SELECT pg_catalog.pg_extension_config_dump('platform.lake_batch', '');
SELECT pg_catalog.pg_extension_config_dump('platform.lake_file', '');
SELECT pg_catalog.pg_extension_config_dump('platform.lake_backfill', '');
GRANT SELECT ON platform.lake_sink, platform.lake_batch, platform.lake_file, platform.lake_backfill, platform.lake_archive
    TO platform_admin, platform_developer, platform_readonly;
GRANT INSERT, UPDATE, DELETE ON platform.lake_sink, platform.lake_batch, platform.lake_file, platform.lake_backfill
    TO platform_admin;

CREATE VIEW platform.lake_status AS
SELECT s.name AS sink, s.lake_url, s.slot_name, s.tables, s.background,
       r.confirmed_flush_lsn,
       CASE WHEN r.slot_name IS NULL THEN 'missing' ELSE coalesce(r.wal_status, 'unknown') END AS wal_status,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_flush_lsn(), coalesce(r.confirmed_flush_lsn, s.last_end_lsn))::bigint AS lag_bytes,
       CASE WHEN pg_catalog.pg_current_wal_flush_lsn() > coalesce(r.confirmed_flush_lsn, s.last_end_lsn)
            THEN extract(epoch FROM now() - coalesce(s.last_batch_at, s.created_at))::float8 ELSE 0 END AS lag_seconds,
       s.last_batch_at, s.batches, s.rows_landed, s.files_landed, s.bytes_landed,
       CASE WHEN r.slot_name IS NULL THEN 'replication slot is missing: recreate the sink and backfill'
            WHEN r.wal_status = 'lost' THEN 'replication slot is invalidated: recreate the sink and backfill'
            ELSE s.last_error END AS last_error,
       s.last_error_at
  FROM platform.lake_sink s
  LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name;
COMMENT ON VIEW platform.lake_status IS 'Per lake sink: its slot, how far behind it is (bytes of WAL, seconds since the last batch while behind), what it landed and its last error.';

CREATE VIEW platform.lake_files AS
SELECT sink, schema_name, table_name, sum(files)::bigint AS files, sum(rows)::bigint AS rows,
       sum(bytes)::bigint AS bytes, min(first_day) AS first_day, max(last_day) AS last_day,
       max(landed_at) AS last_landed_at, count(*) FILTER (WHERE archived)::bigint AS archived_partitions
  FROM (SELECT sink, schema_name, table_name, count(*) AS files, sum(rows) AS rows, sum(bytes) AS bytes,
               min(commit_day) AS first_day, max(commit_day) AS last_day, max(landed_at) AS landed_at,
               false AS archived
          FROM platform.lake_file GROUP BY sink, schema_name, table_name
        UNION ALL
        SELECT sink, schema_name, table_name, files, rows, bytes, first_day, last_day, archived_at, true
          FROM platform.lake_archive) f
 GROUP BY sink, schema_name, table_name;
COMMENT ON VIEW platform.lake_files IS 'Per lake sink and table: files and rows landed, those of archived partitions included (archived_partitions).';
CREATE VIEW platform.lake_backfills AS
SELECT b.sink, b.table_name, b.state, b.rows, b.chunks, b.last_key,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       CASE WHEN b.state = 'done' THEN 100
            WHEN coalesce(c.reltuples, 0) <= 0 THEN NULL
            ELSE least(99.9, round((100.0 * b.rows / c.reltuples)::numeric, 1)) END AS percent,
       b.started_at, b.finished_at
  FROM platform.lake_backfill b
  LEFT JOIN pg_catalog.pg_class c ON c.oid = to_regclass(b.table_name);
COMMENT ON VIEW platform.lake_backfills IS 'Per lake sink and table: how far the backfill of existing rows got.';
GRANT SELECT ON platform.lake_status, platform.lake_files, platform.lake_backfills TO platform_admin, platform_developer, platform_readonly;

-- pg_platform::lake::create_lake_sink
CREATE  FUNCTION "create_lake_sink"(
	"name" TEXT, /* & str */
	"lake_url" TEXT, /* & str */
	"tables" TEXT DEFAULT NULL, /* Option < & str > */
	"background" bool DEFAULT true, /* bool */
	"backfill" bool DEFAULT true /* bool */
) RETURNS TABLE (
	"sink" TEXT,  /* String */
	"slot_name" TEXT,  /* String */
	"lsn" TEXT  /* String */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_lake_sink_wrapper';

-- pg_platform::lake::drop_lake_sink
CREATE  FUNCTION "drop_lake_sink"(
	"name" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_lake_sink_wrapper';

-- pg_platform::fraud::scoring::fraud_score_batch
CREATE  FUNCTION "fraud_score_batch"(
	"source" TEXT /* & str */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"score" double precision,  /* f64 */
	"risk_level" TEXT,  /* String */
	"reasons" TEXT[],  /* Vec < String > */
	"model" TEXT,  /* String */
	"model_version" INT,  /* Option < i32 > */
	"verdict" TEXT,  /* String */
	"rules" TEXT[]  /* Vec < String > */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_score_batch_wrapper';

-- pg_platform::payments::generator::generate_customer_rows
CREATE  FUNCTION "generate_customer_rows"(
	"count" bigint, /* i64 */
	"seed" bigint, /* i64 */
	"locations" bigint, /* i64 */
	"start_at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"external_id" uuid,  /* pgrx :: Uuid */
	"full_name" TEXT,  /* String */
	"email" TEXT,  /* String */
	"phone" TEXT,  /* Option < String > */
	"date_of_birth" date,  /* Option < Date > */
	"home_location_id" bigint,  /* i64 */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"segment" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_customer_rows_wrapper';

-- pg_platform::payments::generate_payments
CREATE  FUNCTION "generate_payments"(
	"schema_name" TEXT, /* & str */
	"customers" INT DEFAULT 1000, /* i32 */
	"merchants" INT DEFAULT 100, /* i32 */
	"transactions" bigint DEFAULT 10000, /* i64 */
	"seed" bigint DEFAULT 42, /* i64 */
	"start_at" timestamp with time zone DEFAULT '2026-01-01 00:00:00+00', /* TimestampWithTimeZone */
	"days" INT DEFAULT 90, /* i32 */
	"fraud_rate" double precision DEFAULT 0.005 /* f64 */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"rows_inserted" bigint,  /* i64 */
	"seconds" double precision  /* f64 */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_payments_wrapper';

-- pg_platform::payments::generator::generate_transaction_rows
CREATE  FUNCTION "generate_transaction_rows"(
	"first_id" bigint, /* i64 */
	"count" bigint, /* i64 */
	"total" bigint, /* i64 */
	"seed" bigint, /* i64 */
	"customers" bigint, /* i64 */
	"merchants" bigint, /* i64 */
	"start_at" timestamp with time zone, /* TimestampWithTimeZone */
	"days" INT, /* i32 */
	"fraud_rate" double precision DEFAULT 0.005 /* f64 */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"occurred_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"customer_id" bigint,  /* i64 */
	"merchant_id" bigint,  /* i64 */
	"payment_method_id" bigint,  /* i64 */
	"device_id" bigint,  /* Option < i64 > */
	"location_id" bigint,  /* i64 */
	"ip_address" TEXT,  /* String */
	"amount" TEXT,  /* String */
	"currency" TEXT,  /* String */
	"status_id" smallint,  /* i16 */
	"tax_amount" TEXT,  /* String */
	"fraud_label" TEXT  /* Option < String > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_transaction_rows_wrapper';

-- pg_platform::lake::lake_backfill
CREATE  FUNCTION "lake_backfill"(
	"sink" TEXT, /* & str */
	"table" regclass /* crate :: sql :: RegClass */
) RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_backfill_wrapper';

-- pg_platform::lake::lake_compact
CREATE  FUNCTION "lake_compact"(
	"sink" TEXT, /* & str */
	"table" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"path" TEXT,  /* String */
	"rows" bigint,  /* i64 */
	"merged_files" INT  /* i32 */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_compact_wrapper';

-- pg_platform::lake::lake_merge
CREATE  FUNCTION "lake_merge"(
	"sink" TEXT, /* & str */
	"before" date DEFAULT NULL, /* Option < pgrx :: datum :: Date > */
	"recent" bool DEFAULT false /* bool */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"path" TEXT,  /* String */
	"merged_files" INT,  /* i32 */
	"rows" bigint  /* i64 */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_merge_wrapper';

-- pg_platform::lake::lake_read_sql
CREATE  FUNCTION "lake_read_sql"(
	"sink" TEXT, /* & str */
	"table" TEXT, /* & str */
	"zone" TEXT DEFAULT 'bronze' /* & str */
) RETURNS TEXT /* String */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_read_sql_wrapper';

-- pg_platform::lake::lake_star_schema_sql
CREATE  FUNCTION "lake_star_schema_sql"(
	"sink" TEXT, /* & str */
	"schema" TEXT DEFAULT 'payments' /* & str */
) RETURNS TEXT /* String */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_star_schema_sql_wrapper';

-- pg_platform::lake::lake_sync
CREATE  FUNCTION "lake_sync"(
	"sink" TEXT /* & str */
) RETURNS TABLE (
	"start_lsn" TEXT,  /* String */
	"end_lsn" TEXT,  /* String */
	"files" INT,  /* i32 */
	"rows" bigint,  /* i64 */
	"bytes" bigint,  /* i64 */
	"recovered" bool  /* bool */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lake_sync_wrapper';

-- pg_platform::fraud::policy::fraud_review_trigger
CREATE FUNCTION "fraud_review_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'fraud_review_trigger_wrapper';

REVOKE EXECUTE ON FUNCTION platform.generate_payments(text, integer, integer, bigint, bigint, timestamptz, integer, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.generate_payments(text, integer, integer, bigint, bigint, timestamptz, integer, float8)
    TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.generate_location_rows(bigint, bigint),
                          platform.generate_customer_rows(bigint, bigint, bigint, timestamptz),
                          platform.generate_billing_address_rows(bigint, bigint, bigint),
                          platform.generate_merchant_rows(bigint, bigint, timestamptz),
                          platform.generate_payment_method_rows(bigint, bigint, timestamptz),
                          platform.generate_device_rows(bigint, bigint, timestamptz),
                          platform.generate_transaction_rows(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz, integer, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.generate_location_rows(bigint, bigint),
                          platform.generate_customer_rows(bigint, bigint, bigint, timestamptz),
                          platform.generate_billing_address_rows(bigint, bigint, bigint),
                          platform.generate_merchant_rows(bigint, bigint, timestamptz),
                          platform.generate_payment_method_rows(bigint, bigint, timestamptz),
                          platform.generate_device_rows(bigint, bigint, timestamptz),
                          platform.generate_transaction_rows(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz, integer, float8)
    TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.fraud_score(text, numeric, timestamptz, text, text, float8, float8, jsonb),
                          platform.fraud_score_batch(text),
                          platform.fraud_import_model(text, text, text, text[], float8, float8),
                          platform.fraud_train(text, text, text, text, jsonb),
                          platform.fraud_evaluate(text, integer, text, text),
                          platform.fraud_backtest(text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_score(text, numeric, timestamptz, text, text, float8, float8, jsonb),
                          platform.fraud_score_batch(text),
                          platform.fraud_import_model(text, text, text, text[], float8, float8),
                          platform.fraud_train(text, text, text, text, jsonb),
                          platform.fraud_evaluate(text, integer, text, text),
                          platform.fraud_backtest(text, integer, text)
    TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.fraud_set_rule(text, text, text, integer, boolean), platform.fraud_drop_rule(text),
                          platform.score_payments(regclass, jsonb), platform.unscore_payments(regclass),
                          platform.fraud_score_trigger(), platform.fraud_review_trigger() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_set_rule(text, text, text, integer, boolean), platform.fraud_drop_rule(text),
                          platform.score_payments(regclass, jsonb), platform.unscore_payments(regclass),
                          platform.fraud_score_trigger(), platform.fraud_review_trigger()
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.create_lake_sink(text, text, text, boolean, boolean), platform.drop_lake_sink(text),
                          platform.lake_sync(text), platform.lake_backfill(text, regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.create_lake_sink(text, text, text, boolean, boolean), platform.drop_lake_sink(text),
                          platform.lake_sync(text), platform.lake_backfill(text, regclass)
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.lake_compact(text, text), platform.lake_merge(text, date, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.lake_compact(text, text), platform.lake_merge(text, date, boolean) TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.lake_read_sql(text, text, text), platform.lake_star_schema_sql(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.lake_read_sql(text, text, text), platform.lake_star_schema_sql(text, text) TO platform_admin, platform_developer, platform_readonly;

-- audited_tables showed a non-ASCII excluded column as octal escapes.
CREATE OR REPLACE VIEW platform.audited_tables AS
SELECT t.tgrelid::regclass AS table_name,
       a[1] = 'true' AS include_statement,
       a[2:] AS exclude_columns,
       (SELECT count(*) = 4 AND bool_and(x.tgenabled = 'A') FROM pg_catalog.pg_trigger x
         WHERE x.tgrelid = t.tgrelid AND x.tgname LIKE 'platform\_audit\_%') AS fully_enabled
  FROM pg_catalog.pg_trigger t,
       -- Each argument ends with a NUL byte and is text in the database's encoding
       -- (encode(..., 'escape') would show a non-ASCII name as octal escapes).
       LATERAL (SELECT coalesce(array_agg(convert_from(substring(t.tgargs FROM p.lo FOR p.hi - p.lo),
                                                       pg_catalog.current_setting('server_encoding')) ORDER BY p.lo), '{}') AS a
                  FROM (SELECT lag(i, 1, -1) OVER (ORDER BY i) + 2 AS lo, i + 1 AS hi
                          FROM generate_series(0, length(t.tgargs) - 1) i
                         WHERE get_byte(t.tgargs, i) = 0) p) args
 WHERE t.tgname = 'platform_audit_insert';
