//! Harmony given by the producer instead of heard in the context: chord symbols, a chord
//! chart of bars, a key, and the chroma templates they stand for (ARCHITECTURE §3.8).
//!
//! Chord symbols are parsed by the `chordparser` crate (pop/jazz lead-sheet notation:
//! triads, 6ths, 7ths, extensions, sus, dim, aug, alterations and slash basses); this module
//! adds what it lacks: "N.C." for no chord, the chart grammar (`|` between bars, spaces
//! between the chords of one bar, which share the bar equally) and errors that name the
//! symbol, its bar and what is accepted.
//!
//! A template is what a clean recording of the chord would give the measured features:
//! chroma 1 on the chord's pitch classes and 0 elsewhere, bass chroma 1 on its bass note.

use chordparser::parsing::Parser;

use super::context_features::{ContextFeature, FeatureFrames};
use super::key::{Key, Mode, MAJOR_SCALE, MINOR_SCALE};

/// What the chord parser accepts, for error messages.
pub const ACCEPTED: &str = "a root A-G with an optional # or b, then a quality such as m, 7, \
maj7, m7, m7b5, dim, dim7, aug, sus2, sus4, 6, 9 or 13, and an optional /bass note \
(e.g. Am, G7, Cmaj7, F#m7b5, Bb/D); N.C. for no chord";

/// A bad chord symbol or chart.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HarmonyError {
    #[error("unknown chord symbol '{symbol}'{where_}: expected {ACCEPTED}")]
    BadSymbol { symbol: String, where_: String },
    #[error("empty chord chart: write chords per bar separated by |, e.g. \"Am | F | C | G7\"")]
    EmptyChart,
    #[error("bar {bar} of the chord chart is empty (write N.C. for a bar without a chord)")]
    EmptyBar { bar: usize },
    #[error("unknown key '{0}': expected a tonic and a mode, e.g. \"G minor\", \"Eb major\"")]
    BadKey(String),
}

/// One chord: its symbol as written, root, bass note and pitch classes (0 = C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chord {
    pub symbol: String,
    pub root: u8,
    pub bass: u8,
    pub pitch_classes: [bool; 12],
}

/// Parses one chord symbol; "N.C." / "NC" (no chord) gives `None`.
pub fn parse_chord(symbol: &str) -> Result<Option<Chord>, HarmonyError> {
    let s = symbol.trim();
    if matches!(
        s.to_ascii_uppercase().as_str(),
        "N.C." | "NC" | "N.C" | "N/C"
    ) {
        return Ok(None);
    }
    let bad = || HarmonyError::BadSymbol {
        symbol: s.to_string(),
        where_: String::new(),
    };
    // The parser accepts a lowercase root ("am") and a few oddities; chord charts use a
    // capital root, so anything else is refused here rather than guessed.
    if !s.starts_with(|c: char| ('A'..='G').contains(&c)) {
        return Err(bad());
    }
    let chord = Parser::new().parse(s).map_err(|_| bad())?;
    let root = chord.root.to_semitone() % 12;
    let mut pitch_classes = [false; 12];
    for semis in &chord.semitones {
        pitch_classes[((root + semis) % 12) as usize] = true;
    }
    let bass = chord.bass.map_or(root, |b| b.to_semitone() % 12);
    pitch_classes[bass as usize] = true;
    Ok(Some(Chord {
        symbol: s.to_string(),
        root,
        bass,
        pitch_classes,
    }))
}

/// A chord chart: bars of chords (several chords in a bar share it equally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordChart {
    pub text: String,
    pub bars: Vec<Vec<Option<Chord>>>,
}

/// A chord sounding from `start` to `end` seconds (`None`: no chord).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedChord {
    pub start: f64,
    pub end: f64,
    pub chord: Option<Chord>,
}

