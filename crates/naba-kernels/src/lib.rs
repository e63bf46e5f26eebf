//! The CPU kernels beneath naba's encoder, kept apart from the model code the way candle keeps
//! candle-core apart from candle-transformers: each kernel is a small function over `f32`
//! slices with one job, a plain portable version, and an AVX2+FMA version chosen at run time
//! ([`isa`]), with AVX-512 versions where 16 lanes pay; matrix products also run in int8 with
//! AVX2, AVX-VNNI, AVX512-VNNI or AMX tiles ([`int8`], [`amx`]) or in bf16 with f32 sums on
//! AVX512-BF16 or AMX ([`bf16`]), chosen by [`Precision`]; [`ops`] wraps them as candle custom
//! ops so the encoder still reads as a model.
//!
//! What is here and why: candle runs bias, GELU, residual add, layer norm and softmax as
//! separate passes over memory, materialises attention per head after transposes, and pads
//! every batch to its longest row. Here a linear layer fuses bias and GELU into its product,
//! residual add fuses into layer norm, and attention works on *packed* sequences (all tokens of
//! a batch in one `[tokens, hidden]` matrix, sequence boundaries given as offsets), reading Q, K
//! and V in place from the fused QKV product, so no work goes to padding.
//!
//! This crate knows nothing of models, checkpoints or tokenizers.

pub mod amx;
pub mod attention;
pub mod bf16;
pub mod int8;
pub mod isa;
pub mod linear;
pub mod math;
pub mod norm;
pub mod ops;
pub mod optim;
pub mod packed;

pub use isa::{Isa, Precision};

/// The threads kernels split work over: rayon's current pool (set by `naba --threads`).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Rows of activations a product kernel takes at a time, a multiple of its tile's `mr`: about
/// `budget` bytes of them (so a block stays in cache while every weight panel passes over
/// it; 32 KB to 512 KB were measured, 48-64 KB was best), at most 240, and at least four blocks
/// a thread, so a single request (a few hundred rows) is not split 4:3 between two threads.
pub(crate) fn row_block(m: usize, row_bytes: usize, budget: usize, mr: usize) -> usize {
    let rows = (budget / row_bytes.max(1)).clamp(mr, 240) / mr * mr;
    rows.min(m.div_ceil(4 * threads()).div_ceil(mr) * mr)
        .max(mr)
}
