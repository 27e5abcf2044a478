//! Per-relation decoding plan: for each column its PostgreSQL type, its Arrow type and how
//! a value is encoded; cached per relation and dropped by a relcache invalidation.

use pgrx::pg_sys;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::CStr;

/// How a column's values are written. Domains are resolved to their base type.
#[derive(Debug, Clone)]
pub enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// numeric(p,s) with p <= 38: Arrow decimal128(p,s); values as exact decimal strings.
    Decimal(i32, i32),
    /// numeric without a usable precision: exact decimal string (Arrow utf8).
    NumericText,
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    /// Written with the type's output function (json, jsonb, inet, cidr, enums, others).
    TextOutput {
        output_fn: pg_sys::Oid,
    },
    /// One-dimensional arrays: a list of the element kind.
    Array {
        elem_type: pg_sys::Oid,
        elem: Box<Kind>,
        len: i16,
        byval: bool,
        align: std::ffi::c_char,
    },
}

impl Kind {
    /// The Arrow data type a consumer should use, as written in relation messages.
    pub fn arrow(&self, type_oid: pg_sys::Oid) -> String {
        match self {
            Kind::Bool => "bool".into(),
            Kind::Int2 => "int16".into(),
            Kind::Int4 => "int32".into(),
            Kind::Int8 => "int64".into(),
            Kind::Float4 => "float32".into(),
            Kind::Float8 => "float64".into(),
            Kind::Decimal(p, s) => format!("decimal128({p},{s})"),
            Kind::NumericText => "utf8(decimal)".into(),
            Kind::Text => "utf8".into(),
            Kind::Bytea => "binary".into(),
            Kind::Date => "date32".into(),
            Kind::Time => "time64(us)".into(),
            Kind::Timestamp => "timestamp(us)".into(),
            Kind::TimestampTz => "timestamp(us,UTC)".into(),
            Kind::Interval => "interval(month_day_nano)".into(),
            Kind::Uuid => "fixed_size_binary(16,uuid)".into(),
            Kind::TextOutput { .. } => match type_oid {
                pg_sys::JSONOID | pg_sys::JSONBOID => "utf8(json)".into(),
                _ if unsafe { pg_sys::type_is_enum(type_oid) } => "dictionary(int32,utf8)".into(),
                _ => "utf8".into(),
            },
            Kind::Array {
                elem_type, elem, ..
            } => format!("list({})", elem.arrow(*elem_type)),
        }
    }
}

/// The bytes of a varlena datum (detoasted if compressed or out of line).
///
/// # Safety
/// `datum` is a valid varlena datum that is not an on-disk TOAST pointer of a value
/// that is gone (decoded tuples resolve changed TOAST values themselves).
pub unsafe fn varlena_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
    pgrx::varlena::varlena_to_byte_slice(v)
}

