//! The direct convolution kernels: stride-1 convolutions with few inputs per output,
//! computed from the input rows in registers with AVX-512 or AVX2 + FMA (each variant next to
//! the other), and [`kernel_isa`], which says which of them this CPU runs. Kept apart because
//! they are written in intrinsics for particular CPUs and tested against the definition
//! variant by variant, while the drivers in [`super::conv`] only choose among them.

use super::elementwise::elu_scalar;
use super::taps::Taps;

/// Largest `c_in * kernel` that [`direct_kernel`] takes: its inner loop reads the weights of
/// 8 output channels and a 48-frame window of every input row, which must stay in L1 cache.
const DIRECT_MAX_DEPTH: usize = 768;

/// A convolution kernel working on the input rows directly (see [`direct_conv_avx512`]).
type DirectConv = unsafe fn(&Taps, &[f32], usize, usize, usize, DirectOut);

/// Where the direct kernel writes: `c_out` rows of `n` samples, `stride` apart, optionally
/// plus a residual (same layout) and through ELU; so a residual unit's convolutions write
/// their activated hidden state and the unit's output without extra passes.
#[derive(Clone, Copy)]
pub(crate) struct DirectOut {
    pub(super) ptr: *mut f32,
    pub(super) stride: usize,
    /// Added to the convolution (before `elu`), `(pointer, row stride)`.
    pub(super) residual: Option<(*const f32, usize)>,
    pub(super) elu: bool,
}

impl DirectOut {
    /// Plain `[c_out][n]` rows of `out`.
    pub(super) fn rows(out: &mut [f32], n: usize) -> Self {
        DirectOut {
            ptr: out.as_mut_ptr(),
            stride: n,
            residual: None,
            elu: false,
        }
    }
}

/// The direct kernel for a stride-1 convolution with few inputs per output (EnCodec's
/// residual units at the full and quarter rates), when this CPU runs it.
///
/// There an im2col copy and GEMM's packing move several times more bytes than the product
/// needs (its inner dimension is only 32-384), and the residual units ran at about 40% of
/// the matmul rate. The direct kernel reads each input window once per 8 output channels
/// straight from L1.
pub(super) fn direct_kernel(taps: &Taps, c_in: usize) -> Option<DirectConv> {
    let fits = taps.stride == 1
        && taps.bias.len().is_multiple_of(DIRECT_ROWS)
        && c_in * taps.kernel <= DIRECT_MAX_DEPTH;
    #[cfg(target_arch = "x86_64")]
    if fits && avx512_enabled() {
        return Some(direct_conv_avx512);
    }
    #[cfg(target_arch = "x86_64")]
    if taps.stride == 1
        && c_in * taps.kernel <= AVX2_DIRECT_MAX_DEPTH
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        return Some(direct_conv_avx2);
    }
    let _ = fits;
    None
}

/// Whether the AVX-512 kernels may run: the CPU has AVX-512F and `STEMGEN_MAX_ISA=avx2` does
/// not cap them (read once), so that the AVX2 kernels can be tested and timed on any x86 CPU
/// (the counterpart of PyTorch's `ATEN_CPU_CAPABILITY` / oneDNN's `DNNL_MAX_CPU_ISA`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let capped = std::env::var("STEMGEN_MAX_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("avx2"));
        !capped && is_x86_feature_detected!("avx512f")
    })
}

/// The widest instruction set the hand-written kernels use on this CPU.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_enabled() {
            return "avx512f";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "generic"
}

/// A row stride of at least `len` floats that is an odd number of 64-byte cache lines.
///
/// The direct kernels read a few lines of every input row per block. Rows a power-of-two
/// number of lines apart (a 4096-frame tile is 16 KB) all fall into the same few sets of the
/// 8-way L1 cache and evict each other; an odd line count spreads them over all 64 sets.
pub(super) fn row_stride(len: usize) -> usize {
    let lines = len.div_ceil(16);
    16 * (lines | 1)
}

/// Output channels per block of the direct kernel.
const DIRECT_ROWS: usize = 8;

