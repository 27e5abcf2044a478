//! Point-in-time features of a payment against its card's profile, the built-in anomaly
//! score, and the reasons an analyst reads.
//!
//! [`features`] reads only the profile's state *before* the payment (so training rows
//! computed in time order never see their own payment), then the caller folds the payment
//! in with [`Profile::update`]. The built-in feature names are [`BUILTIN_FEATURES`]; a
//! model may also name extra attributes supplied per call (e.g. from a jsonb `attrs`),
//! resolved once into a [`FeatureLayout`].
//!
//! Missing values are NaN (no previous payment, no location, no history for the hour
//! habit); ratios to a mean without history are 1 (neutral) and the z-score 0.

use super::ensemble::Ensemble;
use super::error::{FraudError, Result};
use super::profile::{
    haversine_km, Payment, Profile, MICROS_PER_SEC, WINDOW_1H, WINDOW_24H, WINDOW_7D,
};

/// The built-in features, in [`FeatureVector::values`] order.
pub const BUILTIN_FEATURES: [&str; 22] = [
    "amount",                  // the payment's amount
    "log_amount",              // ln(1 + max(amount, 0))
    "amount_to_card_mean",     // amount / the card's mean amount (1 without history)
    "amount_zscore",           // (amount - mean) / sample std. dev. (0 below 2 payments)
    "amount_to_category_mean", // amount / the card's mean in this category (1 if none)
    "count_1h",                // the card's payments in the hour before (excluded: this one)
    "count_24h",               // ... in the 24 hours before
    "count_7d",                // ... in the 7 days before (capped, see profile)
    "sum_1h",                  // their amounts' sums
    "sum_24h",
    "sum_7d",
    "seconds_since_prev", // this payment's time minus the latest one's (negative if late)
    "distance_prev_km",   // haversine distance to the last known place (NaN if unknown)
    "speed_prev_kmh",     // distance / |gap|, the gap counted as at least 60 s
    "hour_of_day",        // local hour 0..23 (UTC + the profile's offset)
    "hour_habit_share",   // share of the card's payments in this hour (NaN without history)
    "new_category",       // 1 if the category is not among the kept ones, else 0
    "new_merchant",       // 1 if the merchant is not among the 64 most recent, else 0
    "card_payment_count", // payments folded in before this one
    "category_payment_count", // of them, in this category (0 if new or evicted)
    "card_age_days",      // days since the card's first payment (NaN for a new card)
    "payments_per_day",   // card_payment_count / max(1, card_age_days)
];

/// Index of each built-in feature in [`BUILTIN_FEATURES`].
pub mod idx {
    pub const AMOUNT: usize = 0;
    pub const LOG_AMOUNT: usize = 1;
    pub const AMOUNT_TO_CARD_MEAN: usize = 2;
    pub const AMOUNT_ZSCORE: usize = 3;
    pub const AMOUNT_TO_CATEGORY_MEAN: usize = 4;
    pub const COUNT_1H: usize = 5;
    pub const COUNT_24H: usize = 6;
    pub const COUNT_7D: usize = 7;
    pub const SUM_1H: usize = 8;
    pub const SUM_24H: usize = 9;
    pub const SUM_7D: usize = 10;
    pub const SECONDS_SINCE_PREV: usize = 11;
    pub const DISTANCE_PREV_KM: usize = 12;
    pub const SPEED_PREV_KMH: usize = 13;
    pub const HOUR_OF_DAY: usize = 14;
    pub const HOUR_HABIT_SHARE: usize = 15;
    pub const NEW_CATEGORY: usize = 16;
    pub const NEW_MERCHANT: usize = 17;
    pub const CARD_PAYMENT_COUNT: usize = 18;
    pub const CATEGORY_PAYMENT_COUNT: usize = 19;
    pub const CARD_AGE_DAYS: usize = 20;
    pub const PAYMENTS_PER_DAY: usize = 21;
}

