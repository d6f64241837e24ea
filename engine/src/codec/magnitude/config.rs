//! [`MagnitudeConfig`]: everything that defines the magnitude tokens and their decoder, its
//! defaults (and the serde defaults of fields added later), validation and derived sizes;
//! [`GainReference`], what a frame's gain measures.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::{phase, postnet, refine};

/// Everything that defines the tokens and the decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagnitudeConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    /// RVQ levels `Q`.
    pub levels: usize,
    /// Codes per level (level 0: gain steps x shape codes).
    pub codebook_size: usize,
    pub gain_bits: u32,
    /// What the per-frame gain measures (configs without the field: the peak).
    #[serde(default)]
    pub gain_reference: GainReference,
    pub gain_min_db: f32,
    pub gain_max_db: f32,
    /// Absolute floor of the log-magnitudes.
    pub floor_db: f32,
    /// Bins more than this below the frame's gain are clamped there.
    pub dynamic_range_db: f32,
    /// Frames each side that the learned refinement filter reads (`None`: decode the summed
    /// codewords as they are; see [`refine`]).
    #[serde(default)]
    pub refine_radius: Option<usize>,
    /// Training frames the refinement is fitted on at most.
    #[serde(default = "default_refine_frames")]
    pub refine_train_frames: usize,
    /// Full token grids decode with separate decoder codewords refitted jointly on frozen
    /// tokens (see [`joint`]); the encoder's codebooks still define the tokens.
    #[serde(default)]
    pub joint_decoder: bool,
    /// A network trained on frozen tokens corrects the (refined) decode of full token grids
    /// (see [`postnet`]).
    #[serde(default)]
    pub postnet: Option<postnet::PostnetConfig>,
    /// Paths the encoder's beam search keeps per frame (1: greedy, level by level). Part of the
    /// token definition: a model is trained on the tokens of one setting.
    #[serde(default = "default_encode_beam")]
    pub encode_beam: usize,
    /// Lloyd iterations per level.
    pub kmeans_iters: usize,
    /// Training frames per level at most (a seeded random subset beyond that).
    pub max_train_frames: usize,
    /// Fast Griffin-Lim iterations of the decoder, after the [`phase::PhaseStart`].
    pub gl_iters: usize,
    pub gl_momentum: f32,
    pub gl_seed: u64,
    /// How the decoder's phase starts (random for tokenizers saved before PGHI existed).
    #[serde(default)]
    pub phase_start: phase::PhaseStart,
    /// Whether the decoder moves each low spectral peak onto the 440 Hz semitone grid before
    /// reconstructing phase (see [`super::retune`]; off for tokenizers saved before it).
    #[serde(default)]
    pub retune: bool,
    /// Weight of the low bins in the codebooks' squared error (`None`: every bin alike, as
    /// tokenizers saved before it). Part of the token definition.
    #[serde(default)]
    pub low_band_emphasis: Option<LowBandEmphasis>,
}

/// Low bins count more when the codebooks are learned and frames are encoded: each bin's dB
/// value is multiplied by `w(f) = clamp(below_hz / f, 1, factor)` in the space the codes live
/// in (so its squared error counts `w^2` times), and divided by it again when decoding.
///
/// Why: with every bin alike, a bass note's pitch (carried by a handful of bins below a few
/// hundred hertz, among 1025) is cheap to lose, and `stemgen codec pitch` showed the
/// unweighted tokenizer returning the notes below D2 at a wrong pitch. `1 / f` is the weight
/// a log-frequency (musical) scale gives each linear bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LowBandEmphasis {
    /// Bins below this frequency are emphasised (1 / f), ...
    pub below_hz: f32,
    /// ... by at most this factor (in dB amplitude).
    pub factor: f32,
}

impl LowBandEmphasis {
    /// The weight of each of `bins` bins of an `n_fft`-point spectrum at `sample_rate`.
    pub fn weights(&self, bins: usize, n_fft: usize, sample_rate: u32) -> Vec<f32> {
        (0..bins)
            .map(|k| {
                let hz = k as f32 * sample_rate as f32 / n_fft as f32;
                (self.below_hz / hz.max(1e-3)).clamp(1.0, self.factor)
            })
            .collect()
    }
}

impl Default for MagnitudeConfig {
    fn default() -> Self {
        MagnitudeConfig {
            sample_rate: 32_000,
            n_fft: 2048,
            hop: 640,
            levels: 4,
            codebook_size: 2048,
            gain_bits: 6,
            gain_reference: GainReference::Peak,
            gain_min_db: -90.0,
            gain_max_db: 6.0,
            floor_db: -100.0,
            dynamic_range_db: 80.0,
            refine_radius: None,
            refine_train_frames: default_refine_frames(),
            joint_decoder: false,
            postnet: None,
            encode_beam: 1,
            kmeans_iters: 10,
            max_train_frames: 60_000,
            gl_iters: 32,
            gl_momentum: 0.99,
            gl_seed: 0,
            phase_start: phase::PhaseStart::Random,
            retune: false,
            low_band_emphasis: None,
        }
    }
}

