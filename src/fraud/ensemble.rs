//! A tree-ensemble scorer over flat arrays.
//!
//! The trees of XGBoost and LightGBM binary models are validated once, laid out in
//! pre-order in a struct of `Vec`s (so a root-to-leaf walk moves mostly forward in memory)
//! and then scored without allocating. Two comparison semantics reproduce the libraries
//! bit for bit:
//!
//! - [`Semantics::Xgboost`]: the feature value is rounded to `f32` (XGBoost's `DMatrix`
//!   stores `float`) and goes left iff `x < threshold` in `f32`; NaN goes to the default
//!   child. The margin is accumulated in `f32`, base margin first, tree by tree, and the
//!   logistic link is XGBoost's `float` sigmoid.
//! - [`Semantics::LightGbm`]: values stay `f64` and go left iff `x <= threshold`; missing
//!   values follow the node's missing type (None: NaN is treated as 0.0; Zero: |x| <= 1e-35
//!   goes to the default child, NaN counts as zero; NaN: NaN goes to the default child).
//!   The margin is a `f64` sum and the link `1 / (1 + exp(-sigmoid * margin))`.
//! - [`Semantics::Forust`]: the GBDT trained in the database with forust: values stay
//!   `f64` and go left iff `x < threshold`; NaN goes to the default child (forust's
//!   `missing_node`, which must be the left or the right child). The margin is the base
//!   margin plus each tree's leaf in `f64`, in tree order, as forust's `predict` sums it;
//!   the link is `1 / (1 + exp(-margin))`.
//!
//! Explanations use the Saabas method: along the decision path, the change of the node's
//! expected value is credited to the split feature. Contributions plus the bias (base
//! margin plus the roots' expected values) add up to the margin.

use super::error::{FraudError, Result};

/// Which library's arithmetic the scorer reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    Xgboost,
    LightGbm,
    Forust,
}

impl Semantics {
    /// The name used in the stored model format.
    pub fn name(self) -> &'static str {
        match self {
            Semantics::Xgboost => "xgboost",
            Semantics::LightGbm => "lightgbm",
            Semantics::Forust => "forust",
        }
    }

    /// Inverse of [`Semantics::name`].
    pub fn from_name(name: &str) -> Option<Semantics> {
        match name {
            "xgboost" => Some(Semantics::Xgboost),
            "lightgbm" => Some(Semantics::LightGbm),
            "forust" => Some(Semantics::Forust),
            _ => None,
        }
    }
}

/// What counts as a missing value at a split (LightGBM's `MissingType`; XGBoost is `Nan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No missing handling: NaN is scored as 0.0.
    None,
    /// Zero (|x| <= 1e-35) and NaN go to the default child.
    Zero,
    /// NaN goes to the default child.
    Nan,
}

/// One node of a tree as an importer reads it; child indexes are tree-local and the root is
/// node 0. Nothing here is trusted until [`Ensemble::new`] validated it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawNode {
    Split {
        feature: i64,
        threshold: f64,
        left: i64,
        right: i64,
        default_left: bool,
        missing: Missing,
        /// Sum of hessians (or row count) that reached the node in training.
        cover: f64,
        /// The node's expected output; `None` computes it as the cover-weighted mean of
        /// its children (what XGBoost's approximate contributions use).
        expected: Option<f64>,
    },
    Leaf {
        value: f64,
        cover: f64,
    },
}

/// A tree as a list of [`RawNode`]s, root first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawTree {
    pub nodes: Vec<RawNode>,
}

/// `feature[i] == LEAF` marks a leaf.
const LEAF: u32 = u32::MAX;
const DEFAULT_LEFT: u8 = 1;
const MISSING_ZERO: u8 = 2;
const MISSING_NAN: u8 = 4;
/// LightGBM's `kZeroThreshold`: a `float` literal 1e-35f widened to `double`.
pub const LIGHTGBM_ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// A validated ensemble of binary-classification trees.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    semantics: Semantics,
    n_features: usize,
    base_margin: f64,
    sigmoid: f64,
    roots: Vec<u32>,
    feature: Vec<u32>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    flags: Vec<u8>,
    /// Leaf value for leaves, expected value for splits.
    value: Vec<f64>,
    bias: f64,
    /// The same nodes packed 16 bytes each for scoring (four per cache line; in pre-order
    /// the left child is the next node, so a step reads at most one other line). The
    /// arrays above stay for the stored format.
    nodes: Vec<Node>,
    /// `value[i] - value[parent(i)]` (0 at roots): a step's Saabas contribution, read only
    /// when explaining, so scoring alone never touches it.
    delta: Vec<f64>,
}

