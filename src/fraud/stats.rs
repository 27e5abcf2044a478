//! `platform.fraud_stats`: calls, latency and the share of each risk level and verdict
//! per model version, without a write or a shared lock per payment. Each backend counts
//! in its own memory; at the end of each statement the counts move to shared memory (one
//! entry per database, model and version) under one short lock, as `pii_access` does.

use crate::error::{raise, SqlError};
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, PgLwLock, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Distinct (database, model, version) entries kept; further ones are counted as dropped.
const SLOTS: usize = 256;
/// Latency buckets: bucket i counts calls of [2^i, 2^(i+1)) microseconds.
const BUCKETS: usize = 24;
/// Model names are kept in shared memory up to this many bytes.
const NAME_BYTES: usize = 64;

#[derive(Copy, Clone)]
struct Entry {
    database: u32,
    name: [u8; NAME_BYTES],
    version: i32,
    calls: u64,
    total_us: u64,
    levels: [u64; 3],
    verdicts: [u64; 3],
    latency: [u64; BUCKETS],
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            database: 0,
            name: [0; NAME_BYTES],
            version: 0,
            calls: 0,
            total_us: 0,
            levels: [0; 3],
            verdicts: [0; 3],
            latency: [0; BUCKETS],
        }
    }
}

#[derive(Copy, Clone)]
pub struct Stats {
    used: usize,
    dropped: u64,
    entries: [Entry; SLOTS],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            used: 0,
            dropped: 0,
            entries: [Entry::default(); SLOTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Stats {}

static STATS: PgLwLock<Stats> = unsafe { PgLwLock::new(c"pg_platform fraud stats") };
static SHARED: AtomicBool = AtomicBool::new(false);
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

#[derive(Default, Clone)]
struct Pending {
    calls: u64,
    total_us: u64,
    levels: [u64; 3],
    verdicts: [u64; 3],
    latency: [u64; BUCKETS],
}

thread_local! {
    /// (model, version; version -1 for the built-in score) -> counts since the last flush.
    static PENDING: RefCell<HashMap<(String, i32), Pending>> = RefCell::new(HashMap::new());
}

#[derive(Debug, thiserror::Error)]
#[error("platform.fraud_stats needs pg_platform in shared_preload_libraries")]
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
            pg_shmem_init!(STATS);
            SHARED.store(true, Ordering::Relaxed);
        }
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
    }
}

fn level_index(level: &str) -> usize {
    match level {
        "highest" => 2,
        "elevated" => 1,
        _ => 0,
    }
}

fn verdict_index(verdict: &str) -> usize {
    match verdict {
        "block" => 2,
        "review" => 1,
        _ => 0,
    }
}

/// Counts one score (in this backend until the statement ends).
pub fn count(model: &str, version: Option<i32>, level: &str, verdict: &str, micros: u64) {
    if !SHARED.load(Ordering::Relaxed) {
        return;
    }
    PENDING.with_borrow_mut(|m| {
        let p = m
            .entry((model.to_string(), version.unwrap_or(-1)))
            .or_default();
        p.calls += 1;
        p.total_us += micros;
        p.levels[level_index(level)] += 1;
        p.verdicts[verdict_index(verdict)] += 1;
        let bucket = (64 - micros.max(1).leading_zeros() as usize - 1).min(BUCKETS - 1);
        p.latency[bucket] += 1;
    });
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

fn name_bytes(name: &str) -> [u8; NAME_BYTES] {
    let mut out = [0u8; NAME_BYTES];
    let b = name.as_bytes();
    let n = b.len().min(NAME_BYTES);
    out[..n].copy_from_slice(&b[..n]);
    out
}

fn flush() {
    if !SHARED.load(Ordering::Relaxed) {
        return;
    }
    let pending = PENDING.with_borrow_mut(std::mem::take);
    if pending.is_empty() {
        return;
    }
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut s = STATS.exclusive();
    for ((name, version), p) in pending {
        let key = name_bytes(&name);
        let used = s.used;
        let at = s.entries[..used]
            .iter()
            .position(|e| e.database == database && e.version == version && e.name == key);
        let at = match at {
            Some(i) => i,
            None if used < SLOTS => {
                s.entries[used] = Entry {
                    database,
                    name: key,
                    version,
                    ..Entry::default()
                };
                s.used += 1;
                used
            }
            None => {
                s.dropped += 1;
                continue;
            }
        };
        let e = &mut s.entries[at];
        e.calls += p.calls;
        e.total_us += p.total_us;
        for i in 0..3 {
            e.levels[i] += p.levels[i];
            e.verdicts[i] += p.verdicts[i];
        }
        for i in 0..BUCKETS {
            e.latency[i] += p.latency[i];
        }
    }
}

/// The upper bound (microseconds) of the latency bucket holding quantile `q`.
fn quantile(latency: &[u64; BUCKETS], calls: u64, q: f64) -> i64 {
    let target = ((calls as f64) * q).ceil() as u64;
    let mut seen = 0;
    for (i, n) in latency.iter().enumerate() {
        seen += n;
        if seen >= target.max(1) {
            return 1i64 << (i + 1);
        }
    }
    1i64 << BUCKETS
}

/// Scores per model version in this database since the server started (or the last
/// `fraud_reset_stats`): calls, mean latency, p50 and p99 latency (upper bound of a
/// power-of-two bucket, microseconds, profile read and write included), and the share of
/// each risk level and verdict. Version NULL is the built-in score.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn fraud_stats() -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(version, Option<i32>),
        name!(calls, i64),
        name!(mean_us, f64),
        name!(p50_us_at_most, i64),
        name!(p99_us_at_most, i64),
        name!(normal, f64),
        name!(elevated, f64),
        name!(highest, f64),
        name!(allowed, f64),
        name!(reviewed, f64),
        name!(blocked, f64),
    ),
> {
    if !SHARED.load(Ordering::Relaxed) {
        raise(NotPreloaded);
    }
    flush();
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let s = STATS.share();
    let rows: Vec<_> = s.entries[..s.used]
        .iter()
        .filter(|e| e.database == database && e.calls > 0)
        .map(|e| {
            let n = e.calls as f64;
            let end = e.name.iter().position(|b| *b == 0).unwrap_or(NAME_BYTES);
            (
                String::from_utf8_lossy(&e.name[..end]).into_owned(),
                (e.version >= 0).then_some(e.version),
                e.calls as i64,
                e.total_us as f64 / n,
                quantile(&e.latency, e.calls, 0.5),
                quantile(&e.latency, e.calls, 0.99),
                e.levels[0] as f64 / n,
                e.levels[1] as f64 / n,
                e.levels[2] as f64 / n,
                e.verdicts[0] as f64 / n,
                e.verdicts[1] as f64 / n,
                e.verdicts[2] as f64 / n,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Forgets the score counts of this database. Returns how many entries were removed.
#[pg_extern]
fn fraud_reset_stats() -> i64 {
    if !SHARED.load(Ordering::Relaxed) {
        raise(NotPreloaded);
    }
    flush();
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut s = STATS.exclusive();
    let used = s.used;
    let kept: Vec<Entry> = s.entries[..used]
        .iter()
        .copied()
        .filter(|e| e.database != database)
        .collect();
    for (i, e) in kept.iter().enumerate() {
        s.entries[i] = *e;
    }
    s.used = kept.len();
    (used - kept.len()) as i64
}
