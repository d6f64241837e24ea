//! EnCodec's LSTM block: a stacked `nn.LSTM` over time with a skip connection.
//!
//! The input projection of every time step is one large matmul; only the recurrent product
//! `W_hh h` stays sequential, and it runs as a hand-vectorised matrix-vector product on two
//! threads that own half of the hidden units each (see [`run_recurrence`]), because a
//! per-step tensor op would cost more in dispatch than in arithmetic.

use super::cpu::{self, Signal};
use super::weights::Checkpoint;
use anyhow::Result;
use candle_core::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Layer {
    /// `[4H, H]` input weights (transposed for `x @ W^T`), as a tensor for the big matmul.
    w_ih_t: Tensor,
    /// The input weights `[4H][H]` and summed bias as buffers for the CPU path.
    w_ih: Vec<f32>,
    bias_cpu: Vec<f32>,
    /// Recurrent weights with each unit's four gate rows adjacent (see [`interleave_gates`]).
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
                    w_hh: interleave_gates(&w_hh.flatten_all()?.to_vec1()?, dim),
                    bias,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Lstm { dim, layers })
    }

    /// `H xL`, for timing labels.
    pub fn geometry(&self) -> String {
        format!("{} x{}", self.dim, self.layers.len())
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

/// Hidden units whose gates are computed together before their (vectorised) cell update.
const UNIT_BLOCK: usize = 16;

/// `W_hh` `[4][H][H]` (PyTorch's gate-major rows) reordered to `[H][4][H]`: the four gate rows
/// of each hidden unit are adjacent, so a thread that owns a range of units reads one
/// contiguous block and never needs another thread's gates.
fn interleave_gates(w_hh: &[f32], hidden: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w_hh.len()];
    for k in 0..hidden {
        for g in 0..4 {
            out[(k * 4 + g) * hidden..][..hidden]
                .copy_from_slice(&w_hh[(g * hidden + k) * hidden..][..hidden]);
        }
    }
    out
}

/// Logistic function from one `exp` of a non-positive argument (no overflow, vectorisable).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = cpu::exp_neg(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// `tanh` from one `exp` of a non-positive argument: absolute error about 1e-7.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = cpu::exp_neg(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Raw pointers to the state that the two recurrence threads share.
struct SharedState {
    /// Double-buffered hidden state: step `t` reads `h[t % 2]` and writes `h[(t + 1) % 2]`.
    h: [*mut f32; 2],
    out: *mut f32,
    /// Steps each thread has finished; a thread starts step `t + 1` once the other reached it.
    done: [AtomicUsize; 2],
}

// Safety: threads write disjoint unit ranges of `h` and `out`, and a buffer is only read after
// both threads published the step that wrote it (release/acquire on `done`).
unsafe impl Sync for SharedState {}

/// Runs the LSTM cell over `steps` given the precomputed input gates `[steps][4H]` and the
/// gate-interleaved recurrent weights (see [`interleave_gates`]).
///
/// Each step streams all of `W_hh` (16.8 MB at H = 1024) for a matrix-vector product, so the
/// recurrence is bound by memory bandwidth. Two threads each own half of the hidden units
/// for the whole sequence and meet once per step by spinning on a counter: handing every
/// step to a thread pool cost a wake-up per step and ran at half the bandwidth.
fn run_recurrence(gates_x: &[f32], w: &[f32], hidden: usize, steps: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; steps * hidden];
    // Both hidden-state buffers outlive the threads that write them through raw pointers.
    let mut h0 = vec![0.0f32; hidden];
    let mut h1 = vec![0.0f32; hidden];
    let shared = SharedState {
        h: [h0.as_mut_ptr(), h1.as_mut_ptr()],
        out: out.as_mut_ptr(),
        done: [AtomicUsize::new(0), AtomicUsize::new(0)],
    };
    let dot4 = dot4_kernel();
    let two_threads = hidden >= 256
        && hidden.is_multiple_of(2 * UNIT_BLOCK)
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if two_threads {
        let half = hidden / 2;
        std::thread::scope(|scope| {
            let shared = &shared;
            scope.spawn(move || {
                recurrence_worker(
                    gates_x,
                    w,
                    hidden,
                    steps,
                    half..hidden,
                    shared,
                    Some(1),
                    dot4,
                )
            });
            recurrence_worker(gates_x, w, hidden, steps, 0..half, shared, Some(0), dot4);
        });
    } else {
        recurrence_worker(gates_x, w, hidden, steps, 0..hidden, &shared, None, dot4);
    }
    out
}

