//! Scoring a payment inside the transaction that writes it, and the replay of a payment
//! history that training, evaluation and profile rebuilds share.
//!
//! One path computes features everywhere: the card's profile before the payment, then
//! [`features::features`], then the model (or the built-in anomaly score), then the
//! profile folds the payment in. Live scoring keeps profiles in `platform.fraud_profile`
//! (one row per card, locked for the writing transaction: payments of one card are scored
//! one after the other, different cards never wait for each other, and a rolled-back
//! payment leaves its card's profile as it was); a replay keeps them in memory, in time
//! order, so a payment's features only ever use the payments before it.

use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use crate::fraud::features::{self, FeatureVector, BUILTIN_FEATURES};
use crate::fraud::profile::{Payment, Profile};
use crate::fraud::registry::{self as registry, Loaded, BUILTIN_THRESHOLDS};
use crate::fraud::FraudError;
use crate::sql::{self, ServerText};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Reasons returned with a score.
const TOP_REASONS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{0} must not be NULL")]
    Null(&'static str),
    #[error("amount {0} is negative")]
    NegativeAmount(f64),
    #[error("latitude {0} is outside -90..90")]
    Latitude(f64),
    #[error("longitude {0} is outside -180..180")]
    Longitude(f64),
    #[error("the source query has no column \"{0}\"")]
    MissingColumn(String),
    #[error("the source query returned no labelled payments")]
    NoLabels,
    #[error("invalid option {0}: {1}")]
    BadOption(String, String),
    #[error("the operating system gave no random bytes for the card key salt")]
    NoRandomness,
    #[error("platform.fraud_profile changed while this transaction held a card's profile")]
    ProfileChanged,
}

impl SqlError for ScoreError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::Null(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::NegativeAmount(_) | Self::Latitude(_) | Self::Longitude(_) => {
                ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
            }
            Self::MissingColumn(_) => ERRCODE_UNDEFINED_COLUMN,
            Self::NoLabels => ERRCODE_NO_DATA_FOUND,
            Self::BadOption(..) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NoRandomness => ERRCODE_SYSTEM_ERROR,
            Self::ProfileChanged => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::ProfileChanged => Some("Retry the transaction; platform.fraud_profile must keep the shape the extension gave it.".into()),
            Self::MissingColumn(_) => Some("The query must return card, amount, occurred_at, merchant and category (lat, lon and attrs are optional), plus the label column for training and evaluation.".into()),
            _ => None,
        }
    }
}

/// A score with its verdict and reasons.
pub struct Outcome {
    pub score: f64,
    pub level: &'static str,
    pub reasons: Vec<String>,
    pub model: String,
    pub version: Option<i32>,
    /// allow, review or block: the rules' verdict, else the model's (see `policy`).
    pub verdict: &'static str,
    pub rules: Vec<String>,
}

pub fn risk_level(score: f64, elevated: f64, highest: f64) -> &'static str {
    if score >= highest {
        "highest"
    } else if score >= elevated {
        "elevated"
    } else {
        "normal"
    }
}

/// Buffers reused by every score of a backend: scoring allocates nothing per tree.
#[derive(Default)]
struct Buffers {
    row: Vec<f64>,
    scratch: Vec<f64>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    static SALT: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Named extra attributes for the model's layout from the payment's `attrs`: numbers as
/// they are, booleans as 1/0, numeric strings parsed; anything else is missing (NaN).
pub fn extras_for<'a>(
    names: &'a [String],
    attrs: Option<&serde_json::Value>,
) -> Vec<(&'a str, f64)> {
    names
        .iter()
        .map(|n| {
            let v = attrs.and_then(|a| a.get(n.as_str()));
            let x = match v {
                Some(serde_json::Value::Number(x)) => x.as_f64().unwrap_or(f64::NAN),
                Some(serde_json::Value::Bool(b)) => f64::from(u8::from(*b)),
                Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(f64::NAN),
                _ => f64::NAN,
            };
            (n.as_str(), x)
        })
        .collect()
}

