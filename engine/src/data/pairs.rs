//! Training pairs (ARCHITECTURE §3.1): one stem of a song is the target, a random non-empty
//! subset of the *other* stems, mixed in the waveform domain, is the context.
//!
//! A song source is a folder of song folders, each holding one audio file (WAV or FLAC) per
//! stem, named after the stem's category (`bass.wav`, `synth_lead.flac`, `Piano.wav`; a numeric
//! suffix such as `guitar_2.wav` is allowed). This is the layout [`crate::data::synth`] writes.
//! Files whose name is not a category are skipped and reported in [`Song::skipped`]; several
//! files of one category are summed into one stem, so a target category is never also present
//! in its own context.
//!
//! Choices:
//! - **Short songs are padded**, not skipped: a song shorter than the crop is taken whole from
//!   its start and padded with silence to the crop length, so every pair has the same length
//!   (fixed-size token grids) and short synthetic songs still contribute. Silence rejection
//!   still applies to the padded crop.
//! - **Silence** is judged per crop: only stems whose crop is above `silence_dbfs` can be the
//!   target or part of the context, so a stem that is silent in that crop is never a target nor
//!   a context-only "member" that adds nothing. A crop with fewer than two active stems is
//!   redrawn (up to `max_attempts` times) and [`draw_pair`] then gives `None`.
//! - **Loudness: one shared gain** for context and target. The gain brings the context mix to
//!   `target_rms_dbfs` (limited so neither signal peaks above `max_peak_dbfs`) and the same gain
//!   scales the target. The level of a stem relative to the rest of the song is musical
//!   information (a bass sits under the mix, a lead above it) that the model should learn to
//!   reproduce; independent normalisation would throw it away, and at inference the user's
//!   context is normalised the same way, so the generated stem comes out at a fitting level.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::audio::{read_audio, Audio, SILENCE_DBFS};
use crate::data::Category;

/// File extensions read as stems.
pub const STEM_EXTENSIONS: [&str; 2] = ["wav", "flac"];

/// How pairs are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PairConfig {
    /// Length of every pair in seconds.
    pub crop_seconds: f64,
    /// Sample rate of the pairs (stems are mixed to mono and resampled to it on load).
    pub sample_rate: u32,
    /// The most stems mixed into one context (at least 1).
    pub max_context_stems: usize,
    /// A crop whose RMS is below this level counts as silent.
    pub silence_dbfs: f32,
    /// RMS level the context mix is brought to (the target gets the same gain).
    pub target_rms_dbfs: f32,
    /// Neither context nor target may peak above this after the shared gain.
    pub max_peak_dbfs: f32,
    /// Crops drawn before [`draw_pair`] gives up on a song.
    pub max_attempts: usize,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig {
            crop_seconds: 10.0,
            sample_rate: 32_000,
            max_context_stems: 8,
            silence_dbfs: SILENCE_DBFS,
            target_rms_dbfs: -20.0,
            max_peak_dbfs: -1.0,
            max_attempts: 8,
        }
    }
}

impl PairConfig {
    /// Crop length in samples.
    pub fn crop_samples(&self) -> usize {
        (self.crop_seconds * self.sample_rate as f64).round() as usize
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.crop_seconds.is_finite() && self.crop_seconds > 0.0) || self.crop_samples() == 0 {
            bail!("crop length must be positive, got {} s", self.crop_seconds);
        }
        if self.max_context_stems == 0 {
            bail!("max_context_stems must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("max_attempts must be at least 1");
        }
        Ok(())
    }
}

/// One stem of a loaded song: mono at the pair sample rate.
#[derive(Debug, Clone)]
pub struct SongStem {
    pub category: Category,
    /// The file(s) it was read from (several when files of one category were summed).
    pub paths: Vec<PathBuf>,
    pub samples: Vec<f32>,
}

/// A song loaded for pair drawing.
#[derive(Debug, Clone)]
pub struct Song {
    /// The song folder's name.
    pub id: String,
    pub dir: PathBuf,
    /// Stems sorted by category id (so draws do not depend on directory order).
    pub stems: Vec<SongStem>,
    /// Files that were not used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Length in samples (the longest stem; shorter stems are padded with silence).
    pub len: usize,
}

