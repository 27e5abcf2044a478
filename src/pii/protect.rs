//! Transparent protection of a column. The table keeps only `<column>_encrypted` (and an
//! optional `<column>_blind_index`); a generated view shows the column under its old name,
//! in plaintext to `platform_pii_reader` members and masked to everyone else, and its
//! INSTEAD OF triggers encrypt what is written through it.
//!
//! Each value is encrypted with the context `pii:<registration id>:<primary key>`: a
//! ciphertext moved to another row or column no longer decrypts. The registration id
//! survives renames and pg_dump (the registry is a configuration table).

use super::{
    access, as_owner, blind_index_of, is_pii_reader, key_id, mask, mask_function, open, present,
};
use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use crate::sql::{self, RegClass, ServerText};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("{0} is not an ordinary table")]
    NotTable(String),
    #[error("column \"{1}\" of {0} does not exist")]
    NoColumn(String, String),
    #[error("column \"{1}\" of {0} is of type {2}; only text, varchar and char columns can be protected")]
    WrongType(String, String, String),
    #[error("{0} has no primary key: a protected value is bound to its row's key")]
    NoPrimaryKey(String),
    #[error("column \"{1}\" of {0} is {2}, which cannot be protected")]
    KeyColumn(String, String, &'static str),
    #[error("column \"{1}\" of {0} is already protected")]
    AlreadyProtected(String, String),
    #[error("column \"{1}\" of {0} is half-way through protection with other settings ({2})")]
    OtherSettings(String, String, String),
    #[error("column \"{1}\" of {0} cannot be protected while these depend on its plaintext: {2}")]
    Dependents(String, String, String),
    #[error("{0} needs a column named \"{1}\" for the protected column, and {2}")]
    NameTaken(String, String, &'static str),
    #[error("relation {0} already exists and is not the protected view of {1}")]
    ViewTaken(String, String),
    #[error("{1} row(s) of {0} have a value in \"{2}\" but no subject in \"{3}\"")]
    MissingSubject(String, i64, String, String),
    #[error("the owner of {0}, role {1}, may not execute platform.encrypt, encrypt_for_subject, blind_index or protected_rebind, which the view's triggers run as that role")]
    OwnerCannotEncrypt(String, String),
    #[error("no protected column has id {0}")]
    UnknownColumn(i32),
    #[error("invalid batch_size {0}: must be at least 1")]
    BatchSize(i64),
    #[error("permission denied for view {0}")]
    NoViewPrivilege(String),
}

impl SqlError for ProtectError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NotTable(_) => ERRCODE_WRONG_OBJECT_TYPE,
            Self::NoColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            Self::WrongType(..) => ERRCODE_DATATYPE_MISMATCH,
            Self::NoPrimaryKey(_) | Self::OtherSettings(..) => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Self::KeyColumn(..) => ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::AlreadyProtected(..) => ERRCODE_DUPLICATE_OBJECT,
            Self::Dependents(..) => ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            Self::NameTaken(..) => ERRCODE_DUPLICATE_COLUMN,
            Self::ViewTaken(..) => ERRCODE_DUPLICATE_TABLE,
            Self::MissingSubject(..) => ERRCODE_NOT_NULL_VIOLATION,
            Self::OwnerCannotEncrypt(..) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::UnknownColumn(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::BatchSize(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NoViewPrivilege(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NoPrimaryKey(t) => format!("Add one: ALTER TABLE {t} ADD PRIMARY KEY (...);"),
            Self::OtherSettings(..) => "Call platform.protect_column again with the settings it was started with; it resumes.".into(),
            Self::Dependents(..) => "Drop or change them first. An index on the plaintext keeps plaintext on disk: protect with blind_index => true instead, which keeps equality search.".into(),
            Self::NameTaken(..) => "Rename that column, or the one to protect.".into(),
            Self::ViewTaken(..) => "Name another view with view_name => '...'.".into(),
            Self::MissingSubject(..) => "Fill the subject column for those rows, then call platform.protect_column again: it resumes.".into(),
            Self::OwnerCannotEncrypt(_, owner) => format!("GRANT platform_developer TO {owner};"),
            _ => return None,
        })
    }
}

/// A protected column as registered in `platform.protected_columns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Protected {
    pub id: i32,
    pub table: pg_sys::Oid,
    pub table_name: String,
    pub column: String,
    pub column_type: String,
    pub key_name: String,
    pub subject_column: Option<String>,
    pub mask: String,
    pub blind_index: bool,
    pub view: String,
    pub protected: bool,
}

impl Protected {
    fn encrypted(&self) -> String {
        format!("{}_encrypted", self.column)
    }
    fn blind(&self) -> String {
        format!("{}_blind_index", self.column)
    }
    pub fn label(&self) -> String {
        format!("{}.{}", self.table_name, ident(&self.column))
    }
}

/// An SQL identifier, always quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[derive(Default)]
struct Cache {
    columns: Option<HashMap<i32, Rc<Protected>>>,
    callback: bool,
    watched: pg_sys::Oid,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if relid == pg_sys::InvalidOid || relid == c.watched {
                c.columns = None;
            }
        }
    });
}

