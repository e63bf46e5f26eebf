//! AdamW with decoupled weight decay (the update `candle_nn::AdamW` performs), kept here so its
//! moments can be saved and restored for an exact resume, with per-parameter learning rates
//! (head, each encoder layer) and a linear warm-up/decay schedule. The update itself is
//! naba-kernels' one-pass `adamw`, bit for bit the tensor-op formula it replaced.

use crate::view::View;
use anyhow::Result;
use candle_core::{Tensor, Var};
use naba_kernels::optim::{adamw, AdamWStep};
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
            let wd = if s.decay { lr * c.weight_decay } else { 0.0 };
            let step = AdamWStep {
                beta1: c.beta1 as f32,
                one_minus_beta1: (1.0 - c.beta1) as f32,
                beta2: c.beta2 as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                scale_m: scale_m as f32,
                scale_v: scale_v as f32,
                eps: c.eps as f32,
                decay: (1.0 - wd) as f32,
                lr: lr as f32,
            };
            let n = s.m.elem_count();
            let (mut theta, mut m, mut v) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            {
                let g = g.contiguous()?;
                let views = (
                    View::new(s.var.as_tensor())?,
                    View::new(&s.m)?,
                    View::new(&s.v)?,
                    View::new(&g)?,
                );
                adamw(
                    (views.0.get(), views.1.get(), views.2.get(), views.3.get()),
                    (&mut theta, &mut m, &mut v),
                    step,
                );
            }
            let (shape, dev) = (s.m.shape().clone(), s.m.device().clone());
            s.var.set(&Tensor::from_vec(theta, shape.clone(), &dev)?)?;
            s.m = Tensor::from_vec(m, shape.clone(), &dev)?;
            s.v = Tensor::from_vec(v, shape, &dev)?;
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

    /// The update as candle tensor ops, as this optimiser computed it before the fused kernel.
    fn tensor_op_update(
        theta: &Tensor,
        m: &Tensor,
        v: &Tensor,
        g: &Tensor,
        (c, t, lr, decay): (AdamWConfig, i32, f64, bool),
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let scale_m = 1.0 / (1.0 - c.beta1.powi(t));
        let scale_v = 1.0 / (1.0 - c.beta2.powi(t));
        let m = ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
        let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
        let adjusted = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + c.eps)?)?;
        let wd = if decay { lr * c.weight_decay } else { 0.0 };
        let theta = ((theta * (1.0 - wd))? - (adjusted * lr)?)?;
        Ok((theta, m, v))
    }

    #[test]
    fn fused_update_is_the_tensor_op_update_bit_for_bit() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let c = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut rng = crate::rng::Rng::new(5);
        for (n, decay) in [(1usize, true), (37, false), (70_001, true)] {
            let w0: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let var = Var::from_tensor(&Tensor::from_vec(w0.clone(), n, &dev)?)?;
            let mut ours = AdamW::new(vec![("w".into(), var.clone(), 3e-4, decay)], c)?;
            let (mut theta, mut m, mut v) = (
                Tensor::from_vec(w0, n, &dev)?,
                Tensor::zeros(n, candle_core::DType::F32, &dev)?,
                Tensor::zeros(n, candle_core::DType::F32, &dev)?,
            );
            for t in 1..=3 {
                let g: Vec<f32> = (0..n).map(|_| rng.normal() * 0.1).collect();
                let g = Tensor::from_vec(g, n, &dev)?;
                let factor = 0.5 + 0.25 * f64::from(t);
                let mut grads = HashMap::new();
                grads.insert("w".to_string(), g.clone());
                ours.apply(&grads, factor)?;
                (theta, m, v) = tensor_op_update(&theta, &m, &v, &g, (c, t, 3e-4 * factor, decay))?;
                let bits = |t: &Tensor| -> Result<Vec<u32>> {
                    Ok(t.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
                };
                assert_eq!(
                    bits(var.as_tensor())?,
                    bits(&theta)?,
                    "theta, n {n}, step {t}"
                );
                assert_eq!(bits(&ours.slots[0].m)?, bits(&m)?, "m, n {n}, step {t}");
                assert_eq!(bits(&ours.slots[0].v)?, bits(&v)?, "v, n {n}, step {t}");
            }
        }
        Ok(())
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
