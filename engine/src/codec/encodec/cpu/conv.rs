//! Convolutions as matrix products: [`Taps`] applies a convolution to an input buffer as
//! one GEMM over an im2col copy, one GEMM per tap or a direct kernel from [`super::direct`],
//! and drives it tile by tile over long signals; [`residual_tiled`] fuses a whole residual
//! unit per tile. Kept apart from the SIMD kernels, which only ever see one block of rows,
//! so that the choice of method and the tiling read in one place.

use super::buffers::{sized, tile_len, with_scratch, BufferPool, Padded, SharedOut, Signal};
use super::direct::{direct_kernel, row_stride, DirectOut};
use super::elementwise::{axpy, elu_into};
use super::parallelism;
use super::taps::Taps;
use gemm::Parallelism;
use rayon::prelude::*;

/// Largest `c_in * kernel` of a stride-1 convolution that is computed as one GEMM on an
/// im2col copy (strided convolutions always are); deeper ones are already efficient per tap.
const IM2COL_MAX_DEPTH: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::super::tests::{conv_by_definition, noise};
    use super::*;

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
}
