//! EnCodec's LSTM block: a stacked `nn.LSTM` over time with a skip connection.
//!
//! The input projection of every time step is one large matmul; only the recurrent product
//! `W_hh h` stays sequential, and it runs as a hand-vectorised, two-way parallel matrix-vector
//! product because a per-step tensor op would cost more in dispatch than in arithmetic.

use super::cpu::{self, Signal};
use super::weights::Checkpoint;
use anyhow::Result;
use candle_core::Tensor;

struct Layer {
    /// `[4H, H]` input weights (transposed for `x @ W^T`), as a tensor for the big matmul.
    w_ih_t: Tensor,
    /// The input weights `[4H][H]` and summed bias as buffers for the CPU path.
    w_ih: Vec<f32>,
    bias_cpu: Vec<f32>,
    /// Recurrent weights `[4H][H]`, row-major (gate order i, f, g, o as in PyTorch).
    w_hh: Vec<f32>,
    /// `b_ih + b_hh`, `[4H]`.
    bias: Tensor,
}

pub struct Lstm {
    dim: usize,
    layers: Vec<Layer>,
}

impl Lstm {
    pub fn load(ck: &Checkpoint, name: &str, dim: usize, num_layers: usize) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|l| {
                let w_ih = ck.get(&format!("{name}.lstm.weight_ih_l{l}"), &[4 * dim, dim])?;
                let w_hh = ck.get(&format!("{name}.lstm.weight_hh_l{l}"), &[4 * dim, dim])?;
                let b_ih = ck.get(&format!("{name}.lstm.bias_ih_l{l}"), &[4 * dim])?;
                let b_hh = ck.get(&format!("{name}.lstm.bias_hh_l{l}"), &[4 * dim])?;
                let bias = (b_ih + b_hh)?;
                Ok(Layer {
                    w_ih_t: w_ih.t()?.contiguous()?,
                    w_ih: w_ih.flatten_all()?.to_vec1()?,
                    bias_cpu: bias.to_vec1()?,
                    w_hh: w_hh.flatten_all()?.to_vec1()?,
                    bias,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Lstm { dim, layers })
    }

    /// CPU path of [`Lstm::forward`] on a planar `[C][T]` signal.
    pub fn forward_cpu(&self, x: &Signal) -> Signal {
        let (c, t) = (x.channels, x.len);
        let mut input = vec![0.0f32; t * c]; // time-major [T][C]
        for ch in 0..c {
            for (step, v) in x.row(ch).iter().enumerate() {
                input[step * c + ch] = *v;
            }
        }
        let mut h_seq = input.clone();
        for layer in &self.layers {
            let gates_x = cpu::linear(&h_seq, t, c, &layer.w_ih, &layer.bias_cpu);
            h_seq = run_recurrence(&gates_x, &layer.w_hh, self.dim, t);
        }
        let mut out = vec![0.0f32; c * t];
        for step in 0..t {
            for ch in 0..c {
                out[ch * t + step] = h_seq[step * c + ch] + input[step * c + ch];
            }
        }
        Signal::new(c, t, out)
    }

    /// `x`: `[1, C, T]` -> `[1, C, T]` (LSTM output + input).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        anyhow::ensure!(b == 1 && c == self.dim, "LSTM input shape {:?}", x.dims());
        let input = x.squeeze(0)?.t()?.contiguous()?; // [T, C]
        let mut h_seq = input.clone();
        for layer in &self.layers {
            let gates_x = h_seq.matmul(&layer.w_ih_t)?.broadcast_add(&layer.bias)?;
            let gates_x: Vec<f32> = gates_x.flatten_all()?.to_vec1()?;
            let out = run_recurrence(&gates_x, &layer.w_hh, self.dim, t);
            h_seq = Tensor::from_vec(out, (t, self.dim), x.device())?;
        }
        Ok((h_seq + input)?.t()?.unsqueeze(0)?.contiguous()?)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Runs the LSTM cell over `steps` given the precomputed input gates `[steps][4H]`.
fn run_recurrence(gates_x: &[f32], w_hh: &[f32], hidden: usize, steps: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; steps * hidden];
    let mut h = vec![0.0f32; hidden];
    let mut c = vec![0.0f32; hidden];
    let mut gates = vec![0.0f32; 4 * hidden];
    for t in 0..steps {
        gates.copy_from_slice(&gates_x[t * 4 * hidden..(t + 1) * 4 * hidden]);
        matvec_add(w_hh, &h, &mut gates);
        let (i_g, rest) = gates.split_at(hidden);
        let (f_g, rest) = rest.split_at(hidden);
        let (g_g, o_g) = rest.split_at(hidden);
        for k in 0..hidden {
            let i = sigmoid(i_g[k]);
            let f = sigmoid(f_g[k]);
            let g = g_g[k].tanh();
            let o = sigmoid(o_g[k]);
            c[k] = f * c[k] + i * g;
            h[k] = o * c[k].tanh();
        }
        out[t * hidden..(t + 1) * hidden].copy_from_slice(&h);
    }
    out
}

/// `y += W x` for row-major `W` `[rows][x.len()]`, split over two threads when it is large.
fn matvec_add(w: &[f32], x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    let rows = y.len();
    if rows * cols < 1 << 16 {
        return matvec_rows(w, x, y);
    }
    let half = rows / 2;
    let (y0, y1) = y.split_at_mut(half);
    let (w0, w1) = w.split_at(half * cols);
    rayon::join(|| matvec_rows(w0, x, y0), || matvec_rows(w1, x, y1));
}

fn matvec_rows(w: &[f32], x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
        *out += dot(row, x);
    }
}

/// Dot product, with AVX2 + FMA when the CPU has them (the build targets baseline x86-64).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // Safety: the features were just detected.
        return unsafe { dot_fma(a, b) };
    }
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 32;
    let mut acc = [0.0f32; L];
    let chunks = a.len() / L;
    for i in 0..chunks {
        let (ca, cb) = (&a[i * L..i * L + L], &b[i * L..i * L + L]);
        for k in 0..L {
            acc[k] = ca[k].mul_add(cb[k], acc[k]);
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * L..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// Dot product with 16 independent accumulators so the compiler can use wide registers.
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let chunks = a.len() / L;
    for i in 0..chunks {
        let (ca, cb) = (&a[i * L..i * L + L], &b[i * L..i * L + L]);
        for k in 0..L {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * L..a.len() {
        sum += a[i] * b[i];
    }
    sum
}
