-- pg_platform 0.2.0 -> 0.3.0: transparent column protection (protect_column, its views and
-- triggers, blind-index lookups), read counting (platform.pii_access), master key rotation (rewrap_keys) and the audit log.
-- Drafted by scripts/upgrade_script.py from the generated install scripts and reviewed;
-- tests/e2e/upgrade.sh checks that an upgraded database equals a fresh 0.3.0 install.
\echo Use "ALTER EXTENSION pg_platform UPDATE TO '0.3.0'" to load this file. \quit

-- platform.reencrypt learns each row's context of a protected column (context => NULL).
CREATE OR REPLACE PROCEDURE platform.reencrypt(tbl regclass, col name, context text, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $proc$
DECLARE
    n bigint;
    total bigint := 0;
    row_context text := '$1';
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: must be at least 1', batch_size USING ERRCODE = '22023';
    END IF;
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = tbl) = 'p' THEN
        RAISE EXCEPTION 'platform.reencrypt works on one table at a time; % is partitioned', tbl
            USING ERRCODE = '0A000', HINT = 'Call it for each partition.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attname = col AND attnum > 0
                      AND NOT attisdropped AND atttypid IN ('pg_catalog.bytea'::pg_catalog.regtype,
                                                           pg_catalog.to_regtype('platform.ciphertext'))) THEN
        RAISE EXCEPTION 'table % has no bytea column "%"', tbl, col USING ERRCODE = '42703';
    END IF;
    IF context IS NULL THEN
        -- A column protected by platform.protect_column: each row has its own context.
        row_context := platform.protected_row_context(tbl, col);
        IF row_context IS NULL THEN
            RAISE EXCEPTION 'context is needed: %.% is not a column protected by platform.protect_column', tbl, col
                USING ERRCODE = '22004';
        END IF;
    END IF;
    LOOP
        EXECUTE pg_catalog.format('UPDATE %s AS t SET %I = platform.reencrypt_value(t.%I, %s)
                         WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %I IS NOT NULL
                                                      AND NOT platform.is_current_version(%I)
                                                    LIMIT $2 FOR UPDATE SKIP LOCKED))',
                       tbl, col, col, row_context, tbl, col, col)
            USING context, batch_size;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
    RAISE NOTICE 'platform.reencrypt: % values of %.% moved to the current key version', total, tbl, col;
END
$proc$;

-- pg_platform::audit::audit_table
CREATE  FUNCTION "audit_table"(
	"tbl" regclass, /* RegClass */
	"exclude_columns" TEXT[] DEFAULT ARRAY[]::text[], /* Vec < String > */
	"include_statement" bool DEFAULT false /* bool */
) RETURNS regclass /* RegClass */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'audit_table_wrapper';

