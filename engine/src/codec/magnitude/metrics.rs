//! Codec quality metrics between an original clip and its reconstruction, both mono at the
//! same rate; the reconstruction is compared over the original's length (longer decodes are
//! cut, shorter ones zero-extended).
//!
//! Both use a centred STFT with n_fft 2048, hop 640 and a periodic Hann window (the
//! tokenizer's 50 Hz grid at 32 kHz):
//! - **LSD** (log-spectral distance, dB): magnitudes scaled so a full-scale sinusoid reads
//!   0 dB, power floored at -100 dB, `mean_frames sqrt(mean_bins (dB_ref - dB_rec)^2)`.
//! - **mel L1**: librosa's default mel spectrogram (power 2 on the unscaled STFT, 80 Slaney
//!   bands with Slaney area normalisation, 0 Hz to Nyquist), `log10(max(mel, 1e-5))`, mean
//!   absolute difference over bands and frames.

use super::stft::Stft;
use crate::audio::Audio;
use crate::codec::{no_progress, Tokenizer};

pub const METRIC_N_FFT: usize = 2048;
pub const METRIC_HOP: usize = 640;
pub const MEL_BANDS: usize = 80;
/// Power floor of the LSD in dB (relative to a full-scale sinusoid).
pub const LSD_FLOOR_DB: f64 = -100.0;
/// Floor of the mel spectrogram before `log10`.
pub const MEL_FLOOR: f64 = 1e-5;

fn matched(reference: &[f32], estimate: &[f32]) -> Vec<f32> {
    let mut e = estimate[..estimate.len().min(reference.len())].to_vec();
    e.resize(reference.len(), 0.0);
    e
}

/// Power spectrogram `[frames][bins]` as f64.
fn power(stft: &Stft, x: &[f32]) -> (Vec<f64>, usize) {
    let (spec, frames) = stft.forward(x);
    (spec.iter().map(|c| c.norm_sqr() as f64).collect(), frames)
}

