//! The logical decoding output plugin `pg_platform`: every committed change as a typed row.
//!
//! `pg_create_logical_replication_slot('s', 'pg_platform')` loads this library and calls
//! [`_PG_output_plugin_init`]. Each callback writes one JSON message (format_version 1,
//! documented in the README): a relation message before the first change of a table and
//! again when its shape changes, then begin, one message per row change, commit.
//! Per-change allocations go to a memory context reset after every change, so a huge
//! transaction does not grow the decoder's memory.

mod binary;
mod json;
mod options;
mod relation;

/// The typed JSON encoding of CDC messages, for other capabilities (audit row images).
pub mod encoding {
    pub use super::binary::{relation as binary_relation, value as binary_value};
    pub use super::json::{string, value};
    pub use super::relation::{Column, Kind, RelCache, RelInfo};
}
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::OrRaise;
use options::{Format, Options};
use pgrx::pg_sys;
use pgrx::prelude::*;
use relation::{RelCache, RelInfo};
use std::ffi::CStr;
use std::io::Write;

struct State {
    options: Options,
    rels: RelCache,
    w: Writer,
}

/// Everything a message is written with; kept apart from the relation cache so a cached
/// plan can be borrowed while writing.
struct Writer {
    buf: Vec<u8>,
    change_cx: pg_sys::MemoryContext,
    /// Whether the current transaction's begin message was written (empty ones are skipped).
    begun: bool,
    /// Between stream_start and stream_stop: changes belong to an in-progress transaction.
    in_stream: bool,
    /// Reused per change: deformed tuple values and nulls, unchanged TOAST columns.
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
    unchanged: Vec<usize>,
    /// The rendered JSON transaction fields and what they were rendered for.
    xact_cache: Vec<u8>,
    xact_key: Option<(usize, u32, u64, bool)>,
}

unsafe fn state<'a>(ctx: *mut pg_sys::LogicalDecodingContext) -> &'a mut State {
    &mut *((*ctx).output_plugin_private as *mut State)
}

