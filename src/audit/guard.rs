//! The DDL that would let a role, superuser included, rewrite the audit log through SQL:
//! TRUNCATE, ALTER TABLE (DISABLE TRIGGER, DROP COLUMN, ...), RENAME, DROP TABLE and DROP
//! TRIGGER on `platform.audit_log` or `platform.audit_block` are refused, except in the
//! extension's own scripts (CREATE or ALTER EXTENSION) and by DROP EXTENSION. What is
//! left (catalog updates, file access) is what the hash chain is for.

use pgrx::prelude::*;
use pgrx::PgList;

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
        if !pg_sys::creating_extension && !pstmt.is_null() {
            check((*pstmt).utilityStmt);
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

/// The oids of the audit tables in this database (InvalidOid where absent).
unsafe fn audit_tables() -> [pg_sys::Oid; 2] {
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return [pg_sys::InvalidOid; 2];
        }
        [
            pg_sys::get_relname_relid(c"audit_log".as_ptr(), ns),
            pg_sys::get_relname_relid(c"audit_block".as_ptr(), ns),
        ]
    }
}

unsafe fn names(rv: *mut pg_sys::RangeVar, tables: &[pg_sys::Oid; 2]) -> Option<&'static str> {
    if rv.is_null() {
        return None;
    }
    let oid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    if oid == pg_sys::InvalidOid {
        None
    } else if oid == tables[0] {
        Some("platform.audit_log")
    } else if oid == tables[1] {
        Some("platform.audit_block")
    } else {
        None
    }
}

fn refuse(what: &str, table: &str) -> ! {
    let report = pgrx::pg_sys::panic::ErrorReport::new(
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("{what} of {table} is refused for every role: the audit log is append-only"),
        "pg_platform",
    )
    .set_hint("Rows leave the log only with the extension (DROP EXTENSION pg_platform).");
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

unsafe fn check(node: *mut pg_sys::Node) {
    if node.is_null() {
        return;
    }
    unsafe {
        let tables = audit_tables();
        if tables.iter().all(|t| *t == pg_sys::InvalidOid) {
            return;
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
                if let Some(t) = names((*stmt).relation, &tables) {
                    refuse("ALTER TABLE", t);
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
                    return;
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
            _ => {}
        }
    }
}
