//! The transformer's block stack for inference on the CPU, on plain f32 slices.
//!
//! Through candle a guided iteration (3 rows x 500 frames at d_model 256) ran at about half the
//! matmul rate: every op allocates and zero-fills its output (a page-faulting `mmap` for the
//! large ones), splitting Q/K/V into heads and rotating them costs three strided copies and
//! two passes, and element-wise ops of 64k values or more wake candle's own thread pool, whose
//! spinning worker competes with rayon's for the two cores. Here one [`Workspace`] holds every
//! activation and is reused across iterations, each projection is one GEMM into it, rotary
//! positions are applied while a head's queries and keys are gathered for its attention task,
//! and each residual add is fused with the RMSNorm that follows it.
//!
//! The arithmetic is the same as the candle path's, operation for operation (the same GEMM
//! calls, RMSNorm's sequential sum of squares, the rotation's products in the same order, the
//! SwiGLU activation with libm's `exp`), so a seed gives the same stem either way (the test
//! in `model/transformer.rs` compares the two bit for bit).

use rayon::prelude::*;

use super::attention::{attend, AttentionDims};
use super::silu_gate::silu_gate_row;

/// One block's weights, each contiguous: `[d]` norms, `[out, in]` projections.
pub struct BlockWeights<'a> {
    pub attn_norm: &'a [f32],
    pub qkv: &'a [f32],
    pub out: &'a [f32],
    pub mlp_norm: &'a [f32],
    pub gate_up: &'a [f32],
    pub down: &'a [f32],
}

/// The sizes of one forward.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub rows: usize,
    pub frames: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub ffn: usize,
}

impl Dims {
    fn tokens(&self) -> usize {
        self.rows * self.frames
    }
}

/// Every activation of one forward; kept by the model between iterations so that the
/// sampler's loop allocates nothing large. Buffers only grow: the sampler alternates between
/// three guidance rows and one.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Residual stream `[T, d]`.
    stream: Vec<f32>,
    /// Normalised stream `[T, d]`.
    normed: Vec<f32>,
    /// Q/K/V projections `[T, 3d]`.
    qkv: Vec<f32>,
    /// Attention output, heads side by side `[T, d]`.
    mixed: Vec<f32>,
    /// Each projection back into the stream `[T, d]`.
    projected: Vec<f32>,
    /// Gate and up projections `[T, 2 ffn]`.
    gate_up: Vec<f32>,
    /// SwiGLU activation `[T, ffn]`.
    activated: Vec<f32>,
}

/// The first `len` values of `buffer`, grown with zeros if it is shorter.
fn fitted(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Runs `input` `[rows, frames, d]` through the blocks and the final RMSNorm and returns the
/// normalised hidden states `[rows, frames, d]`. `cos`, `sin` are the rotary tables
/// `[>= frames, head_dim / 2]`.
#[allow(clippy::too_many_arguments)]
pub fn hidden(
    workspace: &mut Workspace,
    dims: Dims,
    input: &[f32],
    blocks: &[BlockWeights],
    final_norm: &[f32],
    (cos, sin): (&[f32], &[f32]),
    eps: f32,
    threads: usize,
) -> Vec<f32> {
    let (t, d, f) = (dims.tokens(), dims.d_model, dims.ffn);
    let stream = fitted(&mut workspace.stream, t * d);
    let normed = fitted(&mut workspace.normed, t * d);
    let qkv = fitted(&mut workspace.qkv, t * 3 * d);
    let mixed = fitted(&mut workspace.mixed, t * d);
    let projected = fitted(&mut workspace.projected, t * d);
    let gate_up = fitted(&mut workspace.gate_up, t * 2 * f);
    let activated = fitted(&mut workspace.activated, t * f);
    stream.copy_from_slice(input);
    let first_norm = blocks.first().map_or(final_norm, |b| b.attn_norm);
    add_and_norm(stream, None, first_norm, eps, normed);
    let heads = AttentionDims {
        batch: dims.rows,
        frames: dims.frames,
        d_model: d,
        n_heads: dims.n_heads,
    };
    for (i, block) in blocks.iter().enumerate() {
        linear(normed, block.qkv, t, d, 3 * d, qkv, threads);
        attend(qkv, heads, cos, sin, mixed);
        linear(mixed, block.out, t, d, d, projected, threads);
        add_and_norm(stream, Some(projected), block.mlp_norm, eps, normed);
        linear(normed, block.gate_up, t, d, 2 * f, gate_up, threads);
        gate_up
            .par_chunks(2 * f)
            .zip(activated.par_chunks_mut(f))
            .for_each(|(row, out)| silu_gate_row(row, out));
        linear(activated, block.down, t, f, d, projected, threads);
        let next_norm = blocks.get(i + 1).map_or(final_norm, |b| b.attn_norm);
        add_and_norm(stream, Some(projected), next_norm, eps, normed);
    }
    normed.to_vec()
}

/// `dst [m x n] = src [m x k] weight^T` for `weight` `[n x k]`: the GEMM call candle makes for
/// `src.matmul(weight.t())`.
pub(super) fn linear(
    src: &[f32],
    weight: &[f32],
    m: usize,
    k: usize,
    n: usize,
    dst: &mut [f32],
    threads: usize,
) {
    assert!(src.len() >= m * k && weight.len() >= n * k && dst.len() >= m * n);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Safety: the asserts above bound every index the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            src.as_ptr(),
            1,
            k as isize,
            weight.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `stream += delta` (when given), then `normed = rms_norm(stream) * weight`, row by row:
/// the sum of squares in sequence and `x / rms * w`, as candle's RMSNorm kernel computes them.
fn add_and_norm(
    stream: &mut [f32],
    delta: Option<&[f32]>,
    weight: &[f32],
    eps: f32,
    normed: &mut [f32],
) {
    let d = weight.len();
    let norm_row = |x: &[f32], out: &mut [f32]| {
        let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
        let rms = (sum2 / d as f32 + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = v / rms * w;
        }
    };
    match delta {
        Some(delta) => stream
            .par_chunks_mut(d)
            .zip(delta.par_chunks(d))
            .zip(normed.par_chunks_mut(d))
            .for_each(|((x, dx), out)| {
                x.iter_mut().zip(dx).for_each(|(x, &dx)| *x += dx);
                norm_row(x, out);
            }),
        None => stream
            .par_chunks(d)
            .zip(normed.par_chunks_mut(d))
            .for_each(|(x, out)| norm_row(x, out)),
    }
}
