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
//!   [`ACTIVE_BLOCK_SECONDS`] blocks above [`SILENCE_DBFS`]) in both target and context. The
//!   target is the least-used category so far among the eligible stems (ties drawn from the
//!   clip's seeded RNG), so targets vary across clips instead of following the song's
//!   loudest part. The context is the mix of *all* the song's other stems, which is what a
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
//! - **Generation.** [`Generator`] with the preset's steps and the paper's settings
//!   (lambda_context = lambda_category = 3, w_c = w_s = 0.1, w_r = 1); ablations change only
//!   the named weights; the sampler seed of clip `i` is `seed + i` in every generated
//!   population, so ablations differ from `generated` only in the setting they ablate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::distribution::{ClassicalDistances, FEATURE_NAMES};
use super::metrics::Coherence;
use crate::analysis::distance;
use crate::analysis::{Analysis, ANALYSIS_RATE};
use crate::audio::{Audio, SILENCE_DBFS};
use crate::codec::no_progress;
use crate::data::cache::song_seed;
use crate::data::datasets::{list_dataset, load_song_source, SongSource};
use crate::data::pairs::{apply_shared_gain, random_stem_crops, PairConfig, Song};
use crate::data::synth;
use crate::generate::{CategoryChoice, ContextSource, GenerateRequest, Generator, Length};
use crate::model::ModelConfig;
use crate::sample::{Preset, SamplerSettings};

/// First seed of the synthesized test songs; far from the training seeds (1000-1199,
/// 5000-5399) so no test song was seen in training.
pub const SYNTH_BASE_SEED: u64 = 900_000;
/// Synthesized songs per clip: one, so every clip comes from a different song.
pub const SYNTH_COUNT_PER_CLIP: usize = 1;
/// Length of a synthesized test song: room for several distinct 10 s crops at a third of
/// the default 60 s rendering time.
pub const SYNTH_SONG_SECONDS: f64 = 30.0;
/// Block length of the activity test.
pub const ACTIVE_BLOCK_SECONDS: f64 = 0.5;
/// Share of blocks above [`SILENCE_DBFS`] a crop needs in target and context.
pub const MIN_ACTIVE_SHARE: f64 = 0.5;
/// Crops tried per song before moving to another song.
pub const CROP_ATTEMPTS: usize = 16;
/// Clips and preset of `--quick` (a few minutes on a 2-core CPU).
pub const QUICK_CLIPS: usize = 6;
/// Clips of a full run.
pub const FULL_CLIPS: usize = 24;

/// Names of the coherence metrics, in [`coherence_values`] order.
pub const COHERENCE_METRICS: [&str; 6] = [
    "onset_grid_share",
    "beat_f_measure",
    "tempo_agreement",
    "key_score",
    "beat_chroma_cosine",
    "in_key_share",
];

/// The fields of a [`Coherence`] in [`COHERENCE_METRICS`] order (`None`: undefined for the
/// clip).
pub fn coherence_values(c: &Coherence) -> [Option<f64>; 6] {
    [
        c.onset_grid_share,
        Some(c.beat_f_measure),
        Some(c.tempo_agreement),
        Some(c.key_score),
        c.beat_chroma_cosine,
        c.in_key_share,
    ]
}

/// Each coherence metric's mean over the clips where it is defined (and finite), in
/// [`COHERENCE_METRICS`] order, with the number of those clips.
pub fn coherence_means(clips: &[Coherence]) -> Vec<(Option<f64>, usize)> {
    (0..COHERENCE_METRICS.len())
        .map(|k| mean(clips.iter().map(|c| coherence_values(c)[k])))
        .collect()
}

/// The ceiling must exceed the floor by at least this much (every coherence metric lies in
/// [0, 1]) for a metric to be normalised: dividing by a rounding-level gap would turn noise
/// into huge values.
pub const MIN_ANCHOR_GAP: f64 = 1e-6;

/// `(x - floor) / (ceiling - floor)`: 0 at the floor, 1 at the ceiling. `None` when an input
/// is missing or the ceiling is not at least [`MIN_ANCHOR_GAP`] above the floor: such a
/// metric does not separate real from shuffled pairs on this test set, and a flipped or
/// near-zero denominator would only produce misleading numbers (the report lists it).
pub fn normalise(x: Option<f64>, floor: Option<f64>, ceiling: Option<f64>) -> Option<f64> {
    let (x, f, c) = (x?, floor?, ceiling?);
    (c - f >= MIN_ANCHOR_GAP).then(|| (x - f) / (c - f))
}