/// Scores `payment` against `profile` (the card's state before it) with `model`, or with
/// the built-in anomaly score when there is none. Without `explain`, a model's score comes
/// without its reasons (one walk of the trees that reads no contributions);
/// `explain_score` adds them when a verdict needs them.
pub fn score(
    profile: &Profile,
    payment: &Payment<'_>,
    attrs: Option<&serde_json::Value>,
    model: Option<&Loaded>,
    explain: bool,
) -> Result<(Outcome, FeatureVector), FraudError> {
    match model {
        None => {
            let fv = features::features(profile, payment, &[])?;
            let scored = features::anomaly_score(&fv);
            let (e, h) = BUILTIN_THRESHOLDS;
            Ok((
                Outcome {
                    score: scored.score,
                    level: risk_level(scored.score, e, h),
                    reasons: scored
                        .reasons
                        .into_iter()
                        .take(TOP_REASONS)
                        .map(|r| r.text)
                        .collect(),
                    model: "builtin".into(),
                    version: None,
                    verdict: "allow",
                    rules: Vec::new(),
                },
                fv,
            ))
        }
        Some(m) => {
            let extra = extras_for(&m.layout.extra_names, attrs);
            let fv = features::features(profile, payment, &extra)?;
            let n = m.scorer.features().len();
            let (score, reasons) = BUFFERS.with_borrow_mut(|b| {
                b.row.resize(n, 0.0);
                b.scratch.resize(n, 0.0);
                m.layout.fill(&fv, &mut b.row)?;
                if !explain {
                    return Ok::<_, FraudError>((m.scorer.predict(&b.row)?, Vec::new()));
                }
                let score = m.scorer.predict_and_contributions(&b.row, &mut b.scratch)?;
                Ok((score, in_words(m, &fv, &b.scratch)))
            })?;
            Ok((
                Outcome {
                    score,
                    level: risk_level(score, m.elevated, m.highest),
                    reasons,
                    model: m.name.clone(),
                    version: Some(m.version),
                    verdict: "allow",
                    rules: Vec::new(),
                },
                fv,
            ))
        }
    }
}

/// The model's reasons for a payment scored without them (`score(.., explain: false)`):
/// the same contributions from the same feature vector, so the same words as if they had
/// been asked for at once.
fn explain_score(model: &Loaded, fv: &FeatureVector) -> Result<Vec<String>, FraudError> {
    let n = model.scorer.features().len();
    BUFFERS.with_borrow_mut(|b| {
        b.row.resize(n, 0.0);
        b.scratch.resize(n, 0.0);
        model.layout.fill(fv, &mut b.row)?;
        model.scorer.contributions(&b.row, &mut b.scratch)?;
        Ok(in_words(model, fv, &b.scratch))
    })
}

/// The top reasons of a model's `contributions` to a score, in words.
fn in_words(model: &Loaded, fv: &FeatureVector, contributions: &[f64]) -> Vec<String> {
    features::reasons_from_contributions(&model.layout, fv, contributions, TOP_REASONS)
        .into_iter()
        .map(|r| r.text)
        .collect()
}

/// The per-database salt of card keys, made on first use (kept by pg_dump, so restored
/// profiles still match their cards).
fn salt() -> Vec<u8> {
    if let Some(s) = SALT.with_borrow(|s| s.clone()) {
        return s;
    }
    let read = || sql::read::<Vec<u8>>("SELECT salt FROM platform.fraud_secret", &[]);
    let found = sql::as_extension_owner(|| {
        read().or_else(|| {
            let mut fresh = [0u8; 32];
            if getrandom::fill(&mut fresh).is_err() {
                raise(ScoreError::NoRandomness);
            }
            sql::modify(
                "INSERT INTO platform.fraud_secret (salt) VALUES ($1) ON CONFLICT DO NOTHING",
                &[fresh.to_vec().into()],
            );
            read()
        })
    })
    .unwrap_or_default();
    SALT.with_borrow_mut(|s| *s = Some(found.clone()));
    found
}

