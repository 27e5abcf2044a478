//! Lake sink: committed changes land as Parquet files, exactly once.
//!
//! A sink is a row of `platform.lake_sink` and a logical slot decoded by this extension's
//! own output plugin (binary format). `platform.lake_sync(sink)` runs one batch in the
//! calling backend: it peeks the slot up to the flushed WAL, writes one zstd Parquet file
//! per table and commit day, makes them durable, writes the batch manifest (the commit
//! point), and only then advances the slot. The protocol and its crash cases are in
//! `sync.rs` and the README.

mod archive;
mod backfill;
mod columns;
mod compact;
mod decode;
mod files;
mod merge;
mod s3;
mod sync;
#[cfg(any(test, feature = "pg_test"))]
mod tests;
pub mod worker;

use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake sink \"{0}\" does not exist")]
    UnknownSink(String),
    #[error("lake sink \"{0}\" already exists")]
    SinkExists(String),
    #[error("replication slot \"{0}\" already exists")]
    SlotExists(String),
    #[error("invalid lake sink name \"{0}\"")]
    BadName(String),
    #[error("lake_url \"{0}\" is not supported")]
    BadUrl(String),
    #[error("no S3 credentials for the lake: {0}")]
    S3Credentials(String),
    #[error("S3 lake settings: {0}")]
    S3Config(String),
    #[error("S3 {what} of {object} failed: HTTP {status} {code}")]
    S3Status {
        what: String,
        object: String,
        status: u16,
        code: String,
    },
    #[error("S3 {what} of {object} failed: {reason}")]
    S3Unreachable {
        what: String,
        object: String,
        reason: String,
    },
    #[error("{0} already exists in the bucket with other content")]
    S3Exists(String),
    #[error("{0}")]
    Io(String),
    #[error("permission denied in the lake: {0}")]
    Permission(String),
    #[error("the lake's file system is full: {0}")]
    DiskFull(String),
    #[error("cannot decode the change stream: {0}")]
    Decode(String),
    #[error("cannot write Parquet: {0}")]
    Parquet(String),
    #[error("the lake is inconsistent: {0}")]
    Corrupt(String),
    #[error("table {0} has a column named \"{1}\", a name the lake reserves")]
    ReservedColumn(String, String),
    #[error("table {0} has no replica identity, so its updates and deletes cannot be landed")]
    NoIdentity(String),
    #[error("the replication slot \"{slot}\" of lake sink \"{sink}\" is missing")]
    SlotMissing { sink: String, slot: String },
    #[error("the replication slot \"{slot}\" of lake sink \"{sink}\" is invalidated (wal_status {status}): WAL it needed was removed")]
    SlotLost {
        sink: String,
        slot: String,
        status: String,
    },
    #[error("replication slot \"{0}\" uses output plugin \"{1}\", not pg_platform")]
    SlotPlugin(String, String),
    #[error("replication slot \"{0}\" is in use by process {1}")]
    SlotActive(String, i32),
    #[error("the replication slot of lake sink \"{sink}\" is at {slot_lsn} but the lake ends at {lake_lsn}: changes in between were consumed outside the sink")]
    Gap {
        sink: String,
        slot_lsn: String,
        lake_lsn: String,
    },
    #[error("table {0} has no primary key, so it cannot be backfilled in chunks")]
    NoPrimaryKey(String),
    #[error("table {0} is not one lake sink \"{1}\" lands")]
    NotInSink(String, String),
    #[error("zone \"{0}\" is not bronze or current")]
    BadZone(String),
    #[error("cannot compact: {0} is not a key type the current zone supports")]
    CompactKey(String),
    #[error("cannot compact: column \"{0}\" changed type from {1} to {2}")]
    CompactType(String, String, String),
    #[error("table {0} has no current-zone file yet")]
    NotCompacted(String),
    #[error("permission denied to write lake files on the server")]
    NoFilePrivilege,
}

impl LakeError {
    pub fn io(path: &Path, e: std::io::Error) -> LakeError {
        let what = format!("{}: {e}", path.display());
        match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                LakeError::Permission(what)
            }
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                LakeError::DiskFull(what)
            }
            _ => LakeError::Io(format!("lake I/O failed on {what}")),
        }
    }

    /// A Parquet writer's failure on `path`: its I/O error (a full disk is 53100, not an
    /// internal error) when the writer passed one up, otherwise a Parquet error.
    pub fn parquet(path: &Path, e: parquet::errors::ParquetError) -> LakeError {
        if let parquet::errors::ParquetError::External(inner) = &e {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                return LakeError::io(path, std::io::Error::new(io.kind(), io.to_string()));
            }
        }
        LakeError::Parquet(format!("{}: {e}", path.display()))
    }
}

