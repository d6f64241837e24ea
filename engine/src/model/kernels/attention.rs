//! Bidirectional multi-head attention for inference on the CPU.
//!
//! candle's path (`q k^T`, a softmax over a `[B, H, N, N]` tensor, `weights v`, a transpose)
//! writes and reads the whole score tensor three times and starts threads for every small
//! product. Here each (batch, head) pair is one task whose score matrix stays in cache, and the
//! result lands in the `[B, N, H * hd]` layout the output projection reads.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::{contiguous_f32, fast_exp};

/// Bidirectional attention for contiguous f32 `q, k, v` `[B, H, N, hd]` -> `[B, N, H * hd]`,
/// one (batch, head) pair per task: each task's score matrix stays in cache, every product is
/// single-threaded (no per-call thread start-up on small matrices) and the result is written
/// straight into the layout the output projection reads. Inference only (no backward).
pub struct CpuAttention {
    /// Multiplies the scores before the softmax (1 / sqrt(head_dim)).
    pub scale: f32,
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_l: &Layout,
        k: &CpuStorage,
        k_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (q, k, v) = (
            contiguous_f32(q, q_l, name)?,
            contiguous_f32(k, k_l, name)?,
            contiguous_f32(v, v_l, name)?,
        );
        let (b, h, n, d) = q_l.shape().dims4()?;
        if k_l.shape() != q_l.shape() || v_l.shape() != q_l.shape() {
            bail!("cpu-attention: q, k and v shapes differ");
        }
        let mut out = vec![0f32; b * n * h * d];
        let out_ptr = SendPtr(out.as_mut_ptr());
        // One score buffer per worker, not per task: gemm overwrites it (no read of dst).
        (0..b * h).into_par_iter().for_each_init(
            || vec![0f32; n * n],
            |scores, bh| {
                let (bi, hi) = (bh / h, bh % h);
                let base = bh * n * d;
                let (qs, ks, vs) = (
                    &q[base..base + n * d],
                    &k[base..base + n * d],
                    &v[base..base + n * d],
                );
                // Safety: all strides address inside the slices above; each task writes a
                // disjoint column block (head hi) of batch bi's rows in `out`.
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        qs.as_ptr(),
                        1,
                        d as isize,
                        ks.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        self.scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for row in scores.chunks_exact_mut(n) {
                    fast_exp::softmax_in_place(row);
                }
                let dst = out_ptr;
                unsafe {
                    gemm::gemm(
                        n,
                        d,
                        n,
                        dst.get().add(bi * n * h * d + hi * d),
                        1,
                        (h * d) as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        vs.as_ptr(),
                        1,
                        d as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        Ok((CpuStorage::F32(out), (b, n, h * d).into()))
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}
