//! Tempo and beats from an onset strength envelope, as librosa 0.11's
//! `feature.tempo` (autocorrelation tempogram, log-normal prior around 120 BPM) and
//! `beat.beat_track` (Ellis 2007 dynamic programming).

use super::spectrum::{median, HOP};
use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;

/// Centre of the tempo prior, in BPM.
pub const START_BPM: f64 = 120.0;
/// Width of the prior in octaves (one standard deviation of log2 tempo).
pub const STD_BPM: f64 = 1.0;
/// Autocorrelation window of the tempogram, in seconds.
pub const AC_SIZE_SECS: f64 = 8.0;
/// Tempi at or above this are never chosen.
pub const MAX_TEMPO: f64 = 320.0;
/// How strongly the beat tracker keeps to the tempo (librosa's default).
pub const TIGHTNESS: f64 = 100.0;

/// Autocorrelation window length in frames (librosa's `time_to_frames(8 s)`).
pub fn tempogram_window(sample_rate: u32) -> usize {
    ((AC_SIZE_SECS * sample_rate as f64) as usize) / HOP
}

/// BPM of each autocorrelation lag (`lag 0` is infinite).
pub fn lag_bpms(win: usize, sample_rate: u32) -> Vec<f64> {
    (0..win)
        .map(|k| {
            if k == 0 {
                f64::INFINITY
            } else {
                60.0 * sample_rate as f64 / (HOP as f64 * k as f64)
            }
        })
        .collect()
}

/// Autocorrelation tempogram averaged over time: for each frame, the Hann-windowed local
/// envelope (`win` frames centred on it; the ends padded with a linear ramp down to 0) is
/// autocorrelated and normalised by its maximum; the result is the mean over frames, one
/// value per lag.
pub fn mean_tempogram(env: &[f64], win: usize) -> Vec<f64> {
    let n = env.len();
    let mut mean = vec![0.0; win];
    if n == 0 || win == 0 {
        return mean;
    }
    let half = win / 2;
    let mut padded = vec![0.0; n + 2 * half];
    padded[half..half + n].copy_from_slice(env);
    for i in 0..half {
        // numpy's "linear_ramp" to end value 0.
        padded[i] = env[0] * i as f64 / half as f64;
        padded[half + n + half - 1 - i] = env[n - 1] * i as f64 / half as f64;
    }
    let window: Vec<f64> = (0..win)
        .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / win as f64).cos())
        .collect();
    let size = (2 * win - 1).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(size);
    let inv = planner.plan_fft_inverse(size);
    let mut buf = vec![Complex64::default(); size];
    for t in 0..n {
        buf.iter_mut().for_each(|b| *b = Complex64::default());
        for (k, b) in buf.iter_mut().take(win).enumerate() {
            *b = Complex64::new(padded[t + k] * window[k], 0.0);
        }
        fwd.process(&mut buf);
        buf.iter_mut()
            .for_each(|b| *b = Complex64::new(b.norm_sqr(), 0.0));
        inv.process(&mut buf);
        let ac: Vec<f64> = buf[..win].iter().map(|b| b.re / size as f64).collect();
        let peak = ac.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let scale = if peak < f32::MIN_POSITIVE as f64 {
            1.0
        } else {
            peak
        };
        for (m, v) in mean.iter_mut().zip(&ac) {
            *m += v / scale;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    mean
}

/// Global tempo in BPM of an onset envelope (librosa's `feature.tempo` with its defaults):
/// the lag maximising `log1p(1e6 * tempogram) + log-normal prior`, with tempi at or above
/// [`MAX_TEMPO`] excluded. Tempi are quantised to `60 * sr / (HOP * lag)`.
pub fn tempo(env: &[f64], sample_rate: u32) -> f64 {
    let win = tempogram_window(sample_rate);
    let tg = mean_tempogram(env, win);
    let bpms = lag_bpms(win, sample_rate);
    let first_allowed = bpms.iter().position(|&b| b < MAX_TEMPO).unwrap_or(0);
    let mut best = (f64::NEG_INFINITY, 0);
    for k in first_allowed..win {
        let prior = -0.5 * ((bpms[k].log2() - START_BPM.log2()) / STD_BPM).powi(2);
        let score = (1e6 * tg[k]).ln_1p() + prior;
        if score > best.0 {
            best = (score, k);
        }
    }
    bpms[best.1]
}

/// Beats of an onset envelope (librosa's `beat.beat_track` on the median-aggregated envelope
/// it computes itself): `(tempo_bpm, beat_frames)`. A silent envelope gives `(0, [])`.
/// `bpm` overrides the tempo estimate.
pub fn beat_track(env: &[f64], sample_rate: u32, bpm: Option<f64>) -> (f64, Vec<usize>) {
    if env.iter().all(|&v| v == 0.0) {
        return (0.0, Vec::new());
    }
    let bpm = bpm.unwrap_or_else(|| tempo(env, sample_rate));
    let frame_rate = sample_rate as f64 / HOP as f64;
    let period = (frame_rate * 60.0 / bpm).round_ties_even();
    let local = local_score(&normalize_onsets(env), period);
    let (backlink, cumscore) = dynamic_program(&local, period, TIGHTNESS);
    let mut beats = vec![false; env.len()];
    let mut n = last_beat(&cumscore) as isize;
    while n >= 0 {
        beats[n as usize] = true;
        n = backlink[n as usize];
    }
    trim_beats(&local, &mut beats);
    let frames = beats
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| b.then_some(i))
        .collect();
    (bpm, frames)
}

