//! Initial snapshot (backfill) of a sink's tables, consistent with the change stream.
//!
//! A batch of a sink that is caught up reads one chunk per table being backfilled (at most
//! `platform.lake_backfill_chunk_rows` rows in primary key order after the last chunk's
//! key) with a registered snapshot S, then writes a watermark (a non-transactional logical
//! message) H and flushes it, so the batch's WAL range ends after H. While the batch
//! decodes its range, every change of such a table made by a transaction S does not see
//! removes that key from the chunk: the change event is newer than the chunk's row. When H
//! passes in the stream, the chunk's remaining rows are landed with `_op = 'r'` at H's LSN.
//! Readers ordering by LSN therefore see, for each key, the snapshot row or a later change
//! event, never an older one after a newer. Each chunk is a short statement in a short
//! transaction (no xmin held for long); progress (the last key) is committed with the
//! batch, in its manifest and in `platform.lake_backfill`, so a backfill resumes after a
//! crash without a row missed or doubled.

use super::columns::ColType;
use super::decode::{self, Head, Reader, Relation};
use super::files::BatchWriter;
use super::sync::spi;
use super::LakeError;
use crate::cdc::encoding::{binary_relation, binary_value, RelInfo};
use crate::error::OrRaise;
use pgrx::prelude::*;
use pgrx::IntoDatum;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

/// Prefix of the watermark messages in the WAL.
pub const MESSAGE_PREFIX: &str = "pg_platform_lake";

/// What a batch did for one table's backfill, committed with the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub table: String,
    pub last_key: Option<Vec<String>>,
    pub done: bool,
    pub rows: u64,
}

pub struct Chunk {
    pub table: String,
    relid: u32,
    rel: Relation,
    types: Vec<ColType>,
    key_cols: Vec<usize>,
    /// Whether old tuples (key only) carry exactly `key_cols`.
    old_is_key: bool,
    rows: Vec<Vec<u8>>,
    alive: Vec<bool>,
    index: HashMap<Vec<u8>, usize>,
    snapshot: pg_sys::Snapshot,
    marker: String,
    last_key: Option<Vec<String>>,
    done: bool,
    emitted: Option<u64>,
    /// A change whose key could not be told apart: the chunk is read again next batch.
    conflicted: bool,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if !self.snapshot.is_null() {
            unsafe { pg_sys::UnregisterSnapshot(self.snapshot) };
            self.snapshot = std::ptr::null_mut();
        }
    }
}

impl Chunk {
    pub fn progress(&self) -> Option<Progress> {
        let rows = self.emitted?;
        if self.conflicted {
            return None;
        }
        Some(Progress {
            table: self.table.clone(),
            last_key: self.last_key.clone(),
            done: self.done,
            rows,
        })
    }

    /// The key of a tuple at `r` (full, or key columns only), moving `r` past it.
    fn tuple_key(&self, r: &mut Reader, n: usize) -> Result<Option<Vec<u8>>, LakeError> {
        let full = n == self.rel.columns.len();
        let mut key = Vec::new();
        for i in 0..n {
            let col = if full {
                i
            } else {
                self.rel.key_columns().get(i).copied().unwrap_or(usize::MAX)
            };
            let start = r.pos();
            let tag = r.u8()?;
            if tag == b'v' {
                let ty = self.types.get(col).ok_or_else(|| {
                    LakeError::Decode(format!("tuple too wide for {}", self.table))
                })?;
                ty.skip(r)?;
            }
            if self.key_cols.contains(&col) {
                key.extend_from_slice(r.span(start, r.pos()));
            }
        }
        Ok((full || self.old_is_key).then_some(key))
    }

    /// A change of this chunk's table seen while decoding the batch.
    fn change(&mut self, head: &Head, tuples: &Reader) -> Result<(), LakeError> {
        if self.emitted.is_some() {
            return Ok(());
        }
        let xid = pg_sys::TransactionId::from(head.xid);
        // Seen by the chunk's snapshot: the chunk's rows already hold its effect.
        if !unsafe { pg_sys::XidInMVCCSnapshot(xid, self.snapshot) } {
            return Ok(());
        }
        let mut r = tuples.clone();
        while !r.is_empty() {
            let _which = r.u8()?;
            let n = r.u16()? as usize;
            match self.tuple_key(&mut r, n)? {
                Some(k) => {
                    if let Some(&i) = self.index.get(&k) {
                        self.alive[i] = false;
                    }
                }
                None => self.conflicted = true,
            }
        }
        Ok(())
    }

