//! Writing songs as stem folders (one WAV per stem, named by category, plus
//! `metadata.json`) and generating many songs in parallel.

use super::plan::{plan_song, PlanOptions, Role, SectionKind, SongPlan};
use super::render::{render_song, RenderOptions, RenderedSong};
use super::SynthError;
use crate::analysis::harmony::{parse_chord, HarmonyError, TimedChord};
use crate::audio::{write_wav, WavFormat};
use rayon::prelude::*;
use rustysynth::SoundFont;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the metadata file in each song folder.
pub const METADATA_FILE: &str = "metadata.json";

/// Peak level the written mix is scaled to when it would clip (about -1 dBFS). The same gain
/// is applied to every stem, so the stems still sum to the mix.
const MAX_MIX_PEAK: f32 = 0.89;

/// What `metadata.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SongMetadata {
    /// Always "stemgen-synth"; tells loaders what made the folder.
    pub generator: String,
    pub version: u32,
    pub seed: u64,
    pub tempo_bpm: f64,
    /// [numerator, denominator], e.g. [3, 4].
    pub time_signature: [u32; 2],
    /// Tonic pitch class name ("C", "Eb", ...).
    pub key: String,
    pub key_pitch_class: u8,
    pub mode: super::Mode,
    pub bars: u32,
    /// Length of the bars in seconds; the files are `tail_secs` longer.
    pub duration_secs: f64,
    pub tail_secs: f64,
    pub sample_rate: u32,
    pub channels: u32,
    /// File name of the SoundFont the stems were rendered with.
    pub soundfont: String,
    /// Linear gain applied to every stem so the mix does not clip (1 when none was needed).
    pub gain: f32,
    pub sections: Vec<SectionMetadata>,
    pub stems: Vec<StemMetadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionMetadata {
    pub kind: SectionKind,
    pub start_bar: u32,
    pub bars: u32,
    /// Chord symbols in order, one per chord change.
    pub chords: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemMetadata {
    /// WAV file name inside the song folder.
    pub file: String,
    /// Category name (`Category::name`) and id (`Category::id`).
    pub category: String,
    pub category_id: u32,
    pub role: Role,
    /// GM program, 0-based (drums: the kit number).
    pub program: u8,
    pub midi_channel: u8,
    pub note_count: usize,
}

impl SongMetadata {
    /// The chords of the song in seconds from its start. Chords of a section share it
    /// equally (the plan gives each chord of a section the same number of beats).
    pub fn chord_spans(&self) -> Result<Vec<TimedChord>, HarmonyError> {
        let beat_s = 60.0 / self.tempo_bpm;
        let bar_beats = self.time_signature[0] as f64;
        let mut spans = Vec::new();
        for section in &self.sections {
            if section.chords.is_empty() {
                continue;
            }
            let start = section.start_bar as f64 * bar_beats * beat_s;
            let share = section.bars as f64 * bar_beats * beat_s / section.chords.len() as f64;
            for (i, symbol) in section.chords.iter().enumerate() {
                spans.push(TimedChord {
                    start: start + i as f64 * share,
                    end: start + (i + 1) as f64 * share,
                    chord: parse_chord(symbol)?,
                });
            }
        }
        Ok(spans)
    }
}

/// The metadata of `plan` as rendered with `options`.
pub fn song_metadata(
    plan: &SongPlan,
    options: &RenderOptions,
    soundfont: &str,
    gain: f32,
) -> SongMetadata {
    let bpb = plan.beats_per_bar as f64;
    SongMetadata {
        generator: "stemgen-synth".into(),
        version: 1,
        seed: plan.seed,
        tempo_bpm: plan.tempo_bpm,
        time_signature: [plan.beats_per_bar, 4],
        key: super::PITCH_NAMES[plan.key_tonic as usize].into(),
        key_pitch_class: plan.key_tonic,
        mode: plan.mode,
        bars: plan.bars,
        duration_secs: plan.duration_secs(),
        tail_secs: options.tail_secs,
        sample_rate: options.sample_rate,
        channels: if options.stereo { 2 } else { 1 },
        soundfont: soundfont.into(),
        gain,
        sections: plan
            .sections
            .iter()
            .map(|s| {
                let (a, b) = (
                    s.start_bar as f64 * bpb,
                    (s.start_bar + s.bars) as f64 * bpb,
                );
                SectionMetadata {
                    kind: s.kind,
                    start_bar: s.start_bar,
                    bars: s.bars,
                    chords: plan
                        .chords
                        .iter()
                        .filter(|c| c.start_beat >= a - 1e-9 && c.start_beat < b - 1e-9)
                        .map(|c| c.chord.symbol())
                        .collect(),
                }
            })
            .collect(),
        stems: plan
            .parts
            .iter()
            .map(|p| StemMetadata {
                file: format!("{}.wav", p.category.name()),
                category: p.category.name().into(),
                category_id: p.category.id(),
                role: p.role,
                program: p.program,
                midi_channel: p.channel,
                note_count: p.notes.len(),
            })
            .collect(),
    }
}

/// Reads a song folder's `metadata.json`.
pub fn read_metadata(song_dir: &Path) -> Result<SongMetadata, SynthError> {
    let path = song_dir.join(METADATA_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| SynthError::Io {
        path,
        problem: format!("invalid metadata: {e}"),
    })
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SynthError {
    SynthError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// Writes a rendered song into `dir` (created if needed): one WAV per stem named by category
/// and `metadata.json`. If the mix would clip, every stem is scaled by the same gain
/// (recorded in the metadata). No mix file is written: a loader of the "one folder per song,
/// one file per stem" layout would take it for a stem; the mix is the sum of the stems.
pub fn write_song(
    dir: &Path,
    plan: &SongPlan,
    song: &RenderedSong,
    options: &RenderOptions,
    soundfont_name: &str,
    format: WavFormat,
) -> Result<SongMetadata, SynthError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let peak = song
        .mix()
        .channels
        .iter()
        .flatten()
        .fold(0.0f32, |m, s| m.max(s.abs()));
    let gain = if peak > MAX_MIX_PEAK {
        MAX_MIX_PEAK / peak
    } else {
        1.0
    };
    let meta = song_metadata(plan, options, soundfont_name, gain);
    for (stem, sm) in song.stems.iter().zip(&meta.stems) {
        let mut audio = stem.audio.clone();
        if gain != 1.0 {
            audio.channels.iter_mut().flatten().for_each(|s| *s *= gain);
        }
        write_wav(&dir.join(&sm.file), &audio, format)?;
    }
    let path = dir.join(METADATA_FILE);
    let json = serde_json::to_string_pretty(&meta).map_err(|e| io_err(&path, e))?;
    std::fs::write(&path, json + "\n").map_err(|e| io_err(&path, e))?;
    Ok(meta)
}

/// Options for [`generate_songs`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub plan: PlanOptions,
    pub render: RenderOptions,
    pub format: WavFormat,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            plan: PlanOptions::default(),
            render: RenderOptions::default(),
            format: WavFormat::Int16,
        }
    }
}

/// Generates `count` songs with seeds `base_seed, base_seed + 1, ...` into
/// `out_dir/song-00000`, `song-00001`, ..., in parallel (songs and their stems on the rayon
/// pool). `progress` is called once per finished song (from worker threads). Returns the
/// song folders in seed order.
pub fn generate_songs(
    out_dir: &Path,
    sound_font: &Arc<SoundFont>,
    soundfont_name: &str,
    base_seed: u64,
    count: usize,
    options: &GenerateOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<PathBuf>, SynthError> {
    std::fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    (0..count)
        .into_par_iter()
        .map(|i| {
            let seed = base_seed.wrapping_add(i as u64);
            let plan = plan_song(seed, &options.plan);
            let song = render_song(sound_font, &plan, &options.render)?;
            let dir = out_dir.join(format!("song-{i:05}"));
            write_song(
                &dir,
                &plan,
                &song,
                &options.render,
                soundfont_name,
                options.format,
            )?;
            progress(i);
            Ok(dir)
        })
        .collect()
}
