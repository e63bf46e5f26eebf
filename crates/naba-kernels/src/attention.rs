//! Softmax attention over packed sequences: the tokens of every sequence of a batch sit one
//! after another in a `[tokens, 3·hidden]` matrix (the fused Q, K, V projection), and
//! `offsets` says where each sequence starts and ends. Each (sequence, head) pair is one task:
//! scores `Q Kᵀ` into a scratch matrix, softmax by row, then `P V` straight into that head's
//! columns of the output. Q, K and V are read in place through strides, no padding is ever
//! computed, and no mask is needed because a sequence only sees its own rows. Training keeps
//! the probabilities ([`packed_attention_train`]) for the backward pass
//! ([`packed_attention_backward`]), which walks the same tasks. With AVX2 the two products of
//! the forward pass run in a 6×16 FMA tile of their own that reads Q, V and the output in
//! place: at a head width of 32 the `gemm` crate's set-up and packing cost about as much as
//! the sums.

use crate::linear::strided_product;
use crate::{math, Isa};
use rayon::prelude::*;

/// A raw pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes only its own (sequence rows × head columns) block of the output.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    // A method, so closures capture the whole wrapper (Send) and not its raw-pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Checks that `offsets` start at 0, never go down and end at `tokens`.
pub fn check_offsets(offsets: &[usize], tokens: usize) -> Result<(), String> {
    if offsets.first() != Some(&0) || offsets.last() != Some(&tokens) {
        return Err(format!(
            "sequence offsets must run from 0 to the {tokens} tokens, got {offsets:?}"
        ));
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(format!(
            "sequence offsets must not decrease, got {offsets:?}"
        ));
    }
    Ok(())
}

/// `out[tokens, hidden]` = multi-head attention of `qkv[tokens, 3·hidden]` within each
/// sequence `offsets[i]..offsets[i + 1]`, scores scaled by `scale` (usually `1/sqrt(head_dim)`).
pub fn packed_attention(
    isa: Isa,
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend(isa, qkv, offsets, heads, scale, out, None, false);
}

/// Whether [`packed_attention_bf16`] runs on this CPU: AMX-BF16 tiles and AVX-512.
pub fn bf16_supported() -> bool {
    Isa::best() == Isa::Avx512 && crate::bf16::paths().first() == Some(&crate::bf16::Path::Amx)
}

/// [`packed_attention`] with both products, `Q Kᵀ` and `P V`, multiplied in bf16 on AMX tiles
/// (f32 sums; softmax stays f32): Q, K, V and the probabilities are rounded to bf16 first.
/// Inference only: training keeps f32 probabilities for its backward pass.
///
/// # Panics
/// Where [`bf16_supported`] is false.
pub fn packed_attention_bf16(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(
        bf16_supported(),
        "bf16 attention on a CPU without AMX-BF16 and AVX-512"
    );
    attend(Isa::Avx512, qkv, offsets, heads, scale, out, None, true);
}

/// How many values the attention probabilities of a batch take: `heads · Σ len²`.
pub fn probs_len(offsets: &[usize], heads: usize) -> usize {
    offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).pow(2))
        .sum::<usize>()
        * heads
}

/// [`packed_attention`] for training: also keeps each (sequence, head)'s `len × len`
/// probabilities in `probs` (sequence-major, then head; [`probs_len`] values), which the
/// backward pass needs.
pub fn packed_attention_train(
    isa: Isa,
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    out: &mut [f32],
    probs: &mut [f32],
) {
    assert_eq!(
        probs.len(),
        probs_len(offsets, heads),
        "attention: probs does not hold heads · Σ len² values"
    );
    attend(isa, qkv, offsets, heads, scale, out, Some(probs), false);
}

/// Shapes of one attention call, checked once.
struct Geometry {
    hidden: usize,
    hd: usize,
    /// `(sequence, head, start of its probabilities)` per non-empty pair.
    tasks: Vec<(usize, usize, usize)>,
}

fn geometry(qkv: usize, offsets: &[usize], heads: usize, out: usize) -> Option<Geometry> {
    assert!(heads > 0, "attention needs at least one head");
    let tokens = offsets.last().copied().unwrap_or(0);
    if tokens == 0 {
        return None;
    }
    let hidden = out / tokens;
    assert_eq!(
        out,
        tokens * hidden,
        "attention: out is not [tokens, hidden]"
    );
    assert_eq!(
        qkv,
        tokens * 3 * hidden,
        "attention: qkv is not [tokens, 3·hidden]"
    );
    assert_eq!(
        hidden % heads,
        0,
        "attention: {hidden} is not a multiple of {heads} heads"
    );
    if let Err(e) = check_offsets(offsets, tokens) {
        panic!("attention: {e}");
    }
    let mut tasks = Vec::new();
    let mut at = 0;
    for s in 0..offsets.len() - 1 {
        let len = offsets[s + 1] - offsets[s];
        for h in 0..heads {
            if len > 0 {
                tasks.push((s, h, at));
            }
            at += len * len;
        }
    }
    Some(Geometry {
        hidden,
        hd: hidden / heads,
        tasks,
    })
}

