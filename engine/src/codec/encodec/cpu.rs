//! CPU kernels for EnCodec's convolutions, working on planar `[C][T]` buffers.
//!
//! candle's CPU convolution builds a `[T, C*K]` im2col copy (hundreds of MB at 32 kHz) and then
//! transposes its result; the final 64->1 convolution became a 0.3 GFLOP operation taking 0.7 s.
//! Here a convolution is `K` matrix products, one per kernel tap, each reading the input through
//! strides and accumulating straight into the output, so nothing is copied and every product is
//! a large GEMM that runs near the machine's matmul rate.

use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Layer outputs recycled between the layers of a pass and, through [`BufferPool::retain`],
/// between passes. At 32 kHz a layer's output is tens of MB; a fresh allocation of that size
/// is mapped from the OS and page-faulted in on first write, which cost about a tenth of the
/// codec's time. Buffers come back with stale contents: every kernel that takes one writes
/// all of its elements.
#[derive(Default)]
pub struct BufferPool {
    free: RefCell<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A pool holding buffers kept from an earlier pass.
    pub fn with_buffers(free: Vec<Vec<f32>>) -> Self {
        BufferPool {
            free: RefCell::new(free),
        }
    }

    /// The largest free buffers that fit in `max_bytes` together, to keep for the next pass
    /// (a pass holds at most three large buffers at once).
    pub fn retain(self, max_bytes: usize) -> Vec<Vec<f32>> {
        let mut free = self.free.into_inner();
        free.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        let mut budget = max_bytes;
        free.into_iter()
            .take(3)
            .filter(|b| {
                let bytes = b.capacity() * std::mem::size_of::<f32>();
                let fits = bytes <= budget;
                if fits {
                    budget -= bytes;
                }
                fits
            })
            .collect()
    }

    /// A buffer of `len` elements whose contents the caller overwrites: the smallest free
    /// one that is large enough, or a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.borrow_mut();
        let fitting = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buf = match fitting {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        sized(&mut buf, len);
        buf
    }

    /// Returns a buffer for later layers.
    pub fn give(&self, buf: Vec<f32>) {
        self.free.borrow_mut().push(buf);
    }
}

/// `buf` resized to `len` elements, contents unspecified (the caller overwrites them all).
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.truncate(len);
    buf.resize(len, 0.0);
    buf
}

/// Per-thread working buffers of the tiled kernels, kept between tiles and calls: allocating
/// them per tile made the allocator hand pages back to the OS and fault them in again.
#[derive(Default)]
struct Scratch {
    input: Vec<f32>,
    columns: Vec<f32>,
    hidden: Vec<f32>,
    activated: Vec<f32>,
    output: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's scratch buffers, or with fresh ones if they are in use (a
/// thread waiting inside a parallel GEMM may pick up another tile).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

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
}

/// A signal seen with `left`/`right` samples of padding, reflected (as `F.pad(..., "reflect")`,
/// with transformers' zero-extension guard for short inputs) or zeros, without copying it:
/// tiled kernels gather their windows through it, so the full-rate
/// signals (82 MB at 64 channels x 10 s) are not copied once more per convolution.
#[derive(Clone, Copy)]
pub struct Padded<'a> {
    pub x: &'a Signal,
    pub left: usize,
    pub right: usize,
    pub reflect: bool,
}

