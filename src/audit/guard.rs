//! The DDL that would let a role, superuser included, rewrite the audit log through SQL:
//! TRUNCATE, ALTER TABLE (DISABLE TRIGGER, DROP COLUMN, DETACH PARTITION, ...), RENAME,
//! DROP TABLE and DROP TRIGGER on `platform.audit_log`, its partitions or
//! `platform.audit_block` are refused, except in the extension's own scripts (CREATE or
//! ALTER EXTENSION), by DROP EXTENSION and for the partition that retention is retiring.
//! What only adds to the log stays allowed, so that partition maintenance and
//! `pg_restore` work: attaching a (non-default) partition, and adding constraints,
//! indexes or a new owner to a partition. What is left (catalog updates, file access) is
//! what the hash chain is for.

use pgrx::prelude::*;
use pgrx::PgList;
use std::cell::RefCell;

thread_local! {
    /// Log partitions that retention has recorded and may now drop or detach, once.
    static RETIRING: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

/// Lets the next DROP TABLE or DETACH PARTITION of `partition` (of the audit log) through:
/// retention has sealed and recorded it.
pub fn allow_retirement(partition: pg_sys::Oid) {
    RETIRING.with_borrow_mut(|r| r.push(partition));
}

fn take_retirement(partition: pg_sys::Oid) -> bool {
    RETIRING.with_borrow_mut(|r| match r.iter().position(|o| *o == partition) {
        Some(i) => {
            r.swap_remove(i);
            true
        }
        None => false,
    })
}

static mut PREV: pg_sys::ProcessUtility_hook_type = None;

/// Called from `_PG_init`.
pub fn init() {
    unsafe {
        PREV = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

#[allow(clippy::too_many_arguments)]
#[pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    unsafe {
        if !pg_sys::creating_extension && !pstmt.is_null() && check((*pstmt).utilityStmt) {
            // Already done: see `redundant_primary_key` and `redundant_index`.
            return;
        }
        match PREV {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

/// The oids of the audit tables in this database (InvalidOid where absent): the log, its
/// blocks, its pending rows.
unsafe fn audit_tables() -> [pg_sys::Oid; 3] {
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return [pg_sys::InvalidOid; 3];
        }
        [
            pg_sys::get_relname_relid(c"audit_log".as_ptr(), ns),
            pg_sys::get_relname_relid(c"audit_block".as_ptr(), ns),
            pg_sys::get_relname_relid(c"audit_log_pending".as_ptr(), ns),
        ]
    }
}

/// What a guarded relation is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guarded {
    Log,
    Block,
    Pending,
    LogPartition(pg_sys::Oid),
}

impl Guarded {
    fn label(self) -> String {
        match self {
            Self::Log => "platform.audit_log".into(),
            Self::Block => "platform.audit_block".into(),
            Self::Pending => "platform.audit_log_pending".into(),
            Self::LogPartition(oid) => {
                format!("partition {} of platform.audit_log", relation_name(oid))
            }
        }
    }
}

fn relation_name(oid: pg_sys::Oid) -> String {
    unsafe {
        let p = pg_sys::get_rel_name(oid);
        if p.is_null() {
            format!("{oid}")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

unsafe fn classify(oid: pg_sys::Oid, tables: &[pg_sys::Oid; 3]) -> Option<Guarded> {
    if oid == pg_sys::InvalidOid {
        None
    } else if oid == tables[0] {
        Some(Guarded::Log)
    } else if oid == tables[1] {
        Some(Guarded::Block)
    } else if oid == tables[2] {
        Some(Guarded::Pending)
    } else if tables[0] != pg_sys::InvalidOid
        && unsafe { pg_sys::get_rel_relispartition(oid) }
        && super::log::partitions(tables[0])
            .iter()
            .any(|p| p.oid == oid)
    {
        Some(Guarded::LogPartition(oid))
    } else {
        None
    }
}

unsafe fn relation(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if rv.is_null() {
        return pg_sys::InvalidOid;
    }
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

unsafe fn names(rv: *mut pg_sys::RangeVar, tables: &[pg_sys::Oid; 3]) -> Option<Guarded> {
    unsafe { classify(relation(rv), tables) }
}

/// ALTER TABLE subcommands that only add to a log partition (what maintenance and
/// pg_restore issue).
fn additive(cmd: pg_sys::AlterTableType::Type) -> bool {
    use pg_sys::AlterTableType as At;
    [
        At::AT_AddConstraint,
        At::AT_AddIndex,
        At::AT_AddIndexConstraint,
        At::AT_ChangeOwner,
        At::AT_ValidateConstraint,
    ]
    .contains(&cmd)
}

/// Whether an ALTER TABLE of a guarded relation may go on.
unsafe fn alter_allowed(
    stmt: *mut pg_sys::AlterTableStmt,
    target: Guarded,
    tables: &[pg_sys::Oid; 3],
) -> bool {
    unsafe {
        let cmds = PgList::<pg_sys::AlterTableCmd>::from_pg((*stmt).cmds);
        if cmds.is_empty() {
            return false;
        }
        let allowed = cmds.iter_ptr().all(|cmd| {
            let kind = (*cmd).subtype;
            match target {
                Guarded::Block | Guarded::Pending => false,
                Guarded::LogPartition(_) => additive(kind),
                Guarded::Log => {
                    let part = (*cmd).def as *mut pg_sys::PartitionCmd;
                    if part.is_null() {
                        return false;
                    }
                    match kind {
                        pg_sys::AlterTableType::AT_AttachPartition => {
                            // A default partition would hold rows of every time range.
                            let bound = (*part).bound;
                            !bound.is_null() && !(*bound).is_default
                        }
                        pg_sys::AlterTableType::AT_DetachPartition
                        | pg_sys::AlterTableType::AT_DetachPartitionFinalize => {
                            let oid = relation((*part).name);
                            classify(oid, tables).is_some() && take_retirement(oid)
                        }
                        _ => false,
                    }
                }
            }
        });
        allowed
    }
}

fn refuse(what: &str, target: Guarded) -> ! {
    let table = target.label();
    let report = pgrx::pg_sys::panic::ErrorReport::new(
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("{what} of {table} is refused for every role: the audit log is append-only"),
        "pg_platform",
    )
    .set_hint("Rows leave the log only by retention (platform.set_retention('platform.audit_log', ...), applied by platform.run_maintenance) or with the extension (DROP EXTENSION pg_platform).");
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Refuses what would remove rows from the log; returns whether the statement is to be
/// skipped because it is already in effect.
unsafe fn check(node: *mut pg_sys::Node) -> bool {
    if node.is_null() {
        return false;
    }
    unsafe {
        let tables = audit_tables();
        if tables.iter().all(|t| *t == pg_sys::InvalidOid) {
            return false;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_TruncateStmt => {
                let stmt = node as *mut pg_sys::TruncateStmt;
                for rv in PgList::<pg_sys::RangeVar>::from_pg((*stmt).relations).iter_ptr() {
                    if let Some(t) = names(rv, &tables) {
                        refuse("TRUNCATE", t);
                    }
                }
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = node as *mut pg_sys::AlterTableStmt;
                if (*stmt).objtype != pg_sys::ObjectType::OBJECT_TABLE {
                    return false;
                }
                if let Some(t) = names((*stmt).relation, &tables) {
                    if !alter_allowed(stmt, t, &tables) {
                        refuse("ALTER TABLE", t);
                    }
                    if let Guarded::LogPartition(oid) = t {
                        return redundant_primary_key(stmt, oid);
                    }
                }
            }
            pg_sys::NodeTag::T_IndexStmt => {
                let stmt = node as *mut pg_sys::IndexStmt;
                if let Some(Guarded::LogPartition(oid)) = names((*stmt).relation, &tables) {
                    return redundant_index(stmt, oid);
                }
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node as *mut pg_sys::RenameStmt;
                if let Some(t) = names((*stmt).relation, &tables) {
                    refuse("RENAME", t);
                }
            }
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node as *mut pg_sys::DropStmt;
                let kind = (*stmt).removeType;
                let is_table = kind == pg_sys::ObjectType::OBJECT_TABLE;
                let is_trigger = kind == pg_sys::ObjectType::OBJECT_TRIGGER;
                if !is_table && !is_trigger {
                    return false;
                }
                for object in PgList::<pg_sys::List>::from_pg((*stmt).objects).iter_ptr() {
                    let mut name = pg_sys::list_copy(object);
                    if is_trigger {
                        // DROP TRIGGER t ON rel: the object is the relation's name, then the trigger's.
                        let len = PgList::<pg_sys::Node>::from_pg(name).len();
                        if len < 2 {
                            continue;
                        }
                        name = pg_sys::list_truncate(name, len as i32 - 1);
                    }
                    let rv = pg_sys::makeRangeVarFromNameList(name);
                    if let Some(t) = names(rv, &tables) {
                        if let (Guarded::LogPartition(oid), true) = (t, is_table) {
                            if take_retirement(oid) {
                                continue;
                            }
                        }
                        refuse(
                            if is_trigger {
                                "DROP TRIGGER"
                            } else {
                                "DROP TABLE"
                            },
                            t,
                        );
                    }
                }
            }
            pg_sys::NodeTag::T_CreateStmt => {
                // CREATE TABLE ... PARTITION OF platform.audit_log DEFAULT
                let stmt = node as *mut pg_sys::CreateStmt;
                let bound = (*stmt).partbound;
                if bound.is_null() || !(*bound).is_default {
                    return false;
                }
                for rv in PgList::<pg_sys::RangeVar>::from_pg((*stmt).inhRelations).iter_ptr() {
                    if names(rv, &tables) == Some(Guarded::Log) {
                        refuse("a DEFAULT partition", Guarded::Log);
                    }
                }
            }
            _ => {}
        }
        false
    }
}

/// `CREATE INDEX <name> ON <log partition>` when the partition has that index already, as
/// a partition of the log's own index. pg_restore creates the partition (which makes the
/// partition's copy of the log's BRIN index, the log coming from CREATE EXTENSION), then
/// the index it dumped under the same name: it would fail with "already exists". Its
/// `ALTER INDEX ... ATTACH PARTITION` that follows is a no-op.
unsafe fn redundant_index(stmt: *mut pg_sys::IndexStmt, partition: pg_sys::Oid) -> bool {
    unsafe {
        if (*stmt).idxname.is_null() {
            return false;
        }
        let name = std::ffi::CStr::from_ptr((*stmt).idxname).to_string_lossy();
        crate::sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = $1 AND c.relname = $2 AND c.relispartition",
            &[partition.into(), name.as_ref().into()],
        )
        .is_some()
    }
}

/// `ALTER TABLE ONLY <log partition> ADD CONSTRAINT ... PRIMARY KEY` when the partition
/// has its primary key already. pg_restore issues it after attaching the partition, but the
/// log (created by CREATE EXTENSION, not by the dump) had its primary key before, so the
/// attach made the partition's: the statement would fail, and there is nothing left to do.
unsafe fn redundant_primary_key(stmt: *mut pg_sys::AlterTableStmt, partition: pg_sys::Oid) -> bool {
    unsafe {
        let cmds = PgList::<pg_sys::AlterTableCmd>::from_pg((*stmt).cmds);
        let only_pk = !cmds.is_empty()
            && cmds.iter_ptr().all(|cmd| {
                let def = (*cmd).def as *mut pg_sys::Constraint;
                (*cmd).subtype == pg_sys::AlterTableType::AT_AddConstraint
                    && !def.is_null()
                    && (*def).type_ == pg_sys::NodeTag::T_Constraint
                    && (*def).contype == pg_sys::ConstrType::CONSTR_PRIMARY
            });
        only_pk
            && crate::sql::read::<bool>(
                "SELECT true FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'p'",
                &[partition.into()],
            )
            .is_some()
    }
}
