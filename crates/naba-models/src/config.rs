//! `config.json` as Hugging Face writes it, reduced to what the encoder and heads need, with the
//! checks that turn a bad file into a sentence instead of a shape error deep in a matmul.

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The two encoder families naba runs. They differ only in how position ids are made and in
/// their sequence-classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Positions count from 0; token type ids are used.
    Bert,
    /// Positions count from `pad_token_id + 1` and skip padding; one token type.
    XlmRoberta,
}

/// Which head the checkpoint carries, from `architectures` (or, failing that, its tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// A bare encoder (`BertModel`): embeddings only, no labels.
    None,
    SequenceClassification,
    TokenClassification,
}

/// How scores of a sequence classifier are read, as `problem_type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    SingleLabel,
    MultiLabel,
    Regression,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    id2label: Option<BTreeMap<String, String>>,
    label2id: Option<BTreeMap<String, i64>>,
    num_labels: Option<usize>,
    problem_type: Option<String>,
    /// naba's own settings for models it trained (input prefix, pooling); ignored by others.
    naba: Option<NabaExtras>,
}

/// Settings naba writes into `config.json` under `naba` so serving does exactly what training did.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct NabaExtras {
    /// Text put before every input (E5 expects `query: ` or `passage: `).
    #[serde(default)]
    pub prefix: String,
    /// Free-form version string shown by `naba models list` and `/v1/models`.
    #[serde(default)]
    pub version: Option<String>,
    /// Tokens per window (special tokens included) the model was trained on; serving reads
    /// long texts in windows of this size. `None`: the encoder's full length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// NER trained on packs of consecutive sentences (`data.pack_sentences`): the words of
    /// neighbouring sentences `naba eval` reads a sentence-split corpus in, so each sentence
    /// keeps the context the model learned with. `None`: each sentence alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_words: Option<usize>,
}

/// Activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
    Silu,
}