/// A training pair.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Mix of the context stems, mono at the pair sample rate, crop length.
    pub context: Audio,
    /// The target stem, same shape and the same gain as the context.
    pub target: Audio,
    /// The target's category (the conditioning c).
    pub category: Category,
    /// The categories mixed into the context (never contains `category`).
    pub context_categories: Vec<Category>,
    pub song_id: String,
    /// Crop start in samples at the pair sample rate.
    pub crop_start: usize,
}

/// The song folders under `root`, sorted by name (the order shards are defined on).
/// Errors name the folder when it is missing, unreadable or holds no song folders.
pub fn list_song_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(root)
        .with_context(|| format!("{}: cannot read dataset folder", root.display()))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("{}: cannot read dataset folder", root.display()))?;
        if entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: dataset folder holds no song folders (expected one folder per song with one \
             audio file per stem)",
            root.display()
        );
    }
    Ok(dirs)
}

/// Parses a stem file name (without extension) into a category. Accepts category names and
/// Slakh labels, optionally followed by a numeric suffix (`guitar_2`, `piano-1`, `bass 3`).
pub fn category_of_stem_name(name: &str) -> Option<Category> {
    if let Ok(c) = Category::from_name(name) {
        return Some(c);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() {
        return None;
    }
    let base = base.trim_end_matches(['_', '-', ' ', '.']);
    Category::from_name(base).ok()
}

/// Loads one song folder: every WAV/FLAC file named after a category, mixed to mono and
/// resampled to `sample_rate`. A folder with no usable stem, or an unreadable audio file, is an
/// error naming it.
pub fn load_song(dir: &Path, sample_rate: u32) -> Result<Song> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read song folder", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot read song folder", dir.display()))?;
        files.push(entry.path());
    }
    files.sort();
    let mut stems: Vec<SongStem> = Vec::new();
    let mut skipped = Vec::new();
    for path in files {
        if path.is_dir() {
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !ext.is_some_and(|e| STEM_EXTENSIONS.contains(&e.as_str())) {
            continue; // metadata.json, notes, ...: not audio, silently ignored
        }
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Some(category) = category_of_stem_name(name) else {
            skipped.push((
                path.clone(),
                format!(
                    "'{name}' is not an instrument category (valid: {})",
                    Category::valid_names()
                ),
            ));
            continue;
        };
        add_stem(&mut stems, category, &path, sample_rate)?;
    }
    if stems.is_empty() {
        bail!(
            "{}: song folder has no stem files (WAV/FLAC named after a category: {}){}",
            dir.display(),
            Category::valid_names(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped {} file(s) with unknown names", skipped.len())
            }
        );
    }
    stems.sort_by_key(|s| s.category.id());
    let len = stems.iter().map(|s| s.samples.len()).max().unwrap_or(0);
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Song {
        id,
        dir: dir.to_path_buf(),
        stems,
        skipped,
        len,
    })
}

/// A uniformly drawn start and every stem of `song` cropped to `crop_len` samples from it
/// (zero-padded where a stem ends early; start 0 for songs shorter than the crop).
pub fn random_stem_crops(
    song: &Song,
    crop_len: usize,
    rng: &mut impl Rng,
) -> (usize, Vec<Vec<f32>>) {
    let start = if song.len > crop_len {
        rng.gen_range(0..=song.len - crop_len)
    } else {
        0
    };
    let crops = song
        .stems
        .iter()
        .map(|s| crop(&s.samples, start, crop_len))
        .collect();
    (start, crops)
}

/// `samples[start..start + len]`, zero-padded where the stem ends early.
fn crop(samples: &[f32], start: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    if start < samples.len() {
        let end = (start + len).min(samples.len());
        out[..end - start].copy_from_slice(&samples[start..end]);
    }
    out
}

/// RMS level in dBFS (the scale of [`crate::audio::rms_dbfs`], without copying).
fn level(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -200.0;
    }
    let ms = samples
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        / samples.len() as f64;
    if ms <= 0.0 {
        -200.0
    } else {
        (10.0 * ms.log10()) as f32
    }
}

