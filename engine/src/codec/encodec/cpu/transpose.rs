//! The transposed convolution of the decoder's upsampling layers, computed per block of
//! frames as one GEMM over all its stride phases ([`PolyphaseTranspose`]). Kept apart from
//! the ordinary convolutions because it packs its weights differently and writes its output
//! interleaved, sharing only the buffers with them.

use super::buffers::{sized, with_scratch, BufferPool, Scratch, SharedOut, Signal};
use super::elementwise::elu_into;
use super::parallelism;
use gemm::Parallelism;
use rayon::prelude::*;

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
mod tests {
    use super::super::elu;
    use super::super::tests::noise;
    use super::*;

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