/// Head `col`'s Q, K and V columns from row `start` on, of a `[tokens, 3·hidden]` matrix.
fn head_qkv(qkv: &[f32], start: usize, hidden: usize, col: usize) -> [&[f32]; 3] {
    let row = start * 3 * hidden + col;
    [&qkv[row..], &qkv[row + hidden..], &qkv[row + 2 * hidden..]]
}

#[allow(clippy::too_many_arguments)]
fn attend(
    isa: Isa,
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    out: &mut [f32],
    probs: Option<&mut [f32]>,
    amx: bool,
) {
    let Some(Geometry { hidden, hd, tasks }) = geometry(qkv.len(), offsets, heads, out.len())
    else {
        return;
    };
    let stride = 3 * hidden;
    let dst = SharedMut(out.as_mut_ptr());
    let keep = probs.map(|p| SharedMut(p.as_mut_ptr()));
    tasks
        .into_par_iter()
        .for_each_init(Scratch::default, |scratch: &mut Scratch, (s, h, at)| {
            let start = offsets[s];
            let len = offsets[s + 1] - start;
            let p: &mut [f32] = match keep {
                // SAFETY: each task owns probs[at..at + len²] (`geometry` lays them end to end).
                Some(k) => unsafe { std::slice::from_raw_parts_mut(k.get().add(at), len * len) },
                None => {
                    scratch.p.resize(len * len, 0.0);
                    &mut scratch.p
                }
            };
            let [q, k, v] = head_qkv(qkv, start, hidden, h * hd);
            let head = Head {
                q,
                k,
                v,
                stride,
                len,
                hd,
            };
            if amx {
                let o = head_amx(&head, p, scale, &mut scratch.tiles);
                for (i, row) in o.chunks_exact(hd).enumerate() {
                    // SAFETY: row start + i, columns h·hd..h·hd+hd of [tokens, hidden]: this
                    // task's own block of the output.
                    unsafe {
                        let at = dst.get().add((start + i) * hidden + h * hd);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), at, hd);
                    }
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if isa.has_avx2() {
                // SAFETY: the ISA comes from run-time detection; the output block (rows
                // start..start+len, columns h·hd..h·hd+hd of [tokens, hidden]) belongs to this
                // task alone.
                unsafe {
                    let dst = dst.get().add(start * hidden + h * hd);
                    head_avx2(isa, &head, p, scale, &mut scratch.tiles, dst, hidden);
                }
                return;
            }
            // SAFETY: Q, K and V blocks lie inside `qkv` (rows start..start+len of a [tokens,
            // 3·hidden] matrix, hd columns each); `p` is len×len; the output block (rows
            // start..start+len, columns h·hd..h·hd+hd of [tokens, hidden]) belongs to this task
            // alone.
            unsafe {
                strided_product(
                    (len, len, hd),
                    (p.as_mut_ptr(), len),
                    false,
                    (q.as_ptr(), stride, 1),
                    (k.as_ptr(), 1, stride),
                    gemm::Parallelism::None,
                );
            }
            for row in p.chunks_exact_mut(len) {
                math::softmax_inplace(isa, row, scale);
            }
            // SAFETY: see above.
            unsafe {
                strided_product(
                    (len, hd, len),
                    (dst.get().add(start * hidden + h * hd), hidden),
                    false,
                    (p.as_ptr(), len, 1),
                    (v.as_ptr(), stride, 1),
                    gemm::Parallelism::None,
                );
            }
        });
}

/// A thread's buffers, reused from task to task.
#[derive(Default)]
struct Scratch {
    /// The probabilities, where the caller keeps none.
    p: Vec<f32>,
    tiles: Tiles,
}

/// What the AVX2 path lays out per head: Kᵀ as panels of 16 columns, and V so when the
/// head's width is not a multiple of 16 (otherwise V is read in place).
#[derive(Default)]
struct Tiles {
    kt: Vec<f32>,
    v: Vec<f32>,
    /// The AMX path's probabilities as bf16 pairs, and its output.
    pairs: Vec<u32>,
    o: Vec<f32>,
}

