//! Training and evaluation in SQL: both replay a payment history in time order through
//! the same feature code as live scoring, so the features a model learns from are the
//! features it is scored with.

use crate::error::{raise, OrRaise};
use crate::fraud::metrics;
use crate::fraud::registry::{self as registry, Loaded};
use crate::fraud::scoring::{self as scoring, replay, ScoreError};
use crate::fraud::train::{self, Scorer};
use pgrx::prelude::*;
use serde_json::{json, Value};

/// Options of `fraud_train` (jsonb), with their defaults.
struct Options {
    features: Vec<String>,
    validation_fraction: f64,
    thresholds: Option<(f64, f64)>,
    raw: Value,
}

fn bad(name: &str, why: &str) -> ! {
    raise(ScoreError::BadOption(name.to_string(), why.to_string()))
}

const KNOWN_OPTIONS: [&str; 10] = [
    "features",
    "validation_fraction",
    "threshold_elevated",
    "threshold_highest",
    "iterations",
    "learning_rate",
    "max_depth",
    "l2",
    "min_leaf_weight",
    "max_iterations",
];

fn options(raw: Value) -> Options {
    let Value::Object(map) = &raw else {
        bad("options", "must be a JSON object")
    };
    for key in map.keys() {
        if !KNOWN_OPTIONS.contains(&key.as_str()) {
            bad(
                key,
                &format!("unknown option; known: {}", KNOWN_OPTIONS.join(", ")),
            );
        }
    }
    let features = match map.get("features") {
        None => scoring::all_features(&[]),
        Some(Value::Array(a)) => {
            let names: Option<Vec<String>> =
                a.iter().map(|v| v.as_str().map(str::to_string)).collect();
            match names {
                // A model's feature names are stored as text[] the way pgrx writes text,
                // as UTF-8 bytes: in a LATIN1 database only ASCII reads back as written.
                Some(n) if n.iter().any(|f| crate::sql::converts(f.as_bytes())) => bad(
                    "features",
                    "names other than ASCII cannot be stored outside a UTF-8 database (name the attrs keys in ASCII)",
                ),
                Some(n) if !n.is_empty() => n,
                _ => bad("features", "must be a non-empty array of feature names"),
            }
        }
        Some(_) => bad("features", "must be an array of feature names"),
    };
    let number = |key: &str| {
        map.get(key)
            .map(|v| v.as_f64().unwrap_or_else(|| bad(key, "must be a number")))
    };
    let validation_fraction = number("validation_fraction").unwrap_or(0.2);
    if !(0.05..=0.5).contains(&validation_fraction) {
        bad("validation_fraction", "must be between 0.05 and 0.5");
    }
    let thresholds = match (number("threshold_elevated"), number("threshold_highest")) {
        (Some(e), Some(h)) => Some((e, h)),
        (None, None) => None,
        _ => bad(
            "threshold_elevated",
            "give both threshold_elevated and threshold_highest, or neither",
        ),
    };
    Options {
        features,
        validation_fraction,
        thresholds,
        raw,
    }
}

fn number(raw: &Value, key: &str) -> Option<f64> {
    raw.get(key)
        .map(|v| v.as_f64().unwrap_or_else(|| bad(key, "must be a number")))
}

