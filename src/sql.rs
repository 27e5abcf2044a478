//! The crate's SPI helpers: every statement a capability runs goes through here, so a
//! failure of the SPI layer is reported the same way everywhere.
//!
//! Reads use read-only SPI on purpose: pgrx's `Spi::get_one*` helpers run in "update" mode
//! and assign a transaction id, which burns xids (a worker round every minute) and makes
//! PostgreSQL refuse to create a logical slot later in the same transaction. They also
//! error when the query returns no row; [`read`] returns `None` instead.

use crate::error::{OrRaise, SpiFailure};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// The first column of the first row of a read-only query, `None` for no row or NULL.
pub fn read<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect(|c| {
        let table = c.select(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<T>()
    })
    .map_err(SpiFailure::from)
    .or_raise()
}

/// Runs a statement that changes something (DDL, DML, GRANT).
pub fn run(sql: &str) {
    if converts(sql.as_bytes()) {
        return run_converted(sql);
    }
    Spi::run(sql).map_err(SpiFailure::from).or_raise()
}

/// [`run`] for a statement that is not ASCII outside a UTF-8 database (a table named
/// `café` in LATIN1): pgrx hands PostgreSQL a statement's bytes as they are, which must be
/// in the database's encoding.
fn run_converted(sql: &str) {
    // No NUL can come from the conversion of a string without one, and a statement with
    // one is cut there as PostgreSQL would.
    let bytes = unsafe { utf8_in_server(sql.as_bytes()) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut owned = bytes[..end].to_vec();
    owned.push(0);
    let status = unsafe {
        pg_sys::SPI_connect();
        let rc = pg_sys::SPI_execute(owned.as_ptr() as *const std::ffi::c_char, false, 0);
        pg_sys::SPI_finish();
        rc
    };
    Spi::check_status(status)
        .map(|_| ())
        .map_err(SpiFailure::from)
        .or_raise()
}

/// Runs an INSERT/UPDATE/DELETE and returns the rows it processed.
pub fn modify(sql: &str, args: &[DatumWithOid]) -> i64 {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|t| t.len() as i64))
        .map_err(SpiFailure::from)
        .or_raise()
}

/// How pgrx passes our argument types: from their `FromDatum`, NULL as `Option<T>`. A
/// STRICT function never sees NULL; `$default` only keeps the signature total.
macro_rules! argument_abi {
    ($t:ty, $default:expr) => {
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $t {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or($default)
            }

            unsafe fn unbox_nullable_arg(
                arg: pgrx::callconv::Arg<'_, 'fcx>,
            ) -> pgrx::nullable::Nullable<Self> {
                unsafe { arg.unbox_arg_using_from_datum() }.into()
            }
        }
    };
}

/// A `text` argument, column and result type held as a Rust `String`: `$from` makes it of
/// the stored bytes (also for each element of a `text[]`), `$to` the datum of it.
macro_rules! text_type {
    ($t:ident, $from:ident, $to:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromDatum for $t {
            unsafe fn from_polymorphic_datum(
                datum: pg_sys::Datum,
                is_null: bool,
                _typoid: pg_sys::Oid,
            ) -> Option<Self> {
                if is_null {
                    return None;
                }
                unsafe {
                    let bytes: &[u8] = FromDatum::from_datum(datum, false)?;
                    Some($t($from(bytes)))
                }
            }
        }

        unsafe impl pgrx::datum::UnboxDatum for $t {
            type As<'src> = $t;
            unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
            where
                Self: 'src,
            {
                unsafe { $t($from(<&[u8] as pgrx::datum::UnboxDatum>::unbox(datum))) }
            }
        }

        impl IntoDatum for $t {
            fn into_datum(self) -> Option<pg_sys::Datum> {
                Some(unsafe { $to(&self.0) })
            }

            fn type_oid() -> pg_sys::Oid {
                pg_sys::TEXTOID
            }

            fn is_compatible_with(other: pg_sys::Oid) -> bool {
                matches!(other, pg_sys::TEXTOID | pg_sys::VARCHAROID)
            }
        }

        pgrx::impl_sql_translatable!($t, "text");

        argument_abi!($t, $t::default());
    };
}

/// A `regclass` argument or result that does not open the relation: pgrx's `PgRelation`
/// locks and opens it, which fails for a registration whose table was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            None
        } else {
            unsafe { pg_sys::Oid::from_datum(datum, false) }.map(RegClass)
        }
    }
}

