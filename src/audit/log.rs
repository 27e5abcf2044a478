//! `platform.audit_log` is partitioned by month (UTC) of `event_time` and managed by the
//! partition capability like any other table: partitions made ahead by maintenance,
//! retention by dropping or detaching whole partitions.
//!
//! - The registration is made on first need (the first `audit_table`, the worker, or the
//!   first audited row change), never by the extension script: a restore then brings back
//!   both the registration and the partitions from the dump instead of colliding with new
//!   ones. Rows that find no partition and may not make one (DDL, which a restore replays)
//!   wait in `platform.audit_log_pending`, which the sealer empties into the log once a
//!   partition exists; sealing never passes a pending row.
//! - Writers route rows to the partition themselves (they write heap and index directly):
//!   the partition bounds are cached per backend and dropped by a relcache invalidation of
//!   the log, which every ATTACH, DETACH or DROP of a partition sends.
//! - Retention is the only way rows leave the log. Before a partition goes, every finished
//!   transaction is sealed; a partition still holding unsealed rows waits for a later pass.
//!   The retirement is itself recorded as a `RETENTION` row, with the time before which the
//!   log no longer holds rows (the horizon), so `verify_audit` tells expired blocks from
//!   deleted rows.

use crate::sql;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};

/// The log's partitioning, as the registration stores it.
pub const STEP: &str = "1 month";
pub const PREMAKE: i32 = 3;

/// One partition of the log: `[lo, hi)` in Unix microseconds (None: unbounded).
#[derive(Debug, Clone)]
pub struct LogPartition {
    pub oid: pg_sys::Oid,
    pub name: String,
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl LogPartition {
    pub fn contains(&self, t: i64) -> bool {
        self.lo.is_none_or(|lo| lo <= t) && self.hi.is_none_or(|hi| t < hi)
    }
}

#[derive(Default)]
struct Cache {
    log: pg_sys::Oid,
    partitions: Option<Vec<LogPartition>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// Set while this backend creates log partitions for a row it is writing: the DDL of
    /// that creation is not itself audited (its rows would need the partition being made).
    static ENSURING: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if relid == pg_sys::InvalidOid || relid == c.log {
                c.partitions = None;
            }
        }
    });
    // One callback for the log's caches: PostgreSQL allows few per backend.
    super::trigger::invalidate(relid);
}

/// Registers the relcache callback that keeps this module's and the writer's caches
/// current (once per backend).
pub fn watch() {
    if !CALLBACK.get() {
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(0),
            )
        };
        CALLBACK.set(true);
    }
}

/// Whether this backend is creating log partitions for a row it writes.
pub fn ensuring() -> bool {
    ENSURING.get()
}