    /// The watermark passed: the chunk's rows nobody changed since its snapshot land now.
    fn emit(&mut self, lsn: u64, w: &mut BatchWriter) -> Result<(), LakeError> {
        if self.emitted.is_some() || self.conflicted {
            return Ok(());
        }
        let head = Head {
            xid: 0,
            commit_lsn: lsn,
            commit_time: now_micros(),
            lsn,
            streamed: false,
        };
        let mut n = 0u64;
        for (row, alive) in self.rows.iter().zip(&self.alive) {
            if *alive {
                w.change(&self.rel, &self.types, b'R', &head, Reader::new(row))?;
                n += 1;
            }
        }
        self.emitted = Some(n);
        self.rows = Vec::new();
        self.index = HashMap::new();
        Ok(())
    }
}

pub(super) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Chunks in progress in one batch, by relid.
#[derive(Default)]
pub struct Chunks {
    pub list: Vec<Chunk>,
}

impl Chunks {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn change(&mut self, relid: u32, head: &Head, tuples: &Reader) -> Result<(), LakeError> {
        for c in self.list.iter_mut().filter(|c| c.relid == relid) {
            c.change(head, tuples)?;
        }
        Ok(())
    }

    /// A truncate of a table by a transaction a chunk's snapshot does not see empties it.
    pub fn truncate(&mut self, relid: u32, head: &Head) {
        for c in self
            .list
            .iter_mut()
            .filter(|c| c.relid == relid && c.emitted.is_none())
        {
            let xid = pg_sys::TransactionId::from(head.xid);
            if unsafe { pg_sys::XidInMVCCSnapshot(xid, c.snapshot) } {
                c.alive.iter_mut().for_each(|a| *a = false);
            }
        }
    }

    /// A logical message of the stream: a watermark of one of our chunks lands it.
    pub fn message(
        &mut self,
        lsn: u64,
        content: &str,
        w: &mut BatchWriter,
    ) -> Result<(), LakeError> {
        for c in self.list.iter_mut().filter(|c| c.marker == content) {
            c.emit(lsn, w)?;
        }
        Ok(())
    }

    pub fn progress(&self) -> Vec<Progress> {
        self.list.iter().filter_map(Chunk::progress).collect()
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The tables of `sink` being backfilled: (table, last key, chunks so far).
fn running(sink: &str) -> Vec<(String, Option<Vec<String>>, i32)> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT table_name, last_key, chunks FROM platform.lake_backfill
              WHERE sink = $1 AND state = 'running' ORDER BY table_name",
            None,
            &[sink.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?,
                r.get::<i32>(3)?.unwrap_or(0),
            ));
        }
        Ok(out)
    }))
}

/// Reads one chunk of every running backfill of `sink` and writes its watermark.
pub fn read_chunks(sink: &str) -> Chunks {
    let size = crate::gucs::LAKE_BACKFILL_CHUNK_ROWS.get().max(1) as i64;
    let mut chunks = Chunks::default();
    for (table, last_key, chunk_no) in running(sink) {
        match read_chunk(sink, &table, last_key, chunk_no, size).or_raise() {
            Some(c) => chunks.list.push(c),
            None => {
                // The table is gone: nothing left to backfill.
                crate::sql::modify(
                    "UPDATE platform.lake_backfill SET state = 'done', finished_at = clock_timestamp()
                      WHERE sink = $1 AND table_name = $2",
                    &[sink.into(), table.as_str().into()],
                );
            }
        }
    }
    if !chunks.is_empty() {
        // The watermarks must be in the flushed WAL the batch decodes. Up to the end of
        // the last record this backend wrote: the insert position, when it sits at a page
        // boundary, points past a page header not written yet, which XLogFlush refuses.
        unsafe { pg_sys::XLogFlush(pg_sys::XactLastRecEnd) };
    }
    chunks
}

