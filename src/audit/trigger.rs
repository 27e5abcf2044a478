//! The audit trigger: one statement-level AFTER trigger per operation, with transition
//! tables, so a statement's rows are read once from PostgreSQL's own tuplestores and
//! written to the log with one INSERT, in the writing transaction (a rollback leaves
//! nothing). Values are encoded as the CDC plugin encodes them (typed JSON); columns a
//! PII protection encrypts are ciphertext in the table, so they are ciphertext here too.

use super::chain::Record;
use crate::cdc::encoding::{value, RelInfo};
use crate::sql;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use std::cell::RefCell;
use std::ffi::CStr;

/// Rows per INSERT into the log (a statement's rows are written in chunks of this size).
const CHUNK: usize = 5000;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

struct Session {
    client_addr: Option<String>,
    client_port: Option<i32>,
    classes: Vec<(pg_sys::Oid, &'static str)>,
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    relations: Option<crate::cdc::encoding::RelCache>,
    insert: Option<OwnedPreparedStatement>,
    /// (top transaction id, audited statements so far in it)
    statement: (u64, i32),
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn session() -> (Option<String>, Option<i32>, &'static str) {
    STATE.with_borrow_mut(|s| {
        let session = s.session.get_or_insert_with(|| {
            let (addr, port) = Spi::connect(|c| {
                let t = c.select(
                    "SELECT inet_client_addr()::text, inet_client_port()",
                    Some(1),
                    &[],
                )?;
                let r = t.first();
                Ok::<_, pgrx::spi::SpiError>((r.get::<String>(1)?, r.get::<i32>(2)?))
            })
            .unwrap_or((None, None));
            let classes = [
                ("platform_admin", "admin"),
                ("platform_developer", "developer"),
                ("platform_auditor", "auditor"),
                ("platform_readonly", "readonly"),
            ]
            .iter()
            .filter_map(|(role, class)| {
                let name = std::ffi::CString::new(*role).ok()?;
                let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
                (oid != pg_sys::InvalidOid).then_some((oid, *class))
            })
            .collect();
            Session {
                client_addr: addr,
                client_port: port,
                classes,
            }
        });
        let user = unsafe { pg_sys::GetUserId() };
        let class = session
            .classes
            .iter()
            .find(|(oid, _)| unsafe { pg_sys::has_privs_of_role(user, *oid) })
            .map_or("other", |(_, c)| c);
        (session.client_addr.clone(), session.client_port, class)
    })
}

fn role_name(oid: pg_sys::Oid) -> String {
    let p = unsafe { pg_sys::GetUserNameFromId(oid, true) };
    if p.is_null() {
        format!("role {oid}")
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// This cluster's system identifier, as the log stores it (bigint).
pub fn cluster_id() -> i64 {
    unsafe { pg_sys::GetSystemIdentifier() as i64 }
}

/// Statement number within the transaction: 1 for its first audited statement.
fn next_statement(xid: u64) -> i32 {
    STATE.with_borrow_mut(|s| {
        if s.statement.0 != xid {
            s.statement = (xid, 0);
        }
        s.statement.1 += 1;
        s.statement.1
    })
}

/// Reads a transition tuplestore row by row.
///
/// # Safety
/// `store` is a transition table of the firing trigger, whose rows have `desc`.
unsafe fn each_row(
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    mut f: impl FnMut(&[pg_sys::Datum], &[bool]),
) {
    if store.is_null() {
        return;
    }
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        pg_sys::tuplestore_rescan(store);
        let natts = (*desc).natts as usize;
        while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
            pg_sys::slot_getallattrs(slot);
            f(
                std::slice::from_raw_parts((*slot).tts_values, natts),
                std::slice::from_raw_parts((*slot).tts_isnull, natts),
            );
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
}

/// One column's value as typed JSON, `null` for NULL.
unsafe fn json_value(
    buf: &mut Vec<u8>,
    info: &RelInfo,
    i: usize,
    values: &[pg_sys::Datum],
    nulls: &[bool],
) {
    let c = &info.columns[i];
    if nulls[c.index] {
        buf.extend_from_slice(b"null");
    } else {
        unsafe { value(buf, &c.kind, values[c.index]) };
    }
}

/// A JSON object of the chosen columns of one row.
unsafe fn object(
    info: &RelInfo,
    columns: impl Iterator<Item = usize>,
    values: &[pg_sys::Datum],
    nulls: &[bool],
) -> String {
    let mut buf = vec![b'{'];
    for (n, i) in columns.enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&info.columns[i].json_key);
        unsafe { json_value(&mut buf, info, i, values, nulls) };
    }
    buf.push(b'}');
    String::from_utf8(buf).unwrap_or_default()
}

/// One audit row before it is written: key and images as JSON text.
pub struct Row {
    pub primary_key: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[pg_trigger]
fn audit_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    let event = td.tg_event;
    let operation = if pgrx::trigger_support::trigger_fired_by_insert(event) {
        "INSERT"
    } else if pgrx::trigger_support::trigger_fired_by_update(event) {
        "UPDATE"
    } else if pgrx::trigger_support::trigger_fired_by_delete(event) {
        "DELETE"
    } else {
        "TRUNCATE"
    };
    // Arguments: include_statement, then the excluded columns.
    let args: Vec<String> = trigger.extra_args().unwrap_or_default();
    let include_statement = args.first().is_some_and(|a| a == "true");
    let excluded: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let rel = td.tg_relation;
    let desc = unsafe { (*rel).rd_att };
    let info = STATE.with_borrow_mut(|s| {
        let cache = s
            .relations
            .get_or_insert_with(crate::cdc::encoding::RelCache::new);
        unsafe { cache.get(rel, |_, _| true) }.clone()
    });
    let included: Vec<usize> = (0..info.columns.len())
        .filter(|&i| !excluded.contains(&info.columns[i].name.as_str()))
        .collect();
    let keys: Vec<usize> = (0..info.columns.len())
        .filter(|&i| info.columns[i].key)
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    unsafe {
        match operation {
            "INSERT" => each_row(td.tg_newtable, desc, |v, n| {
                rows.push(Row {
                    primary_key: (!keys.is_empty())
                        .then(|| object(&info, keys.iter().copied(), v, n)),
                    old: None,
                    new: Some(object(&info, included.iter().copied(), v, n)),
                })
            }),
            "DELETE" => each_row(td.tg_oldtable, desc, |v, n| {
                rows.push(Row {
                    primary_key: (!keys.is_empty())
                        .then(|| object(&info, keys.iter().copied(), v, n)),
                    old: Some(object(&info, included.iter().copied(), v, n)),
                    new: None,
                })
            }),
            "UPDATE" => {
                // PostgreSQL appends each updated row's old and new versions together: the
                // two transition tables pair up by position.
                let mut olds: Vec<(Vec<Vec<u8>>, Option<String>)> = Vec::new();
                each_row(td.tg_oldtable, desc, |v, n| {
                    let encoded = included
                        .iter()
                        .map(|&i| {
                            let mut b = Vec::new();
                            json_value(&mut b, &info, i, v, n);
                            b
                        })
                        .collect();
                    let key = (!keys.is_empty()).then(|| object(&info, keys.iter().copied(), v, n));
                    olds.push((encoded, key));
                });
                let mut at = 0;
                each_row(td.tg_newtable, desc, |v, n| {
                    let Some((old_values, old_key)) = olds.get(at) else {
                        return;
                    };
                    at += 1;
                    let (mut o, mut w) = (vec![b'{'], vec![b'{']);
                    for (j, &i) in included.iter().enumerate() {
                        let mut b = Vec::new();
                        json_value(&mut b, &info, i, v, n);
                        if b == old_values[j] {
                            continue;
                        }
                        for (buf, val) in [(&mut o, &old_values[j]), (&mut w, &b)] {
                            if buf.len() > 1 {
                                buf.push(b',');
                            }
                            buf.extend_from_slice(&info.columns[i].json_key);
                            buf.extend_from_slice(val);
                        }
                    }
                    o.push(b'}');
                    w.push(b'}');
                    rows.push(Row {
                        primary_key: old_key.clone(),
                        old: Some(String::from_utf8(o).unwrap_or_default()),
                        new: Some(String::from_utf8(w).unwrap_or_default()),
                    });
                });
            }
            _ => rows.push(Row {
                primary_key: None,
                old: None,
                new: None,
            }),
        }
    }
    let table_name = format!(
        "{}.{}",
        sql::quote_ident(&info.schema),
        sql::quote_ident(&info.table)
    );
    record(
        operation,
        Some(info.relid),
        table_name,
        rows,
        include_statement,
    );
    Ok(None)
}

/// Writes audit rows of one statement (one operation on one object) with the actor's
/// identity, hashed, in the current transaction.
pub fn record(
    operation: &str,
    relid: Option<pg_sys::Oid>,
    table_name: String,
    rows: Vec<Row>,
    include_statement: bool,
) {
    if rows.is_empty() {
        return;
    }
    let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    let statement_seq = next_statement(xid);
    let (client_addr, client_port, role_class) = session();
    let application_name = unsafe {
        let p = pg_sys::GetConfigOption(c"application_name".as_ptr(), true, false);
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    let statement = include_statement
        .then(|| unsafe {
            let p = pg_sys::debug_query_string;
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        })
        .flatten();
    let mut base = Record {
        cluster_id: cluster_id(),
        event_time_us: unsafe { pg_sys::GetCurrentStatementStartTimestamp() } + PG_EPOCH_US,
        xid,
        statement_seq,
        row_seq: 0,
        operation: operation.to_string(),
        table_name,
        primary_key: None,
        old_values: None,
        new_values: None,
        session_user: role_name(unsafe { pg_sys::GetSessionUserId() }),
        current_user: role_name(unsafe { pg_sys::GetUserId() }),
        role_class: role_class.to_string(),
        client_addr,
        client_port,
        application_name,
        backend_pid: unsafe { pg_sys::MyProcPid },
        statement,
    };
    for (chunk_no, chunk) in rows.chunks(CHUNK).enumerate() {
        let offset = (chunk_no * CHUNK) as i32;
        let mut hashes = Vec::with_capacity(chunk.len());
        for (i, r) in chunk.iter().enumerate() {
            base.row_seq = offset + i as i32 + 1;
            base.primary_key = r.primary_key.clone();
            base.old_values = r.old.clone();
            base.new_values = r.new.clone();
            hashes.push(base.hash().to_vec());
        }
        write(&base, relid, offset, chunk, hashes);
    }
}

const INSERT: &str = "INSERT INTO platform.audit_log
    (cluster_id, event_time, xid, statement_seq, row_seq, operation, table_oid, table_name, primary_key,
     old_values, new_values, session_user_name, current_user_name, role_class, client_addr,
     client_port, application_name, backend_pid, statement, row_hash)
SELECT $20, timestamptz '1970-01-01 00:00:00+00' + $1 * interval '1 microsecond', $2::pg_catalog.xid8, $3,
       u.ord::int4 + $4, $5, $6, $7, u.pk::json, u.o::json, u.n::json, $8, $9, $10, $11::inet,
       $12, $13, $14, $15, u.h
  FROM unnest($16::text[], $17::text[], $18::text[], $19::bytea[]) WITH ORDINALITY AS u(pk, o, n, h, ord)";

fn write(r: &Record, relid: Option<pg_sys::Oid>, offset: i32, rows: &[Row], hashes: Vec<Vec<u8>>) {
    let keys: Vec<Option<String>> = rows.iter().map(|r| r.primary_key.clone()).collect();
    let olds: Vec<Option<String>> = rows.iter().map(|r| r.old.clone()).collect();
    let news: Vec<Option<String>> = rows.iter().map(|r| r.new.clone()).collect();
    sql::as_extension_owner(|| {
        let prepared = STATE.with_borrow(|s| s.insert.is_some());
        if !prepared {
            use pg_sys::BuiltinOid::*;
            let types: Vec<PgOid> = [
                INT8OID,
                TEXTOID,
                INT4OID,
                INT4OID,
                TEXTOID,
                OIDOID,
                TEXTOID,
                TEXTOID,
                TEXTOID,
                TEXTOID,
                TEXTOID,
                INT4OID,
                TEXTOID,
                INT4OID,
                TEXTOID,
                TEXTARRAYOID,
                TEXTARRAYOID,
                TEXTARRAYOID,
                BYTEAARRAYOID,
                INT8OID,
            ]
            .into_iter()
            .map(PgOid::BuiltIn)
            .collect();
            let stmt = Spi::connect(|c| c.prepare_mut(INSERT, &types).map(|p| p.keep()))
                .map_err(crate::error::SpiFailure::from);
            let stmt = crate::error::OrRaise::or_raise(stmt);
            STATE.with_borrow_mut(|s| s.insert = Some(stmt));
        }
        let done = STATE.with_borrow(|s| {
            let Some(stmt) = s.insert.as_ref() else {
                return Ok(());
            };
            Spi::connect_mut(|c| {
                c.update(
                    stmt,
                    None,
                    &[
                        r.event_time_us.into(),
                        r.xid.to_string().into(),
                        r.statement_seq.into(),
                        offset.into(),
                        r.operation.as_str().into(),
                        relid.into(),
                        r.table_name.as_str().into(),
                        r.session_user.as_str().into(),
                        r.current_user.as_str().into(),
                        r.role_class.as_str().into(),
                        r.client_addr.clone().into(),
                        r.client_port.into(),
                        r.application_name.clone().into(),
                        r.backend_pid.into(),
                        r.statement.clone().into(),
                        keys.into(),
                        olds.into(),
                        news.into(),
                        hashes.into(),
                        r.cluster_id.into(),
                    ],
                )
                .map(|_| ())
            })
        });
        crate::error::OrRaise::or_raise(done.map_err(crate::error::SpiFailure::from));
    });
}
