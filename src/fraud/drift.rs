//! Drift of a feature or score: a quantile histogram of reference values (the training
//! data, or last month's scores) and the population stability index of current values
//! against it.
//!
//! Bin edges are quantiles of the reference, so each bin holds about the same share of
//! it and PSI reacts to shifts where the data is, not where the range is. Bin `i` holds
//! `edges[i-1] <= v < edges[i]` (the first and last bins are open-ended, so ±infinity
//! fall in them); NaN is counted in a bin of its own, since a feature going missing is
//! drift too.
//!
//! `PSI = Σ_bins (c_i - r_i) · ln(c_i / r_i)` over the current (`c`) and reference (`r`)
//! shares, NaN bin included. A share of 0 is replaced by [`PSI_EPSILON`] (no
//! renormalisation), so an emptied or newly filled bin adds a large but finite term. The
//! usual reading: < 0.1 stable, 0.1..0.25 moderate shift, > 0.25 significant shift.

use super::error::{FraudError, Result};
use super::json::{self, Json};
use std::fmt::Write;

/// Bins of [`Histogram::from_reference`] when the caller has no preference.
pub const DEFAULT_BINS: usize = 10;
/// Most bins accepted: more would make the shares too noisy to compare.
pub const MAX_BINS: usize = 1000;
/// The share used for an empty bin in [`psi`]: 0.01 %, the common choice, small enough
/// not to hide a real change and large enough to keep `ln` finite.
pub const PSI_EPSILON: f64 = 1e-4;

/// Reference counts per quantile bin plus a NaN count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Strictly increasing finite inner edges; `edges.len() + 1` bins.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub nan: u64,
}

impl Histogram {
    /// Quantile edges of `values` for `bins` bins (fewer when values repeat: equal
    /// quantiles collapse into one edge), with the reference's own counts.
    pub fn from_reference(values: &[f64], bins: usize) -> Result<Histogram> {
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(FraudError::InvalidParameter {
                name: "bins".into(),
                value: bins.to_string(),
                expected: format!("1 to {MAX_BINS}"),
            });
        }
        if values.is_empty() {
            return Err(FraudError::BadTrainingData("no reference values".into()));
        }
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::with_capacity(bins);
        if !sorted.is_empty() {
            for k in 1..bins {
                let e = sorted[k * sorted.len() / bins];
                if edges.last().is_none_or(|&last| e > last) {
                    edges.push(e);
                }
            }
        }
        let mut h = Histogram {
            counts: vec![0; edges.len() + 1],
            edges,
            nan: 0,
        };
        h.add(values);
        Ok(h)
    }

    /// The bin of `v`, `None` for NaN.
    pub fn bin_of(&self, v: f64) -> Option<usize> {
        (!v.is_nan()).then(|| self.edges.partition_point(|&e| e <= v))
    }

    fn add(&mut self, values: &[f64]) {
        for &v in values {
            match self.bin_of(v) {
                Some(b) => self.counts[b] += 1,
                None => self.nan += 1,
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.nan
    }

    /// `{"edges":[...],"counts":[...],"nan":n}` with exact `f64` edges.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\"edges\":[");
        for (i, e) in self.edges.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(s, "{sep}{e:?}");
        }
        s.push_str("],\"counts\":[");
        for (i, c) in self.counts.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(s, "{sep}{c}");
        }
        let _ = write!(s, "],\"nan\":{}}}", self.nan);
        s
    }

    /// Parses [`Histogram::to_json`] text, refusing edges that are not finite and
    /// increasing, a count list of the wrong length and an empty reference.
    pub fn from_json(text: &str) -> Result<Histogram> {
        if text.len() > 1 << 20 {
            return Err(FraudError::TooLarge {
                bytes: text.len(),
                limit: 1 << 20,
            });
        }
        let root = json::parse(text)?;
        let arr = |key: &str| -> Result<&[Json<'_>]> {
            root.get(key)
                .ok_or_else(|| FraudError::MissingField(key.into()))?
                .as_array()
                .ok_or_else(|| {
                    FraudError::Malformed(format!("histogram \"{key}\" is not an array"))
                })
        };
        let count = |v: &Json<'_>, what: &str| -> Result<u64> {
            v.as_i64()
                .and_then(|c| u64::try_from(c).ok())
                .ok_or_else(|| FraudError::Malformed(format!("histogram {what} is not a count")))
        };
        let edges: Vec<f64> = arr("edges")?
            .iter()
            .map(|e| e.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                FraudError::Malformed("histogram edges must be finite numbers".into())
            })?;
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FraudError::Malformed(
                "histogram edges are not strictly increasing".into(),
            ));
        }
        let counts = arr("counts")?
            .iter()
            .map(|c| count(c, "counts"))
            .collect::<Result<Vec<u64>>>()?;
        if counts.len() != edges.len() + 1 || counts.len() > MAX_BINS {
            return Err(FraudError::Malformed(format!(
                "histogram has {} counts for {} edges",
                counts.len(),
                edges.len()
            )));
        }
        let nan = count(
            root.get("nan")
                .ok_or_else(|| FraudError::MissingField("nan".into()))?,
            "nan",
        )?;
        let h = Histogram { edges, counts, nan };
        if h.total() == 0 {
            return Err(FraudError::Malformed("histogram is empty".into()));
        }
        Ok(h)
    }
}

