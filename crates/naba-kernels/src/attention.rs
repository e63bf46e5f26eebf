//! Softmax attention over packed sequences: the tokens of every sequence of a batch sit one
//! after another in a `[tokens, 3·hidden]` matrix (the fused Q, K, V projection), and
//! `offsets` says where each sequence starts and ends. Each (sequence, head) pair is one task:
//! scores `Q Kᵀ` into a scratch matrix, softmax by row, then `P V` straight into that head's
//! columns of the output. Q, K and V are read in place through strides, no padding is ever
//! computed, and no mask is needed because a sequence only sees its own rows.

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
    assert!(heads > 0, "attention needs at least one head");
    let tokens = offsets.last().copied().unwrap_or(0);
    if tokens == 0 {
        return;
    }
    let hidden = out.len() / tokens;
    assert_eq!(
        out.len(),
        tokens * hidden,
        "attention: out is not [tokens, hidden]"
    );
    assert_eq!(
        qkv.len(),
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
    let hd = hidden / heads;
    let stride = 3 * hidden;
    let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
        .filter(|&s| offsets[s + 1] > offsets[s])
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let dst = SharedMut(out.as_mut_ptr());
    tasks
        .into_par_iter()
        .for_each_init(Vec::new, |scratch, (s, h)| {
            let start = offsets[s];
            let len = offsets[s + 1] - start;
            scratch.resize(len * len, 0.0);
            let q = &qkv[start * stride + h * hd..];
            let k = &qkv[start * stride + hidden + h * hd..];
            let v = &qkv[start * stride + 2 * hidden + h * hd..];
            // SAFETY: Q, K and V blocks lie inside `qkv` (rows start..start+len of a [tokens,
            // 3·hidden] matrix, hd columns each); the scratch is len×len; the output block (rows
            // start..start+len, columns h·hd..h·hd+hd of [tokens, hidden]) belongs to this task
            // alone.
            unsafe {
                strided_product(
                    (len, len, hd),
                    (scratch.as_mut_ptr(), len),
                    false,
                    (q.as_ptr(), stride),
                    (k.as_ptr(), 1, stride),
                    gemm::Parallelism::None,
                );
            }
            for row in scratch.chunks_exact_mut(len) {
                math::softmax_inplace(isa, row, scale);
            }
            // SAFETY: see above.
            unsafe {
                strided_product(
                    (len, hd, len),
                    (dst.get().add(start * hidden + h * hd), hidden),
                    false,
                    (scratch.as_ptr(), len),
                    (v.as_ptr(), stride, 1),
                    gemm::Parallelism::None,
                );
            }
        });
}