impl IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

pgrx::impl_sql_translatable!(RegClass, "regclass");

argument_abi!(RegClass, RegClass(pg_sys::InvalidOid));

unsafe impl pgrx::callconv::BoxRet for RegClass {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}

/// Text in the database's encoding as UTF-8: converted by PostgreSQL outside a UTF-8
/// database (a LATIN1 database's 'Zoë' is the same card as a UTF-8 database's, and never
/// the same as 'Zoé'); bytes a SQL_ASCII database holds that are not UTF-8 are an ERROR
/// (22021) rather than a guess.
///
/// # Safety
/// Calls PostgreSQL's conversion, which may raise an ERROR.
pub unsafe fn server_to_utf8(bytes: &[u8]) -> String {
    unsafe {
        if database_encoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
            let src = bytes.as_ptr() as *const std::ffi::c_char;
            let out =
                pg_sys::pg_server_to_any(src, bytes.len() as i32, pg_sys::pg_enc::PG_UTF8 as i32);
            if out.cast_const() != src {
                return std::ffi::CStr::from_ptr(out).to_string_lossy().into_owned();
            }
        }
        // Valid UTF-8: the database's own text, or checked by the conversion above.
        String::from_utf8_lossy(bytes).into_owned()
    }
}

thread_local! {
    static DATABASE_ENCODING: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// The database's encoding, asked once per backend after it has connected (it cannot
/// change then): the audit and change encoders ask for every value they write.
fn database_encoding() -> i32 {
    if let Some(enc) = DATABASE_ENCODING.get() {
        return enc;
    }
    let enc = unsafe { pg_sys::GetDatabaseEncoding() };
    if unsafe { pg_sys::MyDatabaseId } != pg_sys::InvalidOid {
        DATABASE_ENCODING.set(Some(enc));
    }
    enc
}

/// Whether text in the database's encoding must be converted to be UTF-8 (and back): not
/// in a UTF-8 database, not in SQL_ASCII (which declares no encoding), not for ASCII.
pub fn converts(bytes: &[u8]) -> bool {
    let enc = database_encoding();
    enc != pg_sys::pg_enc::PG_UTF8 as i32
        && enc != pg_sys::pg_enc::PG_SQL_ASCII as i32
        && !bytes.is_ascii()
}

/// Like [`server_to_utf8`], for what must be recorded whatever it holds (audit images,
/// change events): bytes a SQL_ASCII database holds that are not UTF-8 become U+FFFD
/// instead of an ERROR that would refuse the change or stop a replication slot.
///
/// # Safety
/// As for [`server_to_utf8`].
pub unsafe fn server_to_utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if converts(bytes) {
        return std::borrow::Cow::Owned(unsafe { server_to_utf8(bytes) });
    }
    // Checked word by word first (what nearly all text is), byte by byte only when not.
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// UTF-8 in the database's encoding: `s` itself when nothing converts, else a palloc'd
/// copy (a character the encoding lacks is PostgreSQL's ERROR 22P05).
///
/// # Safety
/// As for [`server_to_utf8`]; the result lives in the current memory context.
pub unsafe fn utf8_in_server(s: &[u8]) -> &[u8] {
    if !converts(s) {
        return s;
    }
    unsafe {
        let src = s.as_ptr() as *const std::ffi::c_char;
        let out = pg_sys::pg_any_to_server(src, s.len() as i32, pg_sys::pg_enc::PG_UTF8 as i32);
        // The same pointer when nothing was converted (not NUL-terminated then).
        if out.cast_const() == src {
            s
        } else {
            std::ffi::CStr::from_ptr(out).to_bytes()
        }
    }
}

/// UTF-8 as a `text` datum in the database's encoding.
///
/// # Safety
/// As for [`utf8_in_server`].
pub unsafe fn utf8_to_server(s: &str) -> pg_sys::Datum {
    unsafe {
        let bytes = utf8_in_server(s.as_bytes());
        pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
            bytes.as_ptr() as *const std::ffi::c_char,
            bytes.len() as i32,
        ))
    }
}

/// A `text` argument, column or result held as UTF-8 in any database encoding: pgrx's
/// `&str` and `String` take the stored bytes as UTF-8, which refuses a LATIN1 database's
/// 'é' as an ERROR and would store UTF-8 bytes as LATIN1 text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerText(pub String);