impl Padded<'_> {
    /// Length with the padding.
    pub fn len(&self) -> usize {
        self.left + self.x.len + self.right
    }

    /// The sample of `x` at padded position `j`, or `None` for a zero.
    fn source(&self, j: usize) -> Option<usize> {
        let len = self.x.len as isize;
        let extra = if self.reflect && self.x.len <= self.left.max(self.right) {
            (self.left.max(self.right) - self.x.len + 1) as isize
        } else {
            0
        };
        let n = len + extra;
        let i = j as isize - self.left as isize;
        let s = if (0..n).contains(&i) {
            i
        } else if !self.reflect {
            return None;
        } else if i < 0 {
            -i
        } else {
            2 * (n - 1) - i
        };
        (0..len).contains(&s).then_some(s as usize)
    }

    /// Padded columns `start..start + len` of every row, through ELU when `elu_first`.
    pub fn gather(&self, start: usize, len: usize, elu_first: bool) -> Vec<f32> {
        let mut buf = Vec::new();
        self.gather_into(start, len, len, elu_first, &mut buf);
        buf
    }

    /// [`Padded::gather`] into `buf` as rows `row_stride >= len` apart (resized; the first
    /// `len` elements of every row written).
    fn gather_into(
        &self,
        start: usize,
        len: usize,
        row_stride: usize,
        elu_first: bool,
        buf: &mut Vec<f32>,
    ) {
        let x = self.x;
        let buf = sized(buf, x.channels * row_stride);
        // Columns `lo..hi` map straight onto `x` (no padding involved).
        let end = start + len;
        let lo = self.left.clamp(start, end);
        let hi = (self.left + x.len).clamp(lo, end);
        for (c, dst) in buf.chunks_exact_mut(row_stride).enumerate() {
            let row = x.row(c);
            if hi > lo {
                let (src, out) = (
                    &row[lo - self.left..hi - self.left],
                    &mut dst[lo - start..hi - start],
                );
                if elu_first {
                    elu_into(src, out);
                } else {
                    out.copy_from_slice(src);
                }
            }
            for j in (start..lo).chain(hi..end) {
                let v = self.source(j).map_or(0.0, |i| row[i]);
                dst[j - start] = if elu_first { elu_scalar(v) } else { v };
            }
        }
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
pub(crate) fn exp_neg(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds `x log2(e)` to an integer n held in the low mantissa bits,
    // so n and 2^n come from bit arithmetic: a float-to-int cast (`as i32`, which saturates)
    // would keep the whole loop scalar.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
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
pub fn elu(x: &Signal, pool: &BufferPool) -> Signal {
    let mut data = pool.take(x.data.len());
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
    ((1usize << 18) / channels.max(1)).clamp(256, 4096)
}

/// Largest `c_in * kernel` of a stride-1 convolution that is computed as one GEMM on an
/// im2col copy (strided convolutions always are); deeper ones are already efficient per tap.
const IM2COL_MAX_DEPTH: usize = 1024;

/// A convolution's weights and geometry, applied to an input buffer as one GEMM (im2col) or
/// one GEMM per tap.
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
    pub fn conv(&self, x: &Signal, pool: &BufferPool) -> Signal {
        let c_out = self.bias.len();
        let t_out = self.out_len(x.len);
        let mut y = pool.take(c_out * t_out);
        let par = parallelism(c_out * x.channels * t_out);
        let mut columns = Vec::new();
        self.apply(&x.data, x.channels, x.len, t_out, &mut y, par, &mut columns);
        Signal::new(c_out, t_out, y)
    }

    /// [`Taps::conv`] of `elu(x)` (or `x`) computed tile by tile in parallel: on long signals
    /// this keeps the working set in cache and fuses the activation, instead of streaming
    /// whole tensors through memory once per operation.
    pub fn conv_tiled(&self, x: Padded, elu_first: bool, pool: &BufferPool) -> Signal {
        let c_out = self.bias.len();
        let c_in = x.x.channels;
        let span = (self.kernel - 1) * self.dilation + 1;
        let t_out = self.out_len(x.len());
        let tile = tile_len(c_in.max(c_out) * self.stride);
        let mut y = pool.take(c_out * t_out);
        let shared = SharedOut(y.as_mut_ptr());
        let phases = self.phase_weight();
        let direct = match &phases {
            Some(weight) => {
                let split = Taps {
                    weight,
                    kernel: self.kernel / self.stride,
                    stride: 1,
                    ..*self
                };
                direct_kernel(&split, c_in * self.stride).map(|k| (split, k))
            }
            None => direct_kernel(self, c_in).map(|k| (*self, k)),
        };
        let starts: Vec<usize> = (0..t_out).step_by(tile).collect();
        starts.into_par_iter().for_each(|t0| {
            let n = tile.min(t_out - t0);
            let in_len = (n - 1) * self.stride + span;
            with_scratch(|s| {
                if let Some((taps, kernel)) = &direct {
                    let (src, rows, row_len) = if self.stride > 1 {
                        x.gather_into(t0 * self.stride, in_len, in_len, elu_first, &mut s.input);
                        let phase_len = row_stride(in_len / self.stride);
                        split_phases(
                            &s.input,
                            c_in,
                            in_len,
                            self.stride,
                            phase_len,
                            &mut s.columns,
                        );
                        (&s.columns, c_in * self.stride, phase_len)
                    } else {
                        let len = row_stride(in_len);
                        x.gather_into(t0 * self.stride, in_len, len, elu_first, &mut s.input);
                        (&s.input, c_in, len)
                    };
                    let to = DirectOut {
                        ptr: shared.ptr().wrapping_add(t0),
                        stride: t_out,
                        residual: None,
                        elu: false,
                    };
                    // Safety: `src` holds `rows` rows `row_len >= n - 1 + taps.kernel` apart;
                    // tiles write disjoint columns `t0..t0 + n` of `y`'s `c_out` rows.
                    unsafe { kernel(taps, src, rows, row_len, n, to) };
                    return;
                }
                x.gather_into(t0 * self.stride, in_len, in_len, elu_first, &mut s.input);
                let out = sized(&mut s.output, c_out * n);
                self.apply(
                    &s.input,
                    c_in,
                    in_len,
                    n,
                    out,
                    Parallelism::None,
                    &mut s.columns,
                );
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
            })
        });
        Signal::new(c_out, t_out, y)
    }

    /// For a strided convolution whose kernel is a multiple of its stride: the weights
    /// `[C_out][(phase, C_in)][K / stride]` of the same convolution as a stride-1 one over
    /// the input split into its `stride` phases (see [`split_phases`]).
    fn phase_weight(&self) -> Option<Vec<f32>> {
        let (k, s) = (self.kernel, self.stride);
        if s == 1 || self.dilation != 1 || !k.is_multiple_of(s) {
            return None;
        }
        let (c_out, taps) = (self.bias.len(), k / s);
        let c_in = self.weight.len() / (c_out * k);
        let mut out = vec![0.0f32; self.weight.len()];
        for co in 0..c_out {
            for p in 0..s {
                for ci in 0..c_in {
                    for j in 0..taps {
                        out[((co * s + p) * c_in + ci) * taps + j] =
                            self.weight[(co * c_in + ci) * k + j * s + p];
                    }
                }
            }
        }
        Some(out)
    }

    /// `out[co][n] = bias + sum_k W_k xin[.., k * dilation + t * stride]` with `xin`
    /// `[c_in][in_len]` and `out` `[c_out][n]`; `columns` holds the im2col copy.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        xin: &[f32],
        c_in: usize,
        in_len: usize,
        n: usize,
        out: &mut [f32],
        par: Parallelism,
        columns: &mut Vec<f32>,
    ) {
        let Taps {
            weight,
            bias,
            kernel,
            stride,
            dilation,
        } = *self;
        if let (Some(direct), Parallelism::None) = (direct_kernel(self, c_in), par) {
            // Safety: `xin` holds `c_in` rows of `in_len >= n + (kernel - 1) * dilation`
            // samples, `out` `c_out` rows of `n`, and the kernel's CPU features were detected.
            unsafe { direct(self, xin, c_in, in_len, n, DirectOut::rows(out, n)) };
            return;
        }
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
        let depth = c_in * kernel;
        if kernel > 1 && (stride > 1 || depth <= IM2COL_MAX_DEPTH) {
            // One GEMM over all taps at once on an im2col copy `[(c_in, k)][n]`. Per-tap GEMMs
            // would have an inner dimension of only `c_in` (64 at the full sample rate), read
            // the input through the stride and read/write the output `kernel` times.
            let col = sized(columns, depth * n);
            for (row, dst) in col.chunks_exact_mut(n).enumerate() {
                let (c, k) = (row / kernel, row % kernel);
                let src = &xin[c * in_len + k * dilation..];
                if stride == 1 {
                    dst.copy_from_slice(&src[..n]);
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = src[i * stride];
                    }
                }
            }
            // Safety: `weight` is `[c_out][depth]`, `col` `[depth][n]`, `out` `[c_out][n]`.
            unsafe {
                accumulate_product(
                    out,
                    bias.len(),
                    n,
                    depth,
                    (weight.as_ptr(), depth, 1),
                    (col.as_ptr(), n, 1),
                    par,
                );
            }
            return;
        }
        for k in 0..kernel {
            // Safety: every index the strides reach lies inside `weight`, `xin` and `out`
            // (`in_len >= (n - 1) * stride + (kernel - 1) * dilation + 1`).
            unsafe {
                accumulate_product(
                    out,
                    bias.len(),
                    n,
                    c_in,
                    (weight.as_ptr().add(k), c_in * kernel, kernel),
                    (xin.as_ptr().add(k * dilation), in_len, stride),
                    par,
                );
            }
        }
    }
}

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
    ptr: *mut f32,
    stride: usize,
    /// Added to the convolution (before `elu`), `(pointer, row stride)`.
    residual: Option<(*const f32, usize)>,
    elu: bool,
}

