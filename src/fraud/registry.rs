//! The transactional model registry: versions in `platform.fraud_model`, the aliases
//! `champion`, `challenger` and `shadow` in `platform.fraud_alias` with their history, all
//! kept by pg_dump. A deploy is a row change: it becomes visible to every backend when it
//! commits (a relcache invalidation of the alias table drops each backend's cached model),
//! and a rolled-back deploy changes nothing. Parsed models stay cached per backend as flat
//! arrays.

use crate::error::{raise, OrRaise, SpiFailure, SqlError};
use crate::fraud::features::{FeatureLayout, BUILTIN_FEATURES};
use crate::fraud::train::Scorer;
use crate::fraud::FraudError;
use crate::sql;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Thresholds of the built-in anomaly score (no trained model): `elevated` from 0.5,
/// `highest` from 0.9.
pub const BUILTIN_THRESHOLDS: (f64, f64) = (0.5, 0.9);

pub const ALIASES: [&str; 3] = ["champion", "challenger", "shadow"];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid fraud model name \"{0}\": use 1 to 63 lower-case letters, digits and underscores, starting with a letter")]
    BadName(String),
    #[error("fraud model \"{0}\" does not exist")]
    UnknownModel(String),
    #[error("fraud model \"{0}\" has no version {1}")]
    UnknownVersion(String, i32),
    #[error("fraud model \"{0}\" version {1} is retired")]
    Retired(String, i32),
    #[error("fraud model \"{0}\" version {1} is the {2}")]
    InUse(String, i32, String),
    #[error("unknown model alias \"{0}\"")]
    BadAlias(String),
    #[error("fraud model \"{0}\" has no {1} to roll back to")]
    NoEarlier(String, String),
    #[error("unknown model format \"{0}\"")]
    BadFormat(String),
    #[error("a model needs a non-empty feature list")]
    NoFeatures,
    #[error("invalid thresholds: elevated {0} and highest {1} must satisfy 0 <= elevated <= highest <= 1")]
    BadThresholds(f64, f64),
    #[error("fraud model \"{0}\" version {1} has no reference histograms")]
    NoReference(String, i32),
}

impl SqlError for RegistryError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::BadName(_) => ERRCODE_INVALID_NAME,
            Self::UnknownModel(_) | Self::UnknownVersion(..) => ERRCODE_UNDEFINED_OBJECT,
            Self::Retired(..) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::InUse(..) => ERRCODE_OBJECT_IN_USE,
            Self::BadAlias(_) | Self::BadFormat(_) | Self::BadThresholds(..) => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::NoEarlier(..) => ERRCODE_NO_DATA_FOUND,
            Self::NoFeatures => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NoReference(..) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Self::UnknownModel(_) | Self::UnknownVersion(..) => Some(
                "SELECT name, version, kind, retired_at FROM platform.fraud_models lists them."
                    .into(),
            ),
            Self::InUse(name, _, alias) => Some(format!(
                "Deploy another version as {alias} first: SELECT platform.fraud_deploy('{name}', <version>, '{alias}');"
            )),
            Self::BadAlias(_) => Some("Use champion, challenger or shadow.".into()),
            Self::BadFormat(_) => Some("Use 'xgboost' (Booster.save_model(\"m.json\")) or 'lightgbm' (Booster.save_model(\"m.txt\")).".into()),
            Self::NoReference(..) => Some("Versions trained with platform.fraud_train keep them; an imported version has none.".into()),
            Self::Retired(name, _) => Some(format!(
                "Import or train a new version of {name}, or pick a version that is not retired."
            )),
            _ => None,
        }
    }
}

