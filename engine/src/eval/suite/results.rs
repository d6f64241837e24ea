//! The report types of a run: per-metric summaries, one report per population, the codec's
//! own cost, timings, and the whole [`SuiteReport`].

use std::path::PathBuf;

use serde::Serialize;

use super::clips::{ClipInfo, SynthInfo};
use super::populations::Population;
use crate::eval::distribution::ClassicalDistances;
use crate::eval::metrics::Coherence;
use crate::eval::sound::CategorySound;
use crate::model::ModelConfig;
use crate::sample::SamplerSettings;

/// Mean, number of clips where defined, and normalised mean of one coherence metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    pub metric: &'static str,
    pub mean: Option<f64>,
    pub defined: usize,
    /// `(mean - floor) / (ceiling - floor)` with the codec anchors
    /// ([`normalise`](super::normalise)).
    pub normalised: Option<f64>,
    /// The same against the untokenized anchors (`real_raw` = 1, `shuffled_raw` = 0), which
    /// do not depend on the tokenizer: the scale on which models with different tokenizers
    /// can be compared.
    pub normalised_raw: Option<f64>,
}

/// One population's results.
#[derive(Debug, Clone, Serialize)]
pub struct PopulationReport {
    #[serde(flatten)]
    pub population: Population,
    /// Sampler settings of generated populations (the seed is `generation_seed` per clip).
    pub settings: Option<SamplerSettings>,
    pub coherence: Vec<MetricSummary>,
    /// Per clip, in clip order.
    pub per_clip: Vec<Coherence>,
    /// Classical-feature distances of this population's stems from the real (codec) targets:
    /// not FAD, not the paper's MIRDD.
    pub classical_distances: ClassicalDistances,
    /// Sound-quality measures per target category (`eval::sound`).
    pub sound: Vec<CategorySound>,
    /// Mean of the normalised metrics, and its 90% bootstrap interval over the clips
    /// ([`normalised_mean_interval`](super::normalised_mean_interval)).
    pub normalised_mean: Option<f64>,
    pub normalised_mean_interval: Option<[f64; 2]>,
    /// Mean of the metrics normalised against the untokenized anchors.
    pub normalised_raw_mean: Option<f64>,
    /// Wall time to produce and measure the stems.
    pub seconds: f64,
}

impl PopulationReport {
    pub fn metric(&self, name: &str) -> Option<&MetricSummary> {
        self.coherence.iter().find(|m| m.metric == name)
    }
}

/// What the codec round trip does to the real targets (mean over clips).
#[derive(Debug, Clone, Serialize)]
pub struct CodecReport {
    pub tokenizer: String,
    pub mel_distance: f64,
    pub log_spectral_distance_db: f64,
    pub multi_resolution_stft_distance: f64,
}

/// Wall times in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SuiteTimings {
    pub load_model_s: f64,
    pub songs_s: f64,
    pub clips_s: f64,
    pub populations_s: f64,
    pub total_s: f64,
}

/// Everything `stemgen eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub format: &'static str,
    pub version: u32,
    pub model_dir: PathBuf,
    pub model: ModelConfig,
    pub tokenizer: String,
    pub sample_rate: u32,
    pub frame_rate: f64,
    pub window_frames: usize,
    pub window_seconds: f64,
    pub songs_dir: PathBuf,
    pub songs_layout: String,
    /// Songs in the test set folder (the clips use some or all of them).
    pub songs_available: usize,
    /// Set when the songs were synthesized by this command.
    pub synthesized: Option<SynthInfo>,
    pub preset: String,
    pub quick: bool,
    pub seed: u64,
    /// The generated population's settings (the seed is set per clip).
    pub settings: SamplerSettings,
    pub metrics: Vec<&'static str>,
    /// Per metric: is the ceiling's mean above the floor's? (A metric that fails this does
    /// not measure coherence on this test set.)
    pub ceiling_above_floor: Vec<(String, bool)>,
    pub populations: Vec<PopulationReport>,
    pub codec: CodecReport,
    pub clips: Vec<ClipInfo>,
    pub timings: SuiteTimings,
    pub notes: Vec<String>,
}

impl SuiteReport {
    pub fn population(&self, name: &str) -> Option<&PopulationReport> {
        self.populations.iter().find(|p| p.population.name == name)
    }
}