/// A card's profile key: a salted SHA-256, so profiles never hold the card number.
pub fn card_key(card: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt());
    h.update(card.as_bytes());
    h.finalize().to_vec()
}

const SELECT_PROFILE: &str =
    "SELECT state FROM platform.fraud_profile WHERE card_key = $1 FOR UPDATE";
const INSERT_PROFILE: &str = "INSERT INTO platform.fraud_profile (card_key, state) VALUES ($1, '\\x') ON CONFLICT DO NOTHING RETURNING state";
const UPDATE_PROFILE: &str = "UPDATE platform.fraud_profile SET state = $2, payments = $3, updated_at = now() WHERE card_key = $1";
const BYTEA: PgOid = PgOid::BuiltIn(PgBuiltInOids::BYTEAOID);
const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
const PROFILE_STATEMENTS: [(&str, &[PgOid]); 3] = [
    (SELECT_PROFILE, &[BYTEA]),
    (INSERT_PROFILE, &[BYTEA]),
    (UPDATE_PROFILE, &[BYTEA, BYTEA, INT8]),
];

thread_local! {
    /// The profile statements, planned once per backend (planning them per payment cost
    /// more than scoring with 300 trees).
    static PLANS: RefCell<Vec<Rc<pgrx::spi::OwnedPreparedStatement>>> = const { RefCell::new(Vec::new()) };
}

/// Runs profile statement `which` with `args`; the first column of its first row.
fn profile_statement(which: usize, args: &[pgrx::datum::DatumWithOid]) -> Option<Vec<u8>> {
    Spi::connect_mut(|c| {
        let cached = PLANS.with_borrow(|p| p.get(which).cloned());
        let plan = match cached {
            Some(p) => p,
            None => {
                let mut kept = Vec::new();
                for (text, types) in PROFILE_STATEMENTS {
                    kept.push(Rc::new(c.prepare_mut(text, types)?.keep()));
                }
                PLANS.with_borrow_mut(|p| *p = kept.clone());
                match kept.get(which) {
                    Some(p) => p.clone(),
                    None => return Ok(None),
                }
            }
        };
        let table = c.update(&*plan, Some(1), args)?;
        // Only the statements with a result (SELECT, INSERT ... RETURNING) have a table.
        if which == 2 || table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<Vec<u8>>()
    })
    .map_err(crate::error::SpiFailure::from)
    .or_raise()
}

/// The card's profile, locked until the transaction ends (made empty if new).
fn lock_profile(key: &[u8]) -> Profile {
    let state = profile_statement(0, &[key.to_vec().into()]).or_else(|| {
        // A new card: two first payments at once both insert; one waits for the other.
        profile_statement(1, &[key.to_vec().into()])
            .or_else(|| profile_statement(0, &[key.to_vec().into()]))
    });
    match state {
        Some(b) if !b.is_empty() => Profile::from_bytes(&b).or_raise(),
        _ => Profile::new(0),
    }
}

fn save_profile(key: &[u8], profile: &Profile) {
    profile_statement(
        2,
        &[
            key.to_vec().into(),
            profile.to_bytes().into(),
            (profile.count as i64).into(),
        ],
    );
}

fn micros(t: TimestampWithTimeZone) -> i64 {
    pg_sys::TimestampTz::from(t) + PG_EPOCH_US
}

pub fn check_place(lat: Option<f64>, lon: Option<f64>) {
    if let Some(l) = lat {
        if !(-90.0..=90.0).contains(&l) {
            raise(ScoreError::Latitude(l));
        }
    }
    if let Some(l) = lon {
        if !(-180.0..=180.0).contains(&l) {
            raise(ScoreError::Longitude(l));
        }
    }
}