/// The features of one payment.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    /// Built-in values in [`BUILTIN_FEATURES`] order.
    pub values: [f64; BUILTIN_FEATURES.len()],
    /// Local minute of the day (0..1440), for wording ("at 02:40").
    pub minute_of_day: u32,
    /// The caller's extra attributes, as given.
    pub extra: Vec<(String, f64)>,
}

impl FeatureVector {
    /// A feature's value by name (built-in or extra); None if unknown.
    pub fn get(&self, name: &str) -> Option<f64> {
        match BUILTIN_FEATURES.iter().position(|f| *f == name) {
            Some(i) => self.values.get(i).copied(),
            None => self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
        }
    }
}

/// The features of `p` given the card's profile before it. `extra` are named attributes
/// (a non-finite value is kept as NaN, i.e. missing).
pub fn features(
    profile: &Profile,
    p: &Payment<'_>,
    extra: &[(&str, f64)],
) -> Result<FeatureVector> {
    use idx::*;
    p.check()?;
    let mut v = [0.0f64; BUILTIN_FEATURES.len()];
    let amount = p.amount;
    v[AMOUNT] = amount;
    v[LOG_AMOUNT] = amount.max(0.0).ln_1p();
    let card = &profile.amount;
    v[AMOUNT_TO_CARD_MEAN] = if card.n > 0 && card.mean > 0.0 {
        amount / card.mean
    } else {
        1.0
    };
    let sd = card.std_dev();
    v[AMOUNT_ZSCORE] = if card.n >= 2 && sd > 0.0 {
        (amount - card.mean) / sd
    } else {
        0.0
    };
    let cat = profile.category(p.category);
    v[AMOUNT_TO_CATEGORY_MEAN] = match cat {
        Some(c) if c.amount.mean > 0.0 => amount / c.amount.mean,
        _ => 1.0,
    };
    // Windows are (t - w, t] over the payments folded in so far: this one is not among them,
    // a payment at the same instant folded in before it is.
    let t = p.at_micros;
    for (w, ci, si) in [
        (WINDOW_1H, COUNT_1H, SUM_1H),
        (WINDOW_24H, COUNT_24H, SUM_24H),
        (WINDOW_7D, COUNT_7D, SUM_7D),
    ] {
        let (n, s) = profile.window(t, w);
        v[ci] = n as f64;
        v[si] = s;
    }
    match profile.last_at {
        Some(last) => {
            let gap = (t as f64 - last as f64) / MICROS_PER_SEC as f64;
            v[SECONDS_SINCE_PREV] = gap;
            match (profile.last_location, p.location()) {
                (Some(a), Some(b)) => {
                    let d = haversine_km(a, b);
                    v[DISTANCE_PREV_KM] = d;
                    v[SPEED_PREV_KMH] = d / (gap.abs().max(60.0) / 3600.0);
                }
                _ => {
                    v[DISTANCE_PREV_KM] = f64::NAN;
                    v[SPEED_PREV_KMH] = f64::NAN;
                }
            }
        }
        None => {
            v[SECONDS_SINCE_PREV] = f64::NAN;
            v[DISTANCE_PREV_KM] = f64::NAN;
            v[SPEED_PREV_KMH] = f64::NAN;
        }
    }
    let minute = profile.local_minute_of_day(t);
    let hour = (minute / 60) as usize;
    v[HOUR_OF_DAY] = hour as f64;
    v[HOUR_HABIT_SHARE] = if profile.count > 0 {
        profile.hours.get(hour).copied().unwrap_or(0) as f64 / profile.count as f64
    } else {
        f64::NAN
    };
    v[NEW_CATEGORY] = if cat.is_some() { 0.0 } else { 1.0 };
    v[NEW_MERCHANT] = if profile.knows_merchant(p.merchant) {
        0.0
    } else {
        1.0
    };
    v[CARD_PAYMENT_COUNT] = profile.count as f64;
    v[CATEGORY_PAYMENT_COUNT] = cat.map_or(0.0, |c| c.amount.n as f64);
    match profile.first_at {
        Some(first) => {
            let age = ((t as f64 - first as f64) / (86_400.0 * MICROS_PER_SEC as f64)).max(0.0);
            v[CARD_AGE_DAYS] = age;
            v[PAYMENTS_PER_DAY] = profile.count as f64 / age.max(1.0);
        }
        None => {
            v[CARD_AGE_DAYS] = f64::NAN;
            v[PAYMENTS_PER_DAY] = 0.0;
        }
    }
    Ok(FeatureVector {
        values: v,
        minute_of_day: minute,
        extra: extra
            .iter()
            .map(|(n, x)| (n.to_string(), if x.is_finite() { *x } else { f64::NAN }))
            .collect(),
    })
}

