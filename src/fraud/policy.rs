//! The fraud team's rules (`platform.fraud_rules`) and the trigger mode that scores every
//! payment a table receives.
//!
//! Rules are parsed when they are stored (a bad one is refused with its position), cached
//! per backend as parsed trees and dropped from every backend's cache at commit when the
//! table changes. Every score runs them: the verdict is block if a block rule fired, else
//! review, else allow if an allow rule fired, else the model's own verdict from its risk
//! level (highest: block, elevated: review, normal: allow).

use crate::error::{raise, OrRaise, SqlError};
use crate::fraud::features::FeatureVector;
use crate::fraud::rules::{self, Action, Rule, RuleInput, RuleSet};
use crate::fraud::scoring::{self, Outcome};
use crate::sql::{self, ServerJsonB, ServerText};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::rc::Rc;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown rule action \"{0}\"")]
    BadAction(String),
    #[error("fraud rule \"{0}\" does not exist")]
    UnknownRule(String),
    #[error("{0} is not a table")]
    NotTable(String),
    #[error("column \"{1}\" of {0} does not exist")]
    NoColumn(String, String),
    #[error("the mapping of {0} lacks \"{1}\"")]
    MissingKey(String, &'static str),
    #[error("unknown mapping key \"{0}\"")]
    UnknownKey(String),
    #[error("the mapping must be a JSON object of column names")]
    BadMapping,
    #[error("\"state_changes\" names {0}, which is not a table with transaction_id, transaction_occurred_at, from_status_id, to_status_id and reason")]
    BadStateChanges(String),
    #[error("the lookup of \"{0}\" must be {{\"query\": \"SELECT ... WHERE ... = $1\", \"arg\": \"<column>\"}}")]
    BadLookupShape(String),
    #[error("the lookup query of \"{0}\" does not prepare: {1}")]
    BadLookupQuery(String, String),
    #[error("the lookup query of \"{0}\" holds characters other than ASCII, which a {1} database cannot take in a prepared lookup")]
    NonAsciiLookup(String, String),
}

impl SqlError for PolicyError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::BadAction(_) | Self::MissingKey(..) | Self::UnknownKey(_) | Self::BadMapping => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::UnknownRule(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::NotTable(_) => ERRCODE_WRONG_OBJECT_TYPE,
            Self::NoColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            Self::BadStateChanges(_) => ERRCODE_UNDEFINED_TABLE,
            Self::BadLookupShape(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::BadLookupQuery(..) => ERRCODE_SYNTAX_ERROR,
            Self::NonAsciiLookup(..) => ERRCODE_FEATURE_NOT_SUPPORTED,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::BadAction(_) => Some("Use allow, review or block.".into()),
            Self::MissingKey(..) | Self::UnknownKey(_) | Self::BadMapping => Some(format!(
                "Map card, amount and occurred_at (and optionally {}) to columns of the table.",
                OPTIONAL_KEYS.join(", ")
            )),
            Self::BadStateChanges(_) => Some(
                "Name the reference schema's <schema>.transaction_state_change, or leave \"state_changes\" out.".into(),
            ),
            Self::BadLookupShape(_) | Self::BadLookupQuery(..) => Some(
                "A lookup reads one value of another table for the row's column \"arg\", passed as text: cast $1 (WHERE id = $1::bigint).".into(),
            ),
            Self::NonAsciiLookup(..) => Some(
                "Write such names and values as Unicode escapes (U&\"caf\\00E9\", U&'caf\\00E9'), which PostgreSQL converts to the database's encoding.".into(),
            ),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Cache {
    rules: Option<Rc<RuleSet>>,
    watched: pg_sys::Oid,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if relid == pg_sys::InvalidOid || relid == c.watched {
                c.rules = None;
            }
        }
    });
}

fn rules_table() -> pg_sys::Oid {
    sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.fraud_rules')::oid", &[])
        .unwrap_or(pg_sys::InvalidOid)
}

fn parse(name: &str, action: &str, priority: i32, condition: &str) -> Rule {
    let Some(act) = Action::from_name(action) else {
        raise(PolicyError::BadAction(action.into()))
    };
    Rule::parse(name, act, priority, condition, &rules::numeric_names(&[])).or_raise()
}