/// Scores one payment and folds it into its card's profile, in the calling transaction.
/// Without `explain`, the model's reasons are worked out only for a review or block
/// verdict (an allowed payment's reasons stay empty unless the caller asks for them).
#[allow(clippy::too_many_arguments)]
pub fn score_and_learn(
    card: &str,
    amount: f64,
    at: i64,
    merchant: &str,
    category: &str,
    lat: Option<f64>,
    lon: Option<f64>,
    attrs: Option<&serde_json::Value>,
    explain: bool,
) -> Outcome {
    let started = std::time::Instant::now();
    if amount < 0.0 || amount.is_nan() {
        raise(ScoreError::NegativeAmount(amount));
    }
    check_place(lat, lon);
    let (name, model) = scoring_model();
    let payment = Payment {
        at_micros: at,
        amount,
        merchant,
        category,
        lat,
        lon,
    };
    // As the extension's owner (the profile table is its own); the safe search_path, a
    // setting changed and restored at every payment (a few percent of a scoring
    // backend's CPU), only around the SQL some payments run: the profile statements of
    // the SQL path, the shadow's log, a rule set's loading (each sets it itself).
    sql::as_extension_owner_no_sql(|| {
        let key = card_key(card);
        // The row found and locked without SQL when it can be (see `profile_row`).
        let row = crate::fraud::profile_row::lock(&key);
        let mut profile = match &row {
            Some(r) if !r.state.is_empty() => Profile::from_bytes(&r.state).or_raise(),
            Some(_) => Profile::new(0),
            None => sql::with_safe_search_path(|| lock_profile(&key)),
        };
        let outcome = decide(
            &mut profile,
            &key,
            &payment,
            attrs,
            &name,
            model.as_deref(),
            started,
            explain,
        );
        match row {
            Some(r) => {
                crate::fraud::profile_row::save(r, &key, profile.to_bytes(), profile.count as i64)
            }
            None => sql::with_safe_search_path(|| save_profile(&key, &profile)),
        }
        outcome
    })
}

/// The champion of the model `platform.fraud_model` names (None: the built-in score), and
/// that name.
fn scoring_model() -> (String, Option<Rc<Loaded>>) {
    let name = crate::gucs::FRAUD_MODEL
        .get()
        .and_then(|c| c.to_str().ok().map(str::to_string))
        .unwrap_or_default();
    let model = if name.is_empty() {
        None
    } else {
        registry::champion(&name)
    };
    (name, model)
}

/// Scores `payment` against its card's `profile` (the state before it), scores it with the
/// shadow, runs the rules, folds the payment into the profile and counts the score: the
/// one path of live and batch scoring.
#[allow(clippy::too_many_arguments)]
fn decide(
    profile: &mut Profile,
    key: &[u8],
    payment: &Payment<'_>,
    attrs: Option<&serde_json::Value>,
    name: &str,
    model: Option<&Loaded>,
    started: std::time::Instant,
    explain: bool,
) -> Outcome {
    let (mut outcome, fv) = score(profile, payment, attrs, model, explain).or_raise();
    if !name.is_empty() {
        crate::fraud::monitor::shadow(name, &outcome, profile, payment, attrs, key);
    }
    crate::fraud::policy::apply(&mut outcome, &fv, payment.category, payment.merchant);
    // A review or block verdict states its reasons even when the caller asked for none.
    if let (false, Some(m), true) = (explain, model, outcome.verdict != "allow") {
        let mut reasons = explain_score(m, &fv).or_raise();
        reasons.append(&mut outcome.reasons);
        outcome.reasons = reasons;
    }
    profile.update(payment).or_raise();
    crate::fraud::stats::count(
        &outcome.model,
        outcome.version,
        outcome.level,
        outcome.verdict,
        started.elapsed().as_micros() as u64,
    );
    outcome
}

