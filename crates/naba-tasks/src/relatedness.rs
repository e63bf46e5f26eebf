//! Whether a long text concerns a stance target at all, asked before its stance is.
//!
//! A stance model reads a target with one passage and says agree, disagree or neither. Read
//! sentence by sentence, an article about something else still has a few sentences that look
//! like they take a side, and those used to decide. The gate scores each passage's E5 similarity
//! to the target with a logistic curve fitted on training splits only (ANS claims with their own
//! sentences as related, with sentences of random ANT articles as unrelated; see
//! `scripts/fit_relatedness.py`). Passages below one half do not vote; an article with none
//! above it is answered "neither".
//!
//! The parameters live beside the stance model in [`FILE_NAME`]; a model without that file has
//! no gate and reads long texts as before.

use crate::pipeline::{Pipeline, PipelineOptions, TaskError};
use naba_models::{LoadOptions, Model};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The gate's parameters, in the stance model's directory.
pub const FILE_NAME: &str = "relatedness.json";

/// What `scripts/fit_relatedness.py` writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelatednessParams {
    /// The encoder whose embeddings are compared (a model name or directory, as `--model`).
    pub encoder: String,
    /// E5 input prefix put before both target and passage.
    pub prefix: String,
    /// P(related) = sigmoid(weight * cosine + bias).
    pub weight: f32,
    pub bias: f32,
    /// What the curve was fitted on, for the model card.
    #[serde(default)]
    pub fitted_on: String,
}

impl RelatednessParams {
    /// The probability that a passage with this cosine to the target concerns it.
    pub fn probability(&self, cosine: f32) -> f32 {
        crate::scores::sigmoid_one(self.weight * cosine + self.bias)
    }

    /// Reads [`FILE_NAME`] from `dir`; `None` when the model has none.
    pub fn read(dir: &Path) -> Result<Option<Self>, TaskError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |why: String| {
            TaskError::Tokenizer(format!(
                "{} is not a relatedness gate ({why}); fix it or delete it to read long texts \
                 without the gate",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let params: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !(params.weight.is_finite() && params.bias.is_finite()) || params.weight <= 0.0 {
            return Err(bad(
                "weight must be a positive number and bias a number".into()
            ));
        }
        Ok(Some(params))
    }
}

/// The gate: its parameters and the encoder that embeds target and passages.
pub struct Relatedness {
    params: RelatednessParams,
    encoder: Pipeline,
}

impl Relatedness {
    pub fn new(params: RelatednessParams, encoder: Pipeline) -> Self {
        Self { params, encoder }
    }

    /// The gate a stance model ships with, its encoder loaded with `opts`; `None` when the
    /// model's directory has no [`FILE_NAME`].
    pub fn for_model(model: &Model, opts: &LoadOptions) -> Result<Option<Self>, TaskError> {
        let Some(params) = RelatednessParams::read(&model.dir)? else {
            return Ok(None);
        };
        // Dense f32: the 4-bit encoder is about nine times slower on CPU, and without the
        // word table (which stays 4-bit and shared) dense costs 86 MB.
        let opts = LoadOptions {
            dequantize: true,
            head_hint: None,
            ..opts.clone()
        };
        let encoder = Model::load(&params.encoder, &opts).map_err(|e| {
            TaskError::Tokenizer(format!(
                "the relatedness gate of `{}` needs the encoder `{}`: {e}",
                model.name, params.encoder
            ))
        })?;
        let encoder = Pipeline::new(encoder, &PipelineOptions::default())?;
        Ok(Some(Self::new(params, encoder)))
    }

    pub fn params(&self) -> &RelatednessParams {
        &self.params
    }

    /// P(related) of each passage to the target, in passage order: the highest of its
    /// sentences', since a passage may join a short sentence that concerns the target to
    /// others that do not, and its mean embedding would dilute the one that does.
    pub fn passage_scores(&self, target: &str, passages: &[&str]) -> Result<Vec<f32>, TaskError> {
        let mut sentences = Vec::new();
        let mut owner = Vec::new();
        for (k, passage) in passages.iter().enumerate() {
            let index = naba_text::CharIndex::new(passage);
            let byte = |c: usize| index.char_to_byte(c).unwrap_or(passage.len());
            for (s, e) in naba_text::split_sentences(passage) {
                sentences.push(&passage[byte(s)..byte(e)]);
                owner.push(k);
            }
        }
        let mut best = vec![0f32; passages.len()];
        for (p, k) in self.scores(target, &sentences)?.into_iter().zip(owner) {
            best[k] = best[k].max(p);
        }
        Ok(best)
    }

    /// P(related) of each text to the target, in text order.
    pub fn scores(&self, target: &str, passages: &[&str]) -> Result<Vec<f32>, TaskError> {
        let mut texts = Vec::with_capacity(passages.len() + 1);
        texts.push(target);
        texts.extend_from_slice(passages);
        let mut vectors = self
            .encoder
            .embed(&texts, &self.params.prefix)
            .into_iter()
            .map(|r| r.map(|(v, _)| v));
        let target = vectors.next().ok_or(TaskError::EmptyTarget)??;
        vectors
            .map(|v| {
                let v = v?;
                let cosine: f32 = target.iter().zip(&v).map(|(a, b)| a * b).sum();
                Ok(self.params.probability(cosine))
            })
            .collect()
    }
}

impl std::fmt::Debug for Relatedness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relatedness")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_rises_with_similarity_and_crosses_one_half_where_fitted() {
        let p = RelatednessParams {
            encoder: "base".into(),
            prefix: "query: ".into(),
            weight: 40.0,
            bias: -34.0,
            fitted_on: String::new(),
        };
        assert!(p.probability(0.80) < 0.5);
        assert!((p.probability(0.85) - 0.5).abs() < 1e-6);
        assert!(p.probability(0.90) > 0.5);
    }

    #[test]
    fn a_missing_file_is_no_gate_and_a_bad_one_says_which_file() {
        let dir = std::env::temp_dir().join(format!("naba-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(RelatednessParams::read(&dir).unwrap().is_none());
        std::fs::write(dir.join(FILE_NAME), "{\"encoder\": 3}").unwrap();
        let err = RelatednessParams::read(&dir).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        std::fs::write(
            dir.join(FILE_NAME),
            r#"{"encoder":"base","prefix":"query: ","weight":-1,"bias":0}"#,
        )
        .unwrap();
        let err = RelatednessParams::read(&dir).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