const SELECT_PARTITIONS: &str = "
SELECT c.oid, format('%I.%I', n.nspname, c.relname),
       CASE WHEN b.lo NOT IN ('', 'MINVALUE')
            THEN (extract(epoch FROM btrim(b.lo, '''')::timestamptz) * 1000000)::int8 END,
       CASE WHEN b.hi NOT IN ('', 'MAXVALUE')
            THEN (extract(epoch FROM btrim(b.hi, '''')::timestamptz) * 1000000)::int8 END
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS e) x
 CROSS JOIN LATERAL (SELECT split_part(split_part(x.e, ') TO (', 1), 'FROM (', 2) AS lo,
                            rtrim(split_part(x.e, ') TO (', 2), ')') AS hi) b
 WHERE i.inhparent = $1 AND x.e <> 'DEFAULT'
 ORDER BY 3 NULLS FIRST";

fn load(log: pg_sys::Oid) -> Vec<LogPartition> {
    if !is_partitioned(log) {
        // The 0.3.0 log, before ALTER EXTENSION UPDATE: one table for all times.
        return vec![LogPartition {
            oid: log,
            name: "platform.audit_log".into(),
            lo: None,
            hi: None,
        }];
    }
    // Called by the writer, which keeps the caller's search_path.
    sql::with_safe_search_path(|| {
        Spi::connect(|c| {
            let rows = c.select(SELECT_PARTITIONS, None, &[log.into()])?;
            let mut out = Vec::new();
            for r in rows {
                out.push(LogPartition {
                    oid: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    name: r.get::<String>(2)?.unwrap_or_default(),
                    lo: r.get::<i64>(3)?,
                    hi: r.get::<i64>(4)?,
                });
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
    })
    .unwrap_or_default()
}

fn is_partitioned(log: pg_sys::Oid) -> bool {
    sql::with_safe_search_path(|| {
        sql::read::<bool>(
            "SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = $1",
            &[log.into()],
        )
    })
    .unwrap_or(false)
}

/// The log's partitions in time order (cached; the caller holds a lock on the log, so
/// pending invalidations have been processed).
pub fn partitions(log: pg_sys::Oid) -> Vec<LogPartition> {
    watch();
    let cached = CACHE.with_borrow(|c| (c.log == log).then(|| c.partitions.clone()).flatten());
    if let Some(p) = cached {
        return p;
    }
    let fresh = load(log);
    CACHE.with_borrow_mut(|c| {
        c.log = log;
        c.partitions = Some(fresh.clone());
    });
    fresh
}

/// The partition of the log that holds time `t`; with `make`, the partitions are made
/// first when none does (maintenance that did not run for months).
pub fn partition_for(log: pg_sys::Oid, t: i64, make: bool) -> Option<pg_sys::Oid> {
    // Looked up in place: a writer asks once per statement.
    let find = || {
        let cached = CACHE.with_borrow(|c| {
            (c.log == log)
                .then_some(c.partitions.as_ref())
                .flatten()
                .map(|p| p.iter().find(|p| p.contains(t)).map(|p| p.oid))
        });
        cached.unwrap_or_else(|| {
            partitions(log)
                .into_iter()
                .find(|p| p.contains(t))
                .map(|p| p.oid)
        })
    };
    if let Some(oid) = find() {
        return Some(oid);
    }
    if !make || ENSURING.get() {
        return None;
    }
    ENSURING.set(true);
    let made = sql::in_subtransaction(ensure_partitions);
    ENSURING.set(false);
    if let Err(message) = made {
        warning!("pg_platform: could not create partitions of platform.audit_log: {message}");
    }
    CACHE.with_borrow_mut(|c| c.partitions = None);
    find()
}

/// Registers the log for partition management (monthly in UTC, 3 months ahead, no
/// default partition, partitions kept until a retention is set) if it is not yet, and
/// makes the partitions of this month and the next if they are missing. As the
/// extension's owner: the log belongs to it.
pub fn ensure_partitions() {
    sql::as_extension_owner(|| {
        let log = sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.audit_log')::oid", &[]);
        if !log.is_some_and(is_partitioned) {
            return;
        }
        let registered = sql::read::<bool>(
            "SELECT true FROM platform.partition_config WHERE parent = 'platform.audit_log'::regclass",
            &[],
        )
        .is_some();
        if registered {
            // Only when this month or the next has no partition: retention and the rest of
            // maintenance are the worker's (an audited transaction that ran them could wait
            // for a retention that waits for it).
            let now = unsafe { pg_sys::GetCurrentTimestamp() } + 946_684_800_000_000;
            let month = 31 * 86_400 * 1_000_000i64;
            let parts = log.map(partitions).unwrap_or_default();
            let missing = [now, now + month]
                .iter()
                .any(|t| !parts.iter().any(|p| p.contains(*t)));
            if missing && crate::partition::needs_maintenance("platform.audit_log") {
                sql::run("SELECT count(*) FROM platform.run_maintenance('platform.audit_log')");
            }
        } else {
            sql::run(&format!(
                "SELECT count(*) FROM platform.partition_by_time('platform.audit_log', 'event_time', '{STEP}',
                     premake => {PREMAKE}, with_default => false, time_zone => 'UTC')"
            ));
        }
    });
}

/// Called by partition retention before it drops or detaches `partition` of the log: lets
/// the partition go unless some of its rows are still unsealed (the worker seals every
/// round; retention waits for it rather than seal while holding the log's lock, which
/// could deadlock with a sealer that writes to the log), after recording the retirement
/// as a `RETENTION` row (in the current partition, so the chain seals it like any other).
pub fn before_retire(partition: &str, action: &str) -> Result<(), String> {
    let log = sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.audit_log')::oid", &[])
        .unwrap_or(pg_sys::InvalidOid);
    let Some(part) = partitions(log).into_iter().find(|p| p.name == partition) else {
        return Err(format!(
            "{partition} is not a partition of platform.audit_log"
        ));
    };
    let (rows, unsealed) = Spi::connect(|c| {
        let t = c.select(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE l.xid >= coalesce(
                        (SELECT max(b.xid_hi) FROM platform.audit_block b WHERE b.cluster_id = l.cluster_id),
                        '0'::xid8))
                   FROM {partition} l"
            ),
            Some(1),
            &[],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<i64>(2)?.unwrap_or(0),
        ))
    })
    .map_err(|e| e.to_string())?;
    if unsealed > 0 {
        return Err(format!(
            "{partition} holds {unsealed} audit rows not sealed yet (a transaction older than them is still running); retention retries on the next pass"
        ));
    }
    // Retention goes oldest first, so everything before the horizon is gone.
    let previous = super::retention_horizon().horizon;
    let horizon = match (previous, part.hi) {
        (Some(p), Some(h)) => Some(p.max(h)),
        (p, h) => p.or(h),
    };
    let us = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
    let details = format!(
        "{{\"action\":\"{action}\",\"rows\":{rows},\"range_from_us\":{},\"range_to_us\":{},\"horizon_us\":{}}}",
        us(part.lo),
        us(part.hi),
        us(horizon)
    );
    super::trigger::record(
        "RETENTION",
        None,
        partition.to_string(),
        vec![super::trigger::Row {
            primary_key: None,
            old: None,
            new: Some(details),
        }],
        false,
    );
    super::guard::allow_retirement(part.oid);
    Ok(())
}

thread_local! {
    /// Set while the sealer moves pending rows into the log (the only DELETE the pending
    /// table's guard lets through).
    static MOVING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this backend is moving pending rows (checked by the pending table's trigger).
pub fn moving() -> bool {
    MOVING.get()
}

/// Moves the pending rows that a partition of the log now covers into the log (their
/// content unchanged, so their hashes still hold). Returns how many moved.
pub fn move_pending(log: pg_sys::Oid) -> i64 {
    let waiting = sql::read::<bool>("SELECT true FROM platform.audit_log_pending LIMIT 1", &[]);
    if waiting.is_none() {
        return 0;
    }
    let covered: Vec<String> = partitions(log)
        .iter()
        .filter(|p| p.oid != log)
        .map(|p| {
            let bound = |v: Option<i64>, op: &str| {
                v.map(|us| {
                    format!("event_time {op} pg_catalog.to_timestamp({us}::float8 / 1000000)")
                })
                .unwrap_or_else(|| "true".into())
            };
            format!("({} AND {})", bound(p.lo, ">="), bound(p.hi, "<"))
        })
        .collect();
    if covered.is_empty() {
        return 0;
    }
    MOVING.set(true);
    let moved = sql::in_subtransaction(|| {
        sql::modify(
            &format!(
                "WITH moved AS (DELETE FROM platform.audit_log_pending WHERE {} RETURNING *)
                 INSERT INTO platform.audit_log SELECT * FROM moved",
                covered.join(" OR ")
            ),
            &[],
        )
    });
    MOVING.set(false);
    match moved {
        Ok(n) => n,
        Err(message) => {
            warning!(
                "pg_platform: moving pending audit rows into platform.audit_log failed: {message}"
            );
            0
        }
    }
}