/// A validated encoder configuration plus the head and labels a checkpoint declares.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub model_type: String,
    pub head: HeadKind,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// Labels in id order; empty when the config names none (filled from the weights later).
    pub labels: Vec<String>,
    pub problem_type: ProblemType,
    pub naba: NabaExtras,
    /// Whether `architectures` named the head; when it did not, the loader decides from the
    /// weights and the task the caller asked for.
    pub head_declared: bool,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config(m) => ModelError::file(path, m),
            other => other,
        })
    }

    /// Parses and validates the JSON text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("not a valid config.json: {e}")))?;
        let model_type = raw
            .model_type
            .clone()
            .ok_or_else(|| ModelError::Config("`model_type` is missing".into()))?;
        let architecture = match model_type.as_str() {
            "bert" => Architecture::Bert,
            "xlm-roberta" | "roberta" | "camembert" => Architecture::XlmRoberta,
            other => return Err(ModelError::UnsupportedModelType(other.to_string())),
        };
        if let Some(kind) = raw.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Err(ModelError::Config(format!(
                    "position_embedding_type `{kind}` is not supported; only `absolute` is"
                )));
            }
        }
        let need = |v: Option<usize>, name: &str| {
            v.filter(|&n| n > 0)
                .ok_or_else(|| ModelError::Config(format!("`{name}` is missing or zero")))
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        if !hidden_size.is_multiple_of(num_heads) {
            return Err(ModelError::Config(format!(
                "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
            )));
        }
        let activation = match raw.hidden_act.as_deref().unwrap_or("gelu") {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(ModelError::Config(format!(
                    "hidden_act `{other}` is not supported (gelu, gelu_new, relu, silu are)"
                )))
            }
        };
        let labels = labels_from(&raw)?;
        let head = head_from(&raw.architectures);
        let head_declared = !raw.architectures.is_empty();
        let problem_type = match raw.problem_type.as_deref() {
            None | Some("single_label_classification") => ProblemType::SingleLabel,
            Some("multi_label_classification") => ProblemType::MultiLabel,
            Some("regression") => ProblemType::Regression,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "unknown problem_type `{other}`"
                )));
            }
        };
        let default_types = match architecture {
            Architecture::Bert => 2,
            Architecture::XlmRoberta => 1,
        };
        Ok(ModelConfig {
            architecture,
            model_type,
            head,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            num_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            activation,
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            type_vocab_size: raw.type_vocab_size.unwrap_or(default_types),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12),
            pad_token_id: raw.pad_token_id.unwrap_or(match architecture {
                Architecture::Bert => 0,
                Architecture::XlmRoberta => 1,
            }),
            labels,
            problem_type,
            naba: raw.naba.unwrap_or_default(),
            head_declared,
        })
    }

    /// How many tokens, special tokens included, one forward pass can take.
    pub fn max_tokens(&self) -> usize {
        match self.architecture {
            Architecture::Bert => self.max_position_embeddings,
            // XLM-R spends `pad_token_id + 1` position rows before the first real position.
            Architecture::XlmRoberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }

    /// The head size in attention.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

fn head_from(architectures: &[String]) -> HeadKind {
    for a in architectures {
        if a.ends_with("ForTokenClassification") {
            return HeadKind::TokenClassification;
        }
        if a.ends_with("ForSequenceClassification") {
            return HeadKind::SequenceClassification;
        }
    }
    HeadKind::None
}

/// `id2label` keys are strings of integers; they must cover 0..n exactly once, and agree with
/// `label2id` when both are present.
fn labels_from(raw: &RawConfig) -> Result<Vec<String>> {
    let Some(map) = &raw.id2label else {
        return Ok(match raw.num_labels {
            Some(n) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
            None => Vec::new(),
        });
    };
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let id: usize = k
            .trim()
            .parse()
            .map_err(|_| ModelError::Config(format!("id2label key `{k}` is not a number")))?;
        let slot = labels.get_mut(id).ok_or_else(|| {
            ModelError::Config(format!(
                "id2label has {} entries but an id {id}: ids must run from 0 without gaps",
                map.len()
            ))
        })?;
        *slot = Some(v.clone());
    }
    let labels: Vec<String> = labels.into_iter().flatten().collect();
    if labels.len() != map.len() {
        return Err(ModelError::Config("id2label repeats an id".into()));
    }
    if let Some(l2i) = &raw.label2id {
        for (label, &id) in l2i {
            if usize::try_from(id).ok().and_then(|i| labels.get(i)) != Some(label) {
                return Err(ModelError::Config(format!(
                    "label2id says `{label}` is {id} but id2label disagrees"
                )));
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 20"#;

    #[test]
    fn reads_labels_in_id_order() {
        let c = ModelConfig::from_json(&format!(
            r#"{{"model_type": "bert", {BASE}, "architectures": ["BertForTokenClassification"],
            "id2label": {{"1": "B-PER", "0": "O", "10": "X", "2": "I-PER", "3": "a", "4": "b",
            "5": "c", "6": "d", "7": "e", "8": "f", "9": "g"}}}}"#
        ))
        .unwrap();
        assert_eq!(&c.labels[..3], &["O", "B-PER", "I-PER"]);
        assert_eq!(c.labels[10], "X");
        assert_eq!(c.head, HeadKind::TokenClassification);
    }

    #[test]
    fn rejects_unknown_model_type_and_gaps() {
        let e = ModelConfig::from_json(&format!(r#"{{"model_type": "gpt2", {BASE}}}"#));
        assert!(matches!(e, Err(ModelError::UnsupportedModelType(t)) if t == "gpt2"));
        let e = ModelConfig::from_json(&format!(
            r#"{{"model_type": "bert", {BASE}, "id2label": {{"0": "a", "2": "b"}}}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains("without gaps"), "{e}");
    }

    #[test]
    fn xlmr_window_excludes_offset_positions() {
        let c = ModelConfig::from_json(&format!(
            r#"{{"model_type": "xlm-roberta", {BASE}, "pad_token_id": 1}}"#
        ))
        .unwrap();
        assert_eq!(c.max_tokens(), 18);
        assert_eq!(c.type_vocab_size, 1);
    }
}