/// A registered snapshot in which no transaction that already committed (in the commit
/// log) is still shown as running. Such a transaction's commit record can precede the
/// batch's range, so its change could not be told apart from the chunk's rows; it leaves
/// the running set within microseconds, so the snapshot is simply taken again.
fn settled_snapshot() -> pg_sys::Snapshot {
    unsafe {
        for _ in 0..10_000 {
            let snap = pg_sys::GetTransactionSnapshot();
            let running = std::slice::from_raw_parts((*snap).xip, (*snap).xcnt as usize);
            let sub = if (*snap).subxcnt > 0 {
                std::slice::from_raw_parts((*snap).subxip, (*snap).subxcnt as usize)
            } else {
                &[]
            };
            if !running
                .iter()
                .chain(sub)
                .any(|x| pg_sys::TransactionIdDidCommit(*x))
            {
                return pg_sys::RegisterSnapshot(snap);
            }
            pg_sys::pg_usleep(100);
        }
        pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot())
    }
}

/// A table's decoding plan and the relation as the stream would announce it, for rows
/// read by SQL (backfill chunks, archives) rather than decoded from WAL.
pub(super) fn relation_of(
    oid: pg_sys::Oid,
) -> Result<(RelInfo, Relation, Vec<ColType>), LakeError> {
    let info = unsafe {
        let rel = pg_sys::relation_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let info = RelInfo::build(rel, |_, _| true);
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        info
    };
    let mut msg = Vec::new();
    binary_relation(&mut msg, &info, 1);
    let decode::Message::Relation(rel) = decode::message(&msg)? else {
        return Err(LakeError::Decode("relation message of a table".into()));
    };
    let types = rel
        .columns
        .iter()
        .map(|c| ColType::parse(&c.arrow))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((info, rel, types))
}

/// Encodes heap tuples of SQL results as the plugin encodes a new tuple (`N`, column
/// count, each column tagged), remembering where each column starts.
pub(super) struct RowEncoder {
    td: pg_sys::TupleDesc,
    vals: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
    starts: Vec<usize>,
}

impl RowEncoder {
    /// # Safety
    /// `td` is the valid descriptor of the tuples to encode.
    pub(super) unsafe fn new(td: pg_sys::TupleDesc) -> RowEncoder {
        let natts = (*td).natts as usize;
        RowEncoder {
            td,
            vals: vec![pg_sys::Datum::from(0); natts],
            nulls: vec![true; natts],
            starts: Vec::with_capacity(natts + 1),
        }
    }

    /// Replaces `row` by the encoding of `tuple` (columns as in `info`). Output functions
    /// allocate in the current memory context.
    ///
    /// # Safety
    /// `tuple` is a valid tuple of the descriptor, whose columns are `info`'s.
    pub(super) unsafe fn encode(
        &mut self,
        row: &mut Vec<u8>,
        info: &RelInfo,
        tuple: pg_sys::HeapTuple,
    ) {
        let natts = self.vals.len();
        pg_sys::heap_deform_tuple(
            tuple,
            self.td,
            self.vals.as_mut_ptr(),
            self.nulls.as_mut_ptr(),
        );
        row.clear();
        row.push(b'N');
        row.extend_from_slice(&(natts as u16).to_le_bytes());
        self.starts.clear();
        for (ci, col) in info.columns.iter().enumerate().take(natts) {
            self.starts.push(row.len());
            if self.nulls[ci] {
                row.push(b'n');
            } else {
                row.push(b'v');
                binary_value(row, &col.kind, self.vals[ci]);
            }
        }
        self.starts.push(row.len());
    }

    /// The tag and value bytes of column `ci` of the row last encoded.
    pub(super) fn column<'r>(&self, row: &'r [u8], ci: usize) -> &'r [u8] {
        match (self.starts.get(ci), self.starts.get(ci + 1)) {
            (Some(&a), Some(&b)) => &row[a..b],
            _ => &[],
        }
    }
}

/// The primary key columns of `oid`, in key order.
pub(super) fn primary_key(oid: pg_sys::Oid) -> Vec<String> {
    crate::sql::read::<Vec<String>>(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM pg_catalog.pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = $1 AND i.indisprimary",
        &[oid.into()],
    )
    .unwrap_or_default()
}

