//! The SEANet building blocks: padded convolutions and dilated residual units.

use super::config::EncodecConfig;
use super::cpu::{self, BufferPool, Signal};
use super::weights::Checkpoint;
use super::{ConvSpec, TransposeSpec};
use anyhow::Result;
use candle_core::Tensor;

/// Output frames below which a convolution runs as whole-signal GEMMs instead of parallel
/// tiles (a tile is at least this long).
const TILED_MIN_FRAMES: usize = 256;

/// How a convolution pads its input so that the output has `ceil(len / stride)` frames.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PadMode {
    Reflect,
    Zeros,
}

/// `nn.Conv1d` with EnCodec's padding rules (causal or centred, plus the right-side extra
/// padding that makes the last window complete).
pub struct Conv1d {
    weight: Tensor,
    /// The same weight and bias as plain buffers for the CPU kernels.
    weight_cpu: Vec<f32>,
    bias_cpu: Vec<f32>,
    /// The weight as `[C_out, C_in]` when the kernel is 1 wide: then the conv is one matmul.
    pointwise: Option<Tensor>,
    bias: Tensor,
    stride: usize,
    dilation: usize,
    kernel: usize,
    causal: bool,
    pad_mode: PadMode,
}

impl Conv1d {
    pub fn load(ck: &Checkpoint, spec: &ConvSpec, cfg: &EncodecConfig) -> Result<Self> {
        let ConvSpec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
            dilation,
        } = spec.clone();
        let weight = ck.conv_weight(&format!("{name}.conv"), &[c_out, c_in, kernel])?;
        let bias = ck
            .get(&format!("{name}.conv.bias"), &[c_out])?
            .reshape((c_out, 1))?;
        let pointwise = if kernel == 1 {
            Some(weight.reshape((c_out, c_in))?)
        } else {
            None
        };
        Ok(Conv1d {
            weight_cpu: weight.flatten_all()?.to_vec1()?,
            bias_cpu: bias.flatten_all()?.to_vec1()?,
            weight,
            pointwise,
            bias,
            stride,
            dilation,
            kernel,
            causal: cfg.use_causal_conv,
            pad_mode: if cfg.pad_mode == "reflect" {
                PadMode::Reflect
            } else {
                PadMode::Zeros
            },
        })
    }

    /// Left and right padding for an input of `len` samples: EnCodec pads the end further so
    /// the last (partial) window is complete, giving `ceil(len / stride)` output frames.
    fn padding(&self, len: usize) -> (usize, usize) {
        let effective_kernel = (self.kernel - 1) * self.dilation + 1;
        let padding_total = effective_kernel - self.stride;
        let extra = (self.stride - len % self.stride) % self.stride;
        if self.causal {
            (padding_total, extra)
        } else {
            let right = padding_total / 2;
            (padding_total - right, right + extra)
        }
    }

    /// `x` seen with this convolution's padding.
    fn pad_view<'a>(&self, x: &'a Signal) -> cpu::Padded<'a> {
        let (left, right) = self.padding(x.len);
        cpu::Padded {
            x,
            left,
            right,
            reflect: self.pad_mode == PadMode::Reflect,
        }
    }

    /// CPU path of [`Conv1d::forward`], applied to `elu(x)` when `elu_first` (ELU commutes
    /// with padding, so it is fused into the convolution's input read).
    pub fn forward_cpu(&self, x: &Signal, elu_first: bool, pool: &BufferPool) -> Signal {
        let view = self.pad_view(x);
        if x.len / self.stride >= 2 * TILED_MIN_FRAMES {
            return self.taps().conv_tiled(view, elu_first, pool);
        }
        let input = Signal::new(
            x.channels,
            view.len(),
            view.gather(0, view.len(), elu_first),
        );
        self.taps().conv(&input, pool)
    }

    /// `C_in->C_out kK sS [dD]`, for timing labels.
    pub fn geometry(&self) -> String {
        let c_out = self.bias_cpu.len();
        let c_in = self.weight_cpu.len() / (c_out * self.kernel);
        let dilation = if self.dilation > 1 {
            format!(" d{}", self.dilation)
        } else {
            String::new()
        };
        format!(
            "{c_in}->{c_out} k{} s{}{dilation}",
            self.kernel, self.stride
        )
    }

    fn taps(&self) -> cpu::Taps<'_> {
        cpu::Taps {
            weight: &self.weight_cpu,
            bias: &self.bias_cpu,
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
        }
    }

    /// `x`: `[B, C_in, T]` -> `[B, C_out, ceil(T / stride)]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (left, right) = self.padding(x.dim(2)?);
        let y = match &self.pointwise {
            Some(w) if left == 0 && right == 0 => w.broadcast_matmul(x)?,
            _ => {
                let x = pad1d(x, left, right, self.pad_mode)?;
                x.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?
            }
        };
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// Pads the last dimension like `torch.nn.functional.pad`, including transformers' guard for
/// inputs shorter than the reflection (zero-extend first, reflect, then cut the extension).
fn pad1d(x: &Tensor, left: usize, right: usize, mode: PadMode) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    if mode == PadMode::Zeros {
        return Ok(x.pad_with_zeros(2, left, right)?);
    }
    let len = x.dim(2)?;
    let max_pad = left.max(right);
    let extra = if len <= max_pad { max_pad - len + 1 } else { 0 };
    let x = if extra > 0 {
        x.pad_with_zeros(2, 0, extra)?
    } else {
        x.clone()
    };
    let n = len + extra;
    let index: Vec<u32> = (0..left + n + right)
        .map(|i| {
            let i = i as isize - left as isize;
            let last = n as isize - 1;
            let r = if i < 0 {
                -i
            } else if i > last {
                2 * last - i
            } else {
                i
            };
            r as u32
        })
        .collect();
    let index = Tensor::from_vec(index, left + n + right, x.device())?;
    let padded = x.contiguous()?.index_select(&index, 2)?;
    Ok(padded.narrow(2, 0, left + n + right - extra)?)
}