fn peak(samples: &[f32]) -> f32 {
    let p = samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if p <= 0.0 {
        -200.0
    } else {
        20.0 * p.log10()
    }
}

/// Draws one pair from `song` (see the module notes), or `None` when `max_attempts` crops in a
/// row had fewer than two non-silent stems or a silent context mix. The song must have been
/// loaded at `config.sample_rate`.
pub fn draw_pair(song: &Song, config: &PairConfig, rng: &mut impl Rng) -> Option<Pair> {
    let crop_len = config.crop_samples();
    if crop_len == 0 || song.stems.len() < 2 {
        return None;
    }
    let max_context = config.max_context_stems.max(1);
    for _ in 0..config.max_attempts.max(1) {
        let (start, crops) = random_stem_crops(song, crop_len, rng);
        let active: Vec<usize> = (0..crops.len())
            .filter(|&i| level(&crops[i]) >= config.silence_dbfs)
            .collect();
        if active.len() < 2 {
            continue;
        }
        let target = active[rng.gen_range(0..active.len())];
        let mut others: Vec<usize> = active.into_iter().filter(|&i| i != target).collect();
        let k = rng.gen_range(1..=others.len().min(max_context));
        others.shuffle(rng);
        let mut chosen = others[..k].to_vec();
        chosen.sort_unstable();
        let mut mix = vec![0.0f32; crop_len];
        for &i in &chosen {
            mix.iter_mut().zip(&crops[i]).for_each(|(m, x)| *m += x);
        }
        if level(&mix) < config.silence_dbfs {
            continue;
        }
        let mut target_samples = crops[target].clone();
        apply_shared_gain(&mut mix, &mut target_samples, config);
        return Some(Pair {
            context: Audio::mono(config.sample_rate, mix).ok()?,
            target: Audio::mono(config.sample_rate, target_samples).ok()?,
            category: song.stems[target].category,
            context_categories: chosen.iter().map(|&i| song.stems[i].category).collect(),
            song_id: song.id.clone(),
            crop_start: start,
        });
    }
    None
}

/// Brings the context to `target_rms_dbfs` and scales the target by the same gain, limited so
/// neither peaks above `max_peak_dbfs`. Returns the gain in dB.
pub fn apply_shared_gain(context: &mut [f32], target: &mut [f32], config: &PairConfig) -> f32 {
    let peak = peak(context).max(peak(target));
    let gain_db = (config.target_rms_dbfs - level(context)).min(config.max_peak_dbfs - peak);
    let g = 10f32.powf(gain_db / 20.0);
    context
        .iter_mut()
        .chain(target.iter_mut())
        .for_each(|x| *x *= g);
    gain_db
}

/// Loads every song under `root` (sorted), for callers that keep a small dataset in memory.
pub fn load_songs(root: &Path, sample_rate: u32) -> Result<Vec<Song>> {
    list_song_dirs(root)?
        .iter()
        .map(|d| load_song(d, sample_rate))
        .collect()
}

/// Reads the stem file `path` as mono at `sample_rate` and adds it to `stems`: summed into the
/// stem of the same category if there is one (so a category appears once per song).
pub(crate) fn add_stem(
    stems: &mut Vec<SongStem>,
    category: Category,
    path: &Path,
    sample_rate: u32,
) -> Result<()> {
    let audio = read_audio(path)
        .with_context(|| format!("{}: cannot read stem", path.display()))?
        .to_mono_at(sample_rate)
        .with_context(|| format!("{}: cannot resample stem", path.display()))?;
    let samples = audio.channels.into_iter().next().unwrap_or_default();
    match stems.iter_mut().find(|s| s.category == category) {
        Some(stem) => {
            if stem.samples.len() < samples.len() {
                stem.samples.resize(samples.len(), 0.0);
            }
            stem.samples
                .iter_mut()
                .zip(&samples)
                .for_each(|(a, b)| *a += b);
            stem.paths.push(path.to_path_buf());
        }
        None => stems.push(SongStem {
            category,
            paths: vec![path.to_path_buf()],
            samples,
        }),
    }
    Ok(())
}
