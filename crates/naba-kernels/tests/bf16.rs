//! The bf16 product kernel against a plain reference: the same operands rounded to bf16 by
//! [`bf16::round`], multiplied and summed in f64. The kernel sums in f32, so the two agree to
//! f32 rounding of the sum, far tighter than bf16's own 8 bits. Random shapes with odd sizes
//! (odd `k` pads a pair, `n` not a multiple of 32 leaves a partial panel, `m` not a multiple
//! of the tile's rows a partial tile), on every path this CPU has: AMX-BF16 tiles (only where
//! `k` is a multiple of 32, which the shapes include) and the AVX512-BF16 register tile. On a
//! CPU without AVX512-BF16 these tests check only the rounding and say so.

use naba_kernels::bf16::{self, Finish, Panels, Rows};
use naba_kernels::linear::Epilogue;
use naba_kernels::packed::PackedMatrix;
use naba_kernels::{math, Isa, Precision};
use proptest::prelude::*;

mod common;
use common::values;

fn rb(x: f32) -> f64 {
    f64::from(bf16::widen(bf16::round(x)))
}

fn gelu64(x: f64) -> f64 {
    // The kernels' own erf is accurate to 1.5e-7; f32 GELU of the f64 sum is the reference.
    let x = x as f32;
    f64::from(0.5 * x * (1.0 + math::erf_scalar(x * std::f32::consts::FRAC_1_SQRT_2)))
}

/// `(value, bound)`: the reference and how far an f32 sum of the same products may stray.
#[allow(clippy::too_many_arguments)]
fn reference(
    a: &[f32],
    b_at: impl Fn(usize, usize) -> f32,
    bias: Option<&[f32]>,
    prior: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0f64, 0f64);
            for kk in 0..k {
                let p = rb(a[i * k + kk]) * rb(b_at(kk, j));
                s += p;
                mag += p.abs();
            }
            let extra = bias.map_or(0.0, |b| f64::from(b[j]))
                + prior.map_or(0.0, |p| f64::from(p[i * n + j]));
            out.push((s + extra, 1e-6 * (mag + extra.abs()) + 1e-6));
        }
    }
    out
}

