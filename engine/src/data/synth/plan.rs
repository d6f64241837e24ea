//! The song plan: a seeded, pure description of a song (tempo, metre, key, sections, chords)
//! and of the notes each part plays. The notes of each part are written by [`super::parts`];
//! rendering is separate ([`super::render`]).
//!
//! Everything is drawn from `StdRng::seed_from_u64(seed)` (rand 0.8), the global choices from
//! one stream and each part from its own stream derived from the seed and the part's role, so
//! a plan is a pure function of `(seed, PlanOptions)`.

use super::parts::{finish_notes, write_part, Ctx};
use super::theory::{Chord, Key, Mode, MAJOR_PROGRESSIONS, MINOR_PROGRESSIONS, PITCH_NAMES};
use crate::data::Category;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Tempo range of generated songs, BPM (inclusive; tempos are whole numbers).
pub const TEMPO_RANGE: std::ops::RangeInclusive<u32> = 70..=170;

/// The MIDI channel of drums (GM channel 10, 0-based 9).
pub const DRUM_CHANNEL: u8 = 9;

/// What to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Exact song length in bars; `None` picks the bar count nearest `target_secs`.
    pub bars: Option<u32>,
    /// Length to aim for when `bars` is `None` (the paper crops 20 s out of 1-minute chunks).
    pub target_secs: f64,
    /// Random timing and velocity deviations (off: every note exactly on the grid).
    pub humanize: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            bars: None,
            target_secs: 60.0,
            humanize: true,
        }
    }
}

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
    fn sounds(self) -> &'static [(Category, &'static [u8])] {
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
    fn probability(self) -> f64 {
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

    fn channel_volume(self) -> u8 {
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

/// Plans the song of `seed`.
pub fn plan_song(seed: u64, options: &PlanOptions) -> SongPlan {
    let mut rng = StdRng::seed_from_u64(seed);
    let tempo_bpm = rng.gen_range(TEMPO_RANGE) as f64;
    let beats_per_bar: u32 = if rng.gen_bool(0.75) { 4 } else { 3 };
    let mode = if rng.gen_bool(0.55) {
        Mode::Major
    } else {
        Mode::Minor
    };
    let key = Key {
        tonic: rng.gen_range(0..12),
        mode,
        harmonic_dominant: mode == Mode::Minor && rng.gen_bool(0.5),
    };
    let bar_secs = beats_per_bar as f64 * 60.0 / tempo_bpm;
    let bars = options
        .bars
        .unwrap_or_else(|| ((options.target_secs / bar_secs).round() as u32).max(4))
        .max(1);
    let sections = plan_form(&mut rng, bars);
    let chords = plan_chords(&mut rng, &key, beats_per_bar, &sections);

    let roles = choose_roles(&mut rng);
    let mut used = Vec::new();
    let mut channels = (0u8..16).filter(|&c| c != DRUM_CHANNEL);
    let ctx = Ctx {
        key,
        beats_per_bar,
        spb: 60.0 / tempo_bpm,
        sections: &sections,
        chords: &chords,
        humanize: options.humanize,
    };
    let mut parts = Vec::new();
    for role in roles {
        // Each part's own stream: adding or removing a part leaves the others unchanged.
        let stream = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(role as u64 + 1);
        let mut prng = StdRng::seed_from_u64(seed ^ stream);
        let options: Vec<_> = role
            .sounds()
            .iter()
            .filter(|(c, _)| !used.contains(c))
            .collect();
        let Some(&&(category, programs)) = options.choose(&mut prng) else {
            continue; // every category of this role is taken by another part
        };
        used.push(category);
        let program = *programs.choose(&mut prng).unwrap();
        let channel = if role == Role::Drums {
            DRUM_CHANNEL
        } else {
            channels.next().expect("fewer than 15 melodic parts")
        };
        let pan = match role {
            Role::Drums | Role::Bass | Role::Lead => 64,
            _ => prng.gen_range(30..=98),
        };
        let mut notes = write_part(role, &ctx, &mut prng);
        finish_notes(&mut notes, role == Role::Drums);
        if notes.is_empty() {
            continue;
        }
        parts.push(Part {
            role,
            category,
            program,
            channel,
            volume: role.channel_volume(),
            pan,
            notes,
        });
    }
    SongPlan {
        seed,
        tempo_bpm,
        beats_per_bar,
        key_tonic: key.tonic,
        mode,
        bars,
        sections,
        chords,
        parts,
    }
}

/// A random subset of roles: drums and bass most of the time, at least one of them always,
/// and at least three parts in all.
fn choose_roles(rng: &mut StdRng) -> Vec<Role> {
    let mut roles: Vec<Role> = Role::ALL
        .iter()
        .copied()
        .filter(|r| rng.gen_bool(r.probability()))
        .collect();
    if !roles.contains(&Role::Drums) && !roles.contains(&Role::Bass) {
        roles.push(*[Role::Drums, Role::Bass].choose(rng).unwrap());
    }
    while roles.len() < 3 {
        let missing: Vec<Role> = Role::ALL
            .iter()
            .copied()
            .filter(|r| !roles.contains(r))
            .collect();
        roles.push(*missing.choose(rng).unwrap());
    }
    roles.sort_by_key(|r| Role::ALL.iter().position(|x| x == r));
    roles
}

/// Song form filling exactly `bars` bars. Songs of 12+ bars get an intro and an outro; the
/// body alternates verse and chorus with a bridge; the last section is cut to fit.
fn plan_form(rng: &mut StdRng, bars: u32) -> Vec<Section> {
    let mut kinds_lengths: Vec<(SectionKind, u32)> = Vec::new();
    let long = bars >= 12;
    let intro = if long {
        *[2, 4].choose(rng).unwrap()
    } else {
        0
    };
    let outro = if long {
        *[2, 4].choose(rng).unwrap()
    } else {
        0
    };
    let verse_len = *[4, 8].choose(rng).unwrap();
    let chorus_len = *[4, 8].choose(rng).unwrap();
    if intro > 0 {
        kinds_lengths.push((SectionKind::Intro, intro));
    }
    let body = bars - intro - outro;
    let first = if rng.gen_bool(0.3) {
        SectionKind::Chorus
    } else {
        SectionKind::Verse
    };
    let cycle = match first {
        SectionKind::Chorus => [
            SectionKind::Chorus,
            SectionKind::Verse,
            SectionKind::Chorus,
            SectionKind::Bridge,
        ],
        _ => [
            SectionKind::Verse,
            SectionKind::Chorus,
            SectionKind::Bridge,
            SectionKind::Chorus,
        ],
    };
    let mut filled = 0;
    let mut i = 0;
    while filled < body {
        let kind = cycle[i % cycle.len()];
        let len = match kind {
            SectionKind::Verse => verse_len,
            SectionKind::Chorus => chorus_len,
            _ => 4,
        }
        .min(body - filled);
        kinds_lengths.push((kind, len));
        filled += len;
        i += 1;
    }
    if outro > 0 {
        kinds_lengths.push((SectionKind::Outro, outro));
    }
    let mut start = 0;
    kinds_lengths
        .into_iter()
        .map(|(kind, bars)| {
            let s = Section {
                kind,
                start_bar: start,
                bars,
            };
            start += bars;
            s
        })
        .collect()
}

/// One progression per section kind (repeated sections repeat their harmony); one chord per
/// bar, or two per bar in some 4/4 sections.
fn plan_chords(
    rng: &mut StdRng,
    key: &Key,
    beats_per_bar: u32,
    sections: &[Section],
) -> Vec<ChordSpan> {
    let table = match key.mode {
        Mode::Major => MAJOR_PROGRESSIONS,
        Mode::Minor => MINOR_PROGRESSIONS,
    };
    let sevenths = rng.gen_bool(0.3);
    let mut per_kind: Vec<(SectionKind, [u8; 4], bool)> = Vec::new();
    let mut out = Vec::new();
    for s in sections {
        let (prog, fast) = match per_kind.iter().find(|(k, _, _)| *k == s.kind) {
            Some(&(_, p, f)) => (p, f),
            None => {
                let mut p = *table.choose(rng).unwrap();
                if s.kind == SectionKind::Intro || s.kind == SectionKind::Outro {
                    p[0] = 0; // start (and so, when cut short, end) on the tonic
                }
                let f = beats_per_bar == 4 && rng.gen_bool(0.2);
                per_kind.push((s.kind, p, f));
                (p, f)
            }
        };
        let chord_beats = if fast {
            beats_per_bar as f64 / 2.0
        } else {
            beats_per_bar as f64
        };
        let section_beats = (s.bars * beats_per_bar) as f64;
        let mut b = 0.0;
        let mut i = 0;
        while b < section_beats - 1e-9 {
            let mut chord = key.chord(prog[i % 4], sevenths);
            if s.kind == SectionKind::Outro && b + chord_beats >= section_beats - 1e-9 {
                chord = key.chord(0, sevenths); // end on the tonic
            }
            out.push(ChordSpan {
                start_beat: (s.start_bar * beats_per_bar) as f64 + b,
                beats: chord_beats.min(section_beats - b),
                chord,
            });
            b += chord_beats;
            i += 1;
        }
    }
    out
}
