//! Gradient-boosted trees trained in the database with the `forust-ml` crate.
//!
//! We drive forust's own building blocks (its binning, its tree grower and split finder,
//! its log-loss gradients) from our boosting loop instead of calling
//! `GradientBooster::fit`, because `fit` cannot be interrupted and cannot continue from a
//! previous margin: our loop checks `should_stop` between every two rounds, and it
//! reproduces `fit` tree for tree (a test compares both). Training is deterministic: no
//! row or column subsampling, no threads (`parallel = false` everywhere), fixed binning.
//!
//! NaN is "missing": forust's imputer splitter sends it to whichever child gains more,
//! which becomes the split's default child. Infinite values are refused, because a cut
//! at infinity would become a threshold no scorer accepts.
//!
//! The trees are converted into our flat [`Ensemble`] with [`Semantics::Forust`]
//! (`x < threshold` in `f64`, margin = base + Σ leaves in tree order), so a trained model
//! scores, explains and stores like an imported one.

use super::ensemble::{Ensemble, Missing, RawNode, RawTree, Semantics};
use super::error::{FraudError, Result};
use super::import::check_duplicates;
use forust_ml::binning::bin_matrix;
use forust_ml::constraints::ConstraintMap;
use forust_ml::data::Matrix;
use forust_ml::gradientbooster::GrowPolicy;
use forust_ml::objective::{LogLoss, ObjectiveFunction};
use forust_ml::sampler::SampleMethod;
use forust_ml::splitter::MissingImputerSplitter;
use forust_ml::tree::Tree;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Training knobs, with defaults that suit tabular fraud data of 10^3..10^6 rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbdtParams {
    /// Boosting rounds (one tree each); default 100, 1..=10 000.
    pub iterations: usize,
    /// Shrinkage of each tree's leaves; default 0.1, in (0, 1].
    pub learning_rate: f64,
    /// Deepest split level; default 5, 1..=16 (2^16 leaves is more than a scorer wants).
    pub max_depth: usize,
    /// Least sum of hessians (p·(1-p)) a child must keep; default 1.0, >= 0. Guards
    /// against leaves fit to a handful of rows.
    pub min_leaf_weight: f64,
    /// L2 penalty on leaf weights; default 1.0, >= 0.
    pub l2: f64,
    /// Histogram bins per feature (quantiles of the training values); default 256,
    /// 2..=1024.
    pub nbins: usize,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            iterations: 100,
            learning_rate: 0.1,
            max_depth: 5,
            min_leaf_weight: 1.0,
            l2: 1.0,
            nbins: 256,
        }
    }
}

impl GbdtParams {
    /// Refuses values outside the documented ranges, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &str, value: String, expected: &str) -> FraudError {
            FraudError::InvalidParameter {
                name: name.into(),
                value,
                expected: expected.into(),
            }
        }
        if !(1..=10_000).contains(&self.iterations) {
            return Err(bad("iterations", self.iterations.to_string(), "1 to 10000"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(bad(
                "learning_rate",
                self.learning_rate.to_string(),
                "a number in (0, 1]",
            ));
        }
        if !(1..=16).contains(&self.max_depth) {
            return Err(bad("max_depth", self.max_depth.to_string(), "1 to 16"));
        }
        if !(self.min_leaf_weight >= 0.0 && self.min_leaf_weight <= f32::MAX as f64) {
            return Err(bad(
                "min_leaf_weight",
                self.min_leaf_weight.to_string(),
                "a finite number >= 0",
            ));
        }
        if !(self.l2 >= 0.0 && self.l2 <= f32::MAX as f64) {
            return Err(bad("l2", self.l2.to_string(), "a finite number >= 0"));
        }
        if !(2..=1024).contains(&self.nbins) {
            return Err(bad("nbins", self.nbins.to_string(), "2 to 1024"));
        }
        Ok(())
    }
}

/// A GBDT trained in the database, scored through [`Semantics::Forust`].
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtModel {
    pub features: Vec<String>,
    pub ensemble: Ensemble,
}

impl GbdtModel {
    pub fn predict(&self, x: &[f64]) -> Result<f64> {
        self.ensemble.predict(x)
    }
}

/// forust's trees and base score, before conversion (kept apart so tests can compare
/// with forust's own predictions).
pub(crate) struct ForustFit {
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

/// Runs a forust call, turning a panic inside the library into an error: the library
/// asserts on inputs we believe we have validated, and a backend must not die of it.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| FraudError::Training(format!("forust panicked in {what}")))
}

