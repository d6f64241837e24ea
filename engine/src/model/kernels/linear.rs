//! A bias-free linear layer `xs weight^T` as one op with its own backward, for training on
//! the CPU.
//!
//! Built from candle's primitives (a reshape of the input, a transposed weight, a matmul and a
//! reshape back) the backward walks four nodes, and candle accumulates every node's gradient
//! into a freshly zeroed tensor: per projection a zero fill and an add over the activations
//! for each reshape, and the weight's gradient added through a transposed (strided) view.
//! Here it is one node: the input gradient `dy weight` and the weight gradient `dy^T xs`, each
//! produced contiguous by one matmul.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::contiguous_f32;

/// `xs [..., in] weight^T` for `weight` `[out, in]`, with a backward.
pub struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (xs, w) = (
            contiguous_f32(xs, xs_l, name)?,
            contiguous_f32(w, w_l, name)?,
        );
        let (out_dim, in_dim) = w_l.shape().dims2()?;
        let dims = xs_l.shape().dims();
        if dims.last() != Some(&in_dim) {
            bail!("{name}: input {dims:?} does not end in the weight's {in_dim} columns");
        }
        let rows = xs.len() / in_dim.max(1);
        let mut out = vec![0f32; rows * out_dim];
        super::forward::linear(
            xs,
            w,
            rows,
            in_dim,
            out_dim,
            &mut out,
            candle_core::utils::get_num_threads(),
        );
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out_dim;
        }
        Ok((CpuStorage::F32(out), shape.into()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = w.dims2()?;
        let rows = xs.elem_count() / in_dim.max(1);
        let dy = grad_res.detach().contiguous()?.reshape((rows, out_dim))?;
        let d_xs = dy.matmul(&w.detach())?.reshape(xs.shape())?;
        let d_w = dy.t()?.matmul(&xs.detach().reshape((rows, in_dim))?)?;
        Ok((Some(d_xs), Some(d_w)))
    }
}
