//! Sound-quality measures of one stem, the faults a producer hears before any musical
//! judgement: clipping, inter-sample peaks, squashed or spiky dynamics, clicks, energy where
//! the instrument has none, noise-like spectra, and notes off the semitone grid. Each is compared with real stems of the
//! same category (`stemgen eval`), since what is normal differs per instrument: a hi-hat is
//! broadband and spiky, a bass is neither.
//!
//! Computed on mono at [`ANALYSIS_RATE`] except the level measures, which read every channel
//! at the file's own rate (resampling moves peaks).

use super::features::ANALYSIS_RATE;
use super::spectrum::median;
use super::stft::Stft;
use crate::audio::{peak_dbfs, rms_dbfs, true_peak_dbfs, Audio, AudioError};

/// Level a sample must reach to count as (near) clipping, dBFS.
pub const HOT_SAMPLE_DBFS: f32 = -1.0;
/// STFT of the click and band measures: 512 / 128 samples at 22050 Hz (23 ms / 5.8 ms), short
/// enough to resolve a click, long enough to resolve a bass line's band.
const N_FFT: usize = 512;
const HOP: usize = 128;
/// Clicks live above this frequency: a bass or keys note has next to nothing there, and a
/// click (a step in the waveform) is broadband.
pub const CLICK_BAND_HZ: f64 = 4000.0;
/// A frame is a click when its energy above [`CLICK_BAND_HZ`] exceeds the median of the
/// frames around it by this much (dB) ...
pub const CLICK_RISE_DB: f64 = 20.0;
/// ... and at least this share of those bins rose by [`CLICK_BIN_RISE_DB`] (broadband: a
/// cymbal's partials rise together too, which is why clicks are compared per category).
pub const CLICK_BROADBAND_SHARE: f64 = 0.5;
pub const CLICK_BIN_RISE_DB: f64 = 10.0;
/// Frames on each side of the local median.
const CLICK_CONTEXT_FRAMES: usize = 40;
/// Frames whose high band is below this (dB relative to a full-scale sinusoid's bin power)
/// are never clicks: inaudible.
const CLICK_FLOOR_DB: f64 = -70.0;

/// A 20 ms stretch of a stem is active (sounding) when its RMS reaches this level, dBFS.
pub const ACTIVE_DBFS: f64 = -50.0;
/// Length of the stretches [`SoundQuality::active_share`] counts, seconds.
const ACTIVE_WINDOW_SECONDS: f64 = 0.02;

/// The measures of one stem.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SoundQuality {
    pub peak_dbfs: f32,
    pub true_peak_dbfs: f32,
    /// Share of samples at or above [`HOT_SAMPLE_DBFS`] (0 for a clean stem).
    pub hot_sample_share: f64,
    /// Peak over RMS, dB: small means squashed, very large means a few spikes over quiet.
    pub crest_db: f32,
    /// Broadband clicks per second (see the constants).
    pub clicks_per_second: f64,
    /// Share of the energy outside the category's usual band (`None` without a band).
    pub out_of_band_share: Option<f64>,
    /// Mean spectral flatness of the frames with sound (0 tonal .. 1 white noise).
    pub spectral_flatness: f64,
    /// Share of 20 ms stretches at or above [`ACTIVE_DBFS`]: how much of the stem sounds.
    /// A sampler that trades clicks for silence shows here, not in the click count.
    pub active_share: f64,
    /// Mean distance of the strongest partial from the 440 Hz semitone grid, cents
    /// ([`super::pitch::tuning_cents`]; `None` for silence and unpitched stems).
    pub tuning_cents: Option<f64>,
}

impl SoundQuality {
    /// Measures `audio`; `band` is the category's usual band in Hz, if it has one; the
    /// tuning only when `pitched` (it costs a long FFT every 0.2 s and means nothing for drums).
    pub fn measure(
        audio: &Audio,
        band: Option<(f64, f64)>,
        pitched: bool,
    ) -> Result<SoundQuality, AudioError> {
        Ok(Self::measure_with_click_times(audio, band, pitched)?.0)
    }

    /// [`Self::measure`], and when the clicks it counts happen: each event's first frame's
    /// centre, seconds from the start. For finding what made them (a window seam, a token
    /// step) by where they fall.
    pub fn measure_with_click_times(
        audio: &Audio,
        band: Option<(f64, f64)>,
        pitched: bool,
    ) -> Result<(SoundQuality, Vec<f64>), AudioError> {
        let peak = peak_dbfs(&audio.channels);
        let rms = rms_dbfs(&audio.channels);
        let hot = 10f32.powf(HOT_SAMPLE_DBFS / 20.0);
        let samples = audio.channels.iter().map(Vec::len).sum::<usize>().max(1);
        let hot_count = audio
            .channels
            .iter()
            .flatten()
            .filter(|v| v.abs() >= hot)
            .count();
        let mono = audio.to_mono_at(ANALYSIS_RATE)?;
        let x = &mono.channels[0];
        let spectrum = Spectrum::of(x);
        let clicks = spectrum.clicks();
        let quality = SoundQuality {
            peak_dbfs: peak,
            true_peak_dbfs: true_peak_dbfs(&audio.channels),
            hot_sample_share: hot_count as f64 / samples as f64,
            crest_db: if rms > -120.0 { peak - rms } else { 0.0 },
            clicks_per_second: clicks.len() as f64 / (x.len().max(1) as f64 / ANALYSIS_RATE as f64),
            out_of_band_share: band.map(|b| spectrum.out_of_band_share(b)),
            spectral_flatness: spectrum.flatness(),
            active_share: active_share(x, ANALYSIS_RATE as f64),
            tuning_cents: pitched
                .then(|| super::pitch::tuning_cents(x, ANALYSIS_RATE))
                .flatten(),
        };
        let times = clicks
            .into_iter()
            .map(|t| t as f64 * HOP as f64 / ANALYSIS_RATE as f64)
            .collect();
        Ok((quality, times))
    }
}

