//! `stemgen data midi`: multitrack MIDI files (type 0 and 1) rendered into song folders that
//! `data cache` and `eval --songs` read, so the model can be trained on music people wrote
//! (ARCHITECTURE §3.1).
//!
//! Each file becomes `<out>/<file stem>/`: one WAV per instrument category (General MIDI
//! program families; channel 10 is drums) and `metadata.json` (what the file says: tempo map,
//! time signatures, key signature; the chords when a sidecar gives them). Stems are rendered
//! like the synthetic songs: one rustysynth synthesizer per stem sharing the SoundFont, reverb
//! and chorus off, so the stems sum to the mix; every synthesizer receives every channel's
//! program changes, controllers (volume, expression, sustain, ...) and pitch bends, and only
//! its own category's notes. A note belongs to the category of the program its channel has
//! when the note starts.
//!
//! A broken or empty file is reported by name and skipped; the batch goes on. Finished folders
//! (with `metadata.json`) are skipped, so an interrupted batch resumes.

mod parse;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustysynth::{SoundFont, Synthesizer};
use serde::{Deserialize, Serialize};

pub use parse::{parse_midi, MidiFacts, MidiSong, TimedMessage, DRUM_CHANNEL};

use crate::audio::{write_wav, Audio, WavFormat};
use crate::data::synth::{render_messages, synth_settings, RenderOptions, METADATA_FILE};
use crate::data::Category;

/// Value of `generator` in the metadata of songs made from MIDI files.
pub const GENERATOR: &str = "stemgen-midi";
/// Peak the written mix is scaled to when it would clip (as the synthetic songs).
const MAX_MIX_PEAK: f32 = 0.89;
/// Chords of a song, when known: `<file stem>.chords.json` beside the MIDI file,
/// `{"bars": [["Am"], ["F", "G7"], ...]}`, the chords of each bar from the first (several in
/// a bar share it equally), as the MMA and corpus recipes write them; with `"pickup_beats"`,
/// the file starts with an upbeat of that many quarter notes before the first listed bar.
/// Bars are placed with the file's first time signature and its tempo map.
pub const CHORDS_SUFFIX: &str = "chords.json";

/// The chords sidecar's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarChords {
    pub bars: Vec<Vec<String>>,
    #[serde(default)]
    pub pickup_beats: f64,
}

/// `metadata.json` of a song made from a MIDI file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MidiSongMetadata {
    /// Always [`GENERATOR`].
    pub generator: String,
    /// The MIDI file's name.
    pub source: String,
    pub soundfont: String,
    pub sample_rate: u32,
    pub seconds: f64,
    pub tempo_map: Vec<(f64, f64)>,
    pub time_signatures: Vec<(f64, u8, u8)>,
    pub key_signature: Option<String>,
    /// `[start, end, symbol]` in seconds, when the chords are known.
    #[serde(default)]
    pub chords: Vec<(f64, f64, String)>,
    /// Gain applied to every stem so the mix does not clip (1 when none was needed).
    pub gain: f32,
    /// Category names of the stems (`<name>.wav`).
    pub stems: Vec<String>,
}

/// One file's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted {
    Written(PathBuf),
    /// Its folder exists already.
    Skipped(PathBuf),
    /// The file could not be used: the reason.
    Failed(PathBuf, String),
}

/// The MIDI files under `dir` (`.mid`, `.midi`, `.kar`; recursive), sorted.
pub fn list_midi_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "mid" | "midi" | "kar"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Renders every MIDI file under `input` into a song folder under `out` (in parallel),
/// calling `progress` after each file.
pub fn convert_folder(
    input: &Path,
    out: &Path,
    sound_font: &Arc<SoundFont>,
    soundfont_name: &str,
    options: &RenderOptions,
    progress: &(dyn Fn(&Converted) + Sync),
) -> std::io::Result<Vec<Converted>> {
    let files = list_midi_files(input)?;
    std::fs::create_dir_all(out)?;
    Ok(files
        .par_iter()
        .map(|file| {
            let name = song_name(input, file);
            let dir = out.join(&name);
            let result = if dir.join(METADATA_FILE).is_file() {
                Converted::Skipped(dir)
            } else {
                match convert_file(file, &dir, sound_font, soundfont_name, options) {
                    Ok(()) => Converted::Written(dir),
                    Err(e) => Converted::Failed(file.clone(), e),
                }
            };
            progress(&result);
            result
        })
        .collect())
}

/// A folder name for `file`: its path under `input`, separators replaced, extension dropped.
fn song_name(input: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(input).unwrap_or(file).with_extension("");
    rel.to_string_lossy()
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect()
}