/// A node as the scorer walks it: a split's threshold or a leaf's value, the right child
/// (the left one is the next node), and the feature index above the flags byte
/// ([`NODE_LEAF`] for a leaf).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    threshold_or_value: f64,
    right: u32,
    feature_flags: u32,
}

/// `feature_flags >> 8` of a leaf; feature indexes stay below it (checked in `new`).
const NODE_LEAF: u32 = (1 << 24) - 1;

impl Ensemble {
    /// Validates `trees` and lays them out flat.
    ///
    /// `base_margin` is added to the sum of leaves (already in margin space, i.e. logit for
    /// XGBoost's `base_score`); `sigmoid` scales the margin inside the logistic link
    /// (LightGBM's `sigmoid:` parameter, 1 for XGBoost). Under [`Semantics::Xgboost`]
    /// thresholds, leaves and the base margin are rounded to `f32`, as XGBoost stores them.
    pub fn new(
        semantics: Semantics,
        n_features: usize,
        base_margin: f64,
        sigmoid: f64,
        trees: &[RawTree],
    ) -> Result<Ensemble> {
        if !base_margin.is_finite() {
            return Err(FraudError::BadParameter {
                name: "base_margin".into(),
                value: base_margin.to_string(),
            });
        }
        if !sigmoid.is_finite() || sigmoid <= 0.0 {
            return Err(FraudError::BadParameter {
                name: "sigmoid".into(),
                value: sigmoid.to_string(),
            });
        }
        if trees.is_empty() {
            return Err(FraudError::NoTrees);
        }
        let total: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if total >= LEAF as usize {
            return Err(FraudError::Unsupported(format!("{total} tree nodes")));
        }
        if n_features >= NODE_LEAF as usize {
            return Err(FraudError::Unsupported(format!("{n_features} features")));
        }
        let round = |v: f64| match semantics {
            Semantics::Xgboost => v as f32 as f64,
            Semantics::LightGbm | Semantics::Forust => v,
        };
        let mut e = Ensemble {
            semantics,
            n_features,
            base_margin: round(base_margin),
            sigmoid,
            roots: Vec::with_capacity(trees.len()),
            feature: Vec::with_capacity(total),
            threshold: Vec::with_capacity(total),
            left: Vec::with_capacity(total),
            right: Vec::with_capacity(total),
            flags: Vec::with_capacity(total),
            value: Vec::with_capacity(total),
            bias: 0.0,
            nodes: Vec::new(),
            delta: Vec::new(),
        };
        let mut state = Vec::new();
        let mut order = Vec::new();
        let mut stack = Vec::new();
        let mut remap = Vec::new();
        for (t, tree) in trees.iter().enumerate() {
            let n = tree.nodes.len();
            if n == 0 {
                return Err(FraudError::EmptyTree { tree: t });
            }
            preorder(t, tree, &mut state, &mut order, &mut stack)?;
            let base = e.feature.len();
            remap.clear();
            remap.resize(n, 0u32);
            for (pos, &old) in order.iter().enumerate() {
                remap[old] = (base + pos) as u32;
            }
            e.roots.push(base as u32);
            for &old in &order {
                match &tree.nodes[old] {
                    RawNode::Leaf { value, .. } => {
                        if !value.is_finite() {
                            return Err(FraudError::NonFiniteValue { tree: t, node: old });
                        }
                        e.feature.push(LEAF);
                        e.threshold.push(0.0);
                        e.left.push(0);
                        e.right.push(0);
                        e.flags.push(0);
                        e.value.push(round(*value));
                    }
                    RawNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        default_left,
                        missing,
                        expected,
                        ..
                    } => {
                        if *feature < 0 || *feature as u64 >= n_features as u64 {
                            return Err(FraudError::FeatureOutOfRange {
                                tree: t,
                                node: old,
                                feature: *feature,
                                n_features,
                            });
                        }
                        if threshold.is_nan() {
                            return Err(FraudError::NanThreshold { tree: t, node: old });
                        }
                        if threshold.is_infinite() {
                            return Err(FraudError::InfiniteThreshold { tree: t, node: old });
                        }
                        if let Some(x) = expected {
                            if !x.is_finite() {
                                return Err(FraudError::NonFiniteValue { tree: t, node: old });
                            }
                        }
                        let mut flags = if *default_left { DEFAULT_LEFT } else { 0 };
                        flags |= match missing {
                            Missing::None => 0,
                            Missing::Zero => MISSING_ZERO,
                            Missing::Nan => MISSING_NAN,
                        };
                        // preorder() checked both children are in 0..n.
                        e.feature.push(*feature as u32);
                        e.threshold.push(round(*threshold));
                        e.left.push(remap[*left as usize]);
                        e.right.push(remap[*right as usize]);
                        e.flags.push(flags);
                        e.value.push(expected.unwrap_or(f64::NAN));
                    }
                }
            }
            // Children follow their parent in pre-order: fill missing expected values
            // bottom-up by walking the tree's slice backwards.
            for pos in (0..order.len()).rev() {
                let i = base + pos;
                if e.feature[i] == LEAF || !e.value[i].is_nan() {
                    continue;
                }
                let (l, r) = (e.left[i] as usize, e.right[i] as usize);
                let cover = |old: usize| match &tree.nodes[old] {
                    RawNode::Split { cover, .. } | RawNode::Leaf { cover, .. } => *cover,
                };
                let own = cover(order[pos]);
                let cl = cover(order[l - base]);
                let cr = cover(order[r - base]);
                let (vl, vr) = (e.value[l], e.value[r]);
                let mut v = if own > 0.0 {
                    (vl * cl + vr * cr) / own
                } else if cl + cr > 0.0 {
                    (vl * cl + vr * cr) / (cl + cr)
                } else {
                    (vl + vr) / 2.0
                };
                if !v.is_finite() {
                    v = (vl + vr) / 2.0;
                }
                e.value[i] = v;
            }
            e.bias += e.value[base];
        }
        e.bias += e.base_margin;
        e.nodes = Vec::with_capacity(total);
        e.delta = vec![0.0; total];
        for i in 0..e.feature.len() {
            let leaf = e.feature[i] == LEAF;
            if !leaf {
                // Pre-order puts the left child right after its parent; the walk relies on it.
                if e.left[i] as usize != i + 1 {
                    return Err(FraudError::Malformed(format!(
                        "node {i}: left child {} is not the next node",
                        e.left[i]
                    )));
                }
                for c in [e.left[i] as usize, e.right[i] as usize] {
                    e.delta[c] = e.value[c] - e.value[i];
                }
            }
            e.nodes.push(Node {
                threshold_or_value: if leaf { e.value[i] } else { e.threshold[i] },
                right: e.right[i],
                feature_flags: if leaf {
                    NODE_LEAF << 8
                } else {
                    e.feature[i] << 8 | u32::from(e.flags[i])
                },
            });
        }
        Ok(e)
    }

    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.feature.len()
    }

    pub fn base_margin(&self) -> f64 {
        self.base_margin
    }

    /// Base margin plus every root's expected value: the Saabas bias term.
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// `x` (a feature vector or a contributions buffer) has one slot per feature.
    fn check_len(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.n_features {
            return Err(FraudError::WrongFeatureCount {
                expected: self.n_features,
                got: x.len(),
            });
        }
        Ok(())
    }

    /// The raw margin (log-odds before `sigmoid` scaling) for feature vector `x`, in the
    /// model's feature order.
    pub fn margin(&self, x: &[f64]) -> Result<f64> {
        self.check_len(x)?;
        Ok(match self.semantics {
            Semantics::Xgboost => self.walk::<XgboostSplit, false>(x, &mut []),
            Semantics::LightGbm => self.walk::<LightGbmSplit, false>(x, &mut []),
            Semantics::Forust => self.walk::<ForustSplit, false>(x, &mut []),
        })
    }

    /// The probability of fraud for `x` and its Saabas contributions into `out` (as
    /// [`Ensemble::contributions`]) in one walk of every tree; returns (probability, bias).
    /// The probability is bit for bit [`Ensemble::predict`]'s.
    pub fn predict_and_contributions(&self, x: &[f64], out: &mut [f64]) -> Result<(f64, f64)> {
        self.check_len(x)?;
        self.check_len(out)?;
        out.iter_mut().for_each(|o| *o = 0.0);
        let m = match self.semantics {
            Semantics::Xgboost => self.walk::<XgboostSplit, true>(x, out),
            Semantics::LightGbm => self.walk::<LightGbmSplit, true>(x, out),
            Semantics::Forust => self.walk::<ForustSplit, true>(x, out),
        };
        Ok((self.link(m), self.bias))
    }

    /// Walks every tree for `x` with the split rule `R`, summing the leaf values as the
    /// library does (XGBoost in `f32` from the base margin, LightGBM in `f64` with the
    /// base margin last); with `CONTRIBUTE`, also credits each split's change of the
    /// expected value to its feature in `out`. One monomorphised loop per library: the
    /// split rule is not matched at every node.
    #[inline]
    fn walk<R: SplitRule, const CONTRIBUTE: bool>(&self, x: &[f64], out: &mut [f64]) -> f64 {
        let mut m32 = self.base_margin as f32;
        let mut m64 = if R::BASE_FIRST { self.base_margin } else { 0.0 };
        let nodes = &self.nodes[..];
        for &r in &self.roots {
            let mut i = r as usize;
            let leaf = loop {
                let node = nodes[i];
                let f = (node.feature_flags >> 8) as usize;
                if f == NODE_LEAF as usize {
                    break node.threshold_or_value;
                }
                let v = R::prepare(x.get(f).copied().unwrap_or(f64::NAN));
                // A select, not a jump: which way a payment goes is not predictable.
                let left = R::go_left(node.feature_flags as u8, node.threshold_or_value, v);
                let next = if left { i + 1 } else { node.right as usize };
                if CONTRIBUTE {
                    if let (Some(o), Some(d)) = (out.get_mut(f), self.delta.get(next)) {
                        *o += d;
                    }
                }
                i = next;
            };
            if R::F32 {
                m32 += leaf as f32;
            } else {
                m64 += leaf;
            }
        }
        if R::F32 {
            m32 as f64
        } else if R::BASE_FIRST {
            m64
        } else {
            m64 + self.base_margin
        }
    }

    /// The probability of fraud for margin `m`, through the library's own logistic link.
    pub fn link(&self, m: f64) -> f64 {
        match self.semantics {
            Semantics::Xgboost => xgboost_sigmoid(m as f32) as f64,
            Semantics::LightGbm | Semantics::Forust => 1.0 / (1.0 + (-self.sigmoid * m).exp()),
        }
    }

    /// The probability of fraud for `x`.
    pub fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(self.link(self.margin(x)?))
    }

    /// Saabas contributions: `out[f]` receives the margin credited to feature `f` (out must
    /// have `n_features` slots; it is overwritten). Returns the bias, so that
    /// `bias + sum(out)` is the margin (up to rounding).
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> Result<f64> {
        Ok(self.predict_and_contributions(x, out)?.1)
    }
}

