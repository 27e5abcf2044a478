//! The background worker's lake task: every `platform.lake_sync_interval` it looks at each
//! sink and runs a batch when one is due (enough WAL waiting, or the oldest waiting change
//! older than `platform.lake_batch_max_age`). A failed batch is recorded in the sink's
//! `last_error` (shown by `platform.lake_status`) and retried on the next tick, so a sink
//! resumes by itself once the fault is gone.

use crate::gucs;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

thread_local! {
    /// When each sink last ran a batch (or tried to) in this worker.
    static LAST_RUN: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
    /// When each sink's current zone was last compacted by this worker.
    static LAST_COMPACT: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

/// How long the worker sleeps between two looks at the sinks.
pub fn interval() -> Duration {
    Duration::from_millis(gucs::LAKE_SYNC_INTERVAL.get().max(10) as u64)
}

/// Sinks of this database and the WAL bytes waiting for each (None: the slot is missing).
fn sinks() -> Vec<(String, Option<i64>)> {
    BackgroundWorker::transaction(|| {
        let has =
            crate::sql::read::<bool>("SELECT to_regclass('platform.lake_sink') IS NOT NULL", &[])
                .unwrap_or(false);
        if !has {
            return Vec::new();
        }
        Spi::connect(|c| {
            let t = c.select(
                "SELECT s.name, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_flush_lsn(), r.confirmed_flush_lsn)::int8
                   FROM platform.lake_sink s
                   LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
                  WHERE s.background
                  ORDER BY s.name",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .unwrap_or_default()
    })
}

/// The sink's current zone, compacted when `platform.lake_compact_interval` has passed
/// since this worker last did (the first time one interval after the worker started).
fn compact_if_due(name: &str) -> Result<(), String> {
    let every = gucs::LAKE_COMPACT_INTERVAL.get();
    if every <= 0 {
        return Ok(());
    }
    let now = Instant::now();
    let last = LAST_COMPACT.with(|l| *l.borrow_mut().entry(name.to_string()).or_insert(now));
    if last.elapsed() < Duration::from_secs(every as u64) {
        return Ok(());
    }
    LAST_COMPACT.with(|l| l.borrow_mut().insert(name.to_string(), now));
    let sink = name.to_string();
    BackgroundWorker::transaction(|| {
        crate::sql::in_subtransaction(move || {
            super::compact_sink(&sink, None);
            // Days before yesterday are complete: their small files become one per table;
            // today's small files folded so far become one per compaction.
            let before = crate::sql::read::<String>(
                "SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text",
                &[],
            )
            .unwrap_or_default();
            super::merge_sink(&sink, &before, true);
        })
    })
}

/// One tick of the worker: the batches that are due.
pub fn task() {
    let sinks = sinks();
    let max_age = Duration::from_millis(gucs::LAKE_BATCH_MAX_AGE.get().max(0) as u64);
    let min_bytes = (gucs::LAKE_BATCH_MIN_MB.get().max(0) as i64) << 20;
    for (name, waiting) in &sinks {
        let last = LAST_RUN.with(|l| l.borrow().get(name).copied());
        let old_enough = last.is_none_or(|t| t.elapsed() >= max_age);
        let due = match waiting {
            // A missing slot is an error to report, at the pace of max_age.
            None => old_enough,
            Some(0) => false,
            Some(w) => *w >= min_bytes || old_enough,
        };
        if !due {
            continue;
        }
        LAST_RUN.with(|l| l.borrow_mut().insert(name.clone(), Instant::now()));
        let sink = name.clone();
        let outcome = BackgroundWorker::transaction(|| {
            crate::sql::in_subtransaction(move || {
                super::sync::run(&sink);
            })
        });
        let outcome = outcome.and_then(|_| compact_if_due(name));
        if let Err(message) = outcome {
            let changed = BackgroundWorker::transaction(|| {
                crate::sql::modify(
                    "UPDATE platform.lake_sink SET last_error = $2, last_error_at = now()
                      WHERE name = $1 AND last_error IS DISTINCT FROM $2",
                    &[name.as_str().into(), message.as_str().into()],
                )
            });
            if changed > 0 {
                warning!("pg_platform: lake sink \"{name}\": {message}");
            }
        }
    }
}