impl SqlError for FraudError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use FraudError::*;
        use PgSqlErrorCode::*;
        match self {
            Malformed(_)
            | MissingField(_)
            | ChildOutOfRange { .. }
            | Cycle { .. }
            | SharedNode { .. }
            | NanThreshold { .. }
            | InfiniteThreshold { .. }
            | NonFiniteValue { .. }
            | FeatureOutOfRange { .. }
            | BadParameter { .. }
            | NoTrees
            | EmptyTree { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            Unsupported(_) | CategoricalSplit { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            TooLarge { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            FeatureMismatch { .. } | WrongFeatureCount { .. } => ERRCODE_DATATYPE_MISMATCH,
            UnknownFeature(_) => ERRCODE_UNDEFINED_COLUMN,
            DuplicateFeature(_) => ERRCODE_DUPLICATE_COLUMN,
            UnknownProfileVersion(_) | CorruptProfile(_) => ERRCODE_DATA_CORRUPTED,
            InvalidPayment(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            OneClass { .. } | BadTrainingData(_) | NanScore { .. } => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            InvalidParameter { .. } | Training(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Interrupted { .. } => ERRCODE_QUERY_CANCELED,
            StoredFormat(_) => ERRCODE_DATA_CORRUPTED,
            RuleSyntax { .. } => ERRCODE_SYNTAX_ERROR,
            DuplicateRule(_) => ERRCODE_DUPLICATE_OBJECT,
        }
    }
    fn hint(&self) -> Option<String> {
        use FraudError::*;
        match self {
            UnknownFeature(_) => Some(format!(
                "Built-in features are {}; any other name is read from the payment's attrs.",
                BUILTIN_FEATURES.join(", ")
            )),
            OneClass { .. } => {
                Some("The source query must return both fraudulent and legitimate payments.".into())
            }
            _ => None,
        }
    }
}

/// A model version ready to score, cached per backend.
pub struct Loaded {
    pub name: String,
    pub version: i32,
    pub scorer: Scorer,
    pub layout: FeatureLayout,
    pub elevated: f64,
    pub highest: f64,
}

#[derive(Default)]
struct Cache {
    /// Model name → its champion (None: no champion, use the built-in score).
    champions: HashMap<String, Option<Rc<Loaded>>>,
    /// Model name → its shadow, if any.
    shadows: HashMap<String, Option<Rc<Loaded>>>,
    watched: Vec<pg_sys::Oid>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if relid == pg_sys::InvalidOid || c.watched.contains(&relid) {
                c.champions.clear();
                c.shadows.clear();
            }
        }
    });
}

fn watch() {
    if CALLBACK.get() {
        return;
    }
    let watched: Vec<pg_sys::Oid> = ["platform.fraud_alias", "platform.fraud_model"]
        .iter()
        .filter_map(|t| sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[(*t).into()]))
        .collect();
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        )
    };
    CACHE.with_borrow_mut(|c| c.watched = watched);
    CALLBACK.set(true);
}

/// Tells every backend, at commit, that the registry changed.
fn invalidate_everywhere() {
    if let Some(oid) =
        sql::read::<pg_sys::Oid>("SELECT to_regclass('platform.fraud_alias')::oid", &[])
    {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
    }
}

/// The layout of a model's features: built-in names from the profile, the others from
/// the payment's attrs.
pub fn layout_for(features: &[String]) -> Result<FeatureLayout, FraudError> {
    let extra: Vec<String> = features
        .iter()
        .filter(|f| !BUILTIN_FEATURES.contains(&f.as_str()))
        .cloned()
        .collect();
    FeatureLayout::new(features, &extra)
}

/// Loads one stored version (as the extension owner: the registry holds the model text).
pub fn load(name: &str, version: i32) -> Loaded {
    let row = sql::as_extension_owner(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT model, threshold_elevated, threshold_highest, retired_at IS NOT NULL
                   FROM platform.fraud_model WHERE name = $1 AND version = $2",
                Some(1),
                &[name.into(), version.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let r = t.first();
            Ok::<_, pgrx::spi::SpiError>(Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<f64>(2)?.unwrap_or(BUILTIN_THRESHOLDS.0),
                r.get::<f64>(3)?.unwrap_or(BUILTIN_THRESHOLDS.1),
                r.get::<bool>(4)?.unwrap_or(false),
            )))
        })
        .map_err(SpiFailure::from)
        .or_raise()
    });
    let Some((text, elevated, highest, _retired)) = row else {
        raise(RegistryError::UnknownVersion(name.into(), version))
    };
    let scorer = Scorer::from_stored(&text).or_raise();
    let layout = layout_for(scorer.features()).or_raise();
    Loaded {
        name: name.to_string(),
        version,
        scorer,
        layout,
        elevated,
        highest,
    }
}

