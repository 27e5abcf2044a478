//! Import of XGBoost JSON and LightGBM text models into an [`Ensemble`].
//!
//! Only what the scorer reproduces exactly is accepted: binary logistic models of plain
//! numerical trees. Everything else (dart, gblinear, multiclass or multi-output, linear
//! trees, categorical splits, random forests that average) is refused with a
//! [`FraudError`] that says what was found, never scored approximately.
//!
//! Feature order: the caller passes the feature list the model will be fed
//! (`features: &[String]`). When the model records its own feature names they must be the
//! same, in the same order; otherwise [`FraudError::FeatureMismatch`] names both lists.

use super::ensemble::{Ensemble, Missing, RawNode, RawTree, Semantics};
use super::error::{FraudError, Result};
use super::json::{self, Json};

/// Largest model text accepted: 64 MiB. A 1000-tree depth-8 model is about 30 MiB of
/// XGBoost JSON; anything larger is more likely a mistake than a model meant for an
/// in-transaction scorer, and parsing it would hold that much memory in a backend.
pub const MAX_MODEL_BYTES: usize = 64 * 1024 * 1024;

/// The file formats [`import`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// `Booster.save_model("m.json")` of XGBoost 1.x to 3.x.
    XgboostJson,
    /// `Booster.save_model("m.txt")` of LightGBM 3.x / 4.x.
    LightGbmText,
}

impl ModelFormat {
    /// Guesses the format from the text: JSON starts with `{`, LightGBM with `tree`.
    pub fn detect(text: &str) -> Option<ModelFormat> {
        let t = text.trim_start();
        if t.starts_with('{') {
            Some(ModelFormat::XgboostJson)
        } else if t.starts_with("tree") {
            Some(ModelFormat::LightGbmText)
        } else {
            None
        }
    }
}

/// An imported model: the ensemble and the feature names it is fed, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub format: ModelFormat,
    pub features: Vec<String>,
    pub ensemble: Ensemble,
}

impl Model {
    /// Probability of fraud for features in [`Model::features`] order.
    pub fn predict(&self, x: &[f64]) -> Result<f64> {
        self.ensemble.predict(x)
    }
}

/// Imports `text` in `format`, fed with `features` in this order.
pub fn import(format: ModelFormat, text: &str, features: &[String]) -> Result<Model> {
    match format {
        ModelFormat::XgboostJson => import_xgboost_json(text, features),
        ModelFormat::LightGbmText => import_lightgbm_text(text, features),
    }
}

pub(super) fn check_size(text: &str) -> Result<()> {
    if text.len() > MAX_MODEL_BYTES {
        return Err(FraudError::TooLarge {
            bytes: text.len(),
            limit: MAX_MODEL_BYTES,
        });
    }
    Ok(())
}

pub(super) fn check_duplicates(features: &[String]) -> Result<()> {
    for (i, f) in features.iter().enumerate() {
        if features[..i].contains(f) {
            return Err(FraudError::DuplicateFeature(f.clone()));
        }
    }
    Ok(())
}

/// The model's names (if it has any) must equal the caller's; without names the counts
/// must agree.
fn check_features(model_names: &[String], n_model: usize, features: &[String]) -> Result<()> {
    check_duplicates(features)?;
    let given = || features.join(", ");
    if !model_names.is_empty() {
        if model_names != features {
            return Err(FraudError::FeatureMismatch {
                model: model_names.join(", "),
                given: given(),
            });
        }
    } else if n_model != features.len() {
        return Err(FraudError::FeatureMismatch {
            model: format!("{n_model} unnamed features"),
            given: given(),
        });
    }
    Ok(())
}

fn field<'a, 'b>(v: &'b Json<'a>, path: &str) -> Result<&'b Json<'a>> {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur
            .get(key)
            .ok_or_else(|| FraudError::MissingField(path.to_string()))?;
    }
    Ok(cur)
}

fn array<'a, 'b>(v: &'b Json<'a>, path: &str) -> Result<&'b [Json<'a>]> {
    field(v, path)?
        .as_array()
        .ok_or_else(|| FraudError::Malformed(format!("\"{path}\" is not an array")))
}

fn bad_number(what: &str, tree: usize, node: usize) -> FraudError {
    FraudError::Malformed(format!("tree {tree} node {node}: {what} is not a number"))
}