/// Power spectrogram `[frames][bins]` on the short grid of this module.
struct Spectrum {
    power: Vec<f64>,
    frames: usize,
    bins: usize,
    /// Power of a full-scale sinusoid in its bin (the dB reference).
    full_scale: f64,
}

impl Spectrum {
    fn of(x: &[f32]) -> Spectrum {
        let stft = Stft::new(N_FFT, HOP);
        let (spec, frames) = stft.forward(x);
        let full_scale = (stft.amplitude_scale() as f64).powi(2);
        Spectrum {
            power: spec.iter().map(|c| c.norm_sqr() as f64).collect(),
            frames,
            bins: stft.bins(),
            full_scale,
        }
    }

    fn bin_hz(&self, k: usize) -> f64 {
        k as f64 * ANALYSIS_RATE as f64 / N_FFT as f64
    }

    fn frame(&self, t: usize) -> &[f64] {
        &self.power[t * self.bins..(t + 1) * self.bins]
    }

    fn db(&self, p: f64) -> f64 {
        10.0 * (p / self.full_scale).max(1e-14).log10()
    }

    /// The first frame of each click event: runs of consecutive click frames count once.
    fn clicks(&self) -> Vec<usize> {
        let first = (0..self.bins)
            .find(|&k| self.bin_hz(k) >= CLICK_BAND_HZ)
            .unwrap_or(self.bins);
        let high = first..self.bins;
        if high.is_empty() || self.frames < 3 {
            return Vec::new();
        }
        let band_db: Vec<f64> = (0..self.frames)
            .map(|t| self.db(self.frame(t)[high.clone()].iter().sum()))
            .collect();
        let bin_db: Vec<Vec<f64>> = (0..self.frames)
            .map(|t| {
                self.frame(t)[high.clone()]
                    .iter()
                    .map(|&p| self.db(p))
                    .collect()
            })
            .collect();
        let mut events = Vec::new();
        let mut previous = false;
        // The clip's own edges are steps from or to silence, not clicks of the stem.
        let edge = N_FFT / HOP;
        for t in edge..self.frames.saturating_sub(edge) {
            let lo = t.saturating_sub(CLICK_CONTEXT_FRAMES);
            let hi = (t + CLICK_CONTEXT_FRAMES + 1).min(self.frames);
            let around: Vec<usize> = (lo..hi).filter(|&u| u != t).collect();
            let local = median_of(around.iter().map(|&u| band_db[u]));
            let mut click = band_db[t] > CLICK_FLOOR_DB && band_db[t] - local > CLICK_RISE_DB;
            if click {
                let rose = (0..high.len())
                    .filter(|&k| {
                        let m = median_of(around.iter().map(|&u| bin_db[u][k]));
                        bin_db[t][k] - m > CLICK_BIN_RISE_DB
                    })
                    .count();
                click = rose as f64 >= CLICK_BROADBAND_SHARE * high.len() as f64;
            }
            if click && !previous {
                events.push(t);
            }
            previous = click;
        }
        events
    }

    fn out_of_band_share(&self, (lo, hi): (f64, f64)) -> f64 {
        let (mut outside, mut total) = (0.0, 0.0);
        for t in 0..self.frames {
            for (k, &p) in self.frame(t).iter().enumerate() {
                let f = self.bin_hz(k);
                total += p;
                if f < lo || f > hi {
                    outside += p;
                }
            }
        }
        if total > 0.0 {
            outside / total
        } else {
            0.0
        }
    }

    /// librosa's `spectral_flatness` (power, amin 1e-10), averaged over the frames within
    /// 60 dB of the loudest (silent frames are perfectly "flat" and would dominate).
    fn flatness(&self) -> f64 {
        let energy: Vec<f64> = (0..self.frames)
            .map(|t| self.frame(t).iter().sum())
            .collect();
        let max = energy.iter().copied().fold(0.0, f64::max);
        let (mut sum, mut n) = (0.0, 0usize);
        for (t, &e) in energy.iter().enumerate() {
            if max <= 0.0 || e < max * 1e-6 {
                continue;
            }
            let frame = self.frame(t);
            let log_mean =
                frame.iter().map(|&p| p.max(1e-10).ln()).sum::<f64>() / frame.len() as f64;
            let mean = frame.iter().map(|&p| p.max(1e-10)).sum::<f64>() / frame.len() as f64;
            sum += log_mean.exp() / mean;
            n += 1;
        }
        if n > 0 {
            sum / n as f64
        } else {
            0.0
        }
    }
}

/// [`median`] of the values, `-inf` for none.
fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    median(&values.collect::<Vec<_>>()).unwrap_or(f64::NEG_INFINITY)
}

/// Share of [`ACTIVE_WINDOW_SECONDS`] stretches of `x` whose RMS reaches [`ACTIVE_DBFS`]
/// (0 for audio shorter than one stretch).
fn active_share(x: &[f32], rate: f64) -> f64 {
    let window = ((rate * ACTIVE_WINDOW_SECONDS) as usize).max(1);
    let threshold = 10f64.powf(ACTIVE_DBFS / 10.0); // mean square at ACTIVE_DBFS
    let chunks = x.chunks_exact(window);
    let total = chunks.len();
    if total == 0 {
        return 0.0;
    }
    let active = chunks
        .filter(|c| c.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / window as f64 >= threshold)
        .count();
    active as f64 / total as f64
}
