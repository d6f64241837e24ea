//! Rotary position embedding (GPT-NeoX half-split layout) with a backward, for training on the
//! CPU. candle's `rope` kernel has no backward; built from primitives (narrow, four products,
//! a difference, a sum, a concatenation) it costs single-threaded passes over every query and
//! key. The backward of a rotation is the rotation by the opposite angle: the same op with
//! `-sin`. Other devices keep the primitives.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::contiguous_f32;

/// Rotates `xs` `[B, H, N, head_dim]` by position with `cos`, `sin` `[N, head_dim / 2]`.
pub fn rotate(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 {
        return xs
            .contiguous()?
            .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rotate);
    }
    let half = xs.dim(D::Minus1)? / 2;
    let x1 = xs.narrow(D::Minus1, 0, half)?;
    let x2 = xs.narrow(D::Minus1, half, half)?;
    let rotated1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let rotated2 = (x1.broadcast_mul(sin)? + x2.broadcast_mul(cos)?)?;
    Tensor::cat(&[rotated1, rotated2], D::Minus1)
}

struct Rotate;

impl CustomOp3 for Rotate {
    fn name(&self) -> &'static str {
        "rotary-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        cos: &CpuStorage,
        cl: &Layout,
        sin: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims();
        let (frames, width) = match dims {
            [_, _, n, w] => (*n, *w),
            _ => bail!("rotary: expected [B, H, N, head_dim], got {dims:?}"),
        };
        let half = width / 2;
        if width % 2 != 0 || cl.shape().dims() != [frames, half] || sl.shape() != cl.shape() {
            bail!("rotary: tables {:?} do not fit {dims:?}", cl.shape());
        }
        let (x, cos, sin) = (
            contiguous_f32(x, xl, self.name())?,
            contiguous_f32(cos, cl, self.name())?,
            contiguous_f32(sin, sl, self.name())?,
        );
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * frames)
            .zip(x.par_chunks(width * frames))
            .for_each(|(o, xs)| {
                for n in 0..frames {
                    let (c, s) = (&cos[n * half..][..half], &sin[n * half..][..half]);
                    let row = &xs[n * width..][..width];
                    let (o1, o2) = o[n * width..][..width].split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (row[i], row[half + i]);
                        o1[i] = a * c[i] - b * s[i];
                        o2[i] = a * s[i] + b * c[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = grad
            .contiguous()?
            .apply_op3_no_bwd(cos, &sin.neg()?, &Rotate)?;
        Ok((Some(back), None, None))
    }
}
