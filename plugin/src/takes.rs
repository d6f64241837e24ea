//! Takes: every generation is kept as a WAV file (at the host rate) with a JSON sidecar of
//! what made it, in a persistent folder per plugin instance; the list itself lives in the
//! plugin state ([`Session`]) so a project reopens with its takes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context, Result};
use nice_plug::params::persist::PersistentField;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use serde::{Deserialize, Serialize};
use stemgen::audio::{read_audio, write_wav, Audio, WavFormat};

use crate::playback::{Anchor, TakeAudio};

/// One generated take, as remembered in the plugin state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Take {
    pub id: u64,
    pub name: String,
    /// The WAV file (32-bit float, stereo, at `sample_rate`).
    pub path: PathBuf,
    pub instrument: String,
    pub seed: u64,
    pub preset: String,
    pub cfg_context: f64,
    pub cfg_instrument: f64,
    pub tempo: Option<f64>,
    pub time_sig: Option<(i32, i32)>,
    pub bars: Option<f64>,
    /// 0-based bar the take starts at, when the host said.
    pub start_bar: Option<i32>,
    pub seconds: f64,
    pub sample_rate: u32,
    pub anchor: Anchor,
    /// Wall time the generation took.
    pub generation_seconds: f64,
    /// Wall time until its coarse preview played (none for stems longer than one model
    /// window, and in takes made before previews existed).
    #[serde(default)]
    pub preview_seconds: Option<f64>,
    /// Takes mixed into the context this take was generated from (stem by stem).
    #[serde(default)]
    pub context_takes: Vec<u64>,
    /// The take and bars this one re-generated (the rest is that take's audio).
    #[serde(default)]
    pub regenerated: Option<BarRegion>,
    /// `cpu`, `cuda`, ...
    pub device: String,
}

/// What the plugin state keeps besides parameters.
/// The persisted [`Session`] plus a counter of host state loads, so the audio thread can tell
/// (with one atomic read) that the selected take must be reloaded after the host restored state
/// into a running instance.
#[derive(Debug, Default)]
pub struct SessionStore {
    session: RwLock<Session>,
    restores: AtomicU32,
}

impl SessionStore {
    pub fn read(&self) -> RwLockReadGuard<'_, Session> {
        self.session.read()
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Session> {
        self.session.write()
    }

    /// How many times the host has loaded state into this instance.
    pub fn restores(&self) -> u32 {
        self.restores.load(Ordering::Acquire)
    }
}

impl<'a> PersistentField<'a, Session> for SessionStore {
    fn set(&self, new_value: Session) {
        *self.session.write() = new_value;
        self.restores.fetch_add(1, Ordering::AcqRel);
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&Session) -> R,
    {
        f(&self.session.read())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// Names this instance's folder of takes; made on first use.
    pub session_id: String,
    /// Root folder for takes chosen by the user (default: [`default_takes_root`]).
    pub takes_root: Option<PathBuf>,
    /// Model directory chosen by the user (default: see [`crate::worker::resolve_model_dir`]).
    pub model_dir: Option<PathBuf>,
    pub takes: Vec<Take>,
    /// The take that plays on the timeline.
    pub selected: Option<u64>,
    pub next_take_id: u64,
    /// Seed of the next generation.
    pub seed: u64,
    /// Chords per bar from the first captured bar, e.g. "Am | F | C | G7" (empty: the harmony
    /// heard in the context). Needs a model with context features.
    pub chords: String,
    /// The key, e.g. "G minor" (empty: none given).
    pub key: String,
    /// Takes mixed into the captured context for the next generation, in the order added.
    pub context_takes: Vec<u64>,
    /// Bars selected on a take's waveform: the next generation re-generates only those.
    pub region: Option<BarRegion>,
}

/// Bars `first..first + count` (0-based, counted from the take's first bar) of take `take`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BarRegion {
    pub take: u64,
    pub first: u32,
    pub count: u32,
}

