//! Softmax attention over packed sequences: the tokens of every sequence of a batch sit one
//! after another in a `[tokens, 3·hidden]` matrix (the fused Q, K, V projection), and
//! `offsets` says where each sequence starts and ends. Each (sequence, head) pair is one task:
//! scores `Q Kᵀ` into a scratch matrix, softmax by row, then `P V` straight into that head's
//! columns of the output. Q, K and V are read in place through strides, no padding is ever
//! computed, and no mask is needed because a sequence only sees its own rows. Training keeps
//! the probabilities ([`packed_attention_train`]) for the backward pass
//! ([`packed_attention_backward`]), which walks the same tasks.

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
    attend(isa, qkv, offsets, heads, scale, out, None);
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
    attend(isa, qkv, offsets, heads, scale, out, Some(probs));
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

fn attend(
    isa: Isa,
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    scale: f32,
    out: &mut [f32],
    probs: Option<&mut [f32]>,
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
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, (s, h, at)| {
            let start = offsets[s];
            let len = offsets[s + 1] - start;
            let p: &mut [f32] = match keep {
                // SAFETY: each task owns probs[at..at + len²] (`geometry` lays them end to end).
                Some(k) => unsafe { std::slice::from_raw_parts_mut(k.get().add(at), len * len) },
                None => {
                    scratch.resize(len * len, 0.0);
                    scratch
                }
            };
            let [q, k, v] = head_qkv(qkv, start, hidden, h * hd);
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
