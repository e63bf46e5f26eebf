//! Matrix products in int8 with int32 sums: inference only.
//!
//! `vpdpbusd` adds, in each of its int32 lanes, four products of an unsigned byte and a signed
//! byte: four times the multiply-adds of an f32 FMA per instruction. Two encodings exist, and
//! each has a path ([`Path`]): AVX512-VNNI (a 12×32 tile in 512-bit registers) and AVX-VNNI,
//! the 256-bit one of CPUs without AVX-512 (a 6×16 tile over each half of a panel). CPUs with
//! neither (AVX2 only) get the same sums from `vpmaddubsw` then `vpmaddwd`, two instructions
//! instead of one, which still multiply twice the pairs of an f32 FMA on cores that run two
//! of each a cycle (AMD Zen 3). `vpmaddubsw` adds its two products in a saturating int16, so
//! that path's weights keep to -63..=63 (`2 · 255 · 63` fits; `2 · 255 · 127` does not), one
//! bit fewer than the others' ([`Path::weight_limit`]). So operands are
//! quantised and stored as *quads* along the summed dimension `k`, four bytes per `u32`:
//! - the weight once, at load, symmetric per output feature (`w ≈ scale_j · q`, `q` in
//!   -127..=127), as panels of 32 columns like [`crate::bf16`]'s, with each column's sum of
//!   `q` kept for the correction below;
//! - the activations per call, symmetric per row (`x ≈ scale_i · q`), then shifted by 128 into
//!   unsigned bytes, since the instruction wants one operand unsigned. The shift adds
//!   `128 · Σ_k q_w` to every sum, which the epilogue takes off again, exactly.
//!
//! The sums are exact integers (at most `k · 255 · 127`, far inside int32 for any encoder
//! width), so the only error is the rounding of both operands to 8 bits, which the tests
//! reproduce with [`quantize`] and check to f32 rounding.

use crate::linear::Epilogue;
use rayon::prelude::*;
use std::sync::Arc;

/// Output columns per panel: two registers of sixteen int32.
pub const NR: usize = 32;
/// Rows per register tile.
pub const MR: usize = 12;

/// An instruction family the int8 kernel has a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Intel AMX-INT8 tiles ([`crate::amx`]): a 32×32 block of sums in four tile registers,
    /// with the AVX-512 epilogue. Where `k` is not a multiple of 64 it runs the AVX512-VNNI
    /// tile instead (the encoder's 384 and 1536 are).
    Amx,
    /// AVX512-VNNI (with AVX512-F/BW): a 12×32 tile.
    Avx512Vnni,
    /// AVX-VNNI, the 256-bit encoding (with AVX2): a 6×16 tile over each half of a panel.
    AvxVnni,
    /// AVX2 alone: `vpmaddubsw` + `vpmaddwd` in a 4×16 tile over each half of a panel, with
    /// 7-bit weights.
    Avx2,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Amx => "amx-int8",
            Path::Avx512Vnni => "avx512-vnni",
            Path::AvxVnni => "avx-vnni",
            Path::Avx2 => "avx2",
        }
    }

    /// The largest weight magnitude this path sums without overflow: 127, or 63 on
    /// [`Path::Avx2`], whose pairs of products meet in an int16.
    pub fn weight_limit(self) -> i8 {
        match self {
            Path::Amx | Path::Avx512Vnni | Path::AvxVnni => 127,
            Path::Avx2 => 63,
        }
    }
}

/// Every int8 path this CPU can run, fastest first; tests run each. Each also needs AVX2+FMA,
/// for the GELU epilogue. Detected once: every linear layer asks, on every call.
pub fn paths() -> &'static [Path] {
    static PATHS: std::sync::OnceLock<Vec<Path>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    if crate::amx::int8_supported() {
                        out.push(Path::Amx);
                    }
                    out.push(Path::Avx512Vnni);
                }
                if has!("avxvnni") {
                    out.push(Path::AvxVnni);
                }
                out.push(Path::Avx2);
            }
        }
        out
    })
}

/// Whether this CPU has an int8 product the kernel uses.
pub fn supported() -> bool {
    !paths().is_empty()
}

/// `xs` as symmetric int8 (`x ≈ scale · q`, `q` in -127..=127, rounded to nearest even) and its
/// scale. An all-zero (or empty) row has scale 0 and all `q` 0.
pub fn quantize(xs: &[f32]) -> (Vec<i8>, f32) {
    quantize_to(xs, 127)
}