/// How one library routes a value at a split: XGBoost compares the value rounded to `f32`
/// (`x < threshold`, the `f32` threshold held in a `f64`), LightGBM `x <= threshold` in
/// `f64` after its C API drops |x| <= 1e-35 as sparse zero, with the missing-value rules
/// of `decision_type`, forust `x < threshold`.
trait SplitRule {
    /// Whether the margin sums in `f32` (XGBoost) rather than `f64`.
    const F32: bool;
    /// Whether the base margin starts the sum (else it is added last).
    const BASE_FIRST: bool;
    fn prepare(v: f64) -> f64;
    fn go_left(flags: u8, threshold: f64, v: f64) -> bool;
}

struct XgboostSplit;
struct LightGbmSplit;
struct ForustSplit;

impl SplitRule for XgboostSplit {
    const F32: bool = true;
    const BASE_FIRST: bool = true;
    #[inline]
    fn prepare(v: f64) -> f64 {
        v as f32 as f64
    }
    #[inline]
    fn go_left(flags: u8, threshold: f64, v: f64) -> bool {
        if v.is_nan() {
            flags & DEFAULT_LEFT != 0
        } else {
            v < threshold
        }
    }
}

impl SplitRule for LightGbmSplit {
    const F32: bool = false;
    const BASE_FIRST: bool = false;
    #[inline]
    fn prepare(v: f64) -> f64 {
        if v.abs() <= LIGHTGBM_ZERO_THRESHOLD {
            0.0
        } else {
            v
        }
    }
    #[inline]
    fn go_left(flags: u8, threshold: f64, v: f64) -> bool {
        let v = if v.is_nan() && flags & MISSING_NAN == 0 {
            0.0
        } else {
            v
        };
        if (flags & MISSING_ZERO != 0
            && (-LIGHTGBM_ZERO_THRESHOLD..=LIGHTGBM_ZERO_THRESHOLD).contains(&v))
            || (flags & MISSING_NAN != 0 && v.is_nan())
        {
            flags & DEFAULT_LEFT != 0
        } else {
            v <= threshold
        }
    }
}