const SELECT_REGISTRY: &str = "SELECT p.id, p.tbl::oid,
       (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p.tbl),
       p.column_name::text, p.column_type,
       p.key_name, p.subject_column::text, p.mask, p.blind_index, p.view_name, p.state = 'protected'
  FROM platform.protected_columns p";

fn load(filter: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Protected> {
    as_owner(|| {
        Spi::connect(|c| {
            let rows = c.select(&format!("{SELECT_REGISTRY} {filter}"), None, args)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(Protected {
                    id: r.get::<i32>(1)?.unwrap_or(0),
                    table: r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                    table_name: r.get::<String>(3)?.unwrap_or_default(),
                    column: r.get::<String>(4)?.unwrap_or_default(),
                    column_type: r.get::<String>(5)?.unwrap_or_default(),
                    key_name: r.get::<String>(6)?.unwrap_or_default(),
                    subject_column: r.get::<String>(7)?,
                    mask: r.get::<String>(8)?.unwrap_or_default(),
                    blind_index: r.get::<bool>(9)?.unwrap_or(false),
                    view: r.get::<String>(10)?.unwrap_or_default(),
                    protected: r.get::<bool>(11)?.unwrap_or(false),
                });
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .map_err(SpiFailure::from)
        .or_raise()
    })
}

/// The registration of protected column `id`, cached per backend until the registry
/// changes anywhere (a view reads it for every row).
pub fn registered(id: i32) -> Option<Rc<Protected>> {
    if let Some(found) = CACHE.with_borrow(|c| c.columns.as_ref().map(|m| m.get(&id).cloned())) {
        return found;
    }
    if !CACHE.with_borrow(|c| c.callback) {
        let watched =
            sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.protected_columns')::oid", &[])
                .unwrap_or(pg_sys::InvalidOid);
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(0),
            )
        };
        CACHE.with_borrow_mut(|c| {
            c.callback = true;
            c.watched = watched;
        });
    }
    let all: HashMap<i32, Rc<Protected>> = load("", &[])
        .into_iter()
        .map(|p| (p.id, Rc::new(p)))
        .collect();
    let found = all.get(&id).cloned();
    CACHE.with_borrow_mut(|c| c.columns = Some(all));
    found
}

fn invalidate_everywhere() {
    if let Some(oid) =
        sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.protected_columns')::oid", &[])
    {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
    }
    CACHE.with_borrow_mut(|c| c.columns = None);
}

fn context(id: i32, row_key: &str) -> String {
    format!("pii:{id}:{row_key}")
}

/// What the generated view shows of protected column `column_id` in the row whose
/// primary key reads `row_key`: the plaintext for `platform_pii_reader` members, the
/// column's mask for everyone else. Each call is counted in `platform.pii_access`.
#[pg_extern(stable)]
fn reveal_column(ciphertext: &[u8], column_id: i32, row_key: ServerText) -> Option<ServerText> {
    let row_key = row_key.as_str();
    let Some(p) = registered(column_id) else {
        raise(ProtectError::UnknownColumn(column_id))
    };
    let custom = (!mask::BUILT_IN.contains(&p.mask.as_str())).then(|| mask_function(&p.mask));
    let plain = open(ciphertext, &context(column_id, row_key)).map(zeroize::Zeroizing::new)?;
    let reader = is_pii_reader();
    access::count(column_id, || p.label(), reader);
    present(&plain, &p.mask, custom.as_deref(), reader)
}

/// The blind index of `value` for protected column `column_id`, for roles that may read
/// the column's view: the planner adds `<column>_blind_index = protected_blind_index($1, id)`
/// next to `<column> = $1` on the view, so the lookup uses the index.
#[pg_extern(stable)]
fn protected_blind_index(value: ServerText, column_id: i32) -> Vec<u8> {
    let Some(p) = registered(column_id) else {
        raise(ProtectError::UnknownColumn(column_id))
    };
    let view = sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[p.view.as_str().into()]);
    let allowed = view.is_some_and(|v| unsafe {
        pg_sys::pg_class_aclcheck(
            v,
            pg_sys::GetUserId(),
            pg_sys::ACL_SELECT as pg_sys::AclMode,
        ) == pg_sys::AclResult::ACLCHECK_OK
    });
    if !allowed {
        raise(ProtectError::NoViewPrivilege(p.view.clone()));
    }
    as_owner(|| blind_index_of(value.as_str(), &p.key_name))
}