text_type!(ServerText, server_to_utf8, utf8_to_server);

unsafe impl pgrx::callconv::BoxRet for ServerText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(utf8_to_server(&self.0)) }
    }
}

/// A `text` argument pg_platform passes on as it is (a name it stores and looks up, a
/// query it runs): pgrx takes text as UTF-8 both ways, so outside a UTF-8 database only
/// ASCII keeps its meaning. Anything else is refused with 0A000 and the way round, where
/// pgrx's `&str` gave an internal error (XX000) naming neither the value nor the fix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnconvertedText(pub String);

text_type!(UnconvertedText, unconverted, text_datum);

impl From<&str> for UnconvertedText {
    fn from(s: &str) -> Self {
        UnconvertedText(s.to_owned())
    }
}

impl std::ops::Deref for UnconvertedText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A text argument that cannot be passed on unconverted. The value itself is not shown (a
/// subject is personal data, a query may hold some): only its first character that is not
/// ASCII, as a code point, and where it is.
#[derive(Debug, thiserror::Error)]
pub enum UnconvertedTextError {
    #[error(
        "text argument holds U+{code_point:04X} at character {position}, which is not ASCII: in \
         a {encoding} database, pg_platform takes names and queries in ASCII only"
    )]
    NotAscii {
        code_point: u32,
        position: usize,
        escape: String,
        encoding: String,
    },
    #[error(
        "text argument is not valid UTF-8, which a SQL_ASCII database's names and queries must be"
    )]
    NotUtf8,
}

impl crate::error::SqlError for UnconvertedTextError {
    fn sqlstate(&self) -> pgrx::PgSqlErrorCode {
        match self {
            Self::NotAscii { .. } => pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::NotUtf8 => pgrx::PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::NotAscii { escape, .. } => Some(format!(
                "Use an ASCII name. In a query, write such characters as Unicode escapes, \
                 {escape} in U&'...' for a string or in U&\"...\" for an identifier."
            )),
            Self::NotUtf8 => None,
        }
    }
}

/// `c`, a character beyond ASCII, as the Unicode escape a `U&'...'` literal takes (`\00E9`,
/// `\+01F600`): ASCII, so a message in any encoding shows it as written.
pub fn unicode_escape(c: char) -> String {
    if (c as u32) <= 0xFFFF {
        format!("\\{:04X}", c as u32)
    } else {
        format!("\\+{:06X}", c as u32)
    }
}

/// Text for an ERROR's message, detail or hint. pgrx sends a Rust string's bytes as they
/// are, which a database not in UTF-8 takes for its own encoding (`é` showed as `Ã©`);
/// there, characters beyond ASCII are written as their Unicode escapes (`caf\00E9`)
/// instead, which read the same in any client encoding.
pub fn message_text(s: String) -> String {
    if !converts(s.as_bytes()) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&unicode_escape(c));
        }
    }
    out
}

/// Checks that `bytes`, text in the database's encoding, mean the same as UTF-8.
///
/// # Safety
/// In a backend connected to a database.
unsafe fn unconverted(bytes: &[u8]) -> String {
    if converts(bytes) {
        let utf8 = unsafe { server_to_utf8(bytes) };
        let encoding = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }
            .to_string_lossy()
            .into_owned();
        let (position, c) = utf8
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii())
            .unwrap_or((0, char::REPLACEMENT_CHARACTER));
        crate::error::raise(UnconvertedTextError::NotAscii {
            code_point: c as u32,
            position: position + 1,
            escape: unicode_escape(c),
            encoding,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => crate::error::raise(UnconvertedTextError::NotUtf8),
    }
}

/// `s` as a `text` datum, its bytes as they are.
///
/// # Safety
/// In a memory context the datum may live in.
unsafe fn text_datum(s: &str) -> pg_sys::Datum {
    unsafe {
        pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
            s.as_ptr() as *const std::ffi::c_char,
            s.len() as i32,
        ))
    }
}

