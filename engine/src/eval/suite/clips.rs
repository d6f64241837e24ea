//! The test set: synthesized test songs (rendered once, reused), the song each clip is
//! planned from, and drawing an active clip (target and context) from a song.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;

use crate::audio::SILENCE_DBFS;
use crate::data::datasets::{load_song_source, SongSource};
use crate::data::pairs::{random_stem_crops, Song};
use crate::data::synth;

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
pub(super) struct ClipAudio {
    pub(super) context: Vec<f32>,
    pub(super) target: Vec<f32>,
}

/// Draws a clip from `song` (see the module notes), or `None` after [`CROP_ATTEMPTS`]
/// crops without an eligible target.
pub(super) fn draw_clip(
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

pub(super) fn synth_song_name(i: usize) -> String {
    format!("song-{i:05}")
}

/// Makes sure `dir` holds the `count` test songs with seeds from [`SYNTH_BASE_SEED`],
/// rendering them when any is missing or was made with another seed.
pub(super) fn ensure_synth_songs(
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

/// The planned song of clip `i`: spread over the list when there are at least as many songs
/// as clips, cycled otherwise.
pub(super) fn planned_song(i: usize, clips: usize, songs: usize) -> usize {
    if songs >= clips {
        i * songs / clips
    } else {
        i % songs
    }
}

/// Loads a song; `None` when it has a single stem: there is no context to draw, so its clips
/// come from the next songs, as when a song has no active crop (MIDI libraries hold solo
/// drum grooves and the like).
pub(super) fn load_with_context(source: &SongSource, rate: u32) -> Result<Option<Song>> {
    let song = load_song_source(source, rate)?;
    Ok((song.stems.len() >= 2).then_some(song))
}
