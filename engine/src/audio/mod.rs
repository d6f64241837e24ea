//! Audio in and out of the engine: decoding files, writing WAV, sample-rate conversion,
//! channel mixing, loudness normalisation and silence detection.
//!
//! Audio is kept planar (`channels[c][frame]`) as `f32` in [-1, 1] so that resampling and
//! mixing work per channel without interleaving passes.

mod dsp;
mod io;
mod resample;

pub use dsp::{
    limit_true_peak, mix_channels, normalize_peak, normalize_rms, peak_dbfs, rms_dbfs,
    true_peak_dbfs, SILENCE_DBFS,
};
pub use io::{read_audio, write_wav, WavFormat};
pub use resample::resample;

use std::path::PathBuf;

/// A clip of audio: planar `f32` samples at one sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    /// One vector per channel, all of the same length.
    pub channels: Vec<Vec<f32>>,
}

/// The sample rates the engine accepts anywhere (files, hosts, resampling).
pub const SUPPORTED_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// Something wrong with audio data or an audio file, phrased for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("{0}")]
    Data(String),
}

impl AudioError {
    pub(crate) fn file(path: &std::path::Path, problem: impl Into<String>) -> Self {
        AudioError::File {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl Audio {
    /// Builds a clip, checking that every channel has the same length and the rate is usable.
    pub fn new(sample_rate: u32, channels: Vec<Vec<f32>>) -> Result<Self, AudioError> {
        if channels.is_empty() {
            return Err(AudioError::Data("audio has no channels".into()));
        }
        if !SUPPORTED_RATES.contains(&sample_rate) {
            return Err(AudioError::Data(format!(
                "sample rate {sample_rate} Hz is outside the supported 8-192 kHz"
            )));
        }
        let len = channels[0].len();
        if channels.iter().any(|c| c.len() != len) {
            return Err(AudioError::Data("channels have different lengths".into()));
        }
        Ok(Audio {
            sample_rate,
            channels,
        })
    }

    /// A mono clip.
    pub fn mono(sample_rate: u32, samples: Vec<f32>) -> Result<Self, AudioError> {
        Self::new(sample_rate, vec![samples])
    }

    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    pub fn num_frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    pub fn duration_secs(&self) -> f64 {
        self.num_frames() as f64 / self.sample_rate as f64
    }

    /// The first non-finite sample as (channel, frame), if any. NaN or inf would poison every
    /// stage downstream (resampler, codec, loudness), so inputs are checked once at the door.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        self.channels.iter().enumerate().find_map(|(c, ch)| {
            ch.iter()
                .position(|s| !s.is_finite())
                .map(|frame| (c, frame))
        })
    }

    /// This clip down- or up-mixed to `n` channels.
    pub fn with_channels(&self, n: usize) -> Audio {
        Audio {
            sample_rate: self.sample_rate,
            channels: mix_channels(&self.channels, n),
        }
    }

    /// This clip at another sample rate.
    pub fn resampled(&self, rate: u32) -> Result<Audio, AudioError> {
        resample(self, rate)
    }

    /// Shorthand for a mono clip at `rate`, the form every tokenizer consumes.
    pub fn to_mono_at(&self, rate: u32) -> Result<Audio, AudioError> {
        self.with_channels(1).resampled(rate)
    }

    /// True when the RMS level over the whole clip is below `threshold_dbfs`.
    pub fn is_silent(&self, threshold_dbfs: f32) -> bool {
        rms_dbfs(&self.channels) < threshold_dbfs
    }
}
