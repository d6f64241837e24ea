//! Bidirectional multi-head attention on the CPU ([`CpuAttention`]), with a hand-written
//! backward for training.
//!
//! candle's path (`q k^T`, a softmax over a `[B, H, N, N]` tensor, `weights v`, a transpose)
//! writes and reads the whole score tensor three times and starts threads for every small
//! product. Here each (batch, head) pair is one task whose score matrix stays in cache, and the
//! result lands in the `[B, N, H * hd]` layout the output projection reads.
//!
//! In training the generic path is worse: the backward of each of its ops allocates, zeroes
//! and adds a `[B, H, N, N]` gradient (32 MB per layer at batch 8), and the score tensors are
//! kept for the backward. This op keeps nothing but q, k and v: its backward
//! recomputes each pair's probabilities in cache (as FlashAttention does) and runs the five
//! products of the attention gradient there.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, fast_exp};

/// Bidirectional attention for contiguous f32 `q, k, v` `[B, H, N, hd]` -> `[B, N, H * hd]`,
/// one (batch, head) pair per task: each task's score matrix stays in cache, every product is
/// single-threaded (no per-call thread start-up on small matrices) and the result is written
/// straight into the layout the output projection reads. `apply_op3` keeps the backward,
/// `apply_op3_no_bwd` does not.
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
        let dims = q_l.shape().dims4()?;
        if k_l.shape() != q_l.shape() || v_l.shape() != q_l.shape() {
            bail!("{name}: q, k and v shapes differ");
        }
        let out = forward(q, k, v, dims, self.scale);
        let (b, h, n, d) = dims;
        Ok((CpuStorage::F32(out), (b, n, h * d).into()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = q.dims4()?;
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (dq, dk, dv) = backward(
            &host(q)?,
            &host(k)?,
            &host(v)?,
            &host(grad_res)?,
            dims,
            self.scale,
        );
        let tensor = |values: Vec<f32>| Tensor::from_vec(values, dims, q.device()).map(Some);
        Ok((tensor(dq)?, tensor(dk)?, tensor(dv)?))
    }
}

/// Scores `scale q k^T` of one (batch, head) pair `[n x d]` each into `scores` `[n x n]`,
/// then a softmax per row.
pub(super) fn probabilities(
    qs: &[f32],
    ks: &[f32],
    n: usize,
    d: usize,
    scale: f32,
    scores: &mut [f32],
) {
    // Safety: the strides address inside the n x d slices and the n x n buffer.
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
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for row in scores.chunks_exact_mut(n) {
        fast_exp::softmax_in_place(row);
    }
}

/// `softmax(scale q k^T) v` for contiguous `[B, H, N, hd]` q, k, v -> `[B, N, H * hd]`, one
/// (batch, head) pair per task.
fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (b, h, n, d): (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; b * n * h * d];
    let out_ptr = SendPtr(out.as_mut_ptr());
    // One score buffer per worker, not per task: gemm overwrites it (no read of dst).
    (0..b * h).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |scores, bh| {
            let (bi, hi) = (bh / h, bh % h);
            let base = bh * n * d;
            let rows = base..base + n * d;
            probabilities(&q[rows.clone()], &k[rows.clone()], n, d, scale, scores);
            let vs = &v[rows];
            let dst = out_ptr;
            // Safety: all strides address inside `scores`, `vs` and `out`; each task writes
            // a disjoint column block (head hi) of batch bi's rows in `out`.
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
    out
}

/// Gradients of [`forward`] with respect to q, k and v (each `[B, H, N, hd]`) for the output
/// gradient `dout` `[B, N, H * hd]`. Per (batch, head) pair, with P the probabilities and
/// dO that pair's output gradient: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)),
/// dQ = scale dS K, dK = scale dS^T Q.
fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    (b, h, n, d): (usize, usize, usize, usize),
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let size = b * h * n * d;
    let (mut dq, mut dk, mut dv) = (vec![0f32; size], vec![0f32; size], vec![0f32; size]);
    dq.par_chunks_mut(n * d)
        .zip(dk.par_chunks_mut(n * d))
        .zip(dv.par_chunks_mut(n * d))
        .enumerate()
        .for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |buffers, (bh, ((dq, dk), dv))| {
                let (p, dp) = (&mut buffers.0[..], &mut buffers.1[..]);
                let (bi, hi) = (bh / h, bh % h);
                let rows = bh * n * d..(bh + 1) * n * d;
                let (qs, ks, vs) = (&q[rows.clone()], &k[rows.clone()], &v[rows]);
                probabilities(qs, ks, n, d, scale, p);
                let p = &*p;
                // This pair's dO: rows of batch bi, the columns of head hi.
                let d_o = &dout[bi * n * h * d + hi * d..];
                let ld_o = (h * d) as isize;
                let (ni, di) = (n as isize, d as isize);
                // Safety (every call): the strides address inside the n x d blocks, the
                // n x n buffers and batch bi's rows of `dout` (the last row ends at
                // (n - 1) * h * d + d <= its length from this offset).
                unsafe {
                    // dV = P^T dO: rows j, P^T(j, i) = p[i n + j].
                    product(n, d, n, dv, d, (p, 1, ni), (d_o, ld_o, 1), 1.0);
                    // dP = dO V^T: V^T(c, j) = v[j d + c].
                    product(n, n, d, dp, n, (d_o, ld_o, 1), (vs, 1, di), 1.0);
                }
                for (p_row, dp_row) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
                    let dot: f32 = p_row.iter().zip(dp_row.iter()).map(|(a, b)| a * b).sum();
                    for (g, &p) in dp_row.iter_mut().zip(p_row) {
                        *g = p * (*g - dot);
                    }
                }
                unsafe {
                    // dQ = scale dS K.
                    let ds = &*dp;
                    product(n, d, n, dq, d, (ds, ni, 1), (ks, di, 1), scale);
                    // dK = scale dS^T Q: dS^T(j, i) = dp[i n + j].
                    product(n, d, n, dk, d, (ds, 1, ni), (qs, di, 1), scale);
                }
            },
        );
    (dq, dk, dv)
}

/// `dst [m x cols] (row stride ld) = alpha lhs [m x inner] rhs [inner x cols]`, single-threaded;
/// each operand as (values, row stride, column stride).
///
/// Safety: every strided index must fall inside the operand's slice.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    cols: usize,
    inner: usize,
    dst: &mut [f32],
    ld: usize,
    (lhs, lhs_rs, lhs_cs): (&[f32], isize, isize),
    (rhs, rhs_rs, rhs_cs): (&[f32], isize, isize),
    alpha: f32,
) {
    gemm::gemm(
        m,
        cols,
        inner,
        dst.as_mut_ptr(),
        1,
        ld as isize,
        false,
        lhs.as_ptr(),
        lhs_cs,
        lhs_rs,
        rhs.as_ptr(),
        rhs_cs,
        rhs_rs,
        0.0,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    pub(super) fn get(&self) -> *mut f32 {
        self.0
    }
}
