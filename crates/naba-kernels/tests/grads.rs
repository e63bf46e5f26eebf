//! The training kernels (products with transposes, GELU with its derivative, layer norm and
//! attention with their backward passes) against plain references: f64 loops, or candle's
//! autograd over the same maths composed from elementary ops in f64, on random shapes with
//! odd sizes, on every instruction-set family this CPU has.

use candle_core::{DType, Device, Tensor, Var, D};
use naba_kernels::{attention, linear, math, norm, Isa};
use proptest::prelude::*;

mod common;
use common::values;

fn f64s(xs: &[f32]) -> Vec<f64> {
    xs.iter().map(|&x| f64::from(x)).collect()
}

fn var(xs: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_vec(f64s(xs), shape, &Device::Cpu).expect("tensor"))
        .expect("var")
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f64>())
        .expect("to_vec")
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= tol * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

/// One layer-norm case: the fused forward and backward against candle's f64 autograd.
fn layer_norm_case(
    rows: usize,
    width: usize,
    residual: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let x0 = values(rows * width, seed, 3.0);
    let res = values(rows * width, seed + 1, 1.0);
    let gamma = values(width, seed + 2, 1.0);
    let beta = values(width, seed + 3, 1.0);
    let dy = values(rows * width, seed + 4, 1.0);
    let eps = 1e-5f32;
    let mut y = x0.clone();
    let (mut xhat, mut inv) = (vec![0f32; rows * width], vec![0f32; rows]);
    norm::layer_norm_train(
        &mut y,
        residual.then_some(&res[..]),
        (&gamma, &beta),
        eps,
        &mut xhat,
        &mut inv,
    );
    let mut dx = vec![0f32; rows * width];
    let (mut dg, mut db) = (vec![0.5f32; width], vec![-0.5f32; width]);
    norm::layer_norm_backward(&dy, (&xhat, &inv), &gamma, &mut dx, (&mut dg, &mut db));

    let xv = var(&x0, &[rows, width]);
    let gv = var(&gamma, &[width]);
    let bv = var(&beta, &[width]);
    let r = Tensor::from_vec(f64s(&res), (rows, width), &Device::Cpu).expect("r");
    let run = || -> candle_core::Result<(Tensor, Tensor)> {
        let x = if residual {
            (xv.as_tensor() + &r)?
        } else {
            xv.as_tensor().clone()
        };
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc
            .broadcast_div(&(var + f64::from(eps))?.sqrt()?)?
            .broadcast_mul(gv.as_tensor())?
            .broadcast_add(bv.as_tensor())?;
        let dyt = Tensor::from_vec(f64s(&dy), (rows, width), &Device::Cpu)?;
        let loss = (&y * dyt)?.sum_all()?;
        Ok((y, loss))
    };
    let (yw, loss) = run().expect("reference");
    let grads = loss.backward().expect("backward");
    // f32 against f64: the rounding of a row's mean and variance is scaled by 1/sigma, so a
    // row of small spread lands a little past 1e-5 (1.0e-5 seen in CI); 5e-5 still catches
    // a wrong formula, which is off by far more.
    assert_close(&y, &vec_of(&yw), 5e-5, "layer norm");
    // dx is as well conditioned as the row is: f32 rounds the centred values with an error
    // of about eps32 * max|x| / sigma relative to them. Rows of a small spread against their
    // size (two close values out of width 2) are ill-conditioned in any f32 code, so each
    // row's tolerance grows with max|x| / sigma; a wrong formula is still off by O(1).
    let want_dx = vec_of(grads.get(xv.as_tensor()).expect("dx"));
    let scale = want_dx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for row in 0..rows {
        let xs: Vec<f64> = (row * width..(row + 1) * width)
            .map(|i| f64::from(x0[i]) + if residual { f64::from(res[i]) } else { 0.0 })
            .collect();
        let mean = xs.iter().sum::<f64>() / width as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
        let kappa = xs.iter().fold(0f64, |m, v| m.max(v.abs())) / (var + f64::from(eps)).sqrt();
        let tol = (32.0 * f64::from(f32::EPSILON) * kappa).max(1e-4) * scale;
        for i in row * width..(row + 1) * width {
            let err = (f64::from(dx[i]) - want_dx[i]).abs();
            prop_assert!(
                err <= tol,
                "dx[{}]: {} vs {} (row condition {:.0})",
                i,
                dx[i],
                want_dx[i],
                kappa
            );
        }
    }
    let dgw: Vec<f64> = vec_of(grads.get(gv.as_tensor()).expect("dgamma"))
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let dbw: Vec<f64> = vec_of(grads.get(bv.as_tensor()).expect("dbeta"))
        .iter()
        .map(|v| v - 0.5)
        .collect();
    assert_close(&dg, &dgw, 1e-5, "dgamma");
    assert_close(&db, &dbw, 1e-5, "dbeta");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn matmul_with_transposes_matches_f64(
        m in 1usize..40, k in 1usize..70, n in 1usize..45,
        a_t: bool, b_t: bool, accumulate: bool, seed in 0u64..1000,
    ) {
        let a = values(m * k, seed, 1.0);
        let b = values(k * n, seed + 1, 1.0);
        let init = values(m * n, seed + 2, 1.0);
        let mut out = init.clone();
        linear::matmul((&a, a_t), (&b, b_t), &mut out, (m, k, n), accumulate);
        let at = |r: usize, c: usize| f64::from(if a_t { a[c * m + r] } else { a[r * k + c] });
        let bt = |r: usize, c: usize| f64::from(if b_t { b[c * k + r] } else { b[r * n + c] });
        let mut want = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut s = if accumulate { f64::from(init[r * n + c]) } else { 0.0 };
                for t in 0..k {
                    s += at(r, t) * bt(t, c);
                }
                want[r * n + c] = s;
            }
        }
        assert_close(&out, &want, 1e-5, "matmul");
    }

    #[test]
    fn gelu_with_grad_matches_f64(n in 1usize..300, seed in 0u64..1000, spread in 0.1f32..8.0) {
        let u = values(n, seed, spread);
        for isa in Isa::available() {
            let (mut y, mut d) = (vec![0f32; n], vec![0f32; n]);
            math::gelu_with_grad(isa, &u, &mut y, &mut d);
            // The derivative through candle's autograd of the f64 erf GELU.
            let x = var(&u, &[n]);
            let out = x.as_tensor().gelu_erf().expect("gelu");
            let grads = out.sum_all().and_then(|s| s.backward()).expect("backward");
            let dx = grads.get(x.as_tensor()).expect("grad");
            assert_close(&y, &vec_of(&out), 1e-6, &format!("{} gelu", isa.name()));
            assert_close(&d, &vec_of(dx), 1e-6, &format!("{} gelu'", isa.name()));
        }
    }

    #[test]
    fn layer_norm_and_its_backward_match_autograd(
        rows in 1usize..150, width in 2usize..70, residual: bool, seed in 0u64..1000,
    ) {
        layer_norm_case(rows, width, residual, seed)?;
    }

    #[test]
    fn column_sums_match_f64(rows in 0usize..200, width in 1usize..50, seed in 0u64..1000) {
        let x = values(rows * width, seed, 1.0);
        let mut acc = vec![1f32; width];
        norm::add_column_sums(&x, &mut acc);
        let want: Vec<f64> = (0..width)
            .map(|c| 1.0 + (0..rows).map(|r| f64::from(x[r * width + c])).sum::<f64>())
            .collect();
        assert_close(&acc, &want, 1e-5, "column sums");
    }

    #[test]
    fn attention_and_its_backward_match_autograd(
        lens in proptest::collection::vec(0usize..23, 1..4),
        heads in 1usize..4, hd in 1usize..9, seed in 0u64..1000,
    ) {
        let hidden = heads * hd;
        let mut offsets = vec![0];
        for l in &lens {
            offsets.push(offsets.last().copied().unwrap_or(0) + l);
        }
        let tokens = *offsets.last().unwrap_or(&0);
        let qkv = values(tokens * 3 * hidden, seed, 2.0);
        let dout = values(tokens * hidden, seed + 1, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        for isa in Isa::available() {
            let mut out = vec![0f32; tokens * hidden];
            let mut probs = vec![0f32; attention::probs_len(&offsets, heads)];
            attention::packed_attention_train(isa, &qkv, &offsets, heads, scale, &mut out, &mut probs);
            let mut plain = vec![0f32; tokens * hidden];
            attention::packed_attention(isa, &qkv, &offsets, heads, scale, &mut plain);
            prop_assert_eq!(&out, &plain);
            let mut dqkv = vec![f32::NAN; tokens * 3 * hidden];
            attention::packed_attention_backward(&qkv, &probs, &offsets, heads, scale, &dout, &mut dqkv);
            if tokens == 0 {
                continue;
            }
            // Reference: per sequence, [heads, len, hd] tensors from the packed matrix.
            let qv = var(&qkv, &[tokens, 3, heads, hd]);
            let mut loss = Tensor::zeros((), DType::F64, &Device::Cpu).expect("zero");
            let mut want_out = vec![0f64; tokens * hidden];
            for w in offsets.windows(2) {
                let (s, len) = (w[0], w[1] - w[0]);
                if len == 0 {
                    continue;
                }
                let part = |i: usize| {
                    qv.as_tensor().narrow(0, s, len)?.narrow(1, i, 1)?.squeeze(1)?.transpose(0, 1)
                };
                let run = || -> candle_core::Result<Tensor> {
                    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
                    let scores = (q.matmul(&k.t()?)? * f64::from(scale))?;
                    let max = scores.max_keepdim(D::Minus1)?.detach();
                    let e = scores.broadcast_sub(&max)?.exp()?;
                    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
                    p.matmul(&v)?.transpose(0, 1)?.reshape((len, hidden))
                };
                let o = run().expect("reference attention");
                let d = Tensor::from_vec(f64s(&dout[s * hidden..(s + len) * hidden]), (len, hidden), &Device::Cpu).expect("d");
                loss = (loss + (&o * d).and_then(|t| t.sum_all()).expect("dot")).expect("sum");
                want_out[s * hidden..(s + len) * hidden].copy_from_slice(&vec_of(&o));
            }
            assert_close(&out, &want_out, 1e-5, &format!("{} attention", isa.name()));
            let grads = loss.backward().expect("backward");
            let want = vec_of(grads.get(qv.as_tensor()).expect("dqkv"));
            assert_close(&dqkv, &want, 1e-4, &format!("{} attention backward", isa.name()));
        }
    }
}

/// The case that failed CI at stop 27 (dx off by 1.6e-4 under a flat 1e-4): two close values in
/// a row of width 2, whose centred values f32 cannot hold to better than ~1e-4.
#[test]
fn layer_norm_row_of_small_spread() {
    if let Err(e) = layer_norm_case(56, 2, true, 368) {
        panic!("{e}");
    }
}