/// The envelope divided by its standard deviation (ddof 1), a simple gain control.
fn normalize_onsets(env: &[f64]) -> Vec<f64> {
    let n = env.len() as f64;
    let mean = env.iter().sum::<f64>() / n;
    let var = env.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let norm = var.sqrt() + f32::MIN_POSITIVE as f64;
    env.iter().map(|v| v / norm).collect()
}

/// The envelope smoothed by a Gaussian of width `period / 32`, as librosa computes it: a
/// same-mode convolution whose kernel never reaches frame 0 of the envelope (kept for
/// parity).
fn local_score(env: &[f64], period: f64) -> Vec<f64> {
    let p = period as isize;
    let window: Vec<f64> = (-p..=p)
        .map(|k| (-0.5 * (k as f64 * 32.0 / period).powi(2)).exp())
        .collect();
    let k_len = window.len() as isize;
    let n = env.len() as isize;
    let half = k_len / 2;
    (0..n)
        .map(|i| {
            let lo = (i + half - n + 1).max(0);
            let hi = (i + half).min(k_len);
            (lo..hi)
                .map(|k| window[k as usize] * env[(i + half - k) as usize])
                .sum()
        })
        .collect()
}

/// The DP: each frame's best predecessor between half and two periods back, scored by the
/// cumulative score minus `tightness * log(interval / period)^2`. Frames before the first
/// one reaching 1% of the maximum local score start no chain.
fn dynamic_program(local: &[f64], period: f64, tightness: f64) -> (Vec<isize>, Vec<f64>) {
    let n = local.len();
    let thresh = 0.01 * local.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut backlink = vec![-1isize; n];
    let mut cum = vec![0.0; n];
    let mut first_beat = true;
    let near = (period / 2.0).round_ties_even() as isize;
    let far = 2 * period as isize;
    for i in 0..n {
        let mut best = (f64::NEG_INFINITY, -1isize);
        let mut loc = i as isize - near;
        while loc >= i as isize - far {
            if loc < 0 {
                break;
            }
            let gap = ((i as isize - loc) as f64).ln() - period.ln();
            let score = cum[loc as usize] - tightness * gap * gap;
            if score > best.0 {
                best = (score, loc);
            }
            loc -= 1;
        }
        cum[i] = if best.1 >= 0 {
            local[i] + best.0
        } else {
            local[i]
        };
        if first_beat && local[i] < thresh {
            backlink[i] = -1;
        } else {
            backlink[i] = best.1;
            first_beat = false;
        }
    }
    (backlink, cum)
}

/// The last local maximum of the cumulative score reaching half the median of all its local
/// maxima (the last frame if none does).
fn last_beat(cum: &[f64]) -> usize {
    let n = cum.len();
    let is_max = |i: usize| {
        if i == 0 {
            false
        } else if i == n - 1 {
            cum[i] > cum[i - 1]
        } else {
            cum[i] > cum[i - 1] && cum[i] >= cum[i + 1]
        }
    };
    let maxima: Vec<f64> = (0..n).filter(|&i| is_max(i)).map(|i| cum[i]).collect();
    let Some(med) = median(&maxima) else {
        return n - 1;
    };
    let threshold = 0.5 * med;
    (0..n)
        .rev()
        .find(|&i| is_max(i) && cum[i] >= threshold)
        .unwrap_or(n - 1)
}

/// Drops beats in the weak lead-in and tail: frames from either end whose local score is at
/// most half the RMS of the (Hann-smoothed) local score at the beats.
fn trim_beats(local: &[f64], beats: &mut [bool]) {
    let at_beats: Vec<f64> = local
        .iter()
        .zip(beats.iter())
        .filter_map(|(&v, &b)| b.then_some(v))
        .collect();
    let w = [0.0, 0.5, 1.0, 0.5, 0.0];
    // Full convolution, then librosa's slice [2 : len(local) + 2].
    let full_len = at_beats.len() + w.len() - 1;
    let full: Vec<f64> = (0..full_len)
        .map(|i| {
            (0..w.len())
                .filter(|&k| i >= k && i - k < at_beats.len())
                .map(|k| w[k] * at_beats[i - k])
                .sum()
        })
        .collect();
    let end = full_len.min(local.len() + 2);
    let smooth = &full[2.min(end)..end];
    let threshold = if smooth.is_empty() {
        0.0
    } else {
        0.5 * (smooth.iter().map(|v| v * v).sum::<f64>() / smooth.len() as f64).sqrt()
    };
    let mut n = 0;
    while n < local.len() && local[n] <= threshold {
        beats[n] = false;
        n += 1;
    }
    let mut n = local.len();
    while n > 0 && local[n - 1] <= threshold {
        beats[n - 1] = false;
        n -= 1;
    }
}