impl DirectOut {
    /// Plain `[c_out][n]` rows of `out`.
    fn rows(out: &mut [f32], n: usize) -> Self {
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
fn direct_kernel(taps: &Taps, c_in: usize) -> Option<DirectConv> {
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

/// `[c_in][len]` rows split into `[(phase, c_in)][len / stride]` rows `out_stride` apart,
/// sample `m * stride + p` of row `ci` going to row `p * c_in + ci`: a strided convolution
/// over `xin` is a stride-1 one over the phases (`len` is a multiple of `stride`).
fn split_phases(
    xin: &[f32],
    c_in: usize,
    len: usize,
    stride: usize,
    out_stride: usize,
    out: &mut Vec<f32>,
) {
    let m_len = len / stride;
    let out = sized(out, c_in * stride * out_stride);
    for ci in 0..c_in {
        let src = &xin[ci * len..][..m_len * stride];
        for p in 0..stride {
            let dst = &mut out[(p * c_in + ci) * out_stride..][..m_len];
            for (d, frame) in dst.iter_mut().zip(src.chunks_exact(stride)) {
                *d = frame[p];
            }
        }
    }
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
fn row_stride(len: usize) -> usize {
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

/// `out[c_out][n] += W X` for `W` `[c_out][depth]` and `X` `[depth][n]`, each given as
/// (pointer, row stride, column stride).
///
/// GEMM micro-kernels are tall (64 rows with AVX-512), so when there are few output channels
/// the product is computed transposed, `out^T = X^T W^T`, with time as the tall dimension.
///
/// # Safety
/// Every element the strides reach must lie inside its buffer, and `out` must hold
/// `c_out * n` elements.
unsafe fn accumulate_product(
    out: &mut [f32],
    c_out: usize,
    n: usize,
    depth: usize,
    w: (*const f32, usize, usize),
    x: (*const f32, usize, usize),
    par: Parallelism,
) {
    debug_assert!(out.len() >= c_out * n);
    let (w_ptr, w_rs, w_cs) = (w.0, w.1 as isize, w.2 as isize);
    let (x_ptr, x_rs, x_cs) = (x.0, x.1 as isize, x.2 as isize);
    let dst = out.as_mut_ptr();
    if c_out < TRANSPOSE_BELOW_CHANNELS {
        gemm::gemm(
            n, c_out, depth, dst, n as isize, 1, true, x_ptr, x_rs, x_cs, w_ptr, w_rs, w_cs, 1.0,
            1.0, false, false, false, par,
        );
    } else {
        gemm::gemm(
            c_out, n, depth, dst, 1, n as isize, true, w_ptr, w_cs, w_rs, x_ptr, x_cs, x_rs, 1.0,
            1.0, false, false, false, par,
        );
    }
}

/// Output channels below which [`accumulate_product`] runs the product transposed.
const TRANSPOSE_BELOW_CHANNELS: usize = 64;

/// A residual unit `x + conv2(elu(conv1(elu(x))))` fused per tile; `x_padded` is `x` seen with
/// conv1's padding; conv1 has stride 1 and conv2 is 1x1.
pub fn residual_tiled(
    x: &Signal,
    x_padded: Padded,
    conv1: Taps,
    conv2: Taps,
    pool: &BufferPool,
) -> Signal {
    let hidden = conv1.bias.len();
    let c = x.channels;
    let span = (conv1.kernel - 1) * conv1.dilation + 1;
    let len = x.len;
    let tile = tile_len(c);
    let mut y = pool.take(c * len);
    let shared = SharedOut(y.as_mut_ptr());
    let (direct1, direct2) = (direct_kernel(&conv1, c), direct_kernel(&conv2, hidden));
    let starts: Vec<usize> = (0..len).step_by(tile).collect();
    starts.into_par_iter().for_each(|t0| {
        let n = tile.min(len - t0);
        let in_len = n - 1 + span;
        with_scratch(|s| {
            // Padded row strides where a direct kernel reads the rows (see `row_stride`).
            let in_stride = direct1.map_or(in_len, |_| row_stride(in_len));
            let h_stride = match (direct1, direct2) {
                (Some(_), Some(_)) => row_stride(n),
                _ => n,
            };
            x_padded.gather_into(t0, in_len, in_stride, true, &mut s.input);
            let h_act = sized(&mut s.activated, hidden * h_stride);
            if let Some(direct) = direct1 {
                let to = DirectOut {
                    ptr: h_act.as_mut_ptr(),
                    stride: h_stride,
                    residual: None,
                    elu: true,
                };
                // Safety: `input` holds `c` rows `in_stride >= in_len` apart, `h_act` `hidden`
                // rows `h_stride >= n` apart.
                unsafe { direct(&conv1, &s.input, c, in_stride, n, to) };
            } else {
                let h = sized(&mut s.hidden, hidden * n);
                conv1.apply(&s.input, c, in_len, n, h, Parallelism::None, &mut s.columns);
                elu_into(h, h_act);
            }
            if let Some(direct) = direct2 {
                // The unit's output, with the input added, goes straight to its columns.
                let to = DirectOut {
                    ptr: shared.ptr().wrapping_add(t0),
                    stride: len,
                    residual: Some((x.data[t0..].as_ptr(), len)),
                    elu: false,
                };
                // Safety: `h_act` holds `hidden` rows of `n`; `y` and `x` hold `c` rows of
                // `len >= t0 + n`, and tiles write disjoint columns of `y`.
                unsafe { direct(&conv2, h_act, hidden, h_stride, n, to) };
                return;
            }
            let out = sized(&mut s.output, c * n);
            conv2.apply(h_act, hidden, n, n, out, Parallelism::None, &mut s.columns);
            for (ch, row) in out.chunks_exact_mut(n).enumerate() {
                for (o, v) in row.iter_mut().zip(&x.row(ch)[t0..t0 + n]) {
                    *o += v;
                }
                // Safety: tiles cover disjoint column ranges t0..t0 + n of every row.
                unsafe {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), shared.ptr().add(ch * len + t0), n);
                }
            }
        })
    });
    Signal::new(c, len, y)
}

/// A transposed convolution split into its `stride` output phases: output sample
/// `m * stride + r` is `sum_j W[.., .., r + j * stride]^T x[m - j]`, so all phases of a block
/// of frames are one GEMM `[(r, c_out)] x [(j, c_in)]` on a `[(j, c_in)][m]` copy of the input,
/// written straight into the trimmed output. Unlike a GEMM followed by an overlap-add, no
/// full-length intermediate is streamed through memory.
pub struct PolyphaseTranspose {
    /// `[(r, c_out)][(j, c_in)]`, zero where `r + j * stride >= kernel`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    stride: usize,
    kernel: usize,
    /// Input frames each output phase reads (`ceil(kernel / stride)`).
    taps: usize,
}

impl PolyphaseTranspose {
    /// From PyTorch's `[C_in][C_out][K]` transposed-convolution weight.
    pub fn new(weight: &[f32], bias: &[f32], c_in: usize, kernel: usize, stride: usize) -> Self {
        let c_out = bias.len();
        let taps = kernel.div_ceil(stride);
        let cols = taps * c_in;
        let mut packed = vec![0.0f32; stride * c_out * cols];
        for r in 0..stride {
            for co in 0..c_out {
                let row = &mut packed[(r * c_out + co) * cols..][..cols];
                for j in 0..taps {
                    let k = r + j * stride;
                    if k >= kernel {
                        continue;
                    }
                    for ci in 0..c_in {
                        row[j * c_in + ci] = weight[(ci * c_out + co) * kernel + k];
                    }
                }
            }
        }
        PolyphaseTranspose {
            weight: packed,
            bias: bias.to_vec(),
            c_in,
            stride,
            kernel,
            taps,
        }
    }

    /// The transposed convolution of `elu(x)` (or `x`) with `left`/`right` samples trimmed
    /// from the full output, plus the bias.
    pub fn forward(
        &self,
        x: &Signal,
        (left, right): (usize, usize),
        elu_first: bool,
        pool: &BufferPool,
    ) -> Signal {
        let (s, c_out) = (self.stride, self.bias.len());
        let full = (x.len - 1) * s + self.kernel;
        let len = full - left - right;
        let mut y = pool.take(c_out * len);
        if len == 0 {
            return Signal::new(c_out, 0, y);
        }
        let (m_lo, m_hi) = (left / s, (left + len - 1) / s + 1);
        let rows = s * c_out;
        let cols = self.taps * self.c_in;
        let shared = SharedOut(y.as_mut_ptr());
        let block = |m0: usize, n: usize, par: Parallelism, scratch: &mut Scratch| {
            let b = sized(&mut scratch.columns, cols * n);
            for j in 0..self.taps {
                for ci in 0..self.c_in {
                    let dst = &mut b[(j * self.c_in + ci) * n..][..n];
                    let src = x.row(ci);
                    // Input frame of column mm: m0 + mm - j, inside 0..x.len; zero outside.
                    let first = j.saturating_sub(m0).min(n);
                    let last = (x.len + j).saturating_sub(m0).min(n).max(first);
                    let from = &src[m0 + first - j..m0 + last - j];
                    dst[..first].fill(0.0);
                    dst[last..].fill(0.0);
                    if elu_first {
                        elu_into(from, &mut dst[first..last]);
                    } else {
                        dst[first..last].copy_from_slice(from);
                    }
                }
            }
            let z = sized(&mut scratch.output, rows * n);
            // Safety: `z` is `[rows][n]`, the weight `[rows][cols]` and `b` `[cols][n]`.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    cols,
                    z.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    self.weight.as_ptr(),
                    1,
                    cols as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
            // Output samples (m0 + mm) * s + r - left, interleaving the phases.
            let u0 = m0 * s;
            let i_lo = u0.max(left) - left;
            let i_hi = ((m0 + n) * s).min(left + len) - left;
            let (first_mm, first_r) = ((i_lo + left - u0) / s, (i_lo + left - u0) % s);
            for co in 0..c_out {
                let bias = self.bias[co];
                // Safety: blocks cover disjoint output ranges `i_lo..i_hi` of every row.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(shared.ptr().add(co * len + i_lo), i_hi - i_lo)
                };
                let (mut mm, mut r) = (first_mm, first_r);
                for o in out.iter_mut() {
                    *o = z[(r * c_out + co) * n + mm] + bias;
                    r += 1;
                    if r == s {
                        r = 0;
                        mm += 1;
                    }
                }
            }
        };
        let frames = m_hi - m_lo;
        let tile = ((1usize << 17) / (rows + cols)).clamp(32, 2048);
        if frames < 4 * tile {
            let par = parallelism(rows * cols * frames);
            block(m_lo, frames, par, &mut Scratch::default());
        } else {
            let starts: Vec<usize> = (m_lo..m_hi).step_by(tile).collect();
            starts.into_par_iter().for_each(|m0| {
                with_scratch(|s| block(m0, tile.min(m_hi - m0), Parallelism::None, s))
            });
        }
        Signal::new(c_out, len, y)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Seeded uniform noise in [-0.5, 0.5) (a linear congruential generator).
    pub fn noise(seed: u32) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    /// `nn.ConvTranspose1d` by its definition, then trimmed, plus the bias.
    fn direct(x: &Signal, w: &[f32], b: &[f32], k: usize, s: usize, l: usize, r: usize) -> Signal {
        let c_out = b.len();
        let full = (x.len - 1) * s + k;
        let mut y = vec![0.0f64; c_out * full];
        for ci in 0..x.channels {
            for co in 0..c_out {
                for t in 0..x.len {
                    for kk in 0..k {
                        y[co * full + t * s + kk] +=
                            (w[(ci * c_out + co) * k + kk] * x.row(ci)[t]) as f64;
                    }
                }
            }
        }
        let len = full - l - r;
        let data = (0..c_out)
            .flat_map(|co| (0..len).map(move |i| (co, i)))
            .map(|(co, i)| y[co * full + l + i] as f32 + b[co])
            .collect();
        Signal::new(c_out, len, data)
    }

    /// Padding as transformers does it: zero-extend a too-short input, pad (reflect or zeros),
    /// cut the extension off again.
    fn padded_reference(row: &[f32], left: usize, right: usize, reflect: bool) -> Vec<f32> {
        if !reflect {
            return [vec![0.0; left], row.to_vec(), vec![0.0; right]].concat();
        }
        let extra = (left.max(right) + 1).saturating_sub(row.len());
        let ext = [row.to_vec(), vec![0.0; extra]].concat();
        let n = ext.len();
        let mut out: Vec<f32> = (1..=left).rev().map(|i| ext[i]).collect();
        out.extend(&ext);
        out.extend((1..=right).map(|i| ext[n - 1 - i]));
        out.truncate(out.len() - extra);
        out
    }

    #[test]
    fn padded_view_gathers_what_padding_makes() {
        let x = Signal::new(2, 9, (0..18).map(|i| i as f32 - 6.0).collect());
        let short = Signal::new(1, 2, vec![1.5, -2.0]);
        for (x, left, right) in [(&x, 3, 4), (&x, 0, 2), (&x, 6, 0), (&short, 3, 5)] {
            for reflect in [true, false] {
                let full: Vec<Vec<f32>> = (0..x.channels)
                    .map(|c| padded_reference(x.row(c), left, right, reflect))
                    .collect();
                let view = Padded {
                    x,
                    left,
                    right,
                    reflect,
                };
                let n = full[0].len();
                assert_eq!(view.len(), n);
                for (start, len) in [(0, n), (1, 4), (n - 3, 3), (2, 1), (0, 1), (n - 1, 1)] {
                    for elu_first in [false, true] {
                        let got = view.gather(start, len, elu_first);
                        for c in 0..x.channels {
                            for j in 0..len {
                                let v = full[c][start + j];
                                let want = if elu_first { elu_scalar(v) } else { v };
                                assert_eq!(got[c * len + j], want, "l{left} r{right} {reflect}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Output `[co][t]` of a stride-1 convolution over rows `in_stride` apart, in f64.
    fn conv_by_definition(taps: &Taps, xin: &[f32], in_stride: usize, co: usize, t: usize) -> f64 {
        let (k, d) = (taps.kernel, taps.dilation);
        let depth = taps.weight.len() / taps.bias.len();
        let mut sum = taps.bias[co] as f64;
        for (tap, w) in taps.weight[co * depth..][..depth].iter().enumerate() {
            let (ci, kk) = (tap / k, tap % k);
            sum += *w as f64 * xin[ci * in_stride + t + kk * d] as f64;
        }
        sum
    }

    #[test]
    fn stride_one_convolutions_match_the_definition() {
        let mut rnd = noise(3);
        // (c_in, c_out, kernel, dilation, frames): EnCodec's residual convolutions (direct
        // kernel where the CPU has it) with partial frame blocks, and shapes it leaves to GEMM.
        for (c_in, c_out, k, d, n) in [
            (64, 32, 3, 1, 4101),
            (32, 64, 1, 1, 47),
            (5, 8, 3, 3, 50),
            (7, 16, 7, 1, 16),
            (200, 8, 3, 1, 30),
            (6, 12, 2, 1, 33),
        ] {
            let in_len = n + (k - 1) * d;
            let xin: Vec<f32> = (0..c_in * in_len).map(|_| rnd()).collect();
            let weight: Vec<f32> = (0..c_out * c_in * k).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let taps = Taps {
                weight: &weight,
                bias: &bias,
                kernel: k,
                stride: 1,
                dilation: d,
            };
            let mut out = vec![f32::NAN; c_out * n];
            taps.apply(
                &xin,
                c_in,
                in_len,
                n,
                &mut out,
                Parallelism::None,
                &mut Vec::new(),
            );
            for co in 0..c_out {
                for t in 0..n {
                    let want = conv_by_definition(&taps, &xin, in_len, co, t);
                    let got = out[co * n + t] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{c_in}->{c_out} k{k} d{d} n{n}: [{co}][{t}] {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Every direct kernel this CPU runs (AVX-512 only where its shape fits), called on its
    /// own, so that the AVX2 one is checked on AVX-512 machines too.
    #[cfg(target_arch = "x86_64")]
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

    #[cfg(target_arch = "x86_64")]
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

    #[test]
    fn tiled_strided_convolutions_match_the_definition() {
        let mut rnd = noise(5);
        // (c_in, c_out, kernel, stride): phase-split direct kernel (where the CPU has it),
        // a kernel that is no multiple of its stride, and a depth left to im2col + GEMM.
        for (c_in, c_out, k, s) in [(16, 24, 8, 4), (6, 8, 7, 3), (96, 16, 12, 4)] {
            let len = 9001;
            let x = Signal::new(c_in, len, (0..c_in * len).map(|_| rnd()).collect());
            let weight: Vec<f32> = (0..c_out * c_in * k).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let taps = Taps {
                weight: &weight,
                bias: &bias,
                kernel: k,
                stride: s,
                dilation: 1,
            };
            let view = Padded {
                x: &x,
                left: 3,
                right: 2,
                reflect: false,
            };
            let got = taps.conv_tiled(view, false, &BufferPool::default());
            let padded = view.gather(0, view.len(), false);
            let t_out = (view.len() - k) / s + 1;
            assert_eq!((got.channels, got.len), (c_out, t_out));
            for co in 0..c_out {
                for t in (0..t_out).step_by(7) {
                    let mut want = bias[co] as f64;
                    for ci in 0..c_in {
                        for kk in 0..k {
                            want += weight[(co * c_in + ci) * k + kk] as f64
                                * padded[ci * view.len() + t * s + kk] as f64;
                        }
                    }
                    let err = (got.row(co)[t] as f64 - want).abs();
                    assert!(
                        err < 1e-4,
                        "{c_in}->{c_out} k{k} s{s}: [{co}][{t}] off by {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn buffer_pool_reuses_the_smallest_fit_and_keeps_the_largest() {
        let pool = BufferPool::default();
        for len in [10, 1000, 100, 5000, 50] {
            pool.give(vec![1.0; len]);
        }
        let buf = pool.take(80);
        assert_eq!((buf.len(), buf.capacity()), (80, 100));
        let bigger = pool.take(20_000);
        assert_eq!(bigger.len(), 20_000);
        // Of the three largest free ones (5000, 1000, 50), those that fit in the budget together.
        let kept = pool.retain(4 * 5100);
        let sizes: Vec<usize> = kept.iter().map(Vec::capacity).collect();
        assert_eq!(sizes, vec![5000, 50]);
    }

    #[test]
    fn exp_neg_matches_exp_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max((exp_neg(x) as f64 - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp_neg(-1000.0) < 2e-38 && exp_neg(f32::NEG_INFINITY) < 2e-38);
        assert_eq!(exp_neg(0.0), 1.0);
    }

    #[test]
    fn polyphase_transpose_matches_the_definition() {
        let mut rnd = noise(7);
        // (c_in, c_out, kernel, stride, frames, left, right): one block, and many tiles; a
        // kernel that is not a multiple of the stride; EnCodec's and causal trims.
        for (c_in, c_out, k, s, t, l, r) in [
            (6, 4, 8, 4, 37, 2, 2),
            (3, 2, 7, 3, 20, 4, 0),
            (4, 3, 16, 8, 9000, 4, 4),
        ] {
            let x = Signal::new(c_in, t, (0..c_in * t).map(|_| rnd()).collect());
            let w: Vec<f32> = (0..c_in * c_out * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let poly = PolyphaseTranspose::new(&w, &b, c_in, k, s);
            for elu_first in [false, true] {
                let input = if elu_first {
                    elu(&x, &BufferPool::default())
                } else {
                    x.clone()
                };
                let want = direct(&input, &w, &b, k, s, l, r);
                let got = poly.forward(&x, (l, r), elu_first, &BufferPool::default());
                assert_eq!((got.channels, got.len), (want.channels, want.len));
                let err = got
                    .data
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    err < 1e-4,
                    "{c_in}->{c_out} k{k} s{s} T{t}: max error {err}"
                );
            }
        }
    }
}