impl SqlError for LakeError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::UnknownSink(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::SinkExists(_) | Self::SlotExists(_) => ERRCODE_DUPLICATE_OBJECT,
            Self::BadName(_) | Self::BadUrl(_) | Self::BadZone(_) => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::S3Credentials(_) => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Self::S3Config(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::S3Status {
                status: 401 | 403, ..
            } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::S3Status { status: 404, .. } => ERRCODE_UNDEFINED_FILE,
            Self::S3Status { .. } => ERRCODE_IO_ERROR,
            Self::S3Unreachable { .. } => ERRCODE_CONNECTION_FAILURE,
            Self::S3Exists(_) => ERRCODE_DUPLICATE_OBJECT,
            Self::Io(_) => ERRCODE_IO_ERROR,
            Self::Permission(_) | Self::NoFilePrivilege => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::DiskFull(_) => ERRCODE_DISK_FULL,
            Self::Decode(_) | Self::Corrupt(_) => ERRCODE_DATA_CORRUPTED,
            Self::Parquet(_) => ERRCODE_INTERNAL_ERROR,
            Self::ReservedColumn(..) => ERRCODE_RESERVED_NAME,
            Self::NotInSink(..) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::CompactKey(_) | Self::CompactType(..) => ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::NotCompacted(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::NoIdentity(_)
            | Self::NoPrimaryKey(_)
            | Self::SlotMissing { .. }
            | Self::SlotLost { .. }
            | Self::SlotPlugin(..)
            | Self::Gap { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::SlotActive(..) => ERRCODE_OBJECT_IN_USE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::UnknownSink(_) => "SELECT name FROM platform.lake_sink lists the sinks.".into(),
            Self::SinkExists(_) => "Choose another name, or platform.drop_lake_sink it first.".into(),
            Self::SlotExists(s) => format!("A sink owns the slot it creates; drop the leftover slot with SELECT pg_drop_replication_slot('{s}') if nothing uses it."),
            Self::BadName(_) => "A sink name is 1 to 40 lowercase letters, digits or underscores, starting with a letter or underscore (it names the slot and a lake directory).".into(),
            Self::BadUrl(_) => "Use an absolute directory path (/srv/lake or file:///srv/lake), or s3://bucket/prefix (a bucket name of 3 to 63 lowercase letters, digits, dots or hyphens).".into(),
            Self::S3Credentials(_) => "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment, or platform.lake_s3_credentials_file (postgresql.conf) to a shared credentials file the server's user can read.".into(),
            Self::S3Config(_) => "Set platform.lake_s3_endpoint (an http or https URL, for an S3-compatible server) and platform.lake_s3_region in postgresql.conf, then reload.".into(),
            Self::S3Status { status: 401 | 403, .. } => "Check the credentials and that they may read and write the bucket's prefix; the sink resumes by itself once they do.".into(),
            Self::S3Status { status: 404, .. } => "Check the bucket exists in platform.lake_s3_region (or at platform.lake_s3_endpoint).".into(),
            Self::S3Status { .. } => "Nothing was committed past what the bucket holds; the sink retries by itself.".into(),
            Self::S3Unreachable { .. } => "Check platform.lake_s3_endpoint and that the server reaches it; nothing was committed past what the bucket holds, and the sink resumes by itself.".into(),
            Self::S3Exists(_) => "Another writer owns that name (another sink with the same prefix?): give each sink its own prefix.".into(),
            Self::Io(_) => "Check the lake directory exists and is usable by the server's operating-system user; the sink resumes by itself once it is.".into(),
            Self::Permission(_) => "Give the server's operating-system user write access to the lake directory; the sink resumes by itself once it has it.".into(),
            Self::DiskFull(_) => "Free space on the lake's file system; nothing was committed and the sink resumes by itself.".into(),
            Self::Decode(_) | Self::Corrupt(_) => "Report this to the pg_platform maintainers with the server log.".into(),
            Self::Parquet(_) => "Report this to the pg_platform maintainers with the server log.".into(),
            Self::ReservedColumn(t, c) => format!("Rename the column (ALTER TABLE {t} RENAME COLUMN {c} TO ...) or leave the table out of the sink's tables."),
            Self::NoIdentity(t) => format!("Give the table a primary key, or ALTER TABLE {t} REPLICA IDENTITY FULL."),
            Self::SlotMissing { sink, .. } | Self::SlotLost { sink, .. } => format!("The lake cannot be completed from WAL: SELECT platform.drop_lake_sink('{sink}'), create it again and backfill the tables (files already landed stay)."),
            Self::SlotPlugin(..) => "Use another sink name, or drop that slot if nothing uses it.".into(),
            Self::SlotActive(..) => "Another consumer (pg_recvlogical, a walsender, another lake_sync) is reading the slot; stop it and retry.".into(),
            Self::Gap { sink, .. } => format!("Something read the slot with pg_logical_slot_get_changes or advanced it. Recreate the sink (SELECT platform.drop_lake_sink('{sink}'); then platform.create_lake_sink) and backfill."),
            Self::NoPrimaryKey(t) => format!("Add a primary key to {t}; its changes still land, only the snapshot of existing rows needs the key."),
            Self::NotInSink(_, s) => format!("The sink's tables are in SELECT tables FROM platform.lake_sink WHERE name = '{s}'."),
            Self::BadZone(_) => "Use zone => 'bronze' (every change) or 'current' (the compacted state).".into(),
            Self::CompactKey(_) => "The current zone needs a primary key of integer, text, numeric, date, timestamp, bytea, uuid or boolean columns; the table's changes still land in the bronze zone.".into(),
            Self::CompactType(..) => "Read the bronze zone with platform.lake_read_sql (union_by_name); a retyped column is not folded into one current file by this version.".into(),
            Self::NotCompacted(_) => "Run SELECT * FROM platform.lake_compact(sink) first (the worker also does every platform.lake_compact_interval).".into(),
            Self::NoFilePrivilege => "Lake sinks write files as the server: a superuser, or a member of pg_write_server_files, creates and syncs them.".into(),
        })
    }
}

