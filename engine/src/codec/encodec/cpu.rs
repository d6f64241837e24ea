//! CPU kernels for EnCodec's convolutions, working on planar `[C][T]` buffers.
//!
//! candle's CPU convolution builds a `[T, C*K]` im2col copy (hundreds of MB at 32 kHz) and then
//! transposes its result; the final 64->1 convolution became a 0.3 GFLOP operation taking 0.7 s.
//! Here a convolution is `K` matrix products, one per kernel tap, each reading the input through
//! strides and accumulating straight into the output, so nothing is copied and every product is
//! a large GEMM that runs near the machine's matmul rate.

use gemm::Parallelism;
use rayon::prelude::*;

/// A planar signal: `channels` rows of `len` samples.
#[derive(Debug, Clone)]
pub struct Signal {
    pub channels: usize,
    pub len: usize,
    pub data: Vec<f32>,
}

impl Signal {
    pub fn new(channels: usize, len: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), channels * len);
        Signal {
            channels,
            len,
            data,
        }
    }

    /// Row `c`, for building inputs and reading outputs.
    pub fn row(&self, c: usize) -> &[f32] {
        &self.data[c * self.len..(c + 1) * self.len]
    }

    /// A copy with `left`/`right` samples of padding per row: reflected (as `F.pad(...,
    /// "reflect")`, with transformers' zero-extension guard for short inputs) or zeros.
    pub fn padded(&self, left: usize, right: usize, reflect: bool) -> Signal {
        let extra = if reflect && self.len <= left.max(right) {
            left.max(right) - self.len + 1
        } else {
            0
        };
        let n = self.len + extra;
        let out_len = left + n + right - extra;
        let mut data = vec![0.0f32; self.channels * out_len];
        for (c, out) in data.chunks_exact_mut(out_len).enumerate() {
            let row = self.row(c);
            let at = |i: usize| row.get(i).copied().unwrap_or(0.0);
            for (j, o) in out.iter_mut().enumerate() {
                let i = j as isize - left as isize;
                *o = if (0..n as isize).contains(&i) {
                    at(i as usize)
                } else if !reflect {
                    0.0
                } else if i < 0 {
                    at((-i) as usize)
                } else {
                    at((2 * (n as isize - 1) - i) as usize)
                };
            }
        }
        Signal::new(self.channels, out_len, data)
    }
}

fn parallelism(flops: usize) -> Parallelism {
    if flops > 1 << 20 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// `x @ w^T + bias` for row-major `x` `[rows][cols]` and `w` `[outs][cols]`: `[rows][outs]`.
pub fn linear(x: &[f32], rows: usize, cols: usize, w: &[f32], bias: &[f32]) -> Vec<f32> {
    let outs = bias.len();
    let mut y: Vec<f32> = (0..rows).flat_map(|_| bias.iter().copied()).collect();
    unsafe {
        gemm::gemm(
            rows,
            outs,
            cols,
            y.as_mut_ptr(),
            1,
            outs as isize,
            true,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(rows * cols * outs),
        );
    }
    y
}

/// `exp(x)` for `x <= 0`, branch-free so that it vectorises: 2^n * p(r) with
/// `r = x - n ln2` in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative error < 2e-7,
/// far inside the codec's 1e-4 parity budget). Below -87 it returns 0 like `f32::exp` would
/// underflow to.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn elu_scalar(v: f32) -> f32 {
    let neg = exp_neg(v.min(0.0)) - 1.0;
    if v > 0.0 {
        v
    } else {
        neg
    }
}