impl BarRegion {
    /// Seconds from the take's start, at its tempo and metre (`None`: the take has no bars).
    pub fn seconds(&self, take: &Take) -> Option<std::ops::Range<f64>> {
        let tempo = take.tempo.filter(|t| *t > 0.0)?;
        let beats_per_bar = match take.time_sig {
            Some((num, den)) if num > 0 && den > 0 => num as f64 * 4.0 / den as f64,
            _ => 4.0,
        };
        let bar = beats_per_bar * 60.0 / tempo;
        let start = self.first as f64 * bar;
        let end = ((self.first + self.count) as f64 * bar).min(take.seconds);
        (self.count > 0 && start < end).then_some(start..end)
    }

    /// "bars 5-6": numbered as the host's timeline numbers them (the waveform's bar numbers).
    pub fn label(&self, take: &Take) -> String {
        match self.host_bars(take) {
            (first, last) if first == last => format!("bar {first}"),
            (first, last) => format!("bars {first}-{last}"),
        }
    }

    /// The first and last bar as the host's timeline numbers them.
    pub fn host_bars(&self, take: &Take) -> (i64, i64) {
        let first = take.start_bar.unwrap_or(0) as i64 + self.first as i64 + 1;
        (first, first + self.count.max(1) as i64 - 1)
    }
}

impl Session {
    /// The folder this session writes its takes to (the id is made here if missing).
    pub fn takes_dir(&mut self) -> PathBuf {
        if self.session_id.is_empty() {
            self.session_id = new_session_id();
        }
        self.takes_root
            .clone()
            .unwrap_or_else(default_takes_root)
            .join(&self.session_id)
    }

    pub fn take(&self, id: u64) -> Option<&Take> {
        self.takes.iter().find(|t| t.id == id)
    }

    pub fn selected_take(&self) -> Option<&Take> {
        self.selected.and_then(|id| self.take(id))
    }
}

/// Environment variable overriding the default takes folder (tests, portable setups).
pub const TAKES_DIR_ENV: &str = "STEMGEN_TAKES_DIR";

/// `$STEMGEN_TAKES_DIR`, else `<user data dir>/StemGen/takes` (`~/.local/share/StemGen/takes`
/// on Linux).
pub fn default_takes_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(TAKES_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("StemGen")
        .join("takes")
}

fn new_session_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("session-{:x}-{:x}", nanos, std::process::id())
}

/// A file-name-safe version of `name`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the take's WAV and its JSON sidecar (`take` plus the engine's `metadata`) into `dir`;
/// returns the take with its path filled in.
pub fn write_take(
    dir: &Path,
    mut take: Take,
    audio: &Audio,
    metadata: &serde_json::Value,
) -> Result<Take> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the takes folder", dir.display()))?;
    let stem = format!(
        "take-{:03}-{}-seed{}",
        take.id,
        file_stem(&take.instrument),
        take.seed
    );
    let wav = dir.join(format!("{stem}.wav"));
    write_wav(&wav, audio, WavFormat::Float32)
        .with_context(|| format!("{}: cannot write the take", wav.display()))?;
    take.path = wav;
    write_sidecar(&take, metadata)?;
    Ok(take)
}

/// (Re)writes `<take>.json` next to the WAV.
pub fn write_sidecar(take: &Take, metadata: &serde_json::Value) -> Result<()> {
    let json = take.path.with_extension("json");
    let body = serde_json::json!({ "take": take, "generation": metadata });
    std::fs::write(&json, serde_json::to_string_pretty(&body)?)
        .with_context(|| format!("{}: cannot write the take's metadata", json.display()))
}

