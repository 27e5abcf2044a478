-- pg_platform 0.3.0 -> 0.4.0

-- The audit log becomes a table partitioned by month of event_time, managed by the
-- partition capability. The 0.3.0 table is kept as it is, as the log's first partition
-- (everything before the start of next month, UTC): no row is copied or rewritten, so its
-- blocks still verify. It leaves the extension's members, like every partition of the log,
-- so that pg_dump dumps it with its rows and a restore recreates it.
-- Log ids are handed out 1000 at a time per backend: the sequence is no hot spot shared by
-- every audited writer.
ALTER SEQUENCE platform.audit_log_id_seq CACHE 1000;
DROP TRIGGER refuse_change ON platform.audit_log;
DROP TRIGGER refuse_truncate ON platform.audit_log;
ALTER TABLE platform.audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE platform.audit_log RENAME TO audit_log_before_0_4;
ALTER EXTENSION pg_platform DROP TABLE platform.audit_log_before_0_4;
CREATE TABLE platform.audit_log (
    id                bigint NOT NULL DEFAULT nextval('platform.audit_log_id_seq'),
    cluster_id        bigint NOT NULL,
    event_time        timestamptz NOT NULL,
    xid               xid8 NOT NULL,
    statement_seq     integer NOT NULL,
    row_seq           integer NOT NULL,
    operation         text NOT NULL,
    table_oid         oid,
    table_name        text NOT NULL,
    primary_key       json,
    old_values        json,
    new_values        json,
    session_user_name text NOT NULL,
    current_user_name text NOT NULL,
    role_class        text NOT NULL,
    client_addr       inet,
    client_port       integer,
    application_name  text,
    backend_pid       integer NOT NULL,
    statement         text,
    row_hash          bytea NOT NULL,
    PRIMARY KEY (cluster_id, xid, statement_seq, row_seq, event_time)
) PARTITION BY RANGE (event_time);
COMMENT ON TABLE platform.audit_log IS 'pg_platform audit log: one row per audited row change, DDL command or TRUNCATE; append-only, hash-chained by platform.audit_block; monthly partitions (UTC) managed by platform.run_maintenance.';
SELECT pg_catalog.pg_extension_config_dump('platform.audit_log', '');
GRANT SELECT ON platform.audit_log TO platform_admin, platform_auditor;
CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON platform.audit_log
    FOR EACH ROW EXECUTE FUNCTION platform.refuse_audit_change();
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON platform.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION platform.refuse_audit_change();
ALTER TABLE platform.audit_log ENABLE ALWAYS TRIGGER refuse_change, ENABLE ALWAYS TRIGGER refuse_truncate;
DO $$
BEGIN
    EXECUTE format('ALTER TABLE platform.audit_log ATTACH PARTITION platform.audit_log_before_0_4 FOR VALUES FROM (MINVALUE) TO (%L)',
                   (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC');
END
$$;

ALTER TABLE platform.audit_block ADD COLUMN time_lo timestamptz, ADD COLUMN time_hi timestamptz;
COMMENT ON TABLE platform.audit_block IS 'Hash chain over platform.audit_log: each block seals the rows of transactions with ids in [xid_lo, xid_hi) whose event_time is in the log partition [time_lo, time_hi) (NULL: unbounded; both NULL: blocks sealed before the log was partitioned).';

-- New functions and objects: fraud scoring, the pending rows' guard.
CREATE TABLE platform.fraud_model (
    name               text NOT NULL,
    version            integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('xgboost', 'lightgbm', 'logistic', 'gbdt')),
    features           text[] NOT NULL,
    model              text NOT NULL,
    threshold_elevated float8 NOT NULL,
    threshold_highest  float8 NOT NULL,
    training           jsonb,
    metrics            jsonb,
    reference          jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL DEFAULT session_user,
    retired_at         timestamptz,
    retired_by         text,
    PRIMARY KEY (name, version),
    CHECK (0 <= threshold_elevated AND threshold_elevated <= threshold_highest AND threshold_highest <= 1)
);
COMMENT ON TABLE platform.fraud_model IS 'pg_platform fraud model registry: every version of every model (stored form in model), with its thresholds, training and metrics.';
CREATE TABLE platform.fraud_alias (
    name    text NOT NULL,
    alias   text NOT NULL CHECK (alias IN ('champion', 'challenger', 'shadow')),
    version integer NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL DEFAULT session_user,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES platform.fraud_model (name, version)
);
COMMENT ON TABLE platform.fraud_alias IS 'Which version of a fraud model is its champion, challenger or shadow (platform.fraud_deploy).';
CREATE SEQUENCE platform.fraud_alias_history_id_seq AS bigint;
CREATE TABLE platform.fraud_alias_history (
    id      bigint NOT NULL DEFAULT nextval('platform.fraud_alias_history_id_seq') PRIMARY KEY,
    name    text NOT NULL,
    alias   text NOT NULL,
    version integer,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.fraud_alias_history IS 'Every change of a fraud model alias (version NULL: alias removed).';
CREATE TABLE platform.fraud_label (
    payment_ref text PRIMARY KEY,
    label       text NOT NULL CHECK (label IN ('fraud', 'chargeback', 'legitimate')),
    reported_at timestamptz NOT NULL DEFAULT now(),
    reported_by text NOT NULL DEFAULT session_user,
    note        text
);
COMMENT ON TABLE platform.fraud_label IS 'Confirmed fraud, chargebacks and cleared payments, by the application''s payment reference: what evaluation and retraining queries join.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_model', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias_history', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias_history_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_label', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON platform.fraud_label TO platform_admin, platform_developer;
GRANT SELECT ON platform.fraud_label TO platform_auditor, platform_readonly;
GRANT SELECT ON platform.fraud_alias, platform.fraud_alias_history TO platform_admin, platform_developer, platform_auditor, platform_readonly;

CREATE VIEW platform.fraud_models AS
SELECT m.name, m.version, m.kind, m.features, m.threshold_elevated, m.threshold_highest,
       m.metrics, m.training, m.created_at, m.created_by, m.retired_at,
       coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM platform.fraud_alias a
                  WHERE a.name = m.name AND a.version = m.version), '{}') AS aliases
  FROM platform.fraud_model m;