/// For the view's triggers: `ciphertext` of protected column `column_id`, moved from the
/// row keyed `old_row_key` to the row keyed `new_row_key` (and to `subject`'s key for a
/// per-subject column) when a primary key or subject changes. The plaintext never leaves
/// the function; a forgotten subject's value stays as it is.
#[pg_extern]
fn protected_rebind(
    ciphertext: &[u8],
    column_id: i32,
    old_row_key: ServerText,
    new_row_key: ServerText,
    subject: default!(Option<crate::sql::UnconvertedText>, "NULL"),
) -> Vec<u8> {
    let subject = subject.as_deref();
    let (old_row_key, new_row_key) = (old_row_key.as_str(), new_row_key.as_str());
    let Some(p) = registered(column_id) else {
        raise(ProtectError::UnknownColumn(column_id))
    };
    match open(ciphertext, &context(column_id, old_row_key)).map(zeroize::Zeroizing::new) {
        Some(plain) => super::seal(
            &plain,
            &p.key_name,
            subject,
            &context(column_id, new_row_key),
        ),
        None => ciphertext.to_vec(),
    }
}

/// The SQL expression (over table alias `t`) of each row's context for column `col` of
/// `tbl` when it is the `<column>_encrypted` of a protected column, else NULL; used by
/// `CALL platform.reencrypt(tbl, col, NULL)`.
#[pg_extern]
fn protected_row_context(tbl: RegClass, col: crate::sql::UnconvertedText) -> Option<String> {
    let col = col.as_str();
    let p = load(
        "WHERE p.tbl = $1 AND p.column_name || '_encrypted' = $2 AND p.state = 'protected'",
        &[tbl.into(), col.into()],
    )
    .pop()?;
    let t = table(tbl.0);
    let pk = primary_key(tbl.0, &t);
    Some(format!(
        "{}::pg_catalog.text OPERATOR(pg_catalog.||) {}",
        literal(&context(p.id, "")),
        row_key(&pk, "t.")
    ))
}

struct Table {
    name: String,
    schema: String,
    relname: String,
    owner: String,
}

fn table(tbl: pg_sys::Oid) -> Table {
    let found = Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relkind::text, format('%I.%I', n.nspname, c.relname), n.nspname::text,
                    c.relname::text, quote_ident(pg_catalog.pg_get_userbyid(c.relowner))
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            Some(1),
            &[tbl.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            Table {
                name: r.get::<String>(2)?.unwrap_or_default(),
                schema: r.get::<String>(3)?.unwrap_or_default(),
                relname: r.get::<String>(4)?.unwrap_or_default(),
                owner: r.get::<String>(5)?.unwrap_or_default(),
            },
        )))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    match found {
        Some((kind, t)) if kind == "r" => t,
        Some((_, t)) => raise(ProtectError::NotTable(t.name)),
        None => raise(ProtectError::NotTable(format!("relation with OID {tbl}"))),
    }
}

/// (attnum, type as written, type category, NOT NULL, generated) of a live column.
fn column(tbl: pg_sys::Oid, t: &Table, name: &str) -> (i16, String, String, bool, bool) {
    let found = Spi::connect(|c| {
        let r = c.select(
            "SELECT a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod), t.typcategory::text,
                    a.attnotnull, a.attgenerated <> ''
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            Some(1),
            &[tbl.into(), name.into()],
        )?;
        if r.is_empty() {
            return Ok(None);
        }
        let r = r.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<i16>(1)?.unwrap_or(0),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
            r.get::<bool>(4)?.unwrap_or(false),
            r.get::<bool>(5)?.unwrap_or(false),
        )))
    })
    .map_err(SpiFailure::from)
    .or_raise();
    found.unwrap_or_else(|| raise(ProtectError::NoColumn(t.name.clone(), name.to_string())))
}

fn primary_key(tbl: pg_sys::Oid, t: &Table) -> Vec<String> {
    sql::read::<Vec<String>>(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord),
                pg_catalog.pg_attribute a
          WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.attnum",
        &[tbl.into()],
    )
    .filter(|k| !k.is_empty())
    .unwrap_or_else(|| raise(ProtectError::NoPrimaryKey(t.name.clone())))
}

/// `text` of the primary key of the row under `prefix` (`t.` or `NEW.`).
fn row_key(pk: &[String], prefix: &str) -> String {
    let cols: Vec<String> = pk.iter().map(|c| format!("{prefix}{}", ident(c))).collect();
    match cols.as_slice() {
        [one] => format!("({one})::pg_catalog.text"),
        _ => format!("ROW({})::pg_catalog.text", cols.join(", ")),
    }
}

/// The expression encrypting `value` for protected column `p` in the row under `prefix`.
fn encrypt_expr(p: &Protected, pk: &[String], value: &str, prefix: &str) -> String {
    let ctx = format!(
        "{}::pg_catalog.text OPERATOR(pg_catalog.||) {}",
        literal(&context(p.id, "")),
        row_key(pk, prefix)
    );
    match &p.subject_column {
        None => format!(
            "platform.encrypt(({value})::pg_catalog.text, {}, {ctx})",
            literal(&p.key_name)
        ),
        Some(s) => format!(
            "platform.encrypt_for_subject(({value})::pg_catalog.text, {}, ({prefix}{})::pg_catalog.text, {ctx})",
            literal(&p.key_name),
            ident(s)
        ),
    }
}

