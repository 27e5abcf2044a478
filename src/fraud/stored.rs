//! The stored model format: how every model version is kept as text in the registry and
//! re-loaded in each backend.
//!
//! One JSON object, versioned so that a later release can still read what an earlier one
//! wrote (a reader refuses versions it does not know rather than guess):
//!
//! ```text
//! {"format": "pg_platform-model", "version": 1,
//!  "kind": "trees" | "logistic",
//!  "features": ["amount", ...],                 // input order, no duplicates
//!  "link": "logistic",                          // p = 1 / (1 + exp(-sigmoid · margin))
//!  // kind "trees":
//!  "semantics": "xgboost" | "lightgbm" | "forust",
//!  "base_margin": -0.619, "sigmoid": 1.0,
//!  "trees": {"roots": [0, 15, ...],            // first node of each tree
//!            "feature": [2, -1, ...],          // -1 = leaf
//!            "threshold": [...], "left": [...], "right": [...],   // global node indexes
//!            "default_left": [1, 0, ...],      // where missing values go
//!            "missing": [2, ...],              // 0 none, 1 zero, 2 NaN (LightGBM's types)
//!            "value": [...]}                   // leaf value / split expected value
//!  // kind "logistic":
//!  "intercept": 0.1, "weights": [...], "mean": [...], "scale": [...], "iterations": 12}
//! ```
//!
//! Numbers are written with Rust's shortest round-trip formatting and read back with
//! correctly rounded parsing, so every `f64` (and every `f32` widened to `f64`) survives
//! bit for bit: a re-loaded model scores and explains exactly like the original. The
//! semantics names the library whose arithmetic the scorer reproduces; XGBoost and
//! LightGBM imports keep theirs, so they too can be stored in this form. Loading applies
//! the importers' checks (through [`Ensemble::new`]) and their 64 MiB limit.

use super::ensemble::{Ensemble, FlatTrees, Missing, Semantics};
use super::error::{FraudError, Result};
use super::gbdt::GbdtModel;
use super::import::{check_duplicates, check_size, Model, ModelFormat};
use super::json::{self, Json};
use super::train::{LogisticModel, Scorer};
use std::fmt::Write;

/// The value of the `format` key.
pub const STORED_FORMAT: &str = "pg_platform-model";
/// The newest version this code writes and the only one it reads.
pub const STORED_VERSION: i64 = 1;

impl Scorer {
    /// The model as stored-format JSON (see the module documentation).
    pub fn to_stored(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"format\":\"");
        out.push_str(STORED_FORMAT);
        let _ = write!(out, "\",\"version\":{STORED_VERSION},\"kind\":");
        match self {
            Scorer::Trees(Model {
                features, ensemble, ..
            })
            | Scorer::Gbdt(GbdtModel { features, ensemble }) => {
                out.push_str("\"trees\",\"features\":");
                write_strings(&mut out, features);
                write_trees(&mut out, ensemble);
            }
            Scorer::Logistic(m) => {
                out.push_str("\"logistic\",\"features\":");
                write_strings(&mut out, &m.features);
                out.push_str(",\"link\":\"logistic\",\"intercept\":");
                write_f64(&mut out, m.intercept);
                for (key, v) in [
                    ("weights", &m.weights),
                    ("mean", &m.mean),
                    ("scale", &m.scale),
                ] {
                    let _ = write!(out, ",\"{key}\":");
                    write_list(&mut out, v.iter(), |o, &x| write_f64(o, x));
                }
                let _ = write!(out, ",\"iterations\":{}", m.iterations);
            }
        }
        out.push('}');
        out
    }

    /// Parses and validates stored-format text. XGBoost and LightGBM semantics come back
    /// as [`Scorer::Trees`], forust as [`Scorer::Gbdt`].
    pub fn from_stored(text: &str) -> Result<Scorer> {
        check_size(text)?;
        let root = json::parse(text)?;
        if root.get("format").and_then(Json::as_str) != Some(STORED_FORMAT) {
            return Err(FraudError::StoredFormat(format!(
                "\"format\" is not \"{STORED_FORMAT}\""
            )));
        }
        let version = need(&root, "version")?
            .as_i64()
            .ok_or_else(|| FraudError::StoredFormat("\"version\" is not an integer".into()))?;
        if version != STORED_VERSION {
            return Err(FraudError::StoredFormat(format!(
                "version {version} is not supported (this code reads version {STORED_VERSION})"
            )));
        }
        let features = strings(need(&root, "features")?)?;
        check_duplicates(&features)?;
        let link = need(&root, "link")?.as_str().unwrap_or_default();
        if link != "logistic" {
            return Err(FraudError::Unsupported(format!("link \"{link}\"")));
        }
        match need(&root, "kind")?.as_str().unwrap_or_default() {
            "trees" => read_trees(&root, features),
            "logistic" => read_logistic(&root, features).map(Scorer::Logistic),
            other => Err(FraudError::Unsupported(format!("model kind \"{other}\""))),
        }
    }
}

