//! The int8 product kernel against a plain reference: the same operands quantised by
//! [`int8::quantize`], their integer products summed exactly in i64, then scaled in f64. The
//! kernel's sums are exact too, so the two agree to the f32 rounding of the epilogue. Random
//! shapes with odd sizes (`k` not a multiple of 4 pads a quad, `n` not a multiple of 32 leaves
//! a partial panel, `m` not a multiple of the tile's rows a partial tile), on every path this CPU
//! has (AMX, AVX512-VNNI, AVX-VNNI, AVX2; AMX only where `k` is a multiple of 64, which the
//! shapes include), each with its own vector quantiser and with the plain one,
//! and for each weight range a path has (±127, and ±63 for AVX2). On a CPU without AVX2 these
//! tests check only the quantiser and say so.

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
    eprintln!("this CPU has no AVX2: the int8 product kernel is not run here");
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
    // Ties go to even, as the vector quantisers' `vcvtps2dq` rounds.
    let halves: Vec<f32> = [-2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, -126.5, 127.0]
        .iter()
        .map(|v| v / 127.0)
        .collect();
    let (q, _) = int8::quantize(&halves);
    assert_eq!(q, [-2, -2, 0, 0, 2, 2, 126, -126, 127]);
    let (q, s) = int8::quantize_to(&xs, 63);
    assert_eq!(s, amax / 63.0);
    assert_eq!(q.iter().map(|v| v.abs()).max(), Some(63));
}

/// The weight ranges this CPU's paths quantise to, widest first, each with the paths that run
/// it (every path whose own range is at least as wide).
fn limits() -> Vec<(i8, Vec<Path>)> {
    let mut limits: Vec<i8> = int8::paths().iter().map(|p| p.weight_limit()).collect();
    limits.sort_unstable_by(|a, b| b.cmp(a));
    limits.dedup();
    limits
        .into_iter()
        .map(|l| {
            let runs = int8::paths()
                .iter()
                .copied()
                .filter(|p| p.weight_limit() >= l);
            (l, runs.collect())
        })
        .collect()
}

fn panels_for(limit: i8, w: &[f32], n: usize, k: usize) -> Panels {
    let path = int8::paths().iter().find(|p| p.weight_limit() == limit);
    let panels = Panels::for_path(*path.expect("a path with this limit"), w, n, k);
    assert_eq!(panels.limit(), limit);
    panels
}

/// The exact sum of row `i` of `x` and row `j` of `w` as the kernel quantises them, scaled, with
/// the bound on its f32 rounding; GELU applied where asked.
fn reference(
    x: &[f32],
    w: &[f32],
    k: usize,
    limit: i8,
    (i, j): (usize, usize),
    bias: f64,
    gelu: bool,
) -> (f64, f64) {
    let (qa, sa) = int8::quantize(&x[i * k..(i + 1) * k]);
    let (qw, sw) = int8::quantize_to(&w[j * k..(j + 1) * k], limit);
    let prods = qa
        .iter()
        .zip(&qw)
        .map(|(a, b)| i64::from(*a) * i64::from(*b));
    let sum: i64 = prods.clone().sum();
    let mag: i64 = prods.map(i64::abs).sum();
    let mut want = sum as f64 * f64::from(sa) * f64::from(sw) + bias;
    let tol = 1e-6 * (mag as f64 * f64::from(sa) * f64::from(sw) + bias.abs()) + 1e-6;
    if !gelu {
        return (want, tol);
    }
    let v = want as f32;
    want = f64::from(0.5 * v * (1.0 + math::erf_scalar(v * std::f32::consts::FRAC_1_SQRT_2)));
    (want, tol * 1.2 + 3e-7 * want.abs().max(1.0))
}