fn check_data(rows: &[Vec<f64>], labels: &[bool], features: &[String]) -> Result<()> {
    let d = features.len();
    if d == 0 {
        return Err(FraudError::BadTrainingData("no features".into()));
    }
    check_duplicates(features)?;
    if rows.len() < 2 || rows.len() != labels.len() {
        return Err(FraudError::BadTrainingData(format!(
            "{} rows and {} labels",
            rows.len(),
            labels.len()
        )));
    }
    for (i, r) in rows.iter().enumerate() {
        if r.len() != d {
            return Err(FraudError::BadTrainingData(format!(
                "row {i} has {} values for {d} features",
                r.len()
            )));
        }
        if let Some(j) = r.iter().position(|v| v.is_infinite()) {
            return Err(FraudError::BadTrainingData(format!(
                "row {i} feature \"{}\" is infinite (use NaN for missing)",
                features[j]
            )));
        }
    }
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 || positives == labels.len() {
        return Err(FraudError::OneClass {
            positives,
            negatives: labels.len() - positives,
        });
    }
    Ok(())
}

/// The boosting loop over forust's pieces; see the module documentation.
pub(crate) fn fit_forust(
    rows: &[Vec<f64>],
    labels: &[bool],
    features: &[String],
    params: GbdtParams,
    should_stop: &dyn Fn() -> bool,
) -> Result<ForustFit> {
    params.validate()?;
    check_data(rows, labels, features)?;
    let (n, d) = (rows.len(), features.len());
    // forust wants a column-major matrix.
    let mut data = Vec::with_capacity(n * d);
    for j in 0..d {
        data.extend(rows.iter().map(|r| r[j]));
    }
    let matrix = Matrix::new(&data, n, d);
    let y: Vec<f64> = labels.iter().map(|&l| if l { 1.0 } else { 0.0 }).collect();
    let weights = vec![1.0; n];
    // The log-odds of the fraud rate, as forust's `initialize_base_score`.
    let base_score = LogLoss::calc_init(&y, &weights);
    if !base_score.is_finite() {
        return Err(FraudError::Training("the base score is not finite".into()));
    }
    let nbins = params.nbins as u16; // validate() bounds it to 1024
    let binned = guarded("binning", || {
        bin_matrix(&matrix, &weights, nbins, f64::NAN, false)
    })?
    .map_err(|e| FraudError::Training(e.to_string()))?;
    let bins = Matrix::new(&binned.binned_data, n, d);
    let splitter = MissingImputerSplitter::new(
        0.0,
        params.l2 as f32,
        0.0,
        0.0,
        params.min_leaf_weight as f32,
        params.learning_rate as f32,
        true,
        ConstraintMap::new(),
    );
    let columns: Vec<usize> = (0..d).collect();
    let mut yhat = vec![base_score; n];
    let mut trees = Vec::with_capacity(params.iterations);
    for round in 0..params.iterations {
        if should_stop() {
            return Err(FraudError::Interrupted { rounds: round });
        }
        let (grad, hess) = LogLoss::calc_grad_hess(&y, &yhat, &weights);
        let tree = guarded("tree growing", || {
            let mut tree = Tree::new();
            tree.fit(
                &bins,
                matrix.index.clone(),
                &columns,
                &binned.cuts,
                &grad,
                &hess,
                &splitter,
                usize::MAX,
                params.max_depth,
                false,
                &SampleMethod::None,
                &GrowPolicy::DepthWise,
            );
            tree
        })?;
        for (p, r) in yhat.iter_mut().zip(rows) {
            *p += tree.predict_row_from_row_slice(r, &f64::NAN);
        }
        trees.push(tree);
    }
    Ok(ForustFit { base_score, trees })
}

