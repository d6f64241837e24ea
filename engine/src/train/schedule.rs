//! Learning-rate schedule and gradient clipping: candle has neither, and training diverged
//! without clipping in measurements (ARCHITECTURE §4.1).

use candle_core::backprop::GradStore;
use candle_core::{Result, Var};
use serde::{Deserialize, Serialize};

/// Linear warm-up to `peak`, a hold at `peak`, then exponential decay halving every
/// `half_life` steps (the paper's shape: warm-up, hold at 5e-4, slow exponential decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup: usize,
    pub hold: usize,
    pub half_life: usize,
}

impl LrSchedule {
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let after_hold = step.saturating_sub(self.warmup + self.hold);
        self.peak * 0.5f64.powf(after_hold as f64 / self.half_life.max(1) as f64)
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. Variables without a gradient are skipped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sum = 0.0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sum.sqrt();
    if norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