pub use archive::archive_partition;

/// Where a sink lands its files.
pub enum LakeUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// A sink's lake as its batches write it: the lake itself for a directory; for an S3 lake,
/// its staging directory and the bucket that committed files go to.
pub struct Target {
    pub lake: files::Lake,
    pub remote: Option<s3::Remote>,
}

pub fn open_target(sink: &str, url: &str) -> Result<Target, LakeError> {
    Ok(match parse_url(url)? {
        LakeUrl::Local(root) => Target {
            lake: files::Lake {
                root,
                sink: sink.into(),
            },
            remote: None,
        },
        LakeUrl::S3 { bucket, prefix } => {
            let root = s3::staging_root(sink);
            std::fs::create_dir_all(&root).map_err(|e| LakeError::io(&root, e))?;
            Target {
                lake: files::Lake {
                    root,
                    sink: sink.into(),
                },
                remote: Some(s3::Remote::new(&bucket, &prefix)?),
            }
        }
    })
}

/// The size at which a lake file rolls (`platform.lake_file_target_mb`), local or S3
/// (larger files go up to S3 in parts).
pub fn file_target_bytes() -> usize {
    (crate::gucs::LAKE_FILE_TARGET_MB.get().max(1) as usize) << 20
}

pub fn parse_url(url: &str) -> Result<LakeUrl, LakeError> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    if url.starts_with("s3://") {
        return s3::parse(url)
            .map(|(bucket, prefix)| LakeUrl::S3 { bucket, prefix })
            .ok_or_else(|| LakeError::BadUrl(url.into()));
    }
    if path.starts_with('/') && !path.contains('\0') {
        let p = PathBuf::from(path);
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(LakeError::BadUrl(url.into()));
        }
        return Ok(LakeUrl::Local(p));
    }
    Err(LakeError::BadUrl(url.into()))
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

pub fn slot_name(sink: &str) -> String {
    format!("pg_platform_lake_{sink}")
}

/// Lake files are written by the server process, so creating and syncing a sink needs the
/// right to write server files (like COPY TO a file).
fn check_file_privilege() {
    let ok = crate::sql::read::<bool>(
        "SELECT pg_catalog.pg_has_role(current_user, 'pg_write_server_files', 'USAGE')",
        &[],
    )
    .unwrap_or(false);
    if !ok {
        raise(LakeError::NoFilePrivilege);
    }
}

