//! The audit trigger: one statement-level AFTER trigger per operation, with transition
//! tables, so a statement's rows are read once from PostgreSQL's own tuplestores and
//! written straight into the log's heap in chunks, in the writing transaction (a rollback
//! leaves nothing). Values are encoded as the CDC plugin encodes them (typed JSON); columns a
//! PII protection encrypts are ciphertext in the table, so they are ciphertext here too.

use super::chain::{Record, RowHasher};
use crate::cdc::encoding::{value, Column, RelInfo};
use crate::sql;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;

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
        unsafe { sql::server_to_utf8_lossy(CStr::from_ptr(p).to_bytes()) }.into_owned()
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
struct Reader {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    natts: usize,
}

impl Reader {
    /// # Safety
    /// `store` is a transition table of the firing trigger (or null: no rows), whose rows
    /// have `desc`.
    unsafe fn new(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Reader {
        unsafe {
            let slot = if store.is_null() {
                std::ptr::null_mut()
            } else {
                pg_sys::tuplestore_rescan(store);
                pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple)
            };
            Reader {
                store,
                slot,
                natts: (*desc).natts as usize,
            }
        }
    }

    /// The next row's values and null flags, valid until the next call.
    fn next(&mut self) -> Option<(&[pg_sys::Datum], &[bool])> {
        if self.store.is_null() {
            return None;
        }
        unsafe {
            if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
                return None;
            }
            pg_sys::slot_getallattrs(self.slot);
            Some((
                std::slice::from_raw_parts((*self.slot).tts_values, self.natts),
                std::slice::from_raw_parts((*self.slot).tts_isnull, self.natts),
            ))
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if !self.slot.is_null() {
            unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.slot) };
        }
    }
}

/// One column's value as typed JSON, `null` for NULL.
///
/// # Safety
/// `values` and `nulls` are a row of the relation `c` describes.
unsafe fn json_value(buf: &mut Vec<u8>, c: &Column, values: &[pg_sys::Datum], nulls: &[bool]) {
    if nulls[c.index] {
        buf.extend_from_slice(b"null");
    } else {
        unsafe { value(buf, &c.kind, values[c.index]) };
    }
}

/// A JSON object of the chosen columns of one row.
///
/// # Safety
/// As for `json_value`.
unsafe fn object(out: &mut Text, columns: &[&Column], values: &[pg_sys::Datum], nulls: &[bool]) {
    let buf = out.begin();
    buf.push(b'{');
    for (n, c) in columns.iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&c.json_key);
        unsafe { json_value(buf, c, values, nulls) };
    }
    buf.push(b'}');
}

