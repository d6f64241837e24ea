//! The SwiGLU activation for inference on the CPU.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::contiguous_f32;

/// `silu(gate) * up` for `[..., 2H]` = `[gate | up]` rows -> `[..., H]`, in one parallel pass.
/// candle's element-wise ops run on one thread and `narrow` makes them strided; on a 2-core
/// CPU this activation cost about as much as a matmul of the MLP. Inference only (no backward).
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
            .for_each(|(o, row)| {
                let (gate, up) = row.split_at(hidden);
                for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            });
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = hidden;
        }
        Ok((CpuStorage::F32(out), shape.into()))
    }
}