#[test]
fn rounding_is_to_nearest_even() {
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
    assert_eq!(bf16::round(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3·2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
    assert_eq!(bf16::round(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(bf16::round(-2.0), 0xc000);
    assert!(bf16::widen(bf16::round(f32::NAN)).is_nan());
    assert_eq!(bf16::widen(bf16::round(f32::INFINITY)), f32::INFINITY);
    for x in values(10_000, 3, 1000.0) {
        let r = bf16::widen(bf16::round(x));
        assert!((r - x).abs() <= x.abs() / 256.0, "{x} rounded to {r}");
    }
}

fn skip() -> bool {
    if bf16::supported() {
        return false;
    }
    eprintln!("this CPU has no AVX512-BF16: the bf16 product kernel is not run here");
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn product_matches_f64_on_bf16_operands(
        m in 1usize..80, k in prop_oneof![1usize..90, (1usize..13).prop_map(|t| 32 * t)],
        n in 1usize..80, seed in any::<u64>(), with_bias in any::<bool>(), gelu in any::<bool>(),
        accumulate in any::<bool>(), transposed_b in any::<bool>(),
    ) {
        if skip() {
            return Ok(());
        }
        let a = values(m * k, seed, 2.0);
        let bv = values(k * n, seed ^ 1, 1.0);
        let bias = values(n, seed ^ 2, 1.0);
        let prior = values(m * n, seed ^ 3, 1.0);
        // The right operand given both ways it reaches the kernel: a weight `[n, k]`, or a
        // `[k, n]` matrix read by `from_fn` (as training passes its operands).
        let (panels, b_at): (Panels, Box<dyn Fn(usize, usize) -> f32>) = if transposed_b {
            let w = bv.clone();
            (Panels::from_weight(&bv, n, k), Box::new(move |kk, j| w[j * k + kk]))
        } else {
            let w = bv.clone();
            (Panels::from_fn(k, n, |kk, j| bv[kk * n + j]), Box::new(move |kk, j| w[kk * n + j]))
        };
        let want = reference(&a, b_at, with_bias.then_some(&bias[..]), accumulate.then_some(&prior[..]), m, k, n);
        let finish = Finish {
            bias: with_bias.then_some(&bias[..]),
            epilogue: if gelu { Epilogue::Gelu } else { Epilogue::None },
            accumulate,
        };
        for &path in bf16::paths() {
            let mut out = if accumulate { prior.clone() } else { vec![f32::NAN; m * n] };
            bf16::product_on(path, &Rows::from_slice(&a, m, k), &panels, &mut out, finish);
            for (idx, (g, (w, tol))) in out.iter().zip(&want).enumerate() {
                let (w, tol) = if gelu { (gelu64(*w), tol * 1.2 + 3e-7) } else { (*w, *tol) };
                prop_assert!((f64::from(*g) - w).abs() <= tol, "{} [{}, {}]: {} vs {} (tol {})", path.name(), idx / n, idx % n, g, w, tol);
            }
        }
    }

    #[test]
    fn vector_and_plain_rounding_build_the_same_rows(
        m in 1usize..9, k in 1usize..130, seed in any::<u64>(), spread in 1e-3f32..1e4,
    ) {
        if skip() {
            return Ok(());
        }
        let a = values(m * k, seed, spread);
        let w = values(5 * k, seed ^ 9, 1.0);
        let panels = Panels::from_weight(&w, 5, k);
        let finish = Finish { bias: None, epilogue: Epilogue::None, accumulate: false };
        let mut fast = vec![0f32; m * 5];
        let mut plain = vec![0f32; m * 5];
        bf16::product(&Rows::from_slice(&a, m, k), &panels, &mut fast, finish);
        bf16::product(&Rows::from_fn(m, k, |i, kk| a[i * k + kk]), &panels, &mut plain, finish);
        prop_assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn transposed_operands_pack_as_the_plain_code_does(
        m in 1usize..40, k in 1usize..70, pad in 0usize..40, seed in any::<u64>(),
        spread in 1e-3f32..1e4,
    ) {
        // The two packers of a weight gradient's operands (dyᵀ as rows, x as panels), padded
        // along k as AMX wants, against from_fn with the same reads; a NaN and a value at a
        // rounding tie ride along.
        let mut a = values(m * k, seed, spread);
        a[0] = f32::NAN;
        if a.len() > 1 {
            a[1] = 1.0 + 1.0 / 256.0;
        }
        let kp = k + pad;
        let rows = Rows::from_transposed(&a, m, k, kp);
        let plain = Rows::from_fn(m, kp, |i, kk| if kk < k { a[kk * m + i] } else { 0.0 });
        prop_assert_eq!(rows, plain);
        let panels = Panels::from_matrix(&a, (k, m, m), kp);
        let plain = Panels::from_fn(kp, m, |kk, j| if kk < k { a[kk * m + j] } else { 0.0 });
        prop_assert_eq!(panels, plain);
        // The strided packers of attention: `a` read as `k` rows of the first `wd` of its `m`
        // columns, as panels, as rows (padded) and as a weight, against the same reads.
        let wd = m.div_ceil(2);
        let panels = Panels::from_matrix(&a, (k, wd, m), kp);
        let plain = Panels::from_fn(kp, wd, |kk, j| if kk < k { a[kk * m + j] } else { 0.0 });
        prop_assert_eq!(panels, plain);
        let rows = Rows::from_strided(&a, (k, wd, m), wd + pad);
        let plain = Rows::from_fn(k, wd + pad, |i, j| if j < wd { a[i * m + j] } else { 0.0 });
        prop_assert_eq!(rows, plain);
        let rows = Rows::from_strided(&a, (m, k, k), kp);
        let plain = Rows::from_fn(m, kp, |i, j| if j < k { a[i * k + j] } else { 0.0 });
        prop_assert_eq!(rows, plain);
        let panels = Panels::from_weight_strided(&a, (k, wd, m));
        let plain = Panels::from_fn(wd, k, |kk, j| a[j * m + kk]);
        prop_assert_eq!(panels, plain);
    }

    #[test]
    fn packed_bf16_linear_stays_near_the_f32_linear(
        m in 1usize..200, k in 1usize..70, n in 1usize..45, seed in any::<u64>(),
    ) {
        if skip() {
            return Ok(());
        }
        let x = values(m * k, seed, 1.0);
        let w = values(n * k, seed ^ 5, 1.0);
        let bias = values(n, seed ^ 6, 0.5);
        let p32 = PackedMatrix::pack_for(Isa::best(), Precision::F32, &w, n, k);
        let p16 = PackedMatrix::pack_for(Isa::best(), Precision::Bf16, &w, n, k);
        prop_assert_eq!(p32.precision(), Precision::F32);
        prop_assert_eq!(p16.precision(), Precision::Bf16);
        let mut o32 = vec![0f32; m * n];
        let mut o16 = vec![0f32; m * n];
        p32.linear(&x, Some(&bias), &mut o32, m, Epilogue::Gelu);
        p16.linear(&x, Some(&bias), &mut o16, m, Epilogue::Gelu);
        // Each operand carries up to 2^-9 relative error: a sum of k products of values
        // under 1 strays by at most k · 2^-8, and GELU's slope (at most 1.13) can grow that.
        for (a, b) in o32.iter().zip(&o16) {
            prop_assert!((a - b).abs() <= 1.13 * k as f32 / 256.0 + 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn an_empty_sum_leaves_bias_and_epilogue() {
    if skip() {
        return;
    }
    let bias = [0.5f32, -1.0, 2.0];
    let mut out = vec![0f32; 6];
    let finish = Finish {
        bias: Some(&bias),
        epilogue: Epilogue::None,
        accumulate: false,
    };
    bf16::product(
        &Rows::from_slice(&[], 2, 0),
        &Panels::from_weight(&[], 3, 0),
        &mut out,
        finish,
    );
    assert_eq!(out, vec![0.5, -1.0, 2.0, 0.5, -1.0, 2.0]);
}