/// One audit row of an event other than a row change: key and images as JSON text.
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
    let args = unsafe { sql::trigger_args(td.tg_trigger) };
    let include_statement = args.first().is_some_and(|a| a == "true");
    let excluded: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let rel = td.tg_relation;
    let desc = unsafe { (*rel).rd_att };
    // A copy of the columns' encodings: writing the log may take invalidations that the
    // relation cache must be free to receive.
    let (columns, relid, table_name) = STATE.with_borrow_mut(|s| {
        let cache = s
            .relations
            .get_or_insert_with(crate::cdc::encoding::RelCache::new);
        let info: &RelInfo = unsafe { cache.get(rel, |_, _| true) };
        (info.columns.clone(), info.relid, info.qualified.clone())
    });
    let included: Vec<&Column> = columns
        .iter()
        .filter(|c| !excluded.contains(&c.name.as_str()))
        .collect();
    let keys: Vec<&Column> = columns.iter().filter(|c| c.key).collect();
    let mut statement = Statement::new(operation, Some(relid), table_name, include_statement);
    unsafe {
        match operation {
            "INSERT" | "DELETE" => {
                let insert = operation == "INSERT";
                let store = if insert {
                    td.tg_newtable
                } else {
                    td.tg_oldtable
                };
                let mut rows = Reader::new(store, desc);
                while let Some((v, n)) = rows.next() {
                    statement.row(|image| {
                        if keys.is_empty() {
                            image.key.set(None);
                        } else {
                            object(&mut image.key, &keys, v, n);
                        }
                        let (with, without) = if insert {
                            (&mut image.new, &mut image.old)
                        } else {
                            (&mut image.old, &mut image.new)
                        };
                        object(with, &included, v, n);
                        without.set(None);
                    });
                }
            }
            "UPDATE" => {
                // PostgreSQL appends each updated row's old and new versions together: the
                // two transition tables pair up by position.
                let mut olds = Reader::new(td.tg_oldtable, desc);
                let mut news = Reader::new(td.tg_newtable, desc);
                let (mut was, mut is) = (Vec::new(), Vec::new());
                while let (Some((ov, on)), Some((nv, nn))) = (olds.next(), news.next()) {
                    statement.row(|image| {
                        if keys.is_empty() {
                            image.key.set(None);
                        } else {
                            object(&mut image.key, &keys, ov, on);
                        }
                        let (o, w) = (image.old.begin(), image.new.begin());
                        o.push(b'{');
                        w.push(b'{');
                        let empty = o.len();
                        for c in &included {
                            was.clear();
                            is.clear();
                            json_value(&mut was, c, ov, on);
                            json_value(&mut is, c, nv, nn);
                            if was == is {
                                continue;
                            }
                            for (buf, val) in [(&mut *o, &was), (&mut *w, &is)] {
                                if buf.len() > empty {
                                    buf.push(b',');
                                }
                                buf.extend_from_slice(&c.json_key);
                                buf.extend_from_slice(val);
                            }
                        }
                        o.push(b'}');
                        w.push(b'}');
                    });
                }
            }
            _ => statement.row(|image| {
                image.key.set(None);
                image.old.set(None);
                image.new.set(None);
            }),
        }
    }
    statement.finish();
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
    let mut statement = Statement::new(operation, relid, table_name, include_statement);
    for r in &rows {
        statement.row(|image| {
            image.key.set(r.primary_key.as_deref());
            image.old.set(r.old.as_deref());
            image.new.set(r.new.as_deref());
        });
    }
    statement.finish();
}

/// Rows of one statement encoded, hashed and written per chunk: the memory of one chunk
/// is reused by the next, so a million-row statement needs no more than a small one.
const CHUNK: usize = 1000;

/// A text value encoded in place after room for its varlena header, so the log's tuple
/// is formed from it without another copy; reused from row to row.
struct Text {
    buf: Vec<u8>,
    null: bool,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            buf: vec![0; 4],
            null: true,
        }
    }
}

impl Text {
    /// Starts a new value; the returned buffer holds the header's room.
    fn begin(&mut self) -> &mut Vec<u8> {
        self.buf.truncate(4);
        self.null = false;
        &mut self.buf
    }

    fn set(&mut self, v: Option<&str>) {
        match v {
            None => self.null = true,
            Some(s) => self.begin().extend_from_slice(s.as_bytes()),
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        (!self.null).then(|| &self.buf[4..])
    }

    /// The value as a text datum that points into the buffer (valid until it changes), or
    /// outside a UTF-8 database a copy in its encoding when it is not ASCII.
    fn datum(&mut self) -> Option<pg_sys::Datum> {
        if self.null {
            return None;
        }
        if sql::converts(&self.buf[4..]) {
            let s = String::from_utf8_lossy(&self.buf[4..]);
            return Some(unsafe { sql::utf8_to_server(&s) });
        }
        let p = self.buf.as_mut_ptr() as *mut pg_sys::varlena;
        // The buffer starts with four bytes of room and is far below a varlena's limit.
        unsafe { pgrx::varlena::set_varsize_4b(p, self.buf.len() as i32) };
        Some(pg_sys::Datum::from(p))
    }
}

/// One audit row's primary key and images.
#[derive(Default)]
struct Image {
    key: Text,
    old: Text,
    new: Text,
}

/// Restores the memory context it replaced when dropped (also when an ERROR unwinds).
struct InContext(pg_sys::MemoryContext);

impl InContext {
    fn switch(cxt: pg_sys::MemoryContext) -> InContext {
        InContext(unsafe { pg_sys::MemoryContextSwitchTo(cxt) })
    }
}

impl Drop for InContext {
    fn drop(&mut self) {
        unsafe { pg_sys::MemoryContextSwitchTo(self.0) };
    }
}

/// One audited statement's rows on their way to the log. The statement's identity (its
/// number in the transaction, the actor) is taken at its first row: a statement that
/// changed nothing leaves no row and takes no number.
struct Statement {
    operation: String,
    relid: Option<pg_sys::Oid>,
    table_name: String,
    include_statement: bool,
    base: Option<(Record, RowHasher)>,
    images: Vec<Image>,
    len: usize,
    written: i32,
    hashes: Vec<[u8; 32]>,
    slots: Slots,
    /// What encoding and writing a chunk allocate (output functions, detoasted values,
    /// the writer's per-call state), reset after each chunk. Left to the transaction's
    /// memory on an ERROR.
    cxt: pg_sys::MemoryContext,
}

impl Statement {
    fn new(
        operation: &str,
        relid: Option<pg_sys::Oid>,
        table_name: String,
        include_statement: bool,
    ) -> Statement {
        Statement {
            operation: operation.to_string(),
            relid,
            table_name,
            include_statement,
            base: None,
            images: Vec::new(),
            len: 0,
            written: 0,
            hashes: Vec::new(),
            slots: Slots {
                cxt: std::ptr::null_mut(),
                rel: pg_sys::InvalidOid,
                slots: Vec::new(),
                kept: Vec::new(),
            },
            cxt: std::ptr::null_mut(),
        }
    }

