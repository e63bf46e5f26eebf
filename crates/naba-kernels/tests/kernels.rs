//! Every kernel against a plain reference (f64 loops, or candle's own op), on random shapes
//! with odd sizes, on every instruction-set family this CPU has.

use candle_core::{Device, Tensor};
use naba_kernels::linear::{linear, Epilogue};
use naba_kernels::ops::{FusedLinear, LayerNormOp, PackedAttention};
use naba_kernels::packed::PackedMatrix;
use naba_kernels::{attention, math, norm, Isa, Precision};
use proptest::prelude::*;

mod common;
use common::values;

fn gelu_reference(xs: &[f32]) -> Vec<f32> {
    let t = Tensor::from_vec(
        xs.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>(),
        xs.len(),
        &Device::Cpu,
    )
    .and_then(|t| t.gelu_erf())
    .and_then(|t| t.to_vec1::<f64>())
    .expect("candle gelu_erf");
    t.into_iter().map(|v| v as f32).collect()
}

#[test]
fn exp_matches_std_over_the_whole_range() {
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = f64::from(x).exp();
        let got = f64::from(math::exp_scalar(x));
        assert!(
            ((got - want) / want).abs() < 3e-7,
            "exp({x}) = {got}, want {want}"
        );
        x += 0.0137;
    }
}

