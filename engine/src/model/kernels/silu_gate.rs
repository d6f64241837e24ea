//! The SwiGLU activation on the CPU, with a backward for training.
//!
//! candle's path (two `narrow`s, `silu`, a product) runs single-threaded, strided passes, and
//! its backward is a dozen more over the `[B, N, 2H]` activations (the `narrow`s' gradients
//! are zero-filled full-width tensors, then added): per layer about as much time as the
//! MLP's matmuls. Here the forward is one parallel pass and the backward one more.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// `silu(gate) * up` of one row `[gate | up]` into `out` (half the row's width).
pub fn silu_gate_row(row: &[f32], out: &mut [f32]) {
    let (gate, up) = row.split_at(out.len());
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `silu(gate) * up` for `[..., 2H]` = `[gate | up]` rows -> `[..., H]`, in one parallel pass.
/// candle's element-wise ops run on one thread and `narrow` makes them strided; on a 2-core
/// CPU this activation cost about as much as a matmul of the MLP. `apply_op1` keeps the
/// backward, `apply_op1_no_bwd` does not.
pub struct SiluGate;

impl CustomOp1 for SiluGate {
    fn name(&self) -> &'static str {
        "silu-gate"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let width = *dims.last().unwrap_or(&0);
        if !width.is_multiple_of(2) {
            bail!("silu-gate needs an even last dimension, got {width}");
        }
        let hidden = width / 2;
        let mut out = vec![0f32; src.len() / 2];
        out.par_chunks_mut(hidden.max(1))
            .zip(src.par_chunks(width.max(1)))
            .for_each(|(o, row)| silu_gate_row(row, o));
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = hidden;
        }
        Ok((CpuStorage::F32(out), shape.into()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &SiluGateGrad)?;
        Ok(Some(grad))
    }
}

/// `([gate | up], dy) -> [dy u silu'(g) | dy silu(g)]`, with silu'(g) = s (1 + g (1 - s)) and
/// s the logistic sigmoid of g.
struct SiluGateGrad;

impl CustomOp2 for SiluGateGrad {
    fn name(&self) -> &'static str {
        "silu-gate-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let dy = contiguous_f32(dy, dy_layout, self.name())?;
        let width = *x_layout.shape().dims().last().unwrap_or(&0);
        let hidden = width / 2;
        if dy.len() * 2 != x.len() || dy_layout.shape().dims().last() != Some(&hidden) {
            bail!("{}: the gradient does not fit the input", self.name());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width.max(1))
            .zip(x.par_chunks(width.max(1)).zip(dy.par_chunks(hidden.max(1))))
            .for_each(|(o, (row, dy))| {
                let (gate, up) = row.split_at(hidden);
                let (d_gate, d_up) = o.split_at_mut(hidden);
                for i in 0..hidden {
                    let (g, u) = (gate[i], up[i]);
                    let s = 1.0 / (1.0 + (-g).exp());
                    d_gate[i] = dy[i] * u * s * (1.0 + g * (1.0 - s));
                    d_up[i] = dy[i] * g * s;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}
