//! Centred short-time Fourier transform (periodic Hann window, reflect padding) and its
//! window-normalised overlap-add inverse. Phase reconstruction from magnitudes alone lives
//! with the tokenizer that needs it (`codec::magnitude::phase`).
//!
//! Frame `t` is centred on sample `t * hop`, and a clip of `len` samples has
//! `ceil(len / hop)` frames, the frame grid of EnCodec.

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Frames transformed per rayon task.
const CHUNK: usize = 32;

/// A planned STFT of one size and hop.
pub struct Stft {
    n_fft: usize,
    hop: usize,
    window: Vec<f32>,
    forward: Arc<dyn Fft<f32>>,
    inverse: Arc<dyn Fft<f32>>,
}

impl Stft {
    pub fn new(n_fft: usize, hop: usize) -> Self {
        assert!(n_fft >= 2 && n_fft.is_multiple_of(2) && hop >= 1 && hop <= n_fft);
        let window = (0..n_fft)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / n_fft as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let mut planner = FftPlanner::new();
        Stft {
            n_fft,
            hop,
            window,
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        }
    }

    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Frequency bins per frame (`n_fft / 2 + 1`).
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of a clip of `len` samples: `ceil(len / hop)`.
    pub fn num_frames(&self, len: usize) -> usize {
        len.div_ceil(self.hop)
    }

    /// The magnitude a full-scale sinusoid reaches in its bin (`sum(window) / 2`): dividing
    /// by it puts magnitudes on a "sinusoid amplitude" scale where 0 dB is full scale.
    pub fn amplitude_scale(&self) -> f32 {
        self.window.iter().sum::<f32>() / 2.0
    }

    /// Length of the padded buffer that `frames` frames span.
    fn padded_len(&self, frames: usize) -> usize {
        (frames.max(1) - 1) * self.hop + self.n_fft
    }

    /// Complex STFT `[frames][bins]` of `x` (centred, reflect-padded; zero beyond one
    /// reflection).
    pub fn forward(&self, x: &[f32]) -> (Vec<Complex32>, usize) {
        let frames = self.num_frames(x.len());
        if frames == 0 {
            return (Vec::new(), 0);
        }
        let half = (self.n_fft / 2) as isize;
        let len = x.len() as isize;
        let padded: Vec<f32> = (0..self.padded_len(frames) as isize)
            .map(|i| {
                let mut j = i - half;
                if j < 0 {
                    j = -j;
                } else if j >= len {
                    j = 2 * (len - 1) - j;
                }
                if (0..len).contains(&j) {
                    x[j as usize]
                } else {
                    0.0
                }
            })
            .collect();
        (self.analyse_padded(&padded, frames), frames)
    }

    /// Complex STFT `[frames][bins]` on librosa's frame grid (`stft(center=True,
    /// pad_mode="constant")`): the clip zero-padded by `n_fft / 2` on both sides, giving
    /// `1 + len / hop` frames. `eval` uses it so its features match librosa frame for frame;
    /// the tokenizer keeps [`Stft::forward`].
    pub fn forward_zero_padded(&self, x: &[f32]) -> (Vec<Complex32>, usize) {
        let frames = 1 + x.len() / self.hop;
        let half = self.n_fft / 2;
        let mut padded = vec![0.0f32; self.padded_len(frames)];
        let n = x.len().min(padded.len() - half);
        padded[half..half + n].copy_from_slice(&x[..n]);
        (self.analyse_padded(&padded, frames), frames)
    }

    /// STFT of an already padded buffer: frame `t` is `padded[t * hop .. t * hop + n_fft]`.
    pub(crate) fn analyse_padded(&self, padded: &[f32], frames: usize) -> Vec<Complex32> {
        let (n_fft, hop, bins) = (self.n_fft, self.hop, self.bins());
        let mut out = vec![Complex32::default(); frames * bins];
        out.par_chunks_mut(bins * CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut buf = vec![Complex32::default(); n_fft];
                let mut scratch =
                    vec![Complex32::default(); self.forward.get_inplace_scratch_len()];
                for (j, row) in chunk.chunks_mut(bins).enumerate() {
                    let start = (c * CHUNK + j) * hop;
                    for ((b, &s), &w) in buf.iter_mut().zip(&padded[start..]).zip(&self.window) {
                        *b = Complex32::new(s * w, 0.0);
                    }
                    self.forward.process_with_scratch(&mut buf, &mut scratch);
                    row.copy_from_slice(&buf[..bins]);
                }
            });
        out
    }

    /// Sum of squared windows over the padded buffer of `frames` frames (the overlap-add
    /// normaliser).
    pub(crate) fn window_sum(&self, frames: usize) -> Vec<f32> {
        let mut norm = vec![0.0f32; self.padded_len(frames)];
        for t in 0..frames {
            let start = t * self.hop;
            for (n, &w) in norm[start..start + self.n_fft].iter_mut().zip(&self.window) {
                *n += w * w;
            }
        }
        norm
    }

    /// Window-normalised overlap-add of the inverse transforms of `spec` into the padded
    /// buffer (the least-squares inverse of [`Stft::analyse_padded`]).
    pub(crate) fn synthesise_padded(
        &self,
        spec: &[Complex32],
        frames: usize,
        norm: &[f32],
    ) -> Vec<f32> {
        let (n_fft, hop, bins) = (self.n_fft, self.hop, self.bins());
        let mut out = vec![0.0f32; self.padded_len(frames)];
        let block = CHUNK * 8;
        let mut time = vec![0.0f32; block * n_fft];
        let scale = 1.0 / n_fft as f32;
        for b0 in (0..frames).step_by(block) {
            let nb = block.min(frames - b0);
            time[..nb * n_fft]
                .par_chunks_mut(n_fft * CHUNK)
                .enumerate()
                .for_each(|(c, chunk)| {
                    let mut buf = vec![Complex32::default(); n_fft];
                    let mut scratch =
                        vec![Complex32::default(); self.inverse.get_inplace_scratch_len()];
                    for (j, frame) in chunk.chunks_mut(n_fft).enumerate() {
                        let t = b0 + c * CHUNK + j;
                        let row = &spec[t * bins..(t + 1) * bins];
                        buf[..bins].copy_from_slice(row);
                        for k in bins..n_fft {
                            buf[k] = row[n_fft - k].conj();
                        }
                        self.inverse.process_with_scratch(&mut buf, &mut scratch);
                        for ((f, b), &w) in frame.iter_mut().zip(&buf).zip(&self.window) {
                            *f = b.re * scale * w;
                        }
                    }
                });
            for j in 0..nb {
                let start = (b0 + j) * hop;
                for (o, &f) in out[start..start + n_fft]
                    .iter_mut()
                    .zip(&time[j * n_fft..(j + 1) * n_fft])
                {
                    *o += f;
                }
            }
        }
        for (o, &n) in out.iter_mut().zip(norm) {
            if n > 1e-8 {
                *o /= n;
            }
        }
        out
    }

    /// Inverse STFT: `frames * hop` samples (the centred padding removed).
    pub fn inverse(&self, spec: &[Complex32], frames: usize) -> Vec<f32> {
        if frames == 0 {
            return Vec::new();
        }
        let padded = self.synthesise_padded(spec, frames, &self.window_sum(frames));
        self.crop(&padded, frames)
    }

    pub(crate) fn crop(&self, padded: &[f32], frames: usize) -> Vec<f32> {
        let half = self.n_fft / 2;
        padded[half..half + frames * self.hop].to_vec()
    }
}
