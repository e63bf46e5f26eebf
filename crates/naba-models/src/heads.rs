//! Task heads as transformers names and stores them, reading the encoder's hidden states.

use crate::config::{Architecture, HeadKind, ModelConfig};
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::weights::Weights;
use candle_core::{Module, Tensor};

/// What turns hidden states into logits.
pub enum Head {
    /// A bare encoder: callers pool the hidden states themselves.
    None,
    /// `BertForSequenceClassification`: tanh pooler on the first token, then a linear layer.
    BertSequence { pooler: Linear, classifier: Linear },
    /// `XLMRobertaForSequenceClassification`: dense + tanh on `<s>`, then `out_proj`.
    RobertaSequence { dense: Linear, out_proj: Linear },
    /// `*ForTokenClassification`: one linear layer over every token.
    Token { classifier: Linear },
}

impl Head {
    /// Loads the head the config declares; the number of labels is read from the classifier
    /// when `id2label` is absent, as transformers does with `num_labels`.
    pub fn load(weights: &Weights, config: &mut ModelConfig, prefix: &str) -> Result<Self> {
        let h = config.hidden_size;
        let n_labels = |name: &str, config: &mut ModelConfig| -> Result<usize> {
            let shape = weights.shape_of(name).ok_or_else(|| {
                ModelError::Weights(format!(
                    "the config declares a classification head but `{name}` is missing"
                ))
            })?;
            let n = shape.first().copied().unwrap_or(0);
            if config.labels.is_empty() {
                config.labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
            }
            if config.labels.len() != n {
                return Err(ModelError::Weights(format!(
                    "`{name}` has {n} rows but id2label names {} labels",
                    config.labels.len()
                )));
            }
            Ok(n)
        };
        match (config.head, config.architecture) {
            (HeadKind::None, _) => Ok(Head::None),
            (HeadKind::TokenClassification, _) => {
                let n = n_labels("classifier.weight", config)?;
                Ok(Head::Token {
                    classifier: weights.linear("classifier", h, n)?,
                })
            }
            (HeadKind::SequenceClassification, Architecture::Bert) => {
                let n = n_labels("classifier.weight", config)?;
                Ok(Head::BertSequence {
                    pooler: weights.linear(&format!("{prefix}pooler.dense"), h, h)?,
                    classifier: weights.linear("classifier", h, n)?,
                })
            }
            (HeadKind::SequenceClassification, Architecture::XlmRoberta) => {
                let n = n_labels("classifier.out_proj.weight", config)?;
                Ok(Head::RobertaSequence {
                    dense: weights.linear("classifier.dense", h, h)?,
                    out_proj: weights.linear("classifier.out_proj", h, n)?,
                })
            }
        }
    }

    /// Logits: `[batch, labels]` for sequence heads, `[batch, seq, labels]` for token heads,
    /// always f32 so post-processing never sees half precision.
    pub fn forward(&self, hidden: &Tensor) -> Result<Option<Tensor>> {
        let logits = match self {
            Head::None => return Ok(None),
            Head::BertSequence { pooler, classifier } => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                classifier.forward(&pooler.forward(&first)?.tanh()?)?
            }
            Head::RobertaSequence { dense, out_proj } => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                out_proj.forward(&dense.forward(&first)?.tanh()?)?
            }
            Head::Token { classifier } => classifier.forward(hidden)?,
        };
        Ok(Some(logits.to_dtype(candle_core::DType::F32)?))
    }
}
