//! DeBERTa-v2/v3 sequence-pair classifiers, for zero-shot by entailment: the usual multilingual
//! NLI checkpoints are mDeBERTa-v3. naba's own encoder is BERT / XLM-R only, so these run on
//! candle-transformers' DeBERTa-v2 definition, loaded from a Hugging Face-layout directory.

use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::debertav2::{Config, DebertaV2SeqClassificationModel};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{Encoding, Tokenizer};

/// A DeBERTa-v2 sequence classifier with its tokenizer and labels.
pub struct DebertaClassifier {
    model: DebertaV2SeqClassificationModel,
    pub tokenizer: Arc<Tokenizer>,
    /// `id2label` in id order.
    pub labels: Vec<String>,
    /// Positions one input may hold, special tokens included.
    pub max_tokens: usize,
    pub name: String,
    pad_id: u32,
    device: Device,
}

/// True when `dir/config.json` says `model_type: deberta-v2`.
pub fn is_deberta(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c.get("model_type")?.as_str().map(|s| s == "deberta-v2"))
        .unwrap_or(false)
}

impl DebertaClassifier {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::file(&config_path, e))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(e.to_string()))?;
        let id2label = config.id2label.clone().ok_or_else(|| {
            ModelError::Config("a DeBERTa classifier needs `id2label` in config.json".into())
        })?;
        let mut labels = vec![String::new(); id2label.len()];
        for (id, label) in &id2label {
            let slot = labels.get_mut(*id as usize).ok_or_else(|| {
                ModelError::Config(format!(
                    "id2label has id {id} beyond its {} labels",
                    id2label.len()
                ))
            })?;
            *slot = label.clone();
        }
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::file(&weights, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        let model =
            DebertaV2SeqClassificationModel::load(vb.pp("deberta"), &config, Some(id2label))
                .map_err(|e| ModelError::Weights(e.to_string()))?;
        let tokenizer = crate::tokenizer::load(dir)?;
        let pad_id = crate::tokenizer::pad_id(&tokenizer, config.pad_token_id.unwrap_or(0) as u32);
        Ok(Self {
            model,
            tokenizer,
            labels,
            max_tokens: config.max_position_embeddings,
            name: dir.display().to_string(),
            pad_id,
            device: device.clone(),
        })
    }

    /// Logits of a batch of encodings (one row of labels each).
    pub fn logits(&self, encs: &[&Encoding]) -> Result<Vec<Vec<f32>>> {
        let len = encs.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encs.len() * len);
        let mut mask = Vec::with_capacity(encs.len() * len);
        for e in encs {
            ids.extend_from_slice(e.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, len - e.len()));
            mask.extend(std::iter::repeat_n(1u32, e.len()));
            mask.extend(std::iter::repeat_n(0u32, len - e.len()));
        }
        let shape = (encs.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let logits = self.model.forward(&ids, None, Some(mask))?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}