/// Scores and `P V` of one head as two bf16 products ([`crate::bf16`], on AMX tiles where
/// `k` fills whole tile rows: the head width for the scores, the sequence padded to 32 for
/// `P V`), softmax in f32 between them; Q, K and V are read in place. Returns the `[len, hd]`
/// output in `t.o`.
fn head_amx<'t>(h: &Head<'_>, p: &mut [f32], scale: f32, t: &'t mut Tiles) -> &'t [f32] {
    use crate::bf16::{self, Finish, Panels, Rows};
    let (len, hd, stride) = (h.len, h.hd, h.stride);
    let plain = Finish {
        bias: None,
        epilogue: crate::linear::Epilogue::None,
        accumulate: false,
    };
    // Q Kᵀ: the keys are laid out as a weight `[len, hd]`, whose transpose is the right operand.
    let queries = Rows::from_strided(h.q, (len, hd, stride), hd);
    let keys = Panels::from_weight_strided(h.k, (len, hd, stride));
    bf16::product_serial(&queries, &keys, p, plain);
    // The probabilities go straight into bf16 pairs, rows padded to a multiple of 32 with
    // zeros, in a buffer kept from head to head.
    let kp = len.next_multiple_of(32);
    let mut pairs = std::mem::take(&mut t.pairs);
    pairs.resize(len * kp / 2, 0);
    for (row, out) in p.chunks_exact_mut(len).zip(pairs.chunks_exact_mut(kp / 2)) {
        let (real, pad) = out.split_at_mut(len.div_ceil(2));
        math::softmax_to_pairs(row, scale, real);
        pad.fill(0);
    }
    let probs = Rows::from_pairs(len, kp, pairs);
    let values = Panels::from_matrix(h.v, (len, hd, stride), kp);
    t.o.resize(len * hd, 0.0);
    bf16::product_serial(&probs, &values, &mut t.o[..len * hd], plain);
    t.pairs = probs.into_pairs();
    &t.o[..len * hd]
}

/// One head of one sequence: its Q, K and V from their first row, `stride` apart.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
    len: usize,
    hd: usize,
}