/// `a` and `b` are the same value (NULLs equal), compared as text with pg_catalog's
/// operator named explicitly: `IS NOT DISTINCT FROM` would look `=` up in the search path.
fn same(a: &str, b: &str) -> String {
    format!(
        "COALESCE(({a})::pg_catalog.text OPERATOR(pg_catalog.=) ({b})::pg_catalog.text, ({a}) IS NULL AND ({b}) IS NULL)"
    )
}

fn blind_expr(p: &Protected, value: &str) -> String {
    format!(
        "platform.blind_index(({value})::pg_catalog.text, {})",
        literal(&p.key_name)
    )
}

/// First step of `CALL platform.protect_column`: checks everything, registers the column
/// and adds `<column>_encrypted` (and `<column>_blind_index`). Returns the registration id;
/// a registration half-way through with the same settings is resumed.
#[pg_extern]
#[allow(clippy::too_many_arguments)]
fn protect_column_prepare(
    tbl: RegClass,
    col: crate::sql::UnconvertedText,
    key_name: crate::sql::UnconvertedText,
    subject_column: Option<crate::sql::UnconvertedText>,
    mask: crate::sql::UnconvertedText,
    blind_index: bool,
    view_name: Option<crate::sql::UnconvertedText>,
) -> i32 {
    let col = col.as_str();
    let key_name = key_name.as_str();
    let mask = mask.as_str();
    let subject_column = subject_column.as_deref();
    let view_name = view_name.as_deref();
    let oid = tbl.0;
    let t = table(oid);
    let view_name = view_name.map_or_else(
        || {
            format!(
                "{}.{}",
                ident(&t.schema),
                ident(&format!("{}_view", t.relname))
            )
        },
        |v| format!("{}.{}", ident(&t.schema), ident(v)),
    );
    let others = load("WHERE p.tbl = $1", &[oid.into()]);
    if let Some(p) = others.iter().find(|p| p.column == col) {
        if p.protected {
            raise(ProtectError::AlreadyProtected(t.name, col.to_string()));
        }
        let same = p.key_name == key_name
            && p.subject_column.as_deref() == subject_column
            && p.mask == mask
            && p.blind_index == blind_index
            && p.view == view_name;
        if !same {
            raise(ProtectError::OtherSettings(
                t.name,
                col.to_string(),
                format!(
                    "key {}, subject column {}, mask {}, blind index {}, view {}",
                    p.key_name,
                    p.subject_column.as_deref().unwrap_or("none"),
                    p.mask,
                    p.blind_index,
                    p.view
                ),
            ));
        }
        return p.id;
    }
    let (_, column_type, category, not_null, generated) = column(oid, &t, col);
    if category != "S" {
        raise(ProtectError::WrongType(
            t.name,
            col.to_string(),
            column_type,
        ));
    }
    if generated {
        raise(ProtectError::KeyColumn(
            t.name,
            col.to_string(),
            "a generated column",
        ));
    }
    let pk = primary_key(oid, &t);
    if pk.iter().any(|k| k == col) {
        raise(ProtectError::KeyColumn(
            t.name,
            col.to_string(),
            "part of the primary key",
        ));
    }
    if let Some(s) = subject_column {
        column(oid, &t, s);
        if s == col {
            raise(ProtectError::KeyColumn(
                t.name,
                col.to_string(),
                "its own subject column",
            ));
        }
        if others.iter().any(|p| p.column == s) {
            raise(ProtectError::KeyColumn(
                t.name,
                s.to_string(),
                "protected: a subject column must stay readable",
            ));
        }
    }
    if others
        .iter()
        .any(|p| p.subject_column.as_deref() == Some(col))
    {
        raise(ProtectError::KeyColumn(
            t.name,
            col.to_string(),
            "the subject column of another protected column",
        ));
    }
    key_id(key_name, false);
    if !mask::BUILT_IN.contains(&mask) {
        mask_function(mask);
    }
    for name in [format!("{col}_encrypted"), format!("{col}_blind_index")] {
        if name.len() > 63 {
            raise(ProtectError::NameTaken(
                t.name,
                name,
                "that name is longer than 63 bytes",
            ));
        }
        let taken = sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped",
            &[oid.into(), name.as_str().into()],
        );
        if taken.is_some() {
            raise(ProtectError::NameTaken(t.name, name, "one already exists"));
        }
    }
    let own_view = others.first().map(|p| p.view.clone());
    if own_view.as_ref().is_some_and(|v| *v != view_name) {
        raise(ProtectError::ViewTaken(view_name, t.name));
    }
    let view_exists = sql::read::<bool>(
        "SELECT to_regclass($1) IS NOT NULL",
        &[view_name.as_str().into()],
    )
    .unwrap_or(false);
    if view_exists && own_view.is_none() {
        raise(ProtectError::ViewTaken(view_name, t.name));
    }
    // Objects on the plaintext column (indexes, constraints, other views, statistics)
    // would keep plaintext or break; its default moves to the view, and our own view is
    // regenerated.
    let dependents = sql::read::<String>(
        "SELECT string_agg(DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
           FROM pg_catalog.pg_depend d
           JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = $1 AND a.attname = $2
            AND d.deptype IN ('n', 'a')
            AND d.classid <> 'pg_catalog.pg_attrdef'::regclass
            AND NOT (d.classid = 'pg_catalog.pg_rewrite'::regclass AND EXISTS (
                     SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid AND r.ev_class = to_regclass($3)))",
        &[oid.into(), col.into(), view_name.as_str().into()],
    );
    if let Some(d) = dependents {
        raise(ProtectError::Dependents(t.name, col.to_string(), d));
    }
    let id = as_owner(|| {
        sql::modify_returning::<i32>(
            "INSERT INTO platform.protected_columns
                 (id, tbl, column_name, column_type, key_name, subject_column, mask, blind_index, view_name, not_null)
             VALUES (nextval('platform.protected_columns_id_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING id",
            &[
                tbl.into(),
                col.into(),
                column_type.as_str().into(),
                key_name.into(),
                subject_column.into(),
                mask.into(),
                blind_index.into(),
                view_name.as_str().into(),
                not_null.into(),
            ],
        )
    })
    .unwrap_or(0);
    let mut alter = format!(
        "ALTER TABLE {} ADD COLUMN {} platform.ciphertext",
        t.name,
        ident(&format!("{col}_encrypted"))
    );
    if blind_index {
        alter.push_str(&format!(
            ", ADD COLUMN {} bytea",
            ident(&format!("{col}_blind_index"))
        ));
    }
    if not_null {
        alter.push_str(&format!(", ALTER COLUMN {} DROP NOT NULL", ident(col)));
    }
    sql::run(&alter);
    if blind_index {
        sql::run(&format!(
            "CREATE INDEX ON {} ({})",
            t.name,
            ident(&format!("{col}_blind_index"))
        ));
    }
    sql::run(&format!(
        "COMMENT ON COLUMN {}.{} IS {}",
        t.name,
        ident(&format!("{col}_encrypted")),
        literal(&format!(
            "pg_platform ciphertext of \"{col}\" (key {key_name}); read and write it through {view_name}"
        ))
    ));
    invalidate_everywhere();
    id
}

fn registration(id: i32) -> Protected {
    load("WHERE p.id = $1", &[id.into()])
        .pop()
        .unwrap_or_else(|| raise(ProtectError::UnknownColumn(id)))
}

/// One batch of `CALL platform.protect_column`: encrypts up to `batch_size` plaintext
/// values (rows locked by others are left for a later batch). Returns how many.
#[pg_extern]
fn protect_column_batch(id: i32, batch_size: i64) -> i64 {
    if batch_size < 1 {
        raise(ProtectError::BatchSize(batch_size));
    }
    let p = registration(id);
    let t = table(p.table);
    convert(&p, &t, &primary_key(p.table, &t), Some(batch_size))
}

fn convert(p: &Protected, t: &Table, pk: &[String], limit: Option<i64>) -> i64 {
    let col = ident(&p.column);
    let mut set = format!(
        "{} = {}, {col} = NULL",
        ident(&p.encrypted()),
        encrypt_expr(p, pk, &format!("t.{col}"), "t.")
    );
    if p.blind_index {
        set.push_str(&format!(
            ", {} = {}",
            ident(&p.blind()),
            blind_expr(p, &format!("t.{col}"))
        ));
    }
    let subject = p
        .subject_column
        .as_ref()
        .map(|s| format!(" AND {} IS NOT NULL", ident(s)))
        .unwrap_or_default();
    let rows = match limit {
        Some(n) => format!(
            "t.ctid = ANY (ARRAY(SELECT ctid FROM {} WHERE {col} IS NOT NULL{subject} LIMIT {n} FOR UPDATE SKIP LOCKED))",
            t.name
        ),
        None => format!("t.{col} IS NOT NULL{}", subject.replace(" AND ", " AND t.")),
    };
    sql::modify(
        &format!("UPDATE {} AS t SET {set} WHERE {rows}", t.name),
        &[],
    )
}

/// Last step of `CALL platform.protect_column`: under a short exclusive lock, encrypts
/// what was written meanwhile, regenerates the view and its triggers and drops the
/// plaintext column.
#[pg_extern]
fn protect_column_finish(id: i32) -> i64 {
    let p = registration(id);
    let t = table(p.table);
    let pk = primary_key(p.table, &t);
    sql::run(&format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", t.name));
    if let Some(s) = &p.subject_column {
        let missing = sql::read::<i64>(
            &format!(
                "SELECT count(*) FROM {} WHERE {} IS NOT NULL AND {} IS NULL",
                t.name,
                ident(&p.column),
                ident(s)
            ),
            &[],
        )
        .unwrap_or(0);
        if missing > 0 {
            raise(ProtectError::MissingSubject(
                t.name,
                missing,
                p.column.clone(),
                s.clone(),
            ));
        }
    }
    let late = convert(&p, &t, &pk, None);
    let allowed = sql::read::<bool>(
        "SELECT bool_and(has_function_privilege(r.oid, f, 'EXECUTE'))
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner,
                unnest(ARRAY['platform.encrypt(text,text,text)', 'platform.encrypt_for_subject(text,text,text,text)',
                             'platform.blind_index(text,text)', 'platform.protected_rebind(bytea,integer,text,text,text)']) f
          WHERE c.oid = $1",
        &[p.table.into()],
    )
    .unwrap_or(false);
    if !allowed {
        raise(ProtectError::OwnerCannotEncrypt(t.name, t.owner));
    }
    let not_null = as_owner(|| {
        sql::read::<bool>(
            "SELECT not_null FROM platform.protected_columns WHERE id = $1",
            &[id.into()],
        )
    })
    .unwrap_or(false);
    if not_null {
        sql::run(&format!(
            "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
            t.name,
            ident(&p.encrypted())
        ));
    }
    as_owner(|| {
        sql::modify(
            "UPDATE platform.protected_columns SET state = 'protected', protected_at = now() WHERE id = $1",
            &[id.into()],
        )
    });
    generate(&t, p.table, &pk);
    sql::run(&format!(
        "ALTER TABLE {} DROP COLUMN {}",
        t.name,
        ident(&p.column)
    ));
    invalidate_everywhere();
    late
}

/// One column of the generated view.
struct ViewColumn {
    name: String,
    /// The SELECT expression over the table (alias `t`).
    expr: String,
    order: i32,
    protected: Option<Protected>,
    /// Written by the triggers (not generated; not an identity column on UPDATE).
    insertable: bool,
    updatable: bool,
    default: Option<String>,
}

/// Writes the view of table `tbl` and its INSTEAD OF trigger from the registry.
fn generate(t: &Table, tbl: pg_sys::Oid, pk: &[String]) {
    let registered: Vec<Protected> = load(
        "WHERE p.tbl = $1 AND p.state = 'protected' ORDER BY p.id",
        &[tbl.into()],
    );
    let Some(view) = registered.first().map(|p| p.view.clone()) else {
        return;
    };
    let existing: HashMap<String, i32> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT attname::text, attnum::int4 FROM pg_catalog.pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            None,
            &[view.as_str().into()],
        )?;
        let mut m = HashMap::new();
        for r in rows {
            m.insert(
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or(0),
            );
        }
        Ok::<_, pgrx::spi::SpiError>(m)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let base: Vec<(String, i32, String, bool, String, Option<String>)> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT a.attname::text, a.attnum::int4, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    a.attgenerated <> '', a.attidentity::text,
                    CASE WHEN a.attidentity <> '' THEN format('nextval(%L::regclass)',
                              pg_catalog.pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname))
                         ELSE pg_catalog.pg_get_expr(d.adbin, d.adrelid) END
               FROM pg_catalog.pg_attribute a
               JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attgenerated = ''
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            None,
            &[tbl.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or(0),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<bool>(4)?.unwrap_or(false),
                r.get::<String>(5)?.unwrap_or_default(),
                r.get::<String>(6)?,
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise();
    let plaintext_position: HashMap<&str, i32> = base
        .iter()
        .map(|(name, num, ..)| (name.as_str(), *num))
        .collect();
    let order = |name: &str, num: i32| match existing.get(name) {
        Some(n) => *n,
        None if !existing.is_empty() => 10_000 + num,
        None => num,
    };
    let mut columns = Vec::new();
    for (name, num, _, generated, identity, default) in &base {
        if let Some(p) = registered.iter().find(|p| *name == p.encrypted()) {
            let position = plaintext_position
                .get(p.column.as_str())
                .copied()
                .unwrap_or(*num);
            columns.push(ViewColumn {
                name: p.column.clone(),
                expr: format!(
                    "platform.reveal_column(t.{}, {}, {})::{}",
                    ident(name),
                    p.id,
                    row_key(pk, "t."),
                    p.column_type
                ),
                order: order(&p.column, position),
                protected: Some(p.clone()),
                insertable: true,
                updatable: true,
                default: base
                    .iter()
                    .find(|b| b.0 == p.column)
                    .and_then(|b| b.5.clone()),
            });
        } else if registered
            .iter()
            .any(|p| *name == p.blind() || *name == p.column)
        {
            continue;
        } else {
            columns.push(ViewColumn {
                name: name.clone(),
                expr: format!("t.{}", ident(name)),
                order: order(name, *num),
                protected: None,
                insertable: !generated,
                updatable: !generated && identity != "a",
                default: default.clone(),
            });
        }
    }
    columns.sort_by_key(|c| c.order);
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("{} AS {}", c.expr, ident(&c.name)))
        .collect();
    let new_view = existing.is_empty();
    sql::run(&format!(
        "CREATE OR REPLACE VIEW {view} AS SELECT {} FROM {} AS t",
        select.join(", "),
        t.name
    ));
    if new_view {
        sql::copy_owner_and_grants(tbl, &view);
        sql::run(&format!(
            "COMMENT ON VIEW {view} IS {}",
            literal(&format!(
                "pg_platform protected view of {}: plaintext for platform_pii_reader, masked for other roles; writes are encrypted",
                t.name
            ))
        ));
    }
    for c in &columns {
        if let Some(d) = &c.default {
            sql::run(&format!(
                "ALTER VIEW {view} ALTER COLUMN {} SET DEFAULT {d}",
                ident(&c.name)
            ));
        }
    }
    write_trigger(t, tbl, &view, pk, &columns);
}

