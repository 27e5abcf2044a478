//! A card's profile row read, locked and rewritten without SQL: the scoring trigger runs
//! once per payment, and two SPI statements (a `SELECT ... FOR UPDATE` and an `UPDATE`)
//! cost more than scoring with 300 trees. This is what those statements do in READ
//! COMMITTED: find the row by its primary key, lock its latest version (waiting for a
//! writer of the same card, following its update), rewrite it (HOT when it can; the key
//! index gets an entry when it cannot).
//!
//! Anything else falls back to the SQL path of `scoring`: a card without a profile yet
//! (its first payment inserts one), a row deleted meanwhile, REPEATABLE READ or
//! SERIALIZABLE (whose errors and predicate locks the executor knows), and a profile
//! table somebody gave triggers, rules, row-level security or more indexes.
//!
//! Which of the two applies to the table is worked out once per backend and kept until a
//! relcache invalidation of the table or its index (what any DDL on them sends); the table
//! is opened once per payment, from the lock to the rewrite.

use pgrx::prelude::*;
use std::ffi::CStr;

/// The profile table's columns, by name.
const COLUMNS: [&str; 4] = ["card_key", "state", "payments", "updated_at"];

/// A profile row this transaction has locked, with the table and its key index kept open
/// (and locked) from the lock to the rewrite.
pub struct LockedRow {
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    at: [i32; 4],
    tid: pg_sys::ItemPointerData,
    pub state: Vec<u8>,
}

/// What `open` works out about the profile table once per backend (catalog lookups by
/// name, the index list, the columns' positions: a few percent of a scoring backend's
/// CPU when done at every payment), until a relcache invalidation of the table or its
/// index (DDL on either, a new trigger, rule or policy) or of every relation.
#[derive(Clone, Copy)]
struct Layout {
    rel: pg_sys::Oid,
    /// The key index, or None when the table is not plain (the SQL path does the work).
    index: Option<pg_sys::Oid>,
    at: [i32; 4],
}

thread_local! {
    static LAYOUT: std::cell::Cell<Option<Layout>> = const { std::cell::Cell::new(None) };
    static CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = LAYOUT.try_with(|l| {
        if let Some(layout) = l.get() {
            if relid == pg_sys::InvalidOid || relid == layout.rel || Some(relid) == layout.index {
                l.set(None);
            }
        }
    });
}

/// The profile table's layout, worked out again when invalidated; None when it does not
/// exist.
unsafe fn layout() -> Option<Layout> {
    unsafe {
        if !CALLBACK.get() {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(0),
            );
            CALLBACK.set(true);
        }
        if let Some(l) = LAYOUT.get() {
            return Some(l);
        }
        let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), true);
        let oid = pg_sys::get_relname_relid(c"fraud_profile".as_ptr(), ns);
        if ns == pg_sys::InvalidOid || oid == pg_sys::InvalidOid {
            return None;
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(oid, lock);
        let indexes = pgrx::PgList::<std::ffi::c_void>::from_pg(pg_sys::RelationGetIndexList(rel));
        let key_index = pg_sys::RelationGetPrimaryKeyIndex(rel);
        let at = positions(rel);
        let plain = (*(*rel).rd_rel).relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && !(*(*rel).rd_rel).relhastriggers
            && !(*(*rel).rd_rel).relrowsecurity
            && (*rel).rd_rules.is_null()
            && indexes.len() == 1
            && key_index != pg_sys::InvalidOid;
        pg_sys::table_close(rel, lock);
        let layout = Layout {
            rel: oid,
            index: (plain && at.is_some()).then_some(key_index),
            at: at.unwrap_or_default(),
        };
        LAYOUT.set(Some(layout));
        Some(layout)
    }
}

/// The table and its key index, opened and locked as an UPDATE would, with the columns'
/// attribute numbers, or None when the SQL path must do the work.
unsafe fn open() -> Option<(pg_sys::Relation, pg_sys::Relation, [i32; 4])> {
    unsafe {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            return None;
        }
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let first = layout()?;
        let index = first.index?;
        let rel = pg_sys::table_open(first.rel, lock);
        // Taking the lock processed any pending invalidation: the layout must still hold.
        match layout() {
            Some(l) if l.rel == (*rel).rd_id && l.index == Some(index) => {
                Some((rel, pg_sys::index_open(index, lock), l.at))
            }
            _ => {
                pg_sys::table_close(rel, lock);
                None
            }
        }
    }
}

