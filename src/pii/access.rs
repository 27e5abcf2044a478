//! Counting reads of protected columns without a write per row: the generated view's
//! `reveal_column` counts each value it shows in backend memory (a value compared in WHERE
//! and shown in the select list counts twice); at the end of each statement the counts go
//! to shared memory (one entry per database, role and column) and, with
//! `platform.pii_access_log`, to one server log line. `platform.pii_access` shows them.

use crate::error::{raise, SqlError};
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, PgLwLock, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Distinct (database, role, column) entries kept; further ones are counted as dropped.
const SLOTS: usize = 2048;

#[derive(Copy, Clone, Default)]
struct Entry {
    database: u32,
    role: u32,
    column: i32,
    statements: u64,
    plaintext_values: u64,
    masked_values: u64,
    last_read: i64,
}

#[derive(Copy, Clone)]
pub struct Counters {
    used: usize,
    dropped: u64,
    entries: [Entry; SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            used: 0,
            dropped: 0,
            entries: [Entry::default(); SLOTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Counters {}

static COUNTERS: PgLwLock<Counters> = unsafe { PgLwLock::new(c"pg_platform pii access") };
static SHARED: AtomicBool = AtomicBool::new(false);
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

#[derive(Default)]
struct Pending {
    statements: u64,
    plaintext: u64,
    masked: u64,
}

thread_local! {
    /// (column, role) -> values revealed since the last statement end.
    static PENDING: RefCell<HashMap<(i32, pg_sys::Oid), Pending>> = RefCell::new(HashMap::new());
    static LABELS: RefCell<HashMap<i32, Rc<str>>> = RefCell::new(HashMap::new());
}

#[derive(Debug, thiserror::Error)]
#[error("platform.pii_access needs pg_platform in shared_preload_libraries")]
struct NotPreloaded;

impl SqlError for NotPreloaded {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
    }
    fn hint(&self) -> Option<String> {
        Some("Add pg_platform to shared_preload_libraries and restart the server.".into())
    }
}

/// Called from `_PG_init`: shared counters when preloaded, and the statement-end hook.
pub fn init() {
    unsafe {
        if pg_sys::process_shared_preload_libraries_in_progress {
            pg_shmem_init!(COUNTERS);
            SHARED.store(true, Ordering::Relaxed);
        }
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
    }
}

/// One protected value revealed to the current role (`plaintext` or masked).
pub fn count(column: i32, label: impl FnOnce() -> String, plaintext: bool) {
    let role = unsafe { pg_sys::GetUserId() };
    PENDING.with_borrow_mut(|m| {
        let p = m.entry((column, role)).or_default();
        p.statements = 1;
        if plaintext {
            p.plaintext += 1;
        } else {
            p.masked += 1;
        }
    });
    if !LABELS.with_borrow(|l| l.contains_key(&column)) {
        let text: Rc<str> = label().into();
        LABELS.with_borrow_mut(|l| l.insert(column, text));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(query: *mut pg_sys::QueryDesc) {
    flush();
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query),
            None => pg_sys::standard_ExecutorEnd(query),
        }
    }
}

/// Moves this backend's counts to shared memory (and the log).
fn flush() {
    let pending = PENDING.with_borrow_mut(std::mem::take);
    if pending.is_empty() {
        return;
    }
    if crate::gucs::PII_ACCESS_LOG.get() {
        for ((column, role), p) in &pending {
            let label = LABELS.with_borrow(|l| l.get(column).cloned());
            let role = unsafe { pgrx::pg_sys::GetUserNameFromId(*role, true) };
            let role = if role.is_null() {
                "?".into()
            } else {
                unsafe { std::ffi::CStr::from_ptr(role) }.to_string_lossy()
            };
            pgrx::log!(
                "pg_platform: role {role} was shown {} value(s) of protected column {} ({} plaintext, {} masked)",
                p.plaintext + p.masked,
                label.as_deref().unwrap_or("?"),
                p.plaintext,
                p.masked
            );
        }
    }
    if !SHARED.load(Ordering::Relaxed) {
        return;
    }
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut c = COUNTERS.exclusive();
    for ((column, role), p) in pending {
        let role = role.to_u32();
        let used = c.used;
        let at = c.entries[..used]
            .iter()
            .position(|e| e.database == database && e.role == role && e.column == column);
        let at = match at {
            Some(i) => i,
            None if used < SLOTS => {
                c.entries[used] = Entry {
                    database,
                    role,
                    column,
                    ..Entry::default()
                };
                c.used += 1;
                used
            }
            None => {
                c.dropped += 1;
                continue;
            }
        };
        let e = &mut c.entries[at];
        e.statements += p.statements;
        e.plaintext_values += p.plaintext;
        e.masked_values += p.masked;
        e.last_read = now;
    }
}

/// Read counts of protected columns since the server started (or the last reset), per
/// database, role and column; the raw source of the `platform.pii_access` view.
#[pg_extern]
fn pii_access_counts() -> TableIterator<
    'static,
    (
        name!(database, pg_sys::Oid),
        name!(role, pg_sys::Oid),
        name!(column_id, i32),
        name!(statements, i64),
        name!(plaintext_values, i64),
        name!(masked_values, i64),
        name!(last_read_us, i64),
    ),
> {
    if !SHARED.load(Ordering::Relaxed) {
        raise(NotPreloaded);
    }
    flush();
    let c = COUNTERS.share();
    let rows: Vec<_> = c.entries[..c.used]
        .iter()
        .map(|e| {
            (
                pg_sys::Oid::from(e.database),
                pg_sys::Oid::from(e.role),
                e.column,
                e.statements as i64,
                e.plaintext_values as i64,
                e.masked_values as i64,
                e.last_read,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Forgets the read counts of this database. Returns how many entries were removed.
#[pg_extern]
fn reset_pii_access() -> i64 {
    if !SHARED.load(Ordering::Relaxed) {
        raise(NotPreloaded);
    }
    flush();
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut c = COUNTERS.exclusive();
    let used = c.used;
    let kept: Vec<Entry> = c.entries[..used]
        .iter()
        .copied()
        .filter(|e| e.database != database)
        .collect();
    for (i, e) in kept.iter().enumerate() {
        c.entries[i] = *e;
    }
    c.used = kept.len();
    (used - kept.len()) as i64
}

pgrx::extension_sql!(
    r#"
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
"#,
    name = "pii_access",
    requires = [pii_access_counts, "pii_protect"],
);