/// [`quantize`] onto `-limit..=limit` (the weights of a path, [`Path::weight_limit`]).
pub fn quantize_to(xs: &[f32], limit: i8) -> (Vec<i8>, f32) {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 || !amax.is_finite() {
        return (vec![0; xs.len()], if amax.is_finite() { 0.0 } else { amax });
    }
    let l = f32::from(limit);
    let inv = l / amax;
    let q = xs
        .iter()
        .map(|&x| round_even(x * inv).clamp(-l, l) as i8)
        .collect();
    (q, amax / l)
}

/// `v.round_ties_even()` for `|v|` up to 2²²: adding and taking away 1.5 · 2²³ leaves `v` where
/// floats are whole numbers, rounded to nearest even by the FPU. A baseline x86-64 build has no
/// rounding instruction and calls libm's `rintf` for `round_ties_even`, a call per weight that
/// was 8% of `naba predict`'s start-up; this loop vectorises.
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// [`quantize`] of `row`, shifted by 128, as quads into `dst`; returns the scale.
fn quantize_row_plain(row: &[f32], dst: &mut [u32]) -> f32 {
    let (q, s) = quantize(row);
    for (qq, v) in dst.iter_mut().enumerate() {
        *v = quad(&q, 4 * qq, true);
    }
    s
}

/// The part of a row the vector quantisers leave, from `from` on, as the plain one writes it:
/// shifted bytes, then shifted zeros up to the end of the last quad.
fn quantize_tail(row: &[f32], bytes: &mut [u8], from: usize, amax: f32) {
    let inv = 127.0 / amax;
    for (t, x) in row.iter().enumerate().skip(from) {
        let q = round_even(x * inv).clamp(-127.0, 127.0) as i16;
        bytes[t] = (q + 128) as u8;
    }
    bytes[row.len()..].fill(128);
}

/// Checks that a tile's slices hold every index it reaches.
fn check_tile(
    (a, row_scale, kq, panel): (&[u32], &[f32], usize, &[u32]),
    cols: &Columns<'_>,
    (out, ldo, j0, width): (&[f32], usize, usize, usize),
    mr_max: usize,
) {
    let mr = row_scale.len();
    assert!((1..=mr_max).contains(&mr) && (1..=NR).contains(&width));
    assert!(a.len() == mr * kq && panel.len() == kq * NR);
    assert!(cols.scale.len() == NR && cols.offset.len() == NR && cols.bias.len() == NR);
    assert!((mr - 1) * ldo + j0 + width <= out.len());
}

fn quad(q: &[i8], at: usize, shift: bool) -> u32 {
    let mut v = 0u32;
    for t in 0..4 {
        let b = q.get(at + t).copied().unwrap_or(0);
        let byte = if shift {
            (i16::from(b) + 128) as u8
        } else {
            b as u8
        };
        v |= u32::from(byte) << (8 * t);
    }
    v
}

/// A linear layer's weight `[n, k]` quantised per output feature, as panels of quads.
#[derive(Debug, Clone)]
pub struct Panels {
    n: usize,
    k: usize,
    /// The largest `|q|`: any path whose [`Path::weight_limit`] is at least this runs them.
    limit: i8,
    data: Arc<[u32]>,
    /// Per column (padded to whole panels): the weight's scale, and `128 · Σ_k q`.
    scale: Arc<[f32]>,
    offset: Arc<[i32]>,
}