/// Where a model's feature comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Builtin(usize),
    Extra(usize),
}

/// A model's feature list resolved once against the built-ins and the declared extra
/// attribute names, so that filling a row is index lookups only.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureLayout {
    pub names: Vec<String>,
    pub extra_names: Vec<String>,
    pub sources: Vec<Source>,
}

impl FeatureLayout {
    /// `model_features` in model order; `extra_names` are the attributes callers may pass.
    /// A name that is neither is [`FraudError::UnknownFeature`].
    pub fn new(model_features: &[String], extra_names: &[String]) -> Result<FeatureLayout> {
        let mut sources = Vec::with_capacity(model_features.len());
        for (i, name) in model_features.iter().enumerate() {
            if model_features[..i].contains(name) {
                return Err(FraudError::DuplicateFeature(name.clone()));
            }
            let s = if let Some(b) = BUILTIN_FEATURES.iter().position(|f| f == name) {
                Source::Builtin(b)
            } else if let Some(e) = extra_names.iter().position(|f| f == name) {
                Source::Extra(e)
            } else {
                return Err(FraudError::UnknownFeature(name.clone()));
            };
            sources.push(s);
        }
        Ok(FeatureLayout {
            names: model_features.to_vec(),
            extra_names: extra_names.to_vec(),
            sources,
        })
    }

    /// Writes the model's input row into `out` (length = number of model features); an
    /// extra attribute absent from `fv` is NaN (missing).
    pub fn fill(&self, fv: &FeatureVector, out: &mut [f64]) -> Result<()> {
        if out.len() != self.sources.len() {
            return Err(FraudError::WrongFeatureCount {
                expected: self.sources.len(),
                got: out.len(),
            });
        }
        for (o, s) in out.iter_mut().zip(&self.sources) {
            *o = match *s {
                Source::Builtin(b) => fv.values.get(b).copied().unwrap_or(f64::NAN),
                Source::Extra(e) => self
                    .extra_names
                    .get(e)
                    .and_then(|n| fv.extra.iter().find(|(k, _)| k == n))
                    .map_or(f64::NAN, |(_, v)| *v),
            };
        }
        Ok(())
    }
}

/// One reason behind a score: the feature (or signal), its share of the score in log-odds,
/// and the words an analyst reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: String,
    pub contribution: f64,
    pub text: String,
}

/// A score in 0..1 with its reasons, largest contribution first.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub reasons: Vec<Reason>,
}

/// `1 234 567` style grouping (a space every three digits) of a rounded non-negative value.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn duration(secs: f64) -> String {
    let s = secs.abs();
    let (n, unit) = if s < 90.0 {
        (s.round(), "second")
    } else if s < 90.0 * 60.0 {
        ((s / 60.0).round(), "minute")
    } else if s < 36.0 * 3600.0 {
        ((s / 3600.0).round(), "hour")
    } else {
        ((s / 86_400.0).round(), "day")
    };
    format!("{n:.0} {unit}{}", if n == 1.0 { "" } else { "s" })
}