/// The enabled rules, parsed (cached until `platform.fraud_rules` changes).
fn rule_set() -> Rc<RuleSet> {
    if !CALLBACK.get() {
        let watched = rules_table();
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(0),
            )
        };
        CACHE.with_borrow_mut(|c| c.watched = watched);
        CALLBACK.set(true);
    }
    if let Some(r) = CACHE.with_borrow(|c| c.rules.clone()) {
        return r;
    }
    let rows: Vec<(ServerText, ServerText, i32, ServerText)> = sql::as_extension_owner(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT name, action, priority, condition FROM platform.fraud_rules WHERE enabled",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<ServerText>(1)?.unwrap_or_default(),
                    r.get::<ServerText>(2)?.unwrap_or_default(),
                    r.get::<i32>(3)?.unwrap_or(100),
                    r.get::<ServerText>(4)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .map_err(crate::error::SpiFailure::from)
        .or_raise()
    });
    let parsed = rows
        .iter()
        .map(|(n, a, p, c)| parse(n.as_str(), a.as_str(), *p, c.as_str()))
        .collect();
    let set = Rc::new(RuleSet::new(parsed).or_raise());
    CACHE.with_borrow_mut(|c| c.rules = Some(set.clone()));
    set
}

/// Runs the rules over a scored payment: sets its verdict, the rules that fired, and adds
/// each of them to the reasons.
pub fn apply(outcome: &mut Outcome, fv: &FeatureVector, category: &str, merchant: &str) {
    let set = rule_set();
    let input = RuleInput {
        score: outcome.score,
        risk_level: outcome.level,
        category,
        merchant,
        values: &fv.values,
    };
    let (verdict, fired) = set.verdict(&input, rules::model_action(outcome.level));
    outcome.verdict = verdict.name();
    for name in fired {
        if let Some(rule) = set.rules().iter().find(|r| r.name == name) {
            outcome
                .reasons
                .push(format!("rule {name} ({})", rule.action.name()));
        }
        outcome.rules.push(name.to_string());
    }
}

/// Stores (or replaces) a rule of the fraud team: `action` allow, review or block when
/// `condition` holds, e.g. `score >= 0.9 and count_1h > 5` or `category in ('gambling')`
/// (names: score, risk_level, category, merchant and the built-in features). The
/// condition is parsed now: a bad one is refused with its position. Every backend uses the
/// new rules from the commit on.
#[pg_extern(volatile)]
fn fraud_set_rule(
    // A name is written into results' reasons and rules as pgrx writes text: a name must be
    // ASCII outside a UTF-8 database. A condition may compare with any text.
    name: crate::sql::UnconvertedText,
    action: crate::sql::UnconvertedText,
    condition: ServerText,
    priority: default!(i32, 100),
    enabled: default!(bool, true),
) {
    let name = name.as_str();
    let action = action.as_str();
    parse(name, action, priority, condition.as_str());
    sql::as_extension_owner(|| {
        sql::modify(
            "INSERT INTO platform.fraud_rules (name, action, condition, priority, enabled) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET action = EXCLUDED.action, condition = EXCLUDED.condition,
                 priority = EXCLUDED.priority, enabled = EXCLUDED.enabled, updated_at = now(), updated_by = session_user",
            &[name.into(), action.into(), condition.into(), priority.into(), enabled.into()],
        )
    });
    invalidate();
}

/// Removes a rule. Returns whether it existed.
#[pg_extern(volatile)]
fn fraud_drop_rule(name: crate::sql::UnconvertedText) -> bool {
    let name = name.as_str();
    let n = sql::as_extension_owner(|| {
        sql::modify(
            "DELETE FROM platform.fraud_rules WHERE name = $1",
            &[name.into()],
        )
    });
    invalidate();
    n > 0
}

fn invalidate() {
    let oid = rules_table();
    if oid != pg_sys::InvalidOid {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
    }
}

const REQUIRED_KEYS: [&str; 3] = ["card", "amount", "occurred_at"];
const OPTIONAL_KEYS: [&str; 11] = [
    "merchant",
    "category",
    "lat",
    "lon",
    "attrs",
    "score",
    "risk_level",
    "reasons",
    "verdict",
    "status",
    "id",
];
/// Inputs that may be looked up in another table instead of read from a column.
const LOOKUP_KEYS: [&str; 5] = ["merchant", "category", "lat", "lon", "attrs"];
/// Values, not columns: the status a review verdict sets, and the table (shaped like the
/// reference schema's `transaction_state_change`) that records that change.
const VALUE_KEYS: [&str; 2] = ["review_status", "state_changes"];