impl SplitRule for ForustSplit {
    const F32: bool = false;
    const BASE_FIRST: bool = true;
    #[inline]
    fn prepare(v: f64) -> f64 {
        v
    }
    #[inline]
    fn go_left(flags: u8, threshold: f64, v: f64) -> bool {
        if v.is_nan() {
            flags & DEFAULT_LEFT != 0
        } else {
            v < threshold
        }
    }
}

/// The flat node arrays of an [`Ensemble`], for the stored model format.
///
/// Node indexes are global (tree `t` owns nodes `roots[t]..roots[t + 1]`, the last tree
/// runs to the end), nodes are in pre-order, and a leaf has `feature == -1` and
/// `left == right == -1`. `value` holds the leaf value of a leaf and the expected value
/// of a split, exactly as the scorer uses them, so a reload needs no recomputation.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatTrees {
    pub roots: Vec<i64>,
    pub feature: Vec<i64>,
    pub threshold: Vec<f64>,
    pub left: Vec<i64>,
    pub right: Vec<i64>,
    pub default_left: Vec<bool>,
    pub missing: Vec<Missing>,
    pub value: Vec<f64>,
}

impl Ensemble {
    /// The scale of the margin inside the logistic link (1 except for LightGBM models
    /// trained with another `sigmoid`).
    pub fn sigmoid(&self) -> f64 {
        self.sigmoid
    }