/// XGBoost writes `base_score` as `"5E-1"` (1.x/2.x) or `"[5E-1]"` (3.x, a vector for
/// multi-output); older files may have a plain number.
fn xgboost_base_score(v: &Json<'_>) -> Result<f32> {
    let text = v
        .number_text()
        .ok_or_else(|| FraudError::Malformed("base_score is not a number".into()))?
        .trim();
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    if parts.len() != 1 {
        return Err(FraudError::Unsupported(format!(
            "{} base scores (multi-output model)",
            parts.len()
        )));
    }
    parts[0]
        .parse::<f32>()
        .map_err(|_| FraudError::Malformed(format!("base_score \"{text}\" is not a number")))
}

/// Parses an XGBoost JSON model (`binary:logistic`, `gbtree`).
///
/// The base margin is XGBoost's `ProbToMargin`: `-ln(1/base_score - 1)` in `f32`. Node
/// expected values for explanations are the `sum_hessian`-weighted means of the leaves
/// below (as XGBoost's `approx_contribs` computes them): `base_weights` are the
/// unshrunk node weights and would not add up to the leaves.
pub fn import_xgboost_json(text: &str, features: &[String]) -> Result<Model> {
    check_size(text)?;
    let root = json::parse(text)?;
    let learner = field(&root, "learner")?;
    let objective = field(learner, "objective.name")?
        .as_str()
        .unwrap_or_default();
    if objective != "binary:logistic" {
        return Err(FraudError::Unsupported(format!(
            "objective \"{objective}\": only binary:logistic is supported"
        )));
    }
    let booster = field(learner, "gradient_booster.name")?
        .as_str()
        .unwrap_or_default();
    if booster != "gbtree" {
        return Err(FraudError::Unsupported(format!(
            "booster \"{booster}\": only gbtree is supported"
        )));
    }
    let mparam = field(learner, "learner_model_param")?;
    for key in ["num_class", "num_target"] {
        if let Some(n) = mparam.get(key) {
            let n = n
                .as_i64()
                .ok_or_else(|| FraudError::Malformed(format!("{key} is not an integer")))?;
            if n > 1 {
                return Err(FraudError::Unsupported(format!(
                    "{key} = {n}: only binary models are supported"
                )));
            }
        }
    }
    let base_score = xgboost_base_score(field(mparam, "base_score")?)?;
    if !(base_score > 0.0 && base_score < 1.0) {
        return Err(FraudError::BadParameter {
            name: "base_score".into(),
            value: base_score.to_string(),
        });
    }
    let base_margin = -((1.0f32 / base_score - 1.0f32).ln());
    let num_feature = field(mparam, "num_feature")?
        .as_i64()
        .filter(|n| *n >= 0)
        .ok_or_else(|| FraudError::Malformed("num_feature is not an integer".into()))?
        as usize;
    let names: Vec<String> = match learner.get("feature_names").and_then(Json::as_array) {
        Some(a) => a
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| FraudError::Malformed("feature_names are not strings".into()))?,
        None => Vec::new(),
    };
    check_features(&names, num_feature, features)?;

    let model = field(learner, "gradient_booster.model")?;
    if let Some(info) = model.get("tree_info").and_then(Json::as_array) {
        if info.iter().any(|g| g.as_i64() != Some(0)) {
            return Err(FraudError::Unsupported(
                "trees for several output groups (multiclass)".into(),
            ));
        }
    }
    let trees_json = array(model, "trees")?;
    let mut trees = Vec::with_capacity(trees_json.len());
    for (t, tj) in trees_json.iter().enumerate() {
        trees.push(xgboost_tree(t, tj)?);
    }
    let ensemble = Ensemble::new(
        Semantics::Xgboost,
        features.len(),
        base_margin as f64,
        1.0,
        &trees,
    )?;
    Ok(Model {
        format: ModelFormat::XgboostJson,
        features: features.to_vec(),
        ensemble,
    })
}

