//! Fraud scoring: every payment scored inside its own transaction, with reasons, per-card
//! profiles, a transactional model registry and training in SQL.
//!
//! The SQL surface: [`scoring`] (`fraud_score`, profiles, the history replay),
//! [`registry`] (model versions and aliases, import, deploy), [`learn`] (train, evaluate,
//! backtest, feature export), [`policy`] (the rules table, the `score_payments` trigger). The pure-Rust core below calls nothing of PostgreSQL:
//!
//! - [`ensemble`]: a tree-ensemble scorer over flat arrays, bit-exact with XGBoost and
//!   LightGBM, with Saabas contributions for explanations;
//! - [`import`]: XGBoost JSON and LightGBM text models into an [`ensemble::Ensemble`];
//! - [`profile`]: a bounded per-card behavioural profile with a versioned binary encoding;
//! - [`features`]: point-in-time features of a payment against its card's profile, the
//!   built-in anomaly score and the reasons an analyst reads;
//! - [`metrics`]: AUC-PR, AUC-ROC, recall at a false-positive rate, precision at a recall;
//! - [`train`]: a deterministic logistic regression that scores through the same path,
//!   and [`train::Scorer`], the one scoring interface of every model kind;
//! - [`gbdt`]: gradient-boosted trees trained with forust, scored by the same ensemble;
//! - [`stored`]: the versioned JSON every model version is stored as;
//! - [`drift`]: quantile histograms and the population stability index;
//! - [`rules`]: the fraud team's rule language and verdicts.

pub mod drift;
pub mod ensemble;
pub mod error;
pub mod features;
pub mod gbdt;
pub mod import;
pub mod json;
pub mod learn;
pub mod metrics;
pub mod monitor;
pub mod policy;
pub mod profile;
pub mod profile_row;
pub mod registry;
pub mod rules;
pub mod scoring;
pub mod stats;
pub mod stored;
#[cfg(test)]
mod tests;
pub mod train;

pub use error::FraudError;

/// Called from `_PG_init`: the score counters of `platform.fraud_stats`.
pub fn init() {
    stats::init();
}