/// The champion of `name`, cached per backend until the registry changes.
pub fn champion(name: &str) -> Option<Rc<Loaded>> {
    watch();
    if let Some(found) = CACHE.with_borrow(|c| c.champions.get(name).cloned()) {
        return found;
    }
    let version = sql::as_extension_owner(|| {
        sql::read::<i32>(
            "SELECT version FROM platform.fraud_alias WHERE name = $1 AND alias = 'champion'",
            &[name.into()],
        )
    });
    let loaded = version.map(|v| Rc::new(load(name, v)));
    CACHE.with_borrow_mut(|c| c.champions.insert(name.to_string(), loaded.clone()));
    loaded
}

/// The shadow version of `name`, if one is deployed (cached like the champion).
pub fn shadow(name: &str) -> Option<Rc<Loaded>> {
    watch();
    if let Some(found) = CACHE.with_borrow(|c| c.shadows.get(name).cloned()) {
        return found;
    }
    let version = sql::as_extension_owner(|| {
        sql::read::<i32>(
            "SELECT version FROM platform.fraud_alias WHERE name = $1 AND alias = 'shadow'",
            &[name.into()],
        )
    });
    let loaded = version.map(|v| Rc::new(load(name, v)));
    CACHE.with_borrow_mut(|c| c.shadows.insert(name.to_string(), loaded.clone()));
    loaded
}

pub fn check_name(name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        raise(RegistryError::BadName(name.to_string()));
    }
}

/// Stores a new version of `name` and returns its number (versions of one name are
/// numbered in commit order: concurrent stores of one name wait for each other).
pub fn store(
    name: &str,
    kind: &str,
    scorer: &Scorer,
    thresholds: (f64, f64),
    training: Option<serde_json::Value>,
    metrics: Option<serde_json::Value>,
    reference: Option<serde_json::Value>,
) -> i32 {
    check_name(name);
    let (elevated, highest) = thresholds;
    if !(0.0..=1.0).contains(&elevated) || !(elevated..=1.0).contains(&highest) {
        raise(RegistryError::BadThresholds(elevated, highest));
    }
    let text = scorer.to_stored();
    let features: Vec<String> = scorer.features().to_vec();
    sql::as_extension_owner(|| {
        sql::run(&format!(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext({}))",
            pgrx::spi::quote_literal(format!("pg_platform fraud model {name}"))
        ));
        let version = sql::read::<i32>(
            "SELECT coalesce(max(version), 0) + 1 FROM platform.fraud_model WHERE name = $1",
            &[name.into()],
        )
        .unwrap_or(1);
        sql::modify(
            "INSERT INTO platform.fraud_model (name, version, kind, features, model, threshold_elevated, threshold_highest, training, metrics, reference)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                name.into(),
                version.into(),
                kind.into(),
                features.into(),
                text.into(),
                elevated.into(),
                highest.into(),
                training.map(pgrx::JsonB).into(),
                metrics.map(pgrx::JsonB).into(),
                reference.map(pgrx::JsonB).into(),
            ],
        );
        version
    })
}

fn require_version(name: &str, version: i32) -> bool {
    let retired = sql::as_extension_owner(|| {
        sql::read::<bool>(
            "SELECT retired_at IS NOT NULL FROM platform.fraud_model WHERE name = $1 AND version = $2",
            &[name.into(), version.into()],
        )
    });
    match retired {
        Some(r) => r,
        None => {
            let any = sql::read::<bool>(
                "SELECT true FROM platform.fraud_model WHERE name = $1 LIMIT 1",
                &[name.into()],
            );
            if any.is_none() {
                raise(RegistryError::UnknownModel(name.into()));
            }
            raise(RegistryError::UnknownVersion(name.into(), version))
        }
    }
}

fn check_alias(alias: &str) {
    if !ALIASES.contains(&alias) {
        raise(RegistryError::BadAlias(alias.into()));
    }
}

fn set_alias(name: &str, alias: &str, version: Option<i32>) {
    sql::as_extension_owner(|| {
        match version {
            Some(v) => sql::modify(
                "INSERT INTO platform.fraud_alias (name, alias, version) VALUES ($1, $2, $3)
                 ON CONFLICT (name, alias) DO UPDATE SET version = EXCLUDED.version, set_at = now(), set_by = session_user",
                &[name.into(), alias.into(), v.into()],
            ),
            None => sql::modify(
                "DELETE FROM platform.fraud_alias WHERE name = $1 AND alias = $2",
                &[name.into(), alias.into()],
            ),
        };
        sql::modify(
            "INSERT INTO platform.fraud_alias_history (name, alias, version) VALUES ($1, $2, $3)",
            &[name.into(), alias.into(), version.into()],
        );
    });
    invalidate_everywhere();
}

