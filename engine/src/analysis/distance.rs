//! Distances between a signal and its reconstruction (a codec's decode, a tokenized stem),
//! both mono at the same rate; the estimate is compared over the reference's length (longer
//! estimates are cut, shorter ones zero-extended). Codec reports, the tokenizer's training
//! and `stemgen eval` all take their numbers from here, so they stay comparable.
//!
//! LSD and mel L1 use a centred STFT with n_fft 2048, hop 640 and a periodic Hann window (the
//! tokenizer's 50 Hz grid at 32 kHz):
//! - **LSD** (log-spectral distance, dB): magnitudes scaled so a full-scale sinusoid reads
//!   0 dB, power floored at -100 dB, `mean_frames sqrt(mean_bins (dB_ref - dB_rec)^2)`.
//! - **mel L1**: librosa's default mel spectrogram (power 2 on the unscaled STFT, 80 Slaney
//!   bands with Slaney area normalisation, 0 Hz to Nyquist), `log10(max(mel, 1e-5))`, mean
//!   absolute difference over bands and frames.
//! - **Multi-resolution STFT distance** and **SI-SDR**: see their functions.

use super::spectrum::mel_filterbank;
use super::stft::Stft;

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

/// (n_fft, hop) of the multi-resolution STFT distance.
pub const MRSTFT_RESOLUTIONS: [(usize, usize); 3] = [(512, 128), (1024, 256), (2048, 512)];
/// Magnitude floor before the log in the multi-resolution STFT distance.
pub const MRSTFT_FLOOR: f64 = 1e-7;

/// Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first:
/// `10 log10(|a s|^2 / |a s - e|^2)` with `a` the least-squares gain of the reference `s`.
/// Only meaningful for codecs that keep waveform phase. A tiny epsilon keeps a perfect
/// reconstruction finite.
pub fn si_sdr(reference: &[f32], estimate: &[f32]) -> f64 {
    let estimate = matched(reference, estimate);
    let n = reference.len().max(1) as f64;
    let mr = reference.iter().map(|&v| v as f64).sum::<f64>() / n;
    let me = estimate.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut dot, mut rr) = (0.0, 0.0);
    for (&r, &e) in reference.iter().zip(&estimate) {
        let (r, e) = (r as f64 - mr, e as f64 - me);
        dot += r * e;
        rr += r * r;
    }
    let alpha = if rr > 0.0 { dot / rr } else { 0.0 };
    let (mut target, mut noise) = (0.0, 0.0);
    for (&r, &e) in reference.iter().zip(&estimate) {
        let t = alpha * (r as f64 - mr);
        target += t * t;
        noise += (e as f64 - me - t).powi(2);
    }
    const EPS: f64 = 1e-12;
    10.0 * ((target + EPS) / (noise + EPS)).log10()
}

/// Multi-resolution STFT distance (Yamamoto et al. 2020): for each of
/// [`MRSTFT_RESOLUTIONS`], spectral convergence `|S - S^|_F / |S|_F` plus the mean absolute
/// difference of log magnitudes; averaged over resolutions. 0 for identical signals.
pub fn multi_resolution_stft_distance(reference: &[f32], estimate: &[f32]) -> f64 {
    mrstft(reference, estimate, None)
}

/// [`multi_resolution_stft_distance`] with both magnitudes floored `range_db` below the
/// reference's loudest bin (per resolution) before the log.
///
/// Why: with the absolute floor ([`MRSTFT_FLOOR`], about 180 dB below a full-scale sine)
/// the log term of an isolated stem is mostly its empty bands, where the reference holds the
/// synthesizer's noise 100 dB and more below its peak. There, inaudible changes (a decoder's
/// floor synthesised as silence instead of -100 dB noise) move the distance by a factor of two
/// to five either way; floored at what a listener could hear, it measures the audible part.
pub fn multi_resolution_stft_distance_within(
    reference: &[f32],
    estimate: &[f32],
    range_db: f64,
) -> f64 {
    mrstft(reference, estimate, Some(range_db))
}

fn mrstft(reference: &[f32], estimate: &[f32], range_db: Option<f64>) -> f64 {
    let estimate = matched(reference, estimate);
    let mut total = 0.0;
    for &(n_fft, hop) in &MRSTFT_RESOLUTIONS {
        let stft = Stft::new(n_fft, hop);
        let (a, _) = stft.forward(reference);
        let (b, _) = stft.forward(&estimate);
        if a.is_empty() {
            continue;
        }
        let floor = match range_db {
            Some(range) => {
                let peak = a.iter().map(|x| x.norm() as f64).fold(0.0, f64::max);
                (peak * 10f64.powf(-range / 20.0)).max(MRSTFT_FLOOR)
            }
            None => MRSTFT_FLOOR,
        };
        let (mut diff, mut norm, mut log_l1) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.norm() as f64, y.norm() as f64);
            diff += (x - y).powi(2);
            norm += x * x;
            log_l1 += (x.max(floor).ln() - y.max(floor).ln()).abs();
        }
        let sc = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            0.0
        };
        total += sc + log_l1 / a.len() as f64;
    }
    total / MRSTFT_RESOLUTIONS.len() as f64
}
