//! The background worker: one per database listed in `platform.databases`, started only
//! when the library is in `shared_preload_libraries`.
//!
//! Each round (every `platform.worker_naptime`) runs, in its own transaction, the periodic
//! tasks of the capabilities (partition maintenance, lake sync, audit sealing as they land).
//! Capabilities that need the worker call [`require_worker`] so their functions fail with a
//! clear error instead of silently doing nothing.

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::{OrRaise, SpiFailure, SqlError};
use crate::gucs;
use pgrx::bgworkers::*;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `backend_type` of the workers in `pg_stat_activity`.
pub const WORKER_TYPE: &str = "pg_platform worker";

/// Set in the postmaster while it preloads the library; every backend inherits it by fork.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// A periodic task: a name for the log and a function run outside any transaction (it
/// starts its own with `BackgroundWorker::transaction`) and decides itself whether it is due.
pub type Task = (&'static str, fn());

/// Tasks the capabilities run every round, in this order.
const TASKS: &[Task] = &[
    ("partition maintenance", crate::partition::worker_task),
    ("audit sealing", crate::audit::worker_task),
];

pub fn register() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::Relaxed);
    for database in gucs::worker_databases() {
        BackgroundWorkerBuilder::new(&format!("pg_platform worker for database {database}"))
            .set_type(WORKER_TYPE)
            .set_library("pg_platform")
            .set_function("pg_platform_worker_main")
            .set_extra(&database)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(Duration::from_secs(30)))
            .load();
    }
}

pub fn is_preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0} needs pg_platform's background worker, but pg_platform is not in shared_preload_libraries")]
    NotPreloaded(String),
    #[error("{0} needs pg_platform's background worker, but database \"{1}\" is not listed in platform.databases")]
    NotConfigured(String, String),
}

impl SqlError for WorkerError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NotPreloaded(_) => "Add pg_platform to shared_preload_libraries, list this database in platform.databases, and restart the server.".into(),
            Self::NotConfigured(_, db) => format!("Add {db} to platform.databases (ALTER SYSTEM SET platform.databases = ...) and restart the server."),
        })
    }
}

/// Errors unless a worker serves the current database; `feature` names what needs it.
pub fn require_worker(feature: &str) {
    if !is_preloaded() {
        crate::error::raise(WorkerError::NotPreloaded(feature.into()));
    }
    let db = crate::sql::read::<String>("SELECT current_database()::text", &[]).unwrap_or_default();
    if !gucs::worker_databases().contains(&db) {
        crate::error::raise(WorkerError::NotConfigured(feature.into(), db));
    }
}

/// The running pg_platform background workers of this server, one row per database.
/// Fails with SQLSTATE 55000 when the library is not preloaded (no worker can run).
#[pg_extern]
fn worker_status() -> TableIterator<
    'static,
    (
        name!(database, String),
        name!(pid, i32),
        name!(backend_start, TimestampWithTimeZone),
        name!(configured, bool),
    ),
> {
    if !is_preloaded() {
        crate::error::raise(WorkerError::NotPreloaded("platform.worker_status()".into()));
    }
    let configured = gucs::worker_databases();
    let rows = Spi::connect(|c| {
        let table = c.select(
            "SELECT datname::text, pid, backend_start FROM pg_catalog.pg_stat_activity
              WHERE backend_type = $1 ORDER BY datname",
            None,
            &[WORKER_TYPE.into()],
        )?;
        let mut rows = Vec::new();
        for row in table {
            let db: String = row.get(1)?.unwrap_or_default();
            let pid: i32 = row.get(2)?.unwrap_or_default();
            let started: Option<TimestampWithTimeZone> = row.get(3)?;
            rows.push((db, pid, started));
        }
        Ok::<_, pgrx::spi::SpiError>(rows)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    TableIterator::new(rows.into_iter().filter_map(move |(db, pid, started)| {
        let is_configured = configured.contains(&db);
        started.map(|s| (db, pid, s, is_configured))
    }))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_platform_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("pg_platform worker started in database \"{database}\"");

    let naptime = || Duration::from_secs(gucs::WORKER_NAPTIME.get().max(1) as u64);
    // Lake sinks are looked at every platform.lake_sync_interval (a read of one small
    // table); the other tasks run once per naptime.
    let start = std::time::Instant::now();
    let mut last_round: Option<std::time::Instant> = None;
    while BackgroundWorker::wait_latch(Some(naptime().min(crate::lake::worker::interval()))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !installed() {
            continue;
        }
        let since = last_round.unwrap_or(start);
        if since.elapsed() >= naptime() {
            last_round = Some(std::time::Instant::now());
            run_round();
        }
        crate::lake::worker::task();
    }
    log!("pg_platform worker in database \"{database}\" is exiting");
}

/// Whether the extension is installed in the worker's database.
fn installed() -> bool {
    BackgroundWorker::transaction(|| {
        crate::sql::read::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_platform')",
            &[],
        )
        .unwrap_or(false)
    })
}

/// One round of the periodic tasks.
fn run_round() {
    for (name, task) in TASKS {
        debug1!("pg_platform worker: running {name}");
        task();
    }
}