/// Scores, softmax and `P V` of one head in 6×16 tiles (8×32 with AVX-512), the output
/// written to `dst` (row `i` at `dst + i · ld`, `hd` columns).
///
/// # Safety
/// The CPU runs `isa` (AVX2 and FMA at least); `p` holds `len²` values; `dst` is valid for
/// writes of `len` rows of `hd` values `ld` apart, and nothing else reads or writes them
/// meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn head_avx2(
    isa: Isa,
    h: &Head<'_>,
    p: &mut [f32],
    scale: f32,
    t: &mut Tiles,
    dst: *mut f32,
    ld: usize,
) {
    use avx2::NR;
    let (len, hd, stride) = (h.len, h.hd, h.stride);
    assert!(p.len() == len * len && len > 0 && hd > 0);
    assert!(h.q.len() > (len - 1) * stride + hd - 1 && h.k.len() > (len - 1) * stride + hd - 1);
    assert!(h.v.len() > (len - 1) * stride + hd - 1);
    let wide = isa == Isa::Avx512;
    // Kᵀ, panel by panel: row d of a panel holds the d-th values of its 16 keys (zeros past
    // the last key).
    let key_panels = len.div_ceil(NR);
    t.kt.clear();
    t.kt.resize(key_panels * hd * NR, 0.0);
    let kt = t.kt.as_mut_ptr();
    for j in 0..len {
        let (panel, c) = (j / NR, j % NR);
        let key = h.k.as_ptr().add(j * stride);
        for d in 0..hd {
            *kt.add((panel * hd + d) * NR + c) = *key.add(d);
        }
    }
    let q = (h.q.as_ptr(), stride);
    let scores = (p.as_mut_ptr(), len);
    if wide {
        avx512::product(q, (t.kt.as_ptr(), NR, hd * NR), (len, hd, len), scores);
    } else {
        avx2::product(q, (t.kt.as_ptr(), NR, hd * NR), (len, hd, len), scores);
    }
    for row in p.chunks_exact_mut(len) {
        math::softmax_inplace(isa, row, scale);
    }
    // V in place when every panel of 16 columns lies inside the head, else copied. The
    // AVX-512 path always copies: its tile runs fast enough that V's rows, 3·hidden apart (a
    // page apart at hidden 384), cost more to reach in place than to copy once.
    let (v, ldv, panel_step) = if hd % NR == 0 && !wide {
        (h.v.as_ptr(), stride, NR)
    } else {
        let col_panels = hd.div_ceil(NR);
        t.v.clear();
        t.v.resize(col_panels * len * NR, 0.0);
        for j in 0..len {
            let row = &h.v[j * stride..j * stride + hd];
            for (panel, part) in row.chunks(NR).enumerate() {
                let at = (panel * len + j) * NR;
                t.v[at..at + part.len()].copy_from_slice(part);
            }
        }
        (t.v.as_ptr(), NR, len * NR)
    };
    let probs = (p.as_ptr(), len);
    if wide {
        avx512::product(probs, (v, ldv, panel_step), (len, len, hd), (dst, ld));
    } else {
        avx2::product(probs, (v, ldv, panel_step), (len, len, hd), (dst, ld));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub(super) const MR: usize = 6;
    pub(super) const NR: usize = 16;

    /// `out[i, c] = Σ_kk a[i, kk] · b[kk, c]` for `i < mr`, `c < width`: rows `lda`, `ldb`
    /// and `ldo` apart, `b`'s rows 16 wide.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` readable for `mr` rows of `k`, `b` for `k` rows of 16, `out` writable
    /// for `mr` rows of `width`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        (a, lda): (*const f32, usize),
        (b, ldb): (*const f32, usize),
        k: usize,
        mr: usize,
        (out, ldo): (*mut f32, usize),
        width: usize,
    ) {
        debug_assert!((1..=MR).contains(&mr) && (1..=NR).contains(&width));
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // Rows past mr repeat the last real row: same loads, results never stored.
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(mr - 1) * lda));
        for kk in 0..k {
            let b0 = _mm256_loadu_ps(b.add(kk * ldb));
            let b1 = _mm256_loadu_ps(b.add(kk * ldb + 8));
            for i in 0..MR {
                let x = _mm256_broadcast_ss(&*rows[i].add(kk));
                acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
            }
        }
        for (i, v) in acc.iter().enumerate().take(mr) {
            let dst = out.add(i * ldo);
            if width == NR {
                _mm256_storeu_ps(dst, v[0]);
                _mm256_storeu_ps(dst.add(8), v[1]);
            } else {
                let mut tmp = [0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v[1]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, width);
            }
        }
    }

    /// `out[m, n] = a[m, k] · b[k, n]`, with `b` as panels of 16 columns (`ldb` between
    /// rows of a panel, `panel_step` between panels), in [`tile`]s.
    ///
    /// # Safety
    /// As [`tile`], for the whole of `a` (`m` rows), `b` and `out`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product(
        (a, lda): (*const f32, usize),
        (b, ldb, panel_step): (*const f32, usize, usize),
        (m, k, n): (usize, usize, usize),
        (out, ldo): (*mut f32, usize),
    ) {
        for panel in 0..n.div_ceil(NR) {
            let (j0, width) = (panel * NR, NR.min(n - panel * NR));
            let bp = b.add(panel * panel_step);
            for r in (0..m).step_by(MR) {
                let rows = (a.add(r * lda), lda);
                tile(
                    rows,
                    (bp, ldb),
                    k,
                    MR.min(m - r),
                    (out.add(r * ldo + j0), ldo),
                    width,
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows per tile: 8 rows × 2 registers of accumulators, 2 of the panels' rows and the
    /// row pointers fit the registers (16 rows of one register each spilled the pointers).
    const MR: usize = 8;
    const NR: usize = super::avx2::NR;

    /// [`super::avx2::product`] in 8×32 tiles: two panels side by side, a register each.
    ///
    /// # Safety
    /// AVX-512 F; `a` readable for `m` rows of `k`, every panel of `b` for `k` rows of 16,
    /// `out` writable for `m` rows of `n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        (a, lda): (*const f32, usize),
        (b, ldb, panel_step): (*const f32, usize, usize),
        (m, k, n): (usize, usize, usize),
        (out, ldo): (*mut f32, usize),
    ) {
        let panels = n.div_ceil(NR);
        for pair in (0..panels).step_by(2) {
            let (j0, width) = (pair * NR, (2 * NR).min(n - pair * NR));
            let b0 = b.add(pair * panel_step);
            // A lone last panel reads itself twice; its second half is never stored.
            let b1 = if pair + 1 < panels {
                b0.add(panel_step)
            } else {
                b0
            };
            for r in (0..m).step_by(MR) {
                let rows = (a.add(r * lda), lda);
                let dst = (out.add(r * ldo + j0), ldo);
                tile(rows, (b0, b1, ldb), k, MR.min(m - r), dst, width);
            }
        }
    }

    /// `out[i, c] = Σ_kk a[i, kk] · b[kk, c]` for `i < mr`, `c < width` (≤ 32), columns
    /// 0..16 from panel `b0` and 16..32 from `b1`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(
        (a, lda): (*const f32, usize),
        (b0, b1, ldb): (*const f32, *const f32, usize),
        k: usize,
        mr: usize,
        (out, ldo): (*mut f32, usize),
        width: usize,
    ) {
        debug_assert!((1..=MR).contains(&mr) && (1..=2 * NR).contains(&width));
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        // Rows past mr repeat the last real row: same loads, results never stored.
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(mr - 1) * lda));
        for kk in 0..k {
            let v0 = _mm512_loadu_ps(b0.add(kk * ldb));
            let v1 = _mm512_loadu_ps(b1.add(kk * ldb));
            for i in 0..MR {
                let x = _mm512_set1_ps(*rows[i].add(kk));
                acc[i][0] = _mm512_fmadd_ps(x, v0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(x, v1, acc[i][1]);
            }
        }
        let masks = crate::math::avx512::width_masks(width);
        for (i, v) in acc.iter().enumerate().take(mr) {
            _mm512_mask_storeu_ps(out.add(i * ldo), masks[0], v[0]);
            // Past the buffer where width ≤ 16: then the mask is empty, which stores nothing
            // and cannot fault.
            _mm512_mask_storeu_ps(out.wrapping_add(i * ldo + NR), masks[1], v[1]);
        }
    }
}