/// Imports a model exported from Python: `format` 'xgboost' (the JSON of
/// `Booster.save_model("m.json")`, objective binary:logistic) or 'lightgbm' (the text of
/// `Booster.save_model("m.txt")`, objective binary), with the names of its input features
/// in order (built-in feature names, or names read from the payment's attrs). Scores equal
/// the library's own predictions. Categorical splits, multiclass, linear trees and dart
/// are refused. Returns the new version (not deployed: see `fraud_deploy`).
#[pg_extern(volatile)]
fn fraud_import_model(
    name: crate::sql::UnconvertedText,
    format: crate::sql::UnconvertedText,
    model: crate::sql::UnconvertedText,
    features: Vec<crate::sql::UnconvertedText>,
    threshold_elevated: default!(f64, 0.5),
    threshold_highest: default!(f64, 0.9),
) -> i32 {
    let name = name.as_str();
    let format = format.as_str();
    let model = model.as_str();
    let features: Vec<String> = features.into_iter().map(|t| t.0).collect();
    check_name(name);
    if features.is_empty() {
        raise(RegistryError::NoFeatures);
    }
    let (fmt, kind) = match format.to_ascii_lowercase().as_str() {
        "xgboost" | "xgboost_json" => (crate::fraud::import::ModelFormat::XgboostJson, "xgboost"),
        "lightgbm" | "lightgbm_text" => {
            (crate::fraud::import::ModelFormat::LightGbmText, "lightgbm")
        }
        _ => raise(RegistryError::BadFormat(format.into())),
    };
    let imported = crate::fraud::import::import(fmt, model, &features).or_raise();
    let scorer = Scorer::Trees(imported);
    layout_for(scorer.features()).or_raise();
    store(
        name,
        kind,
        &scorer,
        (threshold_elevated, threshold_highest),
        Some(serde_json::json!({"imported": format})),
        None,
        None,
    )
}

/// Points `alias` (champion, challenger or shadow) of model `name` at `version`. Every
/// backend scores with it from the commit on; a rollback changes nothing.
#[pg_extern(volatile)]
fn fraud_deploy(
    name: crate::sql::UnconvertedText,
    version: i32,
    alias: default!(crate::sql::UnconvertedText, "'champion'"),
) {
    let name = name.as_str();
    let alias = alias.as_str();
    check_alias(alias);
    if require_version(name, version) {
        raise(RegistryError::Retired(name.into(), version));
    }
    set_alias(name, alias, Some(version));
}

/// Points `alias` back at the version it had before the last change. Returns that version.
#[pg_extern(volatile)]
fn fraud_rollback(
    name: crate::sql::UnconvertedText,
    alias: default!(crate::sql::UnconvertedText, "'champion'"),
) -> i32 {
    let name = name.as_str();
    let alias = alias.as_str();
    check_alias(alias);
    let previous = sql::as_extension_owner(|| {
        sql::read::<i32>(
            "SELECT h.version FROM platform.fraud_alias_history h
              JOIN platform.fraud_model m ON m.name = h.name AND m.version = h.version AND m.retired_at IS NULL
             WHERE h.name = $1 AND h.alias = $2
               AND h.id < (SELECT max(id) FROM platform.fraud_alias_history WHERE name = $1 AND alias = $2)
               AND h.version IS DISTINCT FROM (SELECT version FROM platform.fraud_alias WHERE name = $1 AND alias = $2)
             ORDER BY h.id DESC LIMIT 1",
            &[name.into(), alias.into()],
        )
    });
    let Some(v) = previous else {
        raise(RegistryError::NoEarlier(name.into(), alias.into()))
    };
    set_alias(name, alias, Some(v));
    v
}

/// Removes `alias` of model `name` (without a champion, scoring falls back to the
/// built-in anomaly score). Returns whether it was set.
#[pg_extern(volatile)]
fn fraud_undeploy(
    name: crate::sql::UnconvertedText,
    alias: default!(crate::sql::UnconvertedText, "'champion'"),
) -> bool {
    let name = name.as_str();
    let alias = alias.as_str();
    check_alias(alias);
    let had = sql::as_extension_owner(|| {
        sql::read::<bool>(
            "SELECT true FROM platform.fraud_alias WHERE name = $1 AND alias = $2",
            &[name.into(), alias.into()],
        )
    })
    .is_some();
    if had {
        set_alias(name, alias, None);
    }
    had
}