/// A trigger's arguments as UTF-8, converted from the database's encoding like the names
/// and values they are compared with. (pgrx's `extra_args` fails on anything that is not
/// UTF-8, such as a LATIN1 database's `pièce`: the audit then recorded excluded columns,
/// and the scoring trigger lost its mapping.)
///
/// # Safety
/// `trigger` is the `Trigger` of a running trigger call.
pub unsafe fn trigger_args(trigger: *const pg_sys::Trigger) -> Vec<String> {
    unsafe {
        let n = usize::try_from((*trigger).tgnargs).unwrap_or(0);
        if n == 0 || (*trigger).tgargs.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts((*trigger).tgargs, n)
            .iter()
            .map(|&a| server_to_utf8_lossy(std::ffi::CStr::from_ptr(a).to_bytes()).into_owned())
            .collect()
    }
}

/// A `jsonb` argument or column read in any database encoding: pgrx's `JsonB` takes
/// jsonb's text as UTF-8 (a LATIN1 database's `"Zürich"` was an internal error) and
/// panics on a number no double holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerJsonB(pub serde_json::Value);

/// A jsonb value that serde_json cannot hold (a number beyond a double's range).
#[derive(Debug, thiserror::Error)]
#[error("jsonb value cannot be read: {0}")]
pub struct UnreadableJson(String);

impl crate::error::SqlError for UnreadableJson {
    fn sqlstate(&self) -> pgrx::PgSqlErrorCode {
        pgrx::PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
    }
    fn hint(&self) -> Option<String> {
        Some("Numbers in the value must fit a double precision (about 1e308).".into())
    }
}

impl FromDatum for ServerJsonB {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        unsafe {
            // jsonb's own text (jsonb_out detoasts), in the database's encoding.
            let p = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_OUT), datum);
            let text = server_to_utf8(std::ffi::CStr::from_ptr(p).to_bytes());
            pg_sys::pfree(p.cast());
            match serde_json::from_str(&text) {
                Ok(v) => Some(ServerJsonB(v)),
                Err(e) => crate::error::raise(UnreadableJson(e.to_string())),
            }
        }
    }
}

impl IntoDatum for ServerJsonB {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = self.0.to_string();
        unsafe {
            // serde_json writes no NUL byte (it escapes U+0000 as \u0000).
            let bytes = utf8_in_server(text.as_bytes());
            let mut owned = bytes.to_vec();
            owned.push(0);
            Some(pg_sys::OidInputFunctionCall(
                pg_sys::Oid::from(pg_sys::F_JSONB_IN),
                owned.as_mut_ptr().cast(),
                pg_sys::InvalidOid,
                -1,
            ))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

pgrx::impl_sql_translatable!(ServerJsonB, "jsonb");

argument_abi!(ServerJsonB, ServerJsonB(serde_json::Value::Null));

/// A setting changed for the rest of one operation, like a function's `SET` clause: the
/// previous value comes back with [`LocalSetting::restore`], or when the (sub)transaction
/// aborts.
pub struct LocalSetting(i32);

impl LocalSetting {
    pub fn set(name: &std::ffi::CStr, value: &str) -> LocalSetting {
        let value = std::ffi::CString::new(value).unwrap_or_default();
        unsafe {
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                PgLogLevel::ERROR as i32,
                false,
            );
            LocalSetting(level)
        }
    }

    pub fn restore(self) {
        unsafe { pg_sys::AtEOXact_GUC(true, self.0) };
    }
}

/// Runs `f` in a subtransaction: on an ERROR the subtransaction is rolled back (the outer
/// transaction goes on) and the error's SQLSTATE and message are returned.
pub fn in_subtransaction<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    use pgrx::pg_sys::panic::CaughtError;
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let outcome = PgTryBuilder::new(move || Ok(f()))
        .catch_others(|e| {
            Err(match e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
                    format!("{} ({})", r.message(), sqlstate(r.sql_error_code()))
                }
                CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            })
        })
        .execute();
    unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        match outcome {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::CurrentResourceOwner = owner;
    }
    outcome
}

/// The five-character SQLSTATE of an error code (PostgreSQL packs it six bits a character).
pub fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5)
        .map(|i| char::from(b'0' + ((packed >> (6 * i)) & 0x3F) as u8))
        .collect()
}

/// Runs a statement that changes something and returns the first column of its first row
/// (`INSERT/UPDATE/DELETE ... RETURNING`, `SELECT ... FOR UPDATE`).
pub fn modify_returning<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect_mut(|c| {
        let table = c.update(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<T>()
    })
    .map_err(SpiFailure::from)
    .or_raise()
}