unsafe fn close(rel: pg_sys::Relation, index: pg_sys::Relation) {
    unsafe {
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}

/// Each of `COLUMNS`' attribute number (1-based).
unsafe fn positions(rel: pg_sys::Relation) -> Option<[i32; 4]> {
    unsafe {
        let desc = (*rel).rd_att;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let mut at = [0i32; 4];
        for (i, a) in attrs.iter().enumerate() {
            let name = CStr::from_ptr(a.attname.data.as_ptr()).to_bytes();
            if let Some(c) = COLUMNS.iter().position(|c| c.as_bytes() == name) {
                if !a.attisdropped {
                    at[c] = i as i32 + 1;
                }
            }
        }
        at.iter().all(|&a| a > 0).then_some(at)
    }
}

/// Finds the profile of `key` and locks it for this transaction, or None (no such row
/// visible, or a case the SQL path handles: see the module's comment).
pub fn lock(key: &[u8]) -> Option<LockedRow> {
    unsafe {
        let (rel, index, at) = open()?;
        // An earlier payment of this statement (a multi-row insert, COPY) may have
        // rewritten this very row: make its update visible, as SPI does between statements.
        pg_sys::CommandCounterIncrement();
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        let key_datum = pgrx::IntoDatum::into_datum(key.to_vec());
        let Some(key_datum) = key_datum else {
            pg_sys::UnregisterSnapshot(snapshot);
            close(rel, index);
            return None;
        };
        let mut skey: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut skey,
            1,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::Oid::from(pg_sys::F_BYTEAEQ),
            key_datum,
        );
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let scan = pg_sys::index_beginscan(rel, index, snapshot, 1, 0);
        pg_sys::index_rescan(scan, &mut skey, 1, std::ptr::null_mut(), 0);
        let found =
            pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot);
        let mut tid = (*slot).tts_tid;
        pg_sys::index_endscan(scan);
        let mut locked = None;
        if found {
            let mut tmfd: pg_sys::TM_FailureData = std::mem::zeroed();
            let result = pg_sys::table_tuple_lock(
                rel,
                &mut tid,
                snapshot,
                slot,
                pg_sys::GetCurrentCommandId(false),
                pg_sys::LockTupleMode::LockTupleExclusive,
                pg_sys::LockWaitPolicy::LockWaitBlock,
                pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8,
                &mut tmfd,
            );
            // Deleted meanwhile (or anything unexpected): the SQL path decides.
            if result == pg_sys::TM_Result::TM_Ok {
                let mut isnull = false;
                let state = pg_sys::slot_getattr(slot, 2, &mut isnull);
                let bytes: Option<Vec<u8>> = pgrx::FromDatum::from_datum(state, isnull);
                locked = bytes.map(|state| LockedRow {
                    rel,
                    index,
                    at,
                    tid: (*slot).tts_tid,
                    state,
                });
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::UnregisterSnapshot(snapshot);
        if locked.is_none() {
            close(rel, index);
        }
        locked
    }
}

/// Rewrites the row `lock` returned with the new `state` and payment count, and closes
/// the table. (Should an ERROR come between the two, the transaction's abort releases
/// the relations and the row lock.)
pub fn save(row: LockedRow, key: &[u8], state: Vec<u8>, payments: i64) {
    unsafe {
        let LockedRow {
            rel,
            index,
            at,
            tid,
            ..
        } = row;
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let natts = (*(*rel).rd_att).natts as usize;
        pg_sys::ExecClearTuple(slot);
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        nulls.fill(true);
        let set = |values: &mut [pg_sys::Datum],
                   nulls: &mut [bool],
                   attno: i32,
                   d: Option<pg_sys::Datum>| {
            if let Some(d) = d {
                values[attno as usize - 1] = d;
                nulls[attno as usize - 1] = false;
            }
        };
        let key_datum = pgrx::IntoDatum::into_datum(key.to_vec());
        set(values, nulls, at[0], key_datum);
        set(values, nulls, at[1], pgrx::IntoDatum::into_datum(state));
        set(values, nulls, at[2], Some(pg_sys::Datum::from(payments)));
        // now(): the transaction's start.
        set(
            values,
            nulls,
            at[3],
            Some(pg_sys::Datum::from(
                pg_sys::GetCurrentTransactionStartTimestamp(),
            )),
        );
        pg_sys::ExecStoreVirtualTuple(slot);
        let mut tid = tid;
        let mut tmfd: pg_sys::TM_FailureData = std::mem::zeroed();
        let mut lockmode = pg_sys::LockTupleMode::LockTupleExclusive;
        let mut update_indexes = false;
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        let result = pg_sys::table_tuple_update(
            rel,
            &mut tid,
            slot,
            pg_sys::GetCurrentCommandId(true),
            snapshot,
            std::ptr::null_mut(),
            true,
            &mut tmfd,
            &mut lockmode,
            &mut update_indexes,
        );
        pg_sys::UnregisterSnapshot(snapshot);
        if result != pg_sys::TM_Result::TM_Ok {
            // The row is locked by this transaction: nobody else can have changed it.
            crate::error::raise(crate::fraud::scoring::ScoreError::ProfileChanged);
        }
        if update_indexes {
            // Not a HOT update: the key index points at the new version too.
            let info = pg_sys::BuildIndexInfo(index);
            let mut key_value = [key_datum.unwrap_or(pg_sys::Datum::from(0))];
            let mut key_null = [false];
            pg_sys::index_insert(
                index,
                key_value.as_mut_ptr(),
                key_null.as_mut_ptr(),
                &mut (*slot).tts_tid,
                rel,
                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
                false,
                info,
            );
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        close(rel, index);
    }
}
