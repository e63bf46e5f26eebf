//! Matrix products that multiply in bf16 and sum in f32, for CPUs with AVX512-BF16.
//!
//! `vdpbf16ps` takes, in each of its sixteen f32 lanes, two bf16 pairs and adds both products
//! to the lane: twice the multiply-adds of an f32 FMA per instruction, from operands half the
//! size. So both operands are stored as *pairs* along the summed dimension `k`, one pair per
//! `u32` (even `k` in the low half):
//! - the left operand as [`Rows`]: row `i`, pair `q` at `i·kq + q` (`kq = ceil(k / 2)`), so
//!   one `u32` broadcast gives every lane the same two activations;
//! - the right operand as [`Panels`] of 32 output columns: pair `q` of column `c` of panel
//!   `p` at `(p·kq + q)·32 + c`, so two vector loads give the pairs of 32 columns.
//!
//! A 12×32 register tile walks one panel over twelve rows: per pair of `k`, two loads, twelve
//! broadcasts and 24 dot products into 24 accumulators. The bias, GELU, and adding onto what
//! the output held run on the tile before it is stored. Odd `k` pads with a zero.
//!
//! Rounding to bf16 is to nearest, ties to even (as `vcvtneps2bf16` does), so the plain
//! reference in the tests ([`round`], [`widen`]) and the vector path see the same inputs.

use crate::linear::Epilogue;
use rayon::prelude::*;
use std::sync::Arc;

/// Output columns per panel: two registers of sixteen f32.
pub const NR: usize = 32;
/// Rows per register tile.
pub const MR: usize = 12;

/// An instruction family the bf16 kernel has a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Intel AMX-BF16 tiles ([`crate::amx`]): a 32×32 block of sums in four tile registers,
    /// with the AVX-512 epilogue. Where `k` is not a multiple of 32 it runs the AVX512-BF16
    /// tile instead.
    Amx,
    /// AVX512-BF16: the 12×32 register tile of the module doc.
    Avx512Bf16,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Amx => "amx-bf16",
            Path::Avx512Bf16 => "avx512-bf16",
        }
    }
}

/// Every bf16 path this CPU can run, fastest first (empty without AVX512-BF16); tests run each.
pub fn paths() -> &'static [Path] {
    static PATHS: std::sync::OnceLock<Vec<Path>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut out = Vec::new();
        if supported() {
            if crate::amx::bf16_supported() {
                out.push(Path::Amx);
            }
            out.push(Path::Avx512Bf16);
        }
        out
    })
}

/// Whether this CPU multiplies bf16 natively (AVX512-BF16 with AVX512-F, and AVX2+FMA for the
/// GELU epilogue).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to bf16 (nearest, ties to even), as its 16 bits. NaN stays a quiet NaN.
#[inline]
pub fn round(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let lsb = (b >> 16) & 1;
    ((b.wrapping_add(0x7fff + lsb)) >> 16) as u16
}

/// A bf16 value back as f32 (exact).
#[inline]
pub fn widen(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[inline]
fn pair(even: f32, odd: f32) -> u32 {
    u32::from(round(even)) | (u32::from(round(odd)) << 16)
}

/// The left operand of a product, `[m, k]`, as bf16 pairs along `k` (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    m: usize,
    kq: usize,
    data: Vec<u32>,
}

impl Rows {
    /// From `value(i, kk)` for `i < m`, `kk < k`.
    pub fn from_fn(m: usize, k: usize, value: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        // Sixteen rows at a time, pairs outer: a transposed operand (the `dyᵀ` of a weight's
        // gradient) is then read sixteen contiguous values at a time instead of one per row.
        const BLOCK: usize = 16;
        let kq = k.div_ceil(2);
        let mut data = vec![0u32; m * kq];
        data.par_chunks_mut((BLOCK * kq).max(1))
            .enumerate()
            .for_each(|(blk, rows)| {
                let i0 = blk * BLOCK;
                let height = rows.len() / kq.max(1);
                for q in 0..kq {
                    for r in 0..height {
                        let odd = if 2 * q + 1 < k {
                            value(i0 + r, 2 * q + 1)
                        } else {
                            0.0
                        };
                        rows[r * kq + q] = pair(value(i0 + r, 2 * q), odd);
                    }
                }
            });
        Self { m, kq, data }
    }

