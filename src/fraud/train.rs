//! A deterministic L2-regularised logistic regression, trained in the database on the
//! features of labelled payments, and [`Scorer`]: one scoring interface for it and for
//! imported tree ensembles.
//!
//! Training standardises every feature (mean 0, standard deviation 1 over the training
//! rows; NaN is replaced by the mean, i.e. 0 after standardising) and runs Newton's method
//! (iteratively reweighted least squares) from zero weights: no randomness, no thread, the
//! same rows give the same model bit for bit. It stops after `max_iterations` or when no
//! weight moves more than `tolerance`.

use super::error::{FraudError, Result};
use super::gbdt::GbdtModel;
use super::import::Model;

/// Training knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticParams {
    /// L2 penalty on the (standardised) weights, not on the intercept.
    pub l2: f64,
    pub max_iterations: usize,
    pub tolerance: f64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams {
            l2: 1.0,
            max_iterations: 50,
            tolerance: 1e-10,
        }
    }
}

/// A trained logistic regression: `p = sigmoid(intercept + Σ w_j · (x_j - mean_j) / scale_j)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticModel {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Newton iterations run.
    pub iterations: usize,
}

impl LogisticModel {
    fn z(&self, j: usize, x: f64) -> f64 {
        if x.is_finite() {
            (x - self.mean[j]) / self.scale[j]
        } else {
            0.0
        }
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n != self.weights.len() {
            return Err(FraudError::WrongFeatureCount {
                expected: self.weights.len(),
                got: n,
            });
        }
        Ok(())
    }

    pub fn margin(&self, x: &[f64]) -> Result<f64> {
        self.check_len(x.len())?;
        Ok(self.intercept
            + x.iter()
                .enumerate()
                .map(|(j, &v)| self.weights[j] * self.z(j, v))
                .sum::<f64>())
    }

    pub fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(sigmoid(self.margin(x)?))
    }

    /// Exact additive contributions `w_j · z_j`; returns the intercept as the bias.
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> Result<f64> {
        self.check_len(x.len())?;
        self.check_len(out.len())?;
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = self.weights[j] * self.z(j, v);
        }
        Ok(self.intercept)
    }
}

fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

/// Trains on `rows` (one `Vec` per payment, in `features` order) and `labels` (fraud = true).
pub fn train_logistic(
    rows: &[Vec<f64>],
    labels: &[bool],
    features: &[String],
    params: LogisticParams,
) -> Result<LogisticModel> {
    let d = features.len();
    if rows.is_empty() || rows.len() != labels.len() {
        return Err(FraudError::BadTrainingData(format!(
            "{} rows and {} labels",
            rows.len(),
            labels.len()
        )));
    }
    if let Some(i) = rows.iter().position(|r| r.len() != d) {
        return Err(FraudError::BadTrainingData(format!(
            "row {i} has {} values for {d} features",
            rows[i].len()
        )));
    }
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 || positives == labels.len() {
        return Err(FraudError::OneClass {
            positives,
            negatives: labels.len() - positives,
        });
    }
    if !(params.l2 >= 0.0 && params.l2.is_finite()) {
        return Err(FraudError::BadParameter {
            name: "l2".into(),
            value: params.l2.to_string(),
        });
    }
    // Standardisation over the finite values of each feature.
    let mut mean = vec![0.0; d];
    let mut scale = vec![1.0; d];
    for j in 0..d {
        let vals = rows.iter().map(|r| r[j]).filter(|v| v.is_finite());
        let (n, s) = vals.clone().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
        if n > 0 {
            mean[j] = s / n as f64;
            let var = vals.map(|v| (v - mean[j]).powi(2)).sum::<f64>() / n as f64;
            if var > 0.0 {
                scale[j] = var.sqrt();
            }
        }
    }
    let mut model = LogisticModel {
        features: features.to_vec(),
        mean,
        scale,
        weights: vec![0.0; d],
        intercept: 0.0,
        iterations: 0,
    };
    // Parameters θ = (intercept, w_1..w_d); z-row cached once.
    let k = d + 1;
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain(r.iter().enumerate().map(|(j, &v)| model.z(j, v)))
                .collect()
        })
        .collect();
    let mut theta = vec![0.0; k];
    let mut grad = vec![0.0; k];
    let mut hess = vec![0.0; k * k];
    for it in 0..params.max_iterations {
        grad.iter_mut().for_each(|g| *g = 0.0);
        hess.iter_mut().for_each(|h| *h = 0.0);
        for (zi, &y) in z.iter().zip(labels) {
            let m: f64 = zi.iter().zip(&theta).map(|(a, b)| a * b).sum();
            let p = sigmoid(m);
            let r = p - if y { 1.0 } else { 0.0 };
            let w = (p * (1.0 - p)).max(1e-12);
            for a in 0..k {
                grad[a] += r * zi[a];
                for b in 0..=a {
                    hess[a * k + b] += w * zi[a] * zi[b];
                }
            }
        }
        for a in 1..k {
            grad[a] += params.l2 * theta[a];
            hess[a * k + a] += params.l2;
        }
        hess[0] += 1e-9;
        let step = cholesky_solve(&mut hess, &grad, k).ok_or_else(|| {
            FraudError::BadTrainingData("the training problem is singular".into())
        })?;
        let mut moved: f64 = 0.0;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t -= s;
            moved = moved.max(s.abs());
        }
        model.iterations = it + 1;
        if !theta.iter().all(|t| t.is_finite()) {
            return Err(FraudError::BadTrainingData("training diverged".into()));
        }
        if moved < params.tolerance {
            break;
        }
    }
    model.intercept = theta[0];
    model.weights = theta[1..].to_vec();
    Ok(model)
}