thread_local! {
    /// Lookup queries of scoring triggers, planned once per backend.
    static LOOKUPS: RefCell<std::collections::HashMap<String, Rc<pgrx::spi::OwnedPreparedStatement>>> =
        RefCell::new(std::collections::HashMap::new());
}

/// The plan of a lookup `query` (one text parameter), read as the text of its first column.
fn lookup_plan(key: &str, query: &str) -> Result<Rc<pgrx::spi::OwnedPreparedStatement>, String> {
    if let Some(p) = LOOKUPS.with_borrow(|l| l.get(query).cloned()) {
        return Ok(p);
    }
    // pgrx hands PostgreSQL the statement's UTF-8 bytes as they are, which must be in the
    // database's encoding: outside UTF-8 only ASCII reads as written.
    if sql::converts(query.as_bytes()) {
        let encoding = unsafe { CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) };
        raise(PolicyError::NonAsciiLookup(
            key.into(),
            encoding.to_string_lossy().into_owned(),
        ));
    }
    let wrapped = format!(
        "SELECT q.x::text FROM ({}) AS q(x) LIMIT 1",
        query.trim().trim_end_matches(';')
    );
    let plan = sql::in_subtransaction(move || {
        Spi::connect(|c| {
            c.prepare(&wrapped, &[PgOid::BuiltIn(PgBuiltInOids::TEXTOID)])
                .map(|p| p.keep())
        })
    })?
    .map_err(|e| e.to_string())?;
    let plan = Rc::new(plan);
    LOOKUPS.with_borrow_mut(|l| l.insert(query.to_string(), plan.clone()));
    Ok(plan)
}

/// Runs the lookup of mapping key `key` for `arg`: its first column as text, None for no
/// row, NULL or no arg.
fn lookup(key: &str, query: &str, arg: Option<String>) -> Option<String> {
    let arg = arg?;
    let plan = lookup_plan(key, query)
        .unwrap_or_else(|e| raise(PolicyError::BadLookupQuery(key.into(), e)));
    Spi::connect(|c| {
        let t = c.select(&*plan, Some(1), &[ServerText(arg).into()])?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        Ok(t.first().get::<ServerText>(1)?.map(|t| t.0))
    })
    .map_err(crate::error::SpiFailure::from)
    .or_raise()
}

/// Checks a mapping against `table`: every key known, the required ones present, every
/// column there. `review_status` and `state_changes` are values, not columns.
fn check_mapping(table: pg_sys::Oid, label: &str, mapping: &serde_json::Value) {
    let serde_json::Value::Object(map) = mapping else {
        raise(PolicyError::BadMapping)
    };
    for key in REQUIRED_KEYS {
        if !map.contains_key(key) {
            raise(PolicyError::MissingKey(label.into(), key));
        }
    }
    if let Some(changes) = map.get("state_changes") {
        for key in ["status", "review_status", "id"] {
            if !map.contains_key(key) {
                raise(PolicyError::MissingKey(label.into(), key));
            }
        }
        let name = changes.as_str().unwrap_or_default();
        let shaped = sql::read::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_attribute
              WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0 AND NOT attisdropped
                AND attname IN ('transaction_id', 'transaction_occurred_at', 'from_status_id', 'to_status_id', 'reason')",
            &[ServerText(name.to_string()).into()],
        );
        if shaped != Some(5) {
            raise(PolicyError::BadStateChanges(format!("\"{name}\"")));
        }
    }
    for (key, value) in map {
        if VALUE_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !REQUIRED_KEYS.contains(&key.as_str()) && !OPTIONAL_KEYS.contains(&key.as_str()) {
            raise(PolicyError::UnknownKey(key.clone()));
        }
        let column = match value {
            serde_json::Value::String(c) => c.as_str(),
            serde_json::Value::Object(_) if LOOKUP_KEYS.contains(&key.as_str()) => {
                let (Some(query), Some(arg)) = (
                    value.get("query").and_then(|q| q.as_str()),
                    value.get("arg").and_then(|a| a.as_str()),
                ) else {
                    raise(PolicyError::BadLookupShape(key.clone()))
                };
                if let Err(e) = lookup_plan(key, query) {
                    raise(PolicyError::BadLookupQuery(key.clone(), e))
                }
                arg
            }
            serde_json::Value::Object(_) => raise(PolicyError::BadLookupShape(key.clone())),
            _ => raise(PolicyError::BadMapping),
        };
        let exists = sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[table.into(), ServerText(column.to_string()).into()],
        );
        if exists.is_none() {
            raise(PolicyError::NoColumn(label.into(), column.into()));
        }
    }
}