/// One thread's share of the recurrence: the units in `units`, every step. `me` is this
/// thread's index when two threads share the work (then it waits for the other after each
/// step), `None` when it runs alone.
#[allow(clippy::too_many_arguments)]
fn recurrence_worker(
    gates_x: &[f32],
    w: &[f32],
    hidden: usize,
    steps: usize,
    units: std::ops::Range<usize>,
    shared: &SharedState,
    me: Option<usize>,
    dot4: Dot4,
) {
    let mut cell = vec![0.0f32; units.len()];
    let mut gates = [0.0f32; 4 * UNIT_BLOCK];
    for t in 0..steps {
        // Safety: `h[t % 2]` was completed by both threads before this step (see below), and
        // this thread writes only its own units of `h[(t + 1) % 2]` and of `out`'s row `t`.
        let h_prev: &[f32] = unsafe { std::slice::from_raw_parts(shared.h[t % 2], hidden) };
        let h_next = shared.h[(t + 1) % 2];
        let gx = &gates_x[t * 4 * hidden..(t + 1) * 4 * hidden];
        for b0 in units.clone().step_by(UNIT_BLOCK) {
            let n = UNIT_BLOCK.min(units.end - b0);
            for u in 0..n {
                let k = b0 + u;
                let g = dot4(&w[k * 4 * hidden..(k + 1) * 4 * hidden], h_prev);
                for (gate, v) in g.into_iter().enumerate() {
                    gates[gate * UNIT_BLOCK + u] = v + gx[gate * hidden + k];
                }
            }
            let cell = &mut cell[b0 - units.start..][..n];
            let mut h_new = [0.0f32; UNIT_BLOCK];
            for u in 0..n {
                let i = sigmoid(gates[u]);
                let f = sigmoid(gates[UNIT_BLOCK + u]);
                let g = tanh(gates[2 * UNIT_BLOCK + u]);
                let o = sigmoid(gates[3 * UNIT_BLOCK + u]);
                cell[u] = f * cell[u] + i * g;
                h_new[u] = o * tanh(cell[u]);
            }
            unsafe {
                std::ptr::copy_nonoverlapping(h_new.as_ptr(), h_next.add(b0), n);
                std::ptr::copy_nonoverlapping(h_new.as_ptr(), shared.out.add(t * hidden + b0), n);
            }
        }
        if let Some(me) = me {
            shared.done[me].store(t + 1, Ordering::Release);
            let other = &shared.done[1 - me];
            let mut spins = 0u32;
            while other.load(Ordering::Acquire) < t + 1 {
                spins += 1;
                if spins < 1 << 14 {
                    std::hint::spin_loop();
                } else {
                    // The other thread is descheduled (a busy machine): let it run.
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Four dot products of consecutive `x.len()`-long rows of `w` with `x`.
type Dot4 = fn(&[f32], &[f32]) -> [f32; 4];

/// The fastest [`Dot4`] this CPU runs (the build targets baseline x86-64).
fn dot4_kernel() -> Dot4 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::avx512_enabled() {
            // Safety: the feature was detected.
            return |w, x| unsafe { dot4_avx512(w, x) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // Safety: the features were just detected.
            return |w, x| unsafe { dot4_fma(w, x) };
        }
    }
    dot4_generic
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot4_avx512(w: &[f32], x: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = x.len();
    assert!(w.len() >= 4 * n);
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 16 <= n {
        let xv = _mm512_loadu_ps(xp.add(i));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(r * n + i)), xv, *a);
        }
        i += 16;
    }
    add_dot4_tail(acc.map(|a| _mm512_reduce_add_ps(a)), w, x, i)
}

/// Explicit AVX2 + FMA: 2 accumulators per row (8 in flight, FMA latency x throughput on
/// Zen 3). Left to the compiler, `mul_add` over 8 lanes stayed scalar and the recurrence ran
/// at a third of the memory rate on AVX2-only CPUs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_fma(w: &[f32], x: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = x.len();
    assert!(w.len() >= 4 * n);
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut i = 0;
    while i + 16 <= n {
        let xv = [_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(xp.add(i + 8))];
        for (r, a) in acc.iter_mut().enumerate() {
            for (v, x) in xv.iter().enumerate() {
                let wv = _mm256_loadu_ps(wp.add(r * n + i + v * 8));
                a[v] = _mm256_fmadd_ps(wv, *x, a[v]);
            }
        }
        i += 16;
    }
    let sums = acc.map(|[a, b]| {
        let s = _mm256_add_ps(a, b);
        let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
    });
    add_dot4_tail(sums, w, x, i)
}

/// [`Dot4`] without SIMD assumptions: 8 accumulators per row so the compiler can vectorise.
fn dot4_generic(w: &[f32], x: &[f32]) -> [f32; 4] {
    const L: usize = 8;
    let n = x.len();
    let mut acc = [[0.0f32; L]; 4];
    let chunks = n / L;
    for c in 0..chunks {
        let xs = &x[c * L..c * L + L];
        for (r, a) in acc.iter_mut().enumerate() {
            let ws = &w[r * n + c * L..r * n + c * L + L];
            for l in 0..L {
                a[l] += ws[l] * xs[l];
            }
        }
    }
    add_dot4_tail(acc.map(|a| a.iter().sum::<f32>()), w, x, chunks * L)
}

/// Adds the products of the elements from `from` on to the four row sums.
#[inline(always)]
fn add_dot4_tail(mut out: [f32; 4], w: &[f32], x: &[f32], from: usize) -> [f32; 4] {
    let n = x.len();
    for j in from..n {
        for (r, o) in out.iter_mut().enumerate() {
            *o += w[r * n + j] * x[j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cell by its definition, in f64, on PyTorch's gate-major weights.
    fn reference(gates_x: &[f32], w_hh: &[f32], hidden: usize, steps: usize) -> Vec<f32> {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (mut h, mut c) = (vec![0.0f64; hidden], vec![0.0f64; hidden]);
        let mut out = Vec::new();
        for t in 0..steps {
            let gate = |g: usize, k: usize| {
                let row = &w_hh[(g * hidden + k) * hidden..][..hidden];
                gates_x[t * 4 * hidden + g * hidden + k] as f64
                    + row.iter().zip(&h).map(|(w, h)| *w as f64 * h).sum::<f64>()
            };
            let mut h_new = vec![0.0f64; hidden];
            for k in 0..hidden {
                let (i, f) = (sig(gate(0, k)), sig(gate(1, k)));
                let (g, o) = (gate(2, k).tanh(), sig(gate(3, k)));
                c[k] = f * c[k] + i * g;
                h_new[k] = o * c[k].tanh();
            }
            h = h_new;
            out.extend(h.iter().map(|v| *v as f32));
        }
        out
    }

    #[test]
    fn every_dot4_kernel_this_cpu_runs_matches_the_definition() {
        let mut rnd = cpu::tests::noise(5);
        let mut kernels: Vec<(&str, Dot4)> = vec![("generic", dot4_generic)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", |w, x| unsafe { dot4_avx512(w, x) }));
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                kernels.push(("avx2", |w, x| unsafe { dot4_fma(w, x) }));
            }
        }
        // A length with a tail past the last full vector of every kernel.
        for n in [1000, 37] {
            let x: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..4 * n).map(|_| rnd()).collect();
            for (name, dot4) in &kernels {
                let got = dot4(&w, &x);
                for (r, g) in got.iter().enumerate() {
                    let want: f64 = (0..n).map(|j| w[r * n + j] as f64 * x[j] as f64).sum();
                    assert!(
                        (*g as f64 - want).abs() < 1e-4,
                        "{name} n {n} row {r}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn recurrence_matches_the_definition_alone_and_on_two_threads() {
        let mut rnd = cpu::tests::noise(11);
        // 40 units run on one thread with a partial block; 512 on two threads.
        for (hidden, steps) in [(40, 7), (512, 12)] {
            let scale = 2.0 / (hidden as f32).sqrt();
            let w_hh: Vec<f32> = (0..4 * hidden * hidden).map(|_| scale * rnd()).collect();
            let gates_x: Vec<f32> = (0..steps * 4 * hidden).map(|_| 3.0 * rnd()).collect();
            let want = reference(&gates_x, &w_hh, hidden, steps);
            let got = run_recurrence(&gates_x, &interleave_gates(&w_hh, hidden), hidden, steps);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 2e-5, "H {hidden}: max error {err}");
        }
    }
}