#[inline(always)]
fn elu_into_generic(src: &[f32], dst: &mut [f32]) {
    for (o, v) in dst.iter_mut().zip(src) {
        *o = elu_scalar(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn elu_into_avx2(src: &[f32], dst: &mut [f32]) {
    elu_into_generic(src, dst)
}

/// `dst = elu(src)`, with AVX2 when the CPU has it (the build targets baseline x86-64).
pub fn elu_into(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // Safety: the features were just detected.
        return unsafe { elu_into_avx2(src, dst) };
    }
    elu_into_generic(src, dst)
}

/// ELU (alpha = 1), in parallel chunks.
pub fn elu(x: &Signal) -> Signal {
    let mut data = vec![0.0f32; x.data.len()];
    data.par_chunks_mut(1 << 14)
        .zip(x.data.par_chunks(1 << 14))
        .for_each(|(o, i)| elu_into(i, o));
    Signal::new(x.channels, x.len, data)
}

/// `a += b`, in parallel chunks.
pub fn add_assign(a: &mut Signal, b: &Signal) {
    a.data
        .par_chunks_mut(1 << 14)
        .zip(b.data.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

#[inline(always)]
fn axpy_generic(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_generic(a, x, y)
}

/// `y += a x`, with AVX2 when the CPU has it.
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // Safety: the feature was just detected.
        return unsafe { axpy_avx2(a, x, y) };
    }
    axpy_generic(a, x, y)
}

/// A raw output pointer shared by tiles that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Output columns per tile: small enough that a tile's input and output stay in L2 cache.
fn tile_len(channels: usize) -> usize {
    ((1usize << 16) / channels.max(1)).clamp(256, 4096)
}

/// A convolution's weights and geometry, applied to an input buffer as one GEMM per tap.
#[derive(Clone, Copy)]
pub struct Taps<'a> {
    /// `[C_out][C_in][K]`.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl Taps<'_> {
    /// Output frames of a valid convolution over `len` (already padded) samples.
    fn out_len(&self, len: usize) -> usize {
        (len - ((self.kernel - 1) * self.dilation + 1)) / self.stride + 1
    }

    /// Valid convolution of an already padded `x`, one multi-threaded GEMM per tap (for
    /// signals too short to split into tiles).
    pub fn conv(&self, x: &Signal) -> Signal {
        let c_out = self.bias.len();
        let t_out = self.out_len(x.len);
        let mut y = vec![0.0f32; c_out * t_out];
        let par = parallelism(c_out * x.channels * t_out);
        self.apply(&x.data, x.channels, x.len, t_out, &mut y, par);
        Signal::new(c_out, t_out, y)
    }

    /// [`Taps::conv`] of `elu(x)` (or `x`) computed tile by tile in parallel: on long signals
    /// this keeps the working set in cache and fuses the activation, instead of streaming
    /// whole tensors through memory once per operation.
    pub fn conv_tiled(&self, x: &Signal, elu_first: bool) -> Signal {
        let c_out = self.bias.len();
        let span = (self.kernel - 1) * self.dilation + 1;
        let t_out = self.out_len(x.len);
        let tile = tile_len(x.channels.max(c_out) * self.stride);
        let mut y = vec![0.0f32; c_out * t_out];
        let shared = SharedOut(y.as_mut_ptr());
        let starts: Vec<usize> = (0..t_out).step_by(tile).collect();
        starts.into_par_iter().for_each(|t0| {
            let n = tile.min(t_out - t0);
            let in_len = (n - 1) * self.stride + span;
            let xin = gather(x, t0 * self.stride, in_len, elu_first);
            let mut out = vec![0.0f32; c_out * n];
            self.apply(&xin, x.channels, in_len, n, &mut out, Parallelism::None);
            for (co, row) in out.chunks_exact(n).enumerate() {
                // Safety: tiles cover disjoint column ranges t0..t0 + n of every row.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        row.as_ptr(),
                        shared.ptr().add(co * t_out + t0),
                        n,
                    );
                }
            }
        });
        Signal::new(c_out, t_out, y)
    }

    /// `out[co][n] = bias + sum_k W_k xin[.., k * dilation + t * stride]` with `xin`
    /// `[c_in][in_len]` and `out` `[c_out][n]`.
    fn apply(
        &self,
        xin: &[f32],
        c_in: usize,
        in_len: usize,
        n: usize,
        out: &mut [f32],
        par: Parallelism,
    ) {
        let Taps {
            weight,
            bias,
            kernel,
            stride,
            dilation,
        } = *self;
        for (row, b) in out.chunks_exact_mut(n).zip(bias) {
            row.fill(*b);
        }
        if bias.len() == 1 && stride == 1 {
            // A single output channel is a sum of scaled shifted rows; GEMM with m = 1 wastes
            // most of its micro-kernel.
            for c in 0..c_in {
                for k in 0..kernel {
                    let src = &xin[c * in_len + k * dilation..][..n];
                    axpy(weight[c * kernel + k], src, out);
                }
            }
            return;
        }
        for k in 0..kernel {
            // Safety: every index the strides reach lies inside `weight`, `xin` and `out`
            // (`in_len >= (n - 1) * stride + (kernel - 1) * dilation + 1`).
            unsafe {
                gemm::gemm(
                    bias.len(),
                    n,
                    c_in,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    weight.as_ptr().add(k),
                    kernel as isize,
                    (c_in * kernel) as isize,
                    xin.as_ptr().add(k * dilation),
                    stride as isize,
                    in_len as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
    }
}

/// Copies columns `start..start + len` of every row of `x`, through ELU when `elu_first`.
fn gather(x: &Signal, start: usize, len: usize, elu_first: bool) -> Vec<f32> {
    let mut buf = vec![0.0f32; x.channels * len];
    for (c, dst) in buf.chunks_exact_mut(len).enumerate() {
        let src = &x.row(c)[start..start + len];
        if elu_first {
            elu_into(src, dst);
        } else {
            dst.copy_from_slice(src);
        }
    }
    buf
}

/// A residual unit `x + conv2(elu(conv1(elu(x))))` fused per tile; `x_padded` is `x` with
/// conv1's padding applied; conv1 has stride 1 and conv2 is 1x1.
pub fn residual_tiled(x: &Signal, x_padded: &Signal, conv1: Taps, conv2: Taps) -> Signal {
    let hidden = conv1.bias.len();
    let c = x.channels;
    let span = (conv1.kernel - 1) * conv1.dilation + 1;
    let len = x.len;
    let tile = tile_len(c);
    let mut y = vec![0.0f32; c * len];
    let shared = SharedOut(y.as_mut_ptr());
    let starts: Vec<usize> = (0..len).step_by(tile).collect();
    starts.into_par_iter().for_each(|t0| {
        let n = tile.min(len - t0);
        let in_len = n - 1 + span;
        let xin = gather(x_padded, t0, in_len, true);
        let mut h = vec![0.0f32; hidden * n];
        conv1.apply(&xin, c, in_len, n, &mut h, Parallelism::None);
        let mut h_act = vec![0.0f32; h.len()];
        elu_into(&h, &mut h_act);
        let h = h_act;
        let mut out = vec![0.0f32; c * n];
        conv2.apply(&h, hidden, n, n, &mut out, Parallelism::None);
        for (ch, row) in out.chunks_exact_mut(n).enumerate() {
            for (o, v) in row.iter_mut().zip(&x.row(ch)[t0..t0 + n]) {
                *o += v;
            }
            // Safety: tiles cover disjoint column ranges t0..t0 + n of every row.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), shared.ptr().add(ch * len + t0), n);
            }
        }
    });
    Signal::new(c, len, y)
}

/// [`conv_transpose1d`] as one GEMM per time chunk, `Z = W^T x` (`[C_out * K][n]`), followed by
/// an overlap-add of `Z` into the output rows, parallel over output channels. Unlike the
/// per-tap form this writes no strided output inside the GEMM.
pub fn conv_transpose1d_gemm(
    x: &Signal,
    weight: &[f32],
    bias: &[f32],
    kernel: usize,
    stride: usize,
    left: usize,
    right: usize,
) -> Signal {
    let c_out = bias.len();
    let c_in = x.channels;
    let rows = c_out * kernel;
    let full = (x.len - 1) * stride + kernel;
    let mut y = vec![0.0f32; c_out * full];
    let chunk = ((1usize << 22) / rows).max(64);
    let mut z = vec![0.0f32; rows * chunk.min(x.len)];
    for t0 in (0..x.len).step_by(chunk) {
        let n = chunk.min(x.len - t0);
        // z[(co, k)][t] = sum_ci W[ci, co, k] * x[ci, t0 + t]; W viewed as [C_in][C_out * K].
        unsafe {
            gemm::gemm(
                rows,
                n,
                c_in,
                z.as_mut_ptr(),
                1,
                n as isize,
                false,
                weight.as_ptr(),
                rows as isize,
                1,
                x.data.as_ptr().add(t0),
                1,
                x.len as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism(rows * n * c_in),
            );
        }
        let z = &z[..rows * n];
        y.par_chunks_mut(full).enumerate().for_each(|(co, yrow)| {
            for k in 0..kernel {
                let zrow = &z[(co * kernel + k) * n..][..n];
                let base = t0 * stride + k;
                for (t, v) in zrow.iter().enumerate() {
                    yrow[base + t * stride] += v;
                }
            }
        });
    }
    let len = full - left - right;
    let mut out = vec![0.0f32; c_out * len];
    out.par_chunks_mut(len)
        .zip(y.par_chunks(full))
        .zip(bias.par_iter())
        .for_each(|((o, row), b)| {
            for (o, v) in o.iter_mut().zip(&row[left..left + len]) {
                *o = v + b;
            }
        });
    Signal::new(c_out, len, out)
}