    /// The flat arrays, for [`Ensemble::from_flat`] to rebuild the same ensemble.
    pub fn to_flat(&self) -> FlatTrees {
        let n = self.feature.len();
        let mut f = FlatTrees {
            roots: self.roots.iter().map(|&r| r as i64).collect(),
            feature: Vec::with_capacity(n),
            threshold: self.threshold.clone(),
            left: Vec::with_capacity(n),
            right: Vec::with_capacity(n),
            default_left: self.flags.iter().map(|&b| b & DEFAULT_LEFT != 0).collect(),
            missing: Vec::with_capacity(n),
            value: self.value.clone(),
        };
        for i in 0..n {
            let leaf = self.feature[i] == LEAF;
            f.feature
                .push(if leaf { -1 } else { self.feature[i] as i64 });
            f.left.push(if leaf { -1 } else { self.left[i] as i64 });
            f.right.push(if leaf { -1 } else { self.right[i] as i64 });
            f.missing.push(if self.flags[i] & MISSING_ZERO != 0 {
                Missing::Zero
            } else if self.flags[i] & MISSING_NAN != 0 {
                Missing::Nan
            } else {
                Missing::None
            });
        }
        f
    }

    /// Rebuilds an ensemble from [`FlatTrees`] through [`Ensemble::new`], so stored text
    /// gets exactly the checks of an import (children in range, no cycle or shared node,
    /// finite thresholds and values, feature indexes in range). Splits keep their stored
    /// expected values, so scores and contributions are bit-identical to the original.
    pub fn from_flat(
        semantics: Semantics,
        n_features: usize,
        base_margin: f64,
        sigmoid: f64,
        flat: &FlatTrees,
    ) -> Result<Ensemble> {
        let n = flat.feature.len();
        if [
            flat.threshold.len(),
            flat.left.len(),
            flat.right.len(),
            flat.default_left.len(),
            flat.missing.len(),
            flat.value.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(FraudError::Malformed(
                "stored node arrays have different lengths".into(),
            ));
        }
        if flat.roots.is_empty() {
            return Err(FraudError::NoTrees);
        }
        if flat.roots[0] != 0 {
            return Err(FraudError::Malformed(
                "the first tree does not start at node 0".into(),
            ));
        }
        let mut trees = Vec::with_capacity(flat.roots.len());
        for (t, &start) in flat.roots.iter().enumerate() {
            let end = flat.roots.get(t + 1).copied().unwrap_or(n as i64);
            if end < start || end > n as i64 {
                return Err(FraudError::Malformed(format!(
                    "tree {t} spans nodes {start}..{end} of {n}"
                )));
            }
            let (a, b) = (start as usize, end as usize);
            let mut nodes = Vec::with_capacity(b - a);
            for i in a..b {
                let local = |c: i64| c.saturating_sub(start);
                nodes.push(if flat.feature[i] == -1 {
                    RawNode::Leaf {
                        value: flat.value[i],
                        cover: 1.0,
                    }
                } else {
                    RawNode::Split {
                        feature: flat.feature[i],
                        threshold: flat.threshold[i],
                        left: local(flat.left[i]),
                        right: local(flat.right[i]),
                        default_left: flat.default_left[i],
                        missing: flat.missing[i],
                        cover: 1.0,
                        expected: Some(flat.value[i]),
                    }
                });
            }
            trees.push(RawTree { nodes });
        }
        Ensemble::new(semantics, n_features, base_margin, sigmoid, &trees)
    }
}

