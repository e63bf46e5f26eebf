//! A linear layer's weight packed once, at load time, for its product kernel. On AVX2+FMA the
//! weight is cut into panels of 16 output features, each stored k-major (the 16 weights of one
//! input feature side by side), and a 6×16 register tile walks them: per input feature two
//! vector loads of weights, six broadcasts of activations and twelve fused multiply-adds, with
//! the bias and GELU applied to the tile before it is stored. Nothing is repacked per call,
//! activations are read in place, and the output is written once. Elsewhere the weight stays
//! row-major and the `gemm` crate runs the product. Where the products run in bf16 or int8
//! ([`Precision`]), the weight is stored once as bf16 panels ([`crate::bf16`], half the memory)
//! or int8 ones ([`crate::int8`], a quarter), and each call rounds or quantises its activations
//! before the product.

use crate::bf16::{self, Panels, Rows};
use crate::int8;
use crate::linear::Epilogue;
use crate::{Isa, Precision};
use rayon::prelude::*;
use std::sync::Arc;

const NR: usize = 16;
const MR: usize = 6;

/// A `[n, k]` weight (PyTorch's `[out, in]`) stored for [`PackedMatrix::linear`].
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    n: usize,
    k: usize,
    isa: Isa,
    stored: Stored,
}

/// The weight in the form its product kernel reads.
#[derive(Debug, Clone)]
enum Stored {
    /// Panels (AVX2+FMA: `ceil(n / 16)` panels of `k × 16`, zero-padded) or the row-major
    /// weight (portable).
    F32(Arc<[f32]>),
    Bf16(Panels),
    Int8(int8::Panels),
}

