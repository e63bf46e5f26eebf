//! The fast training engine: the trained encoder blocks' forward and backward passes written
//! out by hand over `f32` buffers with naba-kernels, in place of candle's autograd.
//!
//! Why: candle differentiates the blocks op by op. Every layer norm, softmax and GELU becomes a
//! chain of elementary tensors, each allocated and walked separately, and every batch is
//! padded to its longest row. Here a batch is *packed* (the real tokens of all its rows one
//! after another, rows given by offsets, as the inference engine does), each block keeps only
//! what its backward pass needs (a [`Tape`]), and the backward pass is the few products and
//! fused row passes the maths asks for. The head and the loss stay in candle: they are small,
//! and their gradient with respect to the last hidden states is where this engine takes over.
//!
//! The maths is the [`Mode::Train`](crate::net::Mode) forward of [`TrainNet`]: dropout after
//! the attention-output and FFN-output projections, none on attention probabilities; a test
//! holds the two engines' gradients together.
//!
//! The big products (four forward, eight backward per block) multiply in the [`Precision`] the
//! caller picks: f32, or bf16 operands with f32 sums where the CPU has AVX512-BF16
//! (`naba_kernels::bf16`). Weights, gradients and optimiser state stay f32 either way.

use crate::net::{Block, Lin, Norm, TrainNet};
use crate::recipe::TrainEngine;
use crate::rng::Rng;
use crate::view::View;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use naba_kernels::linear::{self, Epilogue};
use naba_kernels::{attention, bf16, math, norm, Isa, Precision};
use naba_models::config::Activation;
use rayon::prelude::*;
use std::collections::HashMap;

/// Why the fast engine cannot train this network, if it cannot: it covers the CPU, f32,
/// erf-GELU encoders with their weights trained directly (not through adapters).
pub fn unsupported(net: &TrainNet) -> Option<String> {
    if !matches!(net.device(), Device::Cpu) {
        return Some("the fast training engine runs on the CPU only".into());
    }
    if net.config.activation != Activation::GeluErf {
        return Some(format!(
            "the fast training engine implements erf-GELU, not {:?}",
            net.config.activation
        ));
    }
    if net.lora_rank() > 0 {
        return Some("low-rank adapters train through candle's autograd".into());
    }
    None
}

/// Whether to train `net` on the fast engine, given the recipe's choice: `Err(why)` when the
/// fast engine was asked for and cannot train it (the caller falls back or stops).
pub fn chosen(engine: TrainEngine, net: &TrainNet) -> std::result::Result<bool, String> {
    match (engine, unsupported(net)) {
        (TrainEngine::Fast, None) => Ok(true),
        (TrainEngine::Fast, Some(why)) => Err(why),
        (TrainEngine::Reference, _) => Ok(false),
    }
}

/// What the backward pass of one block needs from its forward pass.
struct LayerTape {
    layer: usize,
    /// The block's input `[T, h]`.
    x: Vec<f32>,
    /// The stacked Q, K, V weight the forward pass used (the backward pass's `dx` needs it).
    qkv_w: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    /// Attention output, the out-projection's input.
    ctx: Vec<f32>,
    drop1: Option<Vec<f32>>,
    xhat1: Vec<f32>,
    inv1: Vec<f32>,
    /// First layer norm's output: the FFN's input and its residual.
    y1: Vec<f32>,
    act: Vec<f32>,
    /// GELU's derivative at the FFN's pre-activation.
    dgelu: Vec<f32>,
    drop2: Option<Vec<f32>>,
    xhat2: Vec<f32>,
    inv2: Vec<f32>,
}

/// The forward pass's record, consumed by [`backward`].
pub struct Tape {
    offsets: Vec<usize>,
    precision: Precision,
    layers: Vec<LayerTape>,
}

/// A packed batch: rows of `[len, hidden]` one after another; `offsets[i]..offsets[i + 1]` are
/// row `i`'s tokens.
pub struct Packed {
    pub x: Vec<f32>,
    pub offsets: Vec<usize>,
}