    /// Encodes the next row with `f` (in the chunk's memory), writing a full chunk first.
    fn row(&mut self, f: impl FnOnce(&mut Image)) {
        if self.base.is_none() {
            let base = self.identity();
            let hasher = base.row_hasher();
            self.base = Some((base, hasher));
            self.slots.cxt = unsafe { pg_sys::CurrentMemoryContext };
            self.cxt = unsafe {
                pg_sys::AllocSetContextCreateExtended(
                    pg_sys::CurrentMemoryContext,
                    c"pg_platform audit rows".as_ptr(),
                    pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
                )
            };
        }
        if self.len == CHUNK {
            self.flush();
        }
        if self.images.len() == self.len {
            self.images.push(Image::default());
        }
        let _in = InContext::switch(self.cxt);
        f(&mut self.images[self.len]);
        self.len += 1;
    }

    /// The statement's own fields of its rows.
    fn identity(&self) -> Record {
        let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
        let statement_seq = next_statement(xid);
        let (client_addr, client_port, role_class) = session();
        // Recorded (and hashed) as UTF-8, stored in the database's encoding.
        let utf8 = |p: *const std::ffi::c_char| unsafe {
            (!p.is_null())
                .then(|| sql::server_to_utf8_lossy(CStr::from_ptr(p).to_bytes()).into_owned())
        };
        let application_name = utf8(unsafe { pg_sys::application_name });
        let statement = self
            .include_statement
            .then(|| utf8(unsafe { pg_sys::debug_query_string }))
            .flatten();
        Record {
            cluster_id: cluster_id(),
            event_time_us: unsafe { pg_sys::GetCurrentStatementStartTimestamp() } + PG_EPOCH_US,
            xid,
            statement_seq,
            row_seq: 0,
            operation: self.operation.clone(),
            table_name: self.table_name.clone(),
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
        }
    }

    /// Hashes and writes the rows encoded so far.
    fn flush(&mut self) {
        let Some((base, hasher)) = self.base.as_mut() else {
            return;
        };
        if self.len == 0 {
            return;
        }
        {
            let _in = InContext::switch(self.cxt);
            let images = &mut self.images[..self.len];
            self.hashes.clear();
            for (i, image) in images.iter().enumerate() {
                self.hashes.push(hasher.hash(
                    self.written + i as i32 + 1,
                    image.key.bytes(),
                    image.old.bytes(),
                    image.new.bytes(),
                ));
            }
            let (relid, offset, hashes, pool) =
                (self.relid, self.written, &self.hashes, &mut self.slots);
            // As the extension's owner: nextval checks privileges on the log's sequence.
            // The writer's own SQL (loading the log's partitions) sets a safe search_path
            // itself.
            sql::as_extension_owner_no_sql(|| write(base, relid, offset, images, hashes, pool));
        }
        unsafe { pg_sys::MemoryContextReset(self.cxt) };
        self.written += self.len as i32;
        self.len = 0;
    }