/// Scores every row inserted into `tbl` (INSERT, multi-row INSERT and COPY, in row order)
/// with `platform.fraud_score`, before it is stored. `mapping` names the columns: `card`,
/// `amount`, `occurred_at` (required), `merchant`, `category`, `lat`, `lon`, `attrs`
/// (optional inputs), `score`, `risk_level`, `reasons`, `verdict` (optional outputs), and
/// `status` with `review_status`, the value the status column gets on a review verdict. A
/// block verdict refuses the row with SQLSTATE 09000 and the reasons in the DETAIL.
#[pg_extern(volatile)]
fn score_payments(tbl: crate::sql::RegClass, mapping: ServerJsonB) -> crate::sql::RegClass {
    let found = sql::read::<ServerText>(
        "SELECT c.relkind::text || format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[tbl.into()],
    )
    .unwrap_or_default()
    .0;
    let (kind, name) = found.split_at(found.len().min(1));
    if kind != "r" && kind != "p" {
        raise(PolicyError::NotTable(format!(
            "relation {}",
            u32::from(tbl.0)
        )));
    }
    check_mapping(tbl.0, name, &mapping.0);
    let arg = pgrx::spi::quote_literal(mapping.0.to_string());
    sql::run(&format!(
        "DROP TRIGGER IF EXISTS platform_fraud_score ON {name};
         DROP TRIGGER IF EXISTS platform_fraud_review ON {name};
         CREATE TRIGGER platform_fraud_score BEFORE INSERT ON {name}
             FOR EACH ROW EXECUTE FUNCTION platform.fraud_score_trigger({arg})"
    ));
    // The state change is written after the row: its foreign key to the payment can only
    // be checked once the payment is stored. Only rows a review verdict held wake it.
    let text = |k: &str| mapping_text(&mapping.0, k);
    if let (Some(_), Some(status), Some(review)) =
        (text("state_changes"), text("status"), text("review_status"))
    {
        sql::run(&format!(
            "CREATE TRIGGER platform_fraud_review AFTER INSERT ON {name} FOR EACH ROW
                 WHEN (NEW.{} = {}) EXECUTE FUNCTION platform.fraud_review_trigger({arg})",
            pgrx::spi::quote_identifier(&status),
            pgrx::spi::quote_literal(&review),
        ));
    }
    tbl
}

/// Stops scoring rows inserted into `tbl`. Returns whether it was scored.
#[pg_extern(volatile)]
fn unscore_payments(tbl: crate::sql::RegClass) -> bool {
    let name = sql::read::<ServerText>("SELECT $1::regclass::text", &[tbl.into()])
        .unwrap_or_default()
        .0;
    let had = sql::read::<bool>(
        "SELECT true FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = 'platform_fraud_score'",
        &[tbl.into()],
    )
    .is_some();
    if had {
        sql::run(&format!(
            "DROP TRIGGER platform_fraud_score ON {name};
             DROP TRIGGER IF EXISTS platform_fraud_review ON {name}"
        ));
    }
    had
}

/// The index of the live column `name` (UTF-8) in `desc`, whose names are in the
/// database's encoding.
unsafe fn column_index(desc: pg_sys::TupleDesc, name: &str) -> Option<usize> {
    unsafe {
        let name = sql::utf8_in_server(name.as_bytes());
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        attrs.iter().position(|a| {
            !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == name
        })
    }
}

/// Column `name` of a trigger's tuple: its type and value, None for a missing column or
/// NULL.
unsafe fn column_datum(
    desc: pg_sys::TupleDesc,
    tuple: *mut pg_sys::HeapTupleData,
    name: &str,
) -> Option<(pg_sys::Oid, pg_sys::Datum)> {
    unsafe {
        let at = column_index(desc, name)?;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let mut isnull = false;
        let datum = pg_sys::heap_getattr(tuple, at as i32 + 1, desc, &mut isnull);
        (!isnull).then_some((attrs[at].atttypid, datum))
    }
}