/// Entry point PostgreSQL looks up when a slot names the plugin `pg_platform`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    let cb = &mut *cb;
    cb.startup_cb = Some(startup);
    cb.begin_cb = Some(begin);
    cb.change_cb = Some(change);
    cb.truncate_cb = Some(truncate);
    cb.commit_cb = Some(commit);
    cb.message_cb = Some(message);
    cb.shutdown_cb = Some(shutdown);
    cb.stream_start_cb = Some(stream_start);
    cb.stream_stop_cb = Some(stream_stop);
    cb.stream_abort_cb = Some(stream_abort);
    cb.stream_commit_cb = Some(stream_commit);
    cb.stream_change_cb = Some(change);
    cb.stream_message_cb = Some(message);
    cb.stream_truncate_cb = Some(truncate);
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    ctx: *mut pg_sys::LogicalDecodingContext,
    opts: *mut pg_sys::OutputPluginOptions,
    _is_init: bool,
) {
    let options = Options::from_list((*ctx).output_plugin_options).or_raise();
    (*opts).output_type = match options.format {
        Format::Json => pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_TEXTUAL_OUTPUT,
        Format::Binary => pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT,
    };
    // Streaming of in-progress transactions only when the consumer asks for it.
    (*ctx).streaming = (*ctx).streaming && options.streaming;
    let change_cx = pg_sys::AllocSetContextCreateInternal(
        (*ctx).context,
        c"pg_platform change".as_ptr(),
        pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
        pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
        pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
    );
    let w = Writer {
        buf: Vec::with_capacity(8192),
        change_cx,
        begun: false,
        in_stream: false,
        values: Vec::new(),
        nulls: Vec::new(),
        unchanged: Vec::new(),
        xact_cache: Vec::new(),
        xact_key: None,
    };
    let state = Box::new(State {
        options,
        rels: RelCache::new(),
        w,
    });
    (*ctx).output_plugin_private = Box::into_raw(state) as *mut std::ffi::c_void;
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(ctx: *mut pg_sys::LogicalDecodingContext) {
    let p = (*ctx).output_plugin_private as *mut State;
    if !p.is_null() {
        drop(Box::from_raw(p));
        (*ctx).output_plugin_private = std::ptr::null_mut();
    }
}

impl Writer {
    /// Binary messages start with a kind byte and flags saying which of xid, commit
    /// (LSN and time) and LSN follow, in that order.
    unsafe fn binary_head(
        &mut self,
        kind: u8,
        o: &Options,
        txn: *mut pg_sys::ReorderBufferTXN,
        commit_known: bool,
        lsn: Option<pg_sys::XLogRecPtr>,
    ) {
        let has_txn = !txn.is_null();
        let mut flags = 0;
        if has_txn && o.include_xids {
            flags |= binary::HAS_XID;
        }
        let commit = has_txn && commit_known && (o.include_lsns || o.include_timestamps);
        if commit {
            flags |= binary::HAS_COMMIT;
        }
        let lsn = lsn.filter(|_| o.include_lsns);
        if lsn.is_some() {
            flags |= binary::HAS_LSN;
        }
        if self.in_stream {
            flags |= binary::STREAMED;
        }
        binary::u8(&mut self.buf, kind);
        binary::u8(&mut self.buf, flags);
        if flags & binary::HAS_XID != 0 {
            binary::u32(&mut self.buf, (*txn).xid.into_inner());
        }
        if commit {
            binary::u64(&mut self.buf, (*txn).final_lsn);
            binary::timestamp(&mut self.buf, (*txn).xact_time.commit_time);
        }
        if let Some(l) = lsn {
            binary::u64(&mut self.buf, l);
        }
    }

    /// A commit or stream_commit message: commit fields, then the end LSN.
    unsafe fn end_of_transaction(
        &mut self,
        o: &Options,
        txn: *mut pg_sys::ReorderBufferTXN,
        tag: u8,
        kind: &str,
    ) {
        if o.format == Format::Binary {
            self.binary_head(tag, o, txn, true, Some((*txn).end_lsn));
            return;
        }
        let _ = write!(self.buf, "{{\"kind\":\"{kind}\"");
        self.xact_fields(o, txn, true);
        if o.include_lsns {
            self.buf.extend_from_slice(b",\"end_lsn\":");
            json::lsn(&mut self.buf, (*txn).end_lsn);
        }
        self.buf.push(b'}');
    }

    /// stream_start / stream_stop: the kind and the top-level xid.
    unsafe fn stream_marker(
        &mut self,
        o: &Options,
        tag: u8,
        kind: &str,
        txn: *mut pg_sys::ReorderBufferTXN,
    ) {
        if o.format == Format::Binary {
            binary::u8(&mut self.buf, tag);
            binary::u32(&mut self.buf, (*txn).xid.into_inner());
        } else {
            let _ = write!(self.buf, "{{\"kind\":\"{kind}\",\"xid\":{}}}", (*txn).xid);
        }
    }

    /// Sends the buffer as one message and clears it.
    unsafe fn emit(&mut self, ctx: *mut pg_sys::LogicalDecodingContext) {
        pg_sys::OutputPluginPrepareWrite(ctx, true);
        pg_sys::appendBinaryStringInfo(
            (*ctx).out,
            self.buf.as_ptr() as *const std::ffi::c_char,
            self.buf.len() as i32,
        );
        pg_sys::OutputPluginWrite(ctx, true);
        self.buf.clear();
    }

    /// The xid, commit LSN and commit time fields, as the options ask. Changes of a
    /// streamed transaction do not know their commit yet.
    unsafe fn xact_fields(
        &mut self,
        o: &Options,
        txn: *mut pg_sys::ReorderBufferTXN,
        commit_known: bool,
    ) {
        if txn.is_null() {
            return;
        }
        // Every change of a transaction repeats these fields: render them once.
        let key = (
            txn as usize,
            (*txn).xid.into_inner(),
            (*txn).final_lsn,
            commit_known,
        );
        if self.xact_key != Some(key) {
            let c = &mut self.xact_cache;
            c.clear();
            if o.include_xids {
                let _ = write!(c, ",\"xid\":{}", (*txn).xid);
            }
            if commit_known {
                if o.include_lsns {
                    c.extend_from_slice(b",\"commit_lsn\":");
                    json::lsn(c, (*txn).final_lsn);
                }
                if o.include_timestamps {
                    c.extend_from_slice(b",\"commit_time\":");
                    json::timestamp(c, (*txn).xact_time.commit_time);
                }
            }
            self.xact_key = Some(key);
        }
        self.buf.extend_from_slice(&self.xact_cache);
    }

    unsafe fn write_begin(
        &mut self,
        ctx: *mut pg_sys::LogicalDecodingContext,
        o: &Options,
        txn: *mut pg_sys::ReorderBufferTXN,
    ) {
        if o.format == Format::Binary {
            self.binary_head(b'B', o, txn, true, None);
        } else {
            self.buf.extend_from_slice(b"{\"kind\":\"begin\"");
            self.xact_fields(o, txn, true);
            self.buf.push(b'}');
        }
        self.emit(ctx);
        self.begun = true;
    }

    /// Writes the begin message on the first change of a (non-streamed) transaction.
    unsafe fn ensure_begun(
        &mut self,
        ctx: *mut pg_sys::LogicalDecodingContext,
        o: &Options,
        txn: *mut pg_sys::ReorderBufferTXN,
    ) {
        if !self.begun && !self.in_stream {
            self.write_begin(ctx, o, txn);
        }
    }

    /// The relation message, once per shape and session.
    unsafe fn announce(
        &mut self,
        ctx: *mut pg_sys::LogicalDecodingContext,
        o: &Options,
        rel: &mut RelInfo,
    ) {
        if rel.announced {
            return;
        }
        if o.format == Format::Binary {
            binary::relation(&mut self.buf, rel, o.format_version);
        } else {
            write_relation(&mut self.buf, rel, o.format_version);
        }
        self.emit(ctx);
        rel.announced = true;
    }

    /// The common head of a row-level message.
    unsafe fn change_head(
        &mut self,
        o: &Options,
        kind: &str,
        rel: &RelInfo,
        txn: *mut pg_sys::ReorderBufferTXN,
        lsn: pg_sys::XLogRecPtr,
    ) {
        if o.format == Format::Binary {
            let tag = match kind {
                "insert" => b'I',
                "update" => b'U',
                "delete" => b'D',
                _ => b'T',
            };
            self.binary_head(tag, o, txn, !self.in_stream, Some(lsn));
            binary::u32(&mut self.buf, rel.relid.to_u32());
            return;
        }
        let _ = write!(self.buf, "{{\"kind\":\"{kind}\"");
        self.buf.extend_from_slice(&rel.json_names);
        let streamed = self.in_stream;
        self.xact_fields(o, txn, !streamed);
        if streamed {
            self.buf.extend_from_slice(b",\"streamed\":true");
        }
        if o.include_lsns {
            self.buf.extend_from_slice(b",\"lsn\":");
            json::lsn(&mut self.buf, lsn);
        }
    }

    /// Writes the new (or old) tuple; `keys_only` keeps the replica-identity columns.
    /// Unchanged TOAST values are not read: in JSON their columns are collected in
    /// `unchanged`, in binary they are tagged in place.
    unsafe fn tuple(
        &mut self,
        new: bool,
        rel: &RelInfo,
        tupdesc: pg_sys::TupleDesc,
        tuple: *mut pg_sys::HeapTupleData,
        keys_only: bool,
        binary_format: bool,
    ) {
        let natts = (*tupdesc).natts as usize;
        self.values.resize(natts, pg_sys::Datum::from(0));
        self.nulls.resize(natts, true);
        pg_sys::heap_deform_tuple(
            tuple,
            tupdesc,
            self.values.as_mut_ptr(),
            self.nulls.as_mut_ptr(),
        );
        if binary_format {
            binary::u8(&mut self.buf, if new { b'N' } else { b'O' });
            let count = rel.columns.iter().filter(|c| !keys_only || c.key).count();
            binary::u16(&mut self.buf, count as u16);
            for c in rel.columns.iter().filter(|c| !keys_only || c.key) {
                let (datum, null) = (self.values[c.index], self.nulls[c.index]);
                if null {
                    binary::u8(&mut self.buf, binary::NULL);
                } else if c.varlena && is_external_ondisk(datum) {
                    binary::u8(&mut self.buf, binary::UNCHANGED_TOAST);
                } else {
                    binary::u8(&mut self.buf, binary::VALUE);
                    binary::value(&mut self.buf, &c.kind, datum);
                }
            }
            return;
        }
        self.buf
            .extend_from_slice(if new { b",\"new\":{" } else { b",\"old\":{" });
        let mut first = true;
        for (ci, c) in rel.columns.iter().enumerate() {
            if keys_only && !c.key {
                continue;
            }
            let (datum, null) = (self.values[c.index], self.nulls[c.index]);
            if !null && c.varlena && is_external_ondisk(datum) {
                if new {
                    self.unchanged.push(ci);
                }
                continue;
            }
            if !first {
                self.buf.push(b',');
            }
            first = false;
            self.buf.extend_from_slice(&c.json_key);
            if null {
                self.buf.extend_from_slice(b"null");
            } else {
                json::value(&mut self.buf, &c.kind, datum);
            }
        }
        self.buf.push(b'}');
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    let State { options, w, .. } = state(ctx);
    w.begun = false;
    if options.include_empty_transactions {
        w.write_begin(ctx, options, txn);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    let State { options, w, .. } = state(ctx);
    if !w.begun {
        // Nothing was written: tell the walsender so it can still confirm progress.
        pg_sys::OutputPluginUpdateProgress(ctx, true);
        return;
    }
    w.end_of_transaction(options, txn, b'C', "commit");
    w.emit(ctx);
    w.begun = false;
}

/// The relation message: the columns with their PostgreSQL and Arrow types.
fn write_relation(buf: &mut Vec<u8>, rel: &RelInfo, format_version: u32) {
    let _ = write!(
        buf,
        "{{\"kind\":\"relation\",\"format_version\":{format_version},\"schema\":"
    );
    json::string(buf, &rel.schema);
    buf.extend_from_slice(b",\"table\":");
    json::string(buf, &rel.table);
    let _ = write!(
        buf,
        ",\"relid\":{},\"fingerprint\":\"{}\",\"replica_identity\":\"{}\",\"columns\":[",
        rel.relid.to_u32(),
        rel.fingerprint,
        rel.replica_identity
    );
    for (i, c) in rel.columns.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"name\":");
        json::string(buf, &c.name);
        buf.extend_from_slice(b",\"pg_type\":");
        json::string(buf, &c.type_name);
        buf.extend_from_slice(b",\"arrow\":");
        json::string(buf, &c.kind.arrow(c.type_oid));
        let _ = write!(buf, ",\"nullable\":{},\"key\":{}}}", c.nullable, c.key);
    }
    buf.extend_from_slice(b"]}");
}

/// An on-disk TOAST pointer in a decoded tuple is a value the UPDATE did not change and
/// whose data is not in the WAL: it must be reported as unchanged, never read.
unsafe fn is_external_ondisk(datum: pg_sys::Datum) -> bool {
    let p = datum.cast_mut_ptr::<pg_sys::varlena>();
    pgrx::varlena::varatt_is_1b_e(p)
        && pgrx::varlena::vartag_external(p) == pg_sys::vartag_external::VARTAG_ONDISK as u8
}

#[pg_guard]
unsafe extern "C-unwind" fn change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    use pg_sys::ReorderBufferChangeType::*;
    let State { options, rels, w } = state(ctx);
    let kind = match (*change).action {
        REORDER_BUFFER_CHANGE_INSERT => "insert",
        REORDER_BUFFER_CHANGE_UPDATE => "update",
        REORDER_BUFFER_CHANGE_DELETE => "delete",
        _ => return,
    };
    let rel = rels.get(relation, |schema, table| options.wants(schema, table));
    if !rel.wanted {
        return;
    }
    let old_cx = pg_sys::MemoryContextSwitchTo(w.change_cx);
    w.ensure_begun(ctx, options, txn);
    w.announce(ctx, options, rel);
    w.change_head(options, kind, rel, txn, (*change).lsn);
    let tp = (*change).data.tp;
    let tupdesc = (*relation).rd_att;
    let binary_format = options.format == Format::Binary;
    w.unchanged.clear();
    if !tp.newtuple.is_null() && kind != "delete" {
        w.tuple(
            true,
            rel,
            tupdesc,
            heap_tuple(tp.newtuple),
            false,
            binary_format,
        );
    }
    if !tp.oldtuple.is_null() && (options.include_old_rows || kind == "delete") {
        let keys_only = rel.replica_identity != "full";
        w.tuple(
            false,
            rel,
            tupdesc,
            heap_tuple(tp.oldtuple),
            keys_only,
            binary_format,
        );
    }
    if binary_format {
        // Unchanged TOAST values are tagged in place in the binary tuple.
    } else if !w.unchanged.is_empty() {
        w.buf.extend_from_slice(b",\"unchanged_toast\":[");
        for (i, ci) in w.unchanged.iter().enumerate() {
            if i > 0 {
                w.buf.push(b',');
            }
            json::string(&mut w.buf, &rel.columns[*ci].name);
        }
        w.buf.push(b']');
    }
    if !binary_format {
        w.buf.push(b'}');
    }
    w.emit(ctx);
    pg_sys::MemoryContextSwitchTo(old_cx);
    pg_sys::MemoryContextReset(w.change_cx);
}