#[test]
fn gelu_extremes_and_zero() {
    for isa in Isa::available() {
        let mut xs = vec![0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 100.0, -100.0, 3.5];
        let want = gelu_reference(&xs);
        math::gelu_inplace(isa, &mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{}: {g} vs {w}", isa.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gelu_matches_candle(n in 0usize..67, seed in any::<u64>(), spread in 0.1f32..8.0) {
        let xs = values(n, seed, spread);
        let want = gelu_reference(&xs);
        for isa in Isa::available() {
            let mut got = xs.clone();
            math::gelu_inplace(isa, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{}: x={} got {g} want {w}", isa.name(), xs[i]);
            }
        }
    }

    #[test]
    fn softmax_matches_f64(n in 1usize..300, seed in any::<u64>(), spread in 0.1f32..30.0,
                           scale in 0.05f32..2.0) {
        let xs = values(n, seed, spread);
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = xs.iter().map(|&x| (f64::from(x - max) * f64::from(scale)).exp()).collect();
        let sum: f64 = e.iter().sum();
        for isa in Isa::available() {
            let mut got = xs.clone();
            math::softmax_inplace(isa, &mut got, scale);
            for (g, w) in got.iter().zip(&e) {
                prop_assert!((f64::from(*g) - w / sum).abs() < 1e-6, "{}", isa.name());
            }
        }
    }

    #[test]
    fn add_layer_norm_matches_f64(rows in 1usize..9, width in 1usize..70, seed in any::<u64>(),
                                  offset in -50f32..50.0, with_residual in any::<bool>()) {
        let mut x = values(rows * width, seed, 3.0);
        for v in &mut x { *v += offset; }
        let r = values(rows * width, seed ^ 1, 2.0);
        let g = values(width, seed ^ 2, 1.5);
        let b = values(width, seed ^ 3, 0.5);
        let eps = 1e-12f32;
        let mut want = Vec::new();
        for i in 0..rows {
            let row: Vec<f64> = (0..width).map(|j| f64::from(x[i * width + j])
                + if with_residual { f64::from(r[i * width + j]) } else { 0.0 }).collect();
            let mean = row.iter().sum::<f64>() / width as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            for j in 0..width {
                want.push((row[j] - mean) / (var + f64::from(eps)).sqrt() * f64::from(g[j]) + f64::from(b[j]));
            }
        }
        for isa in Isa::available() {
            let mut got = x.clone();
            let res = with_residual.then_some(r.as_slice());
            norm::add_layer_norm(isa, &mut got, res, &g, &b, eps);
            for (gv, w) in got.iter().zip(&want) {
                // A constant row normalises to 0 (x - mean is rounding noise over eps^(1/2)).
                let tol = if width == 1 { 1e9 } else { 2e-4 * w.abs().max(1.0) };
                prop_assert!((f64::from(*gv) - w).abs() <= tol, "{}: {gv} vs {w}", isa.name());
            }
        }
    }

    #[test]
    fn linear_matches_f64(m in 1usize..300, k in 1usize..70, n in 1usize..45, seed in any::<u64>(),
                          with_bias in any::<bool>(), gelu in any::<bool>()) {
        let x = values(m * k, seed, 1.0);
        let w = values(n * k, seed ^ 5, 1.0);
        let b = values(n, seed ^ 6, 1.0);
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = if with_bias { f64::from(b[j]) } else { 0.0 };
                for t in 0..k {
                    acc += f64::from(x[i * k + t]) * f64::from(w[j * k + t]);
                }
                want[i * n + j] = acc as f32;
            }
        }
        if gelu { want = gelu_reference(&want); }
        let epi = if gelu { Epilogue::Gelu } else { Epilogue::None };
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            linear(isa, &x, &w, with_bias.then_some(b.as_slice()), &mut got, m, k, n, epi);
            for (g, wv) in got.iter().zip(&want) {
                prop_assert!((g - wv).abs() <= 1e-5 * (k as f32).sqrt().max(1.0),
                    "{}: {g} vs {wv}", isa.name());
            }
            // The same product through the weight packed for this path's kernel.
            let packed = PackedMatrix::pack(isa, &w, n, k);
            let mut got = vec![f32::NAN; m * n];
            packed.linear(&x, with_bias.then_some(b.as_slice()), &mut got, m, epi);
            for (g, wv) in got.iter().zip(&want) {
                prop_assert!((g - wv).abs() <= 1e-5 * (k as f32).sqrt().max(1.0),
                    "packed {}: {g} vs {wv}", isa.name());
            }
        }
    }

    #[test]
    fn packed_attention_matches_f64(lens in proptest::collection::vec(0usize..41, 1..4),
                                    heads in 1usize..4, hd in 1usize..37, seed in any::<u64>()) {
        let (hidden, offsets, tokens, qkv, scale) = attention_case(&lens, heads, hd, seed);
        let mut want = vec![0f32; tokens * hidden];
        for s in 0..lens.len() {
            let (a, z) = (offsets[s], offsets[s + 1]);
            for h in 0..heads {
                for i in a..z {
                    let scores: Vec<f64> = (a..z).map(|j| (0..hd).map(|d| {
                        f64::from(qkv[i * 3 * hidden + h * hd + d])
                            * f64::from(qkv[j * 3 * hidden + hidden + h * hd + d])
                    }).sum::<f64>() * f64::from(scale)).collect();
                    let mx = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|v| (v - mx).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let v: f64 = (a..z).zip(&e).map(|(j, p)| p / sum
                            * f64::from(qkv[j * 3 * hidden + 2 * hidden + h * hd + d])).sum();
                        want[i * hidden + h * hd + d] = v as f32;
                    }
                }
            }
        }
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; tokens * hidden];
            attention::packed_attention(isa, &qkv, &offsets, heads, scale, &mut got);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() < 2e-5, "{}: {g} vs {w}", isa.name());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Softmax straight into bf16 pairs against the f32 softmax rounded by `bf16::round`: the
    /// same bits, but for probabilities below f32's smallest normal, which the hardware
    /// rounding flushes to zero.
    #[test]
    fn softmax_to_pairs_rounds_the_f32_softmax(n in 1usize..300, seed in any::<u64>(),
                                               spread in 0.1f32..30.0, scale in 0.05f32..2.0) {
        if !naba_kernels::bf16::supported() {
            return Ok(());
        }
        let xs = values(n, seed, spread);
        let mut want = xs.clone();
        math::softmax_inplace(Isa::Avx512, &mut want, scale);
        let mut row = xs.clone();
        let mut pairs = vec![0u32; n.div_ceil(2)];
        math::softmax_to_pairs(&mut row, scale, &mut pairs);
        for (i, w) in want.iter().enumerate() {
            let got = (pairs[i / 2] >> (16 * (i % 2))) as u16;
            let expect = naba_kernels::bf16::round(*w);
            prop_assert!(got == expect || (w.abs() < f32::MIN_POSITIVE && got == 0), "[{}] {:#x} vs {:#x}", i, got, expect);
        }
        if n % 2 == 1 {
            prop_assert_eq!(pairs[n / 2] >> 16, 0);
        }
    }

    /// The AMX path of attention against f64 on the same bf16-rounded Q, K and V, its
    /// probabilities rounded to bf16 too: each may round the other way from the kernel's f32
    /// ones (one bf16 step, 2⁻⁸ of it), so the bound is 2⁻⁷ of Σ|p·v| per output, beside
    /// the f32 sums. Lengths reach past 32 (the padding of `P V`) and head widths include 32
    /// (whole tile rows for `Q Kᵀ`). Where the CPU has no AMX-BF16 it says so.
    #[test]
    fn bf16_attention_matches_f64_on_bf16_operands(
        lens in proptest::collection::vec(1usize..70, 1..3), heads in 1usize..3,
        hd in prop_oneof![1usize..40, Just(32usize), Just(64usize)], seed in any::<u64>(),
    ) {
        if !attention::bf16_supported() {
            eprintln!("this CPU has no AMX-BF16: bf16 attention is not run here");
            return Ok(());
        }
        let rb = |x: f32| f64::from(naba_kernels::bf16::widen(naba_kernels::bf16::round(x)));
        let (hidden, offsets, tokens, qkv, scale) = attention_case(&lens, heads, hd, seed);
        let mut got = vec![f32::NAN; tokens * hidden];
        attention::packed_attention_bf16(&qkv, &offsets, heads, scale, &mut got);
        for s in 0..lens.len() {
            let (a, z) = (offsets[s], offsets[s + 1]);
            for h in 0..heads {
                let at = |t: usize, part: usize, d: usize| qkv[t * 3 * hidden + part * hidden + h * hd + d];
                for i in a..z {
                    let scores: Vec<f64> = (a..z).map(|j| (0..hd).map(|d| {
                        rb(at(i, 0, d)) * rb(at(j, 1, d))
                    }).sum::<f64>() * f64::from(scale)).collect();
                    let mx = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|v| (v - mx).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let terms: Vec<f64> = (a..z).zip(&e)
                            .map(|(j, p)| rb((p / sum) as f32) * rb(at(j, 2, d))).collect();
                        let want: f64 = terms.iter().sum();
                        let mag: f64 = terms.iter().map(|t| t.abs()).sum();
                        let g = f64::from(got[i * hidden + h * hd + d]);
                        prop_assert!((g - want).abs() <= mag / 128.0 + 1e-4,
                            "[{}, {}, {}]: {} vs {} (Σ|p·v| {})", i, h, d, g, want, mag);
                    }
                }
            }
        }
    }
}

