//! Deterministic sampling (`--limit N --seed S`) and the seeded generator used for bootstrap.
//!
//! The generator is SplitMix64, written out here so that a seed gives the same sample and the
//! same confidence intervals on every platform and with every version of every dependency.

use serde::{Deserialize, Serialize};

/// SplitMix64: a small, fast, seedable generator (Steele, Lea & Flood 2014). Not for
/// cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Moves on by `n` draws without making them: the state only ever advances by a constant,
    /// so a copy moved on by `n` draws exactly what this one would after `n` draws.
    pub fn skip(&mut self, n: u64) {
        self.state = self
            .state
            .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(n));
    }

    /// A uniform integer in `0..n` (Lemire's unbiased multiply-and-reject). `n` must be > 0;
    /// for `n == 0` it returns 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Shuffle a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// How a corpus was cut down by `--limit`/`--seed`; written to metrics.json as `sample`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleInfo {
    /// The requested limit.
    pub limit: usize,
    /// The seed of the shuffle.
    pub seed: u64,
    /// How many items there were before sampling.
    pub population: usize,
    /// How many were kept (`min(limit, population)`).
    pub kept: usize,
}

/// The indices of a deterministic sample of `limit` items out of `population`: a seeded
/// shuffle of `0..population`, the first `limit` taken, then sorted so that the sample keeps
/// the original order. With `limit >= population` every index is returned.
pub fn sample_indices(population: usize, limit: usize, seed: u64) -> Vec<usize> {
    if limit >= population {
        return (0..population).collect();
    }
    let mut idx: Vec<usize> = (0..population).collect();
    SplitMix64::new(seed).shuffle(&mut idx);
    idx.truncate(limit);
    idx.sort_unstable();
    idx
}

/// Keep a deterministic sample of `limit` items (see [`sample_indices`]) in their original
/// order. `None` keeps everything.
pub fn sample_in_order<T>(items: Vec<T>, limit: Option<usize>, seed: u64) -> Vec<T> {
    let Some(limit) = limit else {
        return items;
    };
    let keep = sample_indices(items.len(), limit, seed);
    keep_positions(items, &keep)
}

/// Keeps the elements at `positions` (ascending) and drops the rest, without cloning.
pub(crate) fn keep_positions<T>(items: Vec<T>, positions: &[usize]) -> Vec<T> {
    let mut wanted = positions.iter().copied().peekable();
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            if wanted.peek() == Some(&i) {
                wanted.next();
                Some(item)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_sorted_and_sized() {
        let a = sample_indices(100, 10, 7);
        let b = sample_indices(100, 10, 7);
        let c = sample_indices(100, 10, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_indices(5, 10, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn sample_in_order_keeps_order() {
        let items: Vec<u32> = (0..50).collect();
        let s = sample_in_order(items.clone(), Some(7), 3);
        assert_eq!(s.len(), 7);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_in_order(items.clone(), None, 3), items);
    }

    #[test]
    fn below_is_in_range() {
        let mut r = SplitMix64::new(1);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[r.below(3)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }
}
