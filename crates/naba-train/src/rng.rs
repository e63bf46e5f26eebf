//! A small seeded generator (SplitMix64) for shuffling, dropout masks and head initialisation,
//! so that a seed fixes every random choice of a run, whatever candle's own generator does.

use naba_eval::SplitMix64;

/// naba-eval's SplitMix64 with the conveniences training needs. `below` keeps its own
/// (rejection-free) mapping: the committed models' dev splits and batch orders depend on it.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: SplitMix64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            inner: SplitMix64::new(seed),
        }
    }

    /// A generator for one purpose at one point of a run (`stream`, `index`), independent of
    /// how many numbers other purposes drew: what makes resume exact.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let mut r = Self::new(
            seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// An inverted-dropout mask of `n` values: `1 / keep` where the next 32-bit draw is at most
    /// `keep · u32::MAX`, else 0; the draws are those `n` calls of [`Rng::next_u32`] would make,
    /// in order, made on all threads at once.
    pub fn dropout_mask(&mut self, n: usize, keep: f64) -> Vec<f32> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 15;
        let scale = (1.0 / keep) as f32;
        let threshold = (keep * f64::from(u32::MAX)) as u32;
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            let mut g = self.inner.clone();
            g.skip((i * CHUNK) as u64);
            for v in c {
                if ((g.next_u64() >> 32) as u32) <= threshold {
                    *v = scale;
                }
            }
        });
        self.inner.skip(n as u64);
        mask
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn dropout_mask_is_the_sequential_draws() {
        for n in [0usize, 1, 7, (1 << 15) + 3, 3 * (1 << 15)] {
            let (mut a, mut b) = (Rng::new(9), Rng::new(9));
            let keep = 0.9;
            let threshold = (keep * f64::from(u32::MAX)) as u32;
            let want: Vec<f32> = (0..n)
                .map(|_| {
                    if b.next_u32() <= threshold {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(a.dropout_mask(n, keep), want, "n = {n}");
            // Both generators stand at the same point afterwards.
            assert_eq!(a.next_u64(), b.next_u64(), "n = {n}");
        }
    }
}