/// Words for feature `name` of `fv`, or None when there is nothing to say about it.
pub fn describe(name: &str, fv: &FeatureVector) -> Option<String> {
    use idx::*;
    let v = |i: usize| fv.values.get(i).copied().unwrap_or(f64::NAN);
    let Some(i) = BUILTIN_FEATURES.iter().position(|f| *f == name) else {
        let x = fv.get(name)?;
        return Some(format!("{name} = {x}"));
    };
    Some(match i {
        AMOUNT | LOG_AMOUNT => format!("amount of {:.2}", v(AMOUNT)),
        AMOUNT_TO_CARD_MEAN => format!("amount {:.1}x this card's average", v(i)),
        AMOUNT_ZSCORE => format!(
            "amount {:.1} standard deviations above this card's mean",
            v(i)
        ),
        // Every payment of the card in this category (or none has one): the category says
        // nothing the card's average does not, and the same words merge the two.
        AMOUNT_TO_CATEGORY_MEAN
            if v(i) == v(AMOUNT_TO_CARD_MEAN)
                && v(CATEGORY_PAYMENT_COUNT) == v(CARD_PAYMENT_COUNT) =>
        {
            format!("amount {:.1}x this card's average", v(i))
        }
        AMOUNT_TO_CATEGORY_MEAN => {
            format!("amount {:.1}x this card's average in this category", v(i))
        }
        COUNT_1H | SUM_1H => format!(
            "{} payment in 1 hour (total {:.2})",
            ordinal(v(COUNT_1H) as u64 + 1),
            v(SUM_1H) + v(AMOUNT)
        ),
        COUNT_24H | SUM_24H => format!(
            "{} payment in 24 hours (total {:.2})",
            ordinal(v(COUNT_24H) as u64 + 1),
            v(SUM_24H) + v(AMOUNT)
        ),
        COUNT_7D | SUM_7D => format!(
            "{} payment in 7 days (total {:.2})",
            ordinal(v(COUNT_7D) as u64 + 1),
            v(SUM_7D) + v(AMOUNT)
        ),
        SECONDS_SINCE_PREV if v(i).is_finite() => {
            format!("{} since the previous payment", duration(v(i)))
        }
        DISTANCE_PREV_KM | SPEED_PREV_KMH if v(DISTANCE_PREV_KM).is_finite() => {
            let gap = v(SECONDS_SINCE_PREV);
            format!(
                "{} km from the previous payment {} {}",
                grouped(v(DISTANCE_PREV_KM)),
                duration(gap),
                if gap >= 0.0 { "earlier" } else { "later" }
            )
        }
        HOUR_OF_DAY | HOUR_HABIT_SHARE => format!(
            "payment at {:02}:{:02}, outside this card's habit",
            fv.minute_of_day / 60,
            fv.minute_of_day % 60
        ),
        NEW_CATEGORY if v(i) > 0.0 => "first payment in this category".to_string(),
        NEW_MERCHANT if v(i) > 0.0 => "first payment at this merchant".to_string(),
        CARD_PAYMENT_COUNT | CARD_AGE_DAYS | PAYMENTS_PER_DAY => {
            format!("card with {:.0} previous payments", v(CARD_PAYMENT_COUNT))
        }
        CATEGORY_PAYMENT_COUNT => format!(
            "{:.0} previous payments in this category",
            v(CATEGORY_PAYMENT_COUNT)
        ),
        _ => return None,
    })
}

/// Reasons for a tree model's score: the `top` largest positive Saabas contributions,
/// worded with the feature values (features sharing one wording are merged). `layout`
/// must be the model's; `row` and `scratch` are buffers of the model's feature count.
pub fn tree_reasons(
    model: &Ensemble,
    layout: &FeatureLayout,
    fv: &FeatureVector,
    top: usize,
    row: &mut [f64],
    scratch: &mut [f64],
) -> Result<Scored> {
    layout.fill(fv, row)?;
    let (score, _) = model.predict_and_contributions(row, scratch)?;
    Ok(Scored {
        score,
        reasons: reasons_from_contributions(layout, fv, scratch, top),
    })
}