fn xgboost_tree(t: usize, tj: &Json<'_>) -> Result<RawTree> {
    if let Some(size) = tj.get("tree_param").and_then(|p| p.get("size_leaf_vector")) {
        if size.as_i64().is_some_and(|s| s > 1) {
            return Err(FraudError::Unsupported(format!(
                "tree {t} has vector leaves (multi-output)"
            )));
        }
    }
    let left = array(tj, "left_children")?;
    let right = array(tj, "right_children")?;
    let feat = array(tj, "split_indices")?;
    let cond = array(tj, "split_conditions")?;
    let dleft = array(tj, "default_left")?;
    let hess = tj.get("sum_hessian").and_then(Json::as_array);
    let stype = tj.get("split_type").and_then(Json::as_array);
    let n = left.len();
    if [right.len(), feat.len(), cond.len(), dleft.len()]
        .iter()
        .any(|&l| l != n)
        || hess.is_some_and(|h| h.len() != n)
        || stype.is_some_and(|s| s.len() != n)
    {
        return Err(FraudError::Malformed(format!(
            "tree {t}: node arrays have different lengths"
        )));
    }
    if let Some(cats) = tj.get("categories_nodes").and_then(Json::as_array) {
        if let Some(node) = cats.first() {
            return Err(FraudError::CategoricalSplit {
                tree: t,
                node: node.as_i64().unwrap_or(-1).max(0) as usize,
            });
        }
    }
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let cover = match hess {
            Some(h) => h[i]
                .as_f64()
                .ok_or_else(|| bad_number("sum_hessian", t, i))?,
            None => 1.0,
        };
        let l = left[i]
            .as_i64()
            .ok_or_else(|| bad_number("left_children", t, i))?;
        let value = cond[i]
            .as_f32()
            .ok_or_else(|| bad_number("split_conditions", t, i))? as f64;
        if l == -1 {
            nodes.push(RawNode::Leaf { value, cover });
            continue;
        }
        if stype.is_some_and(|s| s[i].as_i64() != Some(0)) {
            return Err(FraudError::CategoricalSplit { tree: t, node: i });
        }
        nodes.push(RawNode::Split {
            feature: feat[i]
                .as_i64()
                .ok_or_else(|| bad_number("split_indices", t, i))?,
            threshold: value,
            left: l,
            right: right[i]
                .as_i64()
                .ok_or_else(|| bad_number("right_children", t, i))?,
            default_left: dleft[i]
                .as_i64()
                .ok_or_else(|| bad_number("default_left", t, i))?
                != 0,
            missing: Missing::Nan,
            cover,
            expected: None,
        });
    }
    Ok(RawTree { nodes })
}

/// One `key=value` block of a LightGBM text model.
struct Block<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Block<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn need(&self, key: &str, tree: Option<usize>) -> Result<&'a str> {
        self.get(key).ok_or_else(|| {
            FraudError::MissingField(match tree {
                Some(t) => format!("Tree={t} {key}"),
                None => key.to_string(),
            })
        })
    }
}

fn lgb_list<T: std::str::FromStr>(text: &str, key: &str, tree: usize, n: usize) -> Result<Vec<T>> {
    let v: Vec<T> = text
        .split_ascii_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| FraudError::Malformed(format!("Tree={tree} {key}: not a list of numbers")))?;
    if v.len() != n {
        return Err(FraudError::Malformed(format!(
            "Tree={tree} {key}: {} values, expected {n}",
            v.len()
        )));
    }
    Ok(v)
}

