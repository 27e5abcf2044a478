//! The one error type of the fraud capability's pure core.
//!
//! Each variant names one precise problem so that the SQL layer can map it to a fitting
//! SQLSTATE (model text → `ERRCODE_INVALID_PARAMETER_VALUE`/`DATA_CORRUPTED`, unsupported
//! model kinds → `FEATURE_NOT_SUPPORTED`, size → `PROGRAM_LIMIT_EXCEEDED`, ...). Messages
//! never contain payment data, only model structure and feature names.

/// Everything that can go wrong when building, importing or using a fraud model or profile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FraudError {
    /// The model text is not valid JSON / LightGBM text; the string says where and why.
    #[error("malformed model: {0}")]
    Malformed(String),
    /// A field the importer needs is absent.
    #[error("model field \"{0}\" is missing")]
    MissingField(String),
    /// The model is valid but of a kind this scorer does not implement (dart, multiclass, ...).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A categorical split: we only score numerical splits and refuse rather than guess.
    #[error("tree {tree} node {node} has a categorical split, which is not supported")]
    CategoricalSplit { tree: usize, node: usize },
    /// The model text is larger than [`crate::fraud::import::MAX_MODEL_BYTES`].
    #[error("model text is {bytes} bytes, more than the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    /// A model with no trees at all scores nothing useful.
    #[error("the model has no trees")]
    NoTrees,
    /// A tree with no nodes.
    #[error("tree {tree} has no nodes")]
    EmptyTree { tree: usize },
    /// A child index points outside the tree's node list.
    #[error("tree {tree} node {node} has child {child}, outside the tree's {len} nodes")]
    ChildOutOfRange {
        tree: usize,
        node: usize,
        child: i64,
        len: usize,
    },
    /// Following children leads back to an ancestor: scoring would never end.
    #[error("tree {tree} has a cycle through node {node}")]
    Cycle { tree: usize, node: usize },
    /// Two paths lead to the same node: not a tree (a DAG), refused to keep paths unique.
    #[error("tree {tree} node {node} is reached from two parents")]
    SharedNode { tree: usize, node: usize },
    /// A split threshold is NaN: every comparison would be false.
    #[error("tree {tree} node {node} has a NaN split threshold")]
    NanThreshold { tree: usize, node: usize },
    /// A split threshold is infinite: one side of the split could never be taken
    /// (or, for -inf, the model was damaged); refused rather than scored.
    #[error("tree {tree} node {node} has an infinite split threshold")]
    InfiniteThreshold { tree: usize, node: usize },
    /// A leaf value (or node expected value) is NaN or infinite.
    #[error("tree {tree} node {node} has a non-finite value")]
    NonFiniteValue { tree: usize, node: usize },
    /// A split names a feature index the model's feature list does not have.
    #[error("tree {tree} node {node} splits on feature {feature}, but the model has {n_features} features")]
    FeatureOutOfRange {
        tree: usize,
        node: usize,
        feature: i64,
        n_features: usize,
    },
    /// The model's own feature names differ from the feature list given by the caller.
    #[error("model features [{model}] do not match the given features [{given}]")]
    FeatureMismatch { model: String, given: String },
    /// A base score / sigmoid parameter that is not finite or out of its domain.
    #[error("invalid model parameter {name}: {value}")]
    BadParameter { name: String, value: String },
    /// A feature vector of the wrong length was passed to the scorer.
    #[error("the model expects {expected} feature values, got {got}")]
    WrongFeatureCount { expected: usize, got: usize },
    /// A feature name is neither built-in nor among the extra attributes.
    #[error("unknown feature \"{0}\"")]
    UnknownFeature(String),
    /// The same feature name appears twice in a feature list.
    #[error("feature \"{0}\" is listed twice")]
    DuplicateFeature(String),
    /// A profile was encoded by a newer (or foreign) version of the code.
    #[error("profile encoding version {0} is not supported")]
    UnknownProfileVersion(u8),
    /// A profile's bytes end too early or carry impossible values.
    #[error("profile bytes are corrupt: {0}")]
    CorruptProfile(String),
    /// A payment value the features cannot use (e.g. NaN amount).
    #[error("invalid payment: {0}")]
    InvalidPayment(String),
    /// Metrics need both fraud and non-fraud examples.
    #[error("metrics need both positive and negative labels; got {positives} positives and {negatives} negatives")]
    OneClass { positives: usize, negatives: usize },
    /// A score used for metrics or training is NaN.
    #[error("score or value {index} is NaN")]
    NanScore { index: usize },
    /// Training input is unusable (no rows, ragged rows, ...).
    #[error("invalid training data: {0}")]
    BadTrainingData(String),
    /// A training, drift or rule parameter outside its documented range.
    #[error("invalid parameter {name} = {value}: expected {expected}")]
    InvalidParameter {
        name: String,
        value: String,
        expected: String,
    },
    /// The caller's `should_stop` asked training to stop (query cancel, timeout).
    #[error("training was stopped after {rounds} boosting rounds")]
    Interrupted { rounds: usize },
    /// The GBDT library refused the data or failed; the string is its message.
    #[error("GBDT training failed: {0}")]
    Training(String),
    /// A stored model's envelope is not ours or is of a version this code cannot read.
    #[error("stored model: {0}")]
    StoredFormat(String),
    /// A rule's condition text does not parse; `position` is the byte offset.
    #[error("rule \"{rule}\": {message} at position {position}")]
    RuleSyntax {
        rule: String,
        position: usize,
        message: String,
    },
    /// Two rules of one rule set have the same name.
    #[error("rule \"{0}\" is defined twice")]
    DuplicateRule(String),
}

/// Result type of the fraud core.
pub type Result<T> = std::result::Result<T, FraudError>;