/// Gives relation `to` (a name) the owner and the grants of relation `from`, replacing
/// its own grants (partitions follow their parent; a protected view follows its table).
pub fn copy_owner_and_grants(from: pg_sys::Oid, to: &str) {
    let owner = read::<String>(
        "SELECT quote_ident(pg_catalog.pg_get_userbyid(relowner)) FROM pg_catalog.pg_class WHERE oid = $1",
        &[from.into()],
    )
    .unwrap_or_default();
    run(&format!("ALTER TABLE {to} OWNER TO {owner}"));
    let grantee = "CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(e.grantee)) END";
    let statements = read::<String>(
        &format!(
            "SELECT string_agg(s, '; ') FROM (
                SELECT DISTINCT format('REVOKE ALL ON %s FROM %s', $2, {grantee}) AS s
                  FROM pg_catalog.pg_class r, pg_catalog.aclexplode(r.relacl) e
                 WHERE r.oid = $2::regclass AND e.grantee <> r.relowner
                UNION ALL
                SELECT format('GRANT %s ON %s TO %s%s', e.privilege_type, $2, {grantee},
                              CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                  FROM pg_catalog.pg_class r, pg_catalog.aclexplode(r.relacl) e
                 WHERE r.oid = $1 AND e.grantee <> r.relowner) x"
        ),
        &[from.into(), to.into()],
    );
    if let Some(s) = statements {
        run(&s);
    }
}

/// Runs `f` as the extension's owner, as a SECURITY DEFINER function with
/// `SET search_path = pg_catalog, pg_temp` would: the key tables are readable, and the
/// audit log writable, by no one else, and no SQL that `f` runs resolves an operator,
/// function or table through the caller's search_path (a caller's schema put first could
/// otherwise have its own `=` run with the owner's rights). The previous identity and path
/// come back afterwards, and on an error with the (sub)transaction's abort.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    as_extension_owner_no_sql(|| with_safe_search_path(f))
}

/// Runs `f` with `search_path` set to `pg_catalog, pg_temp` for its duration, as a
/// function's `SET` clause does (restored afterwards, and by an abort).
pub fn with_safe_search_path<R>(f: impl FnOnce() -> R) -> R {
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let out = f();
        pg_sys::AtEOXact_GUC(true, level);
        out
    }
}

/// `as_extension_owner` without changing the search_path, for code that runs no SQL of
/// its own outside `with_safe_search_path` (the audit writer's heap inserts, once per
/// audited statement, where setting a path would cost more than the rest).
pub fn as_extension_owner_no_sql<R>(f: impl FnOnce() -> R) -> R {
    thread_local! {
        static OWNER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
    }
    let owner = OWNER.get().unwrap_or_else(|| {
        let owner = read::<pg_sys::Oid>(
            "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_platform'",
            &[],
        )
        .unwrap_or(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
        OWNER.set(Some(owner));
        owner
    });
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let out = f();
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

/// `name` quoted as an SQL identifier when it needs to be (PostgreSQL's quote_ident).
pub fn quote_ident(name: &str) -> String {
    let Ok(c) = std::ffi::CString::new(name) else {
        return format!("\"{}\"", name.replace('"', "\"\""));
    };
    unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::{read, unicode_escape, ServerJsonB};
    use pgrx::prelude::*;

    /// The escapes an error shows characters in are what a U& literal reads back.
    #[pg_test]
    fn unicode_escapes_are_what_u_amp_literals_take() {
        assert_eq!(unicode_escape('é'), r"\00E9");
        assert_eq!(unicode_escape('😀'), r"\+01F600");
        let escaped: String = "Zürich 😀"
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    unicode_escape(c)
                }
            })
            .collect();
        let back = read::<String>(&format!("SELECT U&'{escaped}'"), &[]);
        assert_eq!(back.as_deref(), Some("Zürich 😀"));
    }

    /// A jsonb value written and read back through its own conversions (the database's
    /// encoding both ways; a number no double holds is tested with its SQLSTATE in the
    /// fraud LATIN1 test).
    #[pg_test]
    fn server_jsonb_round_trips() {
        let v = ServerJsonB(serde_json::json!({"ville": "Zürich", "n": 1.5, "ok": [true, null]}));
        let back = read::<ServerJsonB>("SELECT $1::jsonb", &[v.clone().into()]);
        assert_eq!(back, Some(v));
        let text = read::<String>(
            "SELECT ($1::jsonb ->> 'ville') || jsonb_typeof($1::jsonb -> 'n')",
            &[ServerJsonB(serde_json::json!({"ville": "Zürich", "n": 2})).into()],
        );
        assert_eq!(text.as_deref(), Some("Zürichnumber"));
    }
}