/// The tables of the database the sink's patterns select, checked for what the lake needs:
/// a replica identity and no column named like a lake column. Returns the qualified names
/// of those a backfill reads (not partitions: their root is read).
fn check_tables(tables: Option<&str>) -> Vec<String> {
    let filter = crate::cdc::table_filter(tables, Some(EXCLUDED_TABLES)).or_raise();
    type Row = (String, String, String, bool, Vec<String>, bool, String);
    let rows: Vec<Row> = Spi::connect(|c| {
        let t = c.select(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    coalesce((SELECT array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
                    c.relispartition, c.oid::regclass::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
              ORDER BY 1, 2",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<bool>(4)?.unwrap_or(false),
                r.get::<Vec<String>>(5)?.unwrap_or_default(),
                r.get::<bool>(6)?.unwrap_or(false),
                r.get::<String>(7)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let mut selected = Vec::new();
    for (schema, table, ident, has_pk, cols, is_partition, regclass) in rows {
        if !filter.wants(&schema, &table) {
            continue;
        }
        let qualified = format!("{schema}.{table}");
        if ident == "n" || (ident == "d" && !has_pk) {
            raise(LakeError::NoIdentity(qualified));
        }
        if let Some(c) = cols.iter().find(|c| {
            files::META_COLUMNS.contains(&c.as_str()) || files::PARTITION_KEYS.contains(&c.as_str())
        }) {
            raise(LakeError::ReservedColumn(qualified, c.clone()));
        }
        if !is_partition && has_pk {
            selected.push(regclass);
        }
    }
    selected
}

/// The extension's own tables never go to the lake (the audit log has its own retention).
pub const EXCLUDED_TABLES: &str = "platform.*";

/// Creates a lake sink: checks the lake directory is writable by the server, checks the
/// selected tables (replica identity, no reserved column names), creates the replication
/// slot `pg_platform_lake_<name>` decoded by the pg_platform plugin and records the sink.
/// `tables` is a comma-separated list of `schema.table` globs (all tables when NULL).
/// With `background` (the default) the worker lands changes continuously; otherwise only
/// `platform.lake_sync(name)` does. With `backfill` (the default) the rows the tables
/// already hold are landed too (`_op = 'r'`), in chunks, consistently with the changes.
#[pg_extern(volatile)]
fn create_lake_sink(
    name: crate::sql::UnconvertedText,
    lake_url: crate::sql::UnconvertedText,
    tables: default!(Option<crate::sql::UnconvertedText>, "NULL"),
    background: default!(bool, true),
    backfill: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(sink, String),
        name!(slot_name, String),
        name!(lsn, String),
    ),
> {
    let name = name.as_str();
    let lake_url = lake_url.as_str();
    let tables = tables.as_deref();
    if !valid_name(name) {
        raise(LakeError::BadName(name.into()));
    }
    check_file_privilege();
    let url = parse_url(lake_url).or_raise();
    if crate::sql::read::<bool>(
        "SELECT true FROM platform.lake_sink WHERE name = $1",
        &[name.into()],
    )
    .is_some()
    {
        raise(LakeError::SinkExists(name.into()));
    }
    let slot = slot_name(name);
    if let Some(plugin) = crate::sql::read::<String>(
        "SELECT coalesce(plugin::text, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[slot.as_str().into()],
    ) {
        if plugin != "pg_platform" {
            raise(LakeError::SlotPlugin(slot, plugin));
        }
        raise(LakeError::SlotExists(slot));
    }
    let selected = check_tables(tables);
    match url {
        LakeUrl::Local(root) => {
            if let Err(e) = std::fs::create_dir_all(&root) {
                raise(LakeError::io(&root, e));
            }
        }
        // What a dropped sink of the same name left staged is not this sink's.
        LakeUrl::S3 { .. } => {
            DROPPED_S3.with_borrow_mut(|d| d.remove(name));
            s3::remove_staging(name).or_raise()
        }
    }
    let target = open_target(name, lake_url).or_raise();
    target.lake.prepare().or_raise();
    if let Some(remote) = &target.remote {
        remote.probe(name).or_raise();
    }
    crate::cdc::check_slot_settings();
    // Read-only SPI: a slot cannot be created once the transaction has an xid, so the slot
    // comes first and the sink row after it.
    let lsn = crate::sql::read::<String>(
        "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pg_platform')",
        &[slot.as_str().into()],
    )
    .unwrap_or_default();
    crate::sql::modify(
        "INSERT INTO platform.lake_sink (name, lake_url, slot_name, tables, start_lsn, last_end_lsn, background)
         VALUES ($1, $2, $3, $4, $5::pg_lsn, $5::pg_lsn, $6)",
        &[
            name.into(),
            lake_url.into(),
            slot.as_str().into(),
            tables.into(),
            lsn.as_str().into(),
            background.into(),
        ],
    );
    if backfill {
        // An empty table has nothing before the slot: its rows all come as changes.
        for t in selected {
            let has_rows =
                crate::sql::read::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM {t})"), &[])
                    .unwrap_or(false);
            if has_rows {
                crate::sql::modify(
                    "INSERT INTO platform.lake_backfill (sink, table_name) VALUES ($1, $2)",
                    &[name.into(), t.as_str().into()],
                );
            }
        }
    }
    TableIterator::once((name.to_string(), slot, lsn))
}

thread_local! {
    /// S3 sinks dropped in this transaction (and not made again in it): their staging
    /// directories go at commit.
    static DROPPED_S3: std::cell::RefCell<std::collections::HashSet<String>> =
        std::cell::RefCell::default();
}

/// Drops a lake sink and its replication slot. The files already in the lake stay.
#[pg_extern(volatile)]
fn drop_lake_sink(name: crate::sql::UnconvertedText) -> bool {
    let name = name.as_str();
    let slot = crate::sql::read::<String>(
        "SELECT slot_name::text FROM platform.lake_sink WHERE name = $1",
        &[name.into()],
    );
    let Some(slot) = slot else {
        raise(LakeError::UnknownSink(name.into()));
    };
    let url = crate::sql::read::<String>(
        "SELECT lake_url FROM platform.lake_sink WHERE name = $1",
        &[name.into()],
    )
    .unwrap_or_default();
    // An S3 sink's staging directory (manifests, files not uploaded yet) goes with it once
    // the drop commits, unless the transaction made a sink of that name again.
    if url.starts_with("s3://") {
        let sink = name.to_string();
        DROPPED_S3.with_borrow_mut(|d| d.insert(sink.clone()));
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
            if DROPPED_S3.with_borrow_mut(|d| d.remove(&sink)) {
                let _ = s3::remove_staging(&sink);
            }
        });
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || {
            DROPPED_S3.with_borrow_mut(|d| d.clear());
        });
    }
    if let Some(pid) = crate::sql::read::<i32>(
        "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active",
        &[slot.as_str().into()],
    ) {
        raise(LakeError::SlotActive(slot, pid));
    }
    crate::sql::modify(
        "DELETE FROM platform.lake_sink WHERE name = $1",
        &[name.into()],
    );
    // Last: dropping a slot cannot be rolled back.
    crate::sql::modify(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[slot.as_str().into()],
    );
    true
}

/// Starts (or restarts from the beginning) the backfill of one table of a sink: its
/// existing rows land as `_op = 'r'` rows, a chunk per batch, consistently with the change
/// stream. The table needs a primary key. Progress is in `platform.lake_backfills`.
#[pg_extern(volatile)]
fn lake_backfill(sink: crate::sql::UnconvertedText, table: crate::sql::RegClass) -> bool {
    let sink = sink.as_str();
    let tables = crate::sql::read::<String>(
        "SELECT coalesce(tables, '') FROM platform.lake_sink WHERE name = $1",
        &[sink.into()],
    );
    let Some(tables) = tables else {
        raise(LakeError::UnknownSink(sink.into()));
    };
    let name = crate::sql::read::<String>("SELECT $1::oid::regclass::text", &[table.0.into()])
        .unwrap_or_default();
    let selected = check_tables((!tables.is_empty()).then_some(tables.as_str()));
    if !selected.contains(&name) {
        if backfill::primary_key(table.0).is_empty() {
            raise(LakeError::NoPrimaryKey(name));
        }
        raise(LakeError::NotInSink(name, sink.into()));
    }
    crate::sql::modify(
        "INSERT INTO platform.lake_backfill (sink, table_name) VALUES ($1, $2)
         ON CONFLICT (sink, table_name) DO UPDATE
            SET state = 'running', last_key = NULL, rows = 0, chunks = 0,
                started_at = clock_timestamp(), finished_at = NULL",
        &[sink.into(), name.as_str().into()],
    );
    true
}

/// The DuckDB query that reads one table of a sink's lake. Zone `bronze` (the default):
/// every change file across schema versions (`union_by_name`), the commit-day partition
/// keys typed as integers. Zone `current`: the table's file of the current-zone cut
/// (`platform.lake_compact`). `table` is `schema.table` as landed (a partitioned table by
/// its root).
#[pg_extern(stable)]
fn lake_read_sql(
    sink: crate::sql::UnconvertedText,
    table: crate::sql::UnconvertedText,
    zone: default!(crate::sql::UnconvertedText, "'bronze'"),
) -> String {
    let sink = sink.as_str();
    let table = table.as_str();
    let zone = zone.as_str();
    let url = crate::sql::read::<String>(
        "SELECT lake_url FROM platform.lake_sink WHERE name = $1",
        &[sink.into()],
    );
    let Some(url) = url else {
        raise(LakeError::UnknownSink(sink.into()));
    };
    let Some((schema, name)) = table.split_once('.') else {
        raise(LakeError::NotInSink(table.into(), sink.into()));
    };
    let quote = |p: &Path| p.display().to_string().replace('\'', "''");
    match zone {
        "bronze" => {
            let hive = "hive_partitioning = true, union_by_name = true, \
                 hive_types = {'_commit_year': INTEGER, '_commit_month': INTEGER, '_commit_day': INTEGER}";
            match parse_url(&url).or_raise() {
                LakeUrl::Local(root) => {
                    let glob = root.join(schema).join(name).join("**").join("*.parquet");
                    format!("SELECT * FROM read_parquet('{}', {hive})", quote(&glob))
                }
                // A bucket, through DuckDB's httpfs extension: a merged file is uploaded
                // before the files it replaces are deleted, so the files whose LSN range
                // (in their names) a merged file of the same day covers are skipped.
                LakeUrl::S3 { .. } => {
                    let glob = quote(
                        &PathBuf::from(url.trim_end_matches('/'))
                            .join(schema)
                            .join(name)
                            .join("**")
                            .join("*.parquet"),
                    );
                    format!(
                        "SELECT * EXCLUDE (_pg_platform_file) FROM read_parquet('{glob}', {hive}, \
                         filename = '_pg_platform_file') WHERE _pg_platform_file NOT IN (\
                         WITH f AS (SELECT file, parse_dirpath(file) AS dir, regexp_extract(parse_filename(file), \
                         '^(merged_)?([0-9A-F]{{16}})_([0-9A-F]{{16}})(_[0-9]+)?\\.parquet$', ['m', 's', 'e']) AS n \
                         FROM glob('{glob}')) \
                         SELECT f.file FROM f JOIN f AS m ON m.dir = f.dir AND m.file <> f.file \
                         WHERE m.n.m <> '' AND f.n.s <> '' AND m.n.s <= f.n.s AND f.n.e <= m.n.e)"
                    )
                }
            }
        }
        "current" => {
            let (root, lake) = match parse_url(&url).or_raise() {
                LakeUrl::Local(root) => (
                    root.clone(),
                    files::Lake {
                        root,
                        sink: sink.into(),
                    },
                ),
                // The pointer is staged; the files are read from the bucket.
                LakeUrl::S3 { .. } => (
                    PathBuf::from(url.trim_end_matches('/')),
                    files::Lake {
                        root: s3::staging_root(sink),
                        sink: sink.into(),
                    },
                ),
            };
            let pointer = compact::read_pointer(&lake).or_raise();
            let Some(entry) = pointer.tables.iter().find(|t| t.0 == table) else {
                raise(LakeError::NotCompacted(table.into()));
            };
            format!(
                "SELECT * FROM read_parquet('{}')",
                quote(&root.join(&entry.1))
            )
        }
        other => raise(LakeError::BadZone(other.into())),
    }
}

/// The DuckDB script that builds the analysts' star schema (`sql/lake/star_schema.duckdb.sql`:
/// dim_date, dim_customer, dim_merchant, dim_location, dim_payment_method, fact_revenue,
/// fact_fraud_analysis, fact_customer_segmentation) from the current zone of a sink that
/// lands the reference payments schema `schema`: views over the tables' current files,
/// then the star's tables. Run `platform.lake_compact(sink)` first.
#[pg_extern(stable)]
fn lake_star_schema_sql(
    sink: crate::sql::UnconvertedText,
    schema: default!(crate::sql::UnconvertedText, "'payments'"),
) -> String {
    let sink = sink.as_str();
    let schema = schema.as_str();
    let mut out = String::from("-- the current zone of the sink, as the star schema's sources\n");
    for t in [
        "transaction",
        "customer",
        "merchant",
        "location",
        "payment_method",
    ] {
        let read = lake_read_sql(
            sink.into(),
            format!("{schema}.{t}").as_str().into(),
            "current".into(),
        );
        out.push_str(&format!("CREATE OR REPLACE VIEW src_{t} AS {read};\n"));
    }
    out.push('\n');
    out.push_str(include_str!("../../sql/lake/star_schema.duckdb.sql"));
    out
}

/// Merges the small bronze files of past days: for each table and commit day before
/// `before` (UTC, default yesterday) whose files are all folded into the current zone, one
/// file replaces them, switched in atomically (readers never see a row twice or miss one).
/// With `recent`, each later day's small files folded so far become one file too (the
/// worker does this after each compaction), so a day in progress never holds more than a
/// file per merge plus the batches since the last.
#[pg_extern(volatile)]
fn lake_merge(
    sink: crate::sql::UnconvertedText,
    before: default!(Option<pgrx::datum::Date>, "NULL"),
    recent: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(path, String),
        name!(merged_files, i32),
        name!(rows, i64),
    ),
> {
    let sink = sink.as_str();
    check_file_privilege();
    let before = match before {
        Some(d) => d.to_string(),
        None => {
            crate::sql::read::<String>("SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text", &[])
                .unwrap_or_default()
        }
    };
    TableIterator::new(merge_sink(sink, &before, recent))
}

/// The work of `lake_merge` (also run by the worker after a compaction).
pub fn merge_sink(sink: &str, before_day: &str, recent: bool) -> Vec<(String, String, i32, i64)> {
    let url = Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lake_url FROM platform.lake_sink WHERE name = $1 FOR UPDATE",
            Some(1),
            &[sink.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        t.first().get::<String>(1)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let Some(url) = url else {
        raise(LakeError::UnknownSink(sink.into()));
    };
    // An S3 lake merges in its staging directory; the bucket gets the merged file.
    let target = open_target(sink, &url).or_raise();
    let lake = &target.lake;
    let mut out = Vec::new();
    // Merges a crash interrupted: finished, or (never switched in locally) forgotten.
    for (g, path) in merge::intents(lake) {
        let recorded = crate::sql::read::<bool>(
            "SELECT count(*) FILTER (WHERE path = $2) > 0 OR count(*) FILTER (WHERE path = ANY($3)) < $4
               FROM platform.lake_file WHERE sink = $1",
            &[
                sink.into(),
                path.as_str().into(),
                g.files.clone().into(),
                (g.files.len() as i64).into(),
            ],
        )
        .unwrap_or(true);
        let m = match &target.remote {
            _ if recorded => None,
            Some(remote) => Some(merge::merge_group_s3(lake, remote, &g).or_raise()),
            None if lake.root.join(&path).exists() => Some(merge::read_manifest(lake, &g)),
            None => {
                merge::clear_intent(lake, &g, false);
                None
            }
        };
        match m {
            Some(m) => out.push(record_merge(sink, &target, &g, m)),
            None if recorded => merge::clear_intent(lake, &g, true),
            None => {}
        }
    }
    let groups = merge::groups(lake, sink, before_day, recent, target.remote.is_some()).or_raise();
    for g in groups {
        let m = match &target.remote {
            Some(remote) => merge::merge_group_s3(lake, remote, &g).or_raise(),
            None => merge::merge_group(lake, &g).or_raise(),
        };
        out.push(record_merge(sink, &target, &g, m));
    }
    out
}

/// Records a merge in `platform.lake_file`: the merged file in place of the group's.
fn record_merge(
    sink: &str,
    target: &Target,
    g: &merge::Group,
    m: merge::Merged,
) -> (String, String, i32, i64) {
    let bytes = match &target.remote {
        Some(_) => m.bytes as i64,
        None => std::fs::metadata(target.lake.root.join(&m.path)).map_or(0, |f| f.len() as i64),
    };
    let day = crate::sql::read::<String>(
        "SELECT commit_day::text FROM platform.lake_file WHERE sink = $1 AND path = $2",
        &[sink.into(), g.files[0].as_str().into()],
    )
    .unwrap_or_default();
    crate::sql::modify(
        "DELETE FROM platform.lake_file WHERE sink = $1 AND path = ANY($2)",
        &[sink.into(), g.files.clone().into()],
    );
    crate::sql::modify(
        "INSERT INTO platform.lake_file (sink, path, schema_name, table_name, commit_day, rows, bytes,
                                         start_lsn, end_lsn, min_lsn, max_lsn, landed_at)
         VALUES ($1, $2, $3, $4, $5::date, $6, $7, $8::pg_lsn, $9::pg_lsn, $8::pg_lsn, $9::pg_lsn, clock_timestamp())",
        &[
            sink.into(),
            m.path.as_str().into(),
            g.schema.as_str().into(),
            g.table.as_str().into(),
            day.as_str().into(),
            (m.rows as i64).into(),
            bytes.into(),
            files::lsn_text(g.start).as_str().into(),
            files::lsn_text(g.end).as_str().into(),
        ],
    );
    // Once the record commits, the merge's intent is done with (a rollback keeps it: the
    // next merge run records the merge again).
    let intent = merge::intent_path(&target.lake, g);
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        let _ = std::fs::remove_file(&intent);
    });
    (
        format!("{}.{}", g.schema, g.table),
        m.path,
        g.files.len() as i32,
        m.rows as i64,
    )
}

