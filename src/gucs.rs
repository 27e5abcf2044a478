//! Every `platform.*` setting, registered once from `_PG_init`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Databases the background worker serves (comma-separated). Read at server start.
pub static DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// Seconds between two rounds of the background worker.
pub static WORKER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);

/// Seconds between two partition maintenance passes of the worker (0 disables them).
pub static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// Milliseconds partition maintenance waits for its lock on a parent before giving up.
pub static MAINTENANCE_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(2000);

/// The file holding the master key of PII encryption (64 hex digits, mode 0600).
pub static MASTER_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// A command printing the master key (like ssl_passphrase_command).
pub static MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// The master key being replaced, for `platform.rewrap_keys` (same forms as the above).
pub static PREVIOUS_MASTER_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static PREVIOUS_MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// What reading a forgotten subject's value gives: an ERROR (P0002) or NULL.
pub static PII_FORGOTTEN_READ: GucSetting<crate::pii::ForgottenRead> =
    GucSetting::<crate::pii::ForgottenRead>::new(crate::pii::ForgottenRead::Error);

/// Whether each statement that read protected columns writes one line to the server log.
pub static PII_ACCESS_LOG: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Whether DDL commands are recorded in the audit log (by the extension's event triggers).
pub static AUDIT_DDL: GucSetting<bool> = GucSetting::<bool>::new(true);

/// The model whose `champion` version `platform.fraud_score` uses (the built-in anomaly
/// score while it has none).
pub static FRAUD_MODEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"payments"));

/// The most WAL one lake batch decodes (MB): bounds a batch's time and its files' size.
pub static LAKE_BATCH_WAL_MB: GucSetting<i32> = GucSetting::<i32>::new(256);

/// The size at which a lake file is closed and the next part of the same table started (MB).
pub static LAKE_FILE_TARGET_MB: GucSetting<i32> = GucSetting::<i32>::new(128);

/// Milliseconds between two looks of the worker at the lake sinks.
pub static LAKE_SYNC_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(500);

/// Milliseconds the worker lets changes wait before it lands them (the age at which a
/// batch is due even if small): the freshness of the lake against the number of files.
pub static LAKE_BATCH_MAX_AGE: GucSetting<i32> = GucSetting::<i32>::new(2000);

/// MB of waiting WAL that make a batch due at once, whatever its age.
pub static LAKE_BATCH_MIN_MB: GucSetting<i32> = GucSetting::<i32>::new(16);

/// Seconds between two current-zone compactions of each sink by the worker (0: never).
pub static LAKE_COMPACT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// Rows of one backfill chunk (one chunk per table per batch).
pub static LAKE_BACKFILL_CHUNK_ROWS: GucSetting<i32> = GucSetting::<i32>::new(50_000);

/// The S3 endpoint of `s3://` lakes (an S3-compatible server; empty: AWS in the region).
pub static LAKE_S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The region `s3://` lakes sign their requests for.
pub static LAKE_S3_REGION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"us-east-1"));

/// A shared credentials file for `s3://` lakes (empty: the server's environment, then the
/// standard file).
pub static LAKE_S3_CREDENTIALS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// Seconds one S3 request of a lake may take.
pub static LAKE_S3_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(30);

/// MB of one part of a multipart upload to an S3 lake; files up to it are one PUT.
pub static LAKE_S3_PART_MB: GucSetting<i32> = GucSetting::<i32>::new(64);