impl PackedMatrix {
    /// Packs a row-major `[n, k]` weight for `isa`.
    pub fn pack(isa: Isa, w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "pack: weight is not [{n}, {k}]");
        let data: Arc<[f32]> = match isa {
            Isa::Avx2Fma | Isa::Avx512 => {
                let panels = n.div_ceil(NR);
                let mut p = vec![0f32; panels * k * NR];
                for j in 0..n {
                    let (panel, c) = (j / NR, j % NR);
                    let base = panel * k * NR;
                    for (kk, &v) in w[j * k..(j + 1) * k].iter().enumerate() {
                        p[base + kk * NR + c] = v;
                    }
                }
                p.into()
            }
            Isa::Portable => w.into(),
        };
        Self {
            n,
            k,
            isa,
            stored: Stored::F32(data),
        }
    }

    /// Packs a row-major `[n, k]` weight for products in `precision`: bf16 panels where asked
    /// and the CPU has AVX512-BF16, otherwise as [`PackedMatrix::pack`] does for `isa`.
    pub fn pack_for(isa: Isa, precision: Precision, w: &[f32], n: usize, k: usize) -> Self {
        let stored = match precision {
            _ if k == 0 => return Self::pack(isa, w, n, k),
            Precision::Bf16 if bf16::supported() => Stored::Bf16(Panels::from_weight(w, n, k)),
            Precision::Int8 if int8::supported() => {
                Stored::Int8(int8::Panels::from_weight(w, n, k))
            }
            _ => return Self::pack(isa, w, n, k),
        };
        Self { n, k, isa, stored }
    }

    /// What the products of this weight multiply in.
    pub fn precision(&self) -> Precision {
        match self.stored {
            Stored::F32(_) => Precision::F32,
            Stored::Bf16(_) => Precision::Bf16,
            Stored::Int8(_) => Precision::Int8,
        }
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `out[m, n] = x[m, k] · Wᵀ + bias`, then the epilogue.
    pub fn linear(
        &self,
        x: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        m: usize,
        epi: Epilogue,
    ) {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "linear: x is not [{m}, {k}]");
        assert_eq!(out.len(), m * n, "linear: out is not [{m}, {n}]");
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "linear: bias is not [{n}]");
        }
        if m == 0 || n == 0 {
            return;
        }
        match (&self.stored, self.isa) {
            (Stored::Bf16(panels), _) => {
                let finish = bf16::Finish {
                    bias,
                    epilogue: epi,
                    accumulate: false,
                };
                bf16::product(&Rows::from_slice(x, m, k), panels, out, finish)
            }
            (Stored::Int8(panels), _) => {
                int8::product(&int8::Rows::from_slice(x, m, k), panels, bias, out, epi)
            }
            #[cfg(target_arch = "x86_64")]
            (Stored::F32(data), Isa::Avx2Fma | Isa::Avx512) => {
                self.linear_avx2(data, x, bias, out, m, epi)
            }
            (Stored::F32(data), _) => {
                crate::linear::linear(Isa::Portable, x, data, bias, out, m, k, n, epi)
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn linear_avx2(
        &self,
        panels: &[f32],
        x: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        m: usize,
        epi: Epilogue,
    ) {
        let (n, k) = (self.n, self.k);
        let zeros;
        let bias = match bias {
            Some(b) => b,
            None => {
                zeros = vec![0f32; n];
                &zeros
            }
        };
        // Row blocks of about 64 KB of activations: the best of 32 KB to 512 KB measured on
        // two Zen 2 cores at the encoder's four shapes (cargo bench -p naba-kernels).
        let rows = crate::row_block(m, 4 * k, 64 * 1024, MR);
        out.par_chunks_mut(rows * n)
            .zip(x.par_chunks(rows * k))
            .for_each(|(ob, xb)| {
                let mb = xb.len() / k.max(1);
                for panel in 0..n.div_ceil(NR) {
                    let w = &panels[panel * k * NR..(panel + 1) * k * NR];
                    let j0 = panel * NR;
                    let width = NR.min(n - j0);
                    let mut r = 0;
                    while r < mb {
                        let mr = MR.min(mb - r);
                        // SAFETY: Avx2Fma is only produced after run-time detection; the
                        // kernel reads mr rows of k from xb at r, k×16 weights, 16 biases
                        // (padded below), and writes mr rows × width columns of ob at
                        // (r, j0), all inside the slices (checked by the asserts of `tile`).
                        unsafe {
                            avx2::tile(
                                xb,
                                k,
                                r,
                                mr,
                                w,
                                bias,
                                j0,
                                width,
                                ob,
                                n,
                                epi == Epilogue::Gelu,
                            );
                        }
                        r += mr;
                    }
                }
            });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One `mr × 16` tile (mr ≤ 6): `out[r.., j0..j0+width] = x[r.., :] · panel + bias`, GELU'd
    /// if asked.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        x: &[f32],
        k: usize,
        r: usize,
        mr: usize,
        panel: &[f32],
        bias: &[f32],
        j0: usize,
        width: usize,
        out: &mut [f32],
        n: usize,
        gelu: bool,
    ) {
        assert!((1..=MR).contains(&mr) && (1..=NR).contains(&width));
        assert!((r + mr) * k <= x.len() && panel.len() == k * NR);
        assert!((r + mr - 1) * n + j0 + width <= out.len() && j0 + width <= bias.len());
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let xp = x.as_ptr().add(r * k);
        let wp = panel.as_ptr();
        // Rows past mr repeat the last real row: same loads, results never stored.
        let rows: [*const f32; MR] = std::array::from_fn(|i| xp.add(i.min(mr - 1) * k));
        for kk in 0..k {
            let b0 = _mm256_loadu_ps(wp.add(kk * NR));
            let b1 = _mm256_loadu_ps(wp.add(kk * NR + 8));
            for i in 0..MR {
                let a = _mm256_broadcast_ss(&*rows[i].add(kk));
                acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
            }
        }
        let mut bias_pad = [0f32; NR];
        bias_pad[..width].copy_from_slice(&bias[j0..j0 + width]);
        let bv0 = _mm256_loadu_ps(bias_pad.as_ptr());
        let bv1 = _mm256_loadu_ps(bias_pad.as_ptr().add(8));
        for (i, a) in acc.iter().enumerate().take(mr) {
            let mut v0 = _mm256_add_ps(a[0], bv0);
            let mut v1 = _mm256_add_ps(a[1], bv1);
            if gelu {
                v0 = crate::math::avx2::gelu8(v0);
                v1 = crate::math::avx2::gelu8(v1);
            }
            let dst = out.as_mut_ptr().add((r + i) * n + j0);
            if width == NR {
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            } else {
                let mut tmp = [0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, width);
            }
        }
    }
}