/// `out[co][t] = bias[co] + sum_(ci, k) W[co][ci][k] xin[ci][t + k * dilation]` for a stride-1
/// convolution, `xin` `[c_in][in_len]`, written as `out` says (residual added, ELU).
///
/// Blocks of 8 output channels x 48 frames are held in 24 AVX-512 accumulators; each input
/// vector loaded feeds 8 FMAs with broadcast weights, read along the rows of the original
/// `[C_out][C_in][K]` layout (8 sequential streams), so the weights need no packing.
///
/// # Safety
/// The CPU must have AVX-512F; `xin` must hold `c_in * in_len` samples with
/// `in_len >= n + (kernel - 1) * dilation`, and `out` (and its residual) `c_out` rows of `n`
/// samples at its stride, not overlapping `xin`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn direct_conv_avx512(
    taps: &Taps,
    xin: &[f32],
    c_in: usize,
    in_len: usize,
    n: usize,
    out: DirectOut,
) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    const VECTORS: usize = 3;
    const BLOCK: usize = LANES * VECTORS;
    let (kernel, dilation, c_out) = (taps.kernel, taps.dilation, taps.bias.len());
    let depth = c_in * kernel;
    assert!(in_len >= n + (kernel - 1) * dilation);
    assert!(xin.len() >= c_in * in_len && taps.weight.len() >= c_out * depth);
    let (xp, wp) = (xin.as_ptr(), taps.weight.as_ptr());
    let lane_mask = |from: usize| -> __mmask16 {
        let left = n.saturating_sub(from).min(LANES);
        ((1u32 << left) - 1) as __mmask16
    };
    for t0 in (0..n).step_by(BLOCK) {
        let masks: [__mmask16; VECTORS] = std::array::from_fn(|v| lane_mask(t0 + v * LANES));
        for co0 in (0..c_out).step_by(DIRECT_ROWS) {
            let mut acc: [[__m512; VECTORS]; DIRECT_ROWS] = std::array::from_fn(|r| {
                let b = _mm512_set1_ps(taps.bias[co0 + r]);
                match out.residual {
                    Some((res, stride)) => std::array::from_fn(|v| {
                        let at = res.add((co0 + r) * stride + t0 + v * LANES);
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), b)
                    }),
                    None => [b; VECTORS],
                }
            });
            let w_rows: [*const f32; DIRECT_ROWS] =
                std::array::from_fn(|r| wp.add((co0 + r) * depth));
            for ci in 0..c_in {
                let x_row = xp.add(ci * in_len + t0);
                for k in 0..kernel {
                    let x_at = x_row.add(k * dilation);
                    let xv: [__m512; VECTORS] = std::array::from_fn(|v| {
                        _mm512_maskz_loadu_ps(masks[v], x_at.add(v * LANES))
                    });
                    let tap = ci * kernel + k;
                    for r in 0..DIRECT_ROWS {
                        let w = _mm512_set1_ps(*w_rows[r].add(tap));
                        for v in 0..VECTORS {
                            acc[r][v] = _mm512_fmadd_ps(xv[v], w, acc[r][v]);
                        }
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let o = out.ptr.add((co0 + r) * out.stride + t0);
                for v in 0..VECTORS {
                    _mm512_mask_storeu_ps(o.add(v * LANES), masks[v], row[v]);
                }
            }
        }
        if out.elu {
            // The block is still in L1; the activation vectorises with AVX-512 here.
            let len = BLOCK.min(n - t0);
            for co in 0..c_out {
                let row = std::slice::from_raw_parts_mut(out.ptr.add(co * out.stride + t0), len);
                for v in row.iter_mut() {
                    *v = elu_scalar(*v);
                }
            }
        }
    }
}

