//! Reading a tensor's `f32` values in place: the fast training engine and the optimiser walk
//! tens of megabytes of weights every step, and `to_vec1` would copy each of them first.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

/// A tensor's `f32` values without a copy, while the guard lives.
pub(crate) struct View<G> {
    guard: G,
    range: (usize, usize),
}

type Storage = candle_core::Storage;

impl<G: std::ops::Deref<Target = Storage>> View<G> {
    pub(crate) fn get(&self) -> &[f32] {
        match &*self.guard {
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
                &v[self.range.0..self.range.1]
            }
            // `View::new` admits nothing else.
            _ => &[],
        }
    }
}

impl View<()> {
    #[allow(clippy::new_ret_no_self)]
    pub(crate) fn new(t: &Tensor) -> Result<View<impl std::ops::Deref<Target = Storage> + '_>> {
        let (guard, layout) = t.storage_and_layout();
        let range = layout
            .contiguous_offsets()
            .context("the fast training engine needs contiguous weights")?;
        if !matches!(
            &*guard,
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(_))
        ) {
            bail!("the fast training engine needs f32 weights on the CPU");
        }
        Ok(View { guard, range })
    }
}