/// Mean of the metrics that could be normalised: the single figure a population is ranked by.
pub fn normalised_mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.flatten().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Resamples of the bootstrap interval of a normalised mean.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// 90% bootstrap interval of a population's normalised mean over the clips. Clips are
/// resampled with replacement, and the floor and ceiling are recomputed on the same resampled
/// clips, because every population is measured on the same clips. On 24 clips the discrete
/// metrics (tempo agreement, key score) move by whole clips, so two models' means differ by
/// chance more than the table suggests; this interval says by how much.
pub fn normalised_mean_interval(
    population: &[Coherence],
    floor: &[Coherence],
    ceiling: &[Coherence],
    seed: u64,
) -> Option<[f64; 2]> {
    let means: Vec<f64> = bootstrap_normalised_means(&[population], floor, ceiling, seed)?
        .into_iter()
        .map(|m| m[0])
        .collect();
    Some(interval_90(means))
}

/// The normalised means of several populations measured on the same clips, on each of
/// [`BOOTSTRAP_RESAMPLES`] resamples of those clips (the same resample for every population
/// and for the anchors). Resamples where a population's mean is undefined are left out;
/// `None` when fewer than 2 clips, mismatched lengths, or most resamples are undefined.
pub fn bootstrap_normalised_means(
    populations: &[&[Coherence]],
    floor: &[Coherence],
    ceiling: &[Coherence],
    seed: u64,
) -> Option<Vec<Vec<f64>>> {
    let n = floor.len();
    if n < 2 || ceiling.len() != n || populations.iter().any(|p| p.len() != n) {
        return None;
    }
    let values =
        |c: &[Coherence]| -> Vec<[Option<f64>; 6]> { c.iter().map(coherence_values).collect() };
    let pops: Vec<_> = populations.iter().map(|p| values(p)).collect();
    let (lo, hi) = (values(floor), values(ceiling));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resampled = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut picks = vec![0usize; n];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        picks.iter_mut().for_each(|i| *i = rng.gen_range(0..n));
        let metric_mean =
            |rows: &[[Option<f64>; 6]], k: usize| mean(picks.iter().map(|&i| rows[i][k])).0;
        let means: Option<Vec<f64>> = pops
            .iter()
            .map(|pop| {
                normalised_mean((0..COHERENCE_METRICS.len()).map(|k| {
                    normalise(
                        metric_mean(pop, k),
                        metric_mean(&lo, k),
                        metric_mean(&hi, k),
                    )
                }))
            })
            .collect();
        if let Some(means) = means {
            resampled.push(means);
        }
    }
    (resampled.len() >= BOOTSTRAP_RESAMPLES / 2).then_some(resampled)
}

/// The 5th and 95th percentiles of bootstrap values.
pub fn interval_90(mut values: Vec<f64>) -> [f64; 2] {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    [at(0.05), at(0.95)]
}

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
    /// Sampling temperature of every generated population (`None`: the preset's, 1).
    pub temperature: Option<f64>,
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
            temperature: None,
            quick,
        }
    }
}

/// What a population's numbers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Real pairs: the best a stem can fit (normalised 1).
    Ceiling,
    /// Shuffled real pairs: a real stem that belongs to other music (normalised 0).
    Floor,
    /// The model with the chosen settings.
    Model,
    /// The model with one setting changed.
    Ablation,
    /// Anchors without the codec round trip, for the codec's own cost.
    Reference,
}

/// Where a population's stem for a clip comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The clip's own target.
    Real,
    /// The target of the clip's [`derangement`] partner.
    Shuffled,
    /// Generated with these weights (other settings from the preset and the paper).
    Generated {
        lambda_context: f64,
        lambda_category: f64,
        w_position: f64,
    },
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Population {
    pub name: &'static str,
    pub role: Role,
    pub source: Source,
    /// Real audio encoded and decoded by the model's tokenizer (generated audio always is).
    pub codec_round_trip: bool,
    pub description: &'static str,
}

