//! The model's own CPU kernels, apart from the network that calls them.
//!
//! Each is written here because candle 0.11's own op falls short on the CPU:
//! - ops with a hand-written backward ([`linear`], [`embed`], [`attention`] with rotary
//!   positions inside, [`silu_gate`], [`rms_norm`], [`cross_entropy`]): candle's fused versions
//!   drop gradients and its generic ones run as several single-threaded passes, each gradient
//!   allocated, zeroed and added;
//! - [`forward`]: the inference block stack on plain slices;
//! - [`fast_exp`]: the vectorised exponential of the softmaxes, which keeps a guided
//!   iteration close to its matmul cost.
//!
//! Every op takes contiguous f32 storage; other devices and dtypes use candle's ops (the
//! callers choose).

pub mod attention;
pub mod cross_entropy;
pub mod embed;
pub mod fast_exp;
pub mod forward;
pub mod linear;
pub mod rms_norm;
pub mod silu_gate;

use candle_core::{bail, CpuStorage, Layout, Result, Storage};

/// The f32 values of a contiguous CPU tensor, or an error naming the op that needed them.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => bail!("{op} needs contiguous f32 tensors"),
    }
}

/// The f32 values of a contiguous tensor held in CPU storage (a borrowed `storage_and_layout`),
/// or an error naming the op that needed them.
pub fn storage_f32<'a>(storage: &'a Storage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => contiguous_f32(cpu, layout, op),
        _ => bail!("{op} needs tensors in CPU memory"),
    }
}