/// The `top` largest positive `contributions` (in `layout` order, any additive model)
/// as worded reasons, largest first; features sharing one wording are merged.
pub fn reasons_from_contributions(
    layout: &FeatureLayout,
    fv: &FeatureVector,
    contributions: &[f64],
    top: usize,
) -> Vec<Reason> {
    let c = contributions;
    let mut order: Vec<usize> = (0..c.len()).filter(|&i| c[i] > 0.0).collect();
    order.sort_by(|&a, &b| c[b].total_cmp(&c[a]).then(a.cmp(&b)));
    let mut reasons: Vec<Reason> = Vec::new();
    for i in order {
        let Some(name) = layout.names.get(i) else {
            continue;
        };
        let Some(text) = describe(name, fv) else {
            continue;
        };
        if let Some(r) = reasons.iter_mut().find(|r| r.text == text) {
            r.contribution += c[i];
        } else if reasons.len() < top {
            reasons.push(Reason {
                feature: name.clone(),
                contribution: c[i],
                text,
            });
        }
    }
    reasons
}

/// Log-odds of the built-in anomaly score before any signal: sigmoid(-4) ≈ 0.018.
pub const ANOMALY_BIAS: f64 = -4.0;

/// The built-in anomaly score (no trained model).
///
/// `score = sigmoid(ANOMALY_BIAS + Σ weight·g(signal))`, each `g` non-negative,
/// non-decreasing in its signal and capped, so the score is deterministic, in (0, 1) and
/// monotone in every signal. Signals (each only once the card has the history that
/// makes it meaningful):
///
/// | signal | g | weight | needs |
/// |---|---|---|---|
/// | amount vs card mean | log2(ratio), 0..6 | 0.8 | 3 payments |
/// | amount vs category mean | log2(ratio), 0..6 | 0.5 | 3 in the category |
/// | amount z-score | z - 3, 0..6 | 0.3 | 5 payments |
/// | burst: payments in 1 hour | count_1h - 1, 0..10 | 0.6 | |
/// | velocity: payments in 24 h vs habit | count_24h + 1 - max(3, 2·per_day), 0..10 | 0.35 | |
/// | off-hour | 1 - 24·share(hour), 0..1 | 1.2 | 10 payments |
/// | new category | 1 | 0.6 | 5 payments |
/// | new merchant | 1 | 0.4 | 5 payments |
/// | impossible travel | (speed - 500 km/h) / 500, 0..4 | 1.5 | distance > 50 km |
///
/// One 10x amount on an established card gives ≈ 0.16; with an off-hour and a new
/// merchant ≈ 0.66; travel at 2 000 km/h alone ≈ 0.35.
pub fn anomaly_score(fv: &FeatureVector) -> Scored {
    use idx::*;
    let v = |i: usize| fv.values.get(i).copied().unwrap_or(f64::NAN);
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let n = finite(v(CARD_PAYMENT_COUNT));
    let mut signals: Vec<(&str, f64)> = Vec::new();
    if n >= 3.0 {
        let g = finite(v(AMOUNT_TO_CARD_MEAN)).max(1.0).log2().min(6.0);
        signals.push(("amount_to_card_mean", 0.8 * g));
    }
    if v(CATEGORY_PAYMENT_COUNT) >= 3.0 {
        let g = finite(v(AMOUNT_TO_CATEGORY_MEAN)).max(1.0).log2().min(6.0);
        signals.push(("amount_to_category_mean", 0.5 * g));
    }
    if n >= 5.0 {
        let g = (finite(v(AMOUNT_ZSCORE)) - 3.0).clamp(0.0, 6.0);
        signals.push(("amount_zscore", 0.3 * g));
    }
    signals.push((
        "count_1h",
        0.6 * (finite(v(COUNT_1H)) - 1.0).clamp(0.0, 10.0),
    ));
    let habit = (2.0 * finite(v(PAYMENTS_PER_DAY))).max(3.0);
    signals.push((
        "count_24h",
        0.35 * (finite(v(COUNT_24H)) + 1.0 - habit).clamp(0.0, 10.0),
    ));
    if n >= 10.0 {
        let share = finite(v(HOUR_HABIT_SHARE));
        signals.push((
            "hour_habit_share",
            1.2 * (1.0 - 24.0 * share).clamp(0.0, 1.0),
        ));
    }
    if n >= 5.0 {
        signals.push((
            "new_category",
            0.6 * finite(v(NEW_CATEGORY)).clamp(0.0, 1.0),
        ));
        signals.push((
            "new_merchant",
            0.4 * finite(v(NEW_MERCHANT)).clamp(0.0, 1.0),
        ));
    }
    if finite(v(DISTANCE_PREV_KM)) > 50.0 {
        let g = ((finite(v(SPEED_PREV_KMH)) - 500.0) / 500.0).clamp(0.0, 4.0);
        signals.push(("speed_prev_kmh", 1.5 * g));
    }
    let logit = ANOMALY_BIAS + signals.iter().map(|(_, c)| c).sum::<f64>();
    let score = 1.0 / (1.0 + (-logit).exp());
    signals.retain(|(_, c)| *c > 0.0);
    // Stable sort: ties keep the table's order, so reasons are deterministic.
    signals.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut reasons: Vec<Reason> = Vec::new();
    for (name, c) in signals {
        let Some(text) = describe(name, fv) else {
            continue;
        };
        // Signals worded alike are one reason.
        if let Some(r) = reasons.iter_mut().find(|r| r.text == text) {
            r.contribution += c;
        } else {
            reasons.push(Reason {
                feature: name.to_string(),
                contribution: c,
                text,
            });
        }
    }
    Scored { score, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::ensemble::Semantics;
    use crate::fraud::import::import_lightgbm_text;
    use crate::fraud::profile::MICROS_PER_SEC as S;

    fn pay<'a>(at_secs: i64, amount: f64, merchant: &'a str, category: &'a str) -> Payment<'a> {
        Payment {
            at_micros: at_secs * S,
            amount,
            merchant,
            category,
            lat: Some(48.8566),
            lon: Some(2.3522),
        }
    }

    /// A card paying ~40 at the same few merchants at 12:xx UTC every day for 30 days.
    fn habitual() -> (Profile, i64) {
        let mut p = Profile::new(0);
        let day0: i64 = 19_676 * 86_400; // 2023-11-15 00:00 UTC
        for d in 0..30 {
            let at = day0 + d * 86_400 + 12 * 3600 + (d % 7) * 60;
            let amount = 35.0 + (d % 5) as f64 * 2.5;
            let m = ["bakery", "grocer", "cafe"][(d % 3) as usize];
            p.update(&pay(at, amount, m, "food")).unwrap();
        }
        (p, day0 + 30 * 86_400)
    }

    #[test]
    fn point_in_time_features() {
        let (mut p, day) = habitual();
        let before = p.clone();
        let q = pay(day + 2 * 3600 + 40 * 60, 400.0, "electronics", "tech");
        let fv = features(&p, &q, &[("device_new", 1.0)]).unwrap();
        assert_eq!(p, before, "features must not change the profile");
        assert_eq!(fv.get("card_payment_count"), Some(30.0));
        assert_eq!(fv.get("new_category"), Some(1.0));
        assert_eq!(fv.get("new_merchant"), Some(1.0));
        assert_eq!(fv.get("hour_of_day"), Some(2.0));
        assert_eq!(fv.get("hour_habit_share"), Some(0.0));
        assert_eq!(fv.get("count_24h"), Some(1.0));
        assert_eq!(fv.get("count_7d"), Some(7.0));
        assert_eq!(fv.get("device_new"), Some(1.0));
        assert!((fv.get("amount_to_card_mean").unwrap() - 400.0 / p.amount.mean).abs() < 1e-12);
        p.update(&q).unwrap();
        let again = features(&p, &q, &[]).unwrap();
        assert_eq!(again.get("new_category"), Some(0.0));
        assert_eq!(again.get("count_1h"), Some(1.0)); // the same time counts once folded in
    }

    #[test]
    fn first_payment_has_missing_history() {
        let p = Profile::new(0);
        let fv = features(&p, &pay(1000, 10.0, "m", "c"), &[]).unwrap();
        assert!(fv.get("seconds_since_prev").unwrap().is_nan());
        assert!(fv.get("distance_prev_km").unwrap().is_nan());
        assert!(fv.get("hour_habit_share").unwrap().is_nan());
        assert_eq!(fv.get("amount_to_card_mean"), Some(1.0));
        let s = anomaly_score(&fv);
        assert!((s.score - 1.0 / (1.0 + 4f64.exp())).abs() < 1e-12);
        assert!(s.reasons.is_empty());
    }

    #[test]
    fn anomaly_reasons_read_well() {
        let (p, day) = habitual();
        let normal = features(&p, &pay(day + 12 * 3600, 38.0, "bakery", "food"), &[]).unwrap();
        let quiet = anomaly_score(&normal);
        assert!(quiet.score < 0.03, "{quiet:?}");
        let mut q = pay(day + 2 * 3600 + 40 * 60, 380.0, "electronics", "tech");
        q.lat = Some(40.7128); // New York, 14 h 40 min after a payment in Paris
        q.lon = Some(-74.006);
        let fv = features(&p, &q, &[]).unwrap();
        let s = anomaly_score(&fv);
        assert!(s.score > 0.5, "{s:?}");
        let texts: Vec<&str> = s.reasons.iter().map(|r| r.text.as_str()).collect();
        assert!(
            texts.contains(&"payment at 02:40, outside this card's habit"),
            "{texts:?}"
        );
        assert!(texts.contains(&"first payment in this category"));
        assert!(texts.contains(&"first payment at this merchant"));
        assert!(
            texts.iter().any(|t| t.starts_with("amount 9.")),
            "{texts:?}"
        );
        // A fast trip: 5 837 km 20 minutes later.
        let mut p2 = p.clone();
        p2.update(&pay(day, 40.0, "bakery", "food")).unwrap();
        let mut far = pay(day + 20 * 60, 40.0, "bakery", "food");
        far.lat = Some(40.7128);
        far.lon = Some(-74.006);
        let fv = features(&p2, &far, &[]).unwrap();
        let s = anomaly_score(&fv);
        assert_eq!(
            s.reasons[0].text,
            "5 837 km from the previous payment 20 minutes earlier"
        );
        assert_eq!(
            describe("count_24h", &fv).unwrap(),
            "3rd payment in 24 hours (total 125.00)"
        );
    }

    #[test]
    fn a_card_without_categories_gets_its_amount_reason_once() {
        let mut p = Profile::new(0);
        for d in 0..10 {
            p.update(&pay(1000 + d * 86_400, 40.0, "bakery", ""))
                .unwrap();
        }
        let fv = features(&p, &pay(1000 + 10 * 86_400, 400.0, "bakery", ""), &[]).unwrap();
        assert_eq!(
            fv.get("amount_to_category_mean"),
            fv.get("amount_to_card_mean")
        );
        let s = anomaly_score(&fv);
        let texts: Vec<&str> = s.reasons.iter().map(|r| r.text.as_str()).collect();
        let amount = texts
            .iter()
            .filter(|t| t.starts_with("amount 10.0x"))
            .count();
        assert_eq!(amount, 1, "{texts:?}");
        assert!(
            !texts.iter().any(|t| t.contains("in this category")),
            "{texts:?}"
        );
        // With categories that differ, both words stay.
        let mut q = Profile::new(0);
        for d in 0..10 {
            q.update(&pay(1000 + d * 86_400, 40.0, "bakery", "food"))
                .unwrap();
            q.update(&pay(2000 + d * 86_400, 400.0, "tv", "tech"))
                .unwrap();
        }
        let fv = features(&q, &pay(1000 + 10 * 86_400, 400.0, "bakery", "food"), &[]).unwrap();
        assert_eq!(
            describe("amount_to_category_mean", &fv).unwrap(),
            "amount 10.0x this card's average in this category"
        );
    }

    #[test]
    fn anomaly_is_monotone_in_each_signal() {
        let (p, day) = habitual();
        let base = features(&p, &pay(day + 12 * 3600, 38.0, "bakery", "food"), &[]).unwrap();
        use idx::*;
        let grids: [(usize, [f64; 5]); 7] = [
            (AMOUNT_TO_CARD_MEAN, [0.5, 1.0, 3.0, 10.0, 1000.0]),
            (AMOUNT_ZSCORE, [-1.0, 2.0, 4.0, 8.0, 100.0]),
            (COUNT_1H, [0.0, 1.0, 2.0, 5.0, 50.0]),
            (COUNT_24H, [0.0, 2.0, 4.0, 8.0, 80.0]),
            (HOUR_HABIT_SHARE, [0.5, 0.1, 0.04, 0.01, 0.0]),
            (NEW_MERCHANT, [0.0, 0.0, 0.5, 1.0, 1.0]),
            (SPEED_PREV_KMH, [0.0, 400.0, 800.0, 2000.0, 1e6]),
        ];
        for (i, grid) in grids {
            let mut last = 0.0;
            for g in grid {
                let mut fv = base.clone();
                fv.values[i] = g;
                fv.values[DISTANCE_PREV_KM] = 100.0;
                let s = anomaly_score(&fv).score;
                assert!(
                    s >= last,
                    "feature {} at {g}: {s} < {last}",
                    BUILTIN_FEATURES[i]
                );
                last = s;
            }
        }
    }

    #[test]
    fn layout_resolves_names() {
        let model: Vec<String> = ["count_1h", "device_new", "amount"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let extras = vec!["ip_risk".to_string(), "device_new".to_string()];
        let layout = FeatureLayout::new(&model, &extras).unwrap();
        assert_eq!(
            layout.sources,
            vec![Source::Builtin(5), Source::Extra(1), Source::Builtin(0)]
        );
        let (p, day) = habitual();
        let fv = features(&p, &pay(day, 12.0, "m", "c"), &[("device_new", 1.0)]).unwrap();
        let mut row = [0.0; 3];
        layout.fill(&fv, &mut row).unwrap();
        assert_eq!(row, [0.0, 1.0, 12.0]);
        let fv = features(&p, &pay(day, 12.0, "m", "c"), &[]).unwrap();
        layout.fill(&fv, &mut row).unwrap();
        assert!(row[1].is_nan());
        assert_eq!(
            FeatureLayout::new(&["nope".to_string()], &extras),
            Err(FraudError::UnknownFeature("nope".into()))
        );
    }

    #[test]
    fn tree_model_reasons() {
        let names: Vec<String> = [
            "amount",
            "log_amount",
            "count_1h",
            "count_24h",
            "distance_prev_km",
            "hour_of_day",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = import_lightgbm_text(include_str!("testdata/lgb.txt"), &names).unwrap();
        assert_eq!(m.ensemble.semantics(), Semantics::LightGbm);
        let layout = FeatureLayout::new(&m.features, &[]).unwrap();
        let (mut p, day) = habitual();
        for k in 0..3 {
            p.update(&pay(day + 3600 + k * 60, 40.0, "m", "c")).unwrap();
        }
        let fv = features(&p, &pay(day + 3600 + 240, 900.0, "m", "c"), &[]).unwrap();
        let (mut row, mut scratch) = (vec![0.0; 6], vec![0.0; 6]);
        let s = tree_reasons(&m.ensemble, &layout, &fv, 3, &mut row, &mut scratch).unwrap();
        assert_eq!(s.score, m.predict(&row).unwrap());
        assert!(!s.reasons.is_empty() && s.reasons.len() <= 3);
        assert!(s.reasons.iter().all(|r| r.contribution > 0.0));
        assert!(s
            .reasons
            .windows(2)
            .all(|w| w[0].contribution >= w[1].contribution || w[0].text != w[1].text));
        assert!(
            s.reasons
                .iter()
                .any(|r| r.text == "4th payment in 1 hour (total 1020.00)"),
            "{s:?}"
        );
    }

    #[test]
    fn wording_helpers() {
        assert_eq!(grouped(1240.4), "1 240");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1_234_567.0), "1 234 567");
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(duration(20.0 * 60.0), "20 minutes");
        assert_eq!(duration(1.0), "1 second");
        assert_eq!(duration(3.0 * 86_400.0), "3 days");
    }
}
