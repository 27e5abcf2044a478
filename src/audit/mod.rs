//! RBAC-aware audit: who changed which row, when, from where, under which role, recorded
//! in the changing transaction into an append-only, hash-chained log.
//!
//! - `audit_table` puts statement-level AFTER triggers with transition tables on a table
//!   (see `trigger`): one log INSERT per statement, however many rows it touched.
//! - `platform.audit_log` refuses UPDATE, DELETE and TRUNCATE for every role (triggers
//!   enabled ALWAYS, so `session_replication_role = replica` does not bypass them).
//! - `seal_audit` (run by the worker every round) chains the rows into blocks by ranges of
//!   transaction ids (see `chain`); `verify_audit` re-derives every hash.

mod chain;
mod guard;
mod log;
#[cfg(test)]
mod tests;
mod trigger;

pub use log::before_retire;

use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use crate::sql::{self, RegClass, ServerText};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0} cannot be audited: only ordinary and partitioned tables can")]
    NotTable(String),
    #[error("{0} belongs to pg_platform and cannot be audited")]
    OwnTable(String),
    #[error("column \"{1}\" of {0} does not exist")]
    NoColumn(String, String),
    #[error("exclude_columns of {0} holds a NULL: give column names only")]
    NullColumn(String),
    #[error("pg_platform's audit log (platform.audit_log and its sequence) is missing")]
    LogMissing,
    #[error("platform.audit_log has no partition for {}", timestamp_text(*.0))]
    NoPartition(i64),
    #[error("\"{0}\" is not a transaction id (xid8)")]
    NotXid(String),
}

/// Unix microseconds as an ISO timestamp in UTC, for messages.
fn timestamp_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(
        || us.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

impl SqlError for AuditError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NotTable(_) => ERRCODE_WRONG_OBJECT_TYPE,
            Self::OwnTable(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::NoColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            Self::NullColumn(..) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::LogMissing => ERRCODE_UNDEFINED_TABLE,
            Self::NoPartition(_) => ERRCODE_CHECK_VIOLATION,
            Self::NotXid(_) => ERRCODE_INVALID_TEXT_REPRESENTATION,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::NotTable(_) => Some("Audit the table the view reads from.".into()),
            Self::LogMissing => Some("Check that pg_platform is installed completely in this database (\\dx+ pg_platform).".into()),
            Self::NotXid(_) => Some("Pass the log's xid as text: xid::text.".into()),
            Self::NoPartition(_) => Some("Run SELECT * FROM platform.run_maintenance('platform.audit_log') and look at its error column; the worker does it on its own when pg_platform is preloaded.".into()),
            _ => None,
        }
    }
}

const TRIGGERS: [(&str, &str); 4] = [
    (
        "platform_audit_insert",
        "AFTER INSERT ON {t} REFERENCING NEW TABLE AS platform_audit_new",
    ),
    (
        "platform_audit_update",
        "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS platform_audit_old NEW TABLE AS platform_audit_new",
    ),
    (
        "platform_audit_delete",
        "AFTER DELETE ON {t} REFERENCING OLD TABLE AS platform_audit_old",
    ),
    ("platform_audit_truncate", "AFTER TRUNCATE ON {t}"),
];

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Called from `_PG_init`: the DDL guard of the log.
pub fn init() {
    guard::init();
}

/// Starts auditing a table: every INSERT, UPDATE (changed columns, old and new), DELETE and
/// TRUNCATE is recorded in `platform.audit_log` in the same transaction, with the session
/// and current role, role class, client address, application and backend. Columns in
/// `exclude_columns` are left out of the images; `include_statement` adds the statement
/// text. Calling it again changes the settings. Returns the table.
#[pg_extern]
fn audit_table(
    tbl: RegClass,
    exclude_columns: default!(Vec<Option<ServerText>>, "ARRAY[]::text[]"),
    include_statement: default!(bool, false),
) -> RegClass {
    let found = Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relkind::text, format('%I.%I', n.nspname, c.relname), n.nspname = 'platform'
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            Some(1),
            &[tbl.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<ServerText>(2)?.unwrap_or_default().0,
            r.get::<bool>(3)?.unwrap_or(false),
        )))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let Some((kind, name, own)) = found else {
        raise(AuditError::NotTable(format!("relation with OID {}", tbl.0)))
    };
    if own {
        raise(AuditError::OwnTable(name));
    }
    if kind != "r" && kind != "p" {
        raise(AuditError::NotTable(name));
    }
    // The log's partitions exist before the first audited change needs one.
    log::ensure_partitions();
    // Names as UTF-8 (ServerText): a LATIN1 database's `pièce` is compared, quoted and
    // stored in its own encoding again.
    let exclude_columns: Vec<String> = exclude_columns
        .into_iter()
        .map(|c| {
            c.map(|c| c.0)
                .unwrap_or_else(|| raise(AuditError::NullColumn(name.clone())))
        })
        .collect();
    for c in &exclude_columns {
        let exists = sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[tbl.into(), ServerText(c.clone()).into()],
        );
        if exists.is_none() {
            raise(AuditError::NoColumn(name, c.clone()));
        }
    }
    let mut args = vec![literal(if include_statement { "true" } else { "false" })];
    args.extend(exclude_columns.iter().map(|c| literal(c)));
    let args = args.join(", ");
    for (trigger, when) in TRIGGERS {
        let exists = sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
            &[tbl.into(), trigger.into()],
        );
        if exists.is_some() {
            sql::run(&format!("DROP TRIGGER {trigger} ON {name}"));
        }
        sql::run(&format!(
            "CREATE TRIGGER {trigger} {} FOR EACH STATEMENT EXECUTE FUNCTION platform.audit_trigger({args});
             ALTER TABLE {name} ENABLE ALWAYS TRIGGER {trigger}",
            when.replace("{t}", &name)
        ));
    }
    tbl
}