/// Scores a payment inside the calling transaction and folds it into the card's profile
/// (a rollback undoes both): `score` in 0..1, `risk_level` (normal, elevated, highest, by
/// the model's thresholds), the top `reasons` in words, and the model and version that
/// scored (`builtin` while `platform.fraud_model` has no champion). `attrs` carries
/// anything else the model uses, by its feature names. VOLATILE, not STABLE: it writes the
/// card's profile, and each call must see the payments scored before it.
#[pg_extern(volatile, requires = ["fraud_result_type"])]
#[allow(clippy::too_many_arguments)]
fn fraud_score(
    card: Option<ServerText>,
    amount: Option<AnyNumeric>,
    occurred_at: Option<TimestampWithTimeZone>,
    merchant: default!(Option<ServerText>, "NULL"),
    category: default!(Option<ServerText>, "NULL"),
    lat: default!(Option<f64>, "NULL"),
    lon: default!(Option<f64>, "NULL"),
    attrs: default!(Option<crate::sql::ServerJsonB>, "'{}'"),
) -> pgrx::composite_type!('static, "platform.fraud_result") {
    let Some(card) = card.filter(|c| !c.0.is_empty()) else {
        raise(ScoreError::Null("card"))
    };
    let Some(amount) = amount else {
        raise(ScoreError::Null("amount"))
    };
    let amount = f64::try_from(amount).unwrap_or(f64::NAN);
    let Some(at) = occurred_at else {
        raise(ScoreError::Null("occurred_at"))
    };
    let outcome = score_and_learn(
        card.as_str(),
        amount,
        micros(at),
        merchant.as_ref().map_or("", ServerText::as_str),
        category.as_ref().map_or("", ServerText::as_str),
        lat,
        lon,
        attrs.as_ref().map(|j| &j.0),
        true,
    );
    result_tuple(&outcome)
}

/// The columns of `platform.fraud_result`, in order, with their types.
const RESULT_COLUMNS: [(&str, pg_sys::Oid); 7] = [
    ("score", pg_sys::FLOAT8OID),
    ("risk_level", pg_sys::TEXTOID),
    ("reasons", pg_sys::TEXTARRAYOID),
    ("model", pg_sys::TEXTOID),
    ("model_version", pg_sys::INT4OID),
    ("verdict", pg_sys::TEXTOID),
    ("rules", pg_sys::TEXTARRAYOID),
];

/// The result row, formed once from its values. The type is found through the catalog
/// caches (naming it by text ran the SQL parser on every call, and setting columns one by
/// one rebuilt the row seven times: together a sixth of a scoring call) and checked
/// against the columns filled here, in case the type was altered.
fn result_tuple(o: &Outcome) -> PgHeapTuple<'static, AllocatedByRust> {
    let built = (|| {
        let typoid = unsafe {
            let ns = pg_sys::get_namespace_oid(c"platform".as_ptr(), false);
            pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::TYPENAMENSP as i32,
                pg_sys::Anum_pg_type_oid as pg_sys::AttrNumber,
                pg_sys::Datum::from(c"fraud_result".as_ptr()),
                pg_sys::Datum::from(ns),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
        let desc = pgrx::PgTupleDesc::for_composite_type_by_oid(typoid)
            .ok_or_else(|| ResultTypeError::Build("the type is missing".to_string()))?;
        let altered = || {
            let columns = RESULT_COLUMNS.map(|(n, _)| n).join(", ");
            ResultTypeError::Altered(columns)
        };
        let values = [
            o.score.into_datum(),
            o.level.to_string().into_datum(),
            o.reasons.clone().into_datum(),
            o.model.clone().into_datum(),
            o.version.into_datum(),
            o.verdict.to_string().into_datum(),
            o.rules.clone().into_datum(),
        ];
        // Dropped columns (an ALTER TYPE ... DROP ATTRIBUTE) keep their place as NULLs.
        let mut row = Vec::with_capacity(desc.len());
        let mut expected = RESULT_COLUMNS.iter().zip(values);
        for a in desc.iter() {
            if a.is_dropped() {
                row.push(None);
                continue;
            }
            match expected.next() {
                Some(((name, ty), v)) if a.name() == *name && a.type_oid().value() == *ty => {
                    row.push(v)
                }
                _ => return Err(altered()),
            }
        }
        if expected.next().is_some() {
            return Err(altered());
        }
        unsafe { PgHeapTuple::from_datums(desc, row) }
            .map_err(|e| ResultTypeError::Build(e.to_string()))
    })();
    match built {
        Ok(t) => t,
        Err(e) => raise(e),
    }
}

