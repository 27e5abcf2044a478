//! pg_platform: one PostgreSQL extension for the transactional core of a payments platform.
//!
//! This file only wires the capability modules together and registers what must exist at
//! library load time (GUCs, background workers). Each capability lives in its own folder.

use pgrx::prelude::*;

pub mod audit;
pub mod cdc;
pub mod error;
pub mod fraud;
pub mod gucs;
pub mod lake;
pub mod partition;
pub mod payments;
pub mod pii;
pub mod rbac;
mod sql;
mod testing;
pub mod worker;

::pgrx::pg_module_magic!();

// The roles and grants every other object relies on are created before any generated SQL.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// Privileges on the generated functions, once they all exist.
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pg_upgrade loads every library; it must not start workers or touch configuration.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    gucs::register();
    worker::register();
    pii::init();
    audit::init();
    fraud::init();
}

/// Required by `cargo pgrx test`: the settings every test server runs with, so that later
/// capabilities (logical decoding, workers) need no harness change.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let mut options = vec![
            "shared_preload_libraries = 'pg_platform'",
            "wal_level = logical",
            "max_replication_slots = 16",
            "max_wal_senders = 16",
            "platform.databases = 'pgrx_tests'",
            // Kept in files, so that a test can read what a background worker logged.
            "logging_collector = on",
            "log_directory = 'log'",
            "platform.worker_naptime = 1",
            // Tests call run_maintenance themselves; the worker's pass is tested end to end.
            "platform.maintenance_interval = 0",
            // A fixed test master key (the master key file checks run in tests/e2e).
            "platform.master_key_command = 'echo 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'",
        ];
        if server_has_output_plugin_libraries() {
            options.push("output_plugin_libraries = 'pgoutput, test_decoding, pg_platform'");
        }
        options
    }

    /// Recent PostgreSQL 15 minors only let a slot name a plugin listed in the superuser GUC
    /// `output_plugin_libraries`; older ones lack the GUC and refuse to start if it is set.
    /// The server binary carries the names of all its GUCs, so look there.
    fn server_has_output_plugin_libraries() -> bool {
        let bindir = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output();
        let Ok(out) = bindir else { return false };
        let path =
            std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("postgres");
        let Ok(binary) = std::fs::read(path) else {
            return false;
        };
        let needle = b"output_plugin_libraries";
        binary.windows(needle.len()).any(|w| w == needle)
    }
}