impl Packed {
    /// Packs the given `[len · hidden]` rows.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a [f32]>, hidden: usize) -> Self {
        let mut x = Vec::new();
        let mut offsets = vec![0];
        for r in rows {
            x.extend_from_slice(r);
            offsets.push(x.len() / hidden.max(1));
        }
        Self { x, offsets }
    }

    /// The rows right-padded with zeros into a `[rows, longest, hidden]` tensor.
    pub fn to_padded(&self, values: &[f32], hidden: usize) -> Result<Tensor> {
        let s = self
            .offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        let b = self.offsets.len().saturating_sub(1);
        let mut out = vec![0f32; b * s * hidden];
        for (r, w) in self.offsets.windows(2).enumerate() {
            let (a, e) = (w[0] * hidden, w[1] * hidden);
            out[r * s * hidden..r * s * hidden + (e - a)].copy_from_slice(&values[a..e]);
        }
        Ok(Tensor::from_vec(out, (b, s, hidden), &Device::Cpu)?)
    }

    /// The real tokens of a padded `[rows, longest, hidden]` tensor, packed as `self` is.
    pub fn from_padded(&self, t: &Tensor, hidden: usize) -> Result<Vec<f32>> {
        let (b, s, h) = t.dims3()?;
        if h != hidden || b + 1 != self.offsets.len() {
            bail!("a gradient of shape [{b}, {s}, {h}] does not match the packed batch");
        }
        let all = t.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(self.x.len());
        for (r, w) in self.offsets.windows(2).enumerate() {
            out.extend_from_slice(&all[r * s * h..(r * s + (w[1] - w[0])) * h]);
        }
        Ok(out)
    }
}

/// Q, K and V of a block stacked into one `[3·hidden, hidden]` weight and its bias, so one
/// product serves the three (copied per step: the weights change every step).
fn stacked_qkv(net: &TrainNet, blk: &Block) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut w = Vec::new();
    let mut b = Vec::new();
    for l in [&blk.q, &blk.k, &blk.v] {
        w.extend_from_slice(View::new(net.tensor(l.w))?.get());
        b.extend_from_slice(View::new(net.tensor(l.b))?.get());
    }
    Ok((w, b))
}

/// `out = x · Wᵀ + b` for one of the block's linear layers, its weights read in place.
fn project(
    net: &TrainNet,
    precision: Precision,
    lin: &Lin,
    x: &[f32],
    out: &mut [f32],
    (t, inp, outf): (usize, usize, usize),
) -> Result<()> {
    let (w, b) = (View::new(net.tensor(lin.w))?, View::new(net.tensor(lin.b))?);
    product(precision, x, w.get(), Some(b.get()), out, (t, inp, outf));
    Ok(())
}

/// `out[t, n] = x[t, k] · w[n, k]ᵀ + b` in `precision`.
fn product(
    precision: Precision,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    (t, k, n): (usize, usize, usize),
) {
    match precision {
        Precision::Bf16 => bf16::linear(x, w, b, out, (t, k, n), Epilogue::None),
        // `runnable` never passes int8 here.
        Precision::F32 | Precision::Int8 => {
            linear::linear(Isa::best(), x, w, b, out, t, k, n, Epilogue::None)
        }
    }
}

/// [`linear::matmul`] in `precision`.
fn matmul(
    precision: Precision,
    a: (&[f32], bool),
    b: (&[f32], bool),
    out: &mut [f32],
    mkn: (usize, usize, usize),
) {
    match precision {
        Precision::Bf16 => bf16::matmul(a, b, out, mkn, false),
        Precision::F32 | Precision::Int8 => linear::matmul(a, b, out, mkn, false),
    }
}

