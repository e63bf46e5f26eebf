//! The network being trained: frozen embeddings and lower layers, trainable top layers and a
//! head. The same weights run two ways: a *training* forward built only from ops that candle can
//! differentiate (layer norm from mean/variance, the composed softmax, dropout), and an
//! *inference* forward with candle's fused layer norm and softmax, the maths of
//! `naba_models::Encoder`. A parity test holds the two together.

use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use naba_models::config::{Activation, ModelConfig};
use naba_models::layers::Embedding;
use naba_models::weights::Weights;

/// Which forward to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable ops only (and dropout when a generator is given).
    Train,
    /// candle's fused kernels, no dropout.
    Infer,
}

/// A dense tensor that may be a trainable variable.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its Hugging Face name (`bert.encoder.layer.11.output.dense.weight`, `classifier.bias`).
    pub name: String,
    pub tensor: Tensor,
    pub var: Option<Var>,
    /// Optimiser group: `Some(depth)` for encoder layers (0 = top layer), `None` for the head.
    pub depth: Option<usize>,
    /// Whether weight decay applies (not to biases and layer norms).
    pub decay: bool,
}

impl Param {
    fn new(name: String, tensor: Tensor, train: bool, depth: Option<usize>) -> Result<Self> {
        let decay = (name.ends_with(".weight") && !name.contains("LayerNorm"))
            || name.ends_with(LORA_A)
            || name.ends_with(LORA_B);
        if train {
            let var = Var::from_tensor(&tensor.to_dtype(DType::F32)?.contiguous()?)?;
            Ok(Self {
                name,
                tensor: var.as_tensor().clone(),
                var: Some(var),
                depth,
                decay,
            })
        } else {
            Ok(Self {
                name,
                tensor,
                var: None,
                depth,
                decay,
            })
        }
    }
}

/// A linear layer: indices of its tensors in [`TrainNet::params`].
pub(crate) struct Lin {
    pub(crate) w: usize,
    pub(crate) b: usize,
    /// Low-rank adapter `(a, b)`: the layer computes `x·(W + B·A)ᵀ + bias` with `W` frozen.
    lora: Option<(usize, usize)>,
}

/// Suffixes of a linear layer's adapter matrices, beside its `.weight` and `.bias`
/// (`bert.encoder.layer.11.output.dense.lora_a`): `A` is `[rank, in]`, `B` is `[out, rank]`.
pub const LORA_A: &str = ".lora_a";
pub const LORA_B: &str = ".lora_b";

/// What changes in training, besides the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trainable {
    /// How many of the top encoder layers change (0: the head only).
    pub layers: usize,
    /// 0: those layers' weights train directly. `r > 0`: they stay as the base has them and each
    /// of their six linear layers learns a rank-`r` change `B·A` instead (LoRA, without the
    /// `alpha / r` factor: AdamW's step size does not depend on it). `B` starts at zero, so
    /// training starts from the base's function exactly.
    pub lora_rank: usize,
}

impl From<usize> for Trainable {
    fn from(layers: usize) -> Self {
        Self {
            layers,
            lora_rank: 0,
        }
    }
}

pub(crate) struct Norm {
    pub(crate) w: usize,
    pub(crate) b: usize,
}

pub(crate) struct Block {
    pub(crate) q: Lin,
    pub(crate) k: Lin,
    pub(crate) v: Lin,
    pub(crate) ao: Lin,
    pub(crate) aln: Norm,
    pub(crate) fi: Lin,
    pub(crate) fo: Lin,
    pub(crate) oln: Norm,
}

/// Frozen embeddings, `num_layers` blocks of which the top `train_layers` train, and a token or
/// sequence head.
pub struct TrainNet {
    pub config: ModelConfig,
    /// `bert.` or `roberta.`: the prefix of encoder tensors in the exported checkpoint.
    pub prefix: String,
    word: Embedding,
    position: Tensor,
    token_type: Option<Tensor>,
    emb_norm: (Tensor, Tensor),
    params: Vec<Param>,
    blocks: Vec<Block>,
    head: Head,
    /// Blocks below this index are frozen and run once, when the cache is built.
    pub first_trained: usize,
    lora_rank: usize,
    device: Device,
}

enum Head {
    Token {
        classifier: Lin,
    },
    /// BERT's sequence head: tanh pooler on the first token, then the classifier.
    Sequence {
        pooler: Lin,
        classifier: Lin,
    },
}

/// The kind of head to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadType {
    Token,
    Sequence,
}

