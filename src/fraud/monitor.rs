//! Watching models in production: drift of the score and of every feature against the
//! reference histograms a trained version keeps, and the shadow model scored beside the
//! champion without acting.

use crate::error::{raise, OrRaise};
use crate::fraud::drift::{psi, Histogram, DEFAULT_BINS};
use crate::fraud::registry::{self, Loaded};
use crate::fraud::scoring::{self, replay, Outcome};
use crate::sql;
use pgrx::prelude::*;
use serde_json::{json, Value};

/// Reference histograms (quantile bins) of the score and of each feature, from the
/// held-out payments of a training run: `{"score": {...}, "features": {"amount": {...}}}`.
pub fn reference(scores: &[f64], names: &[String], rows: &[Vec<f64>]) -> Value {
    let mut features = serde_json::Map::new();
    for (j, name) in names.iter().enumerate() {
        let column: Vec<f64> = rows
            .iter()
            .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
            .collect();
        if let Ok(h) = Histogram::from_reference(&column, DEFAULT_BINS) {
            if let Ok(v) = serde_json::from_str::<Value>(&h.to_json()) {
                features.insert(name.clone(), v);
            }
        }
    }
    let score = Histogram::from_reference(scores, DEFAULT_BINS)
        .ok()
        .and_then(|h| serde_json::from_str::<Value>(&h.to_json()).ok())
        .unwrap_or(Value::Null);
    json!({"score": score, "features": Value::Object(features)})
}

fn histogram(v: &Value) -> Option<Histogram> {
    Histogram::from_json(&v.to_string()).ok()
}

/// Population stability index of the score and of each feature of version `version` of
/// model `name` (NULL: its champion) on the payments of `source` (replayed in time order,
/// as live scoring saw them) against the histograms kept when the version was trained.
/// Rule of thumb: below 0.1 stable, 0.1 to 0.25 moving, above 0.25 shifted.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn fraud_drift(
    name: crate::sql::UnconvertedText,
    version: Option<i32>,
    source: crate::sql::UnconvertedText,
) -> TableIterator<
    'static,
    (
        name!(feature, String),
        name!(psi, f64),
        name!(payments, i64),
        name!(status, String),
    ),
> {
    let name = name.as_str();
    let source = source.as_str();
    let v = version
        .or_else(|| registry::champion(name).map(|m| m.version))
        .unwrap_or_else(|| raise(registry::RegistryError::UnknownModel(name.into())));
    let model: Loaded = registry::load(name, v);
    let reference = sql::as_extension_owner(|| {
        sql::read::<pgrx::JsonB>(
            "SELECT reference FROM platform.fraud_model WHERE name = $1 AND version = $2",
            &[name.into(), v.into()],
        )
    })
    .map(|j| j.0)
    .unwrap_or(Value::Null);
    if reference.is_null() {
        raise(registry::RegistryError::NoReference(name.into(), v));
    }
    let names = model.scorer.features().to_vec();
    let mut scores = Vec::new();
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut row = vec![0.0; names.len()];
    let mut failure = None;
    replay(source, None, |r, profile| {
        if failure.is_some() {
            return;
        }
        let extra = scoring::extras_for(&model.layout.extra_names, r.attrs.as_ref());
        match crate::fraud::features::features(profile, &r.payment(), &extra)
            .and_then(|fv| model.layout.fill(&fv, &mut row))
            .and_then(|_| model.scorer.predict(&row))
        {
            Ok(s) => {
                scores.push(s);
                for (c, x) in columns.iter_mut().zip(&row) {
                    c.push(*x);
                }
            }
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        raise(e);
    }
    let n = scores.len() as i64;
    let status = |p: f64| {
        if p < 0.1 {
            "stable"
        } else if p < 0.25 {
            "moving"
        } else {
            "shifted"
        }
        .to_string()
    };
    let mut out = Vec::new();
    if let Some(h) = reference.get("score").and_then(histogram) {
        let p = psi(&h, &scores).or_raise();
        out.push(("score".to_string(), p, n, status(p)));
    }
    for (name, column) in names.iter().zip(&columns) {
        if let Some(h) = reference
            .get("features")
            .and_then(|f| f.get(name.as_str()))
            .and_then(histogram)
        {
            let p = psi(&h, column).or_raise();
            out.push((name.clone(), p, n, status(p)));
        }
    }
    TableIterator::new(out)
}

/// Scores a payment with the shadow version of the model too, and logs both scores (the
/// shadow never decides anything). Called before the payment joins its card's profile.
pub fn shadow(
    model_name: &str,
    champion: &Outcome,
    profile: &crate::fraud::profile::Profile,
    payment: &crate::fraud::profile::Payment<'_>,
    attrs: Option<&Value>,
    card_key: &[u8],
) {
    let Some(shadow) = registry::shadow(model_name) else {
        return;
    };
    let Ok((o, _)) = scoring::score(profile, payment, attrs, Some(&shadow), false) else {
        return;
    };
    sql::with_safe_search_path(|| {
        sql::modify(
        "INSERT INTO platform.fraud_shadow_log (model, champion_version, champion_score, shadow_version, shadow_score, card_key)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            model_name.into(),
            champion.version.into(),
            champion.score.into(),
            shadow.version.into(),
            o.score.into(),
            card_key.to_vec().into(),
        ],
    )
    });
}

pgrx::extension_sql!(
    r#"
CREATE TABLE platform.fraud_shadow_log (
    scored_at        timestamptz NOT NULL DEFAULT now(),
    model            text NOT NULL,
    champion_version integer,
    champion_score   float8 NOT NULL,
    shadow_version   integer NOT NULL,
    shadow_score     float8 NOT NULL,
    card_key         bytea NOT NULL
);
COMMENT ON TABLE platform.fraud_shadow_log IS 'Every payment scored while a model has a shadow version: the champion''s score (which decided) beside the shadow''s. Card keys as in platform.fraud_profile.';
CREATE INDEX ON platform.fraud_shadow_log (model, scored_at);
GRANT SELECT ON platform.fraud_shadow_log TO platform_admin, platform_developer, platform_auditor;
"#,
    name = "fraud_monitor",
);
