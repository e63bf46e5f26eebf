//! The BERT / XLM-RoBERTa encoder: embeddings, then post-layer-norm transformer blocks. One pass
//! gives hidden states that any number of task heads can read.

use crate::config::{Activation, Architecture, ModelConfig};
use crate::error::Result;
use crate::layers::{Embedding, Linear};
use crate::weights::Weights;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::LayerNorm;

/// Token ids of a batch, right-padded, with the mask that marks real tokens.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, seq]` u32.
    pub input_ids: Tensor,
    /// `[batch, seq]` u32, 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[batch, seq]` u32; `None` means all zeros.
    pub token_type_ids: Option<Tensor>,
}

impl Batch {
    /// Pads rows of ids (and optional type ids) to the longest with `pad_id`.
    pub fn from_rows(
        rows: &[Vec<u32>],
        types: Option<&[Vec<u32>]>,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let n = rows.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        let mut tt = Vec::with_capacity(n * len);
        for (i, row) in rows.iter().enumerate() {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad_id, len - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, len - row.len()));
            if let Some(types) = types {
                let t = types.get(i).map(Vec::as_slice).unwrap_or(&[]);
                tt.extend((0..len).map(|j| t.get(j).copied().unwrap_or(0)));
            }
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (n, len), device)?,
            attention_mask: Tensor::from_vec(mask, (n, len), device)?,
            token_type_ids: match types {
                Some(_) => Some(Tensor::from_vec(tt, (n, len), device)?),
                None => None,
            },
        })
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    norm: LayerNorm,
}

struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
}

/// The shared trunk of every naba model.
pub struct Encoder {
    config: ModelConfig,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    dtype: DType,
    device: Device,
}

impl Encoder {
    /// Loads the encoder whose tensors live under `prefix` (`"bert."`, `"roberta."` or `""`).
    pub fn load(weights: &Weights, config: &ModelConfig, prefix: &str) -> Result<Self> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let p = |s: &str| format!("{prefix}{s}");
        let token_type = if config.type_vocab_size > 0
            && weights.contains(&p("embeddings.token_type_embeddings.weight"))
        {
            Some(weights.embedding(
                &p("embeddings.token_type_embeddings.weight"),
                config.type_vocab_size,
                h,
            )?)
        } else {
            None
        };
        let embeddings = Embeddings {
            word: weights.embedding(
                &p("embeddings.word_embeddings.weight"),
                config.vocab_size,
                h,
            )?,
            position: weights.embedding(
                &p("embeddings.position_embeddings.weight"),
                config.max_position_embeddings,
                h,
            )?,
            token_type,
            norm: weights.layer_norm(&p("embeddings.LayerNorm"), h, eps)?,
        };
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let l = |s: &str| p(&format!("encoder.layer.{i}.{s}"));
            blocks.push(Block {
                query: weights.linear(&l("attention.self.query"), h, h)?,
                key: weights.linear(&l("attention.self.key"), h, h)?,
                value: weights.linear(&l("attention.self.value"), h, h)?,
                attn_out: weights.linear(&l("attention.output.dense"), h, h)?,
                attn_norm: weights.layer_norm(&l("attention.output.LayerNorm"), h, eps)?,
                ffn_in: weights.linear(&l("intermediate.dense"), h, config.intermediate_size)?,
                ffn_out: weights.linear(&l("output.dense"), config.intermediate_size, h)?,
                out_norm: weights.layer_norm(&l("output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            config: config.clone(),
            embeddings,
            blocks,
            dtype: weights.dtype(),
            device: weights.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Hidden states `[batch, seq, hidden]` of the last layer.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        if s > self.config.max_tokens() {
            return Err(crate::ModelError::Weights(format!(
                "a window of {s} tokens exceeds the model's {} positions",
                self.config.max_tokens()
            )));
        }
        let positions = self.position_ids(batch)?;
        let mut x = self.embeddings.word.forward(&batch.input_ids)?;
        x = (x + self.embeddings.position.forward(&positions)?)?;
        if let Some(tt) = &self.embeddings.token_type {
            let types = match &batch.token_type_ids {
                Some(t) => t.clone(),
                None => Tensor::zeros((b, s), DType::U32, &self.device)?,
            };
            x = (x + tt.forward(&types)?)?;
        }
        x = self.embeddings.norm.forward(&x)?;
        let mask = self.additive_mask(&batch.attention_mask)?;
        for block in &self.blocks {
            x = self.block_forward(block, &x, &mask)?;
        }
        Ok(x)
    }

    /// BERT counts positions from 0; XLM-R from `pad + 1`, skipping padding, as transformers'
    /// `create_position_ids_from_input_ids` does.
    fn position_ids(&self, batch: &Batch) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        match self.config.architecture {
            Architecture::Bert => Ok(Tensor::arange(0u32, s as u32, &self.device)?
                .unsqueeze(0)?
                .repeat((b, 1))?),
            Architecture::XlmRoberta => {
                let pad = self.config.pad_token_id;
                let ids = batch.input_ids.to_vec2::<u32>()?;
                let mut pos = Vec::with_capacity(b * s);
                for row in ids {
                    let mut count = 0u32;
                    for id in row {
                        if id == pad {
                            pos.push(pad);
                        } else {
                            count += 1;
                            pos.push(pad + count);
                        }
                    }
                }
                Ok(Tensor::from_vec(pos, (b, s), &self.device)?)
            }
        }
    }

    fn additive_mask(&self, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = mask.dims2()?;
        let min = match self.dtype {
            DType::F16 => f64::from(half::f16::MIN),
            DType::BF16 => f64::from(half::bf16::MIN),
            _ => f64::from(f32::MIN),
        };
        let m = mask.to_dtype(DType::F32)?;
        let m = ((m.ones_like()? - m)? * min)?;
        Ok(m.reshape((b, 1, 1, s))?.to_dtype(self.dtype)?)
    }

    fn block_forward(&self, blk: &Block, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let nh = self.config.num_heads;
        let hd = self.config.head_dim();
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(blk.query.forward(x)?)?;
        let k = split(blk.key.forward(x)?)?;
        let v = split(blk.value.forward(x)?)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let attn = blk.attn_norm.forward(&(blk.attn_out.forward(&ctx)? + x)?)?;
        let inner = blk.ffn_in.forward(&attn)?;
        let inner = match self.config.activation {
            Activation::GeluErf => inner.gelu_erf()?,
            Activation::GeluTanh => inner.gelu()?,
            Activation::Relu => inner.relu()?,
            Activation::Silu => inner.silu()?,
        };
        Ok(blk
            .out_norm
            .forward(&(blk.ffn_out.forward(&inner)? + attn)?)?)
    }
}

/// Mean of hidden states over real tokens, L2-normalised: the sentence embedding E5 defines.
pub fn mean_pool_normalized(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let hidden = hidden.to_dtype(DType::F32)?;
    let m = attention_mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = sum.broadcast_div(&count)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}