#[test]
fn operands_at_the_ends_of_their_ranges_sum_exactly_on_every_path() {
    if skip() {
        return;
    }
    // Every activation at ±its row's largest value (bytes 255 or 1) against weights at ±limit:
    // the largest pair sums `vpmaddubsw` meets, which must not saturate.
    let (m, k, n) = (7, 131, 37);
    let x: Vec<f32> = (0..m * k)
        .map(|t| if (t / k) % 2 == 0 { 2.5 } else { -2.5 } * if t % 5 == 0 { -1.0 } else { 1.0 })
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|t| if (t / k) % 3 == 0 { -0.75 } else { 0.75 } * if t % 7 == 0 { -1.0 } else { 1.0 })
        .collect();
    for (limit, paths) in limits() {
        let panels = panels_for(limit, &w, n, k);
        for path in paths {
            let mut out = vec![f32::NAN; m * n];
            let rows = Rows::from_slice_for(Some(path), &x, m, k);
            int8::product_on(path, &rows, &panels, None, &mut out, Epilogue::None);
            for i in 0..m {
                for j in 0..n {
                    let (want, tol) = reference(&x, &w, k, limit, (i, j), 0.0, false);
                    let got = f64::from(out[i * n + j]);
                    assert!(
                        (got - want).abs() <= tol,
                        "{} ±{limit} [{i}, {j}]: {got} vs {want}",
                        path.name()
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn product_matches_exact_sums_of_the_quantised_operands(
        m in 1usize..80, k in prop_oneof![1usize..90, (1usize..7).prop_map(|t| 64 * t)],
        n in 1usize..80, seed in any::<u64>(), spread in 0.01f32..20.0, with_bias in any::<bool>(), gelu in any::<bool>(),
    ) {
        if skip() {
            return Ok(());
        }
        let x = values(m * k, seed, spread);
        let w = values(n * k, seed ^ 1, 1.0);
        let bias = values(n, seed ^ 2, 1.0);
        let epi = if gelu { Epilogue::Gelu } else { Epilogue::None };
        for (limit, paths) in limits() {
            let panels = panels_for(limit, &w, n, k);
            // Every path with its own quantiser, and the first with the plain one: all the same bits.
            let mut runs: Vec<(Path, Option<Path>)> = paths.iter().map(|&p| (p, Some(p))).collect();
            runs.push((paths[0], None));
            let mut outs = Vec::new();
            for (path, quantiser) in runs {
                let mut out = vec![f32::NAN; m * n];
                let rows = Rows::from_slice_for(quantiser, &x, m, k);
                int8::product_on(path, &rows, &panels, with_bias.then_some(&bias[..]), &mut out, epi);
                outs.push((path, quantiser, out));
            }
            let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for (path, quantiser, o) in &outs[1..] {
                prop_assert_eq!(bits(o), bits(&outs[0].2), "{} with {:?} quantiser, ±{}", path.name(), quantiser, limit);
            }
            let out = &outs[0].2;
            for i in 0..m {
                for j in 0..n {
                    let b = if with_bias { f64::from(bias[j]) } else { 0.0 };
                    let (want, tol) = reference(&x, &w, k, limit, (i, j), b, gelu);
                    let got = f64::from(out[i * n + j]);
                    prop_assert!((got - want).abs() <= tol, "±{} [{}, {}]: {} vs {} (tol {})", limit, i, j, got, want, tol);
                }
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
        // Each operand is off by at most half a step (of its row's largest value, here under
        // 1: 1/254 for activations, 1/(2 · limit) for weights), so a sum of k products strays
        // by at most about k times the two.
        let limit = f32::from(int8::paths()[0].weight_limit());
        let step = 1.0 / 254.0 + 0.5 / limit;
        for (a, b) in o32.iter().zip(&o8) {
            prop_assert!((a - b).abs() <= k as f32 * step * 1.01 + 1e-5, "{a} vs {b}");
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
    for &path in int8::paths() {
        let panels = Panels::for_path(path, &w, n, k);
        let mut out = vec![f32::NAN; m * n];
        let rows = Rows::from_slice_for(Some(path), &x, m, k);
        int8::product_on(path, &rows, &panels, Some(&bias), &mut out, Epilogue::None);
        assert_eq!(&out[n..2 * n], &bias[..], "{}", path.name());
        assert!(out.iter().all(|v| v.is_finite()), "{}", path.name());
    }
}