/// Parses a LightGBM text model (`objective=binary`).
///
/// Leaf values in the text already include each tree's shrinkage, and the first tree's
/// leaves include the initial score, so the base margin is 0. Node expected values are
/// the model's `internal_value` (the node's output had it been a leaf).
pub fn import_lightgbm_text(text: &str, features: &[String]) -> Result<Model> {
    check_size(text)?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("tree") {
        return Err(FraudError::Malformed(
            "a LightGBM model starts with a line \"tree\"".into(),
        ));
    }
    let mut header = Block { pairs: Vec::new() };
    let mut trees: Vec<Block<'_>> = Vec::new();
    let mut ended = false;
    let mut boosting = None;
    let mut linear = false;
    for raw in lines {
        let line = raw.trim();
        if ended {
            if let Some(b) = line.strip_prefix("[boosting: ") {
                boosting = Some(b.trim_end_matches(']').to_string());
            }
            if line == "[linear_tree: 1]" {
                linear = true;
            }
            continue;
        }
        if line == "end of trees" {
            ended = true;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(id) = line.strip_prefix("Tree=") {
            if id.parse::<usize>().ok() != Some(trees.len()) {
                return Err(FraudError::Malformed(format!(
                    "\"{line}\" out of sequence (expected Tree={})",
                    trees.len()
                )));
            }
            trees.push(Block { pairs: Vec::new() });
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            FraudError::Malformed(format!("line without '=' in the model: {line:.40}"))
        })?;
        match trees.last_mut() {
            Some(t) => t.pairs.push((k, v)),
            None => header.pairs.push((k, v)),
        }
    }
    if !ended {
        return Err(FraudError::Malformed(
            "no \"end of trees\" line: the model text is truncated".into(),
        ));
    }
    if let Some(b) = boosting.as_deref() {
        if b != "gbdt" {
            return Err(FraudError::Unsupported(format!(
                "boosting \"{b}\": only gbdt is supported"
            )));
        }
    }
    if linear {
        return Err(FraudError::Unsupported("linear trees".into()));
    }
    if header.get("average_output").is_some() {
        return Err(FraudError::Unsupported(
            "random forest (average_output)".into(),
        ));
    }
    for key in ["num_class", "num_tree_per_iteration"] {
        let n = header.need(key, None)?;
        if n.trim() != "1" {
            return Err(FraudError::Unsupported(format!(
                "{key}={n}: only binary models are supported"
            )));
        }
    }
    let objective = header.need("objective", None)?;
    let mut words = objective.split_ascii_whitespace();
    if words.next() != Some("binary") {
        return Err(FraudError::Unsupported(format!(
            "objective \"{objective}\": only binary is supported"
        )));
    }
    let mut sigmoid = 1.0;
    for w in words {
        if let Some(s) = w.strip_prefix("sigmoid:") {
            sigmoid = s.parse().map_err(|_| FraudError::BadParameter {
                name: "sigmoid".into(),
                value: s.to_string(),
            })?;
        }
    }
    let max_idx: i64 = header
        .need("max_feature_idx", None)?
        .trim()
        .parse()
        .map_err(|_| FraudError::Malformed("max_feature_idx is not an integer".into()))?;
    let n_model = usize::try_from(max_idx + 1)
        .map_err(|_| FraudError::Malformed("max_feature_idx is negative".into()))?;
    let names: Vec<String> = header
        .get("feature_names")
        .map(|s| s.split_ascii_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if !names.is_empty() && names.len() != n_model {
        return Err(FraudError::Malformed(format!(
            "{} feature names for max_feature_idx={max_idx}",
            names.len()
        )));
    }
    check_features(&names, n_model, features)?;

    let mut raw = Vec::with_capacity(trees.len());
    for (t, b) in trees.iter().enumerate() {
        raw.push(lightgbm_tree(t, b)?);
    }
    let ensemble = Ensemble::new(Semantics::LightGbm, features.len(), 0.0, sigmoid, &raw)?;
    Ok(Model {
        format: ModelFormat::LightGbmText,
        features: features.to_vec(),
        ensemble,
    })
}

fn lightgbm_tree(t: usize, b: &Block<'_>) -> Result<RawTree> {
    if b.get("is_linear").map(str::trim) == Some("1") {
        return Err(FraudError::Unsupported(format!(
            "tree {t} is a linear tree"
        )));
    }
    let num_leaves: usize = b
        .need("num_leaves", Some(t))?
        .trim()
        .parse()
        .map_err(|_| FraudError::Malformed(format!("Tree={t} num_leaves is not an integer")))?;
    if num_leaves == 0 {
        return Err(FraudError::EmptyTree { tree: t });
    }
    let leaf_value: Vec<f64> =
        lgb_list(b.need("leaf_value", Some(t))?, "leaf_value", t, num_leaves)?;
    let leaf_cover: Option<Vec<f64>> = b
        .get("leaf_weight")
        .map(|s| lgb_list(s, "leaf_weight", t, num_leaves))
        .transpose()?;
    if num_leaves == 1 {
        return Ok(RawTree {
            nodes: vec![RawNode::Leaf {
                value: leaf_value[0],
                cover: 1.0,
            }],
        });
    }
    let n_int = num_leaves - 1;
    let feat: Vec<i64> = lgb_list(b.need("split_feature", Some(t))?, "split_feature", t, n_int)?;
    let thr: Vec<f64> = lgb_list(b.need("threshold", Some(t))?, "threshold", t, n_int)?;
    let dtype: Vec<u8> = lgb_list(b.need("decision_type", Some(t))?, "decision_type", t, n_int)?;
    let left: Vec<i64> = lgb_list(b.need("left_child", Some(t))?, "left_child", t, n_int)?;
    let right: Vec<i64> = lgb_list(b.need("right_child", Some(t))?, "right_child", t, n_int)?;
    let internal: Option<Vec<f64>> = b
        .get("internal_value")
        .map(|s| lgb_list(s, "internal_value", t, n_int))
        .transpose()?;
    let internal_cover: Option<Vec<f64>> = b
        .get("internal_weight")
        .map(|s| lgb_list(s, "internal_weight", t, n_int))
        .transpose()?;
    // Internal nodes keep their index; leaf k (written as child ~k) becomes n_int + k.
    let child = |node: usize, c: i64| -> Result<i64> {
        let mapped = if c >= 0 {
            (c < n_int as i64).then_some(c)
        } else {
            let k = !c;
            (k < num_leaves as i64).then_some(n_int as i64 + k)
        };
        mapped.ok_or(FraudError::ChildOutOfRange {
            tree: t,
            node,
            child: c,
            len: n_int + num_leaves,
        })
    };
    let mut nodes = Vec::with_capacity(n_int + num_leaves);
    for i in 0..n_int {
        let d = dtype[i];
        if d & 1 != 0 {
            return Err(FraudError::CategoricalSplit { tree: t, node: i });
        }
        let missing = match (d >> 2) & 3 {
            0 => Missing::None,
            1 => Missing::Zero,
            2 => Missing::Nan,
            _ => {
                return Err(FraudError::Malformed(format!(
                    "Tree={t} node {i}: decision_type {d} has an unknown missing type"
                )))
            }
        };
        // LightGBM writes `inf` for a split that only parts missing values from the rest:
        // `x <= inf` holds for every finite x, and so does `x <= f64::MAX`, which the
        // scorer accepts (it refuses infinite thresholds as a sign of a damaged model).
        let threshold = if thr[i] == f64::INFINITY {
            f64::MAX
        } else if thr[i] == f64::NEG_INFINITY {
            f64::MIN
        } else {
            thr[i]
        };
        nodes.push(RawNode::Split {
            feature: feat[i],
            threshold,
            left: child(i, left[i])?,
            right: child(i, right[i])?,
            default_left: d & 2 != 0,
            missing,
            cover: internal_cover.as_ref().map_or(1.0, |c| c[i]),
            expected: internal.as_ref().map(|v| v[i]),
        });
    }
    for k in 0..num_leaves {
        nodes.push(RawNode::Leaf {
            value: leaf_value[k],
            cover: leaf_cover.as_ref().map_or(1.0, |c| c[k]),
        });
    }
    Ok(RawTree { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// (column name → value) rows of the fixture CSV.
    fn rows() -> (Vec<String>, Vec<Vec<f64>>) {
        let mut lines = ROWS.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        let rows = lines
            .map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        (header, rows)
    }

    fn col(header: &[String], name: &str) -> usize {
        header.iter().position(|h| h == name).unwrap()
    }

    #[test]
    fn xgboost_is_bit_exact() {
        let m = import_xgboost_json(XGB, &names()).unwrap();
        assert_eq!(m.ensemble.n_trees(), 30);
        let (h, rows) = rows();
        assert!(rows.len() >= 200);
        let (p, mg) = (col(&h, "xgb_prob"), col(&h, "xgb_margin"));
        for (i, r) in rows.iter().enumerate() {
            let x = &r[..6];
            assert_eq!(
                m.ensemble.margin(x).unwrap(),
                r[mg],
                "margin row {i}: {x:?}"
            );
            assert_eq!(m.predict(x).unwrap(), r[p], "probability row {i}: {x:?}");
            let mut out = vec![0.0; 6];
            let (fused, _) = m.ensemble.predict_and_contributions(x, &mut out).unwrap();
            assert_eq!(fused, r[p], "one-walk probability row {i}: {x:?}");
        }
    }

    #[test]
    fn xgboost_contributions_match_approx_contribs() {
        let m = import_xgboost_json(XGB, &names()).unwrap();
        let (h, rows) = rows();
        let c0 = col(&h, "xgb_contrib_amount");
        let b = col(&h, "xgb_bias");
        let mut out = vec![0.0; 6];
        for (i, r) in rows.iter().enumerate() {
            let bias = m.ensemble.contributions(&r[..6], &mut out).unwrap();
            assert!(
                (bias - r[b]).abs() < 1e-5,
                "bias row {i}: {bias} vs {}",
                r[b]
            );
            for f in 0..6 {
                assert!(
                    (out[f] - r[c0 + f]).abs() < 1e-5,
                    "row {i} feature {f}: {} vs {}",
                    out[f],
                    r[c0 + f]
                );
            }
        }
    }

    #[test]
    fn lightgbm_is_bit_exact() {
        let (h, rows) = rows();
        for (text, prob, raw) in [
            (LGB, "lgb_prob", Some("lgb_raw")),
            (LGB_ZERO, "lgbz_prob", None),
        ] {
            let m = import_lightgbm_text(text, &names()).unwrap();
            assert_eq!(m.ensemble.n_trees(), 30);
            let p = col(&h, prob);
            for (i, r) in rows.iter().enumerate() {
                let x = &r[..6];
                if let Some(raw) = raw {
                    assert_eq!(m.ensemble.margin(x).unwrap(), r[col(&h, raw)], "row {i}");
                }
                assert_eq!(m.predict(x).unwrap(), r[p], "{prob} row {i}: {x:?}");
                let mut out = vec![0.0; 6];
                let (fused, _) = m.ensemble.predict_and_contributions(x, &mut out).unwrap();
                assert_eq!(fused, r[p], "{prob} one-walk row {i}: {x:?}");
            }
        }
    }

    #[test]
    fn lightgbm_contributions_add_up() {
        let m = import_lightgbm_text(LGB, &names()).unwrap();
        let (_, rows) = rows();
        let mut out = vec![0.0; 6];
        for r in &rows {
            let bias = m.ensemble.contributions(&r[..6], &mut out).unwrap();
            let sum: f64 = bias + out.iter().sum::<f64>();
            assert!((sum - m.ensemble.margin(&r[..6]).unwrap()).abs() < 1e-9);
        }
    }

    #[test]
    fn feature_names_must_match() {
        let mut swapped = names();
        swapped.swap(0, 1);
        for r in [
            import_xgboost_json(XGB, &swapped),
            import_lightgbm_text(LGB, &swapped),
            import_lightgbm_text(LGB, &names()[..5]),
        ] {
            match r {
                Err(FraudError::FeatureMismatch { model, given }) => {
                    assert!(model.starts_with("amount, log_amount"));
                    assert_ne!(model, given);
                }
                other => panic!("expected FeatureMismatch, got {other:?}"),
            }
        }
        let mut dup = names();
        dup[5] = "amount".into();
        assert!(matches!(
            import_xgboost_json(XGB, &dup),
            Err(FraudError::DuplicateFeature(_))
        ));
    }

    #[test]
    fn detects_format() {
        assert_eq!(ModelFormat::detect(XGB), Some(ModelFormat::XgboostJson));
        assert_eq!(ModelFormat::detect(LGB), Some(ModelFormat::LightGbmText));
        assert_eq!(ModelFormat::detect("hello"), None);
    }

    #[test]
    fn xgboost_malformed_inputs() {
        let f = names();
        let truncated = &XGB[..XGB.len() / 2];
        assert!(matches!(
            import_xgboost_json(truncated, &f),
            Err(FraudError::Malformed(_))
        ));
        // Child index out of range: the first tree's first left child → 999.
        let bad = XGB.replacen("\"left_children\":[1,", "\"left_children\":[999,", 1);
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::ChildOutOfRange {
                tree: 0,
                node: 0,
                child: 999,
                ..
            })
        ));
        // A cycle: node 1's left child → the root.
        let bad = XGB.replacen("\"left_children\":[1,3,", "\"left_children\":[1,0,", 1);
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::Cycle { tree: 0, node: 0 })
        ));
        // NaN threshold at the root of the first tree.
        let (pos, len) = first_split_condition(XGB);
        let bad = format!("{}NaN{}", &XGB[..pos], &XGB[pos + len..]);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::NanThreshold { tree: 0, node: 0 })
        ));
        // Multiclass and other objectives / boosters.
        let bad = XGB.replacen("\"num_class\":\"0\"", "\"num_class\":\"3\"", 1);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::Unsupported(s)) if s.contains("num_class")
        ));
        let bad = XGB.replacen("binary:logistic", "multi:softprob", 1);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::Unsupported(_))
        ));
        let bad = XGB.replacen("\"name\":\"gbtree\"", "\"name\":\"dart\"", 1);
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::Unsupported(s)) if s.contains("dart")
        ));
        let bad = XGB.replacen(
            "\"base_score\":\"[3.5E-1]\"",
            "\"base_score\":\"[3.5E-1,2E-1]\"",
            1,
        );
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::Unsupported(_))
        ));
        // A categorical split.
        let bad = XGB.replacen("\"split_type\":[0,", "\"split_type\":[1,", 1);
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::CategoricalSplit { tree: 0, node: 0 })
        ));
        // Feature index beyond the list.
        let bad = XGB.replacen("\"split_indices\":[0,", "\"split_indices\":[6,", 1);
        assert_ne!(bad, XGB);
        assert!(matches!(
            import_xgboost_json(&bad, &f),
            Err(FraudError::FeatureOutOfRange { feature: 6, .. })
        ));
        assert!(matches!(
            import_xgboost_json(r#"{"learner":{}}"#, &f),
            Err(FraudError::MissingField(_))
        ));
    }

    /// Byte range of the first tree's first split condition in the XGBoost JSON.
    fn first_split_condition(text: &str) -> (usize, usize) {
        let key = "\"split_conditions\":[";
        let pos = text.find(key).unwrap() + key.len();
        let len = text[pos..].find(',').unwrap();
        (pos, len)
    }

    #[test]
    fn base_score_formats() {
        assert_eq!(xgboost_base_score(&Json::Str("5E-1".into())).unwrap(), 0.5);
        assert_eq!(
            xgboost_base_score(&Json::Str("[5E-1]".into())).unwrap(),
            0.5
        );
        assert_eq!(xgboost_base_score(&Json::Num("0.25")).unwrap(), 0.25);
        assert!(xgboost_base_score(&Json::Str("x".into())).is_err());
    }

    #[test]
    fn lightgbm_malformed_inputs() {
        let f = names();
        let cut = LGB.find("Tree=3").unwrap();
        assert!(matches!(
            import_lightgbm_text(&LGB[..cut + 40], &f),
            Err(FraudError::Malformed(_))
        ));
        let bad = LGB.replacen("num_class=1", "num_class=3", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Unsupported(s)) if s.contains("num_class")
        ));
        let bad = LGB.replacen("num_tree_per_iteration=1", "num_tree_per_iteration=2", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Unsupported(_))
        ));
        let bad = LGB.replacen("objective=binary", "objective=regression", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Unsupported(_))
        ));
        let bad = LGB.replacen("[boosting: gbdt]", "[boosting: dart]", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Unsupported(s)) if s.contains("dart")
        ));
        let bad = LGB.replacen("is_linear=0", "is_linear=1", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Unsupported(s)) if s.contains("linear")
        ));
        // Categorical split: set the categorical bit of tree 0's first decision type.
        let bad = LGB.replacen("decision_type=2 ", "decision_type=3 ", 1);
        assert_ne!(bad, LGB);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::CategoricalSplit { tree: 0, node: 0 })
        ));
        // Child out of range, a cycle, a NaN threshold.
        let bad = LGB.replacen("left_child=1 ", "left_child=40 ", 1);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::ChildOutOfRange {
                tree: 0,
                node: 0,
                child: 40,
                ..
            })
        ));
        let bad = LGB.replacen("left_child=1 5 ", "left_child=1 0 ", 1);
        assert_ne!(bad, LGB);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::Cycle { tree: 0, node: 0 })
        ));
        let bad = LGB.replacen("threshold=120.15500000000002 ", "threshold=nan ", 1);
        assert_ne!(bad, LGB);
        assert!(matches!(
            import_lightgbm_text(&bad, &f),
            Err(FraudError::NanThreshold { tree: 0, node: 0 })
        ));
        assert!(matches!(
            import_lightgbm_text("not a model", &f),
            Err(FraudError::Malformed(_))
        ));
    }

    #[test]
    fn oversize_text_is_refused() {
        let big = " ".repeat(MAX_MODEL_BYTES + 1);
        for r in [
            import_xgboost_json(&big, &names()),
            import_lightgbm_text(&big, &names()),
        ] {
            assert!(matches!(
                r,
                Err(FraudError::TooLarge { bytes, limit: MAX_MODEL_BYTES }) if bytes == MAX_MODEL_BYTES + 1
            ));
        }
    }

    #[test]
    fn lightgbm_infinite_thresholds_split_finite_values_as_lightgbm_does() {
        // LightGBM writes `inf` for a split that only parts missing values from the rest.
        let text = LGB.replacen("threshold=120.15500000000002 ", "threshold=inf ", 1);
        assert_ne!(text, LGB);
        let m = import_lightgbm_text(&text, &names());
        assert!(m.is_ok(), "{m:?}");
    }
}