/// The populations of a run: anchors, the model, the ablations of the paper's tables
/// (optional) and the raw anchors.
pub fn standard_populations(ablations: bool) -> Vec<Population> {
    let generated =
        |name, role, lambda_context, lambda_category, w_position, description| Population {
            name,
            role,
            source: Source::Generated {
                lambda_context,
                lambda_category,
                w_position,
            },
            codec_round_trip: true,
            description,
        };
    let mut p = vec![
        Population {
            name: "real",
            role: Role::Ceiling,
            source: Source::Real,
            codec_round_trip: true,
            description: "the clip's true target, through the tokenizer",
        },
        Population {
            name: "shuffled",
            role: Role::Floor,
            source: Source::Shuffled,
            codec_round_trip: true,
            description:
                "the true target of another clip (fixed derangement), through the tokenizer",
        },
        generated(
            "generated",
            Role::Model,
            3.0,
            3.0,
            0.1,
            "the model: lambda_context 3, lambda_category 3, w_s 0.1",
        ),
    ];
    if ablations {
        p.extend([
            generated(
                "no_guidance",
                Role::Ablation,
                1.0,
                1.0,
                0.1,
                "both guidance strengths 1",
            ),
            generated(
                "context_guidance_only",
                Role::Ablation,
                3.0,
                1.0,
                0.1,
                "lambda_context 3, lambda_category 1",
            ),
            generated(
                "category_guidance_only",
                Role::Ablation,
                1.0,
                3.0,
                0.1,
                "lambda_context 1, lambda_category 3",
            ),
            generated(
                "no_causal_bias",
                Role::Ablation,
                3.0,
                3.0,
                0.0,
                "w_s 0 (VampNet-like ranking)",
            ),
        ]);
    }
    p.extend([
        Population {
            name: "real_raw",
            role: Role::Reference,
            source: Source::Real,
            codec_round_trip: false,
            description: "the clip's true target as rendered (no tokenizer)",
        },
        Population {
            name: "shuffled_raw",
            role: Role::Reference,
            source: Source::Shuffled,
            codec_round_trip: false,
            description: "another clip's true target as rendered (no tokenizer)",
        },
    ]);
    p
}

/// A fixed derangement of `n = songs.len()` clips (`songs[i]`: the song clip `i` comes
/// from): `p[i] != i` for every clip, and `songs[p[i]] != songs[i]` for as many clips as
/// possible (all of them whenever no song holds more than half the clips). Seeded random
/// cycles (Sattolo's algorithm, never a fixed point) are repaired by swapping partners.
pub fn derangement(songs: &[usize], seed: u64) -> Result<Vec<usize>> {
    let n = songs.len();
    ensure!(n >= 2, "the shuffled floor needs at least 2 clips, got {n}");
    let mut rng = StdRng::seed_from_u64(seed);
    let same = |p: &[usize], i: usize| songs[p[i]] == songs[i];
    let mut best: Option<(usize, Vec<usize>)> = None;
    for _ in 0..20 {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.gen_range(0..i);
            p.swap(i, j);
        }
        // Swap partners of a same-song clip with any clip where the swap leaves both
        // without a fixed point and from different songs.
        let mut improved = true;
        while improved {
            improved = false;
            for i in 0..n {
                if !same(&p, i) {
                    continue;
                }
                for k in 0..n {
                    let (a, b) = (p[k], p[i]);
                    if k != i && a != i && b != k && songs[a] != songs[i] && songs[b] != songs[k] {
                        p.swap(i, k);
                        improved = true;
                        break;
                    }
                }
            }
        }
        let count = (0..n).filter(|&i| same(&p, i)).count();
        if best.as_ref().is_none_or(|(b, _)| count < *b) {
            best = Some((count, p));
        }
        if count == 0 {
            break;
        }
    }
    Ok(best.expect("at least one attempt").1)
}

/// Share of [`ACTIVE_BLOCK_SECONDS`] blocks of `samples` whose RMS reaches [`SILENCE_DBFS`].
pub fn active_share(samples: &[f32], sample_rate: u32) -> f64 {
    let block = ((ACTIVE_BLOCK_SECONDS * sample_rate as f64) as usize).max(1);
    let blocks: Vec<bool> = samples
        .chunks(block)
        .map(|b| level_db(b) >= SILENCE_DBFS)
        .collect();
    if blocks.is_empty() {
        return 0.0;
    }
    blocks.iter().filter(|&&a| a).count() as f64 / blocks.len() as f64
}

