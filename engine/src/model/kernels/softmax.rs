//! Softmax over the last dimension with a backward, for training on the CPU.
//!
//! candle's fused `softmax_last_dim` has no backward, and the generic `softmax` that training
//! used instead runs as five element-wise passes (max, subtract, exp, sum, divide), each on
//! one thread, over the attention scores `[B, H, N, N]` (8M values per layer at batch 8),
//! with as many again in its backward. Here the forward is one parallel pass per row and the
//! backward one more (`dx = y * (dy - sum(dy * y))`). Other devices keep the generic op.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::contiguous_f32;

/// Softmax over the last dimension of `xs`: fused with a backward on the CPU (f32), the
/// generic candle op elsewhere.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 {
        xs.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(xs, D::Minus1)
    }
}

fn row_width(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1).max(1)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-train"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let width = row_width(layout);
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(width)
            .zip(src.par_chunks(width))
            .for_each(|(o, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &x) in o.iter_mut().zip(row) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|o| *o *= inv);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?;
        Ok(Some(grad))
    }
}

/// `(y, dy) -> y * (dy - sum(dy * y))` per row of the last dimension.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(y, y_layout, self.name())?;
        let dy = contiguous_f32(dy, dy_layout, self.name())?;
        if y_layout.shape() != dy_layout.shape() {
            bail!("{}: shapes differ", self.name());
        }
        let width = row_width(y_layout);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(width)
            .zip(y.par_chunks(width).zip(dy.par_chunks(width)))
            .for_each(|(o, (y, dy))| {
                let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(dy) {
                    *o = y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), y_layout.shape().clone()))
    }
}
