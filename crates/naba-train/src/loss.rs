//! Cross-entropy over labelled positions, with per-label weights and label smoothing.

use crate::data::IGNORE;
use anyhow::Result;
use candle_core::{Tensor, D};

/// Mean weighted cross-entropy of `logits` (`[n, labels]`) against `targets` (`IGNORE` rows
/// skipped); `None` when no row has a label. With smoothing `e`, each row's loss is
/// `(1 - e) * nll + e * mean(-log p)`.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &[i64],
    label_weights: &[f64],
    smoothing: f64,
) -> Result<Option<Tensor>> {
    let device = logits.device();
    let rows: Vec<u32> = (0..targets.len())
        .filter(|&i| targets[i] != IGNORE)
        .map(|i| i as u32)
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let tgt: Vec<u32> = rows.iter().map(|&i| targets[i as usize] as u32).collect();
    let w: Vec<f32> = tgt
        .iter()
        .map(|&t| label_weights.get(t as usize).copied().unwrap_or(1.0) as f32)
        .collect();
    let w_sum: f64 = w.iter().map(|&x| f64::from(x)).sum();
    let m = rows.len();
    let idx = Tensor::from_vec(rows, m, device)?;
    let sel = logits.index_select(&idx, 0)?;
    let lp = candle_nn::ops::log_softmax(&sel, D::Minus1)?;
    let tgt = Tensor::from_vec(tgt, (m, 1), device)?;
    let nll = lp.gather(&tgt, 1)?.squeeze(1)?.neg()?;
    let per = if smoothing > 0.0 {
        let smooth = lp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - smoothing))? + (smooth * smoothing)?)?
    } else {
        nll
    };
    let w = Tensor::from_vec(w, m, device)?;
    Ok(Some(((per * w)?.sum_all()? / w_sum)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_value() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let logits = Tensor::new(&[[0f32, 0.0], [1.0, 3.0], [5.0, 5.0]], &dev)?;
        let l = cross_entropy(&logits, &[0, 1, IGNORE], &[1.0, 1.0], 0.0)?.unwrap();
        let want = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((f64::from(l.to_scalar::<f32>()?) - want).abs() < 1e-6);
        assert!(cross_entropy(&logits, &[IGNORE; 3], &[1.0, 1.0], 0.0)?.is_none());
        Ok(())
    }
}