    /// Rows already laid out as pairs: `data` holds `m` rows of `ceil(k / 2)` pairs (a buffer
    /// a caller fills and reuses, see [`Rows::into_pairs`]).
    pub fn from_pairs(m: usize, k: usize, data: Vec<u32>) -> Self {
        let kq = k.div_ceil(2);
        assert_eq!(data.len(), m * kq, "bf16 rows: {m} rows of {kq} pairs");
        Self { m, kq, data }
    }

    /// The pairs, to reuse their buffer.
    pub fn into_pairs(self) -> Vec<u32> {
        self.data
    }

    /// Row `i` from `x[i · ld..i · ld + k]`, as `[m, k_pad]` rows (`k..k_pad` zeros), on the
    /// calling thread: the operands of one head of attention, read in place from the fused
    /// Q, K, V matrix. The same values as [`Rows::from_fn`].
    pub fn from_strided(x: &[f32], (m, k, ld): (usize, usize, usize), k_pad: usize) -> Self {
        assert!(
            k_pad >= k && ld >= k,
            "bf16 rows: k {k}, k_pad {k_pad}, ld {ld}"
        );
        assert!(
            m == 0 || x.len() >= (m - 1) * ld + k,
            "bf16 rows: x is short"
        );
        let kq = k_pad.div_ceil(2);
        let mut data = vec![0u32; m * kq];
        for (i, d) in data.chunks_exact_mut(kq.max(1)).enumerate().take(m) {
            row_pairs(&x[i * ld..i * ld + k], d);
        }
        Self { m, kq, data }
    }

    /// The transpose of `a`, stored row-major `[k, m]` (the `dyᵀ` of a weight's gradient), as
    /// `[m, k_pad]` rows: `k..k_pad` are zeros. The same values as [`Rows::from_fn`] reading
    /// `a[kk · m + i]`, sixteen rows at a time where the CPU multiplies bf16.
    pub fn from_transposed(a: &[f32], m: usize, k: usize, k_pad: usize) -> Self {
        assert!(
            a.len() == m * k && k_pad >= k,
            "bf16 rows: a is not [{k}, {m}]"
        );
        #[cfg(target_arch = "x86_64")]
        if supported() && m > 0 && k_pad > 0 {
            let kq = k_pad.div_ceil(2);
            let mut data = vec![0u32; m * kq];
            data.par_chunks_mut(16 * kq)
                .enumerate()
                .for_each(|(blk, rows)| {
                    // SAFETY: supported() checked AVX512-F; the block's rows are 16 · blk onward,
                    // `rows` holds height · kq values and `a` is [k, m].
                    unsafe { avx512::transposed_pairs(a, (m, k), 16 * blk, rows, kq) }
                });
            return Self { m, kq, data };
        }
        Self::from_fn(m, k_pad, |i, kk| if kk < k { a[kk * m + i] } else { 0.0 })
    }

    /// From a row-major `[m, k]` slice, vectorised where the CPU multiplies bf16 (the
    /// conversion would otherwise cost a fifth of the product it feeds).
    pub fn from_slice(x: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(x.len(), m * k, "bf16 rows: x is not [{m}, {k}]");
        #[cfg(target_arch = "x86_64")]
        if supported() && k.is_multiple_of(2) && k > 0 {
            let kq = k / 2;
            let mut data = vec![0u32; m * kq];
            let rows = (4096 / k).max(1);
            data.par_chunks_mut(rows * kq)
                .zip(x.par_chunks(rows * k))
                .for_each(|(d, s)| {
                    // SAFETY: supported() checked AVX512-F and AVX512-BF16; d holds s.len()/2.
                    unsafe { avx512::round_pairs(s, d) }
                });
            return Self { m, kq, data };
        }
        Self::from_fn(m, k, |i, kk| x[i * k + kk])
    }
}

/// The right operand of a product, `[k, n]`, as panels of 32 columns of bf16 pairs along `k`
/// (see the module doc). Built once for a weight, or per call in training.
#[derive(Debug, Clone, PartialEq)]
pub struct Panels {
    n: usize,
    k: usize,
    data: Arc<[u32]>,
}