impl ChordChart {
    /// Parses `"Am | F | C G7"`: bars separated by `|`, chords in a bar by spaces.
    pub fn parse(text: &str) -> Result<ChordChart, HarmonyError> {
        let cells: Vec<&str> = text.split('|').collect();
        if text.trim().is_empty() || cells.iter().all(|c| c.trim().is_empty()) {
            return Err(HarmonyError::EmptyChart);
        }
        // A leading or trailing bar line ("| Am | F |") is layout, not an empty bar.
        let first = cells.iter().position(|c| !c.trim().is_empty()).unwrap_or(0);
        let last = cells
            .iter()
            .rposition(|c| !c.trim().is_empty())
            .unwrap_or(0);
        let mut bars = Vec::new();
        for (i, cell) in cells[first..=last].iter().enumerate() {
            let symbols: Vec<&str> = cell.split_whitespace().collect();
            if symbols.is_empty() {
                return Err(HarmonyError::EmptyBar { bar: i + 1 });
            }
            let chords = symbols
                .iter()
                .map(|s| {
                    parse_chord(s).map_err(|e| match e {
                        HarmonyError::BadSymbol { symbol, .. } => HarmonyError::BadSymbol {
                            symbol,
                            where_: format!(" in bar {}", i + 1),
                        },
                        other => other,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            bars.push(chords);
        }
        Ok(ChordChart {
            text: text.trim().to_string(),
            bars,
        })
    }

    /// The chart repeated from 0 s to `seconds` at `bpm` with `beats_per_bar` beats a bar.
    pub fn spans(&self, bpm: f64, beats_per_bar: u32, seconds: f64) -> Vec<TimedChord> {
        let bar_s = 60.0 / bpm * beats_per_bar as f64;
        let mut out = Vec::new();
        if !(bar_s > 0.0 && seconds > 0.0) {
            return out;
        }
        let mut bar = 0usize;
        while (bar as f64) * bar_s < seconds {
            let chords = &self.bars[bar % self.bars.len()];
            let share = bar_s / chords.len() as f64;
            for (k, chord) in chords.iter().enumerate() {
                let start = bar as f64 * bar_s + k as f64 * share;
                if start >= seconds {
                    break;
                }
                out.push(TimedChord {
                    start,
                    end: (start + share).min(seconds),
                    chord: chord.clone(),
                });
            }
            bar += 1;
        }
        out
    }
}

/// Parses a key such as "G minor", "Eb major", "f# minor", "Am" or "C".
pub fn parse_key(text: &str) -> Result<Key, HarmonyError> {
    let t = text.trim();
    if let Some(key) = Key::parse(t) {
        return Ok(key);
    }
    // Also accept a chord-like short form: "Am" = A minor, "C" = C major.
    match parse_chord(t) {
        Ok(Some(chord)) if t.len() <= 3 => {
            let minor = t.ends_with('m');
            Ok(Key {
                tonic: chord.root as usize,
                mode: if minor { Mode::Minor } else { Mode::Major },
            })
        }
        _ => Err(HarmonyError::BadKey(t.to_string())),
    }
}

/// Chroma and bass chroma of `spans` on `frames` frames at `frame_rate` (frame n at
/// n / frame_rate s, taking the chord sounding then), written into `features`.
pub fn apply_chords(features: &mut FeatureFrames, spans: &[TimedChord], frame_rate: f64) {
    let chord_at = |n: usize| {
        let t = n as f64 / frame_rate;
        let i = spans.partition_point(|s| s.start <= t);
        (i > 0 && t < spans[i - 1].end)
            .then(|| spans[i - 1].chord.as_ref())
            .flatten()
    };
    features.replace(ContextFeature::Chroma, |n| match chord_at(n) {
        Some(c) => c.pitch_classes.iter().map(|&b| f32::from(b)).collect(),
        None => vec![0.0; 12],
    });
    features.replace(ContextFeature::BassChroma, |n| {
        let mut v = vec![0.0; 12];
        if let Some(c) = chord_at(n) {
            v[c.bass as usize] = 1.0;
        }
        v
    });
}

/// Pitch-class weights of `key`: 1 on the tonic triad, 0.5 on the other scale tones.
pub fn key_template(key: Key) -> [f32; 12] {
    let scale = match key.mode {
        Mode::Major => MAJOR_SCALE,
        Mode::Minor => MINOR_SCALE,
    };
    let mut out = [0.0; 12];
    for (degree, &s) in scale.iter().enumerate() {
        out[(key.tonic + s) % 12] = if degree % 2 == 0 && degree <= 4 {
            1.0
        } else {
            0.5
        };
    }
    out
}

/// Adds a key to measured features: pitch classes outside the key's scale are removed from
/// the chroma (each frame scaled back to a maximum of 1), and frames whose chroma is silent (a metronome context, a break) get the
/// key's template.
pub fn apply_key(features: &mut FeatureFrames, key: Key) {
    let template = key_template(key);
    let Some(offset) = features.offset(ContextFeature::Chroma) else {
        return;
    };
    for n in 0..features.frames {
        let start = n * features.dims + offset;
        let chroma = &mut features.values[start..start + 12];
        for (v, &w) in chroma.iter_mut().zip(&template) {
            if w == 0.0 {
                *v = 0.0;
            }
        }
        let max = chroma.iter().cloned().fold(0.0f32, f32::max);
        if max > 0.0 {
            chroma.iter_mut().for_each(|v| *v /= max);
        } else {
            chroma.copy_from_slice(&template);
        }
    }
}

/// The key of the features' chroma (its mean over the frames, Krumhansl-Schmuckler), or
/// `None` without chroma or when every frame is silent.
pub fn key_of_features(features: &FeatureFrames) -> Option<Key> {
    let offset = features.offset(ContextFeature::Chroma)?;
    let mut mean = [0.0f64; 12];
    for n in 0..features.frames {
        for (m, &v) in mean.iter_mut().zip(&features.frame(n)[offset..offset + 12]) {
            *m += f64::from(v);
        }
    }
    mean.iter()
        .any(|&v| v > 0.0)
        .then(|| super::key::estimate_key(&mean).0)
}

/// Adds `weight` x the key's template ([`key_template`]) to every frame's chroma.
pub fn add_key_template(features: &mut FeatureFrames, key: Key, weight: f32) {
    let template = key_template(key);
    let Some(offset) = features.offset(ContextFeature::Chroma) else {
        return;
    };
    for frame in features.values.chunks_exact_mut(features.dims) {
        for (v, &t) in frame[offset..offset + 12].iter_mut().zip(&template) {
            *v += weight * t;
        }
    }
}