impl Panels {
    /// Quantised for the fastest path this CPU has (see [`Panels::for_path`]).
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        let limit = paths().first().map_or(127, |p| p.weight_limit());
        Self::with_limit(w, n, k, limit)
    }

    /// Quantised onto `path`'s [`Path::weight_limit`]: panels for [`Path::Avx2`] run on every
    /// path, the others' on the VNNI paths only.
    pub fn for_path(path: Path, w: &[f32], n: usize, k: usize) -> Self {
        Self::with_limit(w, n, k, path.weight_limit())
    }

    /// The largest weight magnitude of these panels, which [`quantize_to`] reproduces.
    pub fn limit(&self) -> i8 {
        self.limit
    }

    fn with_limit(w: &[f32], n: usize, k: usize, limit: i8) -> Self {
        assert_eq!(w.len(), n * k, "int8 panels: weight is not [{n}, {k}]");
        let kq = k.div_ceil(4);
        let panels = n.div_ceil(NR);
        let rows: Vec<(Vec<i8>, f32)> = (0..n)
            .into_par_iter()
            .map(|j| quantize_to(&w[j * k..(j + 1) * k], limit))
            .collect();
        let mut data = vec![0u32; panels * kq * NR];
        let mut scale = vec![0f32; panels * NR];
        let mut offset = vec![0i32; panels * NR];
        for (j, (q, s)) in rows.iter().enumerate() {
            let (p, c) = (j / NR, j % NR);
            for qq in 0..kq {
                data[(p * kq + qq) * NR + c] = quad(q, 4 * qq, false);
            }
            scale[j] = *s;
            offset[j] = 128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
        }
        Self {
            n,
            k,
            limit,
            data: data.into(),
            scale: scale.into(),
            offset: offset.into(),
        }
    }
}

/// Activations `[m, k]` quantised per row and shifted to unsigned bytes, as quads.
#[derive(Debug, Clone)]
pub struct Rows {
    m: usize,
    kq: usize,
    data: Vec<u32>,
    scale: Vec<f32>,
}

impl Rows {
    /// Quantised with the vector code of the fastest path this CPU has.
    pub fn from_slice(x: &[f32], m: usize, k: usize) -> Self {
        Self::from_slice_for(paths().first().copied(), x, m, k)
    }

    /// Quantised with the vector code of `path` (plain code for `None`); every choice writes
    /// the same bytes, which the tests check through the product.
    ///
    /// # Panics
    /// When the CPU cannot run `path`, or `x` is not `[m, k]`.
    pub fn from_slice_for(path: Option<Path>, x: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(x.len(), m * k, "int8 rows: x is not [{m}, {k}]");
        if let Some(p) = path {
            assert!(
                paths().contains(&p),
                "int8 rows: this CPU cannot run {}",
                p.name()
            );
        }
        let kq = k.div_ceil(4);
        let mut data = vec![0u32; m * kq];
        let mut scale = vec![0f32; m];
        if kq > 0 {
            data.par_chunks_mut(kq)
                .zip(scale.par_iter_mut())
                .zip(x.par_chunks(k))
                .for_each(|((d, s), row)| {
                    // SAFETY: `path` was checked against this CPU above (AVX512-F/BW, or
                    // AVX2); d holds ceil(k / 4) quads.
                    #[cfg(target_arch = "x86_64")]
                    match path {
                        Some(Path::Amx | Path::Avx512Vnni) => {
                            *s = unsafe { avx512::quantize_row(row, d) };
                            return;
                        }
                        Some(Path::AvxVnni | Path::Avx2) => {
                            *s = unsafe { avx_vnni::quantize_row(row, d) };
                            return;
                        }
                        None => {}
                    }
                    *s = quantize_row_plain(row, d);
                });
        }
        Self { m, kq, data, scale }
    }
}

/// `out[m, n] = a · bᵀ (dequantised) + bias`, then the epilogue, on the fastest path.
///
/// # Panics
/// When the CPU has no int8 path (check [`supported`]) or the shapes disagree.
pub fn product(a: &Rows, b: &Panels, bias: Option<&[f32]>, out: &mut [f32], epilogue: Epilogue) {
    let path = paths().first().copied();
    let path = path.expect("int8 product on a CPU without VNNI: check int8::supported() first");
    product_on(path, a, b, bias, out, epilogue);
}

