//! JSON encoding of decoded values (format_version 1). Each value is written so that a
//! consumer can rebuild it exactly in the column's Arrow type (see the README table).

use super::relation::{array_parts, varlena_bytes, Kind};
use pgrx::pg_sys;
use std::ffi::CStr;
use std::io::Write;

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub const UNIX_TO_PG_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const UNIX_TO_PG_DAYS: i32 = 10_957;

pub fn string(buf: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly what JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn int(buf: &mut Vec<u8>, v: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub fn lsn(buf: &mut Vec<u8>, lsn: u64) {
    let _ = write!(buf, "\"{:X}/{:X}\"", lsn >> 32, lsn & 0xffff_ffff);
}

/// A PostgreSQL timestamp (micros since 2000) as micros since 1970, or a string for
/// ±infinity, which no Arrow timestamp can hold.
pub fn timestamp(buf: &mut Vec<u8>, t: i64) {
    match t {
        i64::MAX => buf.extend_from_slice(b"\"infinity\""),
        i64::MIN => buf.extend_from_slice(b"\"-infinity\""),
        _ => {
            let _ = write!(buf, "{}", i128::from(t) + i128::from(UNIX_TO_PG_MICROS));
        }
    }
}

fn float(buf: &mut Vec<u8>, f: f64, text: impl std::fmt::Debug) {
    if f.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if f.is_infinite() {
        buf.extend_from_slice(if f > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // Debug prints the shortest text that reads back to the same bits, -0.0 included.
        let _ = write!(buf, "{text:?}");
    }
}

unsafe fn output_text(buf: &mut Vec<u8>, output_fn: pg_sys::Oid, datum: pg_sys::Datum) {
    let p = pg_sys::OidOutputFunctionCall(output_fn, datum);
    string(
        buf,
        &crate::sql::server_to_utf8_lossy(CStr::from_ptr(p).to_bytes()),
    );
}

/// Writes one non-null value of `kind`.
///
/// # Safety
/// `datum` is a valid, detoastable datum of the column's type.
pub unsafe fn value(buf: &mut Vec<u8>, kind: &Kind, datum: pg_sys::Datum) {
    match kind {
        Kind::Bool => buf.extend_from_slice(if datum.value() != 0 {
            b"true"
        } else {
            b"false"
        }),
        Kind::Int2 => int(buf, datum.value() as i16),
        Kind::Int4 => int(buf, datum.value() as i32),
        Kind::Int8 => int(buf, datum.value() as i64),
        Kind::Float4 => {
            let f = f32::from_bits(datum.value() as u32);
            float(buf, f64::from(f), f);
        }
        Kind::Float8 => {
            let f = f64::from_bits(datum.value() as u64);
            float(buf, f, f);
        }
        Kind::Decimal(..) | Kind::NumericText => {
            // Digits, sign, point or NaN/Infinity: nothing to escape.
            let p = pg_sys::OidOutputFunctionCall(numeric_output_fn(), datum);
            buf.push(b'"');
            buf.extend_from_slice(CStr::from_ptr(p).to_bytes());
            buf.push(b'"');
        }
        // JSON is UTF-8 whatever the database's encoding.
        Kind::Text => string(buf, &crate::sql::server_to_utf8_lossy(varlena_bytes(datum))),
        Kind::Bytea => {
            buf.push(b'"');
            for b in varlena_bytes(datum) {
                let _ = write!(buf, "{b:02x}");
            }
            buf.push(b'"');
        }
        Kind::Date => match datum.value() as i32 {
            i32::MAX => buf.extend_from_slice(b"\"infinity\""),
            i32::MIN => buf.extend_from_slice(b"\"-infinity\""),
            d => {
                let _ = write!(buf, "{}", i64::from(d) + i64::from(UNIX_TO_PG_DAYS));
            }
        },
        Kind::Time => {
            let _ = write!(buf, "{}", datum.value() as i64);
        }
        Kind::Timestamp | Kind::TimestampTz => timestamp(buf, datum.value() as i64),
        Kind::Interval => {
            let i = &*(datum.cast_mut_ptr::<pg_sys::Interval>());
            let _ = write!(
                buf,
                "{{\"months\":{},\"days\":{},\"micros\":{}}}",
                i.month, i.day, i.time
            );
        }
        Kind::Uuid => {
            let b = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), 16);
            let _ = write!(
                buf,
                "\"{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}\"",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
            );
        }
        Kind::TextOutput { output_fn } => output_text(buf, *output_fn, datum),
        Kind::Array { elem, .. } => {
            let (dims, values, nulls) = array_parts(datum, kind);
            if dims.is_empty() {
                buf.extend_from_slice(b"[]");
                return;
            }
            let mut next = 0;
            nested(buf, elem, &dims, values, nulls, &mut next);
        }
    }
}

/// Multi-dimensional arrays become nested lists, row-major.
unsafe fn nested(
    buf: &mut Vec<u8>,
    elem: &Kind,
    dims: &[usize],
    values: &[pg_sys::Datum],
    nulls: &[bool],
    next: &mut usize,
) {
    buf.push(b'[');
    for i in 0..dims[0] {
        if i > 0 {
            buf.push(b',');
        }
        if dims.len() > 1 {
            nested(buf, elem, &dims[1..], values, nulls, next);
        } else {
            match (values.get(*next), nulls.get(*next)) {
                (Some(v), Some(false)) => value(buf, elem, *v),
                _ => buf.extend_from_slice(b"null"),
            }
            *next += 1;
        }
    }
    buf.push(b']');
}

pub fn numeric_output_fn() -> pg_sys::Oid {
    thread_local! {
        static NUMERIC_OUT: std::cell::Cell<pg_sys::Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
    }
    NUMERIC_OUT.with(|c| {
        if c.get() == pg_sys::InvalidOid {
            let (mut f, mut v) = (pg_sys::InvalidOid, false);
            unsafe { pg_sys::getTypeOutputInfo(pg_sys::NUMERICOID, &mut f, &mut v) };
            c.set(f);
        }
        c.get()
    })
}