/// The INSTEAD OF trigger of the view: a PL/pgSQL function generated for this table,
/// SECURITY DEFINER as the table's owner, like an updatable view's writes. Every name,
/// type and operator in it is schema-qualified (`OPERATOR(pg_catalog.=)`), so no schema in
/// the caller's search_path can take their place; a `SET search_path` clause would do the
/// same but halves the rows per second of writes through the view (measured).
fn write_trigger(t: &Table, tbl: pg_sys::Oid, view: &str, pk: &[String], columns: &[ViewColumn]) {
    let mut checks = String::new();
    let (mut ins_cols, mut ins_vals, mut set) = (Vec::new(), Vec::new(), Vec::new());
    let pk_same: Vec<String> = pk
        .iter()
        .map(|k| same(&format!("NEW.{}", ident(k)), &format!("OLD.{}", ident(k))))
        .collect();
    let pk_same = pk_same.join(" AND ");
    for c in columns {
        let name = ident(&c.name);
        match &c.protected {
            Some(p) => {
                let value = format!("NEW.{name}");
                let unchanged = same(&value, &format!("OLD.{name}"));
                if let Some(s) = &p.subject_column {
                    checks.push_str(&format!(
                        "    IF NEW.{name} IS NOT NULL AND NEW.{subj} IS NULL THEN
        RAISE EXCEPTION '% needs a subject in column %', {label}, {subj_lit} USING ERRCODE = '23502';
    END IF;\n",
                        subj = ident(s),
                        label = literal(&p.label()),
                        subj_lit = literal(s),
                    ));
                }
                let enc = encrypt_expr(p, pk, &value, "NEW.");
                let encrypted = ident(&p.encrypted());
                ins_cols.push(encrypted.clone());
                ins_vals.push(enc.clone());
                let subject_same = p
                    .subject_column
                    .as_ref()
                    .map(|s| {
                        format!(
                            " AND {}",
                            same(&format!("NEW.{}", ident(s)), &format!("OLD.{}", ident(s)))
                        )
                    })
                    .unwrap_or_default();
                // The view shows a reader plaintext but others the mask: an unchanged
                // value is never re-encrypted from what the view showed; a changed key or
                // subject moves the stored ciphertext instead.
                let rebind = format!(
                    "platform.protected_rebind(t.{encrypted}, {}, {}, {}, {})",
                    p.id,
                    row_key(pk, "OLD."),
                    row_key(pk, "NEW."),
                    p.subject_column.as_ref().map_or("NULL".into(), |s| format!(
                        "(NEW.{})::pg_catalog.text",
                        ident(s)
                    ))
                );
                set.push(format!(
                    "{encrypted} = CASE WHEN NOT {unchanged} THEN {enc} \
                     WHEN {pk_same}{subject_same} THEN t.{encrypted} ELSE {rebind} END"
                ));
                if p.blind_index {
                    let blind = ident(&p.blind());
                    ins_cols.push(blind.clone());
                    ins_vals.push(blind_expr(p, &value));
                    set.push(format!(
                        "{blind} = CASE WHEN {unchanged} THEN t.{blind} ELSE {} END",
                        blind_expr(p, &value)
                    ));
                }
            }
            None => {
                if c.insertable {
                    ins_cols.push(name.clone());
                    ins_vals.push(format!("NEW.{name}"));
                }
                if c.updatable {
                    set.push(format!("{name} = NEW.{name}"));
                }
            }
        }
    }
    let matches: Vec<String> = pk
        .iter()
        .map(|k| {
            let op = sql::read::<String>(
                "SELECT format('OPERATOR(%I.=)', n.nspname)
                   FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_operator o ON o.oprname = '=' AND o.oprleft = a.atttypid AND o.oprright = a.atttypid
                   JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
                  WHERE a.attrelid = $1 AND a.attname = $2
                  ORDER BY n.nspname <> 'pg_catalog' LIMIT 1",
                &[tbl.into(), k.as_str().into()],
            )
            .unwrap_or_else(|| "OPERATOR(pg_catalog.=)".into());
            format!("t.{0} {op} OLD.{0}", ident(k))
        })
        .collect();
    let matches = matches.join(" AND ");
    let body = format!(
        "BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        DELETE FROM {table} AS t WHERE {matches};
        IF NOT FOUND THEN RETURN NULL; END IF;
        RETURN OLD;
    END IF;
{checks}    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {table} ({ins_cols}) OVERRIDING SYSTEM VALUE VALUES ({ins_vals});
        RETURN NEW;
    END IF;
    UPDATE {table} AS t SET {set} WHERE {matches};
    IF NOT FOUND THEN RETURN NULL; END IF;
    RETURN NEW;
END",
        table = t.name,
        ins_cols = ins_cols.join(", "),
        ins_vals = ins_vals.join(", "),
        set = set.join(", "),
    );
    let mut tag = "$pg_platform$".to_string();
    while body.contains(&tag) {
        tag.insert(1, '_');
    }
    let relname = view
        .rsplit_once('.')
        .map_or(view, |(_, r)| r)
        .trim_matches('"');
    let function = format!(
        "{}.{}",
        ident(&t.schema),
        ident(&format!("{relname}_write"))
    );
    sql::run(&format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
            SECURITY DEFINER AS {tag}{body}{tag};
         ALTER FUNCTION {function}() OWNER TO {owner};
         REVOKE ALL ON FUNCTION {function}() FROM PUBLIC;
         COMMENT ON FUNCTION {function}() IS {comment};
         CREATE OR REPLACE TRIGGER platform_write INSTEAD OF INSERT OR UPDATE OR DELETE ON {view}
             FOR EACH ROW EXECUTE FUNCTION {function}()",
        owner = t.owner,
        comment = literal(&format!(
            "pg_platform: writes through {view} into {}, encrypting protected columns",
            t.name
        )),
    ));
}

