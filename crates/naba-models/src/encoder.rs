//! The BERT / XLM-RoBERTa encoder: embeddings, then post-layer-norm transformer blocks. One pass
//! gives hidden states that any number of task heads can read.
//!
//! Two engines compute the same function. The *fast* one (CPU, f32) packs the real tokens of a
//! batch into one `[tokens, hidden]` matrix and runs each block as four fused kernels from
//! `naba-kernels` (Q/K/V in one product, attention per sequence without padding or masks,
//! bias + GELU in the feed-forward product, residual add inside layer norm). The *reference*
//! one is plain candle ops over the padded batch; it runs on GPUs, in half precision, on
//! 4-bit weights (unless they are expanded on load), and whenever `NABA_ENGINE=reference` asks
//! for it, and tests hold the fast one to it. The fast engine's matrix products multiply in
//! int8 on CPUs with AVX2 (VNNI where the CPU has it), else f32 (norms, softmax and GELU stay
//! f32), unless the load options ask for f32 or bf16.

use crate::config::{Activation, Architecture, ModelConfig};
use crate::error::Result;
use crate::layers::{Embedding, Linear};
use crate::weights::Weights;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::LayerNorm;
use naba_kernels::linear::Epilogue;
use naba_kernels::ops::{FusedLinear, LayerNormOp, PackedAttention};
use naba_kernels::Precision;

/// Which engine runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Fused CPU kernels over packed tokens where they apply (CPU, f32, GELU), else reference.
    #[default]
    Fast,
    /// candle's own ops over padded batches, everywhere.
    Reference,
}

impl Engine {
    /// `NABA_ENGINE=reference` selects the reference engine; anything else, the fast one.
    pub fn from_env() -> Self {
        match std::env::var("NABA_ENGINE").as_deref() {
            Ok("reference") => Engine::Reference,
            _ => Engine::Fast,
        }
    }
}

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

/// A block prepared for the fast engine: the same weights, Q, K and V stacked.
struct FastBlock {
    qkv: FusedLinear,
    attn_out: FusedLinear,
    attn_norm: LayerNormOp,
    ffn_in: FusedLinear,
    ffn_out: FusedLinear,
    out_norm: LayerNormOp,
}

impl FastBlock {
    fn norm_op(n: &LayerNorm) -> Result<LayerNormOp> {
        let bias = match n.bias() {
            Some(b) => b.clone(),
            None => n.weight().zeros_like()?,
        };
        Ok(LayerNormOp::new(n.weight(), &bias, n.eps())?)
    }

    fn new(b: &Block, precision: Precision) -> Result<Self> {
        let norm = Self::norm_op;
        let lin = |l: &Linear, e| -> Result<FusedLinear> {
            Ok(FusedLinear::new(
                &l.dense_weight()?,
                l.bias(),
                e,
                precision,
            )?)
        };
        let (q, k, v) = (
            b.query.dense_weight()?,
            b.key.dense_weight()?,
            b.value.dense_weight()?,
        );
        Ok(Self {
            qkv: FusedLinear::stacked(
                &[
                    (&q, b.query.bias()),
                    (&k, b.key.bias()),
                    (&v, b.value.bias()),
                ],
                precision,
            )?,
            attn_out: lin(&b.attn_out, Epilogue::None)?,
            attn_norm: norm(&b.attn_norm)?,
            ffn_in: lin(&b.ffn_in, Epilogue::Gelu)?,
            ffn_out: lin(&b.ffn_out, Epilogue::None)?,
            out_norm: norm(&b.out_norm)?,
        })
    }
}

enum Blocks {
    Reference(Vec<Block>),
    Fast {
        blocks: Vec<FastBlock>,
        embedding_norm: LayerNormOp,
    },
}

/// The shared trunk of every naba model.
pub struct Encoder {
    config: ModelConfig,
    embeddings: Embeddings,
    blocks: Blocks,
    dtype: DType,
    device: Device,
}