#[cfg(not(feature = "pg17"))]
unsafe fn heap_tuple(t: *mut pg_sys::ReorderBufferTupleBuf) -> *mut pg_sys::HeapTupleData {
    &mut (*t).tuple
}

#[cfg(feature = "pg17")]
unsafe fn heap_tuple(t: pg_sys::HeapTuple) -> *mut pg_sys::HeapTupleData {
    t
}

#[pg_guard]
unsafe extern "C-unwind" fn truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: std::ffi::c_int,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    let State { options, rels, w } = state(ctx);
    let trunc = (*change).data.truncate;
    for i in 0..nrelations.max(0) as usize {
        let relation = *relations.add(i);
        let rel = rels.get(relation, |schema, table| options.wants(schema, table));
        if !rel.wanted {
            continue;
        }
        w.ensure_begun(ctx, options, txn);
        w.announce(ctx, options, rel);
        w.change_head(options, "truncate", rel, txn, (*change).lsn);
        if options.format == Format::Binary {
            binary::u8(
                &mut w.buf,
                u8::from(trunc.cascade) | (u8::from(trunc.restart_seqs) << 1),
            );
        } else {
            let _ = write!(
                w.buf,
                ",\"cascade\":{},\"restart_identity\":{}}}",
                trunc.cascade, trunc.restart_seqs
            );
        }
        w.emit(ctx);
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn message(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    message_lsn: pg_sys::XLogRecPtr,
    transactional: bool,
    prefix: *const std::ffi::c_char,
    message_size: pg_sys::Size,
    message: *const std::ffi::c_char,
) {
    let State { options, w, .. } = state(ctx);
    if !options.include_messages {
        return;
    }
    if transactional {
        w.ensure_begun(ctx, options, txn);
    }
    let content = std::slice::from_raw_parts(message as *const u8, message_size);
    if options.format == Format::Binary {
        let txn = if transactional {
            txn
        } else {
            std::ptr::null_mut()
        };
        let commit_known = !w.in_stream;
        w.binary_head(b'M', options, txn, commit_known, Some(message_lsn));
        binary::u8(&mut w.buf, u8::from(transactional));
        binary::bytes(&mut w.buf, CStr::from_ptr(prefix).to_bytes());
        binary::bytes(&mut w.buf, content);
        w.emit(ctx);
        return;
    }
    let _ = write!(
        w.buf,
        "{{\"kind\":\"message\",\"transactional\":{transactional},\"prefix\":"
    );
    json::string(&mut w.buf, &CStr::from_ptr(prefix).to_string_lossy());
    if transactional {
        let commit_known = !w.in_stream;
        w.xact_fields(options, txn, commit_known);
    }
    if options.include_lsns {
        w.buf.extend_from_slice(b",\"lsn\":");
        json::lsn(&mut w.buf, message_lsn);
    }
    match std::str::from_utf8(content) {
        Ok(text) => {
            w.buf.extend_from_slice(b",\"content\":");
            json::string(&mut w.buf, text);
        }
        Err(_) => {
            w.buf.extend_from_slice(b",\"content_hex\":\"");
            for b in content {
                let _ = write!(w.buf, "{b:02x}");
            }
            w.buf.push(b'"');
        }
    }
    w.buf.push(b'}');
    w.emit(ctx);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_start(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    let State { options, w, .. } = state(ctx);
    w.in_stream = true;
    w.stream_marker(options, b'S', "stream_start", txn);
    w.emit(ctx);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_stop(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    let State { options, w, .. } = state(ctx);
    w.in_stream = false;
    w.stream_marker(options, b'E', "stream_stop", txn);
    w.emit(ctx);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_abort(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    abort_lsn: pg_sys::XLogRecPtr,
) {
    let State { options, w, .. } = state(ctx);
    let top = if (*txn).toptxn.is_null() {
        txn
    } else {
        (*txn).toptxn
    };
    if options.format == Format::Binary {
        binary::u8(&mut w.buf, b'A');
        binary::u32(&mut w.buf, (*top).xid.into_inner());
        binary::u32(&mut w.buf, (*txn).xid.into_inner());
        binary::u64(&mut w.buf, abort_lsn);
    } else {
        let _ = write!(
            w.buf,
            "{{\"kind\":\"stream_abort\",\"xid\":{},\"subxid\":{},\"abort_lsn\":",
            (*top).xid,
            (*txn).xid
        );
        json::lsn(&mut w.buf, abort_lsn);
        w.buf.push(b'}');
    }
    w.emit(ctx);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    let State { options, w, .. } = state(ctx);
    w.end_of_transaction(options, txn, b'K', "stream_commit");
    w.emit(ctx);
}

#[derive(Debug, thiserror::Error)]
enum SlotError {
    #[error("wal_level is \"{0}\", but a pg_platform CDC slot needs wal_level = logical")]
    WalLevel(String),
    #[error("output_plugin_libraries ('{0}') does not allow the pg_platform output plugin")]
    NotAllowed(String),
}

impl crate::error::SqlError for SlotError {
    fn sqlstate(&self) -> pgrx::PgSqlErrorCode {
        pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::WalLevel(_) => {
                "ALTER SYSTEM SET wal_level = logical; then restart the server.".into()
            }
            Self::NotAllowed(current) => {
                let wanted = if current.trim().is_empty() {
                    "pg_platform".to_string()
                } else {
                    format!("{current}, pg_platform")
                };
                format!("ALTER SYSTEM SET output_plugin_libraries = '{wanted}'; then reload (SELECT pg_reload_conf()) or restart the server.")
            }
        })
    }
}

/// The plugin's own table selection for `include_tables` / `exclude_tables` values, so a
/// consumer (the lake sink) checks the very tables the plugin will send.
pub fn table_filter(
    include: Option<&str>,
    exclude: Option<&str>,
) -> Result<options::Options, options::OptionError> {
    let mut pairs = Vec::new();
    if let Some(i) = include {
        pairs.push(("include_tables", Some(i)));
    }
    if let Some(e) = exclude {
        pairs.push(("exclude_tables", Some(e)));
    }
    Options::parse(pairs)
}

/// Raises the ERROR that names the missing setting when this server cannot decode with the
/// plugin (wal_level, and output_plugin_libraries on minors that have it).
pub fn check_slot_settings() {
    use crate::error::raise;
    // crate::sql::read is read-only SPI: PostgreSQL refuses to create a logical slot in a
    // transaction that has a transaction id.
    let setting =
        |name: &str| crate::sql::read::<String>("SELECT current_setting($1, true)", &[name.into()]);
    let wal_level = setting("wal_level").unwrap_or_default();
    if wal_level != "logical" {
        raise(SlotError::WalLevel(wal_level));
    }
    if let Some(allowed) = setting("output_plugin_libraries") {
        if !allowed.split(',').any(|l| l.trim() == "pg_platform") {
            raise(SlotError::NotAllowed(allowed));
        }
    }
}

/// Creates a logical replication slot decoded by the pg_platform output plugin, after
/// checking that the server can run it (wal_level, and output_plugin_libraries on minors
/// that have it); each missing setting is reported with the exact command that fixes it.
#[pg_extern]
fn create_cdc_slot(
    slot_name: crate::sql::UnconvertedText,
    temporary: default!(bool, false),
) -> TableIterator<'static, (name!(slot_name, String), name!(lsn, String))> {
    let slot_name = slot_name.as_str();
    check_slot_settings();
    // Read-only SPI again; the slot's LSN comes back as text.
    let lsn = crate::sql::read::<String>(
        "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pg_platform', $2)",
        &[slot_name.into(), temporary.into()],
    );
    TableIterator::once((slot_name.to_string(), lsn.unwrap_or_default()))
}