/// Converts forust trees into an [`Ensemble`]; a node with a separate missing branch
/// (forust's `create_missing_branch`, which we never ask for) is refused.
pub(crate) fn convert(fit: &ForustFit, n_features: usize) -> Result<Ensemble> {
    let mut raw = Vec::with_capacity(fit.trees.len());
    for (t, tree) in fit.trees.iter().enumerate() {
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for (i, node) in tree.nodes.iter().enumerate() {
            if node.num != i {
                return Err(FraudError::Malformed(format!(
                    "forust tree {t} node {i} is numbered {}",
                    node.num
                )));
            }
            let cover = node.hessian_sum as f64;
            if node.is_leaf {
                nodes.push(RawNode::Leaf {
                    value: node.weight_value as f64,
                    cover,
                });
                continue;
            }
            let default_left = if node.missing_node == node.left_child {
                true
            } else if node.missing_node == node.right_child {
                false
            } else {
                return Err(FraudError::Unsupported(format!(
                    "forust tree {t} node {i} has a separate missing branch"
                )));
            };
            nodes.push(RawNode::Split {
                feature: node.split_feature as i64,
                threshold: node.split_value,
                left: node.left_child as i64,
                right: node.right_child as i64,
                default_left,
                missing: Missing::Nan,
                cover,
                expected: None,
            });
        }
        raw.push(RawTree { nodes });
    }
    Ensemble::new(Semantics::Forust, n_features, fit.base_score, 1.0, &raw)
}