/// The precision asked for, where this CPU can run it and training can use it: int8 (an
/// inference format) trains in bf16, and bf16 falls back to f32 without AVX512-BF16.
pub fn runnable(precision: Precision) -> Precision {
    match precision {
        Precision::Bf16 | Precision::Int8 if bf16::supported() => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// Layer norm of `x + residual` in place; returns the normalised rows and `1/σ` per row.
fn norm_forward(
    net: &TrainNet,
    n: &Norm,
    x: &mut [f32],
    residual: &[f32],
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let width = net.config.hidden_size;
    let (mut xhat, mut inv) = (vec![0f32; x.len()], vec![0f32; x.len() / width]);
    let (g, b) = (View::new(net.tensor(n.w))?, View::new(net.tensor(n.b))?);
    norm::layer_norm_train(
        x,
        Some(residual),
        (g.get(), b.get()),
        eps,
        &mut xhat,
        &mut inv,
    );
    Ok((xhat, inv))
}

/// The backward pass of [`norm_forward`]: the gradient of `x + residual`; the gain and bias
/// gradients go to `grads`.
fn norm_backward(
    net: &TrainNet,
    n: &Norm,
    dy: &[f32],
    (xhat, inv): (&[f32], &[f32]),
    grads: &mut Vec<(usize, Vec<f32>)>,
) -> Result<Vec<f32>> {
    let width = net.config.hidden_size;
    let mut dx = vec![0f32; dy.len()];
    let (mut dg, mut db) = (vec![0f32; width], vec![0f32; width]);
    let g = View::new(net.tensor(n.w))?;
    norm::layer_norm_backward(dy, (xhat, inv), g.get(), &mut dx, (&mut dg, &mut db));
    grads.push((n.w, dg));
    grads.push((n.b, db));
    Ok(dx)
}

/// `d` through a dropout mask (a copy; `d` itself also feeds a residual).
fn through_mask(d: &[f32], mask: Option<&Vec<f32>>) -> Vec<f32> {
    let mut out = d.to_vec();
    if let Some(m) = mask {
        times(&mut out, m);
    }
    out
}

/// Inverted dropout in place with a mask drawn from `rng` (one draw per value, in order);
/// returns the mask (`1/keep` or 0) for the backward pass.
fn dropout(x: &mut [f32], masks: &mut Option<(&mut Rng, f64)>) -> Option<Vec<f32>> {
    let (rng, p) = masks.as_mut()?;
    if *p <= 0.0 {
        return None;
    }
    let mask = rng.dropout_mask(x.len(), 1.0 - *p);
    times(x, &mask);
    Some(mask)
}

fn times(x: &mut [f32], by: &[f32]) {
    x.par_chunks_mut(1 << 14)
        .zip(by.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(v, m)| *v *= m));
}

/// Runs blocks `from..to` over a packed batch, keeping what [`backward`] needs. Dropout masks
/// are drawn from `masks` block by block (attention output, then FFN output).
pub fn forward(
    net: &TrainNet,
    batch: &Packed,
    (from, to): (usize, usize),
    mut masks: Option<(&mut Rng, f64)>,
    precision: Precision,
) -> Result<(Vec<f32>, Tape)> {
    let precision = runnable(precision);
    if let Some(why) = unsupported(net) {
        bail!(why);
    }
    let isa = Isa::best();
    let c = &net.config;
    let (h, f, nh) = (c.hidden_size, c.intermediate_size, c.num_heads);
    let t = batch.offsets.last().copied().unwrap_or(0);
    if batch.x.len() != t * h {
        bail!(
            "a packed batch of {} values is not [{t}, {h}]",
            batch.x.len()
        );
    }
    let eps = c.layer_norm_eps as f32;
    let scale = 1.0 / ((h / nh) as f32).sqrt();
    let mut x = batch.x.clone();
    let mut layers = Vec::with_capacity(to.saturating_sub(from));
    for layer in from..to {
        let blk = net.block_at(layer);
        let (qkv_w, qkv_b) = stacked_qkv(net, blk)?;
        let mut qkv = vec![0f32; t * 3 * h];
        product(precision, &x, &qkv_w, Some(&qkv_b), &mut qkv, (t, h, 3 * h));
        let mut ctx = vec![0f32; t * h];
        let mut probs = vec![0f32; attention::probs_len(&batch.offsets, nh)];
        attention::packed_attention_train(
            isa,
            &qkv,
            &batch.offsets,
            nh,
            scale,
            &mut ctx,
            &mut probs,
        );
        let mut y1 = vec![0f32; t * h];
        project(net, precision, &blk.ao, &ctx, &mut y1, (t, h, h))?;
        let drop1 = dropout(&mut y1, &mut masks);
        let (xhat1, inv1) = norm_forward(net, &blk.aln, &mut y1, &x, eps)?;
        let mut u = vec![0f32; t * f];
        project(net, precision, &blk.fi, &y1, &mut u, (t, h, f))?;
        let (mut act, mut dgelu) = (vec![0f32; t * f], vec![0f32; t * f]);
        u.par_chunks(1 << 14)
            .zip(act.par_chunks_mut(1 << 14))
            .zip(dgelu.par_chunks_mut(1 << 14))
            .for_each(|((u, a), d)| math::gelu_with_grad(isa, u, a, d));
        drop(u);
        let mut out = vec![0f32; t * h];
        project(net, precision, &blk.fo, &act, &mut out, (t, f, h))?;
        let drop2 = dropout(&mut out, &mut masks);
        let (xhat2, inv2) = norm_forward(net, &blk.oln, &mut out, &y1, eps)?;
        layers.push(LayerTape {
            layer,
            x: std::mem::replace(&mut x, out),
            qkv_w,
            qkv,
            probs,
            ctx,
            drop1,
            xhat1,
            inv1,
            y1,
            act,
            dgelu,
            drop2,
            xhat2,
            inv2,
        });
    }
    Ok((
        x,
        Tape {
            offsets: batch.offsets.clone(),
            precision,
            layers,
        },
    ))
}

/// The gradients of a linear layer: `dW = dyᵀ · x` and `db = Σ dy` (into `grads` by name),
/// and, when asked, `dx = dy · W`.
fn linear_backward(
    net: &TrainNet,
    precision: Precision,
    (w, b): (usize, usize),
    (x, dy): (&[f32], &[f32]),
    (t, inp, out): (usize, usize, usize),
    dx: Option<&mut [f32]>,
    grads: &mut Vec<(usize, Vec<f32>)>,
) -> Result<()> {
    let mut dw = vec![0f32; out * inp];
    matmul(precision, (dy, true), (x, false), &mut dw, (out, t, inp));
    let mut db = vec![0f32; out];
    norm::add_column_sums(dy, &mut db);
    if let Some(dx) = dx {
        let wv = View::new(net.tensor(w))?;
        matmul(precision, (dy, false), (wv.get(), false), dx, (t, out, inp));
    }
    grads.push((w, dw));
    grads.push((b, db));
    Ok(())
}

/// Back-propagates `dout` (the gradient of the last block's output, packed) through the
/// blocks `forward` ran, last first, and returns every block parameter's gradient by name.
/// The gradient of the first block's input is not computed: nothing below it trains.
pub fn backward(net: &TrainNet, tape: Tape, dout: Vec<f32>) -> Result<HashMap<String, Tensor>> {
    let c = &net.config;
    let (h, f, nh) = (c.hidden_size, c.intermediate_size, c.num_heads);
    let t = tape.offsets.last().copied().unwrap_or(0);
    if dout.len() != t * h {
        bail!("a gradient of {} values is not [{t}, {h}]", dout.len());
    }
    let scale = 1.0 / ((h / nh) as f32).sqrt();
    let first = tape.layers.first().map(|l| l.layer);
    let mut dy = dout;
    let mut grads: Vec<(usize, Vec<f32>)> = Vec::new();
    for lt in tape.layers.into_iter().rev() {
        let blk = net.block_at(lt.layer);
        // Second layer norm, then the FFN-output dropout and projection.
        let dr2 = norm_backward(net, &blk.oln, &dy, (&lt.xhat2, &lt.inv2), &mut grads)?;
        let d_o = through_mask(&dr2, lt.drop2.as_ref());
        let mut du = vec![0f32; t * f];
        linear_backward(
            net,
            tape.precision,
            (blk.fo.w, blk.fo.b),
            (&lt.act, &d_o),
            (t, f, h),
            Some(&mut du),
            &mut grads,
        )?;
        drop(d_o);
        times(&mut du, &lt.dgelu);
        // FFN input projection; its input also fed the residual of the second norm.
        let mut dy1 = vec![0f32; t * h];
        linear_backward(
            net,
            tape.precision,
            (blk.fi.w, blk.fi.b),
            (&lt.y1, &du),
            (t, h, f),
            Some(&mut dy1),
            &mut grads,
        )?;
        drop(du);
        dy1.iter_mut().zip(&dr2).for_each(|(a, b)| *a += b);
        drop(dr2);
        // First layer norm, attention-output dropout and projection.
        let dr1 = norm_backward(net, &blk.aln, &dy1, (&lt.xhat1, &lt.inv1), &mut grads)?;
        let da = through_mask(&dr1, lt.drop1.as_ref());
        let mut dctx = vec![0f32; t * h];
        linear_backward(
            net,
            tape.precision,
            (blk.ao.w, blk.ao.b),
            (&lt.ctx, &da),
            (t, h, h),
            Some(&mut dctx),
            &mut grads,
        )?;
        drop(da);
        let mut dqkv = vec![0f32; t * 3 * h];
        attention::packed_attention_backward(
            &lt.qkv,
            &lt.probs,
            &tape.offsets,
            nh,
            scale,
            &dctx,
            &mut dqkv,
        );
        // Q, K and V as one stacked product, split back into the three weights.
        let mut dw = vec![0f32; 3 * h * h];
        matmul(
            tape.precision,
            (&dqkv, true),
            (&lt.x, false),
            &mut dw,
            (3 * h, t, h),
        );
        let mut dbias = vec![0f32; 3 * h];
        norm::add_column_sums(&dqkv, &mut dbias);
        for (i, l) in [&blk.q, &blk.k, &blk.v].into_iter().enumerate() {
            grads.push((l.w, dw[i * h * h..(i + 1) * h * h].to_vec()));
            grads.push((l.b, dbias[i * h..(i + 1) * h].to_vec()));
        }
        if Some(lt.layer) != first {
            let mut dx = vec![0f32; t * h];
            matmul(
                tape.precision,
                (&dqkv, false),
                (&lt.qkv_w, false),
                &mut dx,
                (t, 3 * h, h),
            );
            dx.iter_mut().zip(&dr1).for_each(|(a, b)| *a += b);
            dy = dx;
        }
    }
    let mut out = HashMap::with_capacity(grads.len());
    for (i, g) in grads {
        let p = &net.params()[i];
        if p.var.is_none() {
            continue;
        }
        let shape = p.tensor.shape().clone();
        out.insert(p.name.clone(), Tensor::from_vec(g, shape, &Device::Cpu)?);
    }
    Ok(out)
}
