//! The compact binary encoding (`format` `binary`, format_version 1), documented in the
//! README. Little-endian integers, strings as u32 length + UTF-8 bytes, each value typed by
//! the column's kind from the relation message, so nothing is parsed from text except
//! numeric (an exact decimal string) and types without a native encoding.

use super::json::UNIX_TO_PG_MICROS;
use super::relation::{array_parts, varlena_bytes, Kind, RelInfo};
use pgrx::pg_sys;
use std::ffi::CStr;

/// Flag bits after a message's kind byte: which optional fields follow.
pub const HAS_XID: u8 = 1;
pub const HAS_COMMIT: u8 = 2;
pub const HAS_LSN: u8 = 4;
pub const STREAMED: u8 = 8;

/// Column value tags.
pub const NULL: u8 = b'n';
pub const UNCHANGED_TOAST: u8 = b'u';
pub const VALUE: u8 = b'v';

pub fn u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
pub fn u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn i32(buf: &mut Vec<u8>, v: i32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn bytes(buf: &mut Vec<u8>, b: &[u8]) {
    u32(buf, b.len() as u32);
    buf.extend_from_slice(b);
}
pub fn string(buf: &mut Vec<u8>, s: &str) {
    bytes(buf, s.as_bytes());
}

/// PostgreSQL timestamp (micros since 2000) as micros since 1970; ±infinity stay
/// i64::MAX / i64::MIN, and the few finite values beyond them saturate.
pub fn timestamp(buf: &mut Vec<u8>, t: i64) {
    let v = match t {
        i64::MAX | i64::MIN => t,
        _ => t.saturating_add(UNIX_TO_PG_MICROS),
    };
    i64(buf, v);
}

pub fn relation(buf: &mut Vec<u8>, rel: &RelInfo, format_version: u32) {
    u8(buf, b'R');
    u8(buf, format_version as u8);
    u32(buf, rel.relid.to_u32());
    string(buf, &rel.schema);
    string(buf, &rel.table);
    string(buf, &rel.fingerprint);
    u8(buf, rel.replica_identity.as_bytes()[0]);
    u16(buf, rel.columns.len() as u16);
    for c in rel.columns.iter() {
        string(buf, &c.name);
        string(buf, &c.type_name);
        string(buf, &c.kind.arrow(c.type_oid));
        u8(buf, u8::from(c.nullable) | (u8::from(c.key) << 1));
    }
}

unsafe fn output_text(buf: &mut Vec<u8>, output_fn: pg_sys::Oid, datum: pg_sys::Datum) {
    let p = pg_sys::OidOutputFunctionCall(output_fn, datum);
    bytes(
        buf,
        crate::sql::server_to_utf8_lossy(CStr::from_ptr(p).to_bytes()).as_bytes(),
    );
}

/// One non-null value of `kind`.
///
/// # Safety
/// `datum` is a valid, detoastable datum of the column's type.
pub unsafe fn value(buf: &mut Vec<u8>, kind: &Kind, datum: pg_sys::Datum) {
    match kind {
        Kind::Bool => u8(buf, u8::from(datum.value() != 0)),
        Kind::Int2 => buf.extend_from_slice(&(datum.value() as i16).to_le_bytes()),
        Kind::Int4 => i32(buf, datum.value() as i32),
        Kind::Int8 => i64(buf, datum.value() as i64),
        Kind::Float4 => u32(buf, datum.value() as u32),
        Kind::Float8 => u64(buf, datum.value() as u64),
        Kind::Decimal(..) | Kind::NumericText => {
            output_text(buf, super::json::numeric_output_fn(), datum)
        }
        // Strings are UTF-8 (what the lake's Arrow strings are), whatever the database's
        // encoding.
        Kind::Text => bytes(
            buf,
            crate::sql::server_to_utf8_lossy(varlena_bytes(datum)).as_bytes(),
        ),
        Kind::Bytea => bytes(buf, varlena_bytes(datum)),
        Kind::Date => {
            let d = datum.value() as i32;
            i32(
                buf,
                if d == i32::MAX || d == i32::MIN {
                    d
                } else {
                    d.saturating_add(10_957)
                },
            );
        }
        Kind::Time => i64(buf, datum.value() as i64),
        Kind::Timestamp | Kind::TimestampTz => timestamp(buf, datum.value() as i64),
        Kind::Interval => {
            let i = &*(datum.cast_mut_ptr::<pg_sys::Interval>());
            i32(buf, i.month);
            i32(buf, i.day);
            i64(buf, i.time);
        }
        Kind::Uuid => {
            buf.extend_from_slice(std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), 16))
        }
        Kind::TextOutput { output_fn } => output_text(buf, *output_fn, datum),
        Kind::Array { elem, .. } => {
            let (dims, values, nulls) = array_parts(datum, kind);
            u8(buf, dims.len() as u8);
            for d in &dims {
                u32(buf, *d as u32);
            }
            for (v, is_null) in values.iter().zip(nulls) {
                if *is_null {
                    u8(buf, NULL);
                } else {
                    u8(buf, VALUE);
                    value(buf, elem, *v);
                }
            }
        }
    }
}
