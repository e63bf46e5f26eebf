//! The error type of this crate.
//!
//! Errors are for problems that stop an evaluation (a file that cannot be read, a column that
//! does not exist, predictions that do not line up with the data). Problems with individual
//! rows of a data set are not errors: they are collected as [`crate::DataIssue`]s.

use std::path::PathBuf;

/// Everything that can stop an evaluation. Each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", "rename ...").
        action: String,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A configured column or field is not in the data file's header.
    #[error(
        "{path}: column `{column}` (the {role} column) is not in the header; the header has: \
         {available}. Name an existing column (column names are case-sensitive)"
    )]
    MissingColumn {
        /// The data file.
        path: PathBuf,
        /// The column that was asked for.
        column: String,
        /// What the column was for ("text", "label", ...).
        role: String,
        /// The columns the header does have, comma-separated.
        available: String,
    },

    /// The CSV/TSV file could not be parsed at all (not a row-level problem).
    #[error("{path}: cannot parse as {format} near line {line}: {message}")]
    Parse {
        /// The data file.
        path: PathBuf,
        /// "CSV", "TSV", "JSONL" or "CoNLL".
        format: String,
        /// 1-based line number, 0 when unknown.
        line: u64,
        /// What the parser said.
        message: String,
    },

    /// A label map string such as `agree=Favor,disagree=Against` is malformed.
    #[error(
        "invalid label map `{input}`: {reason}. Write comma-separated `dataset_label=model_label` \
         pairs, e.g. `agree=Favor,disagree=Against`"
    )]
    LabelMap {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Gold and predicted sequences do not line up.
    #[error("{what}: gold has {gold} and predictions have {predicted}; pass exactly one prediction per gold item, in the same order")]
    LengthMismatch {
        /// What was being compared ("examples", "tokens of sentence 12").
        what: String,
        /// Gold length.
        gold: usize,
        /// Predicted length.
        predicted: usize,
    },

    /// There is nothing to score.
    #[error("nothing to score: {0}")]
    Empty(String),

    /// A tag that strict IOB2 scoring cannot accept.
    #[error(
        "{side} tag `{tag}` (sentence {sentence}, token {token}) is not an IOB2 tag: strict IOB2 \
         scoring accepts `O`, `B-TYPE` and `I-TYPE` only. Map the model's labels to IOB2 \
         (e.g. with a label map) before scoring"
    )]
    InvalidTag {
        /// "gold" or "predicted".
        side: &'static str,
        /// The tag.
        tag: String,
        /// 1-based sentence number.
        sentence: usize,
        /// 1-based token number within the sentence.
        token: usize,
    },

    /// A metrics.json could not be written or read back.
    #[error("{path}: {message}")]
    Json {
        /// The metrics file.
        path: PathBuf,
        /// What went wrong, including what to do.
        message: String,
    },

    /// The output directory exists and is not a naba report, so it is not replaced.
    #[error(
        "refusing to replace {path}: it exists, is not empty and has no metrics.json, so it does \
         not look like a naba report. Choose another output directory or remove this one"
    )]
    NotAReport {
        /// The output directory.
        path: PathBuf,
    },

    /// Two reports cannot be compared.
    #[error("cannot compare {a} with {b}: {reason}")]
    Incomparable {
        /// First report.
        a: PathBuf,
        /// Second report.
        b: PathBuf,
        /// Why not.
        reason: String,
    },

    /// An option value makes no sense.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// Shard reports that do not make up one job.
    #[error("cannot merge the shard reports: {0}")]
    Merge(String),
}

impl EvalError {
    pub(crate) fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        EvalError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`EvalError`].
pub type Result<T> = std::result::Result<T, EvalError>;