/// Log-spectral distance in dB (see the module docs).
pub fn log_spectral_distance(reference: &[f32], estimate: &[f32]) -> f64 {
    let stft = Stft::new(METRIC_N_FFT, METRIC_HOP);
    let estimate = matched(reference, estimate);
    let (pr, frames) = power(&stft, reference);
    let (pe, _) = power(&stft, &estimate);
    if frames == 0 {
        return 0.0;
    }
    let scale = (stft.amplitude_scale() as f64).powi(2);
    let floor = 10f64.powf(LSD_FLOOR_DB / 10.0);
    let db = |p: f64| 10.0 * (p / scale).max(floor).log10();
    let bins = stft.bins();
    let total: f64 = pr
        .chunks(bins)
        .zip(pe.chunks(bins))
        .map(|(r, e)| {
            let ms = r
                .iter()
                .zip(e)
                .map(|(&a, &b)| (db(a) - db(b)).powi(2))
                .sum::<f64>()
                / bins as f64;
            ms.sqrt()
        })
        .sum();
    total / frames as f64
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

fn log_mel(stft: &Stft, fb: &[f64], x: &[f32]) -> Vec<f64> {
    let (p, _) = power(stft, x);
    let bins = stft.bins();
    p.chunks(bins)
        .flat_map(|frame| {
            fb.chunks(bins).map(move |f| {
                let v: f64 = f.iter().zip(frame).map(|(a, b)| a * b).sum();
                v.max(MEL_FLOOR).log10()
            })
        })
        .collect()
}

/// 80-band log-mel L1 distance (see the module docs).
pub fn mel_l1(reference: &[f32], estimate: &[f32], sample_rate: u32) -> f64 {
    let stft = Stft::new(METRIC_N_FFT, METRIC_HOP);
    let fb = mel_filterbank(
        sample_rate,
        METRIC_N_FFT,
        MEL_BANDS,
        0.0,
        sample_rate as f64 / 2.0,
    );
    let estimate = matched(reference, estimate);
    let a = log_mel(&stft, &fb, reference);
    let b = log_mel(&stft, &fb, &estimate);
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

/// Both metrics of one pair: `(lsd_db, mel_l1)`.
pub fn compare(reference: &[f32], estimate: &[f32], sample_rate: u32) -> (f64, f64) {
    (
        log_spectral_distance(reference, estimate),
        mel_l1(reference, estimate, sample_rate),
    )
}

/// Encodes and decodes every clip (mixed to mono at the tokenizer's rate) and returns the
/// frame-weighted means `(lsd_db, mel_l1)` over the clips.
pub fn evaluate(tokenizer: &dyn Tokenizer, clips: &[Audio]) -> anyhow::Result<(f64, f64)> {
    evaluate_levels(tokenizer, clips, tokenizer.num_levels())
}

/// [`evaluate`] decoding only the first `levels` RVQ levels.
pub fn evaluate_levels(
    tokenizer: &dyn Tokenizer,
    clips: &[Audio],
    levels: usize,
) -> anyhow::Result<(f64, f64)> {
    let sr = tokenizer.sample_rate();
    let (mut lsd, mut mel, mut weight) = (0.0, 0.0, 0.0);
    for clip in clips {
        let reference = clip.to_mono_at(sr)?;
        let tokens = tokenizer.encode(&reference, &mut no_progress())?;
        let decoded = tokenizer.decode(&tokens.truncated(levels), &mut no_progress())?;
        let (l, m) = compare(&reference.channels[0], &decoded.channels[0], sr);
        let w = reference.num_frames() as f64;
        lsd += l * w;
        mel += m * w;
        weight += w;
    }
    anyhow::ensure!(weight > 0.0, "nothing to evaluate: no audio");
    Ok((lsd / weight, mel / weight))
}

/// Held-out quality of a magnitude tokenizer at one number of levels: the full round trip
/// (tokens -> Griffin-Lim -> audio) and, separately, the error of the decoded log-magnitudes
/// themselves, so the share of the loss due to the tokens and due to phase reconstruction can
/// be told apart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelReport {
    pub levels: usize,
    pub lsd_db: f64,
    pub mel_l1: f64,
    /// LSD of the decoded magnitudes before phase reconstruction (the tokens' own error).
    pub token_lsd_db: f64,
    /// Scale-invariant SDR of the waveform; low for any magnitude codec, whose phase is
    /// re-estimated (DESIGN §6), so reported but not a quality target.
    pub si_sdr_db: f64,
}

/// [`LevelReport`] for every number of levels `1..=Q` (only `Q` with `full_grid_only`),
/// frame-weighted over `clips`.
pub fn evaluate_report(
    tokenizer: &super::MagnitudeTokenizer,
    clips: &[Audio],
    full_grid_only: bool,
) -> anyhow::Result<Vec<LevelReport>> {
    let sr = tokenizer.sample_rate();
    let floor = LSD_FLOOR_DB as f32;
    let bins = tokenizer.config().bins();
    let levels = tokenizer.num_levels();
    // Reports start at this many levels: 1, or Q alone with `full_grid_only`.
    let first = if full_grid_only { levels } else { 1 };
    let mut sums = vec![(0.0f64, 0.0f64, 0.0f64, 0.0f64); levels];
    let mut weight = 0.0;
    for clip in clips {
        let reference = clip.to_mono_at(sr)?;
        let x = &reference.channels[0];
        let tokens = tokenizer.encode(&reference, &mut no_progress())?;
        let target_db = tokenizer.analyse_db(x);
        let w = reference.num_frames() as f64;
        for (q, sum) in sums.iter_mut().enumerate().skip(first - 1) {
            let tokens = tokens.truncated(q + 1);
            let decoded_db = tokenizer.decode_db(&tokens)?;
            let frames = target_db.len() / bins;
            let token_lsd = target_db
                .chunks(bins)
                .zip(decoded_db.chunks(bins))
                .map(|(a, b)| {
                    let ms: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(&r, &e)| (r.max(floor) as f64 - e.max(floor) as f64).powi(2))
                        .sum::<f64>()
                        / bins as f64;
                    ms.sqrt()
                })
                .sum::<f64>()
                / frames.max(1) as f64;
            let decoded = tokenizer.decode(&tokens, &mut no_progress())?;
            let (l, m) = compare(x, &decoded.channels[0], sr);
            sum.0 += l * w;
            sum.1 += m * w;
            sum.2 += token_lsd * w;
            sum.3 += crate::eval::metrics::si_sdr(x, &decoded.channels[0]) * w;
        }
        weight += w;
    }
    anyhow::ensure!(weight > 0.0, "nothing to evaluate: no audio");
    Ok(sums
        .iter()
        .enumerate()
        .skip(first - 1)
        .map(|(q, s)| LevelReport {
            levels: q + 1,
            lsd_db: s.0 / weight,
            mel_l1: s.1 / weight,
            token_lsd_db: s.2 / weight,
            si_sdr_db: s.3 / weight,
        })
        .collect())
}