impl TrainNet {
    /// Builds the network from a checkpoint's tensors (`src_prefix` is where its encoder lives:
    /// `""` for the base, `bert.` for a trained model). An existing head of the right shape is
    /// reused; otherwise it starts from N(0, 0.02) drawn with `seed`.
    pub fn load(
        weights: &Weights,
        config: &ModelConfig,
        src_prefix: &str,
        head_type: HeadType,
        n_labels: usize,
        trainable: impl Into<Trainable>,
        seed: u64,
    ) -> Result<Self> {
        let Trainable {
            layers: train_layers,
            lora_rank,
        } = trainable.into();
        if weights.dtype() != DType::F32 {
            bail!("training needs f32 weights");
        }
        let device = weights.device().clone();
        let h = config.hidden_size;
        let n = config.num_layers;
        if train_layers > n {
            bail!("model.train_layers is {train_layers} but the encoder has only {n} layers");
        }
        let first_trained = n - train_layers;
        let narrowest = h.min(config.intermediate_size);
        if lora_rank >= narrowest {
            bail!("model.lora_rank is {lora_rank}: a change of that rank is no smaller than the {narrowest}-wide layers it adapts; use a rank below {narrowest} (4-16 is usual) or 0 to train the weights directly");
        }
        // Its own generator, so that switching adapters on leaves the head's draw unchanged.
        let mut lora_rng = Rng::new(seed ^ 0x10_7a);
        let sp = |s: &str| format!("{src_prefix}{s}");
        let out_prefix = match config.architecture {
            naba_models::Architecture::Bert => "bert.",
            naba_models::Architecture::XlmRoberta => "roberta.",
        }
        .to_string();
        let word = weights
            .embedding(
                &sp("embeddings.word_embeddings.weight"),
                config.vocab_size,
                h,
            )
            .context("loading the word embeddings")?;
        let position = weights.tensor(
            &sp("embeddings.position_embeddings.weight"),
            &[config.max_position_embeddings, h],
        )?;
        let tt_name = sp("embeddings.token_type_embeddings.weight");
        let token_type = match weights.shape_of(&tt_name) {
            Some(shape) => Some(weights.tensor(&tt_name, &shape)?),
            None => None,
        };
        let emb_norm = (
            weights.tensor(&sp("embeddings.LayerNorm.weight"), &[h])?,
            weights.tensor(&sp("embeddings.LayerNorm.bias"), &[h])?,
        );
        let mut params: Vec<Param> = Vec::new();
        let add = |params: &mut Vec<Param>,
                   src: String,
                   dst: String,
                   shape: &[usize],
                   train: bool,
                   depth: Option<usize>|
         -> Result<usize> {
            let t = weights.tensor(&src, shape)?;
            params.push(Param::new(dst, t, train, depth)?);
            Ok(params.len() - 1)
        };
        let mut blocks = Vec::with_capacity(n);
        let ffn = config.intermediate_size;
        for i in 0..n {
            let adapted = i >= first_trained && lora_rank > 0;
            let train = i >= first_trained && !adapted;
            let depth = Some(n - 1 - i);
            let l = |s: &str| format!("encoder.layer.{i}.{s}");
            let mut lin = |params: &mut Vec<Param>, name: &str, inp: usize, out: usize| {
                let lora = if adapted {
                    let stem = format!("{out_prefix}{}", l(name));
                    // A as PEFT draws it (uniform, ±1/sqrt(in)), B zero.
                    let bound = 1.0 / (inp as f32).sqrt();
                    let a: Vec<f32> = (0..lora_rank * inp)
                        .map(|_| (lora_rng.uniform() as f32 * 2.0 - 1.0) * bound)
                        .collect();
                    let a = Tensor::from_vec(a, (lora_rank, inp), &device)?;
                    let b = Tensor::zeros((out, lora_rank), DType::F32, &device)?;
                    params.push(Param::new(format!("{stem}{LORA_A}"), a, true, depth)?);
                    params.push(Param::new(format!("{stem}{LORA_B}"), b, true, depth)?);
                    Some((params.len() - 2, params.len() - 1))
                } else {
                    None
                };
                Ok::<Lin, anyhow::Error>(Lin {
                    lora,
                    w: add(
                        params,
                        sp(&l(&format!("{name}.weight"))),
                        format!("{out_prefix}{}", l(&format!("{name}.weight"))),
                        &[out, inp],
                        train,
                        depth,
                    )?,
                    b: add(
                        params,
                        sp(&l(&format!("{name}.bias"))),
                        format!("{out_prefix}{}", l(&format!("{name}.bias"))),
                        &[out],
                        train,
                        depth,
                    )?,
                })
            };
            let q = lin(&mut params, "attention.self.query", h, h)?;
            let k = lin(&mut params, "attention.self.key", h, h)?;
            let v = lin(&mut params, "attention.self.value", h, h)?;
            let ao = lin(&mut params, "attention.output.dense", h, h)?;
            let fi = lin(&mut params, "intermediate.dense", h, ffn)?;
            let fo = lin(&mut params, "output.dense", ffn, h)?;
            let norm = |params: &mut Vec<Param>, name: &str| {
                let mut one = |part: &str| {
                    add(
                        params,
                        sp(&l(&format!("{name}.{part}"))),
                        format!("{out_prefix}{}", l(&format!("{name}.{part}"))),
                        &[h],
                        train,
                        depth,
                    )
                };
                Ok::<Norm, anyhow::Error>(Norm {
                    w: one("weight")?,
                    b: one("bias")?,
                })
            };
            let aln = norm(&mut params, "attention.output.LayerNorm")?;
            let oln = norm(&mut params, "output.LayerNorm")?;
            blocks.push(Block {
                q,
                k,
                v,
                ao,
                aln,
                fi,
                fo,
                oln,
            });
        }
        let mut rng = Rng::new(seed ^ 0x5eed_4ead);
        let mut head_lin =
            |params: &mut Vec<Param>, src: &str, dst: &str, inp: usize, out: usize| {
                let wn = format!("{src}.weight");
                let bn = format!("{src}.bias");
                let reuse = weights.shape_of(&wn) == Some(vec![out, inp])
                    && weights.shape_of(&bn) == Some(vec![out]);
                let (w, b) = if reuse {
                    (
                        weights.tensor(&wn, &[out, inp])?,
                        weights.tensor(&bn, &[out])?,
                    )
                } else {
                    let vals: Vec<f32> = (0..out * inp).map(|_| rng.normal() * 0.02).collect();
                    (
                        Tensor::from_vec(vals, (out, inp), &device)?,
                        Tensor::zeros(out, DType::F32, &device)?,
                    )
                };
                params.push(Param::new(format!("{dst}.weight"), w, true, None)?);
                params.push(Param::new(format!("{dst}.bias"), b, true, None)?);
                Ok::<Lin, anyhow::Error>(Lin {
                    w: params.len() - 2,
                    b: params.len() - 1,
                    lora: None,
                })
            };
        let head = match head_type {
            HeadType::Token => Head::Token {
                classifier: head_lin(&mut params, "classifier", "classifier", h, n_labels)?,
            },
            HeadType::Sequence => {
                // The pooler is part of the encoder in HF names (`bert.pooler.dense`).
                let pooler = head_lin(
                    &mut params,
                    &format!("{src_prefix}pooler.dense"),
                    &format!("{out_prefix}pooler.dense"),
                    h,
                    h,
                )?;
                let classifier = head_lin(&mut params, "classifier", "classifier", h, n_labels)?;
                Head::Sequence { pooler, classifier }
            }
        };
        Ok(Self {
            config: config.clone(),
            prefix: out_prefix,
            word,
            position,
            token_type,
            emb_norm,
            params,
            blocks,
            head,
            first_trained,
            lora_rank,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every parameter of the blocks and head (frozen ones too), in a fixed order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The trainable parameters.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.var.is_some())
    }

    fn t(&self, i: usize) -> &Tensor {
        &self.params[i].tensor
    }

    pub(crate) fn tensor(&self, i: usize) -> &Tensor {
        self.t(i)
    }

    pub(crate) fn block_at(&self, i: usize) -> &Block {
        &self.blocks[i]
    }

    /// The rank of the low-rank adapters that train in place of the top layers' weights (0:
    /// none).
    pub fn lora_rank(&self) -> usize {
        self.lora_rank
    }

    /// Embedding output `[batch, seq, hidden]` of right-padded rows, and the `[batch, seq]`
    /// mask (1 = real token).
    pub fn embed(&self, rows: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let (b, s) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
        if s > self.config.max_position_embeddings {
            bail!(
                "a window of {s} sub-words exceeds the encoder's {} positions; lower data.max_length",
                self.config.max_position_embeddings
            );
        }
        let pad = self.config.pad_token_id;
        let mut ids = Vec::with_capacity(b * s);
        let mut mask = Vec::with_capacity(b * s);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad, s - r.len()));
            mask.extend(std::iter::repeat_n(1f32, r.len()));
            mask.extend(std::iter::repeat_n(0f32, s - r.len()));
        }
        let ids = Tensor::from_vec(ids, (b, s), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, s), &self.device)?;
        let mut x = self.word.forward(&ids)?.to_dtype(DType::F32)?;
        let pos = self.position.narrow(0, 0, s)?.unsqueeze(0)?;
        x = x.broadcast_add(&pos)?;
        if let Some(tt) = &self.token_type {
            x = x.broadcast_add(&tt.narrow(0, 0, 1)?.unsqueeze(0)?)?;
        }
        let eps = self.config.layer_norm_eps as f32;
        let x = candle_nn::ops::layer_norm(&x, &self.emb_norm.0, &self.emb_norm.1, eps)?;
        Ok((x, mask))
    }

    /// Runs blocks `from..to` over `x`.
    pub fn blocks_forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        from: usize,
        to: usize,
        mode: Mode,
        mut dropout: Option<(&mut Rng, f64)>,
    ) -> Result<Tensor> {
        let (b, s) = mask.dims2()?;
        let additive =
            ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?.reshape((b, 1, 1, s))?;
        let mut x = x.clone();
        for i in from..to {
            let d = dropout.as_mut().map(|(r, p)| (&mut **r, *p));
            x = self.block(&self.blocks[i], &x, &additive, mode, d)?;
        }
        Ok(x)
    }

    fn linear(&self, l: &Lin, x: &Tensor) -> Result<Tensor> {
        let w = self.t(l.w);
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / inp.max(1);
        let x = x.reshape((rows, inp))?;
        let mut y = x.matmul(&w.t()?)?.broadcast_add(self.t(l.b))?;
        if let Some((a, b)) = l.lora {
            // (x·Aᵀ)·Bᵀ: two thin products, never the full B·A.
            y = (y + x.matmul(&self.t(a).t()?)?.matmul(&self.t(b).t()?)?)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = w.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }

    fn norm(&self, n: &Norm, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let eps = self.config.layer_norm_eps;
        let (w, b) = (self.t(n.w), self.t(n.b));
        match mode {
            Mode::Infer => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                w,
                b,
                eps as f32,
            )?),
            Mode::Train => layer_norm_composed(x, w, b, eps),
        }
    }

    fn block(
        &self,
        blk: &Block,
        x: &Tensor,
        mask: &Tensor,
        mode: Mode,
        mut dropout: Option<(&mut Rng, f64)>,
    ) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let nh = self.config.num_heads;
        let hd = h / nh;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(self.linear(&blk.q, x)?)?;
        let k = split(self.linear(&blk.k, x)?)?;
        let v = split(self.linear(&blk.v, x)?)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        let probs = match mode {
            Mode::Infer => candle_nn::ops::softmax_last_dim(&scores)?,
            Mode::Train => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let ao = self.linear(&blk.ao, &ctx)?;
        let ao = apply_dropout(&ao, dropout.as_mut().map(|(r, p)| (&mut **r, *p)))?;
        let attn = self.norm(&blk.aln, &(ao + x)?, mode)?;
        let inner = self.linear(&blk.fi, &attn)?;
        let inner = match self.config.activation {
            Activation::GeluErf => inner.gelu_erf()?,
            Activation::GeluTanh => inner.gelu()?,
            Activation::Relu => inner.relu()?,
            Activation::Silu => inner.silu()?,
        };
        let out = self.linear(&blk.fo, &inner)?;
        let out = apply_dropout(&out, dropout.as_mut().map(|(r, p)| (&mut **r, *p)))?;
        self.norm(&blk.oln, &(out + attn)?, mode)
    }

    /// Logits from the last hidden states: `[batch, seq, labels]` (token head) or
    /// `[batch, labels]` (sequence head).
    pub fn head_forward(
        &self,
        hidden: &Tensor,
        dropout: Option<(&mut Rng, f64)>,
    ) -> Result<Tensor> {
        match &self.head {
            Head::Token { classifier } => {
                let x = apply_dropout(hidden, dropout)?;
                self.linear(classifier, &x)
            }
            Head::Sequence { pooler, classifier } => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                let pooled = self.linear(pooler, &first)?.tanh()?;
                let pooled = apply_dropout(&pooled, dropout)?;
                self.linear(classifier, &pooled)
            }
        }
    }

    /// Embeddings, every block and the head, in one mode: what a loaded checkpoint computes.
    pub fn full_forward(&self, rows: &[Vec<u32>], mode: Mode) -> Result<Tensor> {
        let (x, mask) = self.embed(rows)?;
        let h = self.blocks_forward(&x, &mask, 0, self.blocks.len(), mode, None)?;
        self.head_forward(&h, None)
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dimension, from differentiable ops.
pub fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
}

/// Inverted dropout with a mask drawn from our own seeded generator (candle's CPU generator
/// cannot be seeded), so the same seed gives the same model.
pub fn apply_dropout(x: &Tensor, dropout: Option<(&mut Rng, f64)>) -> Result<Tensor> {
    let Some((rng, p)) = dropout else {
        return Ok(x.clone());
    };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mask = rng.dropout_mask(x.elem_count(), 1.0 - p);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok((x * mask)?)
}
