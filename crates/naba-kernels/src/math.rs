//! Element-wise kernels: `exp` for softmax and the erf form of GELU, as polynomials that run
//! eight lanes at a time (candle calls libm's scalar `erf` and `exp` per element, which cost as
//! much as a fifth of an encoder forward pass).
//!
//! Both families evaluate the same formulas, so they agree with each other to rounding:
//! `exp` by range reduction to `[-ln2/2, ln2/2]` and a degree-6 Taylor polynomial (relative
//! error under 2e-7), `erf` by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7).

use crate::Isa;

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so `x - n ln2` keeps its low bits (Cody and Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152_1,
    1.061_405_4,
];
const FRAC_1_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
// 1 / sqrt(2π), the standard normal density's factor.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `e^x` for one value, the portable formula.
#[inline]
pub fn exp_scalar(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)` for one value, the portable formula.
#[inline]
pub fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let poly = t * (ERF_A[0] + t * (ERF_A[1] + t * (ERF_A[2] + t * (ERF_A[3] + t * ERF_A[4]))));
    let y = 1.0 - poly * exp_scalar(-a * a);
    y.copysign(x)
}

/// GELU, erf form (`0.5 x (1 + erf(x / sqrt 2))`, BERT's `gelu`), in place.
pub fn gelu_inplace(isa: Isa, xs: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` and `Isa::Avx512` are only ever produced after run-time
        // detection of their features.
        Isa::Avx2Fma => unsafe { avx2::gelu_inplace(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::gelu_inplace(xs) },
        _ => {
            for x in xs {
                *x = 0.5 * *x * (1.0 + erf_scalar(*x * FRAC_1_SQRT2));
            }
        }
    }
}

/// `(gelu(u), gelu'(u))` for one value, the portable formula: `gelu'(u) = Φ(u) + u φ(u)`.
#[inline]
pub fn gelu_with_grad_scalar(u: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + erf_scalar(u * FRAC_1_SQRT2));
    let pdf = exp_scalar(-0.5 * u * u) * INV_SQRT_2PI;
    (u * cdf, cdf + u * pdf)
}