/// Test hook: the lake sink step after which a batch fails with an ERROR, as a crash there
/// would leave it (`after_files`, `after_manifest`, `after_advance`, `after_part`). Superuser only.
pub static LAKE_FAULT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register() {
    // A postmaster-context setting can only be defined while the postmaster preloads the
    // library; defining it later (CREATE EXTENSION without preloading) is FATAL. Without
    // preloading there is no worker, so the setting has nothing to configure.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        define_preload_gucs();
    }
    GucRegistry::define_int_guc(
        c"platform.worker_naptime",
        c"Seconds between two rounds of pg_platform's background worker.",
        c"Each round runs the maintenance tasks of the capabilities installed in the database.",
        &WORKER_NAPTIME,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"platform.fraud_model",
        c"The fraud model whose champion version platform.fraud_score uses.",
        c"While the model has no champion (or does not exist), the built-in anomaly score is used.",
        &FRAUD_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"platform.maintenance_interval",
        c"Time between two partition maintenance passes of pg_platform's background worker.",
        c"0 disables them; platform.run_maintenance() can still be called.",
        &MAINTENANCE_INTERVAL,
        0,
        7 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"platform.maintenance_lock_timeout",
        c"How long partition maintenance waits for its lock on a partitioned table.",
        c"Maintenance gives up on that table (and retries on the next pass) rather than queue application traffic behind its lock; 0 waits without limit.",
        &MAINTENANCE_LOCK_TIMEOUT,
        0,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"platform.lake_batch_wal_mb",
        c"The most WAL (in MB) one lake sink batch decodes.",
        c"A batch lands every change committed up to the flushed WAL, at most this much of it; the rest goes to the next batch.",
        &LAKE_BATCH_WAL_MB,
        1,
        1_048_576,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"platform.lake_file_target_mb",
        c"Size (in MB) at which a lake file is closed and the next part of the table begun.",
        c"Within one batch a table's rows of one commit day go to one file until it reaches this size.",
        &LAKE_FILE_TARGET_MB,
        1,
        65_536,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"platform.lake_sync_interval",
        c"Milliseconds between two looks of pg_platform's worker at the lake sinks.",
        c"Each look reads how much WAL waits for each sink and runs the batches that are due.",
        &LAKE_SYNC_INTERVAL,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"platform.lake_batch_max_age",
        c"Milliseconds the worker lets committed changes wait before landing them.",
        c"A sink's batch is due when this long has passed since its last one, or when platform.lake_batch_min_mb of WAL waits.",
        &LAKE_BATCH_MAX_AGE,
        0,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"platform.lake_batch_min_mb",
        c"MB of waiting WAL that make a lake batch due at once.",
        c"Larger batches make fewer, larger files; platform.lake_batch_max_age bounds how long changes wait.",
        &LAKE_BATCH_MIN_MB,
        0,
        1_048_576,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"platform.lake_compact_interval",
        c"Seconds between two current-zone compactions of each lake sink by the worker.",
        c"0 leaves compaction to platform.lake_compact.",
        &LAKE_COMPACT_INTERVAL,
        0,
        31_536_000,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"platform.lake_backfill_chunk_rows",
        c"Rows of one lake backfill chunk.",
        c"A caught-up sink batch reads one chunk of each table it backfills, in primary key order.",
        &LAKE_BACKFILL_CHUNK_ROWS,
        1,
        10_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"platform.lake_fault",
        c"Test hook: the lake batch step after which an ERROR is raised.",
        c"after_files, after_manifest, after_advance, or after_part (an S3 multipart upload after its first part); empty (the default) for none. Used by the crash-recovery tests.",
        &LAKE_FAULT,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    // Where a lake's requests go and what signs them: postgresql.conf (or ALTER SYSTEM)
    // only, never a session, so no SQL sends signed requests elsewhere.
    GucRegistry::define_string_guc(
        c"platform.lake_s3_endpoint",
        c"Endpoint of s3:// lakes (an S3-compatible server, http or https); empty for AWS.",
        c"Requests to it are path-style; without it, virtual-host style to s3.<region>.amazonaws.com.",
        &LAKE_S3_ENDPOINT,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"platform.lake_s3_region",
        c"Region of s3:// lakes.",
        c"The region requests are signed for.",
        &LAKE_S3_REGION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"platform.lake_s3_credentials_file",
        c"Shared credentials file (aws_access_key_id, aws_secret_access_key) of s3:// lakes.",
        c"Read when the server's environment has no AWS_ACCESS_KEY_ID; empty: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials. Profile AWS_PROFILE or default.",
        &LAKE_S3_CREDENTIALS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"platform.lake_s3_timeout",
        c"Seconds one S3 request of a lake sink may take.",
        c"A batch whose upload times out fails, commits nothing past what the bucket holds, and is retried.",
        &LAKE_S3_TIMEOUT,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"platform.lake_s3_part_mb",
        c"MB of one part of a multipart upload to an s3:// lake.",
        c"Files up to this size are one PUT; larger ones go up in parts of this size (larger when a file would need more than 10 000 parts). S3 takes parts of 5 MB to 5 GB.",
        &LAKE_S3_PART_MB,
        5,
        5120,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // Only postgresql.conf (or ALTER SYSTEM) can name the master key, and only superusers
    // can even read where it is.
    GucRegistry::define_string_guc(
        c"platform.master_key_file",
        c"File holding the master key of pg_platform's PII encryption (64 hex digits).",
        c"Must be owned by the server's OS user and not readable by group or others.",
        &MASTER_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"platform.master_key_command",
        c"Command printing the master key of pg_platform's PII encryption (64 hex digits).",
        c"Run by the backend that first needs the key, with sh -c; its standard error is discarded.",
        &MASTER_KEY_COMMAND,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"platform.previous_master_key_file",
        c"File holding the master key being replaced (read by platform.rewrap_keys only).",
        c"Same rules as platform.master_key_file; unset it once the keys are rewrapped.",
        &PREVIOUS_MASTER_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"platform.previous_master_key_command",
        c"Command printing the master key being replaced (run by platform.rewrap_keys only).",
        c"Same rules as platform.master_key_command; unset it once the keys are rewrapped.",
        &PREVIOUS_MASTER_KEY_COMMAND,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_enum_guc(
        c"platform.pii_forgotten_read",
        c"What decrypting a value of a forgotten subject gives: error (SQLSTATE P0002) or null.",
        c"",
        &PII_FORGOTTEN_READ,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"platform.audit_ddl",
        c"Record DDL commands (CREATE, ALTER, DROP, GRANT...) in platform.audit_log.",
        c"The event triggers platform_audit_ddl and platform_audit_drop write one row per command, with the same actor fields as row changes.",
        &AUDIT_DDL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"platform.pii_access_log",
        c"Log one line per statement that read protected columns: role, column, rows (never values).",
        c"Counts are always kept in platform.pii_access; this adds a durable per-statement record in the server log.",
        &PII_ACCESS_LOG,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn define_preload_gucs() {
    GucRegistry::define_string_guc(
        c"platform.databases",
        c"Databases in which pg_platform's background worker runs (comma-separated).",
        c"One worker per listed database is started when pg_platform is in shared_preload_libraries. Changing it needs a restart.",
        &DATABASES,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
}

/// The configured database names, trimmed, without empties or duplicates.
pub fn worker_databases() -> Vec<String> {
    let raw = DATABASES
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}
