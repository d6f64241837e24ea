//! The analysis front end shared by every feature: librosa's default power spectrogram
//! (n_fft 2048, hop 512, periodic Hann, centred with zero padding, `1 + len / hop` frames)
//! and its 128-band Slaney mel spectrogram in dB.

use super::stft::Stft;

/// FFT size of the analysis STFT (librosa's default).
pub const N_FFT: usize = 2048;
/// Hop of the analysis STFT; one feature frame is `HOP / sample_rate` seconds.
pub const HOP: usize = 512;
/// Mel bands of the onset-strength spectrogram (librosa's default).
pub const N_MELS: usize = 128;

/// A real-valued time-frequency matrix, `[frames][rows]` row-major (one row of `rows`
/// values per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub frames: usize,
    pub rows: usize,
    pub data: Vec<f64>,
}

impl Frames {
    pub fn zeros(frames: usize, rows: usize) -> Self {
        Frames {
            frames,
            rows,
            data: vec![0.0; frames * rows],
        }
    }

    /// The values of frame `t`.
    pub fn frame(&self, t: usize) -> &[f64] {
        &self.data[t * self.rows..(t + 1) * self.rows]
    }

    pub fn frame_mut(&mut self, t: usize) -> &mut [f64] {
        &mut self.data[t * self.rows..(t + 1) * self.rows]
    }

    /// Mean over frames of each row (zeros when there are no frames).
    pub fn mean_frame(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.rows];
        for t in 0..self.frames {
            for (a, &b) in m.iter_mut().zip(self.frame(t)) {
                *a += b;
            }
        }
        if self.frames > 0 {
            m.iter_mut().for_each(|v| *v /= self.frames as f64);
        }
        m
    }
}

/// Power spectrogram `|STFT|^2`, `[frames][N_FFT / 2 + 1]`, on librosa's frame grid.
pub fn power_spectrogram(x: &[f32]) -> Frames {
    let stft = Stft::new(N_FFT, HOP);
    let (spec, frames) = stft.forward_zero_padded(x);
    Frames {
        frames,
        rows: stft.bins(),
        data: spec.iter().map(|c| c.norm_sqr() as f64).collect(),
    }
}

/// librosa's `power_to_db(melspectrogram(S=power))` with its defaults (128 Slaney bands
/// from 0 Hz to Nyquist, `ref = 1`, `amin = 1e-10`, `top_db = 80`): the representation
/// whose positive differences make the onset strength envelope.
pub fn mel_db(power: &Frames, sample_rate: u32) -> Frames {
    let bins = power.rows;
    let fb = mel_filterbank(sample_rate, N_FFT, N_MELS, 0.0, sample_rate as f64 / 2.0);
    let mut out = Frames::zeros(power.frames, N_MELS);
    for t in 0..power.frames {
        let p = power.frame(t);
        for (m, o) in out.frame_mut(t).iter_mut().enumerate() {
            let e: f64 = fb[m * bins..(m + 1) * bins]
                .iter()
                .zip(p)
                .map(|(w, v)| w * v)
                .sum();
            *o = 10.0 * e.max(1e-10).log10();
        }
    }
    let max = out.data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let floor = max - 80.0;
    out.data.iter_mut().for_each(|v| *v = v.max(floor));
    out
}

/// Seconds at the centre of frame `t`.
pub fn frame_time(t: usize, sample_rate: u32) -> f64 {
    (t * HOP) as f64 / sample_rate as f64
}

/// The frame whose centre is nearest to `secs` (librosa's `time_to_frames` floors; nearest is
/// what grid look-ups want).
pub fn time_frame(secs: f64, sample_rate: u32) -> usize {
    (secs * sample_rate as f64 / HOP as f64).round().max(0.0) as usize
}

/// `np.median` of a slice (mean of the two middle values for even lengths); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

fn hz_to_mel(f: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")`:
/// `[n_mels][n_fft / 2 + 1]`, row-major.
pub fn mel_filterbank(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
) -> Vec<f64> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| k as f64 * sample_rate as f64 / n_fft as f64)
        .collect();
    let (m0, m1) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let hz: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(m0 + (m1 - m0) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0.0f64; n_mels * bins];
    for m in 0..n_mels {
        let (lo, mid, hi) = (hz[m], hz[m + 1], hz[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            w[m * bins + k] = lower.min(upper).max(0.0) * enorm;
        }
    }
    w
}
