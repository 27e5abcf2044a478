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
#[cfg(test)]
mod tests;
mod trigger;

use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use crate::sql::{self, RegClass};
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
    #[error("pg_platform's audit log (platform.audit_log and its sequence) is missing")]
    LogMissing,
}

impl SqlError for AuditError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NotTable(_) => ERRCODE_WRONG_OBJECT_TYPE,
            Self::OwnTable(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::NoColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            Self::LogMissing => ERRCODE_UNDEFINED_TABLE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::NotTable(_) => Some("Audit the table the view reads from.".into()),
            Self::LogMissing => Some("Check that pg_platform is installed completely in this database (\\dx+ pg_platform).".into()),
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
    exclude_columns: default!(Vec<String>, "ARRAY[]::text[]"),
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
            r.get::<String>(2)?.unwrap_or_default(),
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
    for c in &exclude_columns {
        let exists = sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[tbl.into(), c.as_str().into()],
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
    let name = sql::read::<String>("SELECT $1::regclass::text", &[tbl.into()]).unwrap_or_default();
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
    if !crate::gucs::AUDIT_DDL.get() {
        return;
    }
    let events: Vec<(String, String, String, Option<pg_sys::Oid>)> = Spi::connect(|c| {
        let rows = c.select(query, None, &[])?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
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
    sql::as_extension_owner(seal)
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
    let hi = sql::read::<String>(
        "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text",
        &[],
    )
    .unwrap_or_default();
    if xid(&hi) <= xid(&lo) {
        return 0;
    }
    let mut rows = chain::RowsHash::default();
    Spi::connect(|c| {
        let mut cursor = c.open_cursor(
            "SELECT row_hash FROM platform.audit_log
              WHERE cluster_id = $1 AND xid >= $2::xid8 AND xid < $3::xid8
              ORDER BY xid, statement_seq, row_seq",
            &[cluster.into(), lo.as_str().into(), hi.as_str().into()],
        );
        loop {
            let batch = cursor.fetch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                rows.add(&r.get::<Vec<u8>>(1)?.unwrap_or_default());
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let (rows_hash, count) = rows.finish();
    if count == 0 {
        return 0;
    }
    let hash = chain::block_hash(
        block_no,
        cluster,
        xid(&lo),
        xid(&hi),
        count,
        &rows_hash,
        &prev,
    );
    sql::modify(
        "INSERT INTO platform.audit_block (block_no, cluster_id, xid_lo, xid_hi, row_count, rows_hash, prev_hash, block_hash)
         VALUES ($1, $2, $3::xid8, $4::xid8, $5, $6, $7, $8)",
        &[
            block_no.into(),
            cluster.into(),
            lo.as_str().into(),
            hi.as_str().into(),
            count.into(),
            rows_hash.to_vec().into(),
            prev.into(),
            hash.to_vec().into(),
        ],
    );
    count
}

const SELECT_ROWS: &str =
    "SELECT id, cluster_id, (extract(epoch FROM event_time) * 1000000)::int8, xid::text, statement_seq,
       row_seq, operation, table_name, primary_key::text, old_values::text, new_values::text,
       session_user_name, current_user_name, role_class, client_addr::text, client_port,
       application_name, backend_pid, statement, row_hash
  FROM platform.audit_log l WHERE l.cluster_id = $1 AND l.xid >= $2::xid8 AND l.xid < $3::xid8
 ORDER BY l.xid, l.statement_seq, l.row_seq"; // qualified: `xid` alone would sort the text column

/// Recomputes the rows of `[lo, hi)`: the first row whose content does not match its
/// stored hash, and the hash over the stored row hashes.
fn check_rows(cluster: i64, lo: &str, hi: &str) -> (Option<i64>, [u8; 32], i64) {
    let mut rows = chain::RowsHash::default();
    let mut bad = None;
    Spi::connect(|c| {
        let mut cursor = c.open_cursor(SELECT_ROWS, &[cluster.into(), lo.into(), hi.into()]);
        loop {
            let batch = cursor.fetch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let record = chain::Record {
                    cluster_id: r.get::<i64>(2)?.unwrap_or(0),
                    event_time_us: r.get::<i64>(3)?.unwrap_or(0),
                    xid: xid(&r.get::<String>(4)?.unwrap_or_default()),
                    statement_seq: r.get::<i32>(5)?.unwrap_or(0),
                    row_seq: r.get::<i32>(6)?.unwrap_or(0),
                    operation: r.get::<String>(7)?.unwrap_or_default(),
                    table_name: r.get::<String>(8)?.unwrap_or_default(),
                    primary_key: r.get::<String>(9)?,
                    old_values: r.get::<String>(10)?,
                    new_values: r.get::<String>(11)?,
                    session_user: r.get::<String>(12)?.unwrap_or_default(),
                    current_user: r.get::<String>(13)?.unwrap_or_default(),
                    role_class: r.get::<String>(14)?.unwrap_or_default(),
                    client_addr: r.get::<String>(15)?,
                    client_port: r.get::<i32>(16)?,
                    application_name: r.get::<String>(17)?,
                    backend_pid: r.get::<i32>(18)?.unwrap_or(0),
                    statement: r.get::<String>(19)?,
                };
                let stored = r.get::<Vec<u8>>(20)?.unwrap_or_default();
                if bad.is_none() && record.hash()[..] != stored[..] {
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

fn verify(since: Option<pgrx::datum::TimestampWithTimeZone>) -> Verdict {
    type Block = (i64, i64, String, String, i64, Vec<u8>, Vec<u8>, Vec<u8>);
    let blocks: Vec<Block> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT block_no, cluster_id, xid_lo::text, xid_hi::text, row_count, rows_hash, prev_hash, block_hash
               FROM platform.audit_block
              WHERE $1::timestamptz IS NULL OR sealed_at >= $1
                 OR block_no = (SELECT min(block_no) - 1 FROM platform.audit_block WHERE sealed_at >= $1)
              ORDER BY block_no",
            None,
            &[since.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i64>(2)?.unwrap_or(0),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<i64>(5)?.unwrap_or(0),
                r.get::<Vec<u8>>(6)?.unwrap_or_default(),
                r.get::<Vec<u8>>(7)?.unwrap_or_default(),
                r.get::<Vec<u8>>(8)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let (mut checked_blocks, mut checked_rows) = (0i64, 0i64);
    // (block number, cluster, xid_hi, block hash) of the block checked last
    let mut previous: Option<(i64, i64, String, Vec<u8>)> = None;
    let fail = |b: Option<i64>, r: Option<i64>, blocks: i64, rows: i64, why: String| -> Verdict {
        (false, blocks, rows, b, r, Some(why))
    };
    for (no, cluster, lo, hi, count, rows_hash, prev_hash, block_hash) in blocks {
        if let Some((prev_no, prev_cluster, prev_hi, prev_block_hash)) = &previous {
            if no != prev_no + 1 {
                return fail(
                    Some(no),
                    None,
                    checked_blocks,
                    checked_rows,
                    format!("block {no} follows block {prev_no}: blocks are missing"),
                );
            }
            let continues = if *prev_cluster == cluster {
                *prev_hi == lo
            } else {
                lo == "0"
            };
            if !continues {
                return fail(
                    Some(no),
                    None,
                    checked_blocks,
                    checked_rows,
                    format!("block {no} does not start where block {prev_no} ends"),
                );
            }
            if prev_hash != *prev_block_hash {
                return fail(Some(no), None, checked_blocks, checked_rows, format!("block {no} does not chain to block {prev_no} (blocks reordered or replaced)"));
            }
        } else if no == 1 && prev_hash != vec![0u8; 32] {
            return fail(
                Some(no),
                None,
                checked_blocks,
                checked_rows,
                "block 1 does not start the chain".into(),
            );
        }
        let (bad_row, recomputed, rows) = check_rows(cluster, &lo, &hi);
        checked_rows += rows;
        checked_blocks += 1;
        if let Some(row) = bad_row {
            return fail(
                Some(no),
                Some(row),
                checked_blocks,
                checked_rows,
                format!("audit row {row} does not match its hash (changed after it was written)"),
            );
        }
        if rows != count || recomputed[..] != rows_hash[..] {
            return fail(Some(no), None, checked_blocks, checked_rows, format!("block {no} sealed {count} rows; the log now holds {rows} different ones (rows deleted, added or replaced)"));
        }
        if chain::block_hash(
            no,
            cluster,
            xid(&lo),
            xid(&hi),
            count,
            &rows_hash,
            &prev_hash,
        )[..]
            != block_hash[..]
        {
            return fail(
                Some(no),
                None,
                checked_blocks,
                checked_rows,
                format!("block {no} does not match its hash"),
            );
        }
        previous = Some((no, cluster, hi, block_hash));
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
    for (cluster, from) in unsealed {
        let (bad_row, _, rows) = check_rows(cluster, &from, &u64::MAX.to_string());
        checked_rows += rows;
        if let Some(row) = bad_row {
            return fail(None, Some(row), checked_blocks, checked_rows, format!("unsealed audit row {row} does not match its hash (changed after it was written)"));
        }
    }
    (true, checked_blocks, checked_rows, None, None, None)
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
            if let Err(message) = sql::in_subtransaction(seal) {
                warning!("pg_platform: sealing the audit log failed: {message}");
            }
        }
    });
}

pgrx::extension_sql!(
    r#"
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
"#,
    name = "audit",
    requires = [record_audit_ddl, record_audit_drop],
);
