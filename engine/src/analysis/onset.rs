//! Onset strength (log-mel spectral flux) and onset picking, as librosa 0.11's
//! `onset.onset_strength` and `onset.onset_detect` with their defaults.

use super::spectrum::{median, Frames, HOP, N_FFT};

/// How the per-band flux is reduced to one value per frame. librosa's `onset_strength`
/// defaults to the mean; its beat tracker asks for the median, which ignores flux confined to
/// a few bands (so sustained tonal changes do not read as beats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Mean,
    Median,
}

/// Onset strength envelope, one value per frame of `mel_db`: the positive first difference
/// (lag 1, no max filter) of the dB mel spectrogram, aggregated over bands, then delayed by
/// `1 + N_FFT / (2 * HOP)` frames and cut to the spectrogram's length, so a peak sits on the
/// frame whose window is centred on the onset (librosa's `center=True`).
pub fn onset_strength(mel_db: &Frames, aggregate: Aggregate) -> Vec<f64> {
    let delay = 1 + N_FFT / (2 * HOP);
    let mut env = vec![0.0; mel_db.frames];
    let mut flux = vec![0.0; mel_db.rows];
    for (t, e) in env.iter_mut().enumerate().skip(delay) {
        // Difference j = t - delay is between frames j + 1 and j.
        let j = t - delay;
        if j + 1 >= mel_db.frames {
            break;
        }
        for ((f, &a), &b) in flux
            .iter_mut()
            .zip(mel_db.frame(j + 1))
            .zip(mel_db.frame(j))
        {
            *f = (a - b).max(0.0);
        }
        *e = match aggregate {
            Aggregate::Mean => flux.iter().sum::<f64>() / flux.len() as f64,
            Aggregate::Median => median(&flux).unwrap_or(0.0),
        };
    }
    env
}

/// Peak-picking parameters in frames (librosa's `util.peak_pick`): a frame is an onset if it
/// is the maximum of `[n - pre_max, n + post_max)`, at least `delta` above the mean of
/// `[n - pre_avg, n + post_avg)`, and more than `wait` frames after the previous onset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakPick {
    pub pre_max: usize,
    pub post_max: usize,
    pub pre_avg: usize,
    pub post_avg: usize,
    pub wait: usize,
    pub delta: f64,
}

impl PeakPick {
    /// `onset_detect`'s defaults: 30 ms before for the max, 100 ms either side for the mean,
    /// 30 ms wait, delta 0.07 on the min-max normalised envelope.
    pub fn librosa_default(sample_rate: u32) -> Self {
        let frames = |secs: f64| (secs * sample_rate as f64 / HOP as f64).floor() as usize;
        PeakPick {
            pre_max: frames(0.03),
            post_max: 1,
            pre_avg: frames(0.10),
            post_avg: frames(0.10) + 1,
            wait: frames(0.03),
            delta: 0.07,
        }
    }
}

/// Onset frames of an onset strength envelope, as `librosa.onset.onset_detect` (envelope
/// normalised to [0, 1] first, no backtracking). Empty for a flat envelope.
pub fn onset_detect(env: &[f64], params: &PeakPick) -> Vec<usize> {
    if env.is_empty() {
        return Vec::new();
    }
    let min = env.iter().copied().fold(f64::INFINITY, f64::min);
    let shifted: Vec<f64> = env.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return Vec::new();
    }
    let x: Vec<f64> = shifted
        .iter()
        .map(|v| v / (max + f32::MIN_POSITIVE as f64))
        .collect();
    peak_pick(&x, params)
}

/// librosa's greedy peak picker (see [`PeakPick`]).
pub fn peak_pick(x: &[f64], p: &PeakPick) -> Vec<usize> {
    let n_total = x.len();
    let window_max = |lo: usize, hi: usize| x[lo..hi].iter().copied().fold(f64::MIN, f64::max);
    let window_mean = |lo: usize, hi: usize| x[lo..hi].iter().sum::<f64>() / (hi - lo) as f64;
    let mut peaks = Vec::new();
    // The first frame only looks forward.
    let first = x[0] >= window_max(0, p.post_max.min(n_total))
        && x[0] >= window_mean(0, p.post_avg.min(n_total)) + p.delta;
    let mut n = if first {
        peaks.push(0);
        p.wait + 1
    } else {
        1
    };
    while n < n_total {
        let lo = n.saturating_sub(p.pre_max);
        if x[n] != window_max(lo, (n + p.post_max).min(n_total)) {
            n += 1;
            continue;
        }
        let lo = n.saturating_sub(p.pre_avg);
        if x[n] < window_mean(lo, (n + p.post_avg).min(n_total)) + p.delta {
            n += 1;
            continue;
        }
        peaks.push(n);
        n += p.wait + 1;
    }
    peaks
}
