//! The AdamW update (decoupled weight decay) in one pass over a parameter, its gradient and its
//! two moments, instead of a dozen whole-tensor passes. It performs the same `f32` operations in
//! the same order as the update written with candle's tensor ops, so it changes no bit of a
//! training run: only the time.

use rayon::prelude::*;

/// The step's constants, already in `f32` as candle's scalar ops would round them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub beta1: f32,
    /// `1 - beta1`.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// Bias corrections `1 / (1 - beta^t)`.
    pub scale_m: f32,
    pub scale_v: f32,
    pub eps: f32,
    /// `1 - lr · weight_decay` (1 where no decay applies).
    pub decay: f32,
    pub lr: f32,
}

/// Values per parallel chunk: the update is memory-bound, so chunks only need to be large
/// enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

/// One update: reads `theta`, `m`, `v` and `g`, writes the new values into `theta_out`,
/// `m_out` and `v_out`.
pub fn adamw(
    (theta, m, v, g): (&[f32], &[f32], &[f32], &[f32]),
    (theta_out, m_out, v_out): (&mut [f32], &mut [f32], &mut [f32]),
    c: AdamWStep,
) {
    let n = theta.len();
    assert!(
        m.len() == n && v.len() == n && g.len() == n,
        "adamw: theta, m, v and g differ in length"
    );
    assert!(
        theta_out.len() == n && m_out.len() == n && v_out.len() == n,
        "adamw: outputs differ in length from theta"
    );
    theta_out
        .par_chunks_mut(CHUNK)
        .zip(m_out.par_chunks_mut(CHUNK))
        .zip(v_out.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(i, ((to, mo), vo))| {
            let r = i * CHUNK..i * CHUNK + to.len();
            let (t, m, v, g) = (&theta[r.clone()], &m[r.clone()], &v[r.clone()], &g[r]);
            for j in 0..to.len() {
                let mn = m[j] * c.beta1 + g[j] * c.one_minus_beta1;
                let vn = v[j] * c.beta2 + (g[j] * g[j]) * c.one_minus_beta2;
                let adjusted = (mn * c.scale_m) / ((vn * c.scale_v).sqrt() + c.eps);
                to[j] = t[j] * c.decay - adjusted * c.lr;
                mo[j] = mn;
                vo[j] = vn;
            }
        });
}