/// An array's dimensions and its elements (values, null flags) in row-major order.
///
/// # Safety
/// `datum` is a valid array datum whose element type matches `kind`.
pub unsafe fn array_parts<'a>(
    datum: pg_sys::Datum,
    kind: &Kind,
) -> (Vec<usize>, &'a [pg_sys::Datum], &'a [bool]) {
    let Kind::Array {
        elem_type,
        len,
        byval,
        align,
        ..
    } = kind
    else {
        return (Vec::new(), &[], &[]);
    };
    let arr = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let ndim = (*arr).ndim.max(0) as usize;
    if ndim == 0 {
        return (Vec::new(), &[], &[]);
    }
    // ARR_DIMS: the dimensions follow the fixed header.
    let dims_ptr = (arr as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
    let dims = (0..ndim)
        .map(|i| (*dims_ptr.add(i)).max(0) as usize)
        .collect();
    let (mut values, mut nulls, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
    pg_sys::deconstruct_array(
        arr,
        *elem_type,
        i32::from(*len),
        *byval,
        *align,
        &mut values,
        &mut nulls,
        &mut n,
    );
    let n = n.max(0) as usize;
    (
        dims,
        std::slice::from_raw_parts(values, n),
        std::slice::from_raw_parts(nulls, n),
    )
}

/// The kind for a type (and typmod), resolving domains to their base type.
///
/// # Safety
/// Must run in a backend with catalog access (syscache lookups).
pub unsafe fn kind_of(type_oid: pg_sys::Oid, typmod: i32) -> Kind {
    let mut typmod = typmod;
    let base = pg_sys::getBaseTypeAndTypmod(type_oid, &mut typmod);
    match base {
        pg_sys::BOOLOID => Kind::Bool,
        pg_sys::INT2OID => Kind::Int2,
        pg_sys::INT4OID => Kind::Int4,
        pg_sys::INT8OID => Kind::Int8,
        pg_sys::FLOAT4OID => Kind::Float4,
        pg_sys::FLOAT8OID => Kind::Float8,
        pg_sys::NUMERICOID => {
            // typmod = ((precision << 16) | scale) + VARHDRSZ; scale may be negative in PG15.
            if typmod >= 4 {
                let t = typmod - 4;
                let (p, s) = ((t >> 16) & 0xffff, ((t & 0x7ff) ^ 1024) - 1024);
                if (1..=38).contains(&p) && (0..=p).contains(&s) {
                    return Kind::Decimal(p, s);
                }
            }
            Kind::NumericText
        }
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => Kind::Text,
        pg_sys::NAMEOID => text_output(base),
        pg_sys::BYTEAOID => Kind::Bytea,
        pg_sys::DATEOID => Kind::Date,
        pg_sys::TIMEOID => Kind::Time,
        pg_sys::TIMESTAMPOID => Kind::Timestamp,
        pg_sys::TIMESTAMPTZOID => Kind::TimestampTz,
        pg_sys::INTERVALOID => Kind::Interval,
        pg_sys::UUIDOID => Kind::Uuid,
        _ => {
            let elem_type = pg_sys::get_element_type(base);
            if elem_type != pg_sys::InvalidOid {
                let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
                pg_sys::get_typlenbyvalalign(elem_type, &mut len, &mut byval, &mut align);
                Kind::Array {
                    elem_type,
                    elem: Box::new(kind_of(elem_type, -1)),
                    len,
                    byval,
                    align,
                }
            } else {
                text_output(base)
            }
        }
    }
}

unsafe fn text_output(type_oid: pg_sys::Oid) -> Kind {
    let (mut output_fn, mut varlena) = (pg_sys::InvalidOid, false);
    pg_sys::getTypeOutputInfo(type_oid, &mut output_fn, &mut varlena);
    Kind::TextOutput { output_fn }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Position in the heap tuple (0-based), dropped columns skipped in `columns`.
    pub index: usize,
    pub type_oid: pg_sys::Oid,
    pub type_name: String,
    pub kind: Kind,
    pub nullable: bool,
    pub key: bool,
    pub varlena: bool,
    /// `"name":` with the name JSON-escaped once, not per value.
    pub json_key: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RelInfo {
    pub schema: String,
    pub table: String,
    pub relid: pg_sys::Oid,
    pub replica_identity: &'static str,
    /// Shared with the audit's statements, which keep them while the cache may change.
    pub columns: std::rc::Rc<[Column]>,
    /// `schema.table`, each quoted as SQL needs.
    pub qualified: String,
    pub fingerprint: String,
    /// Whether this session has written the relation message of this shape.
    pub announced: bool,
    /// Set by a relcache invalidation: rebuild before the next use.
    pub stale: bool,
    /// Whether the options select this table.
    pub wanted: bool,
    /// `,"schema":...,"table":...` escaped once for the JSON change messages.
    pub json_names: Vec<u8>,
}

impl RelInfo {
    /// Builds the decoding plan of `rel`.
    ///
    /// # Safety
    /// `rel` is a valid, open relation of the decoding session.
    pub unsafe fn build(rel: pg_sys::Relation, wanted: impl Fn(&str, &str) -> bool) -> RelInfo {
        let form = (*rel).rd_rel;
        let schema = cstr(pg_sys::get_namespace_name((*form).relnamespace));
        let table = cstr((*form).relname.data.as_ptr());
        let td = (*rel).rd_att;
        let attrs = (*td).attrs.as_slice((*td).natts as usize);
        let identity = pg_sys::RelationGetIndexAttrBitmap(
            rel,
            pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_IDENTITY_KEY,
        );
        let replica_identity = match (*form).relreplident as u8 {
            pg_sys::REPLICA_IDENTITY_FULL => "full",
            pg_sys::REPLICA_IDENTITY_NOTHING => "nothing",
            pg_sys::REPLICA_IDENTITY_INDEX => "index",
            _ => "default",
        };
        let mut columns = Vec::new();
        for (index, a) in attrs.iter().enumerate() {
            if a.attisdropped || a.attnum <= 0 {
                continue;
            }
            let key = replica_identity == "full"
                || pg_sys::bms_is_member(
                    i32::from(a.attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber,
                    identity,
                );
            let name = cstr(a.attname.data.as_ptr());
            let mut json_key = Vec::new();
            super::json::string(&mut json_key, &name);
            json_key.push(b':');
            columns.push(Column {
                name,
                json_key,
                index,
                type_oid: a.atttypid,
                type_name: cstr(pg_sys::format_type_with_typemod(a.atttypid, a.atttypmod)),
                kind: kind_of(a.atttypid, a.atttypmod),
                nullable: !a.attnotnull,
                key,
                varlena: a.attlen == -1,
            });
        }
        let mut hash = Sha256::new();
        hash.update(format!("{schema}.{table}:{replica_identity}"));
        for c in &columns {
            hash.update(format!(
                "|{}:{}:{}:{}",
                c.name, c.type_name, c.nullable, c.key
            ));
        }
        let fingerprint = hash
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let wanted = wanted(&schema, &table);
        let mut json_names = b",\"schema\":".to_vec();
        super::json::string(&mut json_names, &schema);
        json_names.extend_from_slice(b",\"table\":");
        super::json::string(&mut json_names, &table);
        RelInfo {
            json_names,
            qualified: format!(
                "{}.{}",
                crate::sql::quote_ident(&schema),
                crate::sql::quote_ident(&table)
            ),
            schema,
            table,
            relid: (*rel).rd_id,
            replica_identity,
            columns: columns.into(),
            fingerprint,
            announced: false,
            stale: false,
            wanted,
        }
    }
}

/// A name from the catalog (in the database's encoding) as UTF-8.
unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        crate::sql::server_to_utf8_lossy(CStr::from_ptr(p).to_bytes()).into_owned()
    }
}

thread_local! {
    /// Relations whose cached plan is stale (InvalidOid: all of them). Filled by the relcache
    /// callback, drained before each use, so the callback never touches the cache itself.
    static INVALIDATED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    INVALIDATED.with(|v| v.borrow_mut().push(relid));
}

/// The decoding session's relation plans.
#[derive(Default)]
pub struct RelCache {
    map: HashMap<pg_sys::Oid, RelInfo>,
}

impl RelCache {
    pub fn new() -> RelCache {
        // Callbacks cannot be unregistered: register once per backend.
        CALLBACK_REGISTERED.with(|r| {
            if !r.get() {
                unsafe {
                    pg_sys::CacheRegisterRelcacheCallback(
                        Some(relcache_invalidated),
                        pg_sys::Datum::from(0),
                    )
                };
                r.set(true);
            }
        });
        RelCache::default()
    }

    /// The plan of `rel`, rebuilt when its relcache entry was invalidated; a rebuilt plan
    /// whose fingerprint did not change stays announced.
    ///
    /// # Safety
    /// `rel` is a valid, open relation of the decoding session.
    pub unsafe fn get(
        &mut self,
        rel: pg_sys::Relation,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> &mut RelInfo {
        let invalidated: Vec<pg_sys::Oid> =
            INVALIDATED.with(|v| std::mem::take(&mut *v.borrow_mut()));
        for oid in invalidated {
            if oid == pg_sys::InvalidOid {
                self.map.values_mut().for_each(|r| r.stale = true);
            } else if let Some(r) = self.map.get_mut(&oid) {
                r.stale = true;
            }
        }
        match self.map.entry((*rel).rd_id) {
            Entry::Occupied(mut e) => {
                if e.get().stale {
                    let mut info = RelInfo::build(rel, wanted);
                    // Same shape: the consumer already has this relation message.
                    info.announced = e.get().announced && e.get().fingerprint == info.fingerprint;
                    e.insert(info);
                }
                e.into_mut()
            }
            Entry::Vacant(v) => v.insert(RelInfo::build(rel, wanted)),
        }
    }
}