fn default_encode_beam() -> usize {
    1
}

fn default_refine_frames() -> usize {
    150_000
}

/// The level a frame's gain encodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GainReference {
    /// The loudest bin; bins more than `dynamic_range_db` below it are clamped there.
    #[default]
    Peak,
    /// The mean over bins: for squared dB error the best offset for any zero-mean shape, so
    /// the codebooks spend nothing on the frame's level.
    Mean,
}

impl MagnitudeConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            crate::audio::SUPPORTED_RATES.contains(&self.sample_rate),
            "sample_rate {} is not supported",
            self.sample_rate
        );
        ensure!(
            self.n_fft >= 16 && self.n_fft.is_multiple_of(2),
            "n_fft {} must be even and >= 16",
            self.n_fft
        );
        ensure!(
            self.hop >= 1 && self.hop <= self.n_fft,
            "hop {} must be in 1..=n_fft",
            self.hop
        );
        ensure!(self.levels >= 1, "levels must be at least 1");
        ensure!(
            (1..=64).contains(&self.encode_beam),
            "encode_beam {} must be in 1..=64",
            self.encode_beam
        );
        ensure!(
            self.codebook_size >= 2 && self.codebook_size <= 1 << 20,
            "codebook_size {} out of range",
            self.codebook_size
        );
        ensure!(
            self.gain_bits >= 1
                && self.gain_bits < 20
                && (1usize << self.gain_bits) < self.codebook_size
                && self.codebook_size.is_multiple_of(1 << self.gain_bits),
            "codebook_size {} must be a multiple of 2^gain_bits ({} gain bits) with room for \
             at least 2 shape codes",
            self.codebook_size,
            self.gain_bits
        );
        ensure!(
            self.gain_max_db > self.gain_min_db && self.gain_min_db >= self.floor_db,
            "gain range [{}, {}] dB is empty or below the floor {} dB",
            self.gain_min_db,
            self.gain_max_db,
            self.floor_db
        );
        ensure!(
            self.dynamic_range_db > 0.0,
            "dynamic_range_db must be positive"
        );
        ensure!(
            self.max_train_frames >= 1,
            "max_train_frames must be at least 1"
        );
        ensure!(
            (0.0..1.0).contains(&self.gl_momentum),
            "gl_momentum must be in [0, 1)"
        );
        if let Some(p) = &self.postnet {
            p.validate()?;
        }
        if let Some(e) = &self.low_band_emphasis {
            ensure!(
                e.below_hz > 0.0 && e.factor >= 1.0 && e.factor.is_finite(),
                "low_band_emphasis needs below_hz > 0 and a finite factor >= 1"
            );
            ensure!(
                !self.joint_decoder,
                "a joint decoder is not supported with low_band_emphasis"
            );
        }
        Ok(())
    }

    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Each bin's weight in the code space (all 1 without [`LowBandEmphasis`]).
    pub fn bin_weights(&self) -> Vec<f32> {
        match &self.low_band_emphasis {
            Some(e) => e.weights(self.bins(), self.n_fft, self.sample_rate),
            None => vec![1.0; self.bins()],
        }
    }

    pub fn gain_steps(&self) -> usize {
        1 << self.gain_bits
    }

    /// Shape codes of level 0.
    pub fn level0_shapes(&self) -> usize {
        self.codebook_size >> self.gain_bits
    }

    /// The refinement filter's inputs, when the config has one.
    pub fn refine_layout(&self) -> Option<refine::Layout> {
        self.refine_radius.map(|radius| refine::Layout {
            radius,
            levels: self.levels,
        })
    }

    /// Codewords of level `q`.
    pub fn level_size(&self, q: usize) -> usize {
        if q == 0 {
            self.level0_shapes()
        } else {
            self.codebook_size
        }
    }

    pub fn frame_rate(&self) -> f64 {
        self.sample_rate as f64 / self.hop as f64
    }

    /// Bits per second of the token grid.
    pub fn bitrate(&self) -> f64 {
        self.levels as f64 * (self.codebook_size as f64).log2() * self.frame_rate()
    }

    fn gain_step_db(&self) -> f32 {
        (self.gain_max_db - self.gain_min_db) / (self.gain_steps() - 1) as f32
    }

    pub(super) fn quantise_gain(&self, db: f32) -> usize {
        let i = ((db - self.gain_min_db) / self.gain_step_db()).round();
        i.clamp(0.0, (self.gain_steps() - 1) as f32) as usize
    }

    pub(super) fn gain_db(&self, index: usize) -> f32 {
        self.gain_min_db + index as f32 * self.gain_step_db()
    }
}