/// `nn.ConvTranspose1d` followed by EnCodec's trimming of the padding it introduces.
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    poly: cpu::PolyphaseTranspose,
    stride: usize,
    kernel: usize,
    causal: bool,
    trim_right_ratio: f64,
}

impl ConvTranspose1d {
    pub fn load(ck: &Checkpoint, spec: &TransposeSpec, cfg: &EncodecConfig) -> Result<Self> {
        let TransposeSpec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
        } = spec.clone();
        let weight = ck.conv_weight(&format!("{name}.conv"), &[c_in, c_out, kernel])?;
        let bias = ck.get(&format!("{name}.conv.bias"), &[c_out])?;
        let poly = cpu::PolyphaseTranspose::new(
            &weight.flatten_all()?.to_vec1::<f32>()?,
            &bias.to_vec1::<f32>()?,
            c_in,
            kernel,
            stride,
        );
        Ok(ConvTranspose1d {
            poly,
            weight,
            bias: bias.reshape((c_out, 1))?,
            stride,
            kernel,
            causal: cfg.use_causal_conv,
            trim_right_ratio: cfg.trim_right_ratio,
        })
    }

    /// Samples trimmed from the (left, right) of the full transposed-convolution output.
    fn trim(&self) -> (usize, usize) {
        let padding_total = self.kernel - self.stride;
        let right = if self.causal {
            (padding_total as f64 * self.trim_right_ratio).ceil() as usize
        } else {
            padding_total / 2
        };
        (padding_total - right, right)
    }

    /// `C_in->C_out kK sS`, for timing labels.
    pub fn geometry(&self) -> String {
        let d = self.weight.dims();
        format!("{}->{} k{} s{}", d[0], d[1], self.kernel, self.stride)
    }

    /// CPU path of [`ConvTranspose1d::forward`], applied to `elu(x)` when `elu_first`.
    pub fn forward_cpu(&self, x: &Signal, elu_first: bool, pool: &BufferPool) -> Signal {
        self.poly.forward(x, self.trim(), elu_first, pool)
    }

    /// `x`: `[B, C_in, T]` -> `[B, C_out, T * stride]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)?;
        let (left, right) = self.trim();
        let len = y.dim(2)?;
        Ok(y.narrow(2, left, len - left - right)?
            .broadcast_add(&self.bias)?)
    }
}

/// ELU -> conv(k, dilation) to `dim / compress` -> ELU -> conv(1) back to `dim`, plus the input.
pub struct ResidualUnit {
    conv1: Conv1d,
    conv2: Conv1d,
}

impl ResidualUnit {
    pub fn new(conv1: Conv1d, conv2: Conv1d) -> Self {
        ResidualUnit { conv1, conv2 }
    }

    /// The first convolution's geometry (the second is its 1x1 way back), for timing labels.
    pub fn geometry(&self) -> String {
        self.conv1.geometry()
    }

    /// CPU path of [`ResidualUnit::forward`].
    pub fn forward_cpu(&self, x: &Signal, pool: &BufferPool) -> Signal {
        let (c1, c2) = (&self.conv1, &self.conv2);
        if x.len >= 4096 && c2.kernel == 1 && c1.stride == 1 {
            return cpu::residual_tiled(x, c1.pad_view(x), c1.taps(), c2.taps(), pool);
        }
        let hidden = c1.forward_cpu(x, true, pool);
        let mut h = c2.forward_cpu(&hidden, true, pool);
        pool.give(hidden.data);
        cpu::add_assign(&mut h, x);
        h
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&x.elu(1.0)?)?;
        let h = self.conv2.forward(&h.elu(1.0)?)?;
        Ok((x + h)?)
    }
}