impl Panels {
    /// From `value(kk, j)` for `kk < k`, `j < n`: element `(kk, j)` of the right operand.
    pub fn from_fn(k: usize, n: usize, value: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let kq = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kq * NR];
        data.par_chunks_mut((kq * NR).max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                let width = NR.min(n - p * NR);
                for q in 0..kq {
                    for c in 0..width {
                        let j = p * NR + c;
                        let odd = if 2 * q + 1 < k {
                            value(2 * q + 1, j)
                        } else {
                            0.0
                        };
                        panel[q * NR + c] = pair(value(2 * q, j), odd);
                    }
                }
            });
        Self {
            n,
            k,
            data: data.into(),
        }
    }

    /// From `b` stored row-major `[k, n]` (activations, or a weight read as `[in, out]` in a
    /// backward product), as `k_pad` rows: `k..k_pad` are zeros. The same values as
    /// [`Panels::from_fn`] reading `b[kk · n + j]`, 32 columns at a time where the CPU
    /// multiplies bf16.
    pub fn from_matrix(b: &[f32], (k, n, ldb): (usize, usize, usize), k_pad: usize) -> Self {
        assert!(
            ldb >= n && (k == 0 || b.len() >= (k - 1) * ldb + n) && k_pad >= k,
            "bf16 panels: b is not [{k}, {n}] with rows {ldb} apart"
        );
        #[cfg(target_arch = "x86_64")]
        if supported() && n > 0 && k_pad > 0 {
            let kq = k_pad.div_ceil(2);
            let mut data = vec![0u32; n.div_ceil(NR) * kq * NR];
            data.par_chunks_mut(kq * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    // SAFETY: supported() checked AVX512-F; `panel` holds kq · 32 values.
                    unsafe { avx512::matrix_pairs(b, (k, n, ldb), NR * p, panel) }
                });
            return Self {
                n,
                k: k_pad,
                data: data.into(),
            };
        }
        Self::from_fn(k_pad, n, |kk, j| if kk < k { b[kk * ldb + j] } else { 0.0 })
    }

    /// The transpose of `w` as the right operand, row `j` of `w` from `w[j · ld..j · ld + k]`,
    /// on the calling thread (the keys of one head of attention, read in place). The same
    /// values as [`Panels::from_weight`] on the rows gathered.
    pub fn from_weight_strided(w: &[f32], (n, k, ld): (usize, usize, usize)) -> Self {
        assert!(
            ld >= k && (n == 0 || w.len() >= (n - 1) * ld + k),
            "bf16 panels: w is short"
        );
        let kq = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(NR) * kq * NR];
        let mut pairs = vec![0u32; kq];
        for j in 0..n {
            row_pairs(&w[j * ld..j * ld + k], &mut pairs);
            let (p, c) = (j / NR, j % NR);
            let panel = &mut data[p * kq * NR..(p + 1) * kq * NR];
            for (q, &v) in pairs.iter().enumerate() {
                panel[q * NR + c] = v;
            }
        }
        Self {
            n,
            k,
            data: data.into(),
        }
    }

    /// A linear layer's weight as PyTorch stores it, row-major `[n, k]` (`[out, in]`): the
    /// right operand is its transpose.
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "bf16 panels: weight is not [{n}, {k}]");
        Self::from_fn(k, n, |kk, j| w[j * k + kk])
    }
}

/// `src` as pairs into `dst` (`ceil(len / 2)` of them, the rest of `dst` left alone), with
/// `vcvtne2ps2bf16` where the CPU has it, as [`Rows::from_slice`] rounds (the same bits as
/// [`round`] except that denormals become zero).
fn row_pairs(src: &[f32], dst: &mut [u32]) {
    let whole = src.len() / 2;
    #[cfg(target_arch = "x86_64")]
    let done = if supported() {
        // SAFETY: supported() checked AVX512-F and AVX512-BF16; both slices hold `whole`
        // pairs.
        unsafe { avx512::round_pairs(&src[..2 * whole], &mut dst[..whole]) };
        whole
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for q in done..whole {
        dst[q] = pair(src[2 * q], src[2 * q + 1]);
    }
    if src.len() % 2 == 1 {
        dst[whole] = pair(src[src.len() - 1], 0.0);
    }
}

/// What happens to a tile after the product.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// Added to every row.
    pub bias: Option<&'a [f32]>,
    pub epilogue: Epilogue,
    /// Add onto what the output holds instead of overwriting it.
    pub accumulate: bool,
}

/// `out[m, n] (+)= a · b`, then bias and epilogue, with `out` row-major of row stride `n`, on
/// the fastest path.
///
/// # Panics
/// When the CPU lacks AVX512-BF16 (check [`supported`]) or the shapes disagree.
pub fn product(a: &Rows, b: &Panels, out: &mut [f32], finish: Finish<'_>) {
    product_with(fastest(), a, b, out, finish, false);
}

fn fastest() -> Path {
    let path = paths().first().copied();
    path.expect("bf16 product on a CPU without AVX512-BF16: check bf16::supported() first")
}

