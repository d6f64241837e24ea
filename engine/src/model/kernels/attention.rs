//! Bidirectional multi-head attention on the CPU, from the fused Q/K/V projection, with
//! rotary positions applied inside and a hand-written backward for training ([`QkvAttention`];
//! inference calls [`attend`] directly).
//!
//! candle's path (split Q/K/V into heads, two rotations, `q k^T`, a softmax over a
//! `[B, H, N, N]` tensor, `weights v`, a transpose) writes and reads the whole score tensor
//! three times and starts threads for every small product; its backward adds each split's
//! gradient into a zeroed copy of the full projection. Here each (batch, head) pair is one task
//! that gathers and rotates its queries and keys, keeps its score matrix in cache, and writes
//! its result straight into the `[B, N, H * hd]` layout the output projection reads. The
//! backward keeps nothing but the projection: it recomputes each pair's probabilities in cache
//! (as FlashAttention does), runs the five products of the attention gradient there, rotates
//! the query and key gradients back and writes all three into the projection's gradient.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, fast_exp};

/// The sizes of one attention call: examples, frames, model width, heads.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    pub batch: usize,
    pub frames: usize,
    pub d_model: usize,
    pub n_heads: usize,
}

impl AttentionDims {
    fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// Attention over `qkv` `[B, N, 3 d]` (queries, keys, values side by side, heads within each)
/// with rotary tables `cos`, `sin` `[>= N, head_dim / 2]` -> `[B, N, d]`. `apply_op3` keeps the
/// backward (the gradient of `qkv`), `apply_op3_no_bwd` does not.
pub struct QkvAttention {
    pub n_heads: usize,
}

impl QkvAttention {
    fn dims(&self, qkv: &Layout, cos: &Layout) -> Result<AttentionDims> {
        let (batch, frames, width) = qkv.shape().dims3()?;
        let d_model = width / 3;
        let heads = self.n_heads.max(1);
        let (positions, half) = cos.shape().dims2()?;
        if width % 3 != 0 || d_model % heads != 0 || 2 * half != d_model / heads {
            bail!(
                "qkv-attention: {width} columns do not split into 3 x {heads} heads of {}",
                2 * half
            );
        }
        if positions < frames {
            bail!("qkv-attention: rotary tables of {positions} positions for {frames} frames");
        }
        Ok(AttentionDims {
            batch,
            frames,
            d_model,
            n_heads: heads,
        })
    }
}

impl CustomOp3 for QkvAttention {
    fn name(&self) -> &'static str {
        "qkv-attention"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_l: &Layout,
        cos: &CpuStorage,
        cos_l: &Layout,
        sin: &CpuStorage,
        sin_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = self.dims(qkv_l, cos_l)?;
        let (qkv, cos, sin) = (
            contiguous_f32(qkv, qkv_l, name)?,
            contiguous_f32(cos, cos_l, name)?,
            contiguous_f32(sin, sin_l, name)?,
        );
        let mut out = vec![0f32; dims.batch * dims.frames * dims.d_model];
        attend(qkv, dims, cos, sin, &mut out);
        Ok((
            CpuStorage::F32(out),
            (dims.batch, dims.frames, dims.d_model).into(),
        ))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(qkv.layout(), cos.layout())?;
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let d_qkv = backward(
            &host(qkv)?,
            &host(&grad_res.contiguous()?)?,
            dims,
            (&host(cos)?, &host(sin)?),
        );
        let d_qkv = Tensor::from_vec(d_qkv, qkv.shape(), qkv.device())?;
        Ok((Some(d_qkv), None, None))
    }
}

/// Writes the rotated queries (`which` 0) or keys (1) of (example, head) into `dst` `[N, hd]`:
/// the GPT-NeoX half split, `x1 cos - x2 sin`, `x1 sin + x2 cos` (candle `rope`'s products).
fn gather_rotated(
    qkv: &[f32],
    dims: AttentionDims,
    (cos, sin): (&[f32], &[f32]),
    which: usize,
    task: (usize, usize),
    dst: &mut [f32],
) {
    let (d, hd) = (dims.d_model, dims.head_dim());
    let half = hd / 2;
    let base = task.0 * dims.frames * 3 * d + which * d + task.1 * hd;
    for (pos, dst) in dst.chunks_exact_mut(hd).enumerate() {
        let (x1, x2) = qkv[base + pos * 3 * d..][..hd].split_at(half);
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        let (y1, y2) = dst.split_at_mut(half);
        for i in 0..half {
            y1[i] = x1[i] * c[i] - x2[i] * s[i];
            y2[i] = x1[i] * s[i] + x2[i] * c[i];
        }
    }
}