/// The metadata the sidecar of `take` holds (null if it is missing or unreadable).
pub fn read_generation_metadata(take: &Take) -> serde_json::Value {
    std::fs::read_to_string(take.path.with_extension("json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map_or(serde_json::Value::Null, |v| v["generation"].clone())
}

/// Reads a take's WAV and prepares it for playback at `host_rate` (resampled if the host rate
/// changed since it was made). Clear errors for a missing or unreadable file.
pub fn load_take_audio(take: &Take, host_rate: u32) -> Result<TakeAudio> {
    ensure!(
        take.path.is_file(),
        "{}: the take's file is missing (moved or deleted?)",
        take.path.display()
    );
    let audio = read_audio(&take.path)
        .with_context(|| format!("{}: cannot read the take", take.path.display()))?;
    take_audio(take, &audio, host_rate)
}

/// `audio` as stereo at `host_rate`, anchored like `take`.
pub fn take_audio(take: &Take, audio: &Audio, host_rate: u32) -> Result<TakeAudio> {
    playback_audio(take.id, take.anchor, audio, host_rate)
}

/// `audio` as stereo at `host_rate`, for playback as take `take_id` at `anchor`.
pub fn playback_audio(
    take_id: u64,
    anchor: Anchor,
    audio: &Audio,
    host_rate: u32,
) -> Result<TakeAudio> {
    let audio = if audio.sample_rate == host_rate {
        audio.with_channels(2)
    } else {
        audio.resampled(host_rate)?.with_channels(2)
    };
    let mut channels = audio.channels.into_iter();
    let left = channels.next().unwrap_or_default();
    let right = channels.next().unwrap_or_else(|| left.clone());
    Ok(TakeAudio {
        take_id,
        sample_rate: host_rate,
        left,
        right,
        anchor,
    })
}

/// The mono context a take was generated from, written beside it so its bars can be
/// re-generated after the project reopens and so a producer can hear what it listened to.
pub fn context_path(take: &Take) -> PathBuf {
    take.path.with_extension("context.wav")
}

/// The file a drag of `take` hands out: the take's own WAV, or for `region` (bars of this
/// take) a trimmed copy beside it (`<take>-bars-5-6.wav`, host bar numbers), written now,
/// sample for sample the take's samples of those bars.
pub fn drag_file(take: &Take, region: Option<BarRegion>) -> Result<PathBuf> {
    ensure!(
        take.path.is_file(),
        "{}: the take's file is missing (moved or deleted?)",
        take.path.display()
    );
    let Some(region) = region.filter(|r| r.take == take.id) else {
        return Ok(take.path.clone());
    };
    let seconds = region
        .seconds(take)
        .with_context(|| format!("{}: the take has no bars to select", take.path.display()))?;
    let audio = read_audio(&take.path)
        .with_context(|| format!("{}: cannot read the take", take.path.display()))?;
    let rate = audio.sample_rate as f64;
    let frames = audio.channels.first().map_or(0, Vec::len);
    let start = ((seconds.start * rate).round() as usize).min(frames);
    let end = ((seconds.end * rate).round() as usize).clamp(start, frames);
    ensure!(
        end > start,
        "{}: the selected bars are past its end",
        take.path.display()
    );
    let trimmed = Audio {
        sample_rate: audio.sample_rate,
        channels: audio
            .channels
            .iter()
            .map(|c| c[start..end].to_vec())
            .collect(),
    };
    let (first, last) = region.host_bars(take);
    let mut name = bars_copy_prefix(take).into_os_string();
    name.push(format!("{first}-{last}.wav"));
    let path = PathBuf::from(name);
    write_wav(&path, &trimmed, WavFormat::Float32)
        .with_context(|| format!("{}: cannot write the selected bars", path.display()))?;
    Ok(path)
}

/// `<folder>/<take file stem>-bars-`: the start of every trimmed copy's path.
fn bars_copy_prefix(take: &Take) -> PathBuf {
    let stem = take.path.file_stem().unwrap_or_default().to_string_lossy();
    take.path.with_file_name(format!("{stem}-bars-"))
}

/// Deletes a take's files, trimmed copies included (a missing file is not an error).
pub fn delete_take_files(take: &Take) -> Result<()> {
    let prefix = bars_copy_prefix(take);
    let prefix = prefix.file_name().unwrap_or_default().to_string_lossy();
    let copies = take
        .path
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix.as_ref()))
        });
    let own = [
        take.path.clone(),
        take.path.with_extension("json"),
        context_path(take),
    ];
    for path in own.into_iter().chain(copies) {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("{}: cannot delete", path.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn take(id: u64) -> Take {
        Take {
            id,
            name: format!("Take {id}"),
            path: PathBuf::new(),
            instrument: "bass".into(),
            seed: 42,
            preset: "normal".into(),
            cfg_context: 3.0,
            cfg_instrument: 3.0,
            tempo: Some(120.0),
            time_sig: Some((4, 4)),
            bars: Some(2.0),
            start_bar: Some(4),
            seconds: 0.5,
            sample_rate: 48_000,
            anchor: Anchor {
                start_beats: Some(16.0),
                tempo: Some(120.0),
                start_samples: Some(384_000),
                sample_rate: 48_000,
            },
            generation_seconds: 1.0,
            preview_seconds: None,
            context_takes: Vec::new(),
            regenerated: None,
            device: "cpu".into(),
        }
    }

    #[test]
    fn a_take_round_trips_through_its_files_and_resamples_for_a_new_host_rate() {
        let dir = tempfile::tempdir().unwrap();
        let audio = Audio::new(
            48_000,
            vec![
                (0..24_000).map(|i| (i as f32 * 0.01).sin() * 0.5).collect(),
                vec![0.25; 24_000],
            ],
        )
        .unwrap();
        let meta = serde_json::json!({"seed": 42});
        let written = write_take(dir.path(), take(3), &audio, &meta).unwrap();
        assert!(written.path.is_file());
        assert_eq!(read_generation_metadata(&written)["seed"], 42);

        let same = load_take_audio(&written, 48_000).unwrap();
        assert_eq!(same.left, audio.channels[0]);
        assert_eq!(same.anchor, written.anchor);
        let resampled = load_take_audio(&written, 96_000).unwrap();
        assert_eq!(resampled.len(), 48_000);
        assert_eq!(resampled.sample_rate, 96_000);

        delete_take_files(&written).unwrap();
        let err = load_take_audio(&written, 48_000).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        delete_take_files(&written).unwrap();
    }

    #[test]
    fn a_drag_hands_out_the_take_or_a_trimmed_copy_of_its_selected_bars() {
        let dir = tempfile::tempdir().unwrap();
        // Four bars of 4/4 at 120 BPM (2 s each), starting at the host's bar 5.
        let frames = 8 * 48_000;
        let left: Vec<f32> = (0..frames).map(|i| (i as f32 * 0.001).sin()).collect();
        let right: Vec<f32> = (0..frames).map(|i| i as f32 / frames as f32).collect();
        let audio = Audio::new(48_000, vec![left.clone(), right.clone()]).unwrap();
        let mut four_bars = take(7);
        four_bars.seconds = 8.0;
        let written = write_take(dir.path(), four_bars, &audio, &serde_json::json!({})).unwrap();

        assert_eq!(drag_file(&written, None).unwrap(), written.path);
        let other_take = BarRegion {
            take: 8,
            first: 1,
            count: 2,
        };
        assert_eq!(drag_file(&written, Some(other_take)).unwrap(), written.path);

        let bars_2_3 = BarRegion {
            take: 7,
            first: 1,
            count: 2,
        };
        let copy = drag_file(&written, Some(bars_2_3)).unwrap();
        assert!(
            copy.to_string_lossy().ends_with("-bars-6-7.wav"),
            "{copy:?}"
        );
        let trimmed = read_audio(&copy).unwrap();
        assert_eq!(trimmed.sample_rate, 48_000);
        assert_eq!(trimmed.channels[0], left[96_000..288_000]);
        assert_eq!(trimmed.channels[1], right[96_000..288_000]);

        let past_the_end = BarRegion {
            take: 7,
            first: 4,
            count: 1,
        };
        assert!(drag_file(&written, Some(past_the_end)).is_err());

        delete_take_files(&written).unwrap();
        assert!(!copy.exists() && !written.path.exists());
        let err = drag_file(&written, None).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn session_state_round_trips_as_json_and_old_states_load() {
        let mut s = Session::default();
        let dir = s.takes_dir();
        assert!(dir.ends_with(&s.session_id) && !s.session_id.is_empty());
        s.takes.push(take(1));
        s.selected = Some(1);
        s.chords = "Am | F | C | G7".into();
        s.key = "A minor".into();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Session>(&json).unwrap(), s);
        let old: Session = serde_json::from_str(r#"{"seed": 5}"#).unwrap();
        assert_eq!(old.seed, 5);
        assert!(old.takes.is_empty());
    }
}