-- pg_platform::pii::access::pii_access_counts
CREATE  FUNCTION "pii_access_counts"() RETURNS TABLE (
	"database" oid,  /* pg_sys :: Oid */
	"role" oid,  /* pg_sys :: Oid */
	"column_id" INT,  /* i32 */
	"statements" bigint,  /* i64 */
	"plaintext_values" bigint,  /* i64 */
	"masked_values" bigint,  /* i64 */
	"last_read_us" bigint  /* i64 */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'pii_access_counts_wrapper';

-- pg_platform::pii::protect::protect_column_batch
CREATE  FUNCTION "protect_column_batch"(
	"id" INT, /* i32 */
	"batch_size" bigint /* i64 */
) RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protect_column_batch_wrapper';

-- pg_platform::pii::protect::protect_column_finish
CREATE  FUNCTION "protect_column_finish"(
	"id" INT /* i32 */
) RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protect_column_finish_wrapper';

-- pg_platform::pii::protect::protect_column_prepare
CREATE  FUNCTION "protect_column_prepare"(
	"tbl" regclass, /* RegClass */
	"col" TEXT, /* & str */
	"key_name" TEXT, /* & str */
	"subject_column" TEXT, /* Option < & str > */
	"mask" TEXT, /* & str */
	"blind_index" bool, /* bool */
	"view_name" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protect_column_prepare_wrapper';

-- requires:
--   pii_keys
--   protect_column_prepare
--   protect_column_batch
--   protect_column_finish


-- What a protected column stores: only pg_platform ciphertexts (format 1 header, nonce and
-- tag), so a forgotten legacy writer cannot put plaintext there. A domain rather than a
-- CHECK constraint: its expression is compiled once per session, not per INSERT.
CREATE DOMAIN platform.ciphertext AS bytea
    CHECK (VALUE IS NULL OR CASE WHEN length(VALUE) >= 38
                                 THEN get_byte(VALUE, 0) = 161 AND get_byte(VALUE, 1) IN (0, 1)
                                 ELSE false END);
COMMENT ON DOMAIN platform.ciphertext IS 'A pg_platform ciphertext (format 1): what protected columns store.';
CREATE SEQUENCE platform.protected_columns_id_seq AS integer;
CREATE TABLE platform.protected_columns (
    id             integer PRIMARY KEY,
    tbl            regclass NOT NULL,
    column_name    name NOT NULL,
    column_type    text NOT NULL,
    key_name       text NOT NULL,
    subject_column name,
    mask           text NOT NULL,
    blind_index    boolean NOT NULL,
    view_name      text NOT NULL,
    not_null       boolean NOT NULL,
    state          text NOT NULL DEFAULT 'converting' CHECK (state IN ('converting', 'protected')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    protected_at   timestamptz,
    protected_by   text NOT NULL DEFAULT session_user,
    UNIQUE (tbl, column_name)
);
COMMENT ON TABLE platform.protected_columns IS 'Columns protected by platform.protect_column: key, subject column, mask, blind index, view. No key material.';
SELECT pg_catalog.pg_extension_config_dump('platform.protected_columns_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.protected_columns', '');
GRANT SELECT ON platform.protected_columns TO platform_admin, platform_developer, platform_auditor;

-- Encrypts a column in place, batch_size rows per transaction (a procedure, so each
-- batch commits: no long locks; an interrupted call resumes when called again). No SET
-- clause: a procedure with one cannot COMMIT.
CREATE PROCEDURE platform.protect_column(tbl regclass, col name, key_name text,
                                         subject_column name DEFAULT NULL,
                                         mask text DEFAULT 'redact',
                                         blind_index boolean DEFAULT false,
                                         view_name name DEFAULT NULL,
                                         batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $proc$
DECLARE
    registration integer;
    n bigint;
    total bigint := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: must be at least 1', batch_size USING ERRCODE = '22023';
    END IF;
    registration := platform.protect_column_prepare(tbl, col, key_name, subject_column, mask, blind_index, view_name);
    COMMIT;
    LOOP
        n := platform.protect_column_batch(registration, batch_size);
        total := total + n;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
    total := total + platform.protect_column_finish(registration);
    COMMIT;
    RAISE NOTICE 'platform.protect_column: % values of %.% encrypted; read and write them through %', total, tbl, col,
        (SELECT p.view_name FROM platform.protected_columns p WHERE p.id = registration);
END
$proc$;
REVOKE EXECUTE ON PROCEDURE platform.protect_column(regclass, name, text, name, text, boolean, name, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE platform.protect_column(regclass, name, text, name, text, boolean, name, integer) TO platform_admin;

-- A protected table dropped: its registrations go too.
CREATE FUNCTION platform.forget_dropped_protected_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM platform.protected_columns p
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND p.tbl::oid = d.objid;
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.forget_dropped_protected_tables() FROM PUBLIC;
CREATE EVENT TRIGGER platform_forget_dropped_protected_tables ON sql_drop
    EXECUTE FUNCTION platform.forget_dropped_protected_tables();

-- requires:
--   pii_access_counts
--   pii_protect


CREATE VIEW platform.pii_access AS
SELECT r.rolname AS role,
       p.tbl AS table_name,
       p.column_name,
       c.statements,
       c.plaintext_values,
       c.masked_values,
       timestamptz '2000-01-01 00:00:00+00' + c.last_read_us * interval '1 microsecond' AS last_read
  FROM platform.pii_access_counts() c
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = c.role
  LEFT JOIN platform.protected_columns p ON p.id = c.column_id
 WHERE c.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database());
COMMENT ON VIEW platform.pii_access IS 'Reads of protected columns through their views: statements and values revealed per role and column, plaintext or masked (since server start or platform.reset_pii_access).';
GRANT SELECT ON platform.pii_access TO platform_admin, platform_auditor;

-- pg_platform::pii::protect::protected_blind_index
CREATE  FUNCTION "protected_blind_index"(
	"value" TEXT, /* & str */
	"column_id" INT /* i32 */
) RETURNS bytea /* Vec < u8 > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protected_blind_index_wrapper';

-- pg_platform::pii::protect::protected_rebind
CREATE  FUNCTION "protected_rebind"(
	"ciphertext" bytea, /* & [u8] */
	"column_id" INT, /* i32 */
	"old_row_key" TEXT, /* & str */
	"new_row_key" TEXT, /* & str */
	"subject" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bytea /* Vec < u8 > */
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protected_rebind_wrapper';

-- pg_platform::pii::protect::protected_row_context
CREATE  FUNCTION "protected_row_context"(
	"tbl" regclass, /* RegClass */
	"col" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'protected_row_context_wrapper';

-- pg_platform::audit::record_audit_ddl
CREATE  FUNCTION "record_audit_ddl"() RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_audit_ddl_wrapper';

-- pg_platform::audit::record_audit_drop
CREATE  FUNCTION "record_audit_drop"() RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_audit_drop_wrapper';

-- requires:
--   record_audit_ddl
--   record_audit_drop


CREATE SEQUENCE platform.audit_log_id_seq AS bigint;
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
    PRIMARY KEY (cluster_id, xid, statement_seq, row_seq)
);
COMMENT ON TABLE platform.audit_log IS 'pg_platform audit log: one row per audited row change, DDL command or TRUNCATE; append-only, hash-chained by platform.audit_block.';
CREATE TABLE platform.audit_block (
    block_no   bigint PRIMARY KEY,
    cluster_id bigint NOT NULL,
    xid_lo     xid8 NOT NULL,
    xid_hi     xid8 NOT NULL,
    row_count  bigint NOT NULL,
    rows_hash  bytea NOT NULL,
    prev_hash  bytea NOT NULL,
    block_hash bytea NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE platform.audit_block IS 'Hash chain over platform.audit_log: each block seals the rows of transactions with ids in [xid_lo, xid_hi).';
SELECT pg_catalog.pg_extension_config_dump('platform.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('platform.audit_block', '');
GRANT SELECT ON platform.audit_log, platform.audit_block TO platform_admin, platform_auditor;

CREATE FUNCTION platform.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'platform.% is append-only: % is refused for every role', TG_TABLE_NAME, TG_OP
        USING ERRCODE = '42501';
END
$fn$;
CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON platform.audit_log
    FOR EACH ROW EXECUTE FUNCTION platform.refuse_audit_change();
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON platform.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION platform.refuse_audit_change();
CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON platform.audit_block
    FOR EACH ROW EXECUTE FUNCTION platform.refuse_audit_change();
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON platform.audit_block
    FOR EACH STATEMENT EXECUTE FUNCTION platform.refuse_audit_change();
ALTER TABLE platform.audit_log ENABLE ALWAYS TRIGGER refuse_change, ENABLE ALWAYS TRIGGER refuse_truncate;
ALTER TABLE platform.audit_block ENABLE ALWAYS TRIGGER refuse_change, ENABLE ALWAYS TRIGGER refuse_truncate;

CREATE VIEW platform.audited_tables AS
SELECT t.tgrelid::regclass AS table_name,
       a[1] = 'true' AS include_statement,
       a[2:] AS exclude_columns,
       (SELECT count(*) = 4 AND bool_and(x.tgenabled = 'A') FROM pg_catalog.pg_trigger x
         WHERE x.tgrelid = t.tgrelid AND x.tgname LIKE 'platform\_audit\_%') AS fully_enabled
  FROM pg_catalog.pg_trigger t,
       LATERAL (SELECT array_remove(string_to_array(encode(t.tgargs, 'escape'), '\000'), '') AS a) args
 WHERE t.tgname = 'platform_audit_insert';
COMMENT ON VIEW platform.audited_tables IS 'Tables audited by platform.audit_table, with their settings.';
GRANT SELECT ON platform.audited_tables TO platform_admin, platform_developer, platform_auditor;

CREATE FUNCTION platform.audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM platform.record_audit_ddl();
END
$fn$;
CREATE FUNCTION platform.audit_drop() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM platform.record_audit_drop();
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.refuse_audit_change(), platform.audit_ddl(), platform.audit_drop() FROM PUBLIC;
CREATE EVENT TRIGGER platform_audit_ddl ON ddl_command_end EXECUTE FUNCTION platform.audit_ddl();
CREATE EVENT TRIGGER platform_audit_drop ON sql_drop EXECUTE FUNCTION platform.audit_drop();

CREATE FUNCTION platform.audit_settings()
RETURNS TABLE (setting text, current_value text, recommended text, ok boolean)
LANGUAGE sql STABLE AS $fn$
SELECT 'log_connections', current_setting('log_connections'), 'on', current_setting('log_connections') = 'on'
UNION ALL
SELECT 'log_disconnections', current_setting('log_disconnections'), 'on', current_setting('log_disconnections') = 'on'
UNION ALL
SELECT 'platform.audit_ddl', current_setting('platform.audit_ddl', true), 'on (DDL recorded in platform.audit_log)',
       coalesce(current_setting('platform.audit_ddl', true), 'off') = 'on'
UNION ALL
SELECT 'event triggers platform_audit_ddl, platform_audit_drop',
       coalesce((SELECT string_agg(evtname || '=' || CASE evtenabled WHEN 'D' THEN 'disabled' ELSE 'enabled' END, ', ' ORDER BY evtname)
                   FROM pg_catalog.pg_event_trigger WHERE evtname IN ('platform_audit_ddl', 'platform_audit_drop')), 'missing'),
       'both enabled',
       (SELECT count(*) = 2 AND bool_and(evtenabled <> 'D') FROM pg_catalog.pg_event_trigger
         WHERE evtname IN ('platform_audit_ddl', 'platform_audit_drop'))
UNION ALL
SELECT 'shared_preload_libraries', current_setting('shared_preload_libraries'),
       'includes pg_platform (its worker seals the log)',
       current_setting('shared_preload_libraries') ~ '(^|[ ,])pg_platform($|[ ,])'
UNION ALL
SELECT 'platform.databases', coalesce(current_setting('platform.databases', true), ''),
       'includes ' || current_database(),
       current_database() = ANY (string_to_array(replace(coalesce(current_setting('platform.databases', true), ''), ' ', ''), ','))
UNION ALL
SELECT 'unsealed audit rows', (SELECT count(*)::text FROM platform.audit_log l
                                WHERE l.xid >= coalesce((SELECT max(b.xid_hi) FROM platform.audit_block b
                                                          WHERE b.cluster_id = l.cluster_id), '0'::xid8)),
       'few (the worker seals every platform.worker_naptime)', true
$fn$;

-- pg_platform::pii::access::reset_pii_access
CREATE  FUNCTION "reset_pii_access"() RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reset_pii_access_wrapper';

-- pg_platform::pii::protect::reveal_column
CREATE  FUNCTION "reveal_column"(
	"ciphertext" bytea, /* & [u8] */
	"column_id" INT, /* i32 */
	"row_key" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reveal_column_wrapper';

-- pg_platform::pii::rewrap_keys
CREATE  FUNCTION "rewrap_keys"() RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rewrap_keys_wrapper';

-- pg_platform::audit::seal_audit
CREATE  FUNCTION "seal_audit"() RETURNS bigint /* i64 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'seal_audit_wrapper';

-- pg_platform::audit::unaudit_table
CREATE  FUNCTION "unaudit_table"(
	"tbl" regclass /* RegClass */
) RETURNS bool /* bool */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unaudit_table_wrapper';

-- pg_platform::audit::verify_audit
CREATE  FUNCTION "verify_audit"(
	"since" timestamp with time zone DEFAULT NULL /* Option < pgrx :: datum :: TimestampWithTimeZone > */
) RETURNS TABLE (
	"intact" bool,  /* bool */
	"blocks_checked" bigint,  /* i64 */
	"rows_checked" bigint,  /* i64 */
	"first_bad_block" bigint,  /* Option < i64 > */
	"first_bad_row" bigint,  /* Option < i64 > */
	"problem" TEXT  /* Option < String > */
)
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_audit_wrapper';

-- pg_platform::audit::trigger::audit_trigger
CREATE FUNCTION "audit_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'audit_trigger_wrapper';

REVOKE EXECUTE ON FUNCTION platform.rewrap_keys() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.rewrap_keys() TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.protect_column_prepare(regclass, text, text, text, text, boolean, text),
                          platform.protect_column_batch(integer, bigint),
                          platform.protect_column_finish(integer),
                          platform.protected_row_context(regclass, text),
                          platform.reset_pii_access() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.protect_column_prepare(regclass, text, text, text, text, boolean, text),
                          platform.protect_column_batch(integer, bigint),
                          platform.protect_column_finish(integer),
                          platform.protected_row_context(regclass, text),
                          platform.reset_pii_access()
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.reveal_column(bytea, integer, text), platform.protected_blind_index(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.reveal_column(bytea, integer, text), platform.protected_blind_index(text, integer)
    TO platform_admin, platform_developer, platform_readonly, platform_auditor, platform_pii_reader;

REVOKE EXECUTE ON FUNCTION platform.protected_rebind(bytea, integer, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.protected_rebind(bytea, integer, text, text, text)
    TO platform_admin, platform_developer, platform_pii_reader;

REVOKE EXECUTE ON FUNCTION platform.pii_access_counts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.pii_access_counts() TO platform_admin, platform_auditor;

REVOKE EXECUTE ON FUNCTION platform.audit_table(regclass, text[], boolean), platform.unaudit_table(regclass),
                          platform.audit_trigger(), platform.seal_audit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.audit_table(regclass, text[], boolean), platform.unaudit_table(regclass),
                          platform.audit_trigger(), platform.seal_audit()
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.verify_audit(timestamptz), platform.audit_settings() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.verify_audit(timestamptz), platform.audit_settings() TO platform_admin, platform_auditor;

REVOKE EXECUTE ON FUNCTION platform.record_audit_ddl(), platform.record_audit_drop() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.record_audit_ddl(), platform.record_audit_drop() TO PUBLIC;