/// Attention of every (example, head) pair of `qkv` `[B, N, 3d]` into `out` `[B, N, d]`.
pub fn attend(qkv: &[f32], dims: AttentionDims, cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let (n, d, h) = (dims.frames, dims.d_model, dims.n_heads);
    let hd = dims.head_dim();
    let scale = 1.0 / (hd as f32).sqrt();
    let out = SendPtr(out.as_mut_ptr());
    (0..dims.batch * h).into_par_iter().for_each_init(
        || (vec![0f32; n * n], vec![0f32; n * hd], vec![0f32; n * hd]),
        |(scores, q, k), task| {
            let (example, head) = (task / h, task % h);
            gather_rotated(qkv, dims, (cos, sin), 0, (example, head), q);
            gather_rotated(qkv, dims, (cos, sin), 1, (example, head), k);
            probabilities(q, k, n, hd, scale, scores);
            let v = &qkv[example * n * 3 * d + 2 * d + head * hd..];
            let dst = out;
            // Safety: `v`'s rows are 3d apart and its last row ends inside `qkv`; each task
            // writes a disjoint column block (head) of its example's frames in `out`.
            unsafe {
                gemm::gemm(
                    n,
                    hd,
                    n,
                    dst.get().add(example * n * d + head * hd),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    (3 * d) as isize,
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
}

/// Scores `scale q k^T` of one (batch, head) pair `[n x d]` each into `scores` `[n x n]`,
/// then a softmax per row.
fn probabilities(qs: &[f32], ks: &[f32], n: usize, d: usize, scale: f32, scores: &mut [f32]) {
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

/// The gradient of [`attend`] with respect to `qkv` `[B, N, 3d]` for the output gradient
/// `dout` `[B, N, d]`. Per (example, head) pair, with P the probabilities and dO that pair's
/// output gradient: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)),
/// dQ = scale dS K, dK = scale dS^T Q; dQ and dK are then rotated back (the transpose of a
/// rotation is the rotation by the opposite angle).
fn backward(
    qkv: &[f32],
    dout: &[f32],
    dims: AttentionDims,
    (cos, sin): (&[f32], &[f32]),
) -> Vec<f32> {
    let (n, d, h) = (dims.frames, dims.d_model, dims.n_heads);
    let hd = dims.head_dim();
    let half = hd / 2;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut d_qkv = vec![0f32; qkv.len()];
    let d_qkv_ptr = SendPtr(d_qkv.as_mut_ptr());
    (0..dims.batch * h).into_par_iter().for_each_init(
        || (vec![0f32; 2 * n * n], vec![0f32; 6 * n * hd]),
        |(square, blocks), task| {
            let (example, head) = (task / h, task % h);
            let (p, dp) = square.split_at_mut(n * n);
            let (qs, rest) = blocks.split_at_mut(n * hd);
            let (ks, rest) = rest.split_at_mut(n * hd);
            let (vs, rest) = rest.split_at_mut(n * hd);
            let (dq, rest) = rest.split_at_mut(n * hd);
            let (dk, dv) = rest.split_at_mut(n * hd);
            gather_rotated(qkv, dims, (cos, sin), 0, (example, head), qs);
            gather_rotated(qkv, dims, (cos, sin), 1, (example, head), ks);
            let v_base = example * n * 3 * d + 2 * d + head * hd;
            for (pos, row) in vs.chunks_exact_mut(hd).enumerate() {
                row.copy_from_slice(&qkv[v_base + pos * 3 * d..][..hd]);
            }
            probabilities(qs, ks, n, hd, scale, p);
            let p = &*p;
            // This pair's dO: rows of example, the columns of head.
            let d_o = &dout[example * n * d + head * hd..];
            let ld_o = d as isize;
            let (ni, di) = (n as isize, hd as isize);
            // Safety (every call): the strides address inside the n x hd blocks, the
            // n x n buffers and the example's rows of `dout` (the last row ends at
            // (n - 1) * d + hd <= its length from this offset).
            unsafe {
                // dV = P^T dO: rows j, P^T(j, i) = p[i n + j].
                product(n, hd, n, dv, hd, (p, 1, ni), (d_o, ld_o, 1), 1.0);
                // dP = dO V^T: V^T(c, j) = v[j hd + c].
                product(n, n, hd, dp, n, (d_o, ld_o, 1), (vs, 1, di), 1.0);
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
                product(n, hd, n, dq, hd, (ds, ni, 1), (ks, di, 1), scale);
                // dK = scale dS^T Q: dS^T(j, i) = dp[i n + j].
                product(n, hd, n, dk, hd, (ds, 1, ni), (qs, di, 1), scale);
            }
            let dst = d_qkv_ptr;
            for pos in 0..n {
                let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
                let row = example * n * 3 * d + pos * 3 * d + head * hd;
                // Safety: each task writes only its head's columns of its example's rows.
                let out = |which: usize| unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add(row + which * d), hd)
                };
                for (which, grad) in [(0, &*dq), (1, &*dk)] {
                    let (g, out) = (&grad[pos * hd..][..hd], out(which));
                    for i in 0..half {
                        let (g1, g2) = (g[i], g[i + half]);
                        out[i] = g1 * c[i] + g2 * s[i];
                        out[i + half] = g2 * c[i] - g1 * s[i];
                    }
                }
                out(2).copy_from_slice(&dv[pos * hd..][..hd]);
            }
        },
    );
    d_qkv
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
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}