fn read_chunk(
    sink: &str,
    table: &str,
    last_key: Option<Vec<String>>,
    chunk_no: i32,
    size: i64,
) -> Result<Option<Chunk>, LakeError> {
    let Some(oid) = crate::sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[table.into()])
    else {
        return Ok(None);
    };
    let (info, rel, types) = relation_of(oid)?;
    let pk = primary_key(oid);
    if pk.is_empty() {
        return Err(LakeError::NoPrimaryKey(table.into()));
    }
    let key_cols: Vec<usize> = pk
        .iter()
        .filter_map(|k| rel.columns.iter().position(|c| &c.name == k))
        .collect();
    let mut sorted = key_cols.clone();
    sorted.sort_unstable();
    let old_is_key = rel.key_columns() == sorted;
    let cols = pk
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let qualified = format!("{}.{}", quote_ident(&info.schema), quote_ident(&info.table));
    // One row more than the chunk takes tells whether this chunk is the last: without it,
    // a table whose rows are a multiple of the chunk size needed one more, empty, read.
    let peek = size + 1;
    let sql = match &last_key {
        None => format!("SELECT * FROM {qualified} ORDER BY {cols} LIMIT {peek}"),
        Some(_) => {
            let bounds = key_cols
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("($1::text[])[{}]::{}", i + 1, rel.columns[c].pg_type))
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT * FROM {qualified} WHERE ({cols}) > ({bounds}) ORDER BY {cols} LIMIT {peek}")
        }
    };
    let snapshot = settled_snapshot();
    let mut chunk = Chunk {
        table: table.to_string(),
        relid: oid.to_u32(),
        rel,
        types,
        key_cols,
        old_is_key,
        rows: Vec::new(),
        alive: Vec::new(),
        index: HashMap::new(),
        snapshot,
        // Unique per read: a failed batch's watermark, decoded again, matches no chunk.
        marker: format!(
            "H {sink} {table} {} {}",
            chunk_no + 1,
            crate::sql::read::<String>("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
                .unwrap_or_default()
        ),
        last_key: last_key.clone(),
        done: false,
        emitted: None,
        conflicted: false,
    };
    let csql = CString::new(sql).map_err(|_| LakeError::Decode("table name".into()))?;
    let got = Spi::connect(|_c| unsafe {
        let mut argtypes = [pg_sys::TEXTARRAYOID];
        let nargs = i32::from(last_key.is_some());
        let plan = pg_sys::SPI_prepare(csql.as_ptr(), nargs, argtypes.as_mut_ptr());
        if plan.is_null() {
            return Err(LakeError::Decode(format!(
                "cannot plan the backfill of {table}"
            )));
        }
        let mut values = [last_key
            .clone()
            .and_then(|k| k.into_datum())
            .unwrap_or(pg_sys::Datum::from(0))];
        let nulls = CString::new(" ").unwrap_or_default();
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            snapshot,
            std::ptr::null_mut(),
            true,
            false,
            peek,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            return Err(LakeError::Decode(format!(
                "backfill query of {table} returned {rc}"
            )));
        }
        let tt = pg_sys::SPI_tuptable;
        let got = pg_sys::SPI_processed as usize;
        if tt.is_null() {
            return Ok(0);
        }
        let n = got.min(size as usize);
        let td = (*tt).tupdesc;
        let mut enc = RowEncoder::new(td);
        for i in 0..n {
            let tuple = *(*tt).vals.add(i);
            let mut row = Vec::new();
            enc.encode(&mut row, &info, tuple);
            let mut key = Vec::new();
            for &ci in &chunk.key_cols {
                key.extend_from_slice(enc.column(&row, ci));
            }
            chunk.index.insert(key, chunk.rows.len());
            chunk.rows.push(row);
            chunk.alive.push(true);
            if i + 1 == n {
                let mut k = Vec::new();
                for &ci in &chunk.key_cols {
                    let p = pg_sys::SPI_getvalue(tuple, td, ci as i32 + 1);
                    k.push(if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    });
                }
                chunk.last_key = Some(k);
            }
        }
        Ok(got)
    })?;
    chunk.done = (got as i64) <= size;
    crate::sql::read::<String>(
        "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)::text",
        &[MESSAGE_PREFIX.into(), chunk.marker.as_str().into()],
    );
    Ok(Some(chunk))
}
