//! Percentile bootstrap confidence intervals, resampling documents (examples or sentences).
//!
//! Each resample draws as many documents as there are, uniformly with replacement, from a
//! [`SplitMix64`] stream started at the seed, recomputes every figure on the resample exactly as
//! on the full data (so a label absent from a resample is left out of that resample's macro
//! average, as scikit-learn and seqeval would do on it), and the interval is the 2.5th and
//! 97.5th percentiles of the resampled values (linear interpolation, numpy's default).

use crate::metrics::percentile;
use crate::sample::SplitMix64;
use serde::{Deserialize, Serialize};

/// The number of resamples used unless told otherwise.
pub const DEFAULT_RESAMPLES: usize = 1000;
/// The seed used unless told otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// A 95% interval `[lo, hi]`.
pub type Ci95 = [f64; 2];

/// How to bootstrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (default 1000). 0 turns intervals off (`ci95` is then `null`).
    pub resamples: usize,
    /// Seed of the resampling (default 42). The same seed and data give the same intervals.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_SEED,
        }
    }
}

/// Bootstrap intervals for several figures at once.
///
/// `statistic` receives one weight per document (how many times the resample drew it) and
/// returns the figures for that resample, always the same number of them. The result has one
/// interval per figure; it is empty when `resamples` or `documents` is 0.
pub fn bootstrap_ci<F>(documents: usize, config: &BootstrapConfig, mut statistic: F) -> Vec<Ci95>
where
    F: FnMut(&[u32]) -> Vec<f64>,
{
    if config.resamples == 0 || documents == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut weights = vec![0u32; documents];
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for _ in 0..config.resamples {
        weights.iter_mut().for_each(|w| *w = 0);
        for _ in 0..documents {
            weights[rng.below(documents)] += 1;
        }
        let values = statistic(&weights);
        if columns.is_empty() {
            columns = values
                .iter()
                .map(|_| Vec::with_capacity(config.resamples))
                .collect();
        }
        for (col, v) in columns.iter_mut().zip(values) {
            col.push(v);
        }
    }
    columns
        .into_iter()
        .map(|mut col| {
            col.sort_by(f64::total_cmp);
            [percentile(&col, 2.5), percentile(&col, 97.5)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_a_mean_is_sane_and_seeded() {
        let data: Vec<f64> = (0..200).map(|i| f64::from(i % 2)).collect();
        let stat = |w: &[u32]| {
            let n: u32 = w.iter().sum();
            let s: f64 = w.iter().zip(&data).map(|(&w, &x)| f64::from(w) * x).sum();
            vec![s / f64::from(n)]
        };
        let cfg = BootstrapConfig::default();
        let a = bootstrap_ci(data.len(), &cfg, stat);
        let b = bootstrap_ci(data.len(), &cfg, stat);
        assert_eq!(a, b);
        let [lo, hi] = a[0];
        // standard error of a proportion 0.5 with n = 200 is ~0.035: the interval is ~±0.07
        assert!(lo < 0.5 && hi > 0.5 && lo > 0.39 && hi < 0.61, "{lo} {hi}");
        let c = bootstrap_ci(
            data.len(),
            &BootstrapConfig {
                resamples: 1000,
                seed: 7,
            },
            stat,
        );
        assert_ne!(a, c);
        assert!(bootstrap_ci(
            10,
            &BootstrapConfig {
                resamples: 0,
                seed: 1
            },
            stat
        )
        .is_empty());
    }
}
