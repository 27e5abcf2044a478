//! The audit trigger: one statement-level AFTER trigger per operation, with transition
//! tables, so a statement's rows are read once from PostgreSQL's own tuplestores and
//! written to the log with one INSERT, in the writing transaction (a rollback leaves
//! nothing). Values are encoded as the CDC plugin encodes them (typed JSON); columns a
//! PII protection encrypts are ciphertext in the table, so they are ciphertext here too.

use super::chain::Record;
use crate::cdc::encoding::{value, RelInfo};
use crate::sql;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;

/// Rows per INSERT into the log (a statement's rows are written in chunks of this size).
const CHUNK: usize = 5000;

/// Rows per multi-row heap insert (COPY's batch size).
const MULTI_INSERT: usize = 1000;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

struct Session {
    client_addr: Option<String>,
    client_port: Option<i32>,
    classes: Vec<(pg_sys::Oid, &'static str)>,
    /// Role names by oid, dropped when pg_authid changes (a rename).
    names: Vec<(pg_sys::Oid, String)>,
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    relations: Option<crate::cdc::encoding::RelCache>,
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
            unsafe {
                pg_sys::CacheRegisterSyscacheCallback(
                    pg_sys::SysCacheIdentifier::AUTHOID as i32,
                    Some(roles_changed),
                    pg_sys::Datum::from(0),
                )
            };
            Session {
                client_addr: addr,
                client_port: port,
                classes,
                names: Vec::new(),
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

unsafe extern "C-unwind" fn roles_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    let _ = STATE.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(session) = s.session.as_mut() {
                session.names.clear();
            }
        }
    });
}

/// The name of role `oid`, from the session's cache.
fn cached_role_name(oid: pg_sys::Oid) -> String {
    let known = STATE.with_borrow(|s| {
        s.session.as_ref().and_then(|session| {
            session
                .names
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, n)| n.clone())
        })
    });
    known.unwrap_or_else(|| {
        let name = role_name(oid);
        STATE.with_borrow_mut(|s| {
            if let Some(session) = s.session.as_mut() {
                session.names.push((oid, name.clone()));
            }
        });
        name
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
    // The relation's description is used in place (encoding reads no other state).
    let (rows, relid, table_name) = STATE.with_borrow_mut(|s| {
        let cache = s
            .relations
            .get_or_insert_with(crate::cdc::encoding::RelCache::new);
        let info: &RelInfo = unsafe { cache.get(rel, |_, _| true) };
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
                            .then(|| object(info, keys.iter().copied(), v, n)),
                        old: None,
                        new: Some(object(info, included.iter().copied(), v, n)),
                    })
                }),
                "DELETE" => each_row(td.tg_oldtable, desc, |v, n| {
                    rows.push(Row {
                        primary_key: (!keys.is_empty())
                            .then(|| object(info, keys.iter().copied(), v, n)),
                        old: Some(object(info, included.iter().copied(), v, n)),
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
                                json_value(&mut b, info, i, v, n);
                                b
                            })
                            .collect();
                        let key =
                            (!keys.is_empty()).then(|| object(info, keys.iter().copied(), v, n));
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
                            json_value(&mut b, info, i, v, n);
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
        (rows, info.relid, table_name)
    });
    record(operation, Some(relid), table_name, rows, include_statement);
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
        let p = pg_sys::application_name;
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
        session_user: cached_role_name(unsafe { pg_sys::GetSessionUserId() }),
        current_user: cached_role_name(unsafe { pg_sys::GetUserId() }),
        role_class: role_class.to_string(),
        client_addr,
        client_port,
        application_name,
        backend_pid: unsafe { pg_sys::MyProcPid },
        statement,
    };
    let mut rows = rows;
    for (chunk_no, chunk) in rows.chunks_mut(CHUNK).enumerate() {
        let offset = (chunk_no * CHUNK) as i32;
        let mut hashes = Vec::with_capacity(chunk.len());
        for (i, r) in chunk.iter_mut().enumerate() {
            // Lent to the record for hashing and given back: no copy per row.
            base.row_seq = offset + i as i32 + 1;
            base.primary_key = r.primary_key.take();
            base.old_values = r.old.take();
            base.new_values = r.new.take();
            hashes.push(base.hash());
            r.primary_key = base.primary_key.take();
            r.old = base.old_values.take();
            r.new = base.new_values.take();
        }
        // As the extension's owner: nextval checks privileges on the log's sequence. The
        // writer's own SQL (loading the log's partitions) sets a safe search_path itself.
        sql::as_extension_owner_no_sql(|| write(&base, relid, offset, chunk, &hashes));
    }
}