/// The AVX2 + FMA counterpart of [`direct_conv_avx512`]: blocks of up to 6 output channels x
/// 16 frames held in 12 of the 16 ymm registers (two more hold the input vectors and one the
/// broadcast weight), so each FMA's 4-cycle latency is covered by 12 independent chains.
///
/// Deep convolutions are cut like a GEMM: the taps into chunks of [`AVX2_DEPTH_CHUNK`] and
/// the output channels into groups of [`AVX2_ROW_GROUP`], so that a group's weights for a
/// chunk stay in L2 while the 16-frame input window of the chunk stays in L1 across the
/// group; partial sums go through `out`.
///
/// # Safety
/// As [`direct_conv_avx512`], with AVX2 and FMA instead of AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_conv_avx2(
    taps: &Taps,
    xin: &[f32],
    c_in: usize,
    in_len: usize,
    n: usize,
    out: DirectOut,
) {
    let (kernel, dilation, c_out) = (taps.kernel, taps.dilation, taps.bias.len());
    assert!(in_len >= n + (kernel - 1) * dilation);
    assert!(xin.len() >= c_in * in_len && taps.weight.len() >= c_out * c_in * kernel);
    let chunk_rows = (AVX2_DEPTH_CHUNK / kernel).max(1);
    for ci0 in (0..c_in).step_by(chunk_rows) {
        let inputs = ci0..(ci0 + chunk_rows).min(c_in);
        let last = inputs.end == c_in;
        for co_lo in (0..c_out).step_by(AVX2_ROW_GROUP) {
            let co_hi = (co_lo + AVX2_ROW_GROUP).min(c_out);
            for t0 in (0..n).step_by(AVX2_BLOCK) {
                let frames = AVX2_BLOCK.min(n - t0);
                let mut co0 = co_lo;
                while co0 < co_hi {
                    let rows = match co_hi - co0 {
                        left if left >= 6 => 6,
                        left if left >= 4 => 4,
                        left if left >= 2 => 2,
                        _ => 1,
                    };
                    let at = (co0, t0, frames);
                    let x = (xin, in_len, inputs.clone());
                    match (rows, frames == AVX2_BLOCK) {
                        (6, true) => direct_block_avx2::<6, false>(taps, x, at, out),
                        (6, false) => direct_block_avx2::<6, true>(taps, x, at, out),
                        (4, true) => direct_block_avx2::<4, false>(taps, x, at, out),
                        (4, false) => direct_block_avx2::<4, true>(taps, x, at, out),
                        (2, true) => direct_block_avx2::<2, false>(taps, x, at, out),
                        (2, false) => direct_block_avx2::<2, true>(taps, x, at, out),
                        (_, true) => direct_block_avx2::<1, false>(taps, x, at, out),
                        (_, false) => direct_block_avx2::<1, true>(taps, x, at, out),
                    }
                    co0 += rows;
                }
                if last && out.elu {
                    // The block is still in L1; the activation vectorises with AVX2 here.
                    for co in co_lo..co_hi {
                        let at = out.ptr.add(co * out.stride + t0);
                        for v in std::slice::from_raw_parts_mut(at, frames) {
                            *v = elu_scalar(*v);
                        }
                    }
                }
            }
        }
    }
}

/// The deepest convolution (`c_in * kernel`) [`direct_conv_avx2`] takes: at 768 (EnCodec's
/// 256-channel residual unit) GEMM was faster on both a Zen 3 and a Zen 5 core.
const AVX2_DIRECT_MAX_DEPTH: usize = 384;
/// Frames per block of [`direct_conv_avx2`]: two ymm vectors.
const AVX2_BLOCK: usize = 16;
/// Taps (`c_in * kernel`) per pass of [`direct_conv_avx2`]: a 16-frame window of that many
/// input rows (two cache lines each) fits L1 beside the weights being streamed.
const AVX2_DEPTH_CHUNK: usize = 192;
/// Output channels per group of [`direct_conv_avx2`]: their weights for one chunk of taps
/// (`128 * 192 * 4` = 96 KB) stay in L2.
const AVX2_ROW_GROUP: usize = 128;