pgrx::extension_sql!(
    r#"
-- What a protected column stores: only pg_platform ciphertexts (format 1 header, nonce and
-- tag), so a forgotten legacy writer cannot put plaintext there. A domain rather than a
-- CHECK constraint: its expression is compiled once per session, not per INSERT.
CREATE DOMAIN platform.ciphertext AS bytea
    CHECK (VALUE IS NULL OR CASE WHEN length(VALUE) >= 38
                                 THEN get_byte(VALUE, 0) = 161 AND get_byte(VALUE, 1) IN (0, 1)
                                 ELSE false END);
COMMENT ON DOMAIN platform.ciphertext IS 'A pg_platform ciphertext (format 1): what protected columns store.';
CREATE SEQUENCE platform.protected_columns_id_seq AS integer;
CREATE TABLE platform.protected_columns (
    id             integer PRIMARY KEY,
    tbl            regclass NOT NULL,
    column_name    name NOT NULL,
    column_type    text NOT NULL,
    key_name       text NOT NULL,
    subject_column name,
    mask           text NOT NULL,
    blind_index    boolean NOT NULL,
    view_name      text NOT NULL,
    not_null       boolean NOT NULL,
    state          text NOT NULL DEFAULT 'converting' CHECK (state IN ('converting', 'protected')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    protected_at   timestamptz,
    protected_by   text NOT NULL DEFAULT session_user,
    UNIQUE (tbl, column_name)
);
COMMENT ON TABLE platform.protected_columns IS 'Columns protected by platform.protect_column: key, subject column, mask, blind index, view. No key material.';
SELECT pg_catalog.pg_extension_config_dump('platform.protected_columns_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.protected_columns', '');
GRANT SELECT ON platform.protected_columns TO platform_admin, platform_developer, platform_auditor;

-- Encrypts a column in place, batch_size rows per transaction (a procedure, so each
-- batch commits: no long locks; an interrupted call resumes when called again). No SET
-- clause: a procedure with one cannot COMMIT.
CREATE PROCEDURE platform.protect_column(tbl regclass, col name, key_name text,
                                         subject_column name DEFAULT NULL,
                                         mask text DEFAULT 'redact',
                                         blind_index boolean DEFAULT false,
                                         view_name name DEFAULT NULL,
                                         batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $proc$
DECLARE
    registration integer;
    n bigint;
    total bigint := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: must be at least 1', batch_size USING ERRCODE = '22023';
    END IF;
    registration := platform.protect_column_prepare(tbl, col, key_name, subject_column, mask, blind_index, view_name);
    COMMIT;
    LOOP
        n := platform.protect_column_batch(registration, batch_size);
        total := total + n;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
    total := total + platform.protect_column_finish(registration);
    COMMIT;
    RAISE NOTICE 'platform.protect_column: % values of %.% encrypted; read and write them through %', total, tbl, col,
        (SELECT p.view_name FROM platform.protected_columns p WHERE p.id = registration);
END
$proc$;
REVOKE EXECUTE ON PROCEDURE platform.protect_column(regclass, name, text, name, text, boolean, name, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE platform.protect_column(regclass, name, text, name, text, boolean, name, integer) TO platform_admin;

-- A protected table dropped: its registrations go too.
CREATE FUNCTION platform.forget_dropped_protected_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM platform.protected_columns p
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND p.tbl::oid = d.objid;
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.forget_dropped_protected_tables() FROM PUBLIC;
CREATE EVENT TRIGGER platform_forget_dropped_protected_tables ON sql_drop
    EXECUTE FUNCTION platform.forget_dropped_protected_tables();
"#,
    name = "pii_protect",
    requires = [
        "pii_keys",
        protect_column_prepare,
        protect_column_batch,
        protect_column_finish
    ],
);
