//! Ranking metrics for fraud models from `(score, is_fraud)` pairs.
//!
//! Every metric looks at the operating points "flag every payment with score >= t" for the
//! distinct scores t, so tied scores are always flagged together (never split in an order
//! that flatters the model). Fraud is rare, so AUC-PR (average precision) and recall at a
//! tiny false-positive rate say more than AUC-ROC.

use super::error::{FraudError, Result};

/// The usual summary of a fraud model on labelled payments.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub positives: usize,
    pub negatives: usize,
    /// Average precision: Σ (recall_k - recall_{k-1}) · precision_k over thresholds.
    pub auc_pr: f64,
    /// Probability that a random fraud outscores a random non-fraud (ties count half).
    pub auc_roc: f64,
    pub recall_at_fpr_0_1pct: f64,
    pub recall_at_fpr_1pct: f64,
    pub precision_at_recall_80pct: f64,
}

/// (true positives, false positives) at each distinct score, highest first; positives;
/// negatives.
type Curve = (Vec<(usize, usize)>, usize, usize);

/// The operating points of `pairs`, refusing NaN scores and a single class.
fn curve(pairs: &[(f64, bool)]) -> Result<Curve> {
    if let Some(index) = pairs.iter().position(|(s, _)| s.is_nan()) {
        return Err(FraudError::NanScore { index });
    }
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(FraudError::OneClass {
            positives,
            negatives,
        });
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by(|&a, &b| pairs[b].0.total_cmp(&pairs[a].0));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    for (k, &i) in order.iter().enumerate() {
        if pairs[i].1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_group = order
            .get(k + 1)
            .is_none_or(|&j| pairs[j].0.total_cmp(&pairs[i].0).is_ne());
        if last_of_group {
            points.push((tp, fp));
        }
    }
    Ok((points, positives, negatives))
}

/// Average precision (area under the precision-recall curve, step-wise as scikit-learn's
/// `average_precision_score`).
pub fn average_precision(pairs: &[(f64, bool)]) -> Result<f64> {
    let (points, p, _) = curve(pairs)?;
    let mut ap = 0.0;
    let mut prev_tp = 0;
    for (tp, fp) in points {
        ap += (tp - prev_tp) as f64 / p as f64 * (tp as f64 / (tp + fp) as f64);
        prev_tp = tp;
    }
    Ok(ap)
}

/// Area under the ROC curve by the trapezoid rule over tie groups (= Mann-Whitney U with
/// ties counted half).
pub fn auc_roc(pairs: &[(f64, bool)]) -> Result<f64> {
    let (points, p, n) = curve(pairs)?;
    let mut area = 0.0;
    let (mut tp0, mut fp0) = (0usize, 0usize);
    for (tp, fp) in points {
        area += (fp - fp0) as f64 * (tp + tp0) as f64 / 2.0;
        tp0 = tp;
        fp0 = fp;
    }
    Ok(area / (p as f64 * n as f64))
}

/// The best recall among thresholds whose false-positive rate is at most `max_fpr`
/// (0 when even the highest score group exceeds it).
pub fn recall_at_fpr(pairs: &[(f64, bool)], max_fpr: f64) -> Result<f64> {
    let (points, p, n) = curve(pairs)?;
    Ok(points
        .iter()
        .filter(|(_, fp)| *fp as f64 / n as f64 <= max_fpr)
        .map(|(tp, _)| *tp as f64 / p as f64)
        .fold(0.0, f64::max))
}

/// The best precision among thresholds whose recall is at least `min_recall`.
pub fn precision_at_recall(pairs: &[(f64, bool)], min_recall: f64) -> Result<f64> {
    let (points, p, _) = curve(pairs)?;
    Ok(points
        .iter()
        .filter(|(tp, _)| *tp as f64 / p as f64 >= min_recall)
        .map(|(tp, fp)| *tp as f64 / (tp + fp) as f64)
        .fold(0.0, f64::max))
}

/// All of the above at once.
pub fn summary(pairs: &[(f64, bool)]) -> Result<Summary> {
    let (_, positives, negatives) = curve(pairs)?;
    Ok(Summary {
        positives,
        negatives,
        auc_pr: average_precision(pairs)?,
        auc_roc: auc_roc(pairs)?,
        recall_at_fpr_0_1pct: recall_at_fpr(pairs, 0.001)?,
        recall_at_fpr_1pct: recall_at_fpr(pairs, 0.01)?,
        precision_at_recall_80pct: precision_at_recall(pairs, 0.8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: [(f64, bool); 4] = [(0.9, true), (0.8, false), (0.7, true), (0.6, false)];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed() {
        // AP = 1·½ + ⅔·½; ROC: 3 of the 4 (fraud, non-fraud) pairs are ordered right.
        assert!(close(average_precision(&SMALL).unwrap(), 5.0 / 6.0));
        assert!(close(auc_roc(&SMALL).unwrap(), 0.75));
        assert_eq!(recall_at_fpr(&SMALL, 0.0).unwrap(), 0.5);
        assert_eq!(recall_at_fpr(&SMALL, 0.5).unwrap(), 1.0);
        assert!(close(precision_at_recall(&SMALL, 0.8).unwrap(), 2.0 / 3.0));
        assert_eq!(precision_at_recall(&SMALL, 0.5).unwrap(), 1.0);
        let perfect = [(0.2, false), (0.9, true), (0.1, false), (0.8, true)];
        let s = summary(&perfect).unwrap();
        assert_eq!((s.auc_pr, s.auc_roc), (1.0, 1.0));
        assert_eq!(s.recall_at_fpr_0_1pct, 1.0);
        assert_eq!(s.precision_at_recall_80pct, 1.0);
        assert_eq!((s.positives, s.negatives), (2, 2));
    }

    #[test]
    fn ties_are_flagged_together() {
        let tied = [(0.5, true), (0.5, false)];
        assert_eq!(auc_roc(&tied).unwrap(), 0.5);
        assert_eq!(average_precision(&tied).unwrap(), 0.5);
        assert_eq!(recall_at_fpr(&tied, 0.0).unwrap(), 0.0);
        // A fraud and a non-fraud tied at the top, then another tied pair at the bottom.
        let s = [(0.9, true), (0.9, false), (0.1, true), (0.1, false)];
        // pairs: (p0,n0)=½, (p0,n1)=1, (p1,n0)=0, (p1,n1)=½ → 2/4
        assert_eq!(auc_roc(&s).unwrap(), 0.5);
        // thresholds: 0.9 → P=½ R=½; 0.1 → P=½ R=1 → AP = ½
        assert_eq!(average_precision(&s).unwrap(), 0.5);
    }

    #[test]
    fn errors() {
        assert_eq!(
            auc_roc(&[(0.1, true), (0.2, true)]),
            Err(FraudError::OneClass {
                positives: 2,
                negatives: 0
            })
        );
        assert_eq!(
            summary(&[]),
            Err(FraudError::OneClass {
                positives: 0,
                negatives: 0
            })
        );
        assert_eq!(
            average_precision(&[(0.1, true), (f64::NAN, false)]),
            Err(FraudError::NanScore { index: 1 })
        );
    }
}