#[derive(Debug, thiserror::Error)]
enum ResultTypeError {
    #[error("pg_platform could not build platform.fraud_result: {0}")]
    Build(String),
    #[error("platform.fraud_result was altered: its columns are not ({0})")]
    Altered(String),
}

impl SqlError for ResultTypeError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            ResultTypeError::Build(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            ResultTypeError::Altered(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    fn hint(&self) -> Option<String> {
        matches!(self, ResultTypeError::Altered(_)).then(|| {
            "ALTER EXTENSION pg_platform UPDATE does not repair it: drop the attributes added to the type (ALTER TYPE platform.fraud_result DROP ATTRIBUTE ...), or drop and create the extension".to_string()
        })
    }
}

/// One payment of a history.
pub struct HistoryRow {
    pub card: String,
    pub amount: f64,
    pub at: i64,
    pub merchant: String,
    pub category: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub attrs: Option<serde_json::Value>,
    pub label: Option<bool>,
    /// The source's `id` column, when it has one.
    pub id: Option<i64>,
    /// Whether `occurred_at` was NULL (`at` is then 0).
    pub at_missing: bool,
}

impl HistoryRow {
    pub fn payment(&self) -> Payment<'_> {
        Payment {
            at_micros: self.at,
            amount: self.amount,
            merchant: &self.merchant,
            category: &self.category,
            lat: self.lat,
            lon: self.lon,
        }
    }
}