/// The population stability index of `current` against `reference` (see the module
/// documentation). Refuses an empty `current` (there is no distribution to compare).
pub fn psi(reference: &Histogram, current: &[f64]) -> Result<f64> {
    if current.is_empty() {
        return Err(FraudError::InvalidParameter {
            name: "current values".into(),
            value: "0 values".into(),
            expected: "at least one value".into(),
        });
    }
    let ref_total = reference.total();
    if ref_total == 0 || reference.counts.len() != reference.edges.len() + 1 {
        return Err(FraudError::Malformed("reference histogram is empty".into()));
    }
    let mut cur = Histogram {
        edges: reference.edges.clone(),
        counts: vec![0; reference.counts.len()],
        nan: 0,
    };
    cur.add(current);
    let (rt, ct) = (ref_total as f64, current.len() as f64);
    let term = |r: u64, c: u64| {
        let r = (r as f64 / rt).max(PSI_EPSILON);
        let c = (c as f64 / ct).max(PSI_EPSILON);
        (c - r) * (c / r).ln()
    };
    let bins: f64 = reference
        .counts
        .iter()
        .zip(&cur.counts)
        .map(|(&r, &c)| term(r, c))
        .sum();
    Ok(bins + term(reference.nan, cur.nan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_to_ten() -> Vec<f64> {
        (1..=10).map(f64::from).collect()
    }

    #[test]
    fn quantile_edges() {
        let h = Histogram::from_reference(&one_to_ten(), 5).unwrap();
        assert_eq!(h.edges, [3.0, 5.0, 7.0, 9.0]);
        assert_eq!(h.counts, [2, 2, 2, 2, 2]);
        assert_eq!(h.nan, 0);
        assert_eq!(h.bin_of(2.999), Some(0));
        assert_eq!(h.bin_of(3.0), Some(1));
        assert_eq!(h.bin_of(f64::INFINITY), Some(4));
        assert_eq!(h.bin_of(f64::NEG_INFINITY), Some(0));
        assert_eq!(h.bin_of(f64::NAN), None);
        // Ties collapse: six equal values leave only the edges above them.
        let h = Histogram::from_reference(&[0., 0., 0., 0., 0., 0., 1., 2., f64::NAN], 4).unwrap();
        assert_eq!(h.edges, [0.0, 1.0]);
        assert_eq!(h.counts, [0, 6, 2]);
        assert_eq!(h.nan, 1);
    }

    #[test]
    fn psi_by_hand() {
        let h = Histogram::from_reference(&one_to_ten(), 5).unwrap();
        assert_eq!(psi(&h, &one_to_ten()).unwrap(), 0.0);
        // Current: half in the first bin, half in the last, none elsewhere, none NaN.
        let cur = [1.0, 1.0, 2.0, 2.0, 1.5, 9.0, 10.0, 10.0, 9.5, 100.0];
        // 2 · (0.5 - 0.2) · ln(2.5) + 3 · (1e-4 - 0.2) · ln(1e-4 / 0.2)
        //   = 0.549774 + 4.558261 = 5.108036 (NaN bin: both empty, adds 0)
        let expected = 2.0 * 0.3 * 2.5f64.ln() + 3.0 * (1e-4 - 0.2) * (1e-4f64 / 0.2).ln();
        let got = psi(&h, &cur).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((got - 5.108036).abs() < 1e-6);
        // A small shift: one value of ten moves from bin 0 to bin 1, and one goes NaN.
        let cur = [3.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, f64::NAN];
        // bins 0.1 / 0.3 / 0.2 / 0.2 / 0.1 and NaN 0.1 against 0.2 each, NaN 0:
        let e = (0.1 - 0.2) * (0.5f64).ln()
            + (0.3 - 0.2) * (1.5f64).ln()
            + (0.1 - 0.2) * (0.5f64).ln()
            + (0.1 - 1e-4) * (0.1f64 / 1e-4).ln();
        assert!((psi(&h, &cur).unwrap() - e).abs() < 1e-12);
    }

    #[test]
    fn json_round_trip_and_validation() {
        let mut v = one_to_ten();
        v.push(f64::NAN);
        v.push(0.1 + 0.2);
        let h = Histogram::from_reference(&v, DEFAULT_BINS).unwrap();
        let text = h.to_json();
        assert_eq!(Histogram::from_json(&text).unwrap(), h);
        assert_eq!(
            Histogram::from_json(r#"{"edges":[1.5],"counts":[3,4],"nan":0}"#).unwrap(),
            Histogram {
                edges: vec![1.5],
                counts: vec![3, 4],
                nan: 0
            }
        );
        for bad in [
            r#"{"edges":[2,1],"counts":[1,1,1],"nan":0}"#,
            r#"{"edges":[1],"counts":[1],"nan":0}"#,
            r#"{"edges":[NaN],"counts":[1,1],"nan":0}"#,
            r#"{"edges":[],"counts":[-1],"nan":0}"#,
            r#"{"edges":[],"counts":[0],"nan":0}"#,
            r#"{"edges":[],"counts":[1]}"#,
            "[1,2]",
        ] {
            assert!(Histogram::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            Histogram::from_reference(&[1.0], 0),
            Err(FraudError::InvalidParameter { name, .. }) if name == "bins"
        ));
        assert!(Histogram::from_reference(&[], 10).is_err());
        let h = Histogram::from_reference(&[1.0, 2.0], 2).unwrap();
        assert!(psi(&h, &[]).is_err());
        // All-NaN reference is a valid (one-bin) histogram.
        let h = Histogram::from_reference(&[f64::NAN; 3], 10).unwrap();
        assert_eq!((h.edges.len(), h.nan), (0, 3));
        assert_eq!(psi(&h, &[f64::NAN]).unwrap(), 0.0);
    }
}