/// XGBoost's `common::Sigmoid(float)`: `1 / (expf(min(-x, 88.7)) + 1 + 1e-16)` in `f32`.
pub fn xgboost_sigmoid(x: f32) -> f32 {
    const EPS: f32 = 1e-16;
    let x = (-x).min(88.7);
    let denom = x.exp() + 1.0 + EPS;
    1.0 / denom
}

/// Fills `order` with the reachable nodes of `tree` in pre-order (left child first),
/// refusing out-of-range children, cycles and nodes with two parents.
fn preorder(
    t: usize,
    tree: &RawTree,
    state: &mut Vec<u8>,
    order: &mut Vec<usize>,
    stack: &mut Vec<(usize, bool)>,
) -> Result<()> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let n = tree.nodes.len();
    state.clear();
    state.resize(n, NEW);
    order.clear();
    stack.clear();
    stack.push((0, false));
    while let Some((i, finished)) = stack.pop() {
        if finished {
            state[i] = DONE;
            continue;
        }
        match state[i] {
            OPEN => return Err(FraudError::Cycle { tree: t, node: i }),
            DONE => return Err(FraudError::SharedNode { tree: t, node: i }),
            _ => {}
        }
        state[i] = OPEN;
        order.push(i);
        stack.push((i, true));
        if let RawNode::Split { left, right, .. } = &tree.nodes[i] {
            for child in [*right, *left] {
                if child < 0 || child as u64 >= n as u64 {
                    return Err(FraudError::ChildOutOfRange {
                        tree: t,
                        node: i,
                        child,
                        len: n,
                    });
                }
                stack.push((child as usize, false));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(feature: i64, threshold: f64, left: i64, right: i64) -> RawNode {
        RawNode::Split {
            feature,
            threshold,
            left,
            right,
            default_left: true,
            missing: Missing::Nan,
            cover: 1.0,
            expected: None,
        }
    }

    fn leaf(value: f64) -> RawNode {
        RawNode::Leaf { value, cover: 1.0 }
    }

    fn stump(threshold: f64) -> RawTree {
        RawTree {
            nodes: vec![split(0, threshold, 1, 2), leaf(-1.0), leaf(1.0)],
        }
    }

    /// A depth-2 tree listed breadth-first (as XGBoost stores it), so the walk's pre-order
    /// layout must move nodes: every path gives its leaf, and bias plus contributions is
    /// the margin.
    #[test]
    fn breadth_first_trees_walk_and_explain_in_preorder_layout() {
        let tree = RawTree {
            nodes: vec![
                split(0, 0.5, 1, 2),
                split(1, 0.5, 3, 4),
                split(1, 0.5, 5, 6),
                leaf(1.0),
                leaf(2.0),
                leaf(3.0),
                leaf(4.0),
            ],
        };
        let e = Ensemble::new(Semantics::Forust, 2, 0.25, 1.0, &[tree]).unwrap();
        let mut out = [0.0; 2];
        for (x, leaf) in [
            ([0.0, 0.0], 1.0),
            ([0.0, 1.0], 2.0),
            ([1.0, 0.0], 3.0),
            ([1.0, 1.0], 4.0),
        ] {
            assert_eq!(e.margin(&x).unwrap(), 0.25 + leaf, "{x:?}");
            let bias = e.contributions(&x, &mut out).unwrap();
            assert!(
                (bias + out[0] + out[1] - (0.25 + leaf)).abs() < 1e-12,
                "{x:?}: {out:?}"
            );
        }
    }

    #[test]
    fn more_features_than_a_node_can_name_are_refused() {
        let err = Ensemble::new(Semantics::Forust, 1 << 24, 0.0, 1.0, &[stump(0.5)]).unwrap_err();
        assert!(matches!(err, FraudError::Unsupported(_)), "{err}");
    }

    #[test]
    fn xgboost_compares_in_f32_strictly() {
        let e = Ensemble::new(Semantics::Xgboost, 1, 0.0, 1.0, &[stump(0.5)]).unwrap();
        assert_eq!(e.margin(&[0.5]).unwrap(), 1.0); // not < 0.5: right
        assert_eq!(e.margin(&[0.4999]).unwrap(), -1.0);
        // 0.5 - 1e-12 rounds to 0.5f32, so it goes right like XGBoost.
        assert_eq!(e.margin(&[0.5 - 1e-12]).unwrap(), 1.0);
        assert_eq!(e.margin(&[f64::NAN]).unwrap(), -1.0); // default left
    }

    #[test]
    fn lightgbm_compares_in_f64_inclusive() {
        let e = Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[stump(0.5)]).unwrap();
        assert_eq!(e.margin(&[0.5]).unwrap(), -1.0);
        assert_eq!(e.margin(&[0.5 + 1e-12]).unwrap(), 1.0);
    }

    #[test]
    fn lightgbm_missing_types() {
        let mk = |missing, default_left| RawTree {
            nodes: vec![
                RawNode::Split {
                    feature: 0,
                    threshold: -1.0,
                    left: 1,
                    right: 2,
                    default_left,
                    missing,
                    cover: 1.0,
                    expected: None,
                },
                leaf(-1.0),
                leaf(1.0),
            ],
        };
        // None: NaN becomes 0.0, and 0.0 > -1 goes right even with default_left.
        let e =
            Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[mk(Missing::None, true)]).unwrap();
        assert_eq!(e.margin(&[f64::NAN]).unwrap(), 1.0);
        // Zero: 0 and tiny values and NaN go to the default child.
        let e =
            Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[mk(Missing::Zero, true)]).unwrap();
        assert_eq!(e.margin(&[0.0]).unwrap(), -1.0);
        assert_eq!(e.margin(&[1e-36]).unwrap(), -1.0);
        assert_eq!(e.margin(&[f64::NAN]).unwrap(), -1.0);
        assert_eq!(e.margin(&[1e-30]).unwrap(), 1.0);
        // Nan: only NaN is missing.
        let e = Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[mk(Missing::Nan, true)]).unwrap();
        assert_eq!(e.margin(&[f64::NAN]).unwrap(), -1.0);
        assert_eq!(e.margin(&[0.0]).unwrap(), 1.0);
    }

    #[test]
    fn contributions_add_up() {
        let tree = RawTree {
            nodes: vec![
                RawNode::Split {
                    feature: 0,
                    threshold: 0.0,
                    left: 1,
                    right: 2,
                    default_left: false,
                    missing: Missing::Nan,
                    cover: 4.0,
                    expected: None,
                },
                leaf(-2.0),
                RawNode::Split {
                    feature: 1,
                    threshold: 0.0,
                    left: 3,
                    right: 4,
                    default_left: false,
                    missing: Missing::Nan,
                    cover: 3.0,
                    expected: None,
                },
                RawNode::Leaf {
                    value: 1.0,
                    cover: 1.0,
                },
                RawNode::Leaf {
                    value: 4.0,
                    cover: 2.0,
                },
            ],
        };
        let e = Ensemble::new(Semantics::LightGbm, 2, 0.5, 1.0, &[tree]).unwrap();
        // node 2 expected = (1*1 + 4*2)/3 = 3; root = (-2*1 + 3*3)/4 = 1.75
        let mut out = [0.0; 2];
        let bias = e.contributions(&[1.0, 1.0], &mut out).unwrap();
        assert_eq!(bias, 0.5 + 1.75);
        assert_eq!(out, [3.0 - 1.75, 1.0]);
        assert_eq!(bias + out[0] + out[1], e.margin(&[1.0, 1.0]).unwrap());
    }

    #[test]
    fn validation_errors_are_distinct() {
        let mk = |nodes| vec![RawTree { nodes }];
        let err = |trees: Vec<RawTree>| {
            Ensemble::new(Semantics::LightGbm, 2, 0.0, 1.0, &trees).unwrap_err()
        };
        assert!(matches!(
            err(mk(vec![split(0, 1.0, 1, 7), leaf(0.0)])),
            FraudError::ChildOutOfRange { child: 7, .. }
        ));
        assert!(matches!(
            err(mk(vec![split(0, 1.0, 1, -1), leaf(0.0)])),
            FraudError::ChildOutOfRange { child: -1, .. }
        ));
        assert!(matches!(
            err(mk(vec![
                split(0, 1.0, 1, 2),
                leaf(0.0),
                split(1, 0.0, 0, 1)
            ])),
            FraudError::Cycle { node: 0, .. }
        ));
        assert!(matches!(
            err(mk(vec![split(0, 1.0, 1, 1), leaf(0.0)])),
            FraudError::SharedNode { node: 1, .. }
        ));
        assert!(matches!(
            err(mk(vec![split(0, f64::NAN, 1, 2), leaf(0.0), leaf(1.0)])),
            FraudError::NanThreshold { node: 0, .. }
        ));
        assert!(matches!(
            err(mk(vec![
                split(0, f64::INFINITY, 1, 2),
                leaf(0.0),
                leaf(1.0)
            ])),
            FraudError::InfiniteThreshold { node: 0, .. }
        ));
        assert!(matches!(
            err(mk(vec![split(0, 1.0, 1, 2), leaf(f64::NAN), leaf(1.0)])),
            FraudError::NonFiniteValue { node: 1, .. }
        ));
        assert!(matches!(
            err(mk(vec![split(2, 1.0, 1, 2), leaf(0.0), leaf(1.0)])),
            FraudError::FeatureOutOfRange { feature: 2, .. }
        ));
        assert!(matches!(err(mk(vec![])), FraudError::EmptyTree { tree: 0 }));
        assert!(matches!(err(vec![]), FraudError::NoTrees));
        let e = Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[stump(0.0)]).unwrap();
        assert!(matches!(
            e.predict(&[1.0, 2.0]),
            Err(FraudError::WrongFeatureCount {
                expected: 1,
                got: 2
            })
        ));
    }

    #[test]
    fn unreachable_nodes_are_dropped() {
        let tree = RawTree {
            nodes: vec![split(0, 1.0, 2, 3), leaf(9.0), leaf(0.0), leaf(1.0)],
        };
        let e = Ensemble::new(Semantics::LightGbm, 1, 0.0, 1.0, &[tree]).unwrap();
        assert_eq!(e.n_nodes(), 3);
        assert_eq!(e.margin(&[2.0]).unwrap(), 1.0);
    }

    #[test]
    fn links() {
        let e = Ensemble::new(Semantics::LightGbm, 1, 0.0, 2.0, &[stump(0.0)]).unwrap();
        assert_eq!(e.link(0.0), 0.5);
        assert_eq!(e.link(1.0), 1.0 / (1.0 + (-2.0f64).exp()));
        let e = Ensemble::new(Semantics::Xgboost, 1, 0.0, 1.0, &[stump(0.0)]).unwrap();
        assert_eq!(e.link(0.0), 0.5);
        assert!(e.link(-1000.0) > 0.0);
    }
}