/// One block of [`direct_conv_avx2`]: output channels `co0..co0 + ROWS`, frames
/// `t0..t0 + frames`, the taps of input rows `inputs`, added to what `out` holds unless the
/// chunk is the first (which starts from the bias and residual). `PARTIAL` blocks
/// (`frames < 16`, the end of a tile) use masked loads and stores so that nothing past the
/// rows is touched.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn direct_block_avx2<const ROWS: usize, const PARTIAL: bool>(
    taps: &Taps,
    (xin, in_len, inputs): (&[f32], usize, std::ops::Range<usize>),
    (co0, t0, frames): (usize, usize, usize),
    out: DirectOut,
) {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    let (kernel, dilation) = (taps.kernel, taps.dilation);
    let depth = taps.weight.len() / taps.bias.len();
    let lane_mask = |v: usize| -> __m256i {
        let left = frames.saturating_sub(v * LANES).min(LANES) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(left),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    };
    let masks = [lane_mask(0), lane_mask(1)];
    let load = |p: *const f32, v: usize| -> __m256 {
        if PARTIAL {
            _mm256_maskload_ps(p.add(v * LANES), masks[v])
        } else {
            _mm256_loadu_ps(p.add(v * LANES))
        }
    };
    let out_row = |r: usize| out.ptr.add((co0 + r) * out.stride + t0);
    let mut acc: [[__m256; 2]; ROWS] = std::array::from_fn(|r| {
        if inputs.start > 0 {
            return [load(out_row(r), 0), load(out_row(r), 1)];
        }
        let b = _mm256_set1_ps(taps.bias[co0 + r]);
        match out.residual {
            Some((res, stride)) => {
                let at = res.add((co0 + r) * stride + t0);
                [_mm256_add_ps(load(at, 0), b), _mm256_add_ps(load(at, 1), b)]
            }
            None => [b; 2],
        }
    });
    let w_rows: [*const f32; ROWS] =
        std::array::from_fn(|r| taps.weight.as_ptr().add((co0 + r) * depth));
    // Taps outer, input rows inner: the inner loop runs over the whole chunk (kernels are
    // only 1-3 taps long), stepping one pointer by a row and the weight index by `kernel`.
    for k in 0..kernel {
        let xp = xin.as_ptr().add(t0 + k * dilation);
        for ci in inputs.clone() {
            let x_at = xp.add(ci * in_len);
            let (x0, x1) = (load(x_at, 0), load(x_at, 1));
            let tap = ci * kernel + k;
            for r in 0..ROWS {
                let w = _mm256_broadcast_ss(&*w_rows[r].add(tap));
                acc[r][0] = _mm256_fmadd_ps(x0, w, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x1, w, acc[r][1]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, value) in row.iter().enumerate() {
            if PARTIAL {
                _mm256_maskstore_ps(out_row(r).add(v * LANES), masks[v], *value);
            } else {
                _mm256_storeu_ps(out_row(r).add(v * LANES), *value);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::tests::{conv_by_definition, noise};
    use super::*;

    /// Every direct kernel this CPU runs (AVX-512 only where its shape fits), called on its
    /// own, so that the AVX2 one is checked on AVX-512 machines too.
    fn direct_kernels_on_this_cpu(c_out: usize, depth: usize) -> Vec<(&'static str, DirectConv)> {
        let mut kernels: Vec<(&'static str, DirectConv)> = Vec::new();
        if is_x86_feature_detected!("avx512f")
            && c_out.is_multiple_of(DIRECT_ROWS)
            && depth <= DIRECT_MAX_DEPTH
        {
            kernels.push(("avx512", direct_conv_avx512));
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push(("avx2", direct_conv_avx2));
        }
        kernels
    }

    #[test]
    fn direct_kernels_match_the_definition_with_residual_elu_and_padded_rows() {
        let mut rnd = noise(11);
        // (c_in, c_out, kernel, dilation, frames): every AVX2 row block (6, 4, 2, 1) and a
        // partial frame block; depths past one AVX2 chunk (192 taps) and past one row group
        // (128 outputs); rows padded past their length on both sides.
        for (c_in, c_out, k, d, n) in [
            (64, 13, 3, 1, 37),
            (100, 32, 3, 9, 50),
            (9, 136, 1, 1, 16),
            (256, 16, 3, 3, 21),
        ] {
            let in_len = n + (k - 1) * d;
            let (in_stride, out_stride) = (row_stride(in_len), row_stride(n) + 16);
            let xin: Vec<f32> = (0..c_in * in_stride).map(|_| rnd()).collect();
            let weight: Vec<f32> = (0..c_out * c_in * k).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let residual: Vec<f32> = (0..c_out * out_stride).map(|_| rnd()).collect();
            let taps = Taps {
                weight: &weight,
                bias: &bias,
                kernel: k,
                stride: 1,
                dilation: d,
            };
            for (name, kernel) in direct_kernels_on_this_cpu(c_out, c_in * k) {
                for (with_residual, elu) in [(false, false), (true, true)] {
                    let mut out = vec![f32::NAN; c_out * out_stride];
                    let to = DirectOut {
                        ptr: out.as_mut_ptr(),
                        stride: out_stride,
                        residual: with_residual.then_some((residual.as_ptr(), out_stride)),
                        elu,
                    };
                    // Safety: the features were detected; the buffers hold the rows above.
                    unsafe { kernel(&taps, &xin, c_in, in_stride, n, to) };
                    for co in 0..c_out {
                        for t in 0..out_stride {
                            let got = out[co * out_stride + t];
                            if t >= n {
                                assert!(got.is_nan(), "{name} wrote past row {co} at {t}");
                                continue;
                            }
                            let mut want = conv_by_definition(&taps, &xin, in_stride, co, t);
                            if with_residual {
                                want += residual[co * out_stride + t] as f64;
                            }
                            if elu && want < 0.0 {
                                want = want.exp_m1();
                            }
                            assert!(
                                (got as f64 - want).abs() < 1e-4,
                                "{name} {c_in}->{c_out} k{k} d{d} n{n}: [{co}][{t}] {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