/// The log's columns, in the order `write` fills them.
const COLUMNS: [&str; 21] = [
    "id",
    "cluster_id",
    "event_time",
    "xid",
    "statement_seq",
    "row_seq",
    "operation",
    "table_oid",
    "table_name",
    "primary_key",
    "old_values",
    "new_values",
    "session_user_name",
    "current_user_name",
    "role_class",
    "client_addr",
    "client_port",
    "application_name",
    "backend_pid",
    "statement",
    "row_hash",
];

/// What `write` learnt of one relation rows go to (a partition of the log, the pending
/// table, or the 0.3.0 log): where each column is, and its indexes' descriptions.
struct Leaf {
    oid: pg_sys::Oid,
    /// Position of each of `COLUMNS` in the relation (None: not there).
    at: [Option<usize>; COLUMNS.len()],
    /// Per open index, in `RelationGetIndexList` order: its oid and description (kept
    /// across statements: a BRIN index keeps its own description in it).
    indexes: Vec<(pg_sys::Oid, *mut pg_sys::IndexInfo)>,
    /// Whether every index is a plain one (columns only, no predicate, no uniqueness or
    /// exclusion to enforce), which `write` maintains itself; otherwise the executor does.
    plain: bool,
}

/// Per-backend descriptions of the relations `write` inserts into: building them cost
/// more per statement than the rows. A relcache invalidation of one of them (or of all)
/// marks the cache stale; it is dropped at the start of the next `write` (never during
/// one, whose pointers must stay valid), after that write has locked its relations.
struct Writer {
    cxt: pg_sys::MemoryContext,
    leaves: Vec<Leaf>,
    stale: bool,
}

thread_local! {
    static STALE_WHILE_BUILDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static WRITER: RefCell<Writer> = const {
        RefCell::new(Writer { cxt: std::ptr::null_mut(), leaves: Vec::new(), stale: false })
    };
}

/// Called by the log's relcache callback.
pub fn invalidate(relid: pg_sys::Oid) {
    let _ = WRITER.try_with(|w| match w.try_borrow_mut() {
        Ok(mut w) => {
            if relid == pg_sys::InvalidOid
                || w.leaves
                    .iter()
                    .any(|l| l.oid == relid || l.indexes.iter().any(|(i, _)| *i == relid))
            {
                w.stale = true;
            }
        }
        // Arrived while the cache is being built (catalog reads accept invalidations):
        // not lost, the whole cache goes at the next write.
        Err(_) => STALE_WHILE_BUILDING.set(true),
    });
}

impl Writer {
    /// The description of `rel` with its open `indexes`, built on first use.
    ///
    /// # Safety
    /// `rel` and `indexes` are open and locked by the caller.
    unsafe fn leaf(&mut self, rel: pg_sys::Relation, indexes: &[pg_sys::Relation]) -> &Leaf {
        unsafe {
            if self.stale || STALE_WHILE_BUILDING.replace(false) {
                if !self.cxt.is_null() {
                    pg_sys::MemoryContextDelete(self.cxt);
                }
                self.cxt = std::ptr::null_mut();
                self.leaves.clear();
                self.stale = false;
            }
            let oid = (*rel).rd_id;
            let known = self.leaves.iter().position(|l| {
                l.oid == oid
                    && l.indexes.len() == indexes.len()
                    && l.indexes
                        .iter()
                        .zip(indexes)
                        .all(|((o, _), r)| *o == (**r).rd_id)
            });
            if let Some(at) = known {
                return &self.leaves[at];
            }
            if self.cxt.is_null() {
                self.cxt = pg_sys::AllocSetContextCreateExtended(
                    pg_sys::TopMemoryContext,
                    c"pg_platform audit writer".as_ptr(),
                    pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                    pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                    pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
                );
            }
            let desc = (*rel).rd_att;
            let natts = (*desc).natts as usize;
            let attrs = (*desc).attrs.as_slice(natts);
            let mut at = [None; COLUMNS.len()];
            for (i, a) in attrs.iter().enumerate() {
                if a.attisdropped {
                    continue;
                }
                let name = CStr::from_ptr(a.attname.data.as_ptr()).to_bytes();
                if let Some(c) = COLUMNS.iter().position(|c| c.as_bytes() == name) {
                    at[c] = Some(i);
                }
            }
            let old = pg_sys::MemoryContextSwitchTo(self.cxt);
            let infos: Vec<(pg_sys::Oid, *mut pg_sys::IndexInfo)> = indexes
                .iter()
                .map(|&i| ((*i).rd_id, pg_sys::BuildIndexInfo(i)))
                .collect();
            pg_sys::MemoryContextSwitchTo(old);
            let plain = infos.iter().all(|(_, i)| {
                let i = &**i;
                !i.ii_Unique
                    && i.ii_Expressions.is_null()
                    && i.ii_Predicate.is_null()
                    && i.ii_ExclusionOps.is_null()
            });
            self.leaves.retain(|l| l.oid != oid);
            self.leaves.push(Leaf {
                oid,
                at,
                indexes: infos,
                plain,
            });
            &self.leaves[self.leaves.len() - 1]
        }
    }
}