COMMENT ON VIEW platform.fraud_models IS 'Fraud model versions with their aliases and metrics (without the model text).';
GRANT SELECT ON platform.fraud_models TO platform_admin, platform_developer, platform_auditor, platform_readonly;

CREATE TABLE platform.fraud_shadow_log (
    scored_at        timestamptz NOT NULL DEFAULT now(),
    model            text NOT NULL,
    champion_version integer,
    champion_score   float8 NOT NULL,
    shadow_version   integer NOT NULL,
    shadow_score     float8 NOT NULL,
    card_key         bytea NOT NULL
);
COMMENT ON TABLE platform.fraud_shadow_log IS 'Every payment scored while a model has a shadow version: the champion''s score (which decided) beside the shadow''s. Card keys as in platform.fraud_profile.';
CREATE INDEX ON platform.fraud_shadow_log (model, scored_at);
GRANT SELECT ON platform.fraud_shadow_log TO platform_admin, platform_developer, platform_auditor;

CREATE TABLE platform.fraud_rules (
    name       text PRIMARY KEY CHECK (name <> ''),
    action     text NOT NULL CHECK (action IN ('allow', 'review', 'block')),
    condition  text NOT NULL,
    priority   integer NOT NULL DEFAULT 100,
    enabled    boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.fraud_rules IS 'The fraud team''s rules (platform.fraud_set_rule): allow, review or block when the condition holds.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_rules', '');
GRANT SELECT ON platform.fraud_rules TO platform_admin, platform_developer, platform_auditor, platform_readonly;

