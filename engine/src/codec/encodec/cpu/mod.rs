//! CPU kernels for EnCodec's convolutions, working on planar `[C][T]` buffers.
//!
//! candle's CPU convolution builds a `[T, C*K]` im2col copy (hundreds of MB at 32 kHz) and then
//! transposes its result; the final 64->1 convolution became a 0.3 GFLOP operation taking 0.7 s.
//! Here a convolution is `K` matrix products, one per kernel tap, each reading the input through
//! strides and accumulating straight into the output, so nothing is copied and every product is
//! a large GEMM that runs near the machine's matmul rate.
//!
//! The kernels are split by what they work on: [`buffers`] holds the planar signals (with
//! their whole-signal ELU and sum), their padded views and the buffers recycled between layers
//! and tiles; [`elementwise`] the slice kernels (activations, axpy) and the LSTM's dense
//! products; [`taps`] a convolution's weights; [`conv`] convolutions as matrix products
//! and the tiled drivers (fused residual units included); [`direct`] the hand-written
//! AVX-512 and AVX2 convolution kernels those drivers pick when the CPU has them; and
//! [`transpose`] the polyphase transposed convolution.

mod buffers;
mod conv;
mod direct;
mod elementwise;
mod taps;
mod transpose;

pub use buffers::{add_assign, elu, BufferPool, Padded, Signal};
pub use conv::residual_tiled;
#[cfg(target_arch = "x86_64")]
pub(crate) use direct::avx512_enabled;
pub use direct::kernel_isa;
pub(crate) use elementwise::exp_neg;
pub use elementwise::linear;
pub use taps::Taps;
pub use transpose::PolyphaseTranspose;

use gemm::Parallelism;

fn parallelism(flops: usize) -> Parallelism {
    if flops > 1 << 20 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::Taps;

    /// Seeded uniform noise in [-0.5, 0.5) (a linear congruential generator).
    pub fn noise(seed: u32) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    /// Output `[co][t]` of a stride-1 convolution over rows `in_stride` apart, in f64.
    pub fn conv_by_definition(
        taps: &Taps,
        xin: &[f32],
        in_stride: usize,
        co: usize,
        t: usize,
    ) -> f64 {
        let (k, d) = (taps.kernel, taps.dilation);
        let depth = taps.weight.len() / taps.bias.len();
        let mut sum = taps.bias[co] as f64;
        for (tap, w) in taps.weight[co * depth..][..depth].iter().enumerate() {
            let (ci, kk) = (tap / k, tap % k);
            sum += *w as f64 * xin[ci * in_stride + t + kk * d] as f64;
        }
        sum
    }
}