/// [`product`] on a given path (tests compare every path this CPU has).
///
/// # Panics
/// When the CPU cannot run `path` (see [`paths`]) or the shapes disagree.
pub fn product_on(path: Path, a: &Rows, b: &Panels, out: &mut [f32], finish: Finish<'_>) {
    product_with(path, a, b, out, finish, false);
}

/// [`product`] in one piece on the calling thread: for the small products of a task that is
/// itself one of many run in parallel (a head of attention), where splitting costs more than
/// it spreads.
pub fn product_serial(a: &Rows, b: &Panels, out: &mut [f32], finish: Finish<'_>) {
    product_with(fastest(), a, b, out, finish, true);
}

fn product_with(
    path: Path,
    a: &Rows,
    b: &Panels,
    out: &mut [f32],
    finish: Finish<'_>,
    serial: bool,
) {
    let (m, n) = (a.m, b.n);
    assert_eq!(a.kq, b.k.div_ceil(2), "bf16 product: a and b differ in k");
    assert_eq!(out.len(), m * n, "bf16 product: out is not [{m}, {n}]");
    if let Some(bias) = finish.bias {
        assert_eq!(bias.len(), n, "bf16 product: bias is not [{n}]");
    }
    assert!(
        paths().contains(&path),
        "bf16 product: this CPU cannot run the {} path",
        path.name()
    );
    if m == 0 || n == 0 {
        return;
    }
    let kq = a.kq;
    if kq == 0 {
        // An empty sum: only the bias and epilogue remain.
        for row in out.chunks_exact_mut(n) {
            for (j, o) in row.iter_mut().enumerate() {
                let base = if finish.accumulate { *o } else { 0.0 };
                *o = base + finish.bias.map_or(0.0, |b| b[j]);
            }
        }
        if finish.epilogue == Epilogue::Gelu {
            crate::math::gelu_inplace(crate::Isa::best(), out);
        }
        return;
    }
    let mut bias_pad = vec![0f32; n.div_ceil(NR) * NR];
    if let Some(bias) = finish.bias {
        bias_pad[..n].copy_from_slice(bias);
    }
    // AMX sums whole 64-byte rows of k; other widths take the AVX-512 tile, which any CPU
    // with AMX-BF16 has too.
    let amx = path == Path::Amx && kq.is_multiple_of(crate::amx::KQ_STEP);
    let mr_max = if amx { crate::amx::ROWS } else { MR };
    let rows = if serial {
        m
    } else {
        crate::row_block(m, 4 * kq, 48 * 1024, mr_max)
    };
    #[cfg(target_arch = "x86_64")]
    out.par_chunks_mut(rows * n)
        .zip(a.data.par_chunks(rows * kq.max(1)))
        .for_each(|(ob, ab)| {
            let mb = ob.len() / n;
            let tiles = amx.then(crate::amx::Tiles::load);
            let mut scratch = crate::amx::Scratch::default();
            for p in 0..n.div_ceil(NR) {
                let panel = &b.data[p * kq * NR..(p + 1) * kq * NR];
                let j0 = p * NR;
                let width = NR.min(n - j0);
                let mut r = 0;
                while r < mb {
                    let mr = mr_max.min(mb - r);
                    let a_rows = &ab[r * kq..(r + mr) * kq];
                    let bias = &bias_pad[j0..j0 + NR];
                    let dst = (&mut ob[r * n..], n, j0, width);
                    // SAFETY: the path was checked against this CPU above; the tiles assert
                    // that every index they reach lies inside their slices.
                    unsafe {
                        match &tiles {
                            Some(t) => amx::tile(
                                t,
                                (a_rows, kq, mr),
                                &mut scratch,
                                panel,
                                bias,
                                dst,
                                finish,
                            ),
                            None => avx512::tile(a_rows, kq, mr, panel, bias, dst, finish),
                        }
                    }
                    r += mr;
                }
            }
        });
}