/// Names and queries pgrx passes on as UTF-8 must be ASCII in a LATIN1 database: each
/// function taking one refuses anything else with 0A000 before doing anything (pgrx's
/// `&str` gave XX000), names the first such character (not the value) and its escape,
/// and such escapes work in a query. In SQL_ASCII, bytes that are not UTF-8 are 22021.
#[cfg(test)]
#[test]
fn a_latin1_databases_names_and_queries_must_be_ascii() {
    use crate::testing::{expect_error, one};
    let mut l = crate::testing::fresh_database(
        "t_sql_latin1",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let (code, message, hint) = match l.batch_execute("SELECT platform.create_key('clé')") {
        Ok(()) => panic!("create_key('clé') was not refused"),
        Err(e) => match e.as_db_error() {
            Some(d) => (
                d.code().code().to_string(),
                d.message().to_string(),
                d.hint().unwrap_or_default().to_string(),
            ),
            None => panic!("create_key('clé'): {e}"),
        },
    };
    assert_eq!(code, "0A000", "{message}");
    // The value is not shown (a subject is personal data), only its first such character.
    assert!(
        message.contains("U+00E9 at character 3")
            && message.contains("LATIN1")
            && !message.contains("cl"),
        "{message}"
    );
    assert!(hint.contains(r"\00E9 in U&'...'"), "{hint}");
    let keys: i64 = one(&mut l, "SELECT count(*) FROM platform.pii_key");
    assert_eq!(keys, 0);
    // ASCII is the same in both encodings.
    let made: i32 = one(&mut l, "SELECT platform.create_key('cle')");
    assert!(made > 0);
    let batch = "CREATE TABLE h (card text, amount numeric, occurred_at timestamptz,
                                 merchant text, category text, city text);
                 INSERT INTO h VALUES ('c1', 10, '2026-01-01 10:00Z', 'm1', 'food', 'Zürich'),
                                      ('c2', 20, '2026-01-01 11:00Z', 'm2', 'food', 'Bern');
                 CREATE TABLE ev (at timestamptz NOT NULL, n int) PARTITION BY RANGE (at)";
    if let Err(e) = l.batch_execute(batch) {
        panic!("{batch}: {e}");
    }
    // A rule's name, a partition's column, a query's literal.
    for sql in [
        "SELECT platform.fraud_set_rule('montant élevé', 'block', 'amount > 1000')",
        "SELECT platform.partition_by_time('ev', 'créé', '1 day')",
        "SELECT platform.fraud_rebuild_profiles('SELECT card, amount, occurred_at, merchant, category FROM h WHERE city = ''Zürich''')",
    ] {
        let (code, message) = expect_error(&mut l, sql);
        assert_eq!(code, "0A000", "{sql}: {message}");
    }
    let left: String = one(
        &mut l,
        "SELECT (SELECT count(*) FROM platform.fraud_rules) || ' ' ||
                (SELECT count(*) FROM platform.partition_config) || ' ' ||
                (SELECT count(*) FROM platform.fraud_profile)",
    );
    assert_eq!(left, "0 0 0");
    // The hint's way round: the query's literal as Unicode escapes.
    let rebuilt: i64 = one(
        &mut l,
        r"SELECT platform.fraud_rebuild_profiles('SELECT card, amount, occurred_at, merchant, category FROM h WHERE city = U&''Z\00FCrich''')",
    );
    let profiles: i64 = one(&mut l, "SELECT count(*) FROM platform.fraud_profile");
    assert_eq!((rebuilt, profiles), (1, 1));
    drop(l);
    crate::testing::drop_database("t_sql_latin1");
    let mut a = crate::testing::fresh_database(
        "t_sql_sql_ascii",
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let (code, message) = expect_error(&mut a, r"SELECT platform.create_key(E'cl\xe9')");
    assert_eq!(code, "22021", "{message}");
    drop(a);
    crate::testing::drop_database("t_sql_sql_ascii");
}
