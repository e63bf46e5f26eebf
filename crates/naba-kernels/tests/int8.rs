//! The int8 product kernel against a plain reference: the same operands quantised by
//! [`int8::quantize`], their integer products summed exactly in i64, then scaled in f64. The
//! kernel's sums are exact too, so the two agree to the f32 rounding of the epilogue. Random
//! shapes with odd sizes (`k` not a multiple of 4 pads a quad, `n` not a multiple of 32 leaves
//! a partial panel, `m` not a multiple of the tile's rows a partial tile), on every path this CPU
//! has (AVX512-VNNI, AVX-VNNI), each with its own vector quantiser and with the plain one. On a
//! CPU with neither these tests check only the quantiser and say so.

use naba_kernels::int8::{self, Panels, Path, Rows};
use naba_kernels::linear::Epilogue;
use naba_kernels::packed::PackedMatrix;
use naba_kernels::{math, Isa, Precision};
use proptest::prelude::*;

mod common;
use common::values;

fn skip() -> bool {
    if int8::supported() {
        return false;
    }
    eprintln!("this CPU has no AVX512-VNNI or AVX-VNNI: the int8 product kernel is not run here");
    true
}

#[test]
fn quantize_is_symmetric_and_round_trips_within_half_a_step() {
    let xs = values(1000, 7, 3.0);
    let (q, s) = int8::quantize(&xs);
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert_eq!(s, amax / 127.0);
    assert!(
        q.iter().any(|&v| v == 127 || v == -127),
        "the largest value maps to ±127"
    );
    for (x, v) in xs.iter().zip(&q) {
        assert!(
            (x - f32::from(*v) * s).abs() <= 0.5 * s * 1.0001,
            "{x} -> {v}"
        );
    }
    assert_eq!(int8::quantize(&[0.0, 0.0]), (vec![0, 0], 0.0));
    assert_eq!(int8::quantize(&[]), (vec![], 0.0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn product_matches_exact_sums_of_the_quantised_operands(
        m in 1usize..40, k in 1usize..90, n in 1usize..80, seed in any::<u64>(),
        spread in 0.01f32..20.0, with_bias in any::<bool>(), gelu in any::<bool>(),
    ) {
        if skip() {
            return Ok(());
        }
        let x = values(m * k, seed, spread);
        let w = values(n * k, seed ^ 1, 1.0);
        let bias = values(n, seed ^ 2, 1.0);
        let epi = if gelu { Epilogue::Gelu } else { Epilogue::None };
        let panels = Panels::from_weight(&w, n, k);
        // Every path with its own quantiser, and the first with the plain one: all the same bits.
        let mut runs: Vec<(Path, Option<Path>)> = int8::paths().iter().map(|&p| (p, Some(p))).collect();
        runs.push((int8::paths()[0], None));
        let mut outs = Vec::new();
        for (path, quantiser) in runs {
            let mut out = vec![f32::NAN; m * n];
            let rows = Rows::from_slice_for(quantiser, &x, m, k);
            int8::product_on(path, &rows, &panels, with_bias.then_some(&bias[..]), &mut out, epi);
            outs.push((path, quantiser, out));
        }
        let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (path, quantiser, o) in &outs[1..] {
            prop_assert_eq!(bits(o), bits(&outs[0].2), "{} with {:?} quantiser", path.name(), quantiser);
        }
        let out = &outs[0].2;
        for i in 0..m {
            let (qa, sa) = int8::quantize(&x[i * k..(i + 1) * k]);
            for j in 0..n {
                let (qw, sw) = int8::quantize(&w[j * k..(j + 1) * k]);
                let sum: i64 = qa.iter().zip(&qw).map(|(a, b)| i64::from(*a) * i64::from(*b)).sum();
                let mag: i64 = qa.iter().zip(&qw).map(|(a, b)| (i64::from(*a) * i64::from(*b)).abs()).sum();
                let b = if with_bias { f64::from(bias[j]) } else { 0.0 };
                let mut want = sum as f64 * f64::from(sa) * f64::from(sw) + b;
                let tol = 1e-6 * (mag as f64 * f64::from(sa) * f64::from(sw) + b.abs()) + 1e-6;
                if gelu {
                    let v = want as f32;
                    want = f64::from(0.5 * v * (1.0 + math::erf_scalar(v * std::f32::consts::FRAC_1_SQRT_2)));
                }
                let got = f64::from(out[i * n + j]);
                let tol = if gelu { tol * 1.2 + 3e-7 * want.abs().max(1.0) } else { tol };
                prop_assert!((got - want).abs() <= tol, "[{}, {}]: {} vs {} (tol {})", i, j, got, want, tol);
            }
        }
    }

    #[test]
    fn packed_int8_linear_stays_near_the_f32_linear(
        m in 1usize..100, k in 1usize..70, n in 1usize..45, seed in any::<u64>(),
    ) {
        if skip() {
            return Ok(());
        }
        let x = values(m * k, seed, 1.0);
        let w = values(n * k, seed ^ 5, 1.0);
        let bias = values(n, seed ^ 6, 0.5);
        let p32 = PackedMatrix::pack_for(Isa::best(), Precision::F32, &w, n, k);
        let p8 = PackedMatrix::pack_for(Isa::best(), Precision::Int8, &w, n, k);
        prop_assert_eq!(p8.precision(), Precision::Int8);
        let mut o32 = vec![0f32; m * n];
        let mut o8 = vec![0f32; m * n];
        p32.linear(&x, Some(&bias), &mut o32, m, Epilogue::None);
        p8.linear(&x, Some(&bias), &mut o8, m, Epilogue::None);
        // Each operand is off by at most half a step (1/254 of its row's largest value, here
        // under 1): a sum of k products strays by at most about k · 2 / 254.
        for (a, b) in o32.iter().zip(&o8) {
            prop_assert!((a - b).abs() <= k as f32 * 2.0 / 254.0 + 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn an_all_zero_row_gives_the_bias_on_every_path() {
    if skip() {
        return;
    }
    let (m, k, n) = (3, 37, 5);
    let mut x = values(m * k, 3, 1.0);
    x[k..2 * k].fill(0.0);
    let w = values(n * k, 4, 1.0);
    let bias = values(n, 5, 1.0);
    let panels = Panels::from_weight(&w, n, k);
    for &path in int8::paths() {
        let mut out = vec![f32::NAN; m * n];
        let rows = Rows::from_slice_for(Some(path), &x, m, k);
        int8::product_on(path, &rows, &panels, Some(&bias), &mut out, Epilogue::None);
        assert_eq!(&out[n..2 * n], &bias[..], "{}", path.name());
        assert!(out.iter().all(|v| v.is_finite()), "{}", path.name());
    }
}