/// Writes the current-state zone of a sink: every table (or the one named) as of the
/// sink's last committed batch, with updates and deletes applied and unchanged TOAST values
/// taken from the row's earlier image, folded incrementally into the previous current
/// file. The pointer `_pg_platform/<sink>/current.json` names the files of the cut.
#[pg_extern(volatile)]
fn lake_compact(
    sink: crate::sql::UnconvertedText,
    table: default!(Option<crate::sql::UnconvertedText>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(path, String),
        name!(rows, i64),
        name!(merged_files, i32),
    ),
> {
    let sink = sink.as_str();
    let table = table.as_deref();
    check_file_privilege();
    let out = compact_sink(sink, table);
    TableIterator::new(
        out.into_iter()
            .map(|c| (c.table, c.path, c.rows as i64, c.merged_files as i32)),
    )
}

/// The work of `lake_compact` (also run by the worker).
pub fn compact_sink(sink: &str, only: Option<&str>) -> Vec<compact::Compacted> {
    let row = Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lake_url, last_end_lsn::text FROM platform.lake_sink WHERE name = $1 FOR UPDATE",
            Some(1),
            &[sink.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
        )))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let Some((url, cut)) = row else {
        raise(LakeError::UnknownSink(sink.into()));
    };
    let cut = files::parse_lsn(&cut).unwrap_or(0);
    // An S3 lake is compacted in its staging directory: the files the fold reads are
    // fetched from the bucket, the new current files and the pointer uploaded (the pointer
    // last); current files stay staged as the next fold's base.
    let target = open_target(sink, &url).or_raise();
    let lake = &target.lake;
    let mut pointer = compact::read_pointer(lake).or_raise();
    let previous = pointer.clone();
    let tables: Vec<String> = Spi::connect(|c| {
        let t = c.select(
            "SELECT DISTINCT schema_name || '.' || table_name FROM platform.lake_file
              WHERE sink = $1 AND ($2::text IS NULL OR schema_name || '.' || table_name = $2) ORDER BY 1",
            None,
            &[sink.into(), only.into()],
        )?;
        let mut v = Vec::new();
        for r in t {
            v.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::SpiError>(v)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    if let Some(t) = only {
        if tables.is_empty() {
            raise(LakeError::NotInSink(t.into(), sink.into()));
        }
    }
    let mut out = Vec::new();
    for t in tables {
        let entry = pointer.tables.iter().position(|e| e.0 == t);
        let prev_cut = entry.map_or(0, |i| pointer.tables[i].2);
        if prev_cut >= cut {
            continue;
        }
        let Some((schema, name)) = t.split_once('.') else {
            continue;
        };
        let bronze: Vec<String> = Spi::connect(|c| {
            let r = c.select(
                "SELECT path FROM platform.lake_file
                  WHERE sink = $1 AND schema_name = $2 AND table_name = $3
                    AND end_lsn > $4::pg_lsn AND end_lsn <= $5::pg_lsn
                  ORDER BY start_lsn, path",
                None,
                &[
                    sink.into(),
                    schema.into(),
                    name.into(),
                    files::lsn_text(prev_cut).as_str().into(),
                    files::lsn_text(cut).as_str().into(),
                ],
            )?;
            let mut v = Vec::new();
            for row in r {
                v.push(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok::<_, pgrx::spi::SpiError>(v)
        })
        .map_err(SpiFailure::from)
        .or_raise();
        if bronze.is_empty() {
            if let Some(i) = entry {
                pointer.tables[i].2 = cut;
            }
            continue;
        }
        let mut key =
            crate::sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[t.as_str().into()])
                .map(backfill::primary_key)
                .unwrap_or_default();
        if key.is_empty() {
            key = entry
                .map(|i| pointer.tables[i].4.clone())
                .unwrap_or_default();
        }
        if key.is_empty() {
            raise(LakeError::CompactKey(format!("{t} has no primary key")));
        }
        let path = format!("current/{schema}/{name}/{:016X}.parquet", cut);
        let base = entry.map(|i| pointer.tables[i].1.clone());
        if let Some(remote) = &target.remote {
            for f in bronze.iter().chain(base.iter()) {
                remote.fetch(f, &lake.root.join(f)).or_raise();
            }
        }
        let rows = compact::compact_table(lake, base.as_deref(), &bronze, &key, &path).or_raise();
        if let Some(remote) = &target.remote {
            // Overwritable: no pointer names it until the pointer below is uploaded.
            remote
                .put_file(&path, &lake.root.join(&path), false)
                .or_raise();
            for f in &bronze {
                let _ = std::fs::remove_file(lake.root.join(f));
            }
        }
        let e = (t.clone(), path.clone(), cut, rows, key);
        match entry {
            Some(i) => pointer.tables[i] = e,
            None => pointer.tables.push(e),
        }
        out.push(compact::Compacted {
            table: t,
            path,
            rows,
            merged_files: bronze.len(),
        });
    }
    pointer.cut = cut;
    compact::write_pointer(lake, &pointer).or_raise();
    if let Some(remote) = &target.remote {
        let p = compact::pointer_path(lake);
        remote.put_file(&lake.relative(&p), &p, false).or_raise();
    }
    // Files of cuts before the previous one: no reader that followed a pointer needs them.
    for (t, path, ..) in &pointer.tables {
        let keep_prev = previous
            .tables
            .iter()
            .find(|e| &e.0 == t)
            .map(|e| e.1.clone());
        let dir = lake.root.join(path).parent().map(Path::to_path_buf);
        if let Some(dir) = dir {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let rel = format!(
                        "{}/{}",
                        Path::new(path)
                            .parent()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        e.file_name().to_string_lossy()
                    );
                    // A `.pending` here is a fold a crash interrupted (folds hold the sink's
                    // row lock, so none is in flight).
                    let pending = rel.ends_with(".parquet.pending");
                    let stale = rel.ends_with(".parquet") || pending;
                    if &rel != path && Some(&rel) != keep_prev.as_ref() && stale {
                        let _ = std::fs::remove_file(e.path());
                        if let (Some(remote), false) = (&target.remote, pending) {
                            remote.delete(&rel).or_raise();
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs one batch of the sink in this backend: recovers what a crash left, lands every
/// change committed up to the flushed WAL (at most `platform.lake_batch_wal_mb` of WAL) as
/// Parquet, commits the batch with its manifest and advances the slot. Idle sinks advance
/// their slot too, so WAL never piles up behind them. Returns what it landed.
#[pg_extern(volatile)]
fn lake_sync(
    sink: crate::sql::UnconvertedText,
) -> TableIterator<
    'static,
    (
        name!(start_lsn, String),
        name!(end_lsn, String),
        name!(files, i32),
        name!(rows, i64),
        name!(bytes, i64),
        name!(recovered, bool),
    ),
> {
    let sink = sink.as_str();
    check_file_privilege();
    let r = sync::run(sink);
    TableIterator::once((
        files::lsn_text(r.start),
        files::lsn_text(r.end),
        r.files as i32,
        r.rows as i64,
        r.bytes as i64,
        r.recovered,
    ))
}

pgrx::extension_sql!(
    r#"
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
"#,
    name = "lake_tables",
);
