//! Layer norm with the residual add folded in: `x = LN(x + residual) * gamma + beta`, row by
//! row, in place. BERT adds the residual right before each layer norm; doing both in one pass
//! saves a write and a read of the whole activation.

use crate::Isa;

/// Normalises one row of `x` (after adding `residual`, when given) in place. `gamma`, `beta`
/// and `residual` have `x.len()` elements. Mean and variance take two passes over the row, as
/// PyTorch's do, so rows with a large mean keep their precision.
pub fn add_layer_norm_row(
    isa: Isa,
    x: &mut [f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    debug_assert_eq!(x.len(), gamma.len());
    debug_assert_eq!(x.len(), beta.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` is only produced after run-time detection of both features.
        Isa::Avx2Fma => unsafe { avx2::add_layer_norm_row(x, residual, gamma, beta, eps) },
        _ => {
            if let Some(r) = residual {
                for (a, b) in x.iter_mut().zip(r) {
                    *a += b;
                }
            }
            let n = x.len() as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// [`add_layer_norm_row`] over every row of a `[rows, width]` matrix, rows split over threads.
pub fn add_layer_norm(
    isa: Isa,
    x: &mut [f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    use rayon::prelude::*;
    let width = gamma.len();
    if width == 0 {
        return;
    }
    // Rows are short (hundreds of values): hand each thread a block of them.
    let block = (x.len() / width).div_ceil(crate::threads() * 4).max(1) * width;
    if let Some(r) = residual {
        assert_eq!(
            r.len(),
            x.len(),
            "layer norm: residual and input differ in size"
        );
    }
    x.par_chunks_mut(block).enumerate().for_each(|(i, xb)| {
        let rb = residual.map(|r| &r[i * block..i * block + xb.len()]);
        for (j, row) in xb.chunks_mut(width).enumerate() {
            let res = rb.map(|r| &r[j * width..(j + 1) * width]);
            add_layer_norm_row(isa, row, res, gamma, beta, eps);
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::math::avx2::hsum;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_layer_norm_row(
        x: &mut [f32],
        residual: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let n = x.len();
        let n8 = n / 8 * 8;
        let px = x.as_mut_ptr();
        let mut vsum = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            let mut v = _mm256_loadu_ps(px.add(i));
            if let Some(r) = residual {
                v = _mm256_add_ps(v, _mm256_loadu_ps(r.as_ptr().add(i)));
                _mm256_storeu_ps(px.add(i), v);
            }
            vsum = _mm256_add_ps(vsum, v);
        }
        let mut sum = hsum(vsum);
        for i in n8..n {
            if let Some(r) = residual {
                x[i] += r[i];
            }
            sum += x[i];
        }
        let mean = sum / n as f32;
        let vmean = _mm256_set1_ps(mean);
        let mut vvar = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            let d = _mm256_sub_ps(_mm256_loadu_ps(px.add(i)), vmean);
            vvar = _mm256_fmadd_ps(d, d, vvar);
        }
        let mut var = hsum(vvar);
        for v in &x[n8..] {
            var += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (var / n as f32 + eps).sqrt();
        let vinv = _mm256_set1_ps(inv);
        for i in (0..n8).step_by(8) {
            let d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), vmean), vinv);
            let y = _mm256_fmadd_ps(
                d,
                _mm256_loadu_ps(gamma.as_ptr().add(i)),
                _mm256_loadu_ps(beta.as_ptr().add(i)),
            );
            _mm256_storeu_ps(px.add(i), y);
        }
        for i in n8..n {
            x[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
}