/// Renders one file into `dir`; the error says what is wrong with the file.
pub fn convert_file(
    file: &Path,
    dir: &Path,
    sound_font: &Arc<SoundFont>,
    soundfont_name: &str,
    options: &RenderOptions,
) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read ({e})"))?;
    let song = parse_midi(&bytes)?;
    let chords = read_chords(file, &song.facts)?;
    let stems = render_stems(&song, sound_font, options)?;
    let peak = mix_peak(&stems);
    let gain = if peak > MAX_MIX_PEAK {
        MAX_MIX_PEAK / peak
    } else {
        1.0
    };
    // metadata.json is written last: a folder without it is unfinished, and a resumed batch
    // renders it again.
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (category, audio) in &stems {
        let mut audio = audio.clone();
        audio.channels.iter_mut().flatten().for_each(|s| *s *= gain);
        let path = dir.join(format!("{}.wav", category.name()));
        write_wav(&path, &audio, WavFormat::Int16).map_err(|e| e.to_string())?;
    }
    let meta = MidiSongMetadata {
        generator: GENERATOR.into(),
        source: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        soundfont: soundfont_name.into(),
        sample_rate: options.sample_rate,
        seconds: song.facts.seconds,
        tempo_map: song.facts.tempo_map.clone(),
        time_signatures: song.facts.time_signatures.clone(),
        key_signature: song.facts.key_signature.clone(),
        chords,
        gain,
        stems: stems.iter().map(|(c, _)| c.name().to_string()).collect(),
    };
    let json = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(METADATA_FILE), json + "\n").map_err(|e| e.to_string())
}

/// The chords sidecar of `file` (see [`CHORDS_SUFFIX`]) in seconds, empty when there is
/// none. Every symbol must parse.
fn read_chords(file: &Path, facts: &MidiFacts) -> Result<Vec<(f64, f64, String)>, String> {
    let path = file.with_extension(CHORDS_SUFFIX);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let fail = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let chart: BarChords =
        serde_json::from_str(&text).map_err(|e| fail(format!("not a chord sidecar ({e})")))?;
    let beats_per_bar = facts.time_signatures.first().map_or(4.0, |&(_, num, den)| {
        f64::from(num) * 4.0 / f64::from(den.max(1))
    });
    let mut out = Vec::new();
    for (bar, chords) in chart.bars.iter().enumerate() {
        let share = beats_per_bar / chords.len().max(1) as f64;
        for (k, symbol) in chords.iter().enumerate() {
            // Checked here, so a bad symbol names the sidecar; "N.C." spans are kept as such.
            crate::analysis::harmony::parse_chord(symbol).map_err(|e| fail(e.to_string()))?;
            let start = chart.pickup_beats + bar as f64 * beats_per_bar + k as f64 * share;
            out.push((
                facts.beat_seconds(start),
                facts.beat_seconds(start + share),
                symbol.clone(),
            ));
        }
    }
    Ok(out)
}

fn mix_peak(stems: &[(Category, Audio)]) -> f32 {
    let Some((_, first)) = stems.first() else {
        return 0.0;
    };
    let mut peak = 0.0f32;
    for ch in 0..first.num_channels() {
        for i in 0..first.num_frames() {
            let sum: f32 = stems.iter().map(|(_, a)| a.channels[ch][i]).sum();
            peak = peak.max(sum.abs());
        }
    }
    peak
}

/// One stem per category with notes, each `seconds + tail` long.
pub fn render_stems(
    song: &MidiSong,
    sound_font: &Arc<SoundFont>,
    options: &RenderOptions,
) -> Result<Vec<(Category, Audio)>, String> {
    if !(16_000..=192_000).contains(&options.sample_rate) {
        return Err(format!(
            "sample rate {} Hz is outside the synthesizer's 16-192 kHz",
            options.sample_rate
        ));
    }
    let frames = ((song.facts.seconds + options.tail_secs.max(0.0)) * options.sample_rate as f64)
        .ceil() as usize;
    song.categories()
        .par_iter()
        .map(|&category| {
            render_notes(song, Some(category), frames, sound_font, options).map(|a| (category, a))
        })
        .collect()
}

/// Every note of the song through one synthesizer, as long as the stems: the mix a single
/// General MIDI player would play (the stems sum to it).
pub fn render_mix(
    song: &MidiSong,
    sound_font: &Arc<SoundFont>,
    options: &RenderOptions,
) -> Result<Audio, String> {
    let frames = ((song.facts.seconds + options.tail_secs.max(0.0)) * options.sample_rate as f64)
        .ceil() as usize;
    render_notes(song, None, frames, sound_font, options)
}

/// The notes of `category` (every note for `None`) with every channel's state messages,
/// through one synthesizer.
fn render_notes(
    song: &MidiSong,
    category: Option<Category>,
    frames: usize,
    sound_font: &Arc<SoundFont>,
    options: &RenderOptions,
) -> Result<Audio, String> {
    let sr = options.sample_rate as f64;
    let mut synth = Synthesizer::new(sound_font, &synth_settings(options.sample_rate))
        .map_err(|e| format!("synthesizer: {e}"))?;
    // The drum channel plays the SoundFont's drum kits (bank 128, as the synthetic songs).
    synth.process_midi_message(i32::from(DRUM_CHANNEL), 0xB0, 0x00, 128);
    let messages = song.messages.iter().filter(|m| {
        let other_note = category.is_some() && m.category.is_some_and(|c| Some(c) != category);
        // Reverb and chorus sends stay at zero (the effects are shared, stems must sum); a bank
        // select on the drum channel would leave the drum kits.
        let send = m.status == 0xB0 && matches!(m.data1, 91 | 93);
        let drum_bank = m.status == 0xB0 && m.channel == DRUM_CHANNEL && matches!(m.data1, 0 | 32);
        !(other_note || send || drum_bank)
    });
    Ok(render_messages(
        &mut synth,
        messages.map(|m| {
            (
                (m.seconds * sr).round() as usize,
                i32::from(m.channel),
                i32::from(m.status),
                i32::from(m.data1),
                i32::from(m.data2),
            )
        }),
        frames,
        options,
    ))
}
