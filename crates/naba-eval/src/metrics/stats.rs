//! Percentiles and run statistics (throughput and latency).

use crate::error::{EvalError, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `q`-th percentile (0–100) of already **sorted** values, with linear interpolation
/// between the two nearest ranks (numpy's default `method="linear"`). 0 for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let pos = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// Latency percentiles in milliseconds, from per-document timings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
    /// Slowest document.
    pub max: f64,
}

/// Throughput and latency of a run, from timings measured by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Documents (examples or sentences) processed.
    pub documents: usize,
    /// Tokens processed, as counted by the caller (words for CoNLL data, model tokens
    /// otherwise — the caller says which).
    pub tokens: u64,
    /// Elapsed wall-clock seconds for the whole run.
    pub wall_seconds: f64,
    /// `documents / wall_seconds` (0 when no time elapsed).
    pub documents_per_second: f64,
    /// `tokens / wall_seconds` (0 when no time elapsed).
    pub tokens_per_second: f64,
    /// Per-document latency in milliseconds (percentiles with linear interpolation).
    pub latency_ms: LatencySummary,
}

impl RunStats {
    /// Build run statistics from one duration per document, the number of tokens processed,
    /// and the wall-clock time of the whole run (`None`: the sum of the per-document times,
    /// right for a sequential run; pass the real wall time when documents were batched or
    /// run in parallel). For a batch, pass the batch time divided by its size for each of its
    /// documents.
    ///
    /// # Errors
    /// When `per_document` is empty.
    pub fn from_timings(
        per_document: &[Duration],
        tokens: u64,
        wall: Option<Duration>,
    ) -> Result<RunStats> {
        if per_document.is_empty() {
            return Err(EvalError::Empty(
                "no per-document timings were given for the run statistics".into(),
            ));
        }
        let mut ms: Vec<f64> = per_document
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let wall_seconds =
            wall.map_or_else(|| ms.iter().sum::<f64>() / 1000.0, |w| w.as_secs_f64());
        let per_second = |x: f64| {
            if wall_seconds > 0.0 {
                x / wall_seconds
            } else {
                0.0
            }
        };
        Ok(RunStats {
            documents: per_document.len(),
            tokens,
            wall_seconds,
            documents_per_second: per_second(per_document.len() as f64),
            tokens_per_second: per_second(tokens as f64),
            latency_ms: LatencySummary {
                p50: percentile(&ms, 50.0),
                p90: percentile(&ms, 90.0),
                p99: percentile(&ms, 99.0),
                mean: ms.iter().sum::<f64>() / ms.len() as f64,
                max: ms.last().copied().unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&x, 50.0), 2.5);
        assert!((percentile(&x, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&x, 0.0), 1.0);
        assert_eq!(percentile(&x, 100.0), 4.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn run_stats() {
        let t: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = RunStats::from_timings(&t, 1000, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(s.documents_per_second, 50.0);
        assert_eq!(s.tokens_per_second, 500.0);
        assert!((s.latency_ms.p50 - 50.5).abs() < 1e-9);
        assert!((s.latency_ms.p99 - 99.01).abs() < 1e-9);
        assert!((s.latency_ms.max - 100.0).abs() < 1e-9);
        let s = RunStats::from_timings(&t, 0, None).unwrap();
        assert!((s.wall_seconds - 5.05).abs() < 1e-9);
        assert!(RunStats::from_timings(&[], 0, None).is_err());
    }
}