/// The text of column `name` of a trigger's tuple, None for NULL.
unsafe fn column_text(
    desc: pg_sys::TupleDesc,
    tuple: *mut pg_sys::HeapTupleData,
    name: &str,
) -> Option<String> {
    unsafe {
        let (typid, datum) = column_datum(desc, tuple, name)?;
        datum_text(typid, datum)
    }
}

/// A value's text: text and varchar are their own (no output function, no copy of a C
/// string), other types their output function's.
unsafe fn datum_text(typid: pg_sys::Oid, datum: pg_sys::Datum) -> Option<String> {
    unsafe {
        if matches!(typid, pg_sys::TEXTOID | pg_sys::VARCHAROID) {
            let bytes: &[u8] = pgrx::FromDatum::from_datum(datum, false)?;
            return Some(sql::server_to_utf8(bytes));
        }
        let (mut out_fn, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(typid, &mut out_fn, &mut varlena);
        let p = pg_sys::OidOutputFunctionCall(out_fn, datum);
        Some(sql::server_to_utf8(CStr::from_ptr(p).to_bytes()))
    }
}

/// Column `name` of a trigger's tuple as a number, None for NULL or not a number: a
/// float8 or integer column read as it is stored (its text would depend on
/// `extra_float_digits` and cost an output call), any other type through its text.
unsafe fn column_f64(
    desc: pg_sys::TupleDesc,
    tuple: *mut pg_sys::HeapTupleData,
    name: &str,
) -> Option<f64> {
    unsafe {
        let (typid, datum) = column_datum(desc, tuple, name)?;
        match typid {
            pg_sys::FLOAT8OID => f64::from_datum(datum, false),
            pg_sys::INT8OID => i64::from_datum(datum, false).map(|v| v as f64),
            pg_sys::INT4OID => i32::from_datum(datum, false).map(f64::from),
            pg_sys::INT2OID => i16::from_datum(datum, false).map(f64::from),
            _ => datum_text(typid, datum)?.parse().ok(),
        }
    }
}

/// What the trigger writes into a column of the payment.
enum Written {
    Number(f64),
    Text(String),
}

/// A datum of column `attr`'s type: a float8 or text column gets the value as it is, any
/// other type through its input function (which applies a varchar's length and the like).
unsafe fn datum_for(
    attr: &pg_sys::FormData_pg_attribute,
    value: &Written,
) -> Option<pg_sys::Datum> {
    match (attr.atttypid, value) {
        (pg_sys::FLOAT8OID, Written::Number(v)) => v.into_datum(),
        (pg_sys::TEXTOID, Written::Text(t)) => Some(unsafe { sql::utf8_to_server(t) }),
        (_, Written::Number(v)) => unsafe { datum_from_text(attr, &v.to_string()) },
        (_, Written::Text(t)) => unsafe { datum_from_text(attr, t) },
    }
}

/// A datum of column `at`'s type from text (its type's input function, which takes the
/// database's encoding).
unsafe fn datum_from_text(
    attr: &pg_sys::FormData_pg_attribute,
    text: &str,
) -> Option<pg_sys::Datum> {
    let c = std::ffi::CString::new(unsafe { sql::utf8_in_server(text.as_bytes()) }).ok()?;
    unsafe {
        let (mut in_fn, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(attr.atttypid, &mut in_fn, &mut ioparam);
        Some(pg_sys::OidInputFunctionCall(
            in_fn,
            c.as_ptr() as *mut std::ffi::c_char,
            ioparam,
            attr.atttypmod,
        ))
    }
}

fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

fn refuse_block(outcome: &Outcome) -> ! {
    let report = pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION,
        format!(
            "payment blocked by fraud scoring (score {:.3}, {})",
            outcome.score, outcome.level
        ),
        "pg_platform",
    )
    .set_detail(crate::sql::message_text(outcome.reasons.join("; ")))
    .set_hint("Review the payment, or adjust platform.fraud_rules if the block is wrong.");
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

thread_local! {
    /// The last scoring trigger's mapping, parsed: a statement's rows share one, so the
    /// JSON is parsed once per statement (and table) instead of once per row.
    static MAPPING: RefCell<Option<(String, Rc<serde_json::Value>)>> = const { RefCell::new(None) };
}

/// The mapping `score_payments` gave a trigger (its first argument), parsed.
fn trigger_mapping(trigger: &pgrx::PgTrigger<'_>) -> Rc<serde_json::Value> {
    // Read as UTF-8 from the database's encoding, like the columns it names.
    let text = unsafe { sql::trigger_args(trigger.trigger_data().tg_trigger) }
        .into_iter()
        .next()
        .unwrap_or_default();
    if let Some(m) = MAPPING.with_borrow(|c| {
        c.as_ref()
            .filter(|(t, _)| *t == text)
            .map(|(_, m)| m.clone())
    }) {
        return m;
    }
    let parsed = Rc::new(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
    MAPPING.with_borrow_mut(|c| *c = Some((text, parsed.clone())));
    parsed
}

/// A mapping value as text: a column name, or a value such as `review_status` (a number
/// is its JSON text). None for a missing key or a lookup object.
fn mapping_text(mapping: &serde_json::Value, key: &str) -> Option<String> {
    match mapping.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(_) => None,
        v => Some(v.to_string()),
    }
}

/// The BEFORE INSERT trigger of `score_payments`.
#[pg_trigger]
fn fraud_score_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    let mapping = trigger_mapping(trigger);
    let key = |k: &str| mapping_text(&mapping, k);
    unsafe {
        let rel = td.tg_relation;
        let desc = (*rel).rd_att;
        let tuple = td.tg_trigtuple;
        let get = |k: &str| match mapping.get(k) {
            Some(serde_json::Value::Object(o)) => {
                let query = o.get("query").and_then(|q| q.as_str()).unwrap_or_default();
                let arg = o.get("arg").and_then(|a| a.as_str()).unwrap_or_default();
                lookup(k, query, column_text(desc, tuple, arg))
            }
            _ => key(k).and_then(|c| column_text(desc, tuple, &c)),
        };
        let card = get("card").unwrap_or_default();
        let number = |k: &str| match mapping.get(k) {
            Some(serde_json::Value::Object(_)) => get(k).and_then(|v| v.parse::<f64>().ok()),
            _ => key(k).and_then(|c| column_f64(desc, tuple, &c)),
        };
        let amount = number("amount");
        let at = key("occurred_at").and_then(|c| match column_datum(desc, tuple, &c)? {
            // timestamptz is stored as microseconds since 2000-01-01.
            (pg_sys::TIMESTAMPTZOID, d) => Some(d.value() as i64 + 946_684_800_000_000),
            _ => None,
        });
        let (Some(amount), Some(at), false) = (amount, at, card.is_empty()) else {
            raise(scoring::ScoreError::Null(
                "card, amount or occurred_at (a timestamptz)",
            ))
        };
        let merchant = get("merchant").unwrap_or_default();
        let category = get("category").unwrap_or_default();
        let lat = number("lat");
        let lon = number("lon");
        let attrs = get("attrs").and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let outcome = scoring::score_and_learn(
            &card,
            amount,
            at,
            &merchant,
            &category,
            lat,
            lon,
            attrs.as_ref(),
            key("reasons").is_some(),
        );
        if outcome.verdict == "block" {
            refuse_block(&outcome);
        }
        let mut changes: Vec<(String, Written)> = Vec::new();
        if let Some(c) = key("score") {
            changes.push((c, Written::Number(outcome.score)));
        }
        if let Some(c) = key("risk_level") {
            changes.push((c, Written::Text(outcome.level.to_string())));
        }
        if let Some(c) = key("reasons") {
            changes.push((c, Written::Text(array_literal(&outcome.reasons))));
        }
        if let Some(c) = key("verdict") {
            changes.push((c, Written::Text(outcome.verdict.to_string())));
        }
        if outcome.verdict == "review" {
            if let (Some(c), Some(v)) = (key("status"), key("review_status")) {
                let from = get("status");
                if mapping.get("state_changes").is_some() && from.as_deref() != Some(v.as_str()) {
                    hold_for_review(Held {
                        subxact: 0,
                        relid: (*rel).rd_id,
                        id: get("id").unwrap_or_default(),
                        occurred_at: get("occurred_at").unwrap_or_default(),
                        from: from.unwrap_or_default(),
                        reasons: outcome.reasons.join("; "),
                    });
                }
                changes.push((c, Written::Text(v)));
            }
        }
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        let mut cols: Vec<i32> = Vec::new();
        let mut values: Vec<pg_sys::Datum> = Vec::new();
        let mut nulls: Vec<bool> = Vec::new();
        for (column, text) in &changes {
            let Some(i) = column_index(desc, column) else {
                continue;
            };
            let Some(d) = datum_for(&attrs[i], text) else {
                continue;
            };
            cols.push(i as i32 + 1);
            values.push(d);
            nulls.push(false);
        }
        let modified = if cols.is_empty() {
            tuple
        } else {
            pg_sys::heap_modify_tuple_by_cols(
                tuple,
                desc,
                cols.len() as i32,
                cols.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            )
        };
        Ok(Some(PgHeapTuple::from_heap_tuple(
            pgrx::PgTupleDesc::from_pg_unchecked(desc),
            modified,
        )))
    }
}

/// A payment a review verdict held, waiting for its AFTER INSERT trigger to record the
/// status change once the row is stored.
struct Held {
    /// The subtransaction that held it: an abort of that one (or of an outer one) forgets it.
    subxact: pg_sys::SubTransactionId,
    relid: pg_sys::Oid,
    id: String,
    occurred_at: String,
    from: String,
    reasons: String,
}

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    static HELD_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn forget_held(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::XactEvent::XACT_EVENT_COMMIT
        || event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PREPARE
    {
        let _ = HELD.try_with(|h| h.try_borrow_mut().map(|mut h| h.clear()));
    }
}

unsafe extern "C-unwind" fn forget_held_sub(
    event: pg_sys::SubXactEvent::Type,
    sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Subtransaction ids grow: the aborted one and those inside it are >= `sub`.
        let _ = HELD.try_with(|h| {
            h.try_borrow_mut()
                .map(|mut h| h.retain(|x| x.subxact < sub))
        });
    }
}

