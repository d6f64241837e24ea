//! Every feature of one clip, computed once and shared by the metrics.

use super::chroma::{estimate_tuning, normalize_frames, raw_chroma};
use super::key::{estimate_key, Key};
use super::onset::{onset_detect, onset_strength, Aggregate, PeakPick};
use super::rhythm::{beat_track, tempo};
use super::spectrum::{frame_time, mel_db, power_spectrogram, Frames, N_FFT};
use crate::audio::{Audio, AudioError};

/// Analysis sample rate: librosa's default, so features (and their frame grid of
/// 512 / 22050 s = 23.2 ms) compare one to one with the reference.
pub const ANALYSIS_RATE: u32 = 22050;

/// The classical features of one mono clip.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub sample_rate: u32,
    pub duration_secs: f64,
    /// Onset strength, mean over mel bands (librosa's `onset_strength` default), per frame.
    pub onset_env: Vec<f64>,
    /// Onset strength, median over mel bands (what librosa's beat tracker uses).
    pub onset_env_median: Vec<f64>,
    pub onset_frames: Vec<usize>,
    pub onset_times: Vec<f64>,
    /// Global tempo of `onset_env` (librosa's `feature.tempo`), BPM.
    pub tempo_bpm: f64,
    /// The tempo the beat tracker followed (of `onset_env_median`), BPM; 0 without beats.
    pub beat_tempo_bpm: f64,
    pub beat_frames: Vec<usize>,
    pub beat_times: Vec<f64>,
    /// Estimated tuning in fractions of a semitone.
    pub tuning: f64,
    /// Chroma energy per frame, `[frames][12]`, before normalisation (row 0 = C).
    pub raw_chroma: Frames,
    /// Chroma with each frame scaled to a maximum of 1 (librosa's `chroma_stft`).
    pub chroma: Frames,
    /// Krumhansl-Schmuckler key of the mean of `chroma`.
    pub key: Key,
    /// The key's profile correlation (near 0: no clear key, e.g. drums or silence).
    pub key_clarity: f64,
    /// RMS level of the whole clip, dBFS (-120 for digital silence).
    pub rms_dbfs: f64,
    /// Power-weighted mean spectral centroid, Hz (0 for silence).
    pub spectral_centroid_hz: f64,
}

impl Analysis {
    /// Analyses `audio`: mixed to mono and resampled to [`ANALYSIS_RATE`] with the engine's
    /// resampler.
    pub fn of(audio: &Audio) -> Result<Analysis, AudioError> {
        let mono = audio.to_mono_at(ANALYSIS_RATE)?;
        Ok(Self::of_samples(&mono.channels[0], ANALYSIS_RATE))
    }

    /// Analyses mono samples at `sample_rate` as they are (no resampling; features at other
    /// rates are not what the fixtures check).
    pub fn of_samples(samples: &[f32], sample_rate: u32) -> Analysis {
        let power = power_spectrogram(samples);
        let mel = mel_db(&power, sample_rate);
        let onset_env = onset_strength(&mel, Aggregate::Mean);
        let onset_env_median = onset_strength(&mel, Aggregate::Median);
        let onset_frames = onset_detect(&onset_env, &PeakPick::librosa_default(sample_rate));
        let tempo_bpm = tempo(&onset_env, sample_rate);
        let (beat_tempo_bpm, beat_frames) = beat_track(&onset_env_median, sample_rate, None);
        let tuning = estimate_tuning(&power, sample_rate);
        let raw = raw_chroma(&power, sample_rate, tuning);
        let chroma = normalize_frames(&raw);
        let (key, key_clarity) = estimate_key(&chroma.mean_frame());
        let to_times = |frames: &[usize]| -> Vec<f64> {
            frames.iter().map(|&t| frame_time(t, sample_rate)).collect()
        };
        let n = samples.len().max(1) as f64;
        let ms = samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / n;
        let rms_dbfs = if ms > 0.0 {
            (10.0 * ms.log10()).max(-120.0)
        } else {
            -120.0
        };
        let (mut weighted, mut total) = (0.0, 0.0);
        for t in 0..power.frames {
            for (k, &p) in power.frame(t).iter().enumerate() {
                weighted += p * k as f64 * sample_rate as f64 / N_FFT as f64;
                total += p;
            }
        }
        Analysis {
            sample_rate,
            duration_secs: samples.len() as f64 / sample_rate as f64,
            onset_times: to_times(&onset_frames),
            beat_times: to_times(&beat_frames),
            onset_env,
            onset_env_median,
            onset_frames,
            tempo_bpm,
            beat_tempo_bpm,
            beat_frames,
            tuning,
            raw_chroma: raw,
            chroma,
            key,
            key_clarity,
            rms_dbfs,
            spectral_centroid_hz: if total > 0.0 { weighted / total } else { 0.0 },
        }
    }

    /// Onsets per second.
    pub fn onset_density(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.onset_frames.len() as f64 / self.duration_secs
        } else {
            0.0
        }
    }
}