fn write_trees(out: &mut String, e: &Ensemble) {
    let f = e.to_flat();
    let _ = write!(
        out,
        ",\"link\":\"logistic\",\"semantics\":\"{}\",\"base_margin\":",
        e.semantics().name()
    );
    write_f64(out, e.base_margin());
    out.push_str(",\"sigmoid\":");
    write_f64(out, e.sigmoid());
    out.push_str(",\"trees\":{\"roots\":");
    let int = |o: &mut String, &x: &i64| {
        let _ = write!(o, "{x}");
    };
    write_list(out, f.roots.iter(), int);
    out.push_str(",\"feature\":");
    write_list(out, f.feature.iter(), int);
    out.push_str(",\"threshold\":");
    write_list(out, f.threshold.iter(), |o, &x| write_f64(o, x));
    out.push_str(",\"left\":");
    write_list(out, f.left.iter(), int);
    out.push_str(",\"right\":");
    write_list(out, f.right.iter(), int);
    out.push_str(",\"default_left\":");
    write_list(out, f.default_left.iter(), |o, &b| {
        o.push(if b { '1' } else { '0' })
    });
    out.push_str(",\"missing\":");
    write_list(out, f.missing.iter(), |o, m| {
        o.push(match m {
            Missing::None => '0',
            Missing::Zero => '1',
            Missing::Nan => '2',
        })
    });
    out.push_str(",\"value\":");
    write_list(out, f.value.iter(), |o, &x| write_f64(o, x));
    out.push('}');
}

fn read_trees(root: &Json<'_>, features: Vec<String>) -> Result<Scorer> {
    let name = need(root, "semantics")?.as_str().unwrap_or_default();
    let semantics = Semantics::from_name(name)
        .ok_or_else(|| FraudError::Unsupported(format!("semantics \"{name}\"")))?;
    let base_margin = number(root, "base_margin")?;
    let sigmoid = number(root, "sigmoid")?;
    let t = need(root, "trees")?;
    let ints = |key: &str| -> Result<Vec<i64>> { list(t, key, |v| v.as_i64()) };
    let flat = FlatTrees {
        roots: ints("roots")?,
        feature: ints("feature")?,
        threshold: list(t, "threshold", |v| v.as_f64())?,
        left: ints("left")?,
        right: ints("right")?,
        default_left: list(t, "default_left", |v| match v.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        })?,
        missing: list(t, "missing", |v| match v.as_i64() {
            Some(0) => Some(Missing::None),
            Some(1) => Some(Missing::Zero),
            Some(2) => Some(Missing::Nan),
            _ => None,
        })?,
        value: list(t, "value", |v| v.as_f64())?,
    };
    let ensemble = Ensemble::from_flat(semantics, features.len(), base_margin, sigmoid, &flat)?;
    Ok(match semantics {
        Semantics::Xgboost => Scorer::Trees(Model {
            format: ModelFormat::XgboostJson,
            features,
            ensemble,
        }),
        Semantics::LightGbm => Scorer::Trees(Model {
            format: ModelFormat::LightGbmText,
            features,
            ensemble,
        }),
        Semantics::Forust => Scorer::Gbdt(GbdtModel { features, ensemble }),
    })
}