/// The columns of `query` (run with LIMIT 0).
fn columns(query: &str) -> Vec<String> {
    Spi::connect(|c| {
        let t = c.select(&format!("SELECT * FROM ({query}) q LIMIT 0"), None, &[])?;
        let mut out = Vec::new();
        for i in 1..=t.columns()? {
            out.push(t.column_name(i)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise()
}

/// The query that reads `query`'s payments in time order as [`HistoryRow`] columns;
/// `label`, when given, names the column read as the payment's label (true, 1, 'fraud'
/// and 'chargeback' are fraud).
fn history_sql(query: &str, label: Option<&str>) -> String {
    // The query is wrapped as a subquery: a trailing semicolon would end it.
    let query = query.trim().trim_end_matches(';').trim_end();
    let cols = columns(query);
    for required in ["card", "amount", "occurred_at", "merchant", "category"]
        .into_iter()
        .chain(label)
    {
        if !cols.iter().any(|c| c == required) {
            raise(ScoreError::MissingColumn(required.to_string()));
        }
    }
    let optional = |name: &str, cast: &str| {
        if cols.iter().any(|c| c == name) {
            format!("q.{}::{cast}", sql::quote_ident(name))
        } else {
            format!("NULL::{cast}")
        }
    };
    let label_sql = match label {
        Some(l) => format!(
            "CASE WHEN q.{l} IS NULL THEN NULL ELSE lower(q.{l}::text) IN ('t', 'true', '1', 'fraud', 'chargeback') END",
            l = sql::quote_ident(l)
        ),
        None => "NULL::boolean".into(),
    };
    format!(
        "SELECT q.card::text, q.amount::float8, (extract(epoch FROM q.occurred_at::timestamptz) * 1000000)::int8,
                coalesce(q.merchant::text, ''), coalesce(q.category::text, ''), {}, {}, {}, {label_sql}, {}
           FROM ({query}) q ORDER BY q.occurred_at",
        optional("lat", "float8"),
        optional("lon", "float8"),
        optional("attrs", "jsonb"),
        optional("id", "int8"),
    )
}

/// Reads `history_sql`'s rows 10 000 at a time, calling `each` with every row (a card,
/// amount or time that is NULL reads as "", NaN or 0 with `at_missing`).
fn read_history(wrapped: &str, mut each: impl FnMut(HistoryRow)) {
    let mut seen = 0u64;
    Spi::connect(|c| {
        let mut cursor = c.open_cursor(wrapped, &[]);
        loop {
            let batch = cursor.fetch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let at = r.get::<i64>(3)?;
                each(HistoryRow {
                    card: r.get::<ServerText>(1)?.unwrap_or_default().0,
                    amount: r.get::<f64>(2)?.unwrap_or(f64::NAN),
                    at: at.unwrap_or(0),
                    at_missing: at.is_none(),
                    merchant: r.get::<ServerText>(4)?.unwrap_or_default().0,
                    category: r.get::<ServerText>(5)?.unwrap_or_default().0,
                    lat: r.get::<f64>(6)?,
                    lon: r.get::<f64>(7)?,
                    attrs: r.get::<crate::sql::ServerJsonB>(8)?.map(|j| j.0),
                    label: r.get::<bool>(9)?,
                    id: r.get::<i64>(10)?,
                });
                seen += 1;
                if seen.is_multiple_of(1000) {
                    pgrx::check_for_interrupts!();
                }
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(SpiFailure::from)
    .or_raise();
}

/// Replays `query`'s payments in time order with in-memory profiles, calling `each` with
/// every payment and the card's profile before it. `label`, when given, names the column
/// read as the payment's label (true, 1, 'fraud' and 'chargeback' are fraud).
pub fn replay(
    query: &str,
    label: Option<&str>,
    mut each: impl FnMut(&HistoryRow, &Profile),
) -> HashMap<String, Profile> {
    let wrapped = history_sql(query, label);
    let mut profiles: HashMap<String, Profile> = HashMap::new();
    read_history(&wrapped, |row| {
        let payment = row.payment();
        // A payment the scorer would refuse (no card or time, negative amount, place out
        // of range) is skipped, as live scoring would have refused it.
        if row.card.is_empty() || row.at_missing || payment.check().is_err() {
            return;
        }
        let profile = profiles
            .entry(row.card.clone())
            .or_insert_with(|| Profile::new(0));
        each(&row, profile);
        let _ = profile.update(&payment);
    });
    profiles
}

/// Cards whose profiles a batch keeps in memory before writing them back (about 5 KB each).
const BATCH_CARDS: usize = 20_000;

/// Scores a batch of payments as `fraud_score` would one by one, in time order, in the
/// calling transaction: `source` returns card, amount, occurred_at, merchant, category and
/// optionally lat, lon, attrs and id (returned with each score; else the rank in time
/// order). Each card's profile is read and locked once, kept in memory while the batch
/// runs and written back once, so the scores, reasons, verdicts, statistics and profiles
/// are those of one `fraud_score` call per payment. A payment `fraud_score` would refuse
/// (NULL card, amount or time, negative amount, place out of range) fails the batch.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn fraud_score_batch(
    source: crate::sql::UnconvertedText,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(score, f64),
        name!(risk_level, String),
        name!(reasons, Vec<String>),
        name!(model, String),
        name!(model_version, Option<i32>),
        name!(verdict, String),
        name!(rules, Vec<String>),
    ),
> {
    let source = source.as_str();
    let wrapped = history_sql(source, None);
    let (name, model) = scoring_model();
    let mut profiles: HashMap<Vec<u8>, Profile> = HashMap::new();
    let mut out = Vec::new();
    read_history(&wrapped, |row| {
        let started = std::time::Instant::now();
        let rank = out.len() as i64 + 1;
        if row.card.is_empty() {
            raise(ScoreError::Null("card"));
        }
        if row.at_missing {
            raise(ScoreError::Null("occurred_at"));
        }
        if row.amount.is_nan() {
            raise(ScoreError::Null("amount"));
        }
        if row.amount < 0.0 {
            raise(ScoreError::NegativeAmount(row.amount));
        }
        check_place(row.lat, row.lon);
        let payment = row.payment();
        // Profiles are the extension owner's: key, load and score as it, the source query
        // (the cursor) having been checked as the caller.
        let o = sql::as_extension_owner(|| {
            let key = card_key(&row.card);
            if !profiles.contains_key(&key) {
                if profiles.len() >= BATCH_CARDS {
                    for (k, p) in profiles.drain() {
                        save_profile(&k, &p);
                    }
                }
                let loaded = lock_profile(&key);
                profiles.insert(key.clone(), loaded);
            }
            let profile = profiles
                .entry(key.clone())
                .or_insert_with(|| Profile::new(0));
            decide(
                profile,
                &key,
                &payment,
                row.attrs.as_ref(),
                &name,
                model.as_deref(),
                started,
                true,
            )
        });
        out.push((
            row.id.unwrap_or(rank),
            o.score,
            o.level.to_string(),
            o.reasons,
            o.model,
            o.version,
            o.verdict.to_string(),
            o.rules,
        ));
    });
    sql::as_extension_owner(|| {
        for (key, profile) in profiles.drain() {
            save_profile(&key, &profile);
        }
    });
    TableIterator::new(out)
}

/// Rebuilds the profiles of the cards a payment history names, from that history in time
/// order: `source` returns card, amount, occurred_at, merchant, category and optionally
/// lat, lon. Each named card's profile is replaced; other cards' profiles are left as they
/// are. Returns the number of cards.
#[pg_extern(volatile)]
fn fraud_rebuild_profiles(source: crate::sql::UnconvertedText) -> i64 {
    let source = source.as_str();
    let profiles = replay(source, None, |_, _| {});
    sql::as_extension_owner(|| {
        for (card, profile) in &profiles {
            sql::modify(
                "INSERT INTO platform.fraud_profile (card_key, state, payments) VALUES ($1, $2, $3)
                 ON CONFLICT (card_key) DO UPDATE SET state = EXCLUDED.state, payments = EXCLUDED.payments, updated_at = now()",
                &[
                    card_key(card).into(),
                    profile.to_bytes().into(),
                    (profile.count as i64).into(),
                ],
            );
        }
    });
    profiles.len() as i64
}

/// The feature names a replay gives each payment: the built-in ones, then `extra`.
pub fn all_features(extra: &[String]) -> Vec<String> {
    BUILTIN_FEATURES
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

pgrx::extension_sql!(
    r#"
CREATE TYPE platform.fraud_result AS (
    score         float8,
    risk_level    text,
    reasons       text[],
    model         text,
    model_version integer,
    verdict       text,
    rules         text[]
);
COMMENT ON TYPE platform.fraud_result IS 'What platform.fraud_score returns: score 0..1, risk level, reasons in words, the model and version that scored, the verdict (allow, review, block) and the rules that fired.';
-- Rewritten at every payment: half of each page is left free so that the new version
-- goes on the old one's page (a HOT update: no index entry, no page added). A profile
-- (at most 6 kB) stays in its row, never compressed or moved to the TOAST table: above
-- the default 2 kB target every read fetched its chunks and every payment rewrote them.
CREATE TABLE platform.fraud_profile (
    card_key   bytea PRIMARY KEY,
    state      bytea NOT NULL,
    payments   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50, toast_tuple_target = 8160);
COMMENT ON TABLE platform.fraud_profile IS 'Per-card behavioural profiles of fraud scoring, keyed by a salted SHA-256 of the card (never the card itself). Readable by the extension owner only.';
CREATE TABLE platform.fraud_secret (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    salt bytea NOT NULL
);
COMMENT ON TABLE platform.fraud_secret IS 'The salt of card keys in platform.fraud_profile, made on first use. Readable by the extension owner only.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_profile', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_secret', '');
"#,
    name = "fraud_result_type",
);
