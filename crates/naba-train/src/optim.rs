//! AdamW with decoupled weight decay (the update `candle_nn::AdamW` performs), kept here so its
//! moments can be saved and restored for an exact resume, with per-parameter learning rates
//! (head, each encoder layer) and a linear warm-up/decay schedule.

use anyhow::Result;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters of the update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// One trainable tensor and its moments.
pub struct Slot {
    pub name: String,
    pub var: Var,
    pub m: Tensor,
    pub v: Tensor,
    /// This parameter's learning rate at the schedule's peak.
    pub peak_lr: f64,
    pub decay: bool,
}

pub struct AdamW {
    pub slots: Vec<Slot>,
    pub config: AdamWConfig,
    /// Optimiser steps taken so far.
    pub step: usize,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var, f64, bool)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var, peak_lr, decay)| {
                Ok(Slot {
                    m: var.as_tensor().zeros_like()?,
                    v: var.as_tensor().zeros_like()?,
                    name,
                    var,
                    peak_lr,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// One update with gradients by slot name, at `factor` of each peak learning rate.
    pub fn apply(&mut self, grads: &HashMap<String, Tensor>, factor: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let scale_m = 1.0 / (1.0 - c.beta1.powi(t));
        let scale_v = 1.0 / (1.0 - c.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.name) else {
                continue;
            };
            let lr = s.peak_lr * factor;
            let m = ((&s.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let adjusted = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + c.eps)?)?;
            let wd = if s.decay { lr * c.weight_decay } else { 0.0 };
            let theta = ((s.var.as_tensor() * (1.0 - wd))? - (adjusted * lr)?)?;
            s.var.set(&theta)?;
            s.m = m;
            s.v = v;
        }
        Ok(())
    }
}

/// Linear warm-up from 0 over `warmup` steps, then linear decay to 0 at `total`.
pub fn schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let rest = total.saturating_sub(warmup).max(1);
    (total.saturating_sub(step) as f64 / rest as f64).clamp(0.0, 1.0)
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.values() {
        sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_and_decays() {
        assert!((schedule(0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((schedule(55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(schedule(100, 10, 100), 0.0);
    }

    #[test]
    fn matches_candle_adamw() -> Result<()> {
        use candle_nn::Optimizer;
        let dev = candle_core::Device::Cpu;
        let w0 = Tensor::new(&[1f32, -2.0, 3.0], &dev)?;
        let a = Var::from_tensor(&w0)?;
        let b = Var::from_tensor(&w0)?;
        let p = candle_nn::ParamsAdamW {
            lr: 0.01,
            ..Default::default()
        };
        let mut theirs = candle_nn::AdamW::new(vec![a.clone()], p.clone())?;
        let mut ours = AdamW::new(
            vec![("w".into(), b.clone(), 0.01, true)],
            AdamWConfig {
                beta1: p.beta1,
                beta2: p.beta2,
                eps: p.eps,
                weight_decay: p.weight_decay,
            },
        )?;
        for _ in 0..3 {
            let loss = a.as_tensor().sqr()?.sum_all()?;
            theirs.backward_step(&loss)?;
            let loss = b.as_tensor().sqr()?.sum_all()?;
            let g = loss.backward()?;
            let mut grads = HashMap::new();
            grads.insert("w".to_string(), g.get(b.as_tensor()).cloned().unwrap());
            ours.apply(&grads, 1.0)?;
        }
        let d = (a.as_tensor() - b.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-7, "{d}");
        Ok(())
    }
}