fn count(raw: &Value, key: &str, range: std::ops::RangeInclusive<usize>) -> Option<usize> {
    number(raw, key).map(|v| {
        let n = v as usize;
        if v.fract() != 0.0 || !range.contains(&n) {
            bad(
                key,
                &format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
        n
    })
}

fn logistic_params(raw: &Value) -> train::LogisticParams {
    let mut p = train::LogisticParams::default();
    if let Some(l2) = number(raw, "l2") {
        if !(0.0..=1e6).contains(&l2) {
            bad("l2", "must be between 0 and 1000000");
        }
        p.l2 = l2;
    }
    if let Some(n) = count(raw, "max_iterations", 1..=10_000) {
        p.max_iterations = n;
    }
    p
}

fn gbdt_params(raw: &Value) -> crate::fraud::gbdt::GbdtParams {
    let mut p = crate::fraud::gbdt::GbdtParams::default();
    if let Some(n) = count(raw, "iterations", 1..=10_000) {
        p.iterations = n;
    }
    if let Some(n) = count(raw, "max_depth", 1..=16) {
        p.max_depth = n;
    }
    if let Some(v) = number(raw, "learning_rate") {
        p.learning_rate = v;
    }
    if let Some(v) = number(raw, "l2") {
        p.l2 = v;
    }
    if let Some(v) = number(raw, "min_leaf_weight") {
        p.min_leaf_weight = v;
    }
    p.validate().or_raise();
    p
}

/// Labelled feature rows of a history, in time order.
struct Dataset {
    rows: Vec<Vec<f64>>,
    labels: Vec<bool>,
    times: Vec<i64>,
}

fn dataset(source: &str, label: &str, layout: &crate::fraud::features::FeatureLayout) -> Dataset {
    let mut d = Dataset {
        rows: Vec::new(),
        labels: Vec::new(),
        times: Vec::new(),
    };
    let mut failure = None;
    replay(source, Some(label), |row, profile| {
        let Some(y) = row.label else { return };
        if failure.is_some() {
            return;
        }
        let extra = scoring::extras_for(&layout.extra_names, row.attrs.as_ref());
        let payment = row.payment();
        let fv = match crate::fraud::features::features(profile, &payment, &extra) {
            Ok(fv) => fv,
            Err(e) => {
                failure = Some(e);
                return;
            }
        };
        let mut x = vec![0.0; layout.names.len()];
        if let Err(e) = layout.fill(&fv, &mut x) {
            failure = Some(e);
            return;
        }
        d.rows.push(x);
        d.labels.push(y);
        d.times.push(row.at);
    });
    if let Some(e) = failure {
        crate::error::raise(e);
    }
    if d.rows.is_empty() {
        raise(ScoreError::NoLabels);
    }
    d
}

fn iso(us: i64) -> Value {
    chrono::DateTime::from_timestamp_micros(us)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

fn summary_json(s: &metrics::Summary) -> Value {
    json!({
        "payments": s.positives + s.negatives,
        "frauds": s.positives,
        "auc_pr": s.auc_pr,
        "auc_roc": s.auc_roc,
        "recall_at_0_1pct_fpr": s.recall_at_fpr_0_1pct,
        "recall_at_1pct_fpr": s.recall_at_fpr_1pct,
        "precision_at_80pct_recall": s.precision_at_recall_80pct,
    })
}

/// The score above which `share` of the legitimate payments lie (a false-positive rate).
fn threshold_at_fpr(pairs: &[(f64, bool)], share: f64) -> f64 {
    let mut negatives: Vec<f64> = pairs.iter().filter(|(_, y)| !y).map(|(s, _)| *s).collect();
    negatives.sort_by(f64::total_cmp);
    if negatives.is_empty() {
        return 1.0;
    }
    let at = ((negatives.len() as f64) * (1.0 - share)).floor() as usize;
    negatives
        .get(at.min(negatives.len() - 1))
        .copied()
        .unwrap_or(1.0)
        .clamp(0.0, 1.0)
}

/// Trains a model in the database on a payment history and stores it as a new version of
/// `name` (not deployed). `source` returns card, amount, occurred_at, merchant, category
/// (lat, lon, attrs optional) and the `label` column (true, 1, 'fraud' or 'chargeback' for
/// fraud); payments are replayed in time order, features computed as live scoring computes
/// them, and the last `validation_fraction` (default 0.2) of the labelled payments by time
/// is held out: the stored metrics are measured there. `kind` is 'gbdt' (gradient boosted
/// trees) or 'logistic'. Options (jsonb): features (default: every built-in feature; other
/// names are read from attrs), validation_fraction, threshold_elevated and
/// threshold_highest (default: the scores above which 1% and 0.1% of the held-out
/// legitimate payments lie), and for gbdt iterations, learning_rate, max_depth, l2,
/// min_leaf_weight, for logistic l2 and max_iterations. Returns the version.
#[pg_extern(volatile)]
fn fraud_train(
    name: crate::sql::UnconvertedText,
    source: crate::sql::UnconvertedText,
    label: crate::sql::UnconvertedText,
    kind: default!(crate::sql::UnconvertedText, "'gbdt'"),
    options: default!(crate::sql::ServerJsonB, "'{}'"),
) -> i32 {
    let name = name.as_str();
    let source = source.as_str();
    let label = label.as_str();
    let kind = kind.as_str();
    registry::check_name(name);
    if kind != "gbdt" && kind != "logistic" {
        bad("kind", "must be gbdt or logistic");
    }
    let opts = self::options(options.0);
    let layout = registry::layout_for(&opts.features).or_raise();
    let data = dataset(source, label, &layout);
    let n = data.rows.len();
    let n_train = ((n as f64) * (1.0 - opts.validation_fraction)).floor() as usize;
    if n_train == 0 || n_train >= n {
        raise(ScoreError::BadOption(
            "validation_fraction".into(),
            format!("leaves no training or no validation payments among {n}"),
        ));
    }
    let (train_rows, valid_rows) = data.rows.split_at(n_train);
    let (train_labels, valid_labels) = data.labels.split_at(n_train);
    let scorer = match kind {
        "logistic" => {
            let params = logistic_params(&opts.raw);
            Scorer::Logistic(
                train::train_logistic(train_rows, train_labels, &opts.features, params).or_raise(),
            )
        }
        _ => {
            let params = gbdt_params(&opts.raw);
            // Stops for a cancel (statement_timeout included) or a termination only.
            // InterruptPending is also set by interrupts that are no request to stop (the
            // idle statistics timeout firing a few seconds into a session's next
            // statement, a memory-context dump, a procsignal barrier another session
            // waits for): those are served here, between two rounds.
            let stop = || {
                if unsafe { pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 } {
                    return true;
                }
                pgrx::check_for_interrupts!();
                false
            };
            let trained = crate::fraud::gbdt::train_gbdt(
                train_rows,
                train_labels,
                &opts.features,
                params,
                &stop,
            );
            pgrx::check_for_interrupts!();
            Scorer::Gbdt(trained.or_raise())
        }
    };
    let mut pairs = Vec::with_capacity(valid_rows.len());
    for (x, y) in valid_rows.iter().zip(valid_labels) {
        pairs.push((scorer.predict(x).or_raise(), *y));
    }
    let scores: Vec<f64> = pairs.iter().map(|(s, _)| *s).collect();
    let reference = crate::fraud::monitor::reference(&scores, &opts.features, valid_rows);
    let summary = metrics::summary(&pairs).or_raise();
    let thresholds = opts.thresholds.unwrap_or_else(|| {
        let e = threshold_at_fpr(&pairs, 0.01);
        (e, threshold_at_fpr(&pairs, 0.001).max(e))
    });
    let at = |i: usize| data.times.get(i).copied().unwrap_or(0);
    let training = json!({
        "source": source,
        "label": label,
        "kind": kind,
        "options": opts.raw,
        "train_payments": n_train,
        "validation_payments": n - n_train,
        "train_from": iso(at(0)),
        "train_to": iso(at(n_train - 1)),
        "validation_from": iso(at(n_train)),
        "validation_to": iso(at(n - 1)),
    });
    registry::store(
        name,
        kind,
        &scorer,
        thresholds,
        Some(training),
        Some(summary_json(&summary)),
        Some(reference),
    )
}

/// Scores a labelled payment history with version `version` of model `name` (NULL: its
/// champion; name 'builtin': the built-in anomaly score), replayed in time order through
/// the live feature code, and measures it: AUC-PR, AUC-ROC, recall at 0.1% and 1%
/// false-positive rate, precision at 80% recall.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn fraud_evaluate(
    name: crate::sql::UnconvertedText,
    version: Option<i32>,
    source: crate::sql::UnconvertedText,
    label: crate::sql::UnconvertedText,
) -> TableIterator<
    'static,
    (
        name!(payments, i64),
        name!(frauds, i64),
        name!(auc_pr, f64),
        name!(auc_roc, f64),
        name!(recall_at_0_1pct_fpr, f64),
        name!(recall_at_1pct_fpr, f64),
        name!(precision_at_80pct_recall, f64),
    ),
> {
    let name = name.as_str();
    let source = source.as_str();
    let label = label.as_str();
    let model = model_for(name, version);
    let mut pairs = Vec::new();
    let mut failure = None;
    replay(source, Some(label), |row, profile| {
        let Some(y) = row.label else { return };
        if failure.is_some() {
            return;
        }
        let payment = row.payment();
        match scoring::score(profile, &payment, row.attrs.as_ref(), model.as_ref(), false) {
            Ok((o, _)) => pairs.push((o.score, y)),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        raise(e);
    }
    if pairs.is_empty() {
        raise(ScoreError::NoLabels);
    }
    let s = metrics::summary(&pairs).or_raise();
    TableIterator::once((
        (s.positives + s.negatives) as i64,
        s.positives as i64,
        s.auc_pr,
        s.auc_roc,
        s.recall_at_fpr_0_1pct,
        s.recall_at_fpr_1pct,
        s.precision_at_recall_80pct,
    ))
}

/// Replays a payment history in time order and returns every payment's score as live
/// scoring would have given it at the time (a backtest): with version `version` of model
/// `name` (NULL: its champion; 'builtin': the built-in anomaly score). Nothing is stored.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn fraud_backtest(
    name: crate::sql::UnconvertedText,
    version: Option<i32>,
    source: crate::sql::UnconvertedText,
) -> TableIterator<
    'static,
    (
        name!(card, crate::sql::ServerText),
        name!(occurred_at, TimestampWithTimeZone),
        name!(amount, f64),
        name!(score, f64),
        name!(risk_level, String),
        name!(reasons, Vec<String>),
    ),
> {
    let name = name.as_str();
    let source = source.as_str();
    let model = model_for(name, version);
    let mut out = Vec::new();
    let mut failure = None;
    replay(source, None, |row, profile| {
        if failure.is_some() {
            return;
        }
        match scoring::score(
            profile,
            &row.payment(),
            row.attrs.as_ref(),
            model.as_ref(),
            true,
        ) {
            Ok((o, _)) => out.push((row.card.clone(), row.at, row.amount, o)),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        raise(e);
    }
    TableIterator::new(out.into_iter().map(|(card, at, amount, o)| {
        (
            crate::sql::ServerText(card),
            timestamp(at),
            amount,
            o.score,
            o.level.to_string(),
            o.reasons,
        )
    }))
}

fn model_for(name: &str, version: Option<i32>) -> Option<Loaded> {
    if name == "builtin" {
        return None;
    }
    let v = version.or_else(|| registry::champion(name).map(|m| m.version));
    match v {
        Some(v) => Some(registry::load(name, v)),
        None => raise(registry::RegistryError::UnknownModel(name.into())),
    }
}

/// Every payment's built-in feature vector, computed point in time exactly as live scoring
/// computes it, in time order: what a data scientist exports to train elsewhere (and
/// imports back with `fraud_import_model`). `label` optionally names the label column.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn fraud_features(
    source: crate::sql::UnconvertedText,
    label: default!(Option<crate::sql::UnconvertedText>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(card, crate::sql::ServerText),
        name!(occurred_at, TimestampWithTimeZone),
        name!(names, Vec<String>),
        name!(features, Vec<f64>),
        name!(label, Option<bool>),
    ),
> {
    let source = source.as_str();
    let label = label.as_deref();
    let names: Vec<String> = scoring::all_features(&[]);
    let mut out = Vec::new();
    let mut failure = None;
    replay(source, label, |row, profile| {
        if failure.is_some() {
            return;
        }
        match crate::fraud::features::features(profile, &row.payment(), &[]) {
            Ok(fv) => out.push((row.card.clone(), row.at, fv.values.to_vec(), row.label)),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        raise(e);
    }
    TableIterator::new(out.into_iter().map(move |(card, at, values, label)| {
        (
            crate::sql::ServerText(card),
            timestamp(at),
            names.clone(),
            values,
            label,
        )
    }))
}

fn timestamp(unix_us: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unix_us - 946_684_800_000_000)
        .unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}