/// Retires a version: it can no longer be deployed (its row and metrics stay). A version
/// an alias points at is refused.
#[pg_extern(volatile)]
fn fraud_retire(name: crate::sql::UnconvertedText, version: i32) {
    let name = name.as_str();
    if require_version(name, version) {
        return;
    }
    let alias = sql::as_extension_owner(|| {
        sql::read::<String>(
            "SELECT alias FROM platform.fraud_alias WHERE name = $1 AND version = $2 LIMIT 1",
            &[name.into(), version.into()],
        )
    });
    if let Some(alias) = alias {
        raise(RegistryError::InUse(name.into(), version, alias));
    }
    sql::as_extension_owner(|| {
        sql::modify(
            "UPDATE platform.fraud_model SET retired_at = now(), retired_by = session_user WHERE name = $1 AND version = $2",
            &[name.into(), version.into()],
        )
    });
    invalidate_everywhere();
}

pgrx::extension_sql!(
    r#"
CREATE TABLE platform.fraud_model (
    name               text NOT NULL,
    version            integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('xgboost', 'lightgbm', 'logistic', 'gbdt')),
    features           text[] NOT NULL,
    model              text NOT NULL,
    threshold_elevated float8 NOT NULL,
    threshold_highest  float8 NOT NULL,
    training           jsonb,
    metrics            jsonb,
    reference          jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL DEFAULT session_user,
    retired_at         timestamptz,
    retired_by         text,
    PRIMARY KEY (name, version),
    CHECK (0 <= threshold_elevated AND threshold_elevated <= threshold_highest AND threshold_highest <= 1)
);
COMMENT ON TABLE platform.fraud_model IS 'pg_platform fraud model registry: every version of every model (stored form in model), with its thresholds, training and metrics.';
CREATE TABLE platform.fraud_alias (
    name    text NOT NULL,
    alias   text NOT NULL CHECK (alias IN ('champion', 'challenger', 'shadow')),
    version integer NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL DEFAULT session_user,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES platform.fraud_model (name, version)
);
COMMENT ON TABLE platform.fraud_alias IS 'Which version of a fraud model is its champion, challenger or shadow (platform.fraud_deploy).';
CREATE SEQUENCE platform.fraud_alias_history_id_seq AS bigint;
CREATE TABLE platform.fraud_alias_history (
    id      bigint NOT NULL DEFAULT nextval('platform.fraud_alias_history_id_seq') PRIMARY KEY,
    name    text NOT NULL,
    alias   text NOT NULL,
    version integer,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.fraud_alias_history IS 'Every change of a fraud model alias (version NULL: alias removed).';
CREATE TABLE platform.fraud_label (
    payment_ref text PRIMARY KEY,
    label       text NOT NULL CHECK (label IN ('fraud', 'chargeback', 'legitimate')),
    reported_at timestamptz NOT NULL DEFAULT now(),
    reported_by text NOT NULL DEFAULT session_user,
    note        text
);
COMMENT ON TABLE platform.fraud_label IS 'Confirmed fraud, chargebacks and cleared payments, by the application''s payment reference: what evaluation and retraining queries join.';
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_model', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias_history', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_alias_history_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.fraud_label', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON platform.fraud_label TO platform_admin, platform_developer;
GRANT SELECT ON platform.fraud_label TO platform_auditor, platform_readonly;
GRANT SELECT ON platform.fraud_alias, platform.fraud_alias_history TO platform_admin, platform_developer, platform_auditor, platform_readonly;

CREATE VIEW platform.fraud_models AS
SELECT m.name, m.version, m.kind, m.features, m.threshold_elevated, m.threshold_highest,
       m.metrics, m.training, m.created_at, m.created_by, m.retired_at,
       coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM platform.fraud_alias a
                  WHERE a.name = m.name AND a.version = m.version), '{}') AS aliases
  FROM platform.fraud_model m;
COMMENT ON VIEW platform.fraud_models IS 'Fraud model versions with their aliases and metrics (without the model text).';
GRANT SELECT ON platform.fraud_models TO platform_admin, platform_developer, platform_auditor, platform_readonly;
"#,
    name = "fraud_registry",
);