/// A packed attention case: the hidden width, the offsets of sequences of `lens` tokens, the
/// token count, a random fused QKV matrix and the usual `1/sqrt(hd)` scale.
fn attention_case(
    lens: &[usize],
    heads: usize,
    hd: usize,
    seed: u64,
) -> (usize, Vec<usize>, usize, Vec<f32>, f32) {
    let hidden = heads * hd;
    let mut offsets = vec![0];
    for l in lens {
        offsets.push(offsets.last().copied().unwrap_or(0) + l);
    }
    let tokens = *offsets.last().unwrap_or(&0);
    let qkv = values(tokens * 3 * hidden, seed, 2.0);
    (hidden, offsets, tokens, qkv, 1.0 / (hd as f32).sqrt())
}

#[test]
fn custom_ops_match_candle_ops() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (37, 24), &dev)?;
    let w = Tensor::randn(0f32, 0.3, (50, 24), &dev)?;
    let b = Tensor::randn(0f32, 0.3, 50, &dev)?;
    let want = x.matmul(&w.t()?)?.broadcast_add(&b)?.gelu_erf()?;
    let got = FusedLinear::new(&w, Some(&b), Epilogue::Gelu, Precision::F32)?.forward(&x)?;
    let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-5, "fused linear differs by {diff}");

    // Q, K and V stacked give the three products side by side.
    let w2 = Tensor::randn(0f32, 0.3, (24, 24), &dev)?;
    let stacked = FusedLinear::stacked(
        &[(&w2, None), (&w2, Some(&b.narrow(0, 0, 24)?))],
        Precision::F32,
    )?;
    let y = stacked.forward(&x)?;
    assert_eq!(y.dims(), [37, 48]);
    let left = (y.narrow(1, 0, 24)? - x.matmul(&w2.t()?)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(left < 1e-5);

    let g = Tensor::randn(1f32, 0.1, 24, &dev)?;
    let beta = Tensor::randn(0f32, 0.1, 24, &dev)?;
    let r = Tensor::randn(0f32, 1.0, (37, 24), &dev)?;
    let ln = candle_core::Module::forward(&candle_nn_free_layer_norm(&g, &beta), &(&x + &r)?)?;
    let got = LayerNormOp::new(&g, &beta, 1e-12)?.forward_residual(&x, &r)?;
    let diff = (ln - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "layer norm differs by {diff}");

    // Bad shapes are errors, not panics.
    assert!(PackedAttention::new(vec![0, 5, 3], 2, 1.0).is_err());
    let att = PackedAttention::new(vec![0, 4, 9], 2, 0.5)?;
    assert!(att
        .forward(&Tensor::zeros((8, 12), candle_core::DType::F32, &dev)?)
        .is_err());
    assert!(att
        .forward(&Tensor::zeros((9, 12), candle_core::DType::F32, &dev)?)
        .is_ok());
    assert!(
        FusedLinear::new(&w, Some(&b), Epilogue::None, Precision::F32)?
            .forward(&Tensor::zeros((3, 7), candle_core::DType::F32, &dev)?)
            .is_err()
    );
    Ok(())
}

/// Layer norm from candle's elementary ops: the plain reference.
struct PlainLayerNorm(Tensor, Tensor);

impl candle_core::Module for PlainLayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(1)?;
        let d = x.broadcast_sub(&mean)?;
        let var = d.sqr()?.mean_keepdim(1)?;
        d.broadcast_div(&(var + 1e-12)?.sqrt()?)?
            .broadcast_mul(&self.0)?
            .broadcast_add(&self.1)
    }
}

fn candle_nn_free_layer_norm(g: &Tensor, b: &Tensor) -> PlainLayerNorm {
    PlainLayerNorm(g.clone(), b.clone())
}