/// [`product`] on a given path (tests compare every path this CPU has).
///
/// # Panics
/// When the CPU cannot run `path` (see [`paths`]) or the shapes disagree.
pub fn product_on(
    path: Path,
    a: &Rows,
    b: &Panels,
    bias: Option<&[f32]>,
    out: &mut [f32],
    epilogue: Epilogue,
) {
    let (m, n) = (a.m, b.n);
    assert_eq!(a.kq, b.k.div_ceil(4), "int8 product: a and b differ in k");
    assert_eq!(out.len(), m * n, "int8 product: out is not [{m}, {n}]");
    assert!(
        paths().contains(&path),
        "int8 product: this CPU cannot run the {} path",
        path.name()
    );
    assert!(
        b.limit <= path.weight_limit(),
        "int8 product: weights quantised to ±{} overflow the {} path",
        b.limit,
        path.name()
    );
    assert!(a.kq > 0, "int8 product: an empty sum (k = 0)");
    if m == 0 || n == 0 {
        return;
    }
    let mut bias_pad = vec![0f32; n.div_ceil(NR) * NR];
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "int8 product: bias is not [{n}]");
        bias_pad[..n].copy_from_slice(bias);
    }
    // AMX sums whole 64-byte rows of k; other widths take the VNNI tile, which any CPU with
    // AMX has too.
    let path = if path == Path::Amx && !a.kq.is_multiple_of(crate::amx::KQ_STEP) {
        Path::Avx512Vnni
    } else {
        path
    };
    let mr_max = match path {
        Path::Amx => crate::amx::ROWS,
        Path::Avx512Vnni => MR,
        Path::AvxVnni => avx_vnni::MR,
        Path::Avx2 => avx2::MR,
    };
    let rows = crate::row_block(m, 4 * a.kq, 48 * 1024, mr_max);
    #[cfg(target_arch = "x86_64")]
    out.par_chunks_mut(rows * n)
        .zip(a.data.par_chunks(rows * a.kq.max(1)))
        .zip(a.scale.par_chunks(rows))
        .for_each(|((ob, ab), sb)| {
            let mb = ob.len() / n;
            let tiles = (path == Path::Amx).then(crate::amx::Tiles::load);
            let mut scratch = crate::amx::Scratch::default();
            for p in 0..n.div_ceil(NR) {
                let panel = &b.data[p * a.kq * NR..(p + 1) * a.kq * NR];
                let j0 = p * NR;
                let cols = Columns {
                    scale: &b.scale[j0..j0 + NR],
                    offset: &b.offset[j0..j0 + NR],
                    bias: &bias_pad[j0..j0 + NR],
                };
                let width = NR.min(n - j0);
                let mut r = 0;
                while r < mb {
                    let mr = mr_max.min(mb - r);
                    let (a_rows, scales) = (&ab[r * a.kq..(r + mr) * a.kq], &sb[r..r + mr]);
                    let dst = (&mut ob[r * n..], n, j0, width);
                    // SAFETY: the path was checked against this CPU above; `tile` asserts that
                    // every index it reaches lies inside its slices.
                    unsafe {
                        match (path, &tiles) {
                            (Path::Amx, Some(t)) => amx::tile(
                                t,
                                (a_rows, scales, a.kq, panel),
                                &mut scratch,
                                &cols,
                                dst,
                                epilogue,
                            ),
                            (Path::Amx, None) => unreachable!("AMX path without its tiles"),
                            (Path::Avx512Vnni, _) => {
                                avx512::tile(a_rows, scales, a.kq, panel, &cols, dst, epilogue)
                            }
                            (Path::AvxVnni, _) => {
                                avx_vnni::tile(a_rows, scales, a.kq, panel, &cols, dst, epilogue)
                            }
                            (Path::Avx2, _) => {
                                avx2::tile(a_rows, scales, a.kq, panel, &cols, dst, epilogue)
                            }
                        }
                    }
                    r += mr;
                }
            }
        });
}