impl Encoder {
    /// Loads the encoder whose tensors live under `prefix` (`"bert."`, `"roberta."` or `""`).
    /// `word_embeddings`, when given, replaces the checkpoint's own table (a table shared with
    /// other models of the same base); `engine` picks the engine where both could run.
    pub fn load(
        weights: &Weights,
        config: &ModelConfig,
        prefix: &str,
        word_embeddings: Option<Embedding>,
        engine: Engine,
        precision: Precision,
    ) -> Result<Self> {
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
        let word = match word_embeddings {
            Some(shared) => {
                if shared.rows()? != config.vocab_size {
                    return Err(crate::ModelError::Weights(format!(
                        "the shared word embeddings have {} rows, the config {}",
                        shared.rows()?,
                        config.vocab_size
                    )));
                }
                shared
            }
            None => weights.embedding(
                &p("embeddings.word_embeddings.weight"),
                config.vocab_size,
                h,
            )?,
        };
        let embeddings = Embeddings {
            word,
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
        let fast = engine == Engine::Fast
            && weights.device().is_cpu()
            && weights.dtype() == DType::F32
            && config.activation == Activation::GeluErf
            // 4-bit weights keep their own kernels (and their rounding) unless expanded on load.
            && blocks.iter().all(|b| {
                [&b.query, &b.key, &b.value, &b.attn_out, &b.ffn_in, &b.ffn_out]
                    .iter()
                    .all(|l| l.is_dense())
            });
        let blocks = if fast {
            Blocks::Fast {
                blocks: blocks
                    .iter()
                    .map(|b| FastBlock::new(b, precision))
                    .collect::<Result<_>>()?,
                embedding_norm: FastBlock::norm_op(&embeddings.norm)?,
            }
        } else {
            Blocks::Reference(blocks)
        };
        Ok(Self {
            config: config.clone(),
            embeddings,
            blocks,
            dtype: weights.dtype(),
            device: weights.device().clone(),
        })
    }

    /// Which engine this encoder runs.
    pub fn engine(&self) -> Engine {
        match self.blocks {
            Blocks::Reference(_) => Engine::Reference,
            Blocks::Fast { .. } => Engine::Fast,
        }
    }

    /// What the fast engine's products multiply in (`None` on the reference engine, whose
    /// products run in the weights' dtype).
    pub fn precision(&self) -> Option<Precision> {
        match &self.blocks {
            Blocks::Reference(_) => None,
            Blocks::Fast { blocks, .. } => blocks.first().map(|b| b.qkv.precision()),
        }
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
        let blocks = match &self.blocks {
            Blocks::Fast {
                blocks,
                embedding_norm,
            } => return self.forward_packed(batch, blocks, embedding_norm),
            Blocks::Reference(blocks) => blocks,
        };
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
        for block in blocks {
            x = self.block_forward(block, &x, &mask)?;
        }
        Ok(x)
    }

    /// The fast engine: the real tokens of every row (those the mask marks) packed one row
    /// after another, run through the fused blocks, and put back in their padded places with
    /// zeros elsewhere.
    fn forward_packed(
        &self,
        batch: &Batch,
        blocks: &[FastBlock],
        embedding_norm: &LayerNormOp,
    ) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        let h = self.config.hidden_size;
        let ids = batch.input_ids.flatten_all()?.to_vec1::<u32>()?;
        let mask = batch.attention_mask.flatten_all()?.to_vec1::<u32>()?;
        let types = match &batch.token_type_ids {
            Some(t) => t.flatten_all()?.to_vec1::<u32>()?,
            None => vec![0; b * s],
        };
        let positions = self.position_ids(batch)?.flatten_all()?.to_vec1::<u32>()?;
        let keep: Vec<usize> = (0..b * s).filter(|&i| mask[i] != 0).collect();
        let mut offsets = Vec::with_capacity(b + 1);
        offsets.push(0);
        for row in mask.chunks(s.max(1)).take(b) {
            let n = row.iter().filter(|&&m| m != 0).count();
            offsets.push(offsets.last().copied().unwrap_or(0) + n);
        }
        let tokens = keep.len();
        if tokens == 0 {
            return Ok(Tensor::zeros((b, s, h), DType::F32, &self.device)?);
        }
        let pick = |v: &[u32]| -> Result<Tensor> {
            let picked: Vec<u32> = keep.iter().map(|&i| v[i]).collect();
            Ok(Tensor::from_vec(picked, tokens, &self.device)?)
        };
        let mut x = self.embeddings.word.forward(&pick(&ids)?)?;
        x = (x + self.embeddings.position.forward(&pick(&positions)?)?)?;
        if let Some(tt) = &self.embeddings.token_type {
            x = (x + tt.forward(&pick(&types)?)?)?;
        }
        let mut x = embedding_norm.forward(&x.contiguous()?)?;
        let scale = 1.0 / (self.config.head_dim() as f32).sqrt();
        // Attention's products follow the linear layers': bf16 on AMX tiles with int8 or bf16
        // products, f32 with f32 ones.
        let products = blocks.first().map_or(Precision::F32, |b| b.qkv.precision());
        let attention =
            PackedAttention::new(offsets, self.config.num_heads, scale)?.with_products(products);
        for blk in blocks {
            let ctx = attention.forward(&blk.qkv.forward(&x)?)?;
            let attn = blk
                .attn_norm
                .forward_residual(&blk.attn_out.forward(&ctx)?, &x)?;
            let inner = blk.ffn_in.forward(&attn)?;
            x = blk
                .out_norm
                .forward_residual(&blk.ffn_out.forward(&inner)?, &attn)?;
        }
        let packed = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; b * s * h];
        for (row, &at) in packed.chunks_exact(h).zip(&keep) {
            out[at * h..(at + 1) * h].copy_from_slice(row);
        }
        Ok(Tensor::from_vec(out, (b, s, h), &self.device)?)
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