/// GELU for training: `y = gelu(u)` and `d = gelu'(u)` (what the backward pass multiplies the
/// incoming gradient by), in one pass over `u`.
pub fn gelu_with_grad(isa: Isa, u: &[f32], y: &mut [f32], d: &mut [f32]) {
    assert!(
        u.len() == y.len() && u.len() == d.len(),
        "gelu_with_grad: u, y and d differ in length"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_inplace`.
        Isa::Avx2Fma | Isa::Avx512 => unsafe { avx2::gelu_with_grad(u, y, d) },
        _ => {
            for ((&x, y), d) in u.iter().zip(y.iter_mut()).zip(d.iter_mut()) {
                (*y, *d) = gelu_with_grad_scalar(x);
            }
        }
    }
}

/// [`softmax_inplace`] on a row, then its probabilities as bf16 pairs in `pairs` (see
/// `avx512::softmax_to_pairs`). Needs AVX512-BF16 ([`crate::bf16::supported`]).
pub fn softmax_to_pairs(row: &mut [f32], scale: f32, pairs: &mut [u32]) {
    assert!(
        crate::bf16::supported(),
        "softmax_to_pairs needs AVX512-BF16"
    );
    assert_eq!(
        pairs.len(),
        row.len().div_ceil(2),
        "softmax_to_pairs: pairs for the row"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-F and AVX512-BF16 checked above; the lengths match.
    unsafe {
        avx512::softmax_to_pairs(row, scale, pairs)
    }
}

/// `row = softmax(row * scale)`, in place, stable (the row's maximum is subtracted first).
pub fn softmax_inplace(isa: Isa, row: &mut [f32], scale: f32) {
    if row.is_empty() {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_inplace`.
        Isa::Avx2Fma => unsafe { avx2::softmax_inplace(row, scale) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_inplace`.
        Isa::Avx512 => unsafe { avx512::softmax_inplace(row, scale) },
        _ => {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = exp_scalar((*x - max) * scale);
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
            _mm256_set1_ps(EXP_HI),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }

    /// `(erf(z), e^(−z²))` for eight lanes: GELU needs the first, its derivative both.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn erf_gauss8(z: __m256) -> (__m256, __m256) {
        let sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0));
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
        let mut poly = _mm256_set1_ps(ERF_A[4]);
        for c in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        poly = _mm256_mul_ps(poly, t);
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
        (_mm256_or_ps(_mm256_fnmadd_ps(poly, e, one), sign), e)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn gelu8(x: __m256) -> __m256 {
        let (erf, _) = erf_gauss8(_mm256_mul_ps(x, _mm256_set1_ps(FRAC_1_SQRT2)));
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_set1_ps(0.5), x),
            _mm256_add_ps(_mm256_set1_ps(1.0), erf),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn gelu_with_grad(u: &[f32], y: &mut [f32], d: &mut [f32]) {
        let n8 = u.len() / 8 * 8;
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let inv_sqrt_2pi = _mm256_set1_ps(INV_SQRT_2PI);
        for i in (0..n8).step_by(8) {
            let x = _mm256_loadu_ps(u.as_ptr().add(i));
            let (erf, e) = erf_gauss8(_mm256_mul_ps(x, _mm256_set1_ps(FRAC_1_SQRT2)));
            let cdf = _mm256_mul_ps(half, _mm256_add_ps(one, erf));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_mul_ps(x, cdf));
            let pdf = _mm256_mul_ps(e, inv_sqrt_2pi);
            _mm256_storeu_ps(d.as_mut_ptr().add(i), _mm256_fmadd_ps(x, pdf, cdf));
        }
        for i in n8..u.len() {
            (y[i], d[i]) = super::gelu_with_grad_scalar(u[i]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn gelu_inplace(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            _mm256_storeu_ps(c.as_mut_ptr(), gelu8(v));
        }
        for x in chunks.into_remainder() {
            *x = 0.5 * *x * (1.0 + erf_scalar(*x * FRAC_1_SQRT2));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn softmax_inplace(row: &mut [f32], scale: f32) {
        let n8 = row.len() / 8 * 8;
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..n8).step_by(8) {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row.as_ptr().add(i)));
        }
        let mut max = hmax(vmax);
        for &x in &row[n8..] {
            max = max.max(x);
        }
        let vm = _mm256_set1_ps(max);
        let vs = _mm256_set1_ps(scale);
        let mut vsum = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            let p = row.as_mut_ptr().add(i);
            let e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p), vm), vs));
            vsum = _mm256_add_ps(vsum, e);
            _mm256_storeu_ps(p, e);
        }
        let mut sum = hsum(vsum);
        for x in &mut row[n8..] {
            *x = exp_scalar((*x - max) * scale);
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vi = _mm256_set1_ps(inv);
        for i in (0..n8).step_by(8) {
            let p = row.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), vi));
        }
        for x in &mut row[n8..] {
            *x *= inv;
        }
    }
}

/// The 16-wide versions, for [`Isa::Avx512`]: the same formulas as [`avx2`], a whole register
/// of lanes per instruction, and the tail of a row through a mask instead of scalar code.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_LO)),
            _mm512_set1_ps(EXP_HI),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
    }

    /// GELU of sixteen lanes, the same operations as `avx2::gelu8` lane for lane, so the
    /// same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn gelu16(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(FRAC_1_SQRT2));
        let a = _mm512_abs_ps(z);
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
        let mut poly = _mm512_set1_ps(ERF_A[4]);
        for c in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let erf_abs = _mm512_fnmadd_ps(poly, e, one);
        // erf is odd: put z's sign back.
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(one, erf),
        )
    }

    /// The lanes of a 32-wide row of `width` values, as masks of its two registers.
    #[inline]
    pub(crate) fn width_masks(width: usize) -> [__mmask16; 2] {
        [
            tail_mask(width.min(16)),
            tail_mask(width.saturating_sub(16).min(16)),
        ]
    }

    /// The lanes of a row's last, partial register.
    #[inline]
    fn tail_mask(len: usize) -> __mmask16 {
        debug_assert!(len <= 16);
        ((1u32 << len) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn gelu_inplace(xs: &mut [f32]) {
        let n16 = xs.len() / 16 * 16;
        let p = xs.as_mut_ptr();
        for i in (0..n16).step_by(16) {
            _mm512_storeu_ps(p.add(i), gelu16(_mm512_loadu_ps(p.add(i))));
        }
        if n16 < xs.len() {
            let m = tail_mask(xs.len() - n16);
            let v = _mm512_maskz_loadu_ps(m, p.add(n16));
            _mm512_mask_storeu_ps(p.add(n16), m, gelu16(v));
        }
    }

    /// [`softmax_inplace`], then the probabilities rounded to bf16 pairs into `pairs`
    /// (`ceil(len / 2)` of them; an odd row's last pair has a zero): the left operand of an
    /// attention head's `P V` ([`crate::bf16::Rows`]), without a pass of its own.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(crate) unsafe fn softmax_to_pairs(row: &mut [f32], scale: f32, pairs: &mut [u32]) {
        let len = row.len();
        assert!(pairs.len() == len.div_ceil(2));
        // Unnormalised: the exponentials and their sum, then one pass scales and rounds.
        let inv = exp_rows(row, scale);
        let vi = _mm512_set1_ps(inv);
        let p = row.as_ptr();
        let mut i = 0;
        while i < len {
            let (m0, m1) = (
                tail_mask((len - i).min(16)),
                tail_mask((len - i).saturating_sub(16).min(16)),
            );
            let lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, p.add(i)), vi);
            let hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, p.wrapping_add(i + 16)), vi);
            let bf = _mm512_cvtne2ps_pbh(hi, lo);
            let words = (len - i).min(32).div_ceil(2);
            let out = pairs.as_mut_ptr().add(i / 2);
            _mm512_mask_storeu_epi32(
                out.cast(),
                tail_mask(words),
                std::mem::transmute::<__m512bh, __m512i>(bf),
            );
            i += 32;
        }
    }

    /// The first two passes of a softmax: `row = e^((row − max) · scale)`; returns 1 / sum.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_rows(row: &mut [f32], scale: f32) -> f32 {
        let len = row.len();
        let n16 = len / 16 * 16;
        let p = row.as_mut_ptr();
        let tail = (n16 < len).then(|| tail_mask(len - n16));
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n16).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(p.add(i)));
        }
        if let Some(m) = tail {
            vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, p.add(n16)));
        }
        let vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        let vs = _mm512_set1_ps(scale);
        let mut vsum = _mm512_setzero_ps();
        for i in (0..n16).step_by(16) {
            let e = exp16(_mm512_mul_ps(
                _mm512_sub_ps(_mm512_loadu_ps(p.add(i)), vm),
                vs,
            ));
            vsum = _mm512_add_ps(vsum, e);
            _mm512_storeu_ps(p.add(i), e);
        }
        if let Some(m) = tail {
            let x = _mm512_maskz_loadu_ps(m, p.add(n16));
            let e = exp16(_mm512_mul_ps(_mm512_sub_ps(x, vm), vs));
            vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
            _mm512_mask_storeu_ps(p.add(n16), m, e);
        }
        1.0 / _mm512_reduce_add_ps(vsum)
    }

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn softmax_inplace(row: &mut [f32], scale: f32) {
        let vi = _mm512_set1_ps(exp_rows(row, scale));
        let len = row.len();
        let n16 = len / 16 * 16;
        let p = row.as_mut_ptr();
        let tail = (n16 < len).then(|| tail_mask(len - n16));
        for i in (0..n16).step_by(16) {
            _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), vi));
        }
        if let Some(m) = tail {
            let x = _mm512_maskz_loadu_ps(m, p.add(n16));
            _mm512_mask_storeu_ps(p.add(n16), m, _mm512_mul_ps(x, vi));
        }
    }
}