fn level_db(samples: &[f32]) -> f32 {
    let n = samples.len().max(1) as f64;
    let ms = samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n;
    if ms > 0.0 {
        (10.0 * ms.log10()) as f32
    } else {
        -200.0
    }
}

/// One clip of the test set.
#[derive(Debug, Clone, Serialize)]
pub struct ClipInfo {
    pub index: usize,
    pub song: String,
    pub song_dir: PathBuf,
    /// Target category name and id.
    pub target: String,
    pub target_id: u32,
    /// Categories mixed into the context.
    pub context_stems: Vec<String>,
    pub crop_start_s: f64,
    pub seconds: f64,
    /// The shared gain applied to context and target.
    pub gain_db: f32,
    /// The clip whose target is this clip's `shuffled` stem.
    pub shuffled_partner: usize,
    /// Sampler seed of this clip in every generated population.
    pub generation_seed: u64,
}

/// A clip's audio at the tokenizer's rate, mono, window length.
struct ClipAudio {
    context: Vec<f32>,
    target: Vec<f32>,
}

/// Draws a clip from `song` (see the module notes), or `None` after [`CROP_ATTEMPTS`]
/// crops without an eligible target.
fn draw_clip(
    song: &Song,
    crop_len: usize,
    sample_rate: u32,
    usage: &BTreeMap<u32, usize>,
    rng: &mut StdRng,
) -> Option<(usize, usize, ClipAudio)> {
    for _ in 0..CROP_ATTEMPTS {
        let (start, crops) = random_stem_crops(song, crop_len, rng);
        let mix_without = |t: usize| -> Vec<f32> {
            let mut mix = vec![0.0f32; crop_len];
            for (i, c) in crops.iter().enumerate() {
                if i != t {
                    mix.iter_mut().zip(c).for_each(|(m, x)| *m += x);
                }
            }
            mix
        };
        let eligible: Vec<usize> = (0..crops.len())
            .filter(|&t| {
                active_share(&crops[t], sample_rate) >= MIN_ACTIVE_SHARE
                    && active_share(&mix_without(t), sample_rate) >= MIN_ACTIVE_SHARE
            })
            .collect();
        let uses = |t: usize| {
            usage
                .get(&song.stems[t].category.id())
                .copied()
                .unwrap_or(0)
        };
        let Some(least) = eligible.iter().map(|&t| uses(t)).min() else {
            continue;
        };
        let candidates: Vec<usize> = eligible.into_iter().filter(|&t| uses(t) == least).collect();
        let t = candidates[rng.gen_range(0..candidates.len())];
        let context = mix_without(t);
        let target = crops[t].clone();
        return Some((start, t, ClipAudio { context, target }));
    }
    None
}

/// How the synthesized test songs were made.
#[derive(Debug, Clone, Serialize)]
pub struct SynthInfo {
    pub base_seed: u64,
    pub count: usize,
    pub song_seconds: f64,
    pub soundfont: String,
    /// False when the songs were already in the folder and reused.
    pub rendered: bool,
}

fn synth_song_name(i: usize) -> String {
    format!("song-{i:05}")
}