fn hold_for_review(mut held: Held) {
    if !HELD_CALLBACK.get() {
        unsafe {
            pg_sys::RegisterXactCallback(Some(forget_held), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(forget_held_sub), std::ptr::null_mut());
        }
        HELD_CALLBACK.set(true);
    }
    held.subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    HELD.with_borrow_mut(|h| h.push(held));
}

/// The AFTER INSERT trigger of `score_payments` when the mapping names `state_changes`:
/// records the status change a review verdict made (from the status the row came with to
/// `review_status`, the reasons as the reason), in the inserting transaction. A row stored
/// with the review status by the application itself, not by a verdict, records nothing.
#[pg_trigger]
fn fraud_review_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    let mapping = trigger_mapping(trigger);
    let key = |k: &str| mapping_text(&mapping, k);
    let (Some(table), Some(to)) = (key("state_changes"), key("review_status")) else {
        return Ok(None::<PgHeapTuple<'_, AllocatedByRust>>);
    };
    let (relid, id, occurred_at) = unsafe {
        let desc = (*td.tg_relation).rd_att;
        let get = |k: &str| key(k).and_then(|c| column_text(desc, td.tg_trigtuple, &c));
        (
            (*td.tg_relation).rd_id,
            get("id").unwrap_or_default(),
            get("occurred_at").unwrap_or_default(),
        )
    };
    let held = HELD.with_borrow_mut(|h| {
        let at = h
            .iter()
            .rposition(|x| x.relid == relid && x.id == id && x.occurred_at == occurred_at)?;
        Some(h.remove(at))
    });
    if let Some(held) = held {
        let q = pgrx::spi::quote_literal;
        let reason = format!("fraud review: {}", held.reasons);
        sql::run(&format!(
            "INSERT INTO {} (transaction_id, transaction_occurred_at, from_status_id, to_status_id, reason)
             VALUES ({}, {}, {}, {}, {})",
            sql::read::<ServerText>("SELECT $1::regclass::text", &[ServerText(table.clone()).into()])
                .map_or(table, |t| t.0),
            q(&held.id),
            q(&held.occurred_at),
            q(&held.from),
            q(&to),
            q(&reason),
        ));
    }
    Ok(None)
}

pgrx::extension_sql!(
    r#"
CREATE TABLE platform.fraud_rules (
    name       text PRIMARY KEY CHECK (name <> ''),
    action     text NOT NULL CHECK (action IN ('allow', 'review', 'block')),
    condition  text NOT NULL,
    priority   integer NOT NULL DEFAULT 100,
    enabled    boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.fraud_rules IS 'The fraud team''s rules (platform.fraud_set_rule): allow, review or block when the condition holds.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_rules', '');
GRANT SELECT ON platform.fraud_rules TO platform_admin, platform_developer, platform_auditor, platform_readonly;
"#,
    name = "fraud_rules",
);