/// Stops auditing a table (its rows already in the log stay). Returns whether it was audited.
#[pg_extern]
fn unaudit_table(tbl: RegClass) -> bool {
    let name = sql::read::<ServerText>("SELECT $1::regclass::text", &[tbl.into()])
        .unwrap_or_default()
        .0;
    let had = sql::read::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname LIKE 'platform\\_audit\\_%'",
        &[tbl.into()],
    )
    .unwrap_or(0);
    if had > 0 {
        for (trigger, _) in TRIGGERS {
            sql::run(&format!("DROP TRIGGER IF EXISTS {trigger} ON {name}"));
        }
    }
    had > 0
}

/// Called by the DDL event trigger: one audit row per command of the finished DDL
/// statement. Reads `pg_event_trigger_ddl_commands()` itself, so it cannot be called to
/// forge rows outside an event trigger.
#[pg_extern]
fn record_audit_ddl() {
    record_event(
        "DDL",
        "SELECT command_tag, object_type, object_identity,
                CASE WHEN classid = 'pg_catalog.pg_class'::regclass THEN objid END
           FROM pg_catalog.pg_event_trigger_ddl_commands() WHERE NOT in_extension",
    );
}

/// Called by the drop event trigger: one audit row per dropped object.
#[pg_extern]
fn record_audit_drop() {
    record_event(
        "DROP",
        "SELECT 'DROP', object_type, object_identity,
                CASE WHEN classid = 'pg_catalog.pg_class'::regclass THEN objid END
           FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE original",
    );
}