    /// Writes the last rows.
    fn finish(mut self) {
        self.flush();
        self.slots.drop_all();
        if !self.cxt.is_null() {
            unsafe { pg_sys::MemoryContextDelete(self.cxt) };
        }
    }
}

/// Slots, and copies of their values for the index inserts, reused by the writes of one
/// statement: made once per relation written, not once per chunk.
struct Slots {
    /// Where they live: the statement's memory, which the chunks' resets leave alone.
    cxt: pg_sys::MemoryContext,
    rel: pg_sys::Oid,
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    kept: Vec<(Vec<pg_sys::Datum>, Vec<bool>)>,
}

impl Slots {
    /// At least `n` slots for `rel`.
    ///
    /// # Safety
    /// `rel` is open and locked until the slots are dropped.
    unsafe fn ready(&mut self, rel: pg_sys::Relation, n: usize) {
        unsafe {
            if (*rel).rd_id != self.rel {
                self.drop_all();
                self.rel = (*rel).rd_id;
            }
            let natts = (*(*rel).rd_att).natts as usize;
            while self.slots.len() < n {
                let _in = InContext::switch(self.cxt);
                self.slots
                    .push(pg_sys::table_slot_create(rel, std::ptr::null_mut()));
                self.kept
                    .push((vec![pg_sys::Datum::from(0); natts], vec![true; natts]));
            }
        }
    }

    fn drop_all(&mut self) {
        for slot in self.slots.drain(..) {
            unsafe { pg_sys::ExecDropSingleTupleTableSlot(slot) };
        }
        self.kept.clear();
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

/// The columns of `COLUMNS` that differ between the rows of one statement.
const PER_ROW: [&str; 6] = [
    "id",
    "row_seq",
    "primary_key",
    "old_values",
    "new_values",
    "row_hash",
];

/// The columns of `COLUMNS` describing who ran the statement and from where: stored on the
/// statement's first row only (row_seq 1), NULL on its other rows, when the relation lets
/// them be NULL (0.5.0 on). `platform.audit_trail` shows them on every row; each row's hash
/// covers them all the same.
const CONTEXT: std::ops::Range<usize> = 12..20;

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
    /// Whether none of the `CONTEXT` columns is NOT NULL (a log made before 0.5.0 has them
    /// NOT NULL until ALTER EXTENSION UPDATE: its rows keep the context on every row).
    context_once: bool,
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
    let _ = LOG_OIDS.try_with(|o| {
        if let Some((log, seq)) = o.get() {
            if relid == pg_sys::InvalidOid || relid == log || relid == seq {
                o.set(None);
                let _ = ID_BLOCK.try_with(|b| b.set(None));
            }
        }
    });
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
            let context_once = at[CONTEXT]
                .iter()
                .all(|a| a.is_some_and(|i| !attrs[i].attnotnull));
            self.leaves.retain(|l| l.oid != oid);
            self.leaves.push(Leaf {
                oid,
                at,
                indexes: infos,
                plain,
                context_once,
            });
            &self.leaves[self.leaves.len() - 1]
        }
    }
}

/// How far the sequence steps at each value: `CHUNK` since 0.5.0, 1 before (a log not
/// updated yet by ALTER EXTENSION UPDATE takes a value per row).
///
/// # Safety
/// `seq` is a sequence.
unsafe fn sequence_increment(seq: pg_sys::Oid) -> i64 {
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::SEQRELID as i32,
            pg_sys::Datum::from(seq),
        );
        if tuple.is_null() {
            return 1;
        }
        // pg_sequence.seqincrement, its fourth column (int8, never NULL).
        let mut isnull = false;
        let value = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::SEQRELID as i32,
            tuple,
            4,
            &mut isnull,
        );
        let increment = if isnull { 1 } else { value.value() as i64 };
        pg_sys::ReleaseSysCache(tuple);
        increment
    }
}

