//! A linear layer as PyTorch stores it (`y = x Wᵀ + b`, `W` of `[out, in]`) with its bias and,
//! optionally, GELU fused: the bias is written into the output before the product accumulates
//! onto it, and GELU runs over the output in blocks while they are still warm in cache.

use crate::{math, Isa};
use rayon::prelude::*;

/// What runs on the product after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// GELU, erf form.
    Gelu,
}

/// Products smaller than this many multiply-adds run on one thread: splitting them costs more
/// than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]`, then the epilogue. All row-major.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    epilogue: Epilogue,
) {
    assert_eq!(x.len(), m * k, "linear: x is not [{m}, {k}]");
    assert_eq!(w.len(), n * k, "linear: w is not [{n}, {k}]");
    assert_eq!(out.len(), m * n, "linear: out is not [{m}, {n}]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [{n}]");
    }
    if m == 0 || n == 0 {
        return;
    }
    match bias {
        Some(b) => out
            .chunks_exact_mut(n)
            .for_each(|row| row.copy_from_slice(b)),
        None => out.fill(0.0),
    }
    if k > 0 {
        accumulate_product(x, w, out, m, k, n);
    }
    if epilogue == Epilogue::Gelu {
        let block = m.div_ceil(crate::threads() * 4).max(1) * n;
        out.par_chunks_mut(block)
            .for_each(|b| math::gelu_inplace(isa, b));
    }
}

/// `out[m, n] (=|+=) op(a) · op(b)` for row-major slices, where `op(a)` is `a` (`[m, k]`) or,
/// with `a_t`, the transpose of `a` stored as `[k, m]`; likewise `op(b)` is `b` (`[k, n]`) or
/// the transpose of `b` stored as `[n, k]`. The backward pass of a linear layer is two of
/// these: `dx = dy · W` and `dW = dyᵀ · x`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert_eq!(a.len(), m * k, "matmul: a does not hold {m}×{k} values");
    assert_eq!(b.len(), k * n, "matmul: b does not hold {k}×{n} values");
    assert_eq!(out.len(), m * n, "matmul: out is not [{m}, {n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    // SAFETY: the asserts above size every slice to its shape; the strides reach element (r, c)
    // of op(a) at r·a_rs + c·a_cs < m·k, and likewise for op(b) and out.
    unsafe {
        strided_product(
            (m, n, k),
            (out.as_mut_ptr(), n),
            accumulate,
            (a.as_ptr(), a_rs, a_cs),
            (b.as_ptr(), b_rs, b_cs),
            parallelism(m * n * k),
        )
    }
}

fn parallelism(macs: usize) -> gemm::Parallelism {
    if macs >= PARALLEL_MIN_MACS && crate::threads() > 1 {
        gemm::Parallelism::Rayon(crate::threads())
    } else {
        gemm::Parallelism::None
    }
}

/// `out[m, n] += a[m, k] · b[n, k]ᵀ` over row-major slices, by the `gemm` crate.
fn accumulate_product(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() >= m * k && b.len() >= n * k && out.len() >= m * n);
    // SAFETY: the assert above keeps every index the strides reach inside its slice: out is
    // m×n (row stride n), a is m×k (row stride k), and b is read as the k×n matrix bᵀ
    // (element (r, c) at c·k + r).
    unsafe {
        strided_product(
            (m, n, k),
            (out.as_mut_ptr(), n),
            true,
            (a.as_ptr(), k, 1),
            (b.as_ptr(), 1, k),
            parallelism(m * n * k),
        )
    }
}

/// `dst (+)= lhs · rhs` through the `gemm` crate for matrices laid out by strides: `dst` is
/// row-major with the given row stride (columns contiguous), `lhs` and `rhs` each have a row
/// and a column stride, so a transposed or interleaved operand (K of a fused QKV matrix) is
/// read in place.
///
/// # Safety
/// Every element the shapes and strides reach must lie inside the buffers, and nothing else
/// may write the `dst` elements during the call.
pub(crate) unsafe fn strided_product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}
