//! Layer norm with the residual add folded in: `x = LN(x + residual) * gamma + beta`, row by
//! row, in place. BERT adds the residual right before each layer norm; doing both in one pass
//! saves a write and a read of the whole activation. For training, a variant that keeps the
//! normalised rows, and the backward pass (also the bias gradient, a column sum).

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
        Isa::Avx2Fma | Isa::Avx512 => unsafe {
            avx2::add_layer_norm_row(x, residual, gamma, beta, eps)
        },
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

/// Rows per block when a training kernel sums over rows: fixed, so that the order of every sum,
/// and with it every bit of a gradient, does not depend on the number of threads.
pub const SUM_BLOCK_ROWS: usize = 64;

/// Layer norm for training: `x = LN(x + residual) * gamma + beta` in place, as
/// [`add_layer_norm`], keeping what the backward pass needs: the normalised rows `xhat`
/// (`[rows, width]`) and each row's `1 / sqrt(var + eps)` in `inv`. Plain loops, which the
/// compiler vectorises; the cost is small beside the products around it.
pub fn layer_norm_train(
    x: &mut [f32],
    residual: Option<&[f32]>,
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
    xhat: &mut [f32],
    inv: &mut [f32],
) {
    use rayon::prelude::*;
    let width = gamma.len();
    assert!(
        width > 0 && beta.len() == width,
        "layer norm: gamma and beta differ"
    );
    let rows = x.len() / width;
    assert_eq!(
        x.len(),
        rows * width,
        "layer norm: x is not [rows, {width}]"
    );
    assert_eq!(xhat.len(), x.len(), "layer norm: xhat and x differ in size");
    assert_eq!(inv.len(), rows, "layer norm: inv is not one value a row");
    if let Some(r) = residual {
        assert_eq!(
            r.len(),
            x.len(),
            "layer norm: residual and x differ in size"
        );
    }
    let block = SUM_BLOCK_ROWS * width;
    x.par_chunks_mut(block)
        .zip(xhat.par_chunks_mut(block))
        .zip(inv.par_chunks_mut(SUM_BLOCK_ROWS))
        .enumerate()
        .for_each(|(b, ((xb, hb), ib))| {
            for (j, ((row, hrow), iv)) in xb
                .chunks_exact_mut(width)
                .zip(hb.chunks_exact_mut(width))
                .zip(ib.iter_mut())
                .enumerate()
            {
                if let Some(r) = residual {
                    let at = (b * SUM_BLOCK_ROWS + j) * width;
                    for (a, r) in row.iter_mut().zip(&r[at..at + width]) {
                        *a += r;
                    }
                }
                let n = width as f32;
                let mean = row.iter().sum::<f32>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                *iv = 1.0 / (var + eps).sqrt();
                for (((v, h), g), be) in row.iter_mut().zip(hrow.iter_mut()).zip(gamma).zip(beta) {
                    *h = (*v - mean) * *iv;
                    *v = *h * g + be;
                }
            }
        });
}

/// The backward pass of [`layer_norm_train`]: from `dy` (`[rows, width]`), writes the gradient
/// of the layer norm's input into `dx` and adds the gradients of `gamma` and `beta` to `dgamma`
/// and `dbeta`. Per row, with `g = dy ⊙ gamma`:
/// `dx = inv · (g − mean(g) − xhat · mean(g ⊙ xhat))`.
pub fn layer_norm_backward(
    dy: &[f32],
    (xhat, inv): (&[f32], &[f32]),
    gamma: &[f32],
    dx: &mut [f32],
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) {
    use rayon::prelude::*;
    let width = gamma.len();
    assert!(width > 0, "layer norm backward: empty rows");
    let rows = dy.len() / width;
    assert_eq!(
        dy.len(),
        rows * width,
        "layer norm backward: dy is not [rows, {width}]"
    );
    assert!(
        xhat.len() == dy.len() && dx.len() == dy.len() && inv.len() == rows,
        "layer norm backward: dy, xhat, dx and inv disagree in size"
    );
    assert!(
        dgamma.len() == width && dbeta.len() == width,
        "layer norm backward: dgamma or dbeta is not [{width}]"
    );
    let block = SUM_BLOCK_ROWS * width;
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(block)
        .zip(dy.par_chunks(block))
        .zip(xhat.par_chunks(block))
        .zip(inv.par_chunks(SUM_BLOCK_ROWS))
        .map(|(((dxb, dyb), hb), ib)| {
            let mut dg = vec![0f32; width];
            let mut db = vec![0f32; width];
            let mut g = vec![0f32; width];
            for (((dxr, dyr), hr), &iv) in dxb
                .chunks_exact_mut(width)
                .zip(dyb.chunks_exact(width))
                .zip(hb.chunks_exact(width))
                .zip(ib)
            {
                let (mut sg, mut sgx) = (0f32, 0f32);
                for i in 0..width {
                    g[i] = dyr[i] * gamma[i];
                    sg += g[i];
                    sgx += g[i] * hr[i];
                    dg[i] += dyr[i] * hr[i];
                    db[i] += dyr[i];
                }
                let (mg, mgx) = (sg / width as f32, sgx / width as f32);
                for i in 0..width {
                    dxr[i] = iv * (g[i] - mg - hr[i] * mgx);
                }
            }
            (dg, db)
        })
        .collect();
    for (dg, db) in partial {
        for i in 0..width {
            dgamma[i] += dg[i];
            dbeta[i] += db[i];
        }
    }
}

/// Adds the column sums of `x` (`[rows, width]`) to `acc`: the gradient of a bias.
pub fn add_column_sums(x: &[f32], acc: &mut [f32]) {
    use rayon::prelude::*;
    let width = acc.len();
    if width == 0 {
        return;
    }
    assert_eq!(x.len() % width, 0, "column sums: x is not [rows, {width}]");
    let partial: Vec<Vec<f32>> = x
        .par_chunks(SUM_BLOCK_ROWS * width)
        .map(|b| {
            let mut s = vec![0f32; width];
            for row in b.chunks_exact(width) {
                for (a, v) in s.iter_mut().zip(row) {
                    *a += v;
                }
            }
            s
        })
        .collect();
    for s in partial {
        for (a, v) in acc.iter_mut().zip(&s) {
            *a += v;
        }
    }
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
