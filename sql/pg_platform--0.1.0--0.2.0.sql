-- pg_platform 0.1.0 -> 0.2.0: partition management and PII encryption.
-- Drafted by scripts/upgrade_script.py from the generated install scripts and reviewed;
-- tests/e2e/upgrade.sh checks that an upgraded database equals a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_platform UPDATE TO '0.2.0'" to load this file. \quit

CREATE SEQUENCE platform.pii_key_id_seq AS integer;
CREATE SEQUENCE platform.pii_subject_key_id_seq AS bigint;
CREATE TABLE platform.pii_key (
    id          integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT session_user
);
CREATE TABLE platform.pii_key_version (
    key_id                 integer NOT NULL REFERENCES platform.pii_key (id),
    version                integer NOT NULL,
    wrapped                bytea NOT NULL,
    master_key_fingerprint bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    created_by             text NOT NULL DEFAULT session_user,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE platform.pii_subject_key (
    id                     bigint PRIMARY KEY,
    key_id                 integer NOT NULL REFERENCES platform.pii_key (id),
    subject                text NOT NULL,
    wrapped                bytea NOT NULL,
    master_key_fingerprint bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (key_id, subject)
);
CREATE TABLE platform.forgotten_subjects (
    subject_key_id bigint PRIMARY KEY,
    key_name       text NOT NULL,
    subject        text NOT NULL,
    forgotten_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_by   text NOT NULL
);
COMMENT ON TABLE platform.pii_key IS 'Named data keys of pg_platform''s PII encryption (no key material).';
COMMENT ON TABLE platform.pii_key_version IS 'Data key versions, wrapped (AES-256-GCM) by the master key. Readable by the extension owner only.';
COMMENT ON TABLE platform.pii_subject_key IS 'Per-subject data keys, wrapped by the master key; forget_subject deletes them.';
COMMENT ON TABLE platform.forgotten_subjects IS 'Subjects whose key was destroyed: who asked and when, no data.';
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_subject_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key_version', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_subject_key', '');
SELECT pg_catalog.pg_extension_config_dump('platform.forgotten_subjects', '');
GRANT SELECT ON platform.forgotten_subjects TO platform_admin, platform_auditor;

CREATE VIEW platform.keys AS
SELECT k.name,
       max(v.version) AS current_version,
       count(*) AS versions,
       k.created_at,
       k.created_by,
       max(v.created_at) AS rotated_at,
       (SELECT count(*) FROM platform.pii_subject_key s WHERE s.key_id = k.id) AS subject_keys,
       (SELECT count(*) FROM platform.forgotten_subjects f WHERE f.key_name = k.name) AS forgotten_subjects
  FROM platform.pii_key k JOIN platform.pii_key_version v ON v.key_id = k.id
 GROUP BY k.id, k.name, k.created_at, k.created_by;
COMMENT ON VIEW platform.keys IS 'pg_platform data keys: names, versions, when created and rotated, subject keys; never key material.';
GRANT SELECT ON platform.keys TO platform_admin, platform_developer, platform_auditor, platform_pii_reader;

-- Moves a column's ciphertexts to the current version of their key, batch_size rows per
-- transaction (a procedure, so each batch commits: no long locks, and an interrupted run
-- resumes where it stopped, since the remaining work is read from the data itself).
-- No SET clause (a procedure with one cannot COMMIT): catalog names are qualified instead.
CREATE PROCEDURE platform.reencrypt(tbl regclass, col name, context text, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $proc$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: must be at least 1', batch_size USING ERRCODE = '22023';
    END IF;
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = tbl) = 'p' THEN
        RAISE EXCEPTION 'platform.reencrypt works on one table at a time; % is partitioned', tbl
            USING ERRCODE = '0A000', HINT = 'Call it for each partition.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attname = col AND attnum > 0
                      AND NOT attisdropped AND atttypid = 'pg_catalog.bytea'::pg_catalog.regtype) THEN
        RAISE EXCEPTION 'table % has no bytea column "%"', tbl, col USING ERRCODE = '42703';
    END IF;
    LOOP
        EXECUTE pg_catalog.format('UPDATE %s SET %I = platform.reencrypt_value(%I, $1)
                         WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %I IS NOT NULL
                                                    AND NOT platform.is_current_version(%I)
                                                  LIMIT $2 FOR UPDATE SKIP LOCKED))',
                       tbl, col, col, tbl, col, col)
            USING context, batch_size;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
    RAISE NOTICE 'platform.reencrypt: % values of %.% moved to the current key version', total, tbl, col;
