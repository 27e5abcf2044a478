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
