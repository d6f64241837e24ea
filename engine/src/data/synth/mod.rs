//! Synthetic multi-stem songs (ARCHITECTURE §3.1, issue 4 item 1).
//!
//! A seeded symbolic generator ([`plan_song`]) writes a song — tempo 70-170 BPM, 4/4 or 3/4,
//! key and mode, sections with diatonic chord progressions, humanised timing and velocity —
//! as parts for drums, bass, keys, guitar, pads, lead, stabs and bells, each sounding as a
//! General MIDI program drawn from its instrument category. [`render_song`] renders each part
//! to its own stem with rustysynth (one synthesizer per stem, shared SoundFont, reverb and
//! chorus off, so the stems sum to the mix), in parallel. [`write_song`] and
//! [`generate_songs`] write songs as stem folders (`bass.wav`, `drums.wav`, ...) with a
//! `metadata.json`.
//!
//! SoundFonts come from Debian: `timgm6mb-soundfont` (6 MB, tests and CI) and
//! `fluid-soundfont-gm` (148 MB, training data). rustysynth reads `.sf2` only, not `.sf3`.

mod parts;
mod plan;
mod render;
mod score;
mod song_io;
mod theory;

pub use plan::{
    plan_song, ChordSpan, Note, Part, PlanOptions, Role, Section, SectionKind, SongPlan,
    DRUM_CHANNEL, TEMPO_RANGE,
};
pub use render::{
    render_messages, render_parts, render_song, song_frames, synth_settings, RenderOptions,
    RenderedSong, Stem, BLOCK_SIZE,
};
pub use song_io::{
    generate_songs, read_metadata, song_metadata, write_song, GenerateOptions, SongMetadata,
    StemMetadata, METADATA_FILE,
};
pub use theory::{Chord, Mode, PITCH_NAMES};

use rustysynth::SoundFont;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where [`find_soundfont`] looks, best first: FluidR3 (Debian `fluid-soundfont-gm`, the
/// training-data SoundFont) when installed, else TimGM6mb (`timgm6mb-soundfont`).
pub const DEFAULT_SOUNDFONTS: [&str; 2] = [
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
];

/// The small General MIDI SoundFont the tests use.
pub const TIMGM6MB: &str = "/usr/share/sounds/sf2/TimGM6mb.sf2";

const INSTALL_HINT: &str = "install a General MIDI SoundFont with `apt-get install \
    timgm6mb-soundfont` (6 MB, enough for tests) or `apt-get install fluid-soundfont-gm` \
    (148 MB, better for training data), or pass the path of a .sf2 file";

/// Something that stops a song from being planned, rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("no General MIDI SoundFont found (looked for {}); {INSTALL_HINT}", .searched.join(", "))]
    NoSoundFont { searched: Vec<String> },
    #[error("SoundFont {} not found; {INSTALL_HINT}", .0.display())]
    SoundFontMissing(PathBuf),
    #[error("{}: .sf3 (compressed) SoundFonts are not supported by the synthesizer (rustysynth reads .sf2 only); use an .sf2 file, e.g. from `apt-get install timgm6mb-soundfont` or `apt-get install fluid-soundfont-gm`", .0.display())]
    Sf3Unsupported(PathBuf),
    #[error("{}: not a readable SoundFont 2 file: {problem}", .path.display())]
    SoundFontUnreadable { path: PathBuf, problem: String },
    #[error("sample rate {0} Hz is outside the synthesizer's 16-192 kHz")]
    SampleRate(u32),
    #[error("{0}")]
    Plan(String),
    #[error("{}: {problem}", .path.display())]
    Io { path: PathBuf, problem: String },
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
}

/// The first existing SoundFont among `candidates`, or an error naming them all and the
/// Debian packages that provide one.
pub fn find_soundfont_in<P: AsRef<Path>>(candidates: &[P]) -> Result<PathBuf, SynthError> {
    candidates
        .iter()
        .map(|p| p.as_ref())
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| SynthError::NoSoundFont {
            searched: candidates
                .iter()
                .map(|p| p.as_ref().display().to_string())
                .collect(),
        })
}

/// `explicit` when given, else the first installed of [`DEFAULT_SOUNDFONTS`].
pub fn find_soundfont(explicit: Option<&Path>) -> Result<PathBuf, SynthError> {
    match explicit {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(if is_sf3(p) {
            SynthError::Sf3Unsupported(p.to_path_buf())
        } else {
            SynthError::SoundFontMissing(p.to_path_buf())
        }),
        None => find_soundfont_in(&DEFAULT_SOUNDFONTS),
    }
}

fn is_sf3(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("sf3"))
}

/// Loads a `.sf2` SoundFont to share between synthesizers.
pub fn load_soundfont(path: &Path) -> Result<Arc<SoundFont>, SynthError> {
    if is_sf3(path) {
        return Err(SynthError::Sf3Unsupported(path.to_path_buf()));
    }
    if !path.is_file() {
        return Err(SynthError::SoundFontMissing(path.to_path_buf()));
    }
    let file = std::fs::File::open(path).map_err(|e| SynthError::SoundFontUnreadable {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let mut reader = std::io::BufReader::new(file);
    let sf = SoundFont::new(&mut reader).map_err(|e| SynthError::SoundFontUnreadable {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    // SoundFont 3 files may carry an .sf2 name; their samples are Ogg Vorbis.
    if sf.get_info().get_version().get_major() >= 3 {
        return Err(SynthError::Sf3Unsupported(path.to_path_buf()));
    }
    Ok(Arc::new(sf))
}
