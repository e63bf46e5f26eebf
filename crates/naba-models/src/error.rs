//! One error type for everything that can go wrong while finding, reading or running a model.

use std::path::PathBuf;

/// Errors carry the file or setting at fault and, where there is one, what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("config.json: {0}")]
    Config(String),
    #[error(
        "unsupported model_type `{0}` in config.json: naba runs the BERT family (bert: mBERT, \
         AraBERT, CAMeLBERT, E5) and XLM-RoBERTa (xlm-roberta, roberta)"
    )]
    UnsupportedModelType(String),
    #[error("weights do not match config.json: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    NotFound(String),
    #[error("device: {0}")]
    Device(String),
    #[error("models fetch: {0}")]
    Fetch(String),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ModelError::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
