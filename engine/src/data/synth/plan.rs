//! The song plan: a seeded, pure description of a song (tempo, metre, key, sections, chords)
//! and of the notes each part plays. The notes of each part are written by [`super::parts`];
//! the types a plan is made of live in [`super::score`] (re-exported here); rendering is
//! separate ([`super::render`]).
//!
//! Everything is drawn from `StdRng::seed_from_u64(seed)` (rand 0.8), the global choices from
//! one stream and each part from its own stream derived from the seed and the part's role, so
//! a plan is a pure function of `(seed, PlanOptions)`.

pub use super::score::{ChordSpan, Note, Part, Role, Section, SectionKind, SongPlan};

use super::parts::{finish_notes, write_part, Ctx};
use super::theory::{Key, Mode, MAJOR_PROGRESSIONS, MINOR_PROGRESSIONS};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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