/// Solves `A x = b` for symmetric positive definite `A` (lower triangle used, overwritten
/// by its Cholesky factor). None if `A` is not positive definite.
fn cholesky_solve(a: &mut [f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    for j in 0..k {
        let mut s = a[j * k + j];
        for p in 0..j {
            s -= a[j * k + p] * a[j * k + p];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let l = s.sqrt();
        a[j * k + j] = l;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / l;
        }
    }
    let mut y = b.to_vec();
    for i in 0..k {
        for p in 0..i {
            y[i] -= a[i * k + p] * y[p];
        }
        y[i] /= a[i * k + i];
    }
    for i in (0..k).rev() {
        for p in i + 1..k {
            y[i] -= a[p * k + i] * y[p];
        }
        y[i] /= a[i * k + i];
    }
    Some(y)
}

/// One scoring interface for every model kind the capability stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Scorer {
    /// An imported XGBoost or LightGBM model.
    Trees(Model),
    Logistic(LogisticModel),
    /// A GBDT trained in the database ([`super::gbdt::train_gbdt`]).
    Gbdt(GbdtModel),
}

impl Scorer {
    /// A short name of the model kind: `xgboost`, `lightgbm`, `logistic` or `gbdt`
    /// (the registry's `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Scorer::Trees(m) => match m.format {
                super::import::ModelFormat::XgboostJson => "xgboost",
                super::import::ModelFormat::LightGbmText => "lightgbm",
            },
            Scorer::Logistic(_) => "logistic",
            Scorer::Gbdt(_) => "gbdt",
        }
    }

    /// Feature names in input order (resolve them once with `FeatureLayout::new`).
    pub fn features(&self) -> &[String] {
        match self {
            Scorer::Trees(m) => &m.features,
            Scorer::Logistic(m) => &m.features,
            Scorer::Gbdt(m) => &m.features,
        }
    }

    pub fn predict(&self, x: &[f64]) -> Result<f64> {
        match self {
            Scorer::Trees(m) => m.ensemble.predict(x),
            Scorer::Logistic(m) => m.predict(x),
            Scorer::Gbdt(m) => m.ensemble.predict(x),
        }
    }

    /// The probability of fraud for `x` and its per-feature contributions into `out`, in
    /// one pass over the trees (the probability equals [`Scorer::predict`]'s).
    pub fn predict_and_contributions(&self, x: &[f64], out: &mut [f64]) -> Result<f64> {
        match self {
            Scorer::Trees(m) => Ok(m.ensemble.predict_and_contributions(x, out)?.0),
            Scorer::Gbdt(m) => Ok(m.ensemble.predict_and_contributions(x, out)?.0),
            Scorer::Logistic(m) => {
                m.contributions(x, out)?;
                m.predict(x)
            }
        }
    }

    /// Per-feature contributions in log-odds (Saabas for trees, exact for logistic);
    /// returns the bias term.
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> Result<f64> {
        match self {
            Scorer::Trees(m) => m.ensemble.contributions(x, out),
            Scorer::Logistic(m) => m.contributions(x, out),
            Scorer::Gbdt(m) => m.ensemble.contributions(x, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::metrics::auc_roc;

    /// A deterministic data set: y depends on x0 (strongly) and x1 (weakly), x2 is noise.
    fn data() -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut state: u64 = 42;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..2000 {
            let x0 = next() * 10.0;
            let x1 = if i % 17 == 0 {
                f64::NAN
            } else {
                next() * 100.0
            };
            let x2 = next();
            let m = -6.0 + 1.0 * x0 + 0.01 * x1.max(0.0);
            labels.push(next() < sigmoid(m));
            rows.push(vec![x0, x1, x2]);
        }
        (rows, labels)
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn learns_and_is_deterministic() {
        let (rows, labels) = data();
        let p = LogisticParams {
            l2: 0.1,
            ..Default::default()
        };
        let m = train_logistic(&rows, &labels, &names(), p).unwrap();
        assert_eq!(m, train_logistic(&rows, &labels, &names(), p).unwrap());
        assert!(m.iterations < 50, "converged in {}", m.iterations);
        // Unstandardised slope of x0 ≈ 1.
        let slope = m.weights[0] / m.scale[0];
        assert!((slope - 1.0).abs() < 0.15, "{slope}");
        assert!(m.weights[0].abs() > 10.0 * m.weights[2].abs());
        let scorer = Scorer::Logistic(m.clone());
        let pairs: Vec<(f64, bool)> = rows
            .iter()
            .zip(&labels)
            .map(|(r, &y)| (scorer.predict(r).unwrap(), y))
            .collect();
        assert!(auc_roc(&pairs).unwrap() > 0.9);
        let mut out = [0.0; 3];
        let bias = scorer.contributions(&rows[1], &mut out).unwrap();
        let sum = bias + out.iter().sum::<f64>();
        assert!((sum - m.margin(&rows[1]).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn refuses_bad_data() {
        let (rows, labels) = data();
        let p = LogisticParams::default();
        assert!(matches!(
            train_logistic(&rows, &labels[1..], &names(), p),
            Err(FraudError::BadTrainingData(_))
        ));
        assert!(matches!(
            train_logistic(&rows, &vec![false; rows.len()], &names(), p),
            Err(FraudError::OneClass { .. })
        ));
        assert!(matches!(
            train_logistic(&[vec![1.0]], &[true], &names(), p),
            Err(FraudError::BadTrainingData(_))
        ));
    }
}
