//! The training loss, a weighted mean cross-entropy over rows of logits, as one op with a
//! hand-written backward on the CPU.
//!
//! candle's path (log-softmax as max, subtract, exp, sum, log, subtract; a gather; a weighted
//! sum) keeps five `[M, V]` tensors for the backward (M masked frames, V = 1024 codes: 8 MB
//! each at batch 8), and its backward allocates, zeroes and adds a gradient for each. Here the
//! forward is one parallel pass per row and the backward one more: d logits = w (p - onehot).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous_f32, fast_exp};

/// sum_i w_i (-log softmax(logits_i)[label_i]) / sum_i w_i for `logits` `[M, V]`: fused with
/// a backward for f32 on the CPU, candle's generic ops elsewhere. `labels` must be below V
/// and `weights` positive (the caller checks).
pub fn weighted_cross_entropy(logits: &Tensor, labels: &[u32], weights: &[f32]) -> Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if labels.len() != rows || weights.len() != rows {
        bail!(
            "{} labels and {} weights for {rows} rows of logits",
            labels.len(),
            weights.len()
        );
    }
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    if logits.device().is_cpu() && logits.dtype() == candle_core::DType::F32 {
        let op = CrossEntropy {
            labels: labels.to_vec(),
            weights: weights.to_vec(),
            total,
        };
        return logits.contiguous()?.apply_op1(op);
    }
    let device = logits.device();
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs
        .gather(&Tensor::new(labels, device)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    (picked * Tensor::new(weights, device)?)?.sum_all()?.neg()? / total
}

struct CrossEntropy {
    labels: Vec<u32>,
    weights: Vec<f32>,
    total: f64,
}

impl CrossEntropy {
    fn check(&self, layout: &Layout) -> Result<usize> {
        let (rows, vocab) = layout.shape().dims2()?;
        if rows != self.labels.len() || self.labels.iter().any(|&l| l as usize >= vocab) {
            bail!("cross-entropy: labels do not fit logits {rows} x {vocab}");
        }
        Ok(vocab)
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = contiguous_f32(storage, layout, self.name())?;
        let vocab = self.check(layout)?;
        let sum: f64 = logits
            .par_chunks(vocab)
            .zip(self.labels.par_iter().zip(self.weights.par_iter()))
            .map_init(
                || vec![0f32; vocab],
                |scratch, (row, (&label, &weight))| {
                    scratch.copy_from_slice(row);
                    let max = fast_exp::max_of(row);
                    let z = fast_exp::exp_in_place(scratch, max, 1.0) as f64;
                    let log_sum = max as f64 + z.ln();
                    weight as f64 * (log_sum - row[label as usize] as f64)
                },
            )
            .sum();
        let loss = (sum / self.total) as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let scale = grad_res
            .to_dtype(candle_core::DType::F32)?
            .to_vec0::<f32>()? as f64;
        let grad = arg.apply_op1_no_bwd(&CrossEntropyGrad {
            loss: self,
            scale: (scale / self.total) as f32,
        })?;
        Ok(Some(grad))
    }
}

/// `scale w_i (softmax(logits_i) - onehot(label_i))` per row.
struct CrossEntropyGrad<'a> {
    loss: &'a CrossEntropy,
    scale: f32,
}

impl CustomOp1 for CrossEntropyGrad<'_> {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = contiguous_f32(storage, layout, self.name())?;
        let vocab = self.loss.check(layout)?;
        let mut out = logits.to_vec();
        out.par_chunks_mut(vocab)
            .zip(
                self.loss
                    .labels
                    .par_iter()
                    .zip(self.loss.weights.par_iter()),
            )
            .for_each(|(row, (&label, &weight))| {
                let max = fast_exp::max_of(row);
                let z = fast_exp::exp_in_place(row, max, 1.0);
                let factor = self.scale * weight;
                let per_unit = factor / z;
                row.iter_mut().for_each(|x| *x *= per_unit);
                row[label as usize] -= factor;
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}
