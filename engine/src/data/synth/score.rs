//! What a song plan is: the data a plan is made of (the song's form, chords, parts and their
//! notes, and the roles parts play), without the drawing of one. Kept apart from
//! `plan` (which draws a plan from a seed) and `parts` (which write each part's notes) so that
//! both share these types without depending on each other.

use super::theory::{Chord, Mode, PITCH_NAMES};
use crate::data::Category;
use serde::{Deserialize, Serialize};

/// The musical role of a part; it decides which notes are written. Its category decides the
/// sound (GM program) and the stem's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Drums,
    Bass,
    /// Comping chords (piano, organ or electric piano).
    Keys,
    /// Strummed or arpeggiated chords.
    Guitar,
    /// Sustained chords (strings, ensemble, synth pad).
    Pad,
    /// The melody.
    Lead,
    /// Syncopated chord stabs (brass or reed section).
    Stabs,
    /// High arpeggios (bells, mallets).
    Bells,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Drums,
        Role::Bass,
        Role::Keys,
        Role::Guitar,
        Role::Pad,
        Role::Lead,
        Role::Stabs,
        Role::Bells,
    ];

    /// Categories this role may sound as, with the programs allowed in each. Programs are the
    /// whole GM family except those that cannot play the role (a timpani pad, a gunshot
    /// lead...), so timbres vary as much as the role allows.
    pub(super) fn sounds(self) -> &'static [(Category, &'static [u8])] {
        match self {
            Role::Drums => &[(Category::Drums, &[0])],
            Role::Bass => &[(Category::Bass, &[32, 33, 34, 35, 36, 37, 38, 39])],
            Role::Keys => &[
                (Category::Piano, &[0, 1, 2, 3, 4, 5, 6, 7]),
                (Category::Organ, &[16, 17, 18, 19, 20, 21]),
            ],
            Role::Guitar => &[(Category::Guitar, &[24, 25, 26, 27, 28, 29, 30])],
            Role::Pad => &[
                (Category::Strings, &[40, 41, 42, 44]),
                (Category::Ensemble, &[48, 49, 50, 51, 52, 53, 54]),
                (Category::SynthPad, &[88, 89, 90, 91, 92, 93, 94, 95]),
            ],
            Role::Lead => &[
                (Category::SynthLead, &[80, 81, 82, 83, 84, 85, 86, 87]),
                (Category::Reed, &[64, 65, 66, 67, 68, 71]),
                (Category::Pipe, &[72, 73, 74, 75, 78, 79]),
                (Category::Ethnic, &[104, 105, 106, 107, 109, 110]),
            ],
            Role::Stabs => &[
                (Category::Brass, &[56, 57, 58, 59, 60, 61, 62, 63]),
                (Category::Reed, &[64, 65, 66, 67]),
            ],
            Role::Bells => &[
                (Category::ChromaticPercussion, &[8, 9, 10, 11, 12, 13, 14]),
                (Category::Percussive, &[112, 114, 115]),
            ],
        }
    }

    /// Probability that a song has this part (before the at-least-three rule).
    pub(super) fn probability(self) -> f64 {
        match self {
            Role::Drums => 0.9,
            Role::Bass => 0.9,
            Role::Keys => 0.6,
            Role::Guitar => 0.5,
            Role::Pad => 0.5,
            Role::Lead => 0.6,
            Role::Stabs => 0.25,
            Role::Bells => 0.2,
        }
    }

    pub(super) fn channel_volume(self) -> u8 {
        match self {
            Role::Drums => 110,
            Role::Bass => 105,
            Role::Keys => 92,
            Role::Guitar => 90,
            Role::Pad => 80,
            Role::Lead => 100,
            Role::Stabs => 88,
            Role::Bells => 82,
        }
    }
}

/// Section types; they repeat their chord progression and melody, and set the energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    Intro,
    Verse,
    Chorus,
    Bridge,
    Outro,
}

impl SectionKind {
    /// 0 = sparse (intro/outro: some parts rest), 1 = normal, 2 = full.
    pub fn energy(self) -> u8 {
        match self {
            SectionKind::Intro | SectionKind::Outro => 0,
            SectionKind::Verse | SectionKind::Bridge => 1,
            SectionKind::Chorus => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub kind: SectionKind,
    pub start_bar: u32,
    pub bars: u32,
}

/// A chord held from `start_beat` for `beats` (beats counted from the song start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChordSpan {
    pub start_beat: f64,
    pub beats: f64,
    pub chord: Chord,
}

/// One note, timed in seconds from the song start (humanisation included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub start_s: f64,
    pub dur_s: f64,
    pub key: u8,
    pub velocity: u8,
}

/// One part: what it plays and how it sounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub role: Role,
    pub category: Category,
    /// GM program, 0-based (for drums: the kit number on bank 128).
    pub program: u8,
    /// MIDI channel, 0-based; unique within a song (drums on 9).
    pub channel: u8,
    /// MIDI controller 7 (channel volume).
    pub volume: u8,
    /// MIDI controller 10 (pan, 64 = centre).
    pub pan: u8,
    /// Sorted by start time.
    pub notes: Vec<Note>,
}

/// A whole song, ready to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SongPlan {
    pub seed: u64,
    pub tempo_bpm: f64,
    /// Beats per bar (4 or 3); the beat is a quarter note.
    pub beats_per_bar: u32,
    pub key_tonic: u8,
    pub mode: Mode,
    pub bars: u32,
    pub sections: Vec<Section>,
    pub chords: Vec<ChordSpan>,
    pub parts: Vec<Part>,
}

impl SongPlan {
    pub fn seconds_per_beat(&self) -> f64 {
        60.0 / self.tempo_bpm
    }

    /// Length of the written bars in seconds (notes may ring on after it).
    pub fn duration_secs(&self) -> f64 {
        (self.bars * self.beats_per_bar) as f64 * self.seconds_per_beat()
    }

    /// E.g. "A minor".
    pub fn key_name(&self) -> String {
        let mode = match self.mode {
            Mode::Major => "major",
            Mode::Minor => "minor",
        };
        format!("{} {mode}", PITCH_NAMES[self.key_tonic as usize])
    }

    /// The time signature as (numerator, denominator).
    pub fn time_signature(&self) -> (u32, u32) {
        (self.beats_per_bar, 4)
    }

    pub fn part(&self, category: Category) -> Option<&Part> {
        self.parts.iter().find(|p| p.category == category)
    }
}