thread_local! {
    /// The log's and its sequence's oids, found by name once per backend and forgotten at
    /// a relcache invalidation of either (a drop or rename sends one) or of all: three
    /// catalog lookups by name were a tenth of the writer's cost on one-row statements.
    static LOG_OIDS: std::cell::Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> =
        const { std::cell::Cell::new(None) };
    /// What is left of the ids the backend's last value of the log's sequence reserved:
    /// (sequence, next, end), forgotten with `LOG_OIDS`.
    static ID_BLOCK: std::cell::Cell<Option<(pg_sys::Oid, i64, i64)>> =
        const { std::cell::Cell::new(None) };
}

/// The log (opened and locked as an INSERT into it would lock it) and its sequence.
///
/// # Safety
/// In a transaction.
unsafe fn open_log() -> (pg_sys::Oid, pg_sys::Oid, pg_sys::Relation) {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    unsafe {
        if let Some((log, seq)) = LOG_OIDS.get() {
            // Gone since (the invalidation of a drop arrives with the lock): by name again.
            let parent = pg_sys::try_table_open(log, lock);
            if !parent.is_null() {
                if LOG_OIDS.get() == Some((log, seq)) {
                    return (log, seq, parent);
                }
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
        }
        let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), false);
        let log = pg_sys::get_relname_relid(c"audit_log".as_ptr(), ns);
        let seq = pg_sys::get_relname_relid(c"audit_log_id_seq".as_ptr(), ns);
        if log == pg_sys::InvalidOid || seq == pg_sys::InvalidOid {
            crate::error::raise(super::AuditError::LogMissing);
        }
        let parent = pg_sys::table_open(log, lock);
        LOG_OIDS.set(Some((log, seq)));
        (log, seq, parent)
    }
}

/// The first of `n` consecutive ids no other writer gets, or None when the sequence steps
/// by less than `n` (a log not updated to 0.5.0 yet: each row takes its own value). A
/// value of the sequence reserves the `increment` ids from it; what a small statement
/// leaves of them serves the backend's next ones, so one-row statements call nextval
/// once per `increment` rows rather than once each.
///
/// # Safety
/// `seq` is the log's sequence, in a transaction.
unsafe fn take_ids(seq: pg_sys::Oid, n: i64) -> Option<i64> {
    if let Some((s, next, end)) = ID_BLOCK.get() {
        if s == seq && end - next >= n {
            ID_BLOCK.set(Some((s, next + n, end)));
            return Some(next);
        }
    }
    let increment = unsafe { sequence_increment(seq) };
    if increment < n {
        return None;
    }
    let first = unsafe {
        pg_sys::OidFunctionCall1Coll(
            pg_sys::Oid::from(pg_sys::F_NEXTVAL),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(seq),
        )
    }
    .value() as i64;
    ID_BLOCK.set(Some((seq, first + n, first.saturating_add(increment))));
    Some(first)
}