/// The end of the 256-bit tiles' epilogue, on rows already scaled and biased: GELU where
/// asked, then the row's `width` columns out.
fn finish(
    rows: &mut [[f32; NR]],
    (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
    epilogue: Epilogue,
) {
    for (i, row) in rows.iter_mut().enumerate() {
        if epilogue == Epilogue::Gelu {
            // paths() checked AVX2+FMA for every path, which the GELU kernel needs.
            crate::math::gelu_inplace(crate::Isa::Avx2Fma, row);
        }
        out[i * ldo + j0..i * ldo + j0 + width].copy_from_slice(&row[..width]);
    }
}

/// What the epilogue needs of one panel's 32 columns.
struct Columns<'a> {
    scale: &'a [f32],
    offset: &'a [i32],
    bias: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Columns, MR, NR};
    use crate::linear::Epilogue;
    use std::arch::x86_64::*;

    /// [`super::quantize`] of `row`, shifted by 128, written as quads into `dst` (the tail of
    /// the last quad stays 0: the weights there are 0); returns the scale. The same maths as
    /// the plain version, so the same bytes: `vcvtps2dq` rounds to nearest even.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(row: &[f32], dst: &mut [u32]) -> f32 {
        assert!(dst.len() == row.len().div_ceil(4));
        let k = row.len();
        let mut i = 0;
        let mut vmax = _mm512_setzero_ps();
        while i + 16 <= k {
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(row.as_ptr().add(i))));
            i += 16;
        }
        let mut amax = _mm512_reduce_max_ps(vmax);
        for x in &row[i..] {
            amax = amax.max(x.abs());
        }
        if amax == 0.0 || !amax.is_finite() {
            return super::quantize_row_plain(row, dst);
        }
        let inv = _mm512_set1_ps(127.0 / amax);
        let (lo, hi, shift) = (
            _mm512_set1_epi32(-127),
            _mm512_set1_epi32(127),
            _mm512_set1_epi32(128),
        );
        let bytes = dst.as_mut_ptr().cast::<u8>();
        let mut i = 0;
        while i + 16 <= k {
            let v = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(i)), inv);
            let q = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), lo), hi);
            let b = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, shift));
            _mm_storeu_si128(bytes.add(i).cast(), b);
            i += 16;
        }
        // The vector stores above went through `bytes`; no reference into `dst` is alive.
        super::quantize_tail(
            row,
            std::slice::from_raw_parts_mut(bytes, dst.len() * 4),
            i,
            amax,
        );
        amax / 127.0
    }

    /// A panel's 32 column scales, offsets and biases, as two registers each.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(cols: &Columns<'_>) -> ([__m512; 2], [__m512i; 2], [__m512; 2]) {
        let two = |p: *const f32| [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
        let off = cols.offset.as_ptr();
        let offsets = [
            _mm512_loadu_si512(off.cast()),
            _mm512_loadu_si512(off.add(16).cast()),
        ];
        (two(cols.scale.as_ptr()), offsets, two(cols.bias.as_ptr()))
    }

    /// One `mr × 32` tile: integer sums over the quads, then
    /// `(sum − offset_j) · scale_i · scale_j + bias_j` and the epilogue.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn tile(
        a: &[u32],
        row_scale: &[f32],
        kq: usize,
        panel: &[u32],
        cols: &Columns<'_>,
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        epilogue: Epilogue,
    ) {
        let mr = row_scale.len();
        super::check_tile((a, row_scale, kq, panel), cols, (&*out, ldo, j0, width), MR);
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let ap = a.as_ptr();
        let wp = panel.as_ptr();
        let rows: [*const u32; MR] = std::array::from_fn(|i| ap.add(i.min(mr - 1) * kq));
        for q in 0..kq {
            let b0 = _mm512_loadu_si512(wp.add(q * NR).cast());
            let b1 = _mm512_loadu_si512(wp.add(q * NR + 16).cast());
            for i in 0..MR {
                let x = _mm512_set1_epi32(*rows[i].add(q) as i32);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
            }
        }
        let (sw, off, bv) = columns(cols);
        for (i, acc) in acc.iter().enumerate().take(mr) {
            let sa = _mm512_set1_ps(row_scale[i]);
            let mut row = [0f32; NR];
            for h in 0..2 {
                let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], off[h]));
                let mut v = _mm512_fmadd_ps(exact, _mm512_mul_ps(sa, sw[h]), bv[h]);
                if epilogue == Epilogue::Gelu {
                    v = crate::math::avx512::gelu16(v);
                }
                _mm512_storeu_ps(row.as_mut_ptr().add(16 * h), v);
            }
            out[i * ldo + j0..i * ldo + j0 + width].copy_from_slice(&row[..width]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{Columns, NR};
    use crate::amx::{Scratch, Tiles, ROWS};
    use crate::linear::Epilogue;
    use std::arch::x86_64::*;

    /// One `mr × 32` tile (mr ≤ 32): the block's sums from the AMX tiles, then the AVX-512
    /// tile's arithmetic, so both write the same bits, stored straight into `out` (masked
    /// past `width`). A block of fewer than 32 rows is copied into `scratch` first, since the
    /// tiles always read 32.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn tile(
        tiles: &Tiles,
        (a, row_scale, kq, panel): (&[u32], &[f32], usize, &[u32]),
        scratch: &mut Scratch<i32>,
        cols: &Columns<'_>,
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        epilogue: Epilogue,
    ) {
        super::check_tile(
            (a, row_scale, kq, panel),
            cols,
            (&*out, ldo, j0, width),
            ROWS,
        );
        let sums = tiles.int8_block(a, kq, panel, scratch);
        let masks = crate::math::avx512::width_masks(width);
        let (sw, off, bv) = super::avx512::columns(cols);
        for (i, &scale) in row_scale.iter().enumerate() {
            let sa = _mm512_set1_ps(scale);
            let mut row = [_mm512_setzero_ps(); 2];
            for (h, v) in row.iter_mut().enumerate() {
                let s = _mm512_loadu_si512(sums.as_ptr().add(i * NR + 16 * h).cast());
                let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(s, off[h]));
                *v = _mm512_fmadd_ps(exact, _mm512_mul_ps(sa, sw[h]), bv[h]);
            }
            if epilogue == Epilogue::Gelu {
                row = row.map(|v| crate::math::avx512::gelu16(v));
            }
            // check_tile: row i's columns j0..j0 + width lie inside out.
            let dst = out.as_mut_ptr().add(i * ldo + j0);
            _mm512_mask_storeu_ps(dst, masks[0], row[0]);
            // Past the buffer where width ≤ 16: then the mask is empty, which stores nothing
            // and cannot fault.
            _mm512_mask_storeu_ps(dst.wrapping_add(16), masks[1], row[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx_vnni {
    use super::{Columns, NR};
    use crate::linear::Epilogue;
    use std::arch::x86_64::*;

    /// Rows per tile: 6 rows × 2 registers of accumulators, 2 of weights and 1 broadcast fit
    /// the sixteen 256-bit registers.
    pub(super) const MR: usize = 6;

    /// [`super::quantize`] of `row` with AVX2, the same bytes as the plain version (see the
    /// AVX-512 one). [`super::Path::Avx2`] quantises its rows here too.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_row(row: &[f32], dst: &mut [u32]) -> f32 {
        assert!(dst.len() == row.len().div_ceil(4));
        let k = row.len();
        let sign = _mm256_set1_ps(-0.0);
        let mut vmax = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= k {
            let v = _mm256_andnot_ps(sign, _mm256_loadu_ps(row.as_ptr().add(i)));
            vmax = _mm256_max_ps(vmax, v);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let mut amax = lanes.iter().fold(0f32, |m, &x| m.max(x));
        for x in &row[i..] {
            amax = amax.max(x.abs());
        }
        if amax == 0.0 || !amax.is_finite() {
            return super::quantize_row_plain(row, dst);
        }
        let inv = _mm256_set1_ps(127.0 / amax);
        let (lo, hi, shift) = (
            _mm256_set1_epi32(-127),
            _mm256_set1_epi32(127),
            _mm256_set1_epi32(128),
        );
        let bytes = dst.as_mut_ptr().cast::<u8>();
        let q8 = |at: usize| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(at)), inv);
            let q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), lo), hi);
            _mm256_add_epi32(q, shift)
        };
        let mut i = 0;
        while i + 32 <= k {
            // Four registers of eight values in 1..=255: pack to words, then to bytes (both
            // work within 128-bit lanes), then put the lanes back in order.
            let ab = _mm256_packs_epi32(q8(i), q8(i + 8));
            let cd = _mm256_packs_epi32(q8(i + 16), q8(i + 24));
            let bytes32 = _mm256_packus_epi16(ab, cd);
            let ordered =
                _mm256_permutevar8x32_epi32(bytes32, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(bytes.add(i).cast(), ordered);
            i += 32;
        }
        // The vector stores above went through `bytes`; no reference into `dst` is alive.
        super::quantize_tail(
            row,
            std::slice::from_raw_parts_mut(bytes, dst.len() * 4),
            i,
            amax,
        );
        amax / 127.0
    }

    /// One `mr × 32` tile (mr ≤ 6) as two `mr × 16` passes over the panel's halves, then the
    /// same epilogue as the AVX-512 tile.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) unsafe fn tile(
        a: &[u32],
        row_scale: &[f32],
        kq: usize,
        panel: &[u32],
        cols: &Columns<'_>,
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        epilogue: Epilogue,
    ) {
        let mr = row_scale.len();
        super::check_tile((a, row_scale, kq, panel), cols, (&*out, ldo, j0, width), MR);
        let ap = a.as_ptr();
        let wp = panel.as_ptr();
        let rows: [*const u32; MR] = std::array::from_fn(|i| ap.add(i.min(mr - 1) * kq));
        let mut done = [[0f32; NR]; MR];
        for half in 0..2 {
            let mut acc = [[_mm256_setzero_si256(); 2]; MR];
            for q in 0..kq {
                let b0 = _mm256_loadu_si256(wp.add(q * NR + 16 * half).cast());
                let b1 = _mm256_loadu_si256(wp.add(q * NR + 16 * half + 8).cast());
                for i in 0..MR {
                    let x = _mm256_set1_epi32(*rows[i].add(q) as i32);
                    acc[i][0] = _mm256_dpbusd_avx_epi32(acc[i][0], x, b0);
                    acc[i][1] = _mm256_dpbusd_avx_epi32(acc[i][1], x, b1);
                }
            }
            for i in 0..mr {
                super::avx2::scale_half(&acc[i], row_scale[i], cols, half, &mut done[i]);
            }
        }
        super::finish(&mut done[..mr], (out, ldo, j0, width), epilogue);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Columns, NR};
    use crate::linear::Epilogue;
    use std::arch::x86_64::*;

    /// Rows per tile: 4 rows × 2 registers of accumulators, 2 of weights, the broadcast, the
    /// ones of `vpmaddwd` and the products in flight fit the sixteen 256-bit registers.
    pub(super) const MR: usize = 4;

    /// One `mr × 32` tile (mr ≤ 4) as two `mr × 16` passes over the panel's halves. Each quad
    /// of an unsigned activation and signed weight bytes goes through `vpmaddubsw` (pairs, in
    /// int16: exact while weights keep to ±63) and `vpmaddwd` by ones (the two pairs, in
    /// int32): the sum `vpdpbusd` makes in one instruction.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        a: &[u32],
        row_scale: &[f32],
        kq: usize,
        panel: &[u32],
        cols: &Columns<'_>,
        (out, ldo, j0, width): (&mut [f32], usize, usize, usize),
        epilogue: Epilogue,
    ) {
        let mr = row_scale.len();
        super::check_tile((a, row_scale, kq, panel), cols, (&*out, ldo, j0, width), MR);
        let ap = a.as_ptr();
        let wp = panel.as_ptr();
        let rows: [*const u32; MR] = std::array::from_fn(|i| ap.add(i.min(mr - 1) * kq));
        let ones = _mm256_set1_epi16(1);
        let mut done = [[0f32; NR]; MR];
        for half in 0..2 {
            let mut acc = [[_mm256_setzero_si256(); 2]; MR];
            for q in 0..kq {
                let b0 = _mm256_loadu_si256(wp.add(q * NR + 16 * half).cast());
                let b1 = _mm256_loadu_si256(wp.add(q * NR + 16 * half + 8).cast());
                for i in 0..MR {
                    let x = _mm256_set1_epi32(*rows[i].add(q) as i32);
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
                    acc[i][0] = _mm256_add_epi32(acc[i][0], p0);
                    acc[i][1] = _mm256_add_epi32(acc[i][1], p1);
                }
            }
            for i in 0..mr {
                scale_half(&acc[i], row_scale[i], cols, half, &mut done[i]);
            }
        }
        super::finish(&mut done[..mr], (out, ldo, j0, width), epilogue);
    }

    /// Half a row of sums (16 columns from `16 · half`) into `row`:
    /// `(sum − offset_j) · scale_i · scale_j + bias_j`, eight columns at a time. At k = 384
    /// the tile spends about as long on each output's sum as a scalar loop would here.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_half(
        acc: &[__m256i; 2],
        row_scale: f32,
        cols: &Columns<'_>,
        half: usize,
        row: &mut [f32; NR],
    ) {
        let sa = _mm256_set1_ps(row_scale);
        for (h, v) in acc.iter().enumerate() {
            let c = 16 * half + 8 * h;
            let off = _mm256_loadu_si256(cols.offset[c..c + 8].as_ptr().cast());
            let sw = _mm256_loadu_ps(cols.scale[c..c + 8].as_ptr());
            let bias = _mm256_loadu_ps(cols.bias[c..c + 8].as_ptr());
            let exact = _mm256_cvtepi32_ps(_mm256_sub_epi32(*v, off));
            let y = _mm256_fmadd_ps(exact, _mm256_mul_ps(sa, sw), bias);
            _mm256_storeu_ps(row[c..c + 8].as_mut_ptr(), y);
        }
    }
}
