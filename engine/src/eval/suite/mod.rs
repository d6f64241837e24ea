//! `stemgen eval` (ARCHITECTURE §6, issue 6): every coherence metric of [`super::metrics`] and the
//! classical-feature distribution distances of [`super::distribution`] for several populations
//! of stems on the *same* held-out clips, so each number is read between its floor and its
//! ceiling. [`run`] measures and returns a [`SuiteReport`]; [`super::report::write_all`] writes
//! it as JSON, Markdown and SVG charts.
//!
//! Choices:
//! - **Test set.** Without `--songs`, [`SYNTH_COUNT_PER_CLIP`] synthetic song per clip is
//!   rendered with seeds from [`SYNTH_BASE_SEED`] (training used seeds 1000-1199 and
//!   5000-5399), [`SYNTH_SONG_SECONDS`] long, into `OUT/songs`, and reused when already there.
//!   `--songs` takes any layout [`crate::data::datasets`] reads.
//! - **Clips.** One crop of exactly the model window (`max_frames` token frames) per clip,
//!   from songs spread over the song list (cycled when there are fewer songs than clips). The
//!   crop must be active (not near-silent: at least [`MIN_ACTIVE_SHARE`] of its
//!   [`ACTIVE_BLOCK_SECONDS`] blocks above [`SILENCE_DBFS`](crate::audio::SILENCE_DBFS)) in
//!   both target and context. The target is the least-used category so far among the
//!   eligible stems (ties drawn from the clip's seeded RNG), so targets vary across clips
//!   instead of following the song's loudest part. The context is the mix of *all* the song's other stems, which is what a
//!   producer's session holds; context and target share one gain as in training pairs
//!   ([`crate::data::pairs`]: context to -20 dBFS RMS, peaks under -1 dBFS).
//! - **Codec anchors.** `real` and `shuffled` targets go through the model's tokenizer
//!   (encode + decode), so floor, ceiling and generated stems all carry the codec's sound and
//!   differ only in what the codec was given; `real_raw` and `shuffled_raw` (no round trip)
//!   show what the codec itself costs. The context is always the original crop, as a user's
//!   session would be.
//! - **Floor.** `shuffled` pairs clip `i`'s context with the target of clip `p[i]` for a fixed
//!   derangement `p` ([`derangement`]) that avoids partners from the same song where the clip
//!   list allows, so tempo and key really differ.
//! - **Normalisation.** Each coherence mean is mapped to `(x - floor) / (ceiling - floor)`
//!   with the codec anchors' means; `None` where the ceiling is not above the floor
//!   ([`normalise`]).
//! - **Generation.** [`Generator`](crate::generate::Generator) with the preset's steps and
//!   the paper's settings (lambda_context = lambda_category = 3, w_c = w_s = 0.1, w_r = 1);
//!   ablations change only the named weights; the sampler seed of clip `i` is `seed + i` in
//!   every generated population, so ablations differ from `generated` only in the setting
//!   they ablate.
//!
//! Files: `clips.rs` draws the test set (songs and clips), `populations.rs` says where each
//! population's stems come from, `normalisation.rs` turns per-clip metrics into normalised
//! means with bootstrap intervals, `results.rs` holds the report types, and `driver.rs`
//! ([`run`]) runs it all.

use std::path::{Path, PathBuf};

use crate::sample::{Preset, SamplerOverrides};

mod clips;
mod driver;
mod normalisation;
mod populations;
mod results;

pub use clips::{
    active_share, ClipInfo, SynthInfo, ACTIVE_BLOCK_SECONDS, CROP_ATTEMPTS, MIN_ACTIVE_SHARE,
    SYNTH_BASE_SEED, SYNTH_COUNT_PER_CLIP, SYNTH_SONG_SECONDS,
};
pub use driver::run;
pub use normalisation::{
    bootstrap_normalised_means, coherence_means, coherence_values, interval_90, normalise,
    normalised_mean, normalised_mean_interval, Anchors, COHERENCE_METRICS, MIN_ANCHOR_GAP,
};
pub use populations::{derangement, standard_populations, Population, Role, Source};
pub use results::{CodecReport, MetricSummary, PopulationReport, SuiteReport, SuiteTimings};

/// Clips and preset of `--quick` (a few minutes on a 2-core CPU).
pub const QUICK_CLIPS: usize = 6;
/// Clips of a full run.
pub const FULL_CLIPS: usize = 24;

/// What `stemgen eval` runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    pub model_dir: PathBuf,
    /// Song folders in any layout [`crate::data::datasets`] reads; `None`: synthesize them
    /// into `out_dir/songs`.
    pub songs: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// Number of clips (at least 2: the floor pairs each clip with another).
    pub clips: usize,
    pub preset: Preset,
    /// Seeds crops, target choices and generation (clip `i` samples with `seed + i`).
    pub seed: u64,
    /// SoundFont for synthesizing the test songs (default: the one `data synth` finds).
    pub soundfont: Option<PathBuf>,
    /// Also run the four ablations (no guidance, one guidance source, no causal bias).
    pub ablations: bool,
    /// Also generate without context features and with each clip's true chords (models
    /// with context features).
    pub harmony: bool,
    /// Sampler settings of every generated population on top of the preset's.
    pub sampler: SamplerOverrides,
    /// Recorded in the report: whether this was a `--quick` run.
    pub quick: bool,
}

impl SuiteOptions {
    /// The defaults: [`QUICK_CLIPS`] clips with the draft preset for a quick run,
    /// [`FULL_CLIPS`] with the normal preset otherwise; ablations on; seed 0.
    pub fn new(model_dir: &Path, out_dir: &Path, quick: bool) -> SuiteOptions {
        SuiteOptions {
            model_dir: model_dir.to_path_buf(),
            songs: None,
            out_dir: out_dir.to_path_buf(),
            clips: if quick { QUICK_CLIPS } else { FULL_CLIPS },
            preset: if quick { Preset::Draft } else { Preset::Normal },
            seed: 0,
            soundfont: None,
            ablations: true,
            harmony: false,
            sampler: SamplerOverrides::default(),
            quick,
        }
    }
}