/// The backward pass of [`packed_attention_train`]: from the gradient of its output `dout`
/// (`[tokens, hidden]`), the `qkv` and `probs` of the forward pass, writes the gradient of
/// `qkv` into `dqkv` (`[tokens, 3·hidden]`, every value overwritten). Per (sequence, head),
/// with `P = softmax(scale · Q Kᵀ)` and `O = P V`:
/// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = scale · dS K`,
/// `dK = scale · dSᵀ Q`.
pub fn packed_attention_backward(
    qkv: &[f32],
    probs: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    dout: &[f32],
    dqkv: &mut [f32],
) {
    assert_eq!(
        dqkv.len(),
        qkv.len(),
        "attention backward: dqkv and qkv differ"
    );
    assert_eq!(
        probs.len(),
        probs_len(offsets, heads),
        "attention backward: probs does not hold heads · Σ len² values"
    );
    let Some(Geometry { hidden, hd, tasks }) = geometry(qkv.len(), offsets, heads, dout.len())
    else {
        return;
    };
    let stride = 3 * hidden;
    let dst = SharedMut(dqkv.as_mut_ptr());
    tasks
        .into_par_iter()
        .for_each_init(Vec::new, |ds: &mut Vec<f32>, (s, h, at)| {
            let start = offsets[s];
            let len = offsets[s + 1] - start;
            let p = &probs[at..at + len * len];
            ds.resize(len * len, 0.0);
            let [q, k, v] = head_qkv(qkv, start, hidden, h * hd);
            let d_o = &dout[start * hidden + h * hd..];
            let base = start * stride + h * hd;
            // SAFETY: reads stay inside qkv, dout and p as in `attend`; this task alone writes
            // rows start..start+len of its head's Q, K and V columns of dqkv.
            unsafe {
                // dP = dO · Vᵀ
                strided_product(
                    (len, len, hd),
                    (ds.as_mut_ptr(), len),
                    false,
                    (d_o.as_ptr(), hidden, 1),
                    (v.as_ptr(), 1, stride),
                    gemm::Parallelism::None,
                );
            }
            for (dr, pr) in ds.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
                let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (d, &pv) in dr.iter_mut().zip(pr) {
                    *d = pv * (*d - dot) * scale;
                }
            }
            // SAFETY: as above; the three products write this task's rows of dV, dQ and dK.
            unsafe {
                // dV = Pᵀ · dO
                strided_product(
                    (len, hd, len),
                    (dst.get().add(base + 2 * hidden), stride),
                    false,
                    (p.as_ptr(), 1, len),
                    (d_o.as_ptr(), hidden, 1),
                    gemm::Parallelism::None,
                );
                // dQ = dS · K (scale already in dS)
                strided_product(
                    (len, hd, len),
                    (dst.get().add(base), stride),
                    false,
                    (ds.as_ptr(), len, 1),
                    (k.as_ptr(), stride, 1),
                    gemm::Parallelism::None,
                );
                // dK = dSᵀ · Q
                strided_product(
                    (len, hd, len),
                    (dst.get().add(base + hidden), stride),
                    false,
                    (ds.as_ptr(), 1, len),
                    (q.as_ptr(), stride, 1),
                    gemm::Parallelism::None,
                );
            }
        });
}