/// The end of both tiles: bias, what the output held where asked, GELU, then `width` columns
/// out. `row` holds the sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish_row(row: &[f32], bias: &[f32], dst: &mut [f32], finish: Finish<'_>) {
    use std::arch::x86_64::*;
    assert!(row.len() == NR && bias.len() == NR && dst.len() <= NR);
    let width = dst.len();
    let masks = crate::math::avx512::width_masks(width);
    for (h, &mask) in masks.iter().enumerate() {
        // Past `dst` only where the mask is empty, which loads and stores nothing.
        let at = dst.as_mut_ptr().wrapping_add(16 * h);
        let mut v = _mm512_add_ps(
            _mm512_loadu_ps(row.as_ptr().add(16 * h)),
            _mm512_loadu_ps(bias.as_ptr().add(16 * h)),
        );
        if finish.accumulate {
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
        }
        if finish.epilogue == Epilogue::Gelu {
            // The same operations as the AVX2 GELU lane for lane.
            v = crate::math::avx512::gelu16(v);
        }
        _mm512_mask_storeu_ps(at, mask, v);
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{Finish, NR};
    use crate::amx::{Scratch, Tiles, ROWS};

    /// One `mr × 32` tile (mr ≤ 32): the block's sums from the AMX tiles, then the AVX-512
    /// tile's epilogue. A block of fewer than 32 rows is copied into `scratch` first, since
    /// the tiles always read 32.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn tile(
        tiles: &Tiles,
        (a, kq, mr): (&[u32], usize, usize),
        scratch: &mut Scratch<f32>,
        panel: &[u32],
        bias: &[f32],
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        finish: Finish<'_>,
    ) {
        assert!((1..=ROWS).contains(&mr) && (1..=NR).contains(&width));
        assert!(a.len() == mr * kq && panel.len() == kq * NR && bias.len() == NR);
        assert!((mr - 1) * ldo + j0 + width <= out.len());
        let sums = tiles.bf16_block(a, kq, panel, scratch);
        for (i, row) in sums.chunks_exact(NR).take(mr).enumerate() {
            let dst = &mut out[i * ldo + j0..i * ldo + j0 + width];
            super::finish_row(row, bias, dst, finish);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Finish, MR, NR};
    use std::arch::x86_64::*;

    /// [`super::round`] of sixteen lanes, each lane's bf16 in its low half: the same integer
    /// steps, so the same bits (hardware rounding would flush denormals).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn round16(x: __m512) -> __m512i {
        let b = _mm512_castps_si512(x);
        let high = _mm512_srli_epi32::<16>(b);
        let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb);
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }

    /// Pairs of sixteen lanes: `even` in the low halves, `odd` in the high.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pairs16(even: __m512, odd: __m512) -> __m512i {
        _mm512_or_si512(round16(even), _mm512_slli_epi32::<16>(round16(odd)))
    }

    /// Rows `i0..i0 + height` of [`super::Rows::from_transposed`] (`height = rows.len() / kq`
    /// ≤ 16): pair `q` of row `i0 + r` from `a[2q · m + i0 + r]` and `a[(2q + 1) · m + i0 + r]`,
    /// sixteen rows per load, scattered to their rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transposed_pairs(
        a: &[f32],
        (m, k): (usize, usize),
        i0: usize,
        rows: &mut [u32],
        kq: usize,
    ) {
        let height = rows.len() / kq;
        assert!(height <= 16 && i0 + height <= m && a.len() == m * k && rows.len() == height * kq);
        let [mask, _] = crate::math::avx512::width_masks(height);
        let index = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(kq as i32),
        );
        let column = |kk: usize| {
            if kk < k {
                _mm512_maskz_loadu_ps(mask, a.as_ptr().add(kk * m + i0))
            } else {
                _mm512_setzero_ps()
            }
        };
        for q in 0..kq {
            let v = pairs16(column(2 * q), column(2 * q + 1));
            // Lane r to rows[r · kq + q], r < height: inside `rows`.
            _mm512_mask_i32scatter_epi32::<4>(rows.as_mut_ptr().add(q).cast(), mask, index, v);
        }
    }

    /// One panel of [`super::Panels::from_matrix`]: columns `j0..j0 + 32` (fewer at the edge,
    /// the rest zeros), pair `q` of column `c` from `b[2q · n + j0 + c]` and the row below.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matrix_pairs(
        b: &[f32],
        (k, n, ldb): (usize, usize, usize),
        j0: usize,
        panel: &mut [u32],
    ) {
        let kq = panel.len() / NR;
        assert!(j0 < n && ldb >= n && panel.len() == kq * NR);
        assert!(k == 0 || b.len() >= (k - 1) * ldb + n);
        let width = NR.min(n - j0);
        let masks = crate::math::avx512::width_masks(width);
        let half = |kk: usize, h: usize| {
            if kk < k {
                // Past the slice only where the mask is empty, which loads nothing.
                let at = b.as_ptr().wrapping_add(kk * ldb + j0 + 16 * h);
                _mm512_maskz_loadu_ps(masks[h], at)
            } else {
                _mm512_setzero_ps()
            }
        };
        for q in 0..kq {
            for h in 0..2 {
                let v = pairs16(half(2 * q, h), half(2 * q + 1, h));
                _mm512_storeu_si512(panel.as_mut_ptr().add(q * NR + 16 * h).cast(), v);
            }
        }
    }

    /// `src` (even length) rounded to bf16 pairs in `dst`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_pairs(src: &[f32], dst: &mut [u32]) {
        assert!(src.len() == 2 * dst.len());
        let mut i = 0;
        while i + 32 <= src.len() {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            // The second operand fills the low half: element order is kept.
            let h = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dst.as_mut_ptr().add(i / 2).cast(),
                std::mem::transmute::<__m512bh, __m512i>(h),
            );
            i += 32;
        }
        while i < src.len() {
            dst[i / 2] = super::pair(src[i], src[i + 1]);
            i += 2;
        }
    }

    /// One `mr × 32` tile: `out[i, j0 + c] (+)= Σ_q a[i, q] · panel[q, c]`, then bias and
    /// epilogue, for `i < mr`, `c < width`; `out` row `i` starts at `i · ldo`.
    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
    pub(super) unsafe fn tile(
        a: &[u32],
        kq: usize,
        mr: usize,
        panel: &[u32],
        bias: &[f32],
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        finish: Finish<'_>,
    ) {
        assert!((1..=MR).contains(&mr) && (1..=NR).contains(&width));
        assert!(a.len() == mr * kq && panel.len() == kq * NR && bias.len() == NR);
        assert!((mr - 1) * ldo + j0 + width <= out.len());
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let ap = a.as_ptr();
        let wp = panel.as_ptr();
        // Rows past mr repeat the last real row: same loads, results never stored.
        let rows: [*const u32; MR] = std::array::from_fn(|i| ap.add(i.min(mr - 1) * kq));
        for q in 0..kq {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(q * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(q * NR + 16).cast()));
            for i in 0..MR {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*rows[i].add(q) as i32));
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
            }
        }
        for (i, acc) in acc.iter().enumerate().take(mr) {
            let mut row = [0f32; NR];
            for (h, v) in acc.iter().enumerate() {
                _mm512_storeu_ps(row.as_mut_ptr().add(16 * h), *v);
            }
            let dst = &mut out[i * ldo + j0..i * ldo + j0 + width];
            super::finish_row(&row, bias, dst, finish);
        }
    }
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ + bias`, then the epilogue, with the weight rounded to bf16
/// for this one call (training, where the weight changes every step). Needs [`supported`].
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epilogue: Epilogue,
) {
    let finish = Finish {
        bias,
        epilogue,
        accumulate: false,
    };
    product(
        &Rows::from_slice(x, m, k),
        &Panels::from_weight(w, n, k),
        out,
        finish,
    );
}

/// `out[m, n] (=|+=) op(a) · op(b)` as [`crate::linear::matmul`] defines it (`a_t`: `a` is
/// stored `[k, m]`; `b_t`: `b` is stored `[n, k]`), multiplied in bf16. Needs [`supported`].
pub fn matmul(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert_eq!(
        a.len(),
        m * k,
        "bf16 matmul: a does not hold {m}×{k} values"
    );
    assert_eq!(
        b.len(),
        k * n,
        "bf16 matmul: b does not hold {k}×{n} values"
    );
    // AMX sums k 32 at a time. A k that is not a multiple (the tokens of a batch, in a
    // weight's gradient) is padded with zeros, which add nothing, so the product still runs
    // on the tiles rather than the slower register tile.
    let kp = match paths().first() {
        Some(Path::Amx) => k.next_multiple_of(2 * crate::amx::KQ_STEP),
        _ => k,
    };
    let rows = match (a_t, kp == k) {
        (false, true) => Rows::from_slice(a, m, k),
        (false, false) => Rows::from_fn(m, kp, |i, kk| if kk < k { a[i * k + kk] } else { 0.0 }),
        (true, _) => Rows::from_transposed(a, m, k, kp),
    };
    let panels = match (b_t, kp == k) {
        (true, true) => Panels::from_weight(b, n, k),
        (true, false) => Panels::from_fn(kp, n, |kk, j| if kk < k { b[j * k + kk] } else { 0.0 }),
        (false, _) => Panels::from_matrix(b, (k, n, n), kp),
    };
    let finish = Finish {
        bias: None,
        epilogue: Epilogue::None,
        accumulate,
    };
    product(&rows, &panels, out, finish);
}