/// Writes one chunk (at most `CHUNK` rows) of a statement's audit rows, numbered from
/// `offset + 1`, straight into `platform.audit_log`, the way COPY
/// does (heap insert, then its indexes): no SQL statement to plan or start per audited
/// statement. The log has no INSERT triggers or CHECK constraints to honour; its NOT NULL
/// columns are always filled here, and its index (BRIN on xid) is kept by the index insert.
fn write(
    r: &Record,
    relid: Option<pg_sys::Oid>,
    offset: i32,
    rows: &mut [Image],
    hashes: &[[u8; 32]],
    pool: &mut Slots,
) {
    unsafe {
        super::log::watch();
        // Locked as an INSERT into the log would lock it; the lock also brings in any
        // invalidation of its partition list (and of the oids kept).
        let (log, seq, parent) = open_log();
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
                    let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), false);
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
        let (at, infos, plain, context_once) = WRITER.with_borrow_mut(|w| {
            let l = w.leaf(rel, &indexes);
            (
                l.at,
                l.indexes.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
                l.plain,
                l.context_once,
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
        // The statement's text values, as varlenas in buffers of their own that outlive
        // the inserts (made without a call into PostgreSQL per value).
        let mut texts: [Text; 7] = Default::default();
        let mut text = |i: usize, v: &str| {
            texts[i].set(Some(v));
            texts[i].datum()
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
            text(0, &r.operation),
            relid.map(pg_sys::Datum::from),
            text(1, &r.table_name),
            None,
            None,
            None,
            text(2, &r.session_user),
            text(3, &r.current_user),
            text(4, &r.role_class),
            inet,
            r.client_port.map(pg_sys::Datum::from),
            r.application_name.as_deref().and_then(|v| text(5, v)),
            Some(pg_sys::Datum::from(r.backend_pid)),
            r.statement.as_deref().and_then(|v| text(6, v)),
            None,
        ];
        let mut index_values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut index_nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        // BRIN indexes whose keys are the same for every row of this write (the log's
        // index on xid) need one insert per heap block, not per row.
        let summarized_once: Vec<bool> = indexes
            .iter()
            .zip(infos.iter())
            .map(|(&index, &info)| {
                (*(*index).rd_rel).relam == pg_sys::BRIN_AM_OID
                    && (0..(*info).ii_NumIndexAttrs as usize).all(|k| {
                        let attno = (*info).ii_IndexAttrNumbers[k] as usize;
                        attno > 0
                            && at.iter().enumerate().any(|(c, a)| {
                                *a == Some(attno - 1) && !PER_ROW.contains(&COLUMNS[c])
                            })
                    })
            })
            .collect();
        let mut brin_block: Vec<Option<u32>> = vec![None; indexes.len()];
        // The chunk goes in as one batch, the way COPY writes its rows: one WAL record and
        // one buffer lock per page of rows instead of per row.
        debug_assert!(rows.len() <= CHUNK && rows.len() == hashes.len());
        pool.ready(rel, rows.len());
        let Slots { slots, kept, .. } = pool;
        let first_id = take_ids(seq, rows.len() as i64);
        let bistate = if rows.len() > 1 {
            pg_sys::GetBulkInsertState()
        } else {
            std::ptr::null_mut()
        };
        for (j, (row, h)) in rows.iter_mut().zip(hashes.iter()).enumerate() {
            let slot = slots[j];
            pg_sys::ExecClearTuple(slot);
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            // Consecutive ids from one value of the sequence when it steps by a chunk or
            // more (0.5.0 on): no other value of the sequence reaches them. nextval per
            // row was a twentieth of the audit's cost.
            datums[0] = Some(match first_id {
                Some(id) => pg_sys::Datum::from(id + j as i64),
                None => pg_sys::OidFunctionCall1Coll(
                    pg_sys::Oid::from(pg_sys::F_NEXTVAL),
                    pg_sys::InvalidOid,
                    pg_sys::Datum::from(seq),
                ),
            });
            datums[5] = Some(pg_sys::Datum::from(offset + j as i32 + 1));
            // Who and from where, once per statement: repeated on each of a large
            // insert's rows it was a fifth of the audit's cost (and the statement text,
            // when recorded, could be most of the log's size).
            if context_once && offset + j as i32 > 0 {
                datums[CONTEXT].fill(None);
            }
            datums[9] = row.key.datum();
            datums[10] = row.old.datum();
            datums[11] = row.new.datum();
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
        if rows.len() == 1 {
            pg_sys::table_tuple_insert(rel, slots[0], cid, 0, bistate);
        } else {
            pg_sys::table_multi_insert(rel, slots.as_mut_ptr(), rows.len() as i32, cid, 0, bistate);
        }
        for (j, &slot) in slots.iter().enumerate().take(rows.len()) {
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
                    let tid = (*slot).tts_tid;
                    let block =
                        (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo);
                    for (n, (&index, &info)) in indexes.iter().zip(infos.iter()).enumerate() {
                        if !(*info).ii_ReadyForInserts {
                            continue;
                        }
                        // A block range summary holds every value of its rows: once one
                        // row of this write is in for a heap block, the same values on the
                        // same block add nothing (the rows are all on the heap before the
                        // first index insert, so a concurrent summarizing sees them).
                        if summarized_once[n] {
                            if brin_block[n] == Some(block) {
                                continue;
                            }
                            brin_block[n] = Some(block);
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