fn read_logistic(root: &Json<'_>, features: Vec<String>) -> Result<LogisticModel> {
    let d = features.len();
    let intercept = number(root, "intercept")?;
    let weights = list(root, "weights", |v| v.as_f64())?;
    let mean = list(root, "mean", |v| v.as_f64())?;
    let scale = list(root, "scale", |v| v.as_f64())?;
    for (key, v) in [("weights", &weights), ("mean", &mean), ("scale", &scale)] {
        if v.len() != d {
            return Err(FraudError::Malformed(format!(
                "\"{key}\" has {} values for {d} features",
                v.len()
            )));
        }
    }
    let bad = |name: String, value: f64| FraudError::BadParameter {
        name,
        value: value.to_string(),
    };
    if !intercept.is_finite() {
        return Err(bad("intercept".into(), intercept));
    }
    for j in 0..d {
        let f = &features[j];
        if !weights[j].is_finite() {
            return Err(bad(format!("weight of {f}"), weights[j]));
        }
        if !mean[j].is_finite() {
            return Err(bad(format!("mean of {f}"), mean[j]));
        }
        // A zero or negative scale would divide by zero or flip the feature.
        if !(scale[j].is_finite() && scale[j] > 0.0) {
            return Err(bad(format!("scale of {f}"), scale[j]));
        }
    }
    let iterations = need(root, "iterations")?
        .as_i64()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| FraudError::Malformed("\"iterations\" is not a count".into()))?;
    Ok(LogisticModel {
        features,
        mean,
        scale,
        weights,
        intercept,
        iterations,
    })
}

fn need<'a, 'b>(v: &'b Json<'a>, key: &str) -> Result<&'b Json<'a>> {
    v.get(key)
        .ok_or_else(|| FraudError::MissingField(key.to_string()))
}

fn number(v: &Json<'_>, key: &str) -> Result<f64> {
    need(v, key)?
        .as_f64()
        .ok_or_else(|| FraudError::Malformed(format!("\"{key}\" is not a number")))
}

fn list<T>(v: &Json<'_>, key: &str, item: impl Fn(&Json<'_>) -> Option<T>) -> Result<Vec<T>> {
    let arr = need(v, key)?
        .as_array()
        .ok_or_else(|| FraudError::Malformed(format!("\"{key}\" is not an array")))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            item(x).ok_or_else(|| FraudError::Malformed(format!("\"{key}\"[{i}] is not valid")))
        })
        .collect()
}

fn strings(v: &Json<'_>) -> Result<Vec<String>> {
    v.as_array()
        .ok_or_else(|| FraudError::Malformed("\"features\" is not an array".into()))?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| FraudError::Malformed("\"features\" are not all strings".into()))
}

/// `Debug` of `f64` is the shortest text that parses back to the same bits, with an
/// exponent for very large or small values; non-finite values never reach here (the
/// models validate them away), but are written as `null` so the text stays JSON.
fn write_f64(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{x:?}");
    } else {
        out.push_str("null");
    }
}

fn write_list<'a, T: 'a>(
    out: &mut String,
    items: impl Iterator<Item = &'a T>,
    mut each: impl FnMut(&mut String, &T),
) {
    out.push('[');
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, x);
    }
    out.push(']');
}

fn write_strings(out: &mut String, items: &[String]) {
    write_list(out, items.iter(), |o, s| write_json_string(o, s));
}

pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::gbdt::{train_gbdt, GbdtParams};
    use crate::fraud::import::{import_lightgbm_text, import_xgboost_json, MAX_MODEL_BYTES};
    use crate::fraud::train::{train_logistic, LogisticParams};

    const XGB: &str = include_str!("testdata/xgb.json");
    const LGB: &str = include_str!("testdata/lgb.txt");
    const LGB_ZERO: &str = include_str!("testdata/lgb_zero.txt");
    const ROWS: &str = include_str!("testdata/rows.csv");

    fn names() -> Vec<String> {
        [
            "amount",
            "log_amount",
            "count_1h",
            "count_24h",
            "distance_prev_km",
            "hour_of_day",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The six feature columns of the fixture rows, plus rows with NaN and zeros.
    fn inputs() -> Vec<Vec<f64>> {
        let mut rows: Vec<Vec<f64>> = ROWS
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .take(6)
                    .map(|v| v.parse::<f64>().unwrap())
                    .collect()
            })
            .collect();
        rows.push(vec![f64::NAN; 6]);
        rows.push(vec![0.0; 6]);
        rows.push(vec![1e-36, f64::NAN, 0.0, 3.0, f64::NAN, 23.0]);
        rows
    }

    /// Stores, reloads and checks every score and contribution is bit-identical.
    fn round_trip(s: &Scorer) -> Scorer {
        let text = s.to_stored();
        let back = Scorer::from_stored(&text).unwrap();
        assert_eq!(&back, s);
        assert_eq!(back.to_stored(), text);
        assert_eq!(back.kind(), s.kind());
        let d = s.features().len();
        let (mut a, mut b) = (vec![0.0; d], vec![0.0; d]);
        for x in inputs().iter().map(|r| &r[..d]) {
            assert_eq!(
                s.predict(x).unwrap().to_bits(),
                back.predict(x).unwrap().to_bits()
            );
            let ba = s.contributions(x, &mut a).unwrap();
            let bb = back.contributions(x, &mut b).unwrap();
            assert_eq!(ba.to_bits(), bb.to_bits());
            assert_eq!(a, b);
        }
        back
    }

    #[test]
    fn imported_models_round_trip() {
        let f = names();
        round_trip(&Scorer::Trees(import_xgboost_json(XGB, &f).unwrap()));
        round_trip(&Scorer::Trees(import_lightgbm_text(LGB, &f).unwrap()));
        round_trip(&Scorer::Trees(import_lightgbm_text(LGB_ZERO, &f).unwrap()));
    }

    #[test]
    fn stored_xgboost_still_matches_the_library() {
        let m = import_xgboost_json(XGB, &names()).unwrap();
        let back = Scorer::from_stored(&Scorer::Trees(m).to_stored()).unwrap();
        let mut lines = ROWS.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let p = header.iter().position(|h| *h == "xgb_prob").unwrap();
        for l in lines {
            let r: Vec<f64> = l.split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(back.predict(&r[..6]).unwrap(), r[p]);
        }
    }

    #[test]
    fn trained_models_round_trip() {
        let rows: Vec<Vec<f64>> = inputs().into_iter().take(200).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r[2] >= 2.0 || r[4] > 500.0).collect();
        let f = names();
        let lr = train_logistic(&rows, &labels, &f, LogisticParams::default()).unwrap();
        round_trip(&Scorer::Logistic(lr));
        let p = GbdtParams {
            iterations: 10,
            ..Default::default()
        };
        let g = train_gbdt(&rows, &labels, &f, p, &|| false).unwrap();
        assert!(matches!(round_trip(&Scorer::Gbdt(g)), Scorer::Gbdt(_)));
    }

    #[test]
    fn feature_names_are_escaped() {
        let m = LogisticModel {
            features: vec!["a\"b\\c\n".into(), "é".into()],
            mean: vec![0.0, 1.5],
            scale: vec![1.0, 2.0],
            weights: vec![0.1, -1e-300],
            intercept: 1e300,
            iterations: 3,
        };
        let text = Scorer::Logistic(m.clone()).to_stored();
        assert_eq!(Scorer::from_stored(&text).unwrap(), Scorer::Logistic(m));
    }

    fn xgb_text() -> String {
        Scorer::Trees(import_xgboost_json(XGB, &names()).unwrap()).to_stored()
    }

    fn err(text: &str) -> FraudError {
        Scorer::from_stored(text).unwrap_err()
    }

    #[test]
    fn envelope_is_checked() {
        let t = xgb_text();
        assert!(matches!(
            err(&t.replacen("\"version\":1", "\"version\":2", 1)),
            FraudError::StoredFormat(s) if s.contains("version 2")
        ));
        assert!(matches!(
            err(&t.replacen("pg_platform-model", "other", 1)),
            FraudError::StoredFormat(_)
        ));
        assert!(matches!(
            err(&t.replacen("\"kind\":\"trees\"", "\"kind\":\"forest\"", 1)),
            FraudError::Unsupported(s) if s.contains("forest")
        ));
        assert!(matches!(
            err(&t.replacen("\"semantics\":\"xgboost\"", "\"semantics\":\"catboost\"", 1)),
            FraudError::Unsupported(s) if s.contains("catboost")
        ));
        assert!(matches!(
            err(&t.replacen("\"link\":\"logistic\"", "\"link\":\"probit\"", 1)),
            FraudError::Unsupported(_)
        ));
        assert!(matches!(err(&t[..t.len() / 2]), FraudError::Malformed(_)));
        assert!(matches!(
            err(&t.replacen(
                "\"features\":[\"amount\",\"log_amount\"",
                "\"features\":[\"amount\",\"amount\"",
                1
            )),
            FraudError::DuplicateFeature(_)
        ));
        let big = " ".repeat(MAX_MODEL_BYTES + 1);
        assert!(matches!(err(&big), FraudError::TooLarge { .. }));
    }

    /// Replaces item `i` of the JSON array at `key` (the first one in the text).
    fn set_item(text: &str, key: &str, i: usize, new: &str) -> String {
        let k = format!("\"{key}\":[");
        let start = text.find(&k).unwrap() + k.len();
        let end = start + text[start..].find(']').unwrap();
        let mut items: Vec<&str> = text[start..end].split(',').collect();
        items[i] = new;
        format!("{}{}{}", &text[..start], items.join(","), &text[end..])
    }

    #[test]
    fn trees_are_validated_like_imports() {
        let t = xgb_text();
        // Node 0 of tree 0 is a split whose left child is node 1 (pre-order).
        assert!(matches!(
            err(&set_item(&t, "left", 0, "999")),
            FraudError::ChildOutOfRange {
                tree: 0,
                node: 0,
                ..
            }
        ));
        assert!(matches!(
            err(&set_item(&t, "left", 1, "0")),
            FraudError::Cycle { tree: 0, .. }
        ));
        assert!(matches!(
            err(&set_item(&t, "threshold", 0, "NaN")),
            FraudError::NanThreshold { tree: 0, node: 0 }
        ));
        assert!(matches!(
            err(&set_item(&t, "value", 0, "Infinity")),
            FraudError::NonFiniteValue { tree: 0, node: 0 }
        ));
        assert!(matches!(
            err(&set_item(&t, "feature", 0, "6")),
            FraudError::FeatureOutOfRange { feature: 6, .. }
        ));
        assert!(matches!(
            err(&set_item(&t, "missing", 0, "7")),
            FraudError::Malformed(_)
        ));
        assert!(matches!(
            err(&set_item(&t, "roots", 1, "9999999")),
            FraudError::Malformed(_)
        ));
        assert!(matches!(
            err(&t.replacen("\"default_left\":[", "\"default_left\":[1,", 1)),
            FraudError::Malformed(s) if s.contains("lengths")
        ));
        assert!(matches!(
            err(&t.replacen("\"roots\":[", "\"roots\":[0,", 1)),
            FraudError::EmptyTree { tree: 0 }
        ));
        let start = t.find("\"roots\":[").unwrap() + "\"roots\":[".len();
        let end = start + t[start..].find(']').unwrap();
        let no_trees = format!("{}{}", &t[..start], &t[end..]);
        assert_eq!(err(&no_trees), FraudError::NoTrees);
        assert!(matches!(
            err(&t.replacen("\"sigmoid\":1.0", "\"sigmoid\":-1.0", 1)),
            FraudError::BadParameter { .. }
        ));
    }

    #[test]
    fn logistic_is_validated() {
        let m = LogisticModel {
            features: vec!["a".into(), "b".into()],
            mean: vec![0.0, 1.0],
            scale: vec![1.0, 2.0],
            weights: vec![0.5, 0.25],
            intercept: -1.0,
            iterations: 3,
        };
        let t = Scorer::Logistic(m).to_stored();
        assert!(matches!(
            err(&set_item(&t, "scale", 1, "0.0")),
            FraudError::BadParameter { name, .. } if name == "scale of b"
        ));
        assert!(matches!(
            err(&set_item(&t, "weights", 0, "NaN")),
            FraudError::BadParameter { name, .. } if name == "weight of a"
        ));
        assert!(matches!(
            err(&t.replacen("\"mean\":[0.0,1.0]", "\"mean\":[0.0]", 1)),
            FraudError::Malformed(s) if s.contains("\"mean\"")
        ));
        assert!(matches!(
            err(&t.replacen(",\"iterations\":3", "", 1)),
            FraudError::MissingField(k) if k == "iterations"
        ));
    }
}