CREATE TYPE platform.fraud_result AS (
    score         float8,
    risk_level    text,
    reasons       text[],
    model         text,
    model_version integer,
    verdict       text,
    rules         text[]
);
COMMENT ON TYPE platform.fraud_result IS 'What platform.fraud_score returns: score 0..1, risk level, reasons in words, the model and version that scored, the verdict (allow, review, block) and the rules that fired.';
CREATE TABLE platform.fraud_profile (
    card_key   bytea PRIMARY KEY,
    state      bytea NOT NULL,
    payments   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE platform.fraud_profile IS 'Per-card behavioural profiles of fraud scoring, keyed by a salted SHA-256 of the card (never the card itself). Readable by the extension owner only.';
CREATE TABLE platform.fraud_secret (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    salt bytea NOT NULL
);
COMMENT ON TABLE platform.fraud_secret IS 'The salt of card keys in platform.fraud_profile, made on first use. Readable by the extension owner only.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_profile', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_secret', '');

-- pg_platform::fraud::learn::fraud_backtest
CREATE  FUNCTION "fraud_backtest"(
	"name" TEXT, /* & str */
	"version" INT, /* Option < i32 > */
	"source" TEXT /* & str */
) RETURNS TABLE (
	"card" TEXT,  /* String */
	"occurred_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"amount" double precision,  /* f64 */
	"score" double precision,  /* f64 */
	"risk_level" TEXT,  /* String */
	"reasons" TEXT[]  /* Vec < String > */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_backtest_wrapper';

-- pg_platform::fraud::registry::fraud_deploy
CREATE  FUNCTION "fraud_deploy"(
	"name" TEXT, /* & str */
	"version" INT, /* i32 */
	"alias" TEXT DEFAULT 'champion' /* & str */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_deploy_wrapper';

-- pg_platform::fraud::monitor::fraud_drift
CREATE  FUNCTION "fraud_drift"(
	"name" TEXT, /* & str */
	"version" INT, /* Option < i32 > */
	"source" TEXT /* & str */
) RETURNS TABLE (
	"feature" TEXT,  /* String */
	"psi" double precision,  /* f64 */
	"payments" bigint,  /* i64 */
	"status" TEXT  /* String */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_drift_wrapper';

-- pg_platform::fraud::policy::fraud_drop_rule
CREATE  FUNCTION "fraud_drop_rule"(
	"name" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_drop_rule_wrapper';

-- pg_platform::fraud::learn::fraud_evaluate
CREATE  FUNCTION "fraud_evaluate"(
	"name" TEXT, /* & str */
	"version" INT, /* Option < i32 > */
	"source" TEXT, /* & str */
	"label" TEXT /* & str */
) RETURNS TABLE (
	"payments" bigint,  /* i64 */
	"frauds" bigint,  /* i64 */
	"auc_pr" double precision,  /* f64 */
	"auc_roc" double precision,  /* f64 */
	"recall_at_0_1pct_fpr" double precision,  /* f64 */
	"recall_at_1pct_fpr" double precision,  /* f64 */
	"precision_at_80pct_recall" double precision  /* f64 */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_evaluate_wrapper';

-- pg_platform::fraud::learn::fraud_features
CREATE  FUNCTION "fraud_features"(
	"source" TEXT, /* & str */
	"label" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"card" TEXT,  /* String */
	"occurred_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"names" TEXT[],  /* Vec < String > */
	"features" double precision[],  /* Vec < f64 > */
	"label" bool  /* Option < bool > */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_features_wrapper';

-- pg_platform::fraud::registry::fraud_import_model
CREATE  FUNCTION "fraud_import_model"(
	"name" TEXT, /* & str */
	"format" TEXT, /* & str */
	"model" TEXT, /* & str */
	"features" TEXT[], /* Vec < String > */
	"threshold_elevated" double precision DEFAULT 0.5, /* f64 */
	"threshold_highest" double precision DEFAULT 0.9 /* f64 */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_import_model_wrapper';

-- pg_platform::fraud::scoring::fraud_rebuild_profiles
CREATE  FUNCTION "fraud_rebuild_profiles"(
	"source" TEXT /* & str */
) RETURNS bigint /* i64 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_rebuild_profiles_wrapper';

-- pg_platform::fraud::stats::fraud_reset_stats
CREATE  FUNCTION "fraud_reset_stats"() RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_reset_stats_wrapper';

-- pg_platform::fraud::registry::fraud_retire
CREATE  FUNCTION "fraud_retire"(
	"name" TEXT, /* & str */
	"version" INT /* i32 */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_retire_wrapper';

-- pg_platform::fraud::registry::fraud_rollback
CREATE  FUNCTION "fraud_rollback"(
	"name" TEXT, /* & str */
	"alias" TEXT DEFAULT 'champion' /* & str */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_rollback_wrapper';

-- pg_platform::fraud::scoring::fraud_score
-- requires:
--   fraud_result_type
CREATE  FUNCTION "fraud_score"(
	"card" TEXT, /* Option < & str > */
	"amount" NUMERIC, /* Option < AnyNumeric > */
	"occurred_at" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"merchant" TEXT DEFAULT NULL, /* Option < & str > */
	"category" TEXT DEFAULT NULL, /* Option < & str > */
	"lat" double precision DEFAULT NULL, /* Option < f64 > */
	"lon" double precision DEFAULT NULL, /* Option < f64 > */
	"attrs" jsonb DEFAULT '{}' /* Option < pgrx :: JsonB > */
) RETURNS platform.fraud_result /* :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox :: AllocatedByRust
> */
VOLATILE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_score_wrapper';

-- pg_platform::fraud::policy::fraud_set_rule
CREATE  FUNCTION "fraud_set_rule"(
	"name" TEXT, /* & str */
	"action" TEXT, /* & str */
	"condition" TEXT, /* & str */
	"priority" INT DEFAULT 100, /* i32 */
	"enabled" bool DEFAULT true /* bool */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_set_rule_wrapper';

-- pg_platform::fraud::stats::fraud_stats
CREATE  FUNCTION "fraud_stats"() RETURNS TABLE (
	"model" TEXT,  /* String */
	"version" INT,  /* Option < i32 > */
	"calls" bigint,  /* i64 */
	"mean_us" double precision,  /* f64 */
	"p50_us_at_most" bigint,  /* i64 */
	"p99_us_at_most" bigint,  /* i64 */
	"normal" double precision,  /* f64 */
	"elevated" double precision,  /* f64 */
	"highest" double precision,  /* f64 */
	"allowed" double precision,  /* f64 */
	"reviewed" double precision,  /* f64 */
	"blocked" double precision  /* f64 */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_stats_wrapper';

-- pg_platform::fraud::learn::fraud_train
CREATE  FUNCTION "fraud_train"(
	"name" TEXT, /* & str */
	"source" TEXT, /* & str */
	"label" TEXT, /* & str */
	"kind" TEXT DEFAULT 'gbdt', /* & str */
	"options" jsonb DEFAULT '{}' /* pgrx :: JsonB */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_train_wrapper';

-- pg_platform::fraud::registry::fraud_undeploy
CREATE  FUNCTION "fraud_undeploy"(
	"name" TEXT, /* & str */
	"alias" TEXT DEFAULT 'champion' /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fraud_undeploy_wrapper';

-- pg_platform::fraud::policy::score_payments
CREATE  FUNCTION "score_payments"(
	"tbl" regclass, /* crate :: sql :: RegClass */
	"mapping" jsonb /* pgrx :: JsonB */
) RETURNS regclass /* crate :: sql :: RegClass */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'score_payments_wrapper';

-- pg_platform::fraud::policy::unscore_payments
CREATE  FUNCTION "unscore_payments"(
	"tbl" regclass /* crate :: sql :: RegClass */
) RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unscore_payments_wrapper';

-- pg_platform::fraud::policy::fraud_score_trigger
CREATE FUNCTION "fraud_score_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'fraud_score_trigger_wrapper';

-- pg_platform::audit::refuse_pending_change
CREATE FUNCTION "refuse_pending_change"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'refuse_pending_change_wrapper';

REVOKE EXECUTE ON FUNCTION platform.fraud_score(text, numeric, timestamptz, text, text, float8, float8, jsonb),
                          platform.fraud_import_model(text, text, text, text[], float8, float8),
                          platform.fraud_train(text, text, text, text, jsonb),
                          platform.fraud_evaluate(text, integer, text, text),
                          platform.fraud_backtest(text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_score(text, numeric, timestamptz, text, text, float8, float8, jsonb),
                          platform.fraud_import_model(text, text, text, text[], float8, float8),
                          platform.fraud_train(text, text, text, text, jsonb),
                          platform.fraud_evaluate(text, integer, text, text),
                          platform.fraud_backtest(text, integer, text)
    TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.fraud_deploy(text, integer, text), platform.fraud_rollback(text, text),
                          platform.fraud_undeploy(text, text), platform.fraud_retire(text, integer),
                          platform.fraud_rebuild_profiles(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_deploy(text, integer, text), platform.fraud_rollback(text, text),
                          platform.fraud_undeploy(text, text), platform.fraud_retire(text, integer),
                          platform.fraud_rebuild_profiles(text)
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.fraud_features(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_features(text, text) TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.fraud_set_rule(text, text, text, integer, boolean), platform.fraud_drop_rule(text),
                          platform.score_payments(regclass, jsonb), platform.unscore_payments(regclass),
                          platform.fraud_score_trigger() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_set_rule(text, text, text, integer, boolean), platform.fraud_drop_rule(text),
                          platform.score_payments(regclass, jsonb), platform.unscore_payments(regclass),
                          platform.fraud_score_trigger()
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.fraud_drift(text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_drift(text, integer, text) TO platform_admin, platform_developer, platform_auditor;

REVOKE EXECUTE ON FUNCTION platform.fraud_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_stats() TO platform_admin, platform_developer, platform_auditor;

REVOKE EXECUTE ON FUNCTION platform.fraud_reset_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_reset_stats() TO platform_admin;

-- The pending rows of the audit log (DDL recorded while the log had no partition for it).
CREATE TABLE platform.audit_log_pending (
    LIKE platform.audit_log INCLUDING DEFAULTS,
    PRIMARY KEY (cluster_id, xid, statement_seq, row_seq)
);
COMMENT ON TABLE platform.audit_log_pending IS 'Audit rows waiting for a partition of platform.audit_log (DDL recorded before the log had one, as during a restore); the sealer moves them into the log, unchanged, and seals nothing past them.';
SELECT pg_catalog.pg_extension_config_dump('platform.audit_log_pending', '');
GRANT SELECT ON platform.audit_log_pending TO platform_admin, platform_auditor;
CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON platform.audit_log_pending
    FOR EACH ROW EXECUTE FUNCTION platform.refuse_pending_change();
ALTER TABLE platform.audit_log_pending ENABLE ALWAYS TRIGGER refuse_change;
REVOKE EXECUTE ON FUNCTION platform.refuse_pending_change() FROM PUBLIC;
