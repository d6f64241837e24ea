//! RMSNorm with a backward, for training on the CPU.
//!
//! candle's fused `rms_norm` drops gradients (ARCHITECTURE §4.1) and `rms_norm_slow`, which
//! training used instead, runs about six single-threaded element-wise passes forward and twice
//! that backward. Here the forward is one parallel pass per row, the input gradient one more
//! and the weight gradient a parallel reduction. Other devices keep `rms_norm_slow`.
//!
//! With `r = 1 / sqrt(mean(x^2) + eps)` per row of width d and `y = x r w`:
//! `dx = r (dy w) - x r^3 sum(dy w x) / d` and `dw = sum over rows of dy x r`.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension: fused with a backward on the
/// CPU (f32), candle's generic version elsewhere.
pub fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 {
        xs.contiguous()?
            .apply_op2(&weight.contiguous()?, RmsNormTrain { eps })
    } else {
        candle_nn::ops::rms_norm_slow(xs, weight, eps)
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mean = row.iter().map(|v| v * v).sum::<f32>() / row.len().max(1) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Checks that `w` has one value per column of `x` and returns the row width.
fn width(x: &Layout, w: &Layout, op: &str) -> Result<usize> {
    let d = x.shape().dims().last().copied().unwrap_or(0);
    if d == 0 || w.shape().dims() != [d] {
        bail!("{op}: weight {:?} does not match rows of {d}", w.shape());
    }
    Ok(d)
}

struct RmsNormTrain {
    eps: f32,
}

impl CustomOp2 for RmsNormTrain {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = width(xl, wl, self.name())?;
        let (x, w) = (
            contiguous_f32(x, xl, self.name())?,
            contiguous_f32(w, wl, self.name())?,
        );
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, row)| {
                let r = inv_rms(row, self.eps);
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
                    *o = v * r * w;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let eps = self.eps;
        let dx = x.apply_op3_no_bwd(w, &grad, &RmsNormGradX { eps })?;
        let dw = x.apply_op2_no_bwd(&grad, &RmsNormGradW { eps })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(x, w, dy) -> dx`.
struct RmsNormGradX {
    eps: f32,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "rms-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = width(xl, wl, self.name())?;
        if gl.shape() != xl.shape() {
            bail!("{}: gradient and input shapes differ", self.name());
        }
        let (x, w, g) = (
            contiguous_f32(x, xl, self.name())?,
            contiguous_f32(w, wl, self.name())?,
            contiguous_f32(g, gl, self.name())?,
        );
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(o, (xr, gr))| {
                let r = inv_rms(xr, self.eps);
                let dot: f32 = xr.iter().zip(gr).zip(w).map(|((x, g), w)| x * g * w).sum();
                let c = r * r * r * dot / d as f32;
                for (((o, &x), &g), &w) in o.iter_mut().zip(xr).zip(gr).zip(w) {
                    *o = r * g * w - x * c;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `(x, dy) -> dw`, summed over rows.
struct RmsNormGradW {
    eps: f32,
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "rms-norm-grad-w"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != xl.shape() {
            bail!("{}: gradient and input shapes differ", self.name());
        }
        let d = xl.shape().dims().last().copied().unwrap_or(0).max(1);
        let (x, g) = (
            contiguous_f32(x, xl, self.name())?,
            contiguous_f32(g, gl, self.name())?,
        );
        // Partial sums over fixed blocks of rows, added in block order: the same sum on any
        // number of threads, so a resumed run still trains exactly as an uninterrupted one.
        const ROWS: usize = 64;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(d * ROWS)
            .zip(g.par_chunks(d * ROWS))
            .map(|(xb, gb)| {
                let mut acc = vec![0f32; d];
                for (xr, gr) in xb.chunks(d).zip(gb.chunks(d)) {
                    let r = inv_rms(xr, self.eps);
                    for ((a, &x), &g) in acc.iter_mut().zip(xr).zip(gr) {
                        *a += g * x * r;
                    }
                }
                acc
            })
            .collect();
        let mut dw = vec![0f32; d];
        for p in &partials {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        Ok((CpuStorage::F32(dw), Shape::from(d)))
    }
}