fn record_event(operation: &str, query: &str) {
    // The DDL that makes a log partition for a row being written is not audited itself.
    if !crate::gucs::AUDIT_DDL.get() || log::ensuring() {
        return;
    }
    let events: Vec<(String, String, String, Option<pg_sys::Oid>)> = Spi::connect(|c| {
        let rows = c.select(query, None, &[])?;
        let mut out = Vec::new();
        for r in rows {
            // Identities name objects in the database's encoding; recorded as UTF-8.
            out.push((
                r.get::<ServerText>(1)?.unwrap_or_default().0,
                r.get::<ServerText>(2)?.unwrap_or_default().0,
                r.get::<ServerText>(3)?.unwrap_or_default().0,
                r.get::<pg_sys::Oid>(4)?,
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    for (tag, kind, identity, oid) in events {
        if identity.is_empty() {
            continue;
        }
        let mut details = b"{\"command_tag\":".to_vec();
        crate::cdc::encoding::string(&mut details, &tag);
        details.extend_from_slice(b",\"object_type\":");
        crate::cdc::encoding::string(&mut details, &kind);
        details.push(b'}');
        trigger::record(
            operation,
            oid,
            identity,
            vec![trigger::Row {
                primary_key: None,
                old: None,
                new: Some(String::from_utf8(details).unwrap_or_default()),
            }],
            true,
        );
    }
}

/// Seals the audit rows of every finished transaction not yet sealed into one new block of
/// the hash chain. Returns how many rows it sealed. The worker calls it every round.
#[pg_extern]
fn seal_audit() -> i64 {
    register_if_audited();
    sql::as_extension_owner(seal)
}

/// Registers the log for partition management once some table is audited (an upgraded
/// 0.3.0 log, or a fresh install whose first audited table came through a restore).
/// Never before: during a restore, the dump's own partitions of the log are created before
/// any audited table is, and must not meet partitions made meanwhile.
fn register_if_audited() {
    let due = sql::read::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM platform.partition_config WHERE parent = 'platform.audit_log'::regclass)
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = 'platform_audit_insert')",
        &[],
    )
    .unwrap_or(false);
    if due {
        log::ensure_partitions();
    }
}

fn xid(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

fn seal() -> i64 {
    // Sealers take turns; writers never take this lock.
    sql::run(
        "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pg_platform audit seal'))",
    );
    let cluster = trigger::cluster_id();
    let last = Spi::connect(|c| {
        let t = c.select(
            "SELECT block_no, block_hash,
                    (SELECT max(xid_hi)::text FROM platform.audit_block WHERE cluster_id = $1)
               FROM platform.audit_block ORDER BY block_no DESC LIMIT 1",
            Some(1),
            &[cluster.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<Vec<u8>>(2)?.unwrap_or_default(),
            r.get::<String>(3)?,
        )))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    // The chain goes on across clusters; transaction id ranges restart with each cluster.
    let (block_no, prev, lo) = match last {
        Some((n, hash, hi)) => (n + 1, hash, hi.unwrap_or_else(|| "0".into())),
        None => (1, vec![0u8; 32], "0".to_string()),
    };
    // Every transaction older than the oldest one running has ended: none of them can add
    // a row to this range later.
    // Rows still pending (no partition for them yet) hold the range back: they join the
    // log later and must not land in a range already sealed.
    let pending = sql::read::<bool>(
        "SELECT to_regclass('platform.audit_log_pending') IS NOT NULL",
        &[],
    )
    .unwrap_or(false);
    let hi = if pending {
        log::move_pending(log_oid());
        sql::read::<String>(
            "SELECT least(pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()),
                          (SELECT min(xid) FROM platform.audit_log_pending WHERE cluster_id = $1))::text",
            &[cluster.into()],
        )
    } else {
        sql::read::<String>(
            "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text",
            &[],
        )
    }
    .unwrap_or_default();
    if xid(&hi) <= xid(&lo) {
        return 0;
    }
    // One block per log partition that holds rows of the range, in time order: retention
    // drops whole partitions, so it removes whole blocks.
    let parts = log_partitions();
    let mut buckets: Vec<chain::RowsHash> =
        parts.iter().map(|_| chain::RowsHash::default()).collect();
    let mut outside = 0i64;
    Spi::connect(|c| {
        let mut cursor = c.open_cursor(
            "SELECT (extract(epoch FROM event_time) * 1000000)::int8, row_hash FROM platform.audit_log l
              WHERE l.cluster_id = $1 AND l.xid >= $2::xid8 AND l.xid < $3::xid8
              ORDER BY l.xid, l.statement_seq, l.row_seq",
            &[cluster.into(), lo.as_str().into(), hi.as_str().into()],
        );
        loop {
            let batch = cursor.fetch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let t = r.get::<i64>(1)?.unwrap_or(0);
                let hash = r.get::<Vec<u8>>(2)?.unwrap_or_default();
                match parts.iter().position(|p| p.contains(t)) {
                    Some(i) => buckets[i].add(&hash),
                    None => outside += 1,
                }
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(SpiFailure::from)
    .or_raise();
    if outside > 0 {
        // Only a partition attached by hand with overlapping or default bounds can do
        // this; sealing waits rather than leave rows out of the chain.
        warning!("pg_platform: {outside} audit rows lie outside every partition of platform.audit_log; sealing waits");
        return 0;
    }
    let (mut block_no, mut prev) = (block_no, prev);
    let mut sealed = 0;
    for (part, rows) in parts.iter().zip(buckets) {
        let (rows_hash, count) = rows.finish();
        if count == 0 {
            continue;
        }
        let block = chain::Block {
            block_no,
            cluster_id: cluster,
            xid_lo: xid(&lo),
            xid_hi: xid(&hi),
            row_count: count,
            rows_hash: &rows_hash,
            prev_hash: &prev,
            time_lo: part.lo,
            time_hi: part.hi,
        };
        let hash = block.hash();
        // A block without a time range is written without the time columns, which the
        // 0.3.0 block table (the library updated, not yet the extension) does not have.
        let insert = if part.lo.is_none() && part.hi.is_none() {
            "INSERT INTO platform.audit_block (block_no, cluster_id, xid_lo, xid_hi, row_count, rows_hash, prev_hash, block_hash)
             VALUES ($1, $2, $3::xid8, $4::xid8, $5, $6, $7, $8)"
        } else {
            "INSERT INTO platform.audit_block (block_no, cluster_id, xid_lo, xid_hi, row_count, rows_hash, prev_hash, block_hash, time_lo, time_hi)
             VALUES ($1, $2, $3::xid8, $4::xid8, $5, $6, $7, $8, to_timestamp($9 / 1000000.0), to_timestamp($10 / 1000000.0))"
        };
        let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
            block_no.into(),
            cluster.into(),
            lo.as_str().into(),
            hi.as_str().into(),
            count.into(),
            rows_hash.to_vec().into(),
            prev.clone().into(),
            hash.to_vec().into(),
        ];
        if part.lo.is_some() || part.hi.is_some() {
            args.push(part.lo.into());
            args.push(part.hi.into());
        }
        sql::modify(insert, &args);
        sealed += count;
        block_no += 1;
        prev = hash.to_vec();
    }
    sealed
}

fn log_oid() -> pg_sys::Oid {
    let log = sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.audit_log')::oid", &[])
        .unwrap_or(pg_sys::InvalidOid);
    if log == pg_sys::InvalidOid {
        raise(AuditError::LogMissing);
    }
    log
}

/// The log's partitions, in time order.
fn log_partitions() -> Vec<log::LogPartition> {
    log::partitions(log_oid())
}

/// What retention removed from the log, from its `RETENTION` rows: the time before which
/// partitions were retired, and whether the partition that held the rows sealed before
/// the log was partitioned is gone.
pub(crate) struct Expired {
    pub horizon: Option<i64>,
    pub unpartitioned_blocks: bool,
}

pub(crate) fn retention_horizon() -> Expired {
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT max((new_values->>'horizon_us')::int8),
                    coalesce(bool_or(pg_catalog.json_typeof(new_values->'range_from_us') = 'null'), false)
               FROM platform.audit_log WHERE operation = 'RETENTION'",
            Some(1),
            &[],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((r.get::<i64>(1)?, r.get::<bool>(2)?.unwrap_or(false)))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    Expired {
        horizon: row.0,
        unpartitioned_blocks: row.1,
    }
}

const SELECT_ROWS: &str =
    "SELECT id, cluster_id, (extract(epoch FROM event_time) * 1000000)::int8, xid::text, statement_seq,
       row_seq, operation, table_name, primary_key::text, old_values::text, new_values::text,
       session_user_name, current_user_name, role_class, client_addr::text, client_port,
       application_name, backend_pid, statement, row_hash
  FROM platform.audit_log l WHERE l.cluster_id = $1 AND l.xid >= $2::xid8 AND l.xid < $3::xid8
   AND ($4::int8 IS NULL OR l.event_time >= pg_catalog.to_timestamp($4::float8 / 1000000))
   AND ($5::int8 IS NULL OR l.event_time < pg_catalog.to_timestamp($5::float8 / 1000000))
 ORDER BY l.cluster_id, l.xid, l.statement_seq, l.row_seq"; // qualified: `xid` alone would sort the text column

fn check_pending() -> (Option<i64>, i64) {
    let exists = sql::read::<bool>(
        "SELECT to_regclass('platform.audit_log_pending') IS NOT NULL",
        &[],
    )
    .unwrap_or(false);
    if !exists {
        return (None, 0);
    }
    let query = SELECT_ROWS
        .replace(
            "FROM platform.audit_log l",
            "FROM platform.audit_log_pending l",
        )
        .replace(
            "WHERE l.cluster_id = $1",
            "WHERE ($1::int8 IS NULL OR l.cluster_id = $1)",
        );
    let (bad, _, rows) = check_rows_with(&query, None, "0", &u64::MAX.to_string(), (None, None));
    (bad, rows)
}

/// Recomputes the rows of transactions `[lo, hi)` with event times in `time` (Unix
/// microseconds, None: unbounded): the first row whose content does not match its stored
/// hash, and the hash over the stored row hashes.
fn check_rows(
    cluster: i64,
    lo: &str,
    hi: &str,
    time: (Option<i64>, Option<i64>),
) -> (Option<i64>, [u8; 32], i64) {
    check_rows_with(SELECT_ROWS, Some(cluster), lo, hi, time)
}

fn check_rows_with(
    query: &str,
    cluster: Option<i64>,
    lo: &str,
    hi: &str,
    time: (Option<i64>, Option<i64>),
) -> (Option<i64>, [u8; 32], i64) {
    let mut rows = chain::RowsHash::default();
    let mut bad = None;
    let text = |t: Option<ServerText>| t.map(|t| t.0);
    let mut context: Option<((i64, u64, i32), chain::Record)> = None;
    let mut hasher = None;
    Spi::connect(|c| {
        let mut cursor = c.open_cursor(
            query,
            &[
                cluster.into(),
                lo.into(),
                hi.into(),
                time.0.into(),
                time.1.into(),
            ],
        );
        loop {
            let batch = cursor.fetch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let mut record = chain::Record {
                    cluster_id: r.get::<i64>(2)?.unwrap_or(0),
                    event_time_us: r.get::<i64>(3)?.unwrap_or(0),
                    xid: xid(&r.get::<String>(4)?.unwrap_or_default()),
                    statement_seq: r.get::<i32>(5)?.unwrap_or(0),
                    row_seq: r.get::<i32>(6)?.unwrap_or(0),
                    // Text was hashed as UTF-8 and stored in the database's encoding.
                    operation: text(r.get(7)?).unwrap_or_default(),
                    table_name: text(r.get(8)?).unwrap_or_default(),
                    primary_key: text(r.get(9)?),
                    old_values: text(r.get(10)?),
                    new_values: text(r.get(11)?),
                    session_user: text(r.get(12)?).unwrap_or_default(),
                    current_user: text(r.get(13)?).unwrap_or_default(),
                    role_class: text(r.get(14)?).unwrap_or_default(),
                    client_addr: r.get::<String>(15)?,
                    client_port: r.get::<i32>(16)?,
                    application_name: text(r.get(17)?),
                    backend_pid: r.get::<i32>(18)?.unwrap_or(0),
                    statement: text(r.get(19)?),
                };
                // Who and from where are stored on a statement's first row only (0.5.0
                // on): the later rows were hashed with the first row's. A row whose first
                // row is missing is hashed with none, so it does not match.
                let statement = (record.cluster_id, record.xid, record.statement_seq);
                // Only the first row is the source, as for platform.audit_trail.
                if r.get::<ServerText>(12)?.is_none() {
                    if let Some((_, first)) = context.as_ref().filter(|(s, _)| *s == statement) {
                        record.with_context_of(first);
                    }
                } else if record.row_seq == 1 {
                    context = Some((statement, record.clone()));
                }
                let stored = r.get::<Vec<u8>>(20)?.unwrap_or_default();
                if bad.is_none() && !record.matches_with(&mut hasher, &stored) {
                    bad = r.get::<i64>(1)?;
                }
                rows.add(&stored);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let (hash, count) = rows.finish();
    (bad, hash, count)
}

/// Who ran one statement and from where, as its first row stores them.
#[derive(Clone, Default)]
struct StatementContext {
    session_user: Option<ServerText>,
    current_user: Option<ServerText>,
    role_class: Option<ServerText>,
    client_addr: Option<String>,
    client_port: Option<i32>,
    application_name: Option<ServerText>,
    backend_pid: Option<i32>,
    statement: Option<ServerText>,
}

/// Statements looked up by the current statement, newest last: a query over the trail
/// reads a large statement's rows one after the other, each needing the same first row.
type ContextCache = (i64, Vec<((i64, String, i32), StatementContext)>);

thread_local! {
    static CONTEXTS: std::cell::RefCell<ContextCache> = const { std::cell::RefCell::new((0, Vec::new())) };
}

/// How many statements' contexts a backend keeps (rows of concurrent statements interleave
/// on the log's pages).
const CONTEXTS_KEPT: usize = 64;

fn statement_context(
    cluster_id: i64,
    event_time: pgrx::datum::TimestampWithTimeZone,
    xid: &str,
    statement_seq: i32,
) -> StatementContext {
    // Kept for one statement: a later one sees the log as it is then.
    let tx = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    let cached = CONTEXTS.with_borrow_mut(|(at, kept)| {
        if *at != tx {
            *at = tx;
            kept.clear();
        }
        kept.iter()
            .find(|((c, x, s), _)| *c == cluster_id && x == xid && *s == statement_seq)
            .map(|(_, c)| c.clone())
    });
    if let Some(c) = cached {
        return c;
    }
    // The first row is in the same partition (same event time) and found by the BRIN
    // index on xid.
    let found = Spi::connect(|c| {
        let t = c.select(
            "SELECT session_user_name, current_user_name, role_class, client_addr::text, client_port,
                    application_name, backend_pid, statement
               FROM platform.audit_log
              WHERE cluster_id = $1 AND event_time = $2 AND xid = $3::xid8
                AND statement_seq = $4 AND row_seq = 1
              ORDER BY id LIMIT 1",
            Some(1),
            &[cluster_id.into(), event_time.into(), xid.into(), statement_seq.into()],
        )?;
        if t.is_empty() {
            return Ok(StatementContext::default());
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(StatementContext {
            session_user: r.get(1)?,
            current_user: r.get(2)?,
            role_class: r.get(3)?,
            client_addr: r.get(4)?,
            client_port: r.get(5)?,
            application_name: r.get(6)?,
            backend_pid: r.get(7)?,
            statement: r.get(8)?,
        })
    })
    .map_err(SpiFailure::from)
    .or_raise();
    CONTEXTS.with_borrow_mut(|(_, kept)| {
        if kept.len() == CONTEXTS_KEPT {
            kept.remove(0);
        }
        kept.push(((cluster_id, xid.to_string(), statement_seq), found.clone()));
    });
    found
}

/// Who ran an audited statement and from where (session and current user, role class,
/// client address and port, application, backend pid, statement text), as the
/// statement's first row in `platform.audit_log` stores them; no row when it has none.
/// What `platform.audit_trail` shows on the statement's other rows.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)] // pgrx needs the result columns spelled out here
fn audit_statement_context(
    cluster_id: i64,
    event_time: pgrx::datum::TimestampWithTimeZone,
    xid: &str,
    statement_seq: i32,
) -> TableIterator<
    'static,
    (
        name!(session_user_name, Option<ServerText>),
        name!(current_user_name, Option<ServerText>),
        name!(role_class, Option<ServerText>),
        name!(client_addr, Option<String>),
        name!(client_port, Option<i32>),
        name!(application_name, Option<ServerText>),
        name!(backend_pid, Option<i32>),
        name!(statement, Option<ServerText>),
    ),
> {
    if xid.parse::<u64>().is_err() {
        raise(AuditError::NotXid(xid.to_string()));
    }
    let c = statement_context(cluster_id, event_time, xid, statement_seq);
    if c.session_user.is_none() {
        return TableIterator::new(std::iter::empty());
    }
    TableIterator::once((
        c.session_user,
        c.current_user,
        c.role_class,
        c.client_addr,
        c.client_port,
        c.application_name,
        c.backend_pid,
        c.statement,
    ))
}

/// (intact, blocks checked, rows checked, first bad block, first bad row, problem)
type Verdict = (bool, i64, i64, Option<i64>, Option<i64>, Option<String>);

/// Re-derives every row hash and every block of the chain (blocks sealed since `since`,
/// all of them by default, and the rows not sealed yet): whether the log is intact, and
/// the first block or row that is not, with what is wrong.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the result columns spelled out here
fn verify_audit(
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(intact, bool),
        name!(blocks_checked, i64),
        name!(rows_checked, i64),
        name!(first_bad_block, Option<i64>),
        name!(first_bad_row, Option<i64>),
        name!(problem, Option<String>),
    ),
> {
    let verdict: Verdict = sql::as_extension_owner(|| verify(since));
    TableIterator::once(verdict)
}

struct StoredBlock {
    no: i64,
    cluster: i64,
    lo: String,
    hi: String,
    count: i64,
    rows_hash: Vec<u8>,
    prev_hash: Vec<u8>,
    block_hash: Vec<u8>,
    time_lo: Option<i64>,
    time_hi: Option<i64>,
}

impl StoredBlock {
    fn hash(&self) -> [u8; 32] {
        chain::Block {
            block_no: self.no,
            cluster_id: self.cluster,
            xid_lo: xid(&self.lo),
            xid_hi: xid(&self.hi),
            row_count: self.count,
            rows_hash: &self.rows_hash,
            prev_hash: &self.prev_hash,
            time_lo: self.time_lo,
            time_hi: self.time_hi,
        }
        .hash()
    }

    /// Whether retention has removed this block's rows: its partition ended before the
    /// horizon, or it predates partitioning and the partition that held it is gone.
    fn expired(&self, expired: &Expired) -> bool {
        match (self.time_lo, self.time_hi) {
            (None, None) => expired.unpartitioned_blocks,
            (_, Some(hi)) => expired.horizon.is_some_and(|h| hi <= h),
            (Some(_), None) => false,
        }
    }

    /// Whether this block follows `prev` in the chain: the next transaction range, or the
    /// same range in a later partition (one seal writes a block per partition).
    fn continues(&self, prev: &StoredBlock) -> bool {
        if prev.cluster != self.cluster {
            return self.lo == "0";
        }
        let same_seal = prev.lo == self.lo
            && prev.hi == self.hi
            && matches!((prev.time_hi, self.time_lo), (Some(a), Some(b)) if a <= b);
        prev.hi == self.lo || same_seal
    }
}

fn verify(since: Option<pgrx::datum::TimestampWithTimeZone>) -> Verdict {
    // The 0.3.0 block table (the library updated, not yet the extension) has no times.
    let has_times = sql::read::<bool>(
        "SELECT count(*) = 2 FROM pg_catalog.pg_attribute
          WHERE attrelid = 'platform.audit_block'::regclass AND attname IN ('time_lo', 'time_hi')",
        &[],
    )
    .unwrap_or(false);
    let times = if has_times {
        "(extract(epoch FROM time_lo) * 1000000)::int8, (extract(epoch FROM time_hi) * 1000000)::int8"
    } else {
        "NULL::int8, NULL::int8"
    };
    let blocks: Vec<StoredBlock> = Spi::connect(|c| {
        let rows = c.select(
            &format!("SELECT block_no, cluster_id, xid_lo::text, xid_hi::text, row_count, rows_hash, prev_hash, block_hash, {times}
               FROM platform.audit_block
              WHERE $1::timestamptz IS NULL OR sealed_at >= $1
                 OR block_no = (SELECT min(block_no) - 1 FROM platform.audit_block WHERE sealed_at >= $1)
              ORDER BY block_no"),
            None,
            &[since.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(StoredBlock {
                no: r.get::<i64>(1)?.unwrap_or(0),
                cluster: r.get::<i64>(2)?.unwrap_or(0),
                lo: r.get::<String>(3)?.unwrap_or_default(),
                hi: r.get::<String>(4)?.unwrap_or_default(),
                count: r.get::<i64>(5)?.unwrap_or(0),
                rows_hash: r.get::<Vec<u8>>(6)?.unwrap_or_default(),
                prev_hash: r.get::<Vec<u8>>(7)?.unwrap_or_default(),
                block_hash: r.get::<Vec<u8>>(8)?.unwrap_or_default(),
                time_lo: r.get::<i64>(9)?,
                time_hi: r.get::<i64>(10)?,
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let expired = retention_horizon();
    let (mut checked_blocks, mut checked_rows) = (0i64, 0i64);
    let mut previous: Option<StoredBlock> = None;
    let fail = |b: Option<i64>, r: Option<i64>, blocks: i64, rows: i64, why: String| -> Verdict {
        (false, blocks, rows, b, r, Some(why))
    };
    for block in blocks {
        let no = block.no;
        if let Some(prev) = &previous {
            let prev_no = prev.no;
            if no != prev_no + 1 {
                return fail(
                    Some(no),
                    None,
                    checked_blocks,
                    checked_rows,
                    format!("block {no} follows block {prev_no}: blocks are missing"),
                );
            }
            if !block.continues(prev) {
                return fail(
                    Some(no),
                    None,
                    checked_blocks,
                    checked_rows,
                    format!("block {no} does not start where block {prev_no} ends"),
                );
            }
            if block.prev_hash != prev.block_hash {
                return fail(Some(no), None, checked_blocks, checked_rows, format!("block {no} does not chain to block {prev_no} (blocks reordered or replaced)"));
            }
        } else if no == 1 && block.prev_hash != vec![0u8; 32] {
            return fail(
                Some(no),
                None,
                checked_blocks,
                checked_rows,
                "block 1 does not start the chain".into(),
            );
        }
        checked_blocks += 1;
        // Rows of expired blocks were retired with their partition; the block itself
        // still chains, so its place in the history stays provable.
        let (bad_row, recomputed, rows) = check_rows(
            block.cluster,
            &block.lo,
            &block.hi,
            (block.time_lo, block.time_hi),
        );
        checked_rows += rows;
        // Rows still there are checked whatever the horizon says (a partition detached by
        // retention may be attached again; a forged horizon hides nothing).
        if rows > 0 || !block.expired(&expired) {
            if let Some(row) = bad_row {
                return fail(
                    Some(no),
                    Some(row),
                    checked_blocks,
                    checked_rows,
                    format!(
                        "audit row {row} does not match its hash (changed after it was written)"
                    ),
                );
            }
            let count = block.count;
            if rows != count || recomputed[..] != block.rows_hash[..] {
                return fail(Some(no), None, checked_blocks, checked_rows, format!("block {no} sealed {count} rows; the log now holds {rows} different ones (rows deleted, added or replaced)"));
            }
        }
        if block.hash()[..] != block.block_hash[..] {
            return fail(
                Some(no),
                None,
                checked_blocks,
                checked_rows,
                format!("block {no} does not match its hash"),
            );
        }
        previous = Some(block);
    }
    // Rows not sealed yet, per cluster: each must still match its own hash.
    let unsealed: Vec<(i64, String)> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT l.cluster_id, coalesce((SELECT max(b.xid_hi)::text FROM platform.audit_block b
                                            WHERE b.cluster_id = l.cluster_id), '0')
               FROM (SELECT DISTINCT cluster_id FROM platform.audit_log) l",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    // Pending rows (waiting for a partition) must match their hashes too.
    let (bad_row, rows) = check_pending();
    checked_rows += rows;
    if let Some(row) = bad_row {
        return fail(
            None,
            Some(row),
            checked_blocks,
            checked_rows,
            format!(
                "pending audit row {row} does not match its hash (changed after it was written)"
            ),
        );
    }
    for (cluster, from) in unsealed {
        let (bad_row, _, rows) = check_rows(cluster, &from, &u64::MAX.to_string(), (None, None));
        checked_rows += rows;
        if let Some(row) = bad_row {
            return fail(None, Some(row), checked_blocks, checked_rows, format!("unsealed audit row {row} does not match its hash (changed after it was written)"));
        }
    }
    (true, checked_blocks, checked_rows, None, None, None)
}

/// Guards `platform.audit_log_pending`: UPDATE and DELETE are refused for every role, but
/// for the sealer moving rows into the log.
#[pg_trigger]
fn refuse_pending_change<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let event = trigger.trigger_data().tg_event;
    if log::moving() && pgrx::trigger_support::trigger_fired_by_delete(event) {
        return Ok(trigger.old());
    }
    let op = if pgrx::trigger_support::trigger_fired_by_update(event) {
        "UPDATE"
    } else {
        "DELETE"
    };
    let report = pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("platform.audit_log_pending is append-only: {op} is refused for every role"),
        "pg_platform",
    );
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// The worker's periodic task: seal what finished since the last round.
pub fn worker_task() {
    use pgrx::bgworkers::BackgroundWorker;
    BackgroundWorker::transaction(|| {
        let installed = sql::read::<bool>(
            "SELECT to_regclass('platform.audit_block') IS NOT NULL",
            &[],
        )
        .unwrap_or(false);
        if installed {
            if let Err(message) = sql::in_subtransaction(register_if_audited) {
                warning!(
                    "pg_platform: making the partitions of platform.audit_log failed: {message}"
                );
            }
            if let Err(message) = sql::in_subtransaction(seal) {
                warning!("pg_platform: sealing the audit log failed: {message}");
            }
        }
    });
}

pgrx::extension_sql!(
    r#"
-- Each value is a chunk of ids (the writer numbers a chunk's rows from its value): a
-- sequence call per 1000 rows, not per row.
CREATE SEQUENCE platform.audit_log_id_seq AS bigint INCREMENT BY 1000 CACHE 100;
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
    session_user_name text,
    current_user_name text,
    role_class        text,
    client_addr       inet,
    client_port       integer,
    application_name  text,
    backend_pid       integer,
    statement         text,
    row_hash          bytea NOT NULL
) PARTITION BY RANGE (event_time);
-- Rows are found by transaction id range (sealing, verification) and arrive in roughly
-- that order: a BRIN index costs writers next to nothing, where a btree key cost each
-- audited row an index insert and its WAL (more than half of the audit's WAL). xid8 has
-- no BRIN operator class of its own; this one is the core minmax strategy over xid8's
-- comparison operators.
CREATE OPERATOR CLASS platform.xid8_minmax_ops FOR TYPE xid8 USING brin AS
    OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
    FUNCTION 1 pg_catalog.brin_minmax_opcinfo(internal),
    FUNCTION 2 pg_catalog.brin_minmax_add_value(internal, internal, internal, internal),
    FUNCTION 3 pg_catalog.brin_minmax_consistent(internal, internal, internal),
    FUNCTION 4 pg_catalog.brin_minmax_union(internal, internal, internal);
CREATE INDEX audit_log_xid ON platform.audit_log USING brin (xid platform.xid8_minmax_ops)
    WITH (pages_per_range = 32, autosummarize = on);
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
COMMENT ON TABLE platform.audit_log IS 'pg_platform audit log: one row per audited row change, DDL command or TRUNCATE; append-only, hash-chained by platform.audit_block; monthly partitions (UTC) managed by platform.run_maintenance.';
CREATE TABLE platform.audit_block (
    block_no   bigint PRIMARY KEY,
    cluster_id bigint NOT NULL,
    xid_lo     xid8 NOT NULL,
    xid_hi     xid8 NOT NULL,
    row_count  bigint NOT NULL,
    rows_hash  bytea NOT NULL,
    prev_hash  bytea NOT NULL,
    block_hash bytea NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now(),
    time_lo    timestamptz,
    time_hi    timestamptz
);
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
COMMENT ON TABLE platform.audit_block IS 'Hash chain over platform.audit_log: each block seals the rows of transactions with ids in [xid_lo, xid_hi) whose event_time is in the log partition [time_lo, time_hi) (NULL: unbounded; both NULL: blocks sealed before the log was partitioned).';
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
       -- Each argument ends with a NUL byte and is text in the database's encoding
       -- (encode(..., 'escape') would show a non-ASCII name as octal escapes).
       LATERAL (SELECT coalesce(array_agg(convert_from(substring(t.tgargs FROM p.lo FOR p.hi - p.lo),
                                                       pg_catalog.current_setting('server_encoding')) ORDER BY p.lo), '{}') AS a
                  FROM (SELECT lag(i, 1, -1) OVER (ORDER BY i) + 2 AS lo, i + 1 AS hi
                          FROM generate_series(0, length(t.tgargs) - 1) i
                         WHERE get_byte(t.tgargs, i) = 0) p) args
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
"#,
    name = "audit",
    requires = [
        record_audit_ddl,
        record_audit_drop,
        refuse_pending_change,
        audit_statement_context
    ],
);