END
$proc$;
REVOKE EXECUTE ON PROCEDURE platform.reencrypt(regclass, name, text, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE platform.reencrypt(regclass, name, text, integer) TO platform_admin;

CREATE TABLE platform.partition_config (
    parent           regclass PRIMARY KEY,
    control          text NOT NULL,
    step             interval NOT NULL,
    premake          integer NOT NULL CHECK (premake BETWEEN 0 AND 1000),
    time_zone        text NOT NULL,
    retention        interval,
    retention_action text NOT NULL DEFAULT 'drop' CHECK (retention_action IN ('drop', 'detach', 'archive')),
    with_default     boolean NOT NULL DEFAULT true,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    registered_by    text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.partition_config IS 'Tables whose time partitions pg_platform manages (platform.partition_by_time). time_zone is the calendar the boundaries follow (UTC for steps below a day).';
SELECT pg_catalog.pg_extension_config_dump('platform.partition_config', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON platform.partition_config TO platform_admin, platform_developer;
GRANT SELECT ON platform.partition_config TO platform_readonly;

CREATE VIEW platform.partitions AS
SELECT cfg.parent,
       p.oid::regclass AS partition,
       CASE WHEN b.lo <> '' THEN btrim(b.lo, '''') END AS lower_bound,
       CASE WHEN b.hi <> '' THEN btrim(b.hi, '''') END AS upper_bound,
       x.e = 'DEFAULT' AS is_default,
       CASE WHEN p.reltuples >= 0 THEN p.reltuples::bigint END AS rows_estimate,
       pg_catalog.pg_total_relation_size(p.oid) AS size_bytes,
       CASE WHEN b.lo LIKE '''%' THEN now() - btrim(b.lo, '''')::timestamptz END AS age
  FROM platform.partition_config cfg
  JOIN pg_catalog.pg_inherits i ON i.inhparent = cfg.parent
  JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
  CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS e) x
  CROSS JOIN LATERAL (SELECT split_part(split_part(x.e, ') TO (', 1), 'FROM (', 2) AS lo,
                             rtrim(split_part(x.e, ') TO (', 2), ')') AS hi) b;
COMMENT ON VIEW platform.partitions IS 'Partitions of the tables pg_platform manages: bounds, estimated rows, size, whether default, age of the oldest time it may hold.';
GRANT SELECT ON platform.partitions TO platform_admin, platform_developer, platform_readonly;

-- A dropped table takes its registration with it (SECURITY DEFINER: the dropping role
-- need not see the platform schema).
CREATE FUNCTION platform.forget_dropped_partitioned_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM platform.partition_config c
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
       AND d.objid = c.parent::oid;
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.forget_dropped_partitioned_tables() FROM PUBLIC;
CREATE EVENT TRIGGER platform_partition_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION platform.forget_dropped_partitioned_tables();

-- pg_platform::pii::blind_index
CREATE  FUNCTION "blind_index"(
	"value" TEXT, /* & str */
	"key_name" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'blind_index_wrapper';

-- pg_platform::pii::create_key
CREATE  FUNCTION "create_key"(
	"name" TEXT /* & str */
) RETURNS INT /* i32 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_key_wrapper';

-- pg_platform::pii::decrypt
CREATE  FUNCTION "decrypt"(
	"ciphertext" bytea, /* & [u8] */
	"context" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'decrypt_wrapper';

-- pg_platform::pii::decrypt_bytea
CREATE  FUNCTION "decrypt_bytea"(
	"ciphertext" bytea, /* & [u8] */
	"context" TEXT /* & str */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'decrypt_bytea_wrapper';

-- pg_platform::pii::encrypt
CREATE  FUNCTION "encrypt"(
	"value" bytea, /* & [u8] */
	"key_name" TEXT, /* & str */
	"context" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'encrypt_bytes_wrapper';

-- pg_platform::pii::encrypt
CREATE  FUNCTION "encrypt"(
	"value" TEXT, /* & str */
	"key_name" TEXT, /* & str */
	"context" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'encrypt_text_wrapper';

-- pg_platform::pii::encrypt_for_subject
CREATE  FUNCTION "encrypt_for_subject"(
	"value" bytea, /* & [u8] */
	"key_name" TEXT, /* & str */
	"subject" TEXT, /* & str */
	"context" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'encrypt_for_subject_bytes_wrapper';

-- pg_platform::pii::encrypt_for_subject
CREATE  FUNCTION "encrypt_for_subject"(
	"value" TEXT, /* & str */
	"key_name" TEXT, /* & str */
	"subject" TEXT, /* & str */
	"context" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'encrypt_for_subject_text_wrapper';

-- pg_platform::pii::forget_subject
CREATE  FUNCTION "forget_subject"(
	"key_name" TEXT, /* & str */
	"subject" TEXT /* & str */
) RETURNS bool /* bool */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'forget_subject_wrapper';

-- pg_platform::pii::is_current_version
CREATE  FUNCTION "is_current_version"(
	"ciphertext" bytea /* & [u8] */
) RETURNS bool /* bool */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_current_version_wrapper';

-- pg_platform::partition::partition_by_time
CREATE  FUNCTION "partition_by_time"(
	"parent" regclass, /* RegClass */
	"control" TEXT, /* & str */
	"step" interval, /* Interval */
	"premake" INT DEFAULT 4, /* i32 */
	"start" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"retention" interval DEFAULT NULL, /* Option < Interval > */
	"retention_action" TEXT DEFAULT 'drop', /* & str */
	"with_default" bool DEFAULT true, /* bool */
	"time_zone" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"parent" regclass,  /* RegClass */
	"partitions_created" INT,  /* i32 */
	"partitions_retired" INT,  /* i32 */
	"rows_moved" bigint,  /* i64 */
	"privileges_synced" INT,  /* i32 */
	"error" TEXT  /* Option < String > */
)
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'partition_by_time_wrapper';

-- pg_platform::pii::reencrypt_value
CREATE  FUNCTION "reencrypt_value"(
	"ciphertext" bytea, /* & [u8] */
	"context" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reencrypt_value_wrapper';

-- pg_platform::pii::reveal
CREATE  FUNCTION "reveal"(
	"ciphertext" bytea, /* & [u8] */
	"context" TEXT, /* & str */
	"mask" TEXT DEFAULT 'redact' /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reveal_wrapper';

-- pg_platform::pii::rotate_key
CREATE  FUNCTION "rotate_key"(
	"name" TEXT /* & str */
) RETURNS INT /* i32 */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rotate_key_wrapper';

-- pg_platform::partition::run_maintenance
CREATE  FUNCTION "run_maintenance"(
	"parent" regclass DEFAULT NULL /* Option < RegClass > */
) RETURNS TABLE (
	"parent" regclass,  /* RegClass */
	"partitions_created" INT,  /* i32 */
	"partitions_retired" INT,  /* i32 */
	"rows_moved" bigint,  /* i64 */
	"privileges_synced" INT,  /* i32 */
	"error" TEXT  /* Option < String > */
)
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'run_maintenance_wrapper';

-- pg_platform::partition::set_premake
CREATE  FUNCTION "set_premake"(
	"parent" regclass, /* RegClass */
	"premake" INT /* i32 */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_premake_wrapper';

-- pg_platform::partition::set_retention
CREATE  FUNCTION "set_retention"(
	"parent" regclass, /* RegClass */
	"retention" interval, /* Option < Interval > */
	"retention_action" TEXT DEFAULT 'drop' /* & str */
) RETURNS void
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_retention_wrapper';

-- pg_platform::partition::undo_partitioning
CREATE  FUNCTION "undo_partitioning"(
	"parent" regclass /* RegClass */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'undo_partitioning_wrapper';

REVOKE EXECUTE ON FUNCTION platform.partition_by_time(regclass, text, interval, integer, timestamptz, interval, text, boolean, text),
                          platform.run_maintenance(regclass),
                          platform.set_retention(regclass, interval, text),
                          platform.set_premake(regclass, integer),
                          platform.undo_partitioning(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.partition_by_time(regclass, text, interval, integer, timestamptz, interval, text, boolean, text),
                          platform.run_maintenance(regclass),
                          platform.set_retention(regclass, interval, text),
                          platform.set_premake(regclass, integer),
                          platform.undo_partitioning(regclass)
    TO platform_admin, platform_developer;

REVOKE EXECUTE ON FUNCTION platform.create_key(text), platform.rotate_key(text), platform.forget_subject(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.create_key(text), platform.rotate_key(text), platform.forget_subject(text, text)
    TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.encrypt(text, text, text), platform.encrypt(bytea, text, text),
                          platform.encrypt_for_subject(text, text, text, text), platform.encrypt_for_subject(bytea, text, text, text),
                          platform.blind_index(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.encrypt(text, text, text), platform.encrypt(bytea, text, text),
                          platform.encrypt_for_subject(text, text, text, text), platform.encrypt_for_subject(bytea, text, text, text),
                          platform.blind_index(text, text)
    TO platform_admin, platform_developer, platform_pii_reader;

REVOKE EXECUTE ON FUNCTION platform.decrypt(bytea, text), platform.decrypt_bytea(bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.decrypt(bytea, text), platform.decrypt_bytea(bytea, text) TO platform_pii_reader;

REVOKE EXECUTE ON FUNCTION platform.is_current_version(bytea), platform.reencrypt_value(bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.is_current_version(bytea), platform.reencrypt_value(bytea, text) TO platform_admin;

REVOKE EXECUTE ON FUNCTION platform.reveal(bytea, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.reveal(bytea, text, text)
    TO platform_admin, platform_developer, platform_readonly, platform_auditor, platform_pii_reader;