/// Makes sure `dir` holds the `count` test songs with seeds from [`SYNTH_BASE_SEED`],
/// rendering them when any is missing or was made with another seed.
fn ensure_synth_songs(
    dir: &Path,
    count: usize,
    soundfont: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<SynthInfo> {
    let existing: Vec<Option<synth::SongMetadata>> = (0..count)
        .map(|i| synth::read_metadata(&dir.join(synth_song_name(i))).ok())
        .collect();
    let complete = existing.iter().enumerate().all(|(i, m)| {
        m.as_ref().is_some_and(|m| {
            m.seed == SYNTH_BASE_SEED + i as u64
                && m.stems
                    .iter()
                    .all(|s| dir.join(synth_song_name(i)).join(&s.file).is_file())
        })
    });
    if complete {
        let soundfont = existing[0]
            .as_ref()
            .map(|m| m.soundfont.clone())
            .unwrap_or_default();
        progress(&format!(
            "eval: reusing {count} test songs in {}",
            dir.display()
        ));
        return Ok(SynthInfo {
            base_seed: SYNTH_BASE_SEED,
            count,
            song_seconds: SYNTH_SONG_SECONDS,
            soundfont,
            rendered: false,
        });
    }
    let path = synth::find_soundfont(soundfont)?;
    let font = synth::load_soundfont(&path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    progress(&format!(
        "eval: rendering {count} test songs (seeds {SYNTH_BASE_SEED}..{}) into {} with {name}",
        SYNTH_BASE_SEED + count as u64 - 1,
        dir.display()
    ));
    let mut options = synth::GenerateOptions::default();
    options.plan.target_secs = SYNTH_SONG_SECONDS;
    synth::generate_songs(dir, &font, &name, SYNTH_BASE_SEED, count, &options, &|_| {})?;
    Ok(SynthInfo {
        base_seed: SYNTH_BASE_SEED,
        count,
        song_seconds: SYNTH_SONG_SECONDS,
        soundfont: name,
        rendered: true,
    })
}

/// Mean, number of clips where defined, and normalised mean of one coherence metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    pub metric: &'static str,
    pub mean: Option<f64>,
    pub defined: usize,
    /// `(mean - floor) / (ceiling - floor)` with the codec anchors ([`normalise`]).
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
    /// Mean of the normalised metrics, and its 90% bootstrap interval over the clips
    /// ([`normalised_mean_interval`]).
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

/// A clip's context prepared for measuring: samples at [`ANALYSIS_RATE`] and its analysis.
struct ContextFeatures {
    samples: Vec<f32>,
    analysis: Analysis,
}

fn at_analysis_rate(samples: &[f32], rate: u32) -> Result<Vec<f32>> {
    let mut a = Audio::mono(rate, samples.to_vec())?.to_mono_at(ANALYSIS_RATE)?;
    Ok(a.channels.swap_remove(0))
}

/// [`Coherence::measure`] with the context's analysis computed once per clip: the stem at
/// the analysis rate, cut or padded to the context.
fn measure(context: &ContextFeatures, stem: &[f32], rate: u32) -> Result<(Coherence, Analysis)> {
    let mut s = at_analysis_rate(stem, rate)?;
    s.resize(context.samples.len(), 0.0);
    let stem_a = Analysis::of_samples(&s, ANALYSIS_RATE);
    Ok((Coherence::from_analyses(&context.analysis, &stem_a), stem_a))
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> (Option<f64>, usize) {
    let v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        (None, 0)
    } else {
        (Some(v.iter().sum::<f64>() / v.len() as f64), v.len())
    }
}

/// The planned song of clip `i`: spread over the list when there are at least as many songs
/// as clips, cycled otherwise.
fn planned_song(i: usize, clips: usize, songs: usize) -> usize {
    if songs >= clips {
        i * songs / clips
    } else {
        i % songs
    }
}

fn load_checked(source: &SongSource, rate: u32) -> Result<Song> {
    let song = load_song_source(source, rate)?;
    if song.stems.len() < 2 {
        let only: Vec<&str> = song.stems.iter().map(|s| s.category.name()).collect();
        bail!(
            "{}: song has a single stem ({}); eval needs a target and at least one other stem \
             for its context",
            source.dir.display(),
            only.join(", ")
        );
    }
    Ok(song)
}

/// Runs the whole evaluation (see the module notes); `progress` gets one line per step.
pub fn run(options: &SuiteOptions, progress: &mut dyn FnMut(&str)) -> Result<SuiteReport> {
    let started = Instant::now();
    ensure!(
        options.clips >= 2,
        "--clips {} must be at least 2 (the shuffled floor pairs each clip with another)",
        options.clips
    );
    let mut timings = SuiteTimings::default();

    progress(&format!("eval: loading {}", options.model_dir.display()));
    let t = Instant::now();
    let generator = Generator::load(&options.model_dir)?;
    timings.load_model_s = t.elapsed().as_secs_f64();
    let tok = generator.tokenizer();
    let rate = tok.sample_rate();
    let window_frames = generator.config().max_frames;
    let crop_len = window_frames * tok.hop_length();
    let window_seconds = crop_len as f64 / rate as f64;

    // Test set.
    let t = Instant::now();
    let (songs_dir, synthesized) = match &options.songs {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = options.out_dir.join("songs");
            let count = options.clips * SYNTH_COUNT_PER_CLIP;
            let info = ensure_synth_songs(&dir, count, options.soundfont.as_deref(), progress)?;
            (dir, Some(info))
        }
    };
    let (layout, mut sources) = list_dataset(&songs_dir)?;
    if let Some(info) = &synthesized {
        // Only this run's songs, whatever else a previous run left in the folder.
        let wanted: Vec<String> = (0..info.count).map(synth_song_name).collect();
        sources.retain(|s| wanted.contains(&s.id));
        ensure!(
            sources.len() == info.count,
            "{}: expected {} synthesized songs, found {}",
            songs_dir.display(),
            info.count,
            sources.len()
        );
    }
    timings.songs_s = t.elapsed().as_secs_f64();

    // Clips, grouped by planned song so each song is read once.
    let t = Instant::now();
    let n = options.clips;
    let s = sources.len();
    let mut by_song: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        by_song.entry(planned_song(i, n, s)).or_default().push(i);
    }
    let mut usage: BTreeMap<u32, usize> = BTreeMap::new();
    let mut drawn: Vec<Option<(usize, ClipInfo, ClipAudio)>> = (0..n).map(|_| None).collect();
    let mut pending: Vec<usize> = Vec::new();
    let mut take =
        |song_index: usize, song: &Song, i: usize, usage: &mut BTreeMap<u32, usize>| -> bool {
            let mut rng = StdRng::seed_from_u64(song_seed(options.seed, i));
            let Some((start, t, audio)) = draw_clip(song, crop_len, rate, usage, &mut rng) else {
                return false;
            };
            let mut audio = audio;
            let gain_db = apply_shared_gain(
                &mut audio.context,
                &mut audio.target,
                &PairConfig::default(),
            );
            let category = song.stems[t].category;
            *usage.entry(category.id()).or_default() += 1;
            let info = ClipInfo {
                index: i,
                song: song.id.clone(),
                song_dir: song.dir.clone(),
                target: category.name().to_string(),
                target_id: category.id(),
                context_stems: song
                    .stems
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != t)
                    .map(|(_, st)| st.category.name().to_string())
                    .collect(),
                crop_start_s: start as f64 / rate as f64,
                seconds: window_seconds,
                gain_db,
                shuffled_partner: 0,
                generation_seed: options.seed.wrapping_add(i as u64),
            };
            drawn[i] = Some((song_index, info, audio));
            true
        };
    for (&k, clips) in &by_song {
        let song = load_checked(&sources[k], rate)?;
        for &i in clips {
            if !take(k, &song, i, &mut usage) {
                pending.push(i);
            }
        }
    }
    // Clips whose song had no active crop: the next songs in order.
    for i in pending {
        let first = planned_song(i, n, s);
        let mut placed = false;
        for step in 1..s {
            let k = (first + step) % s;
            let song = load_checked(&sources[k], rate)?;
            if take(k, &song, i, &mut usage) {
                placed = true;
                break;
            }
        }
        if !placed {
            bail!(
                "{}: no song has a {window_seconds:.1} s crop where a stem and the mix of the \
                 others are both active (above {SILENCE_DBFS} dBFS in {:.0}% of the time)",
                songs_dir.display(),
                MIN_ACTIVE_SHARE * 100.0
            );
        }
    }
    let drawn: Vec<(usize, ClipInfo, ClipAudio)> = drawn.into_iter().flatten().collect();
    let song_of: Vec<usize> = drawn.iter().map(|(k, _, _)| *k).collect();
    let partner = derangement(&song_of, options.seed ^ 0x5348_5546)?;
    let (mut clips, audio): (Vec<ClipInfo>, Vec<ClipAudio>) =
        drawn.into_iter().map(|(_, c, a)| (c, a)).unzip();
    for (c, &p) in clips.iter_mut().zip(&partner) {
        c.shuffled_partner = p;
    }
    for c in &clips {
        progress(&format!(
            "eval: clip {:>2}: {} {} at {:.1} s (context: {})",
            c.index,
            c.song,
            c.target,
            c.crop_start_s,
            c.context_stems.join("+")
        ));
    }
    let contexts: Vec<ContextFeatures> = audio
        .par_iter()
        .map(|a| -> Result<ContextFeatures> {
            let samples = at_analysis_rate(&a.context, rate)?;
            let analysis = Analysis::of_samples(&samples, ANALYSIS_RATE);
            Ok(ContextFeatures { samples, analysis })
        })
        .collect::<Result<_>>()?;

    // Codec round trip of the real targets (shared by `real` and `shuffled`).
    progress("eval: tokenizer round trip of the real targets");
    let round_trip: Vec<Vec<f32>> = audio
        .iter()
        .map(|a| -> Result<Vec<f32>> {
            let input = Audio::mono(rate, a.target.clone())?;
            let tokens = tok.encode(&input, &mut no_progress())?;
            let mut back = tok
                .decode(&tokens, &mut no_progress())?
                .to_mono_at(rate)?
                .channels
                .swap_remove(0);
            back.resize(crop_len, 0.0);
            Ok(back)
        })
        .collect::<Result<_>>()
        .context("cannot round-trip a target through the tokenizer")?;
    let codec = {
        let m = |f: &dyn Fn(&[f32], &[f32]) -> f64| {
            audio
                .iter()
                .zip(&round_trip)
                .map(|(a, b)| f(&a.target, b))
                .sum::<f64>()
                / n as f64
        };
        CodecReport {
            tokenizer: tok.name().to_string(),
            mel_distance: m(&|a, b| distance::mel_l1(a, b, rate)),
            log_spectral_distance_db: m(&|a, b| distance::log_spectral_distance(a, b)),
            multi_resolution_stft_distance: m(&|a, b| {
                distance::multi_resolution_stft_distance(a, b)
            }),
        }
    };
    timings.clips_s = t.elapsed().as_secs_f64();

    // Populations.
    let t_pop = Instant::now();
    let mut base = generator.settings(options.preset);
    if let Some(t) = options.temperature {
        base.temperature = t;
    }
    let populations = standard_populations(options.ablations);
    let cancel = AtomicBool::new(false);
    struct Measured {
        population: Population,
        settings: Option<SamplerSettings>,
        per_clip: Vec<Coherence>,
        analyses: Vec<Analysis>,
        seconds: f64,
    }
    let mut measured: Vec<Measured> = Vec::new();
    for population in &populations {
        let t = Instant::now();
        let mut settings_used = None;
        let stems: Vec<Vec<f32>> = match &population.source {
            Source::Real | Source::Shuffled => (0..n)
                .map(|i| {
                    let j = if population.source == Source::Real {
                        i
                    } else {
                        partner[i]
                    };
                    if population.codec_round_trip {
                        round_trip[j].clone()
                    } else {
                        audio[j].target.clone()
                    }
                })
                .collect(),
            Source::Generated {
                lambda_context,
                lambda_category,
                w_position,
            } => {
                let mut settings = base.clone();
                settings.lambda_context = *lambda_context;
                settings.lambda_category = *lambda_category;
                settings.w_position = *w_position;
                settings_used = Some(settings.clone());
                let mut out = Vec::with_capacity(n);
                for (c, a) in clips.iter().zip(&audio) {
                    let g = Instant::now();
                    let mut request = GenerateRequest::new(
                        ContextSource::Audio(Audio::mono(rate, a.context.clone())?),
                        CategoryChoice::Id(c.target_id),
                        settings.clone().with_seed(c.generation_seed),
                    );
                    request.length = Some(Length::Seconds(window_seconds));
                    request.output_rate = rate;
                    request.output_channels = 1;
                    let stem = generator
                        .generate(&request, &mut |_| {}, &cancel)
                        .with_context(|| {
                            format!("cannot generate {} for clip {}", c.target, c.index)
                        })?;
                    let mut samples = stem.audio.channels.into_iter().next().unwrap_or_default();
                    samples.resize(crop_len, 0.0);
                    out.push(samples);
                    progress(&format!(
                        "eval: {} clip {}/{n} ({}) in {:.1} s",
                        population.name,
                        c.index + 1,
                        c.target,
                        g.elapsed().as_secs_f64()
                    ));
                }
                out
            }
        };
        let results: Vec<(Coherence, Analysis)> = contexts
            .par_iter()
            .zip(&stems)
            .map(|(ctx, stem)| measure(ctx, stem, rate))
            .collect::<Result<_>>()?;
        let (per_clip, analyses): (Vec<Coherence>, Vec<Analysis>) = results.into_iter().unzip();
        let seconds = t.elapsed().as_secs_f64();
        progress(&format!(
            "eval: {} measured ({:.1} s)",
            population.name, seconds
        ));
        measured.push(Measured {
            population: population.clone(),
            settings: settings_used,
            per_clip,
            analyses,
            seconds,
        });
    }
    timings.populations_s = t_pop.elapsed().as_secs_f64();

    // Summaries, normalisation and distances.
    let means = |m: &Measured| coherence_means(&m.per_clip);
    let by_role = |role: Role| {
        measured
            .iter()
            .find(|m| m.population.role == role)
            .expect("the anchors are always measured")
    };
    let anchor = |role: Role| means(by_role(role));
    let (ceiling, floor) = (anchor(Role::Ceiling), anchor(Role::Floor));
    let named = |name: &str| {
        measured
            .iter()
            .find(|m| m.population.name == name)
            .expect("the untokenized anchors are always measured")
    };
    let (ceiling_raw, floor_raw) = (means(named("real_raw")), means(named("shuffled_raw")));
    let (ceiling_clips, floor_clips) = (
        &by_role(Role::Ceiling).per_clip,
        &by_role(Role::Floor).per_clip,
    );
    let reference: Vec<Analysis> = by_role(Role::Ceiling).analyses.clone();
    let reports: Vec<PopulationReport> = measured
        .iter()
        .map(|m| {
            let coherence: Vec<MetricSummary> = means(m)
                .into_iter()
                .enumerate()
                .map(|(k, (mean, defined))| MetricSummary {
                    metric: COHERENCE_METRICS[k],
                    mean,
                    defined,
                    normalised: normalise(mean, floor[k].0, ceiling[k].0),
                    normalised_raw: normalise(mean, floor_raw[k].0, ceiling_raw[k].0),
                })
                .collect();
            PopulationReport {
                population: m.population.clone(),
                settings: m.settings.clone(),
                normalised_mean: normalised_mean(coherence.iter().map(|c| c.normalised)),
                normalised_mean_interval: normalised_mean_interval(
                    &m.per_clip,
                    floor_clips,
                    ceiling_clips,
                    options.seed,
                ),
                normalised_raw_mean: normalised_mean(coherence.iter().map(|c| c.normalised_raw)),
                coherence,
                per_clip: m.per_clip.clone(),
                classical_distances: ClassicalDistances::between(&reference, &m.analyses),
                seconds: m.seconds,
            }
        })
        .collect();
    let ceiling_above_floor = COHERENCE_METRICS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let above =
                matches!((ceiling[k].0, floor[k].0), (Some(c), Some(f)) if c - f >= MIN_ANCHOR_GAP);
            (name.to_string(), above)
        })
        .collect();
    timings.total_s = started.elapsed().as_secs_f64();

    let mut settings = base;
    settings.seed = options.seed;
    let mut notes = vec![
        "Coherence: context (original crop) vs stem, every metric of engine::eval::metrics; \
         means over the clips where the metric is defined."
            .to_string(),
        "Anchors: `real` (ceiling) and `shuffled` (floor) targets went through the model's \
         tokenizer (encode + decode), like generated stems; `real_raw` / `shuffled_raw` did \
         not. Normalised = (mean - floor) / (ceiling - floor) with the tokenized anchors, only \
         for metrics whose ceiling is above the floor. The 90% interval of the normalised mean \
         is a bootstrap over the clips (floor and ceiling resampled with them). The mean \
         against the untokenized anchors compares models whose tokenizers differ."
            .to_string(),
        "Distribution distances are classical-feature metrics (Fréchet distance, KAD and a \
         MIRDD-like mean KL on librosa-style features) against the real tokenized targets: \
         not VGGish FAD and not the paper's MIRDD. `shuffled` holds the same stems as `real` \
         in another order, so its distances are those of `real`."
            .to_string(),
    ];
    if n < 2 * FEATURE_NAMES.len() {
        notes.push(format!(
            "{n} clips for {} features: the Fréchet distance's covariances are rank-deficient \
             and dominated by noise; read KAD and MIRDD-classical, or use more clips.",
            FEATURE_NAMES.len()
        ));
    }
    Ok(SuiteReport {
        format: "stemgen-eval",
        version: 1,
        model_dir: options.model_dir.clone(),
        model: generator.config().clone(),
        tokenizer: tok.name().to_string(),
        sample_rate: rate,
        frame_rate: tok.frame_rate(),
        window_frames,
        window_seconds,
        songs_dir,
        songs_layout: layout.name().to_string(),
        songs_available: s,
        synthesized,
        preset: options.preset.name().to_string(),
        quick: options.quick,
        seed: options.seed,
        settings,
        metrics: COHERENCE_METRICS.to_vec(),
        ceiling_above_floor,
        populations: reports,
        codec,
        clips,
        timings,
        notes,
    })
}