/// Trains a binary log-loss GBDT on `rows` (in `features` order; NaN = missing) and
/// `labels` (fraud = true). `should_stop` is called before each boosting round; when it
/// returns true training ends with [`FraudError::Interrupted`].
pub fn train_gbdt(
    rows: &[Vec<f64>],
    labels: &[bool],
    features: &[String],
    params: GbdtParams,
    should_stop: &dyn Fn() -> bool,
) -> Result<GbdtModel> {
    let fit = fit_forust(rows, labels, features, params, should_stop)?;
    Ok(GbdtModel {
        features: features.to_vec(),
        ensemble: convert(&fit, features.len())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::metrics::average_precision;
    use crate::fraud::train::{train_logistic, LogisticParams, Scorer};
    use forust_ml::GradientBooster;
    use std::cell::Cell;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A non-linear problem: fraud when exactly one of x0, x1 is high (XOR) and x2 is
    /// noise; 5% of x1 is missing.
    fn xor_data(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut next = rng(seed);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let x0 = next();
            let x1 = next();
            let x2 = next() * 50.0;
            let hot = (x0 > 0.5) != (x1 > 0.5);
            let p = if hot { 0.6 } else { 0.03 };
            labels.push(next() < p);
            let x1 = if next() < 0.05 { f64::NAN } else { x1 };
            rows.push(vec![x0, x1, x2]);
        }
        (rows, labels)
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn small() -> GbdtParams {
        GbdtParams {
            iterations: 30,
            max_depth: 3,
            ..Default::default()
        }
    }

    fn column_major(rows: &[Vec<f64>]) -> Vec<f64> {
        let d = rows[0].len();
        (0..d)
            .flat_map(|j| rows.iter().map(move |r| r[j]))
            .collect()
    }

    #[test]
    fn scores_equal_forust_predictions() {
        let (rows, labels) = xor_data(2000, 1);
        let fit = fit_forust(&rows, &labels, &names(), small(), &|| false).unwrap();
        let ens = convert(&fit, 3).unwrap();
        assert_eq!(ens.n_trees(), 30);
        let (test, _) = xor_data(500, 2);
        assert!(test.iter().any(|r| r[1].is_nan()));
        let base = fit.base_score;
        let mut booster = GradientBooster::default().set_parallel(false);
        booster.base_score = base;
        booster.trees = fit.trees;
        let cm = column_major(&test);
        let theirs = booster.predict(&Matrix::new(&cm, test.len(), 3), false);
        for (r, m) in test.iter().zip(&theirs) {
            assert_eq!(ens.margin(r).unwrap(), *m, "{r:?}");
            assert_eq!(ens.predict(r).unwrap(), 1.0 / (1.0 + (-m).exp()));
        }
    }

    #[test]
    fn loop_reproduces_forust_fit() {
        let (rows, labels) = xor_data(1500, 3);
        let p = small();
        let fit = fit_forust(&rows, &labels, &names(), p, &|| false).unwrap();
        let mut booster = GradientBooster::default()
            .set_parallel(false)
            .set_iterations(p.iterations)
            .set_learning_rate(p.learning_rate as f32)
            .set_max_depth(p.max_depth)
            .set_l2(p.l2 as f32)
            .set_min_leaf_weight(p.min_leaf_weight as f32)
            .set_nbins(p.nbins as u16)
            .set_initialize_base_score(true);
        let cm = column_major(&rows);
        let y: Vec<f64> = labels.iter().map(|&l| l as u8 as f64).collect();
        let m = Matrix::new(&cm, rows.len(), 3);
        booster.fit_unweighted(&m, &y, None).unwrap();
        assert_eq!(booster.base_score, fit.base_score);
        let ens = convert(&fit, 3).unwrap();
        for (r, theirs) in rows.iter().zip(booster.predict(&m, false)) {
            assert_eq!(ens.margin(r).unwrap(), theirs);
        }
    }

    #[test]
    fn deterministic_and_contributions_add_up() {
        let (rows, labels) = xor_data(1000, 4);
        let a = train_gbdt(&rows, &labels, &names(), small(), &|| false).unwrap();
        let b = train_gbdt(&rows, &labels, &names(), small(), &|| false).unwrap();
        assert_eq!(a, b);
        let mut out = [0.0; 3];
        for r in rows.iter().take(200) {
            let bias = a.ensemble.contributions(r, &mut out).unwrap();
            let sum = bias + out.iter().sum::<f64>();
            assert!((sum - a.ensemble.margin(r).unwrap()).abs() < 1e-9);
        }
    }

    #[test]
    fn beats_logistic_on_a_nonlinear_problem() {
        let (rows, labels) = xor_data(3000, 5);
        let (test, test_labels) = xor_data(2000, 6);
        let gbdt = Scorer::Gbdt(train_gbdt(&rows, &labels, &names(), small(), &|| false).unwrap());
        let lr = Scorer::Logistic(
            train_logistic(&rows, &labels, &names(), LogisticParams::default()).unwrap(),
        );
        let ap = |s: &Scorer| {
            let pairs: Vec<(f64, bool)> = test
                .iter()
                .zip(&test_labels)
                .map(|(r, &y)| (s.predict(r).unwrap(), y))
                .collect();
            average_precision(&pairs).unwrap()
        };
        let (g, l) = (ap(&gbdt), ap(&lr));
        assert!(g > l + 0.15, "gbdt AUC-PR {g} vs logistic {l}");
    }

    #[test]
    fn should_stop_is_checked_between_rounds() {
        let (rows, labels) = xor_data(500, 7);
        let calls = Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 4
        };
        let r = train_gbdt(&rows, &labels, &names(), small(), &stop);
        assert_eq!(r, Err(FraudError::Interrupted { rounds: 4 }));
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn refuses_bad_params_and_data() {
        let (rows, labels) = xor_data(200, 8);
        let f = names();
        let run = |p: GbdtParams| train_gbdt(&rows, &labels, &f, p, &|| false);
        let name_of = |r: Result<GbdtModel>| match r {
            Err(FraudError::InvalidParameter { name, .. }) => name,
            other => format!("{other:?}"),
        };
        let d = GbdtParams::default();
        for (p, name) in [
            (GbdtParams { iterations: 0, ..d }, "iterations"),
            (
                GbdtParams {
                    learning_rate: 0.0,
                    ..d
                },
                "learning_rate",
            ),
            (
                GbdtParams {
                    learning_rate: f64::NAN,
                    ..d
                },
                "learning_rate",
            ),
            (GbdtParams { max_depth: 0, ..d }, "max_depth"),
            (
                GbdtParams {
                    min_leaf_weight: -1.0,
                    ..d
                },
                "min_leaf_weight",
            ),
            (
                GbdtParams {
                    l2: f64::INFINITY,
                    ..d
                },
                "l2",
            ),
            (GbdtParams { nbins: 1, ..d }, "nbins"),
        ] {
            assert_eq!(name_of(run(p)), name);
        }
        let mut inf = rows.clone();
        inf[3][2] = f64::INFINITY;
        assert!(matches!(
            train_gbdt(&inf, &labels, &f, d, &|| false),
            Err(FraudError::BadTrainingData(s)) if s.contains("\"c\"")
        ));
        assert!(matches!(
            train_gbdt(&rows, &vec![true; rows.len()], &f, d, &|| false),
            Err(FraudError::OneClass { .. })
        ));
        assert!(matches!(
            train_gbdt(&rows, &labels[1..], &f, d, &|| false),
            Err(FraudError::BadTrainingData(_))
        ));
        let dup = vec!["a".to_string(), "a".into(), "c".into()];
        assert!(matches!(
            train_gbdt(&rows, &labels, &dup, d, &|| false),
            Err(FraudError::DuplicateFeature(_))
        ));
    }
}