/// Writes one statement's audit rows straight into `platform.audit_log`, the way COPY
/// does (heap insert, then its indexes): no SQL statement to plan or start per audited
/// statement. The log has no INSERT triggers or CHECK constraints to honour; its NOT NULL
/// columns are always filled here, and its index (BRIN on xid) is kept by the index insert.
fn write(r: &Record, relid: Option<pg_sys::Oid>, offset: i32, rows: &[Row], hashes: &[[u8; 32]]) {
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), false);
        let log = pg_sys::get_relname_relid(c"audit_log".as_ptr(), ns);
        let seq = pg_sys::get_relname_relid(c"audit_log_id_seq".as_ptr(), ns);
        if log == pg_sys::InvalidOid || seq == pg_sys::InvalidOid {
            crate::error::raise(super::AuditError::LogMissing);
        }
        super::log::watch();
        // Locked as an INSERT into the log would lock it; the lock also brings in any
        // invalidation of its partition list.
        let parent = pg_sys::table_open(log, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        // A log of 0.3.0 (the library updated, ALTER EXTENSION UPDATE not run yet) is a
        // plain table.
        let partitioned =
            (*(*parent).rd_rel).relkind == pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char;
        pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
        // DDL is recorded without making partitions: during a restore, pg_restore's own
        // DDL must not create the partitions it is about to restore. Its rows wait in
        // platform.audit_log_pending instead, as do rows of a time no partition can be
        // made for.
        let make = r.operation != "DDL" && r.operation != "DROP";
        let leaf = if partitioned {
            match super::log::partition_for(log, r.event_time_us, make) {
                Some(leaf) => leaf,
                None => {
                    let pending = pg_sys::get_relname_relid(c"audit_log_pending".as_ptr(), ns);
                    if pending == pg_sys::InvalidOid {
                        crate::error::raise(super::AuditError::NoPartition(r.event_time_us));
                    }
                    pending
                }
            }
        } else {
            log
        };
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(leaf, lock);
        let index_list =
            pgrx::PgList::<std::ffi::c_void>::from_pg(pg_sys::RelationGetIndexList(rel));
        let indexes: Vec<pg_sys::Relation> = (0..index_list.len())
            .filter_map(|i| index_list.get_oid(i))
            .map(|oid| pg_sys::index_open(oid, lock))
            .collect();
        // Every lock is taken, so the invalidations they brought in are known.
        let (at, infos, plain) = WRITER.with_borrow_mut(|w| {
            let l = w.leaf(rel, &indexes);
            (
                l.at,
                l.indexes.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
                l.plain,
            )
        });
        // Unique, partial or expression indexes (none of the extension's own) go through
        // the executor, which knows how to maintain them.
        let executor = (!plain).then(|| {
            let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                as *mut pg_sys::ResultRelInfo;
            (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
            pg_sys::ExecOpenIndices(rri, false);
            let estate = pg_sys::CreateExecutorState();
            (rri, estate)
        });
        let cid = pg_sys::GetCurrentCommandId(true);
        if let Some((_, estate)) = executor {
            (*estate).es_output_cid = cid;
        }
        let natts = (*(*rel).rd_att).natts as usize;
        let text = |v: &str| {
            pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                v.as_ptr() as *const std::ffi::c_char,
                v.len() as i32,
            ))
        };
        let inet = r
            .client_addr
            .as_ref()
            .and_then(|a| std::ffi::CString::new(a.as_str()).ok())
            .map(|a| {
                pg_sys::OidInputFunctionCall(
                    pg_sys::Oid::from(pg_sys::F_INET_IN),
                    a.as_ptr() as *mut std::ffi::c_char,
                    pg_sys::INETOID,
                    -1,
                )
            });
        // The same for every row of the statement, in `COLUMNS` order (id, row_seq, the
        // key, images and hash are per row).
        let mut datums: [Option<pg_sys::Datum>; COLUMNS.len()] = [
            None,
            Some(pg_sys::Datum::from(r.cluster_id)),
            Some(pg_sys::Datum::from(r.event_time_us - PG_EPOCH_US)),
            Some(pg_sys::Datum::from(r.xid)),
            Some(pg_sys::Datum::from(r.statement_seq)),
            None,
            Some(text(&r.operation)),
            relid.map(pg_sys::Datum::from),
            Some(text(&r.table_name)),
            None,
            None,
            None,
            Some(text(&r.session_user)),
            Some(text(&r.current_user)),
            Some(text(&r.role_class)),
            inet,
            r.client_port.map(pg_sys::Datum::from),
            r.application_name.as_deref().map(text),
            Some(pg_sys::Datum::from(r.backend_pid)),
            r.statement.as_deref().map(text),
            None,
        ];
        let mut index_values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut index_nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        // Rows go in batches, the way COPY writes them: one WAL record and one buffer
        // lock per page of rows instead of per row.
        let batch = rows.len().min(MULTI_INSERT);
        let mut slots: Vec<*mut pg_sys::TupleTableSlot> = (0..batch)
            .map(|_| pg_sys::table_slot_create(rel, std::ptr::null_mut()))
            .collect();
        let mut kept: Vec<(Vec<pg_sys::Datum>, Vec<bool>)> =
            vec![(vec![pg_sys::Datum::from(0); natts], vec![true; natts]); batch];
        let bistate = if rows.len() > 1 {
            pg_sys::GetBulkInsertState()
        } else {
            std::ptr::null_mut()
        };
        for (b, (part, part_hashes)) in rows
            .chunks(MULTI_INSERT)
            .zip(hashes.chunks(MULTI_INSERT))
            .enumerate()
        {
            for (j, (row, h)) in part.iter().zip(part_hashes.iter()).enumerate() {
                let slot = slots[j];
                pg_sys::ExecClearTuple(slot);
                let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
                let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
                nulls.fill(true);
                datums[0] = Some(pg_sys::OidFunctionCall1Coll(
                    pg_sys::Oid::from(pg_sys::F_NEXTVAL),
                    pg_sys::InvalidOid,
                    pg_sys::Datum::from(seq),
                ));
                datums[5] = Some(pg_sys::Datum::from(
                    offset + (b * MULTI_INSERT + j) as i32 + 1,
                ));
                datums[9] = row.primary_key.as_deref().map(text);
                datums[10] = row.old.as_deref().map(text);
                datums[11] = row.new.as_deref().map(text);
                // The bytea hash as a varlena (text and bytea share the layout).
                datums[20] = Some(pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                    h.as_ptr() as *const std::ffi::c_char,
                    h.len() as i32,
                )));
                for (c, value) in datums.iter().enumerate() {
                    if let (Some(at), Some(v)) = (at[c], value) {
                        values[at] = *v;
                        nulls[at] = false;
                    }
                }
                // The slot's own arrays are not valid once the insert formed its tuple.
                kept[j].0.copy_from_slice(values);
                kept[j].1.copy_from_slice(nulls);
                pg_sys::ExecStoreVirtualTuple(slot);
            }
            if part.len() == 1 {
                pg_sys::table_tuple_insert(rel, slots[0], cid, 0, bistate);
            } else {
                pg_sys::table_multi_insert(
                    rel,
                    slots.as_mut_ptr(),
                    part.len() as i32,
                    cid,
                    0,
                    bistate,
                );
            }
            for (j, &slot) in slots.iter().enumerate().take(part.len()) {
                match executor {
                    Some((rri, estate)) => {
                        pg_sys::ExecInsertIndexTuples(
                            rri,
                            slot,
                            estate,
                            false,
                            false,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        );
                        let econtext = (*estate).es_per_tuple_exprcontext;
                        if !econtext.is_null() {
                            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
                        }
                    }
                    None => {
                        let (values, nulls) = &kept[j];
                        for (&index, &info) in indexes.iter().zip(infos.iter()) {
                            if !(*info).ii_ReadyForInserts {
                                continue;
                            }
                            let keys = (*info).ii_NumIndexAttrs as usize;
                            for k in 0..keys {
                                let attno = (*info).ii_IndexAttrNumbers[k] as usize;
                                index_values[k] = values[attno - 1];
                                index_nulls[k] = nulls[attno - 1];
                            }
                            pg_sys::index_insert(
                                index,
                                index_values.as_mut_ptr(),
                                index_nulls.as_mut_ptr(),
                                &mut (*slot).tts_tid,
                                rel,
                                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO,
                                false,
                                info,
                            );
                        }
                    }
                }
            }
        }
        for slot in slots {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
        if !bistate.is_null() {
            pg_sys::FreeBulkInsertState(bistate);
        }
        if let Some((rri, estate)) = executor {
            pg_sys::ExecCloseIndices(rri);
            pg_sys::FreeExecutorState(estate);
        }
        for index in indexes {
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}
