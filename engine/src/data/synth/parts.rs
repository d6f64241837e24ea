//! The part writers: the notes each role (drums, bass, keys, guitar, pad, lead, stabs, bells)
//! plays over the song's form and chords, drawn from the part's own random stream (see
//! [`super::plan`]). Kept apart from the global plan because each writer is a small
//! arranger of its own. The order of every writer's random draws is part of what a seed
//! means: reordering them changes the songs generated from existing seeds.

use super::score::{ChordSpan, Note, Role, Section, SectionKind};
use super::theory::{nearest_key, voice_close, Chord, Key};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What note writers need to know about the song.
pub(super) struct Ctx<'a> {
    pub(super) key: Key,
    pub(super) beats_per_bar: u32,
    pub(super) spb: f64,
    pub(super) sections: &'a [Section],
    pub(super) chords: &'a [ChordSpan],
    pub(super) humanize: bool,
}

impl Ctx<'_> {
    fn bar_beat(&self, bar: u32) -> f64 {
        (bar * self.beats_per_bar) as f64
    }

    fn chord_at(&self, beat: f64) -> &ChordSpan {
        self.chords
            .iter()
            .rev()
            .find(|c| c.start_beat <= beat + 1e-9)
            .unwrap_or(&self.chords[0])
    }

    fn section_at(&self, bar: u32) -> &Section {
        self.sections
            .iter()
            .find(|s| bar >= s.start_bar && bar < s.start_bar + s.bars)
            .unwrap_or(&self.sections[self.sections.len() - 1])
    }
}

/// Collects notes, converting beats to seconds with humanisation.
struct Writer<'a> {
    ctx: &'a Ctx<'a>,
    notes: Vec<Note>,
    /// Standard deviation of the timing offset, seconds.
    timing_sd: f64,
    /// Velocity jitter, +/-.
    velocity_jitter: i32,
    /// Humanisation draws come from their own stream, so switching humanisation off leaves
    /// the composition (every other random choice) unchanged.
    human: StdRng,
}

impl Writer<'_> {
    fn new<'a>(
        ctx: &'a Ctx<'a>,
        rng: &mut StdRng,
        timing_sd: f64,
        velocity_jitter: i32,
    ) -> Writer<'a> {
        Writer {
            ctx,
            notes: Vec::new(),
            timing_sd,
            velocity_jitter,
            human: StdRng::seed_from_u64(rng.gen()),
        }
    }

    /// A note at `beat` lasting `beats`, plus a fixed extra offset in seconds (strums).
    fn note(&mut self, beat: f64, beats: f64, key: i32, velocity: i32, extra_s: f64) {
        let (dt, dv) = if self.ctx.humanize {
            // Sum of three uniforms: a cheap, bounded, bell-shaped deviation.
            let rng = &mut self.human;
            let u: f64 = (0..3).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>() / 3.0;
            let dv = rng.gen_range(-self.velocity_jitter..=self.velocity_jitter);
            (u * self.timing_sd * 1.7, dv)
        } else {
            (0.0, 0)
        };
        let start = (beat * self.ctx.spb + extra_s + dt).max(0.0);
        self.notes.push(Note {
            start_s: start,
            dur_s: (beats * self.ctx.spb).max(0.02),
            key: key.clamp(0, 127) as u8,
            velocity: (velocity + dv).clamp(1, 127) as u8,
        });
    }
}

pub(super) fn write_part(role: Role, ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    match role {
        Role::Drums => write_drums(ctx, rng),
        Role::Bass => write_bass(ctx, rng),
        Role::Keys => write_keys(ctx, rng),
        Role::Guitar => write_guitar(ctx, rng),
        Role::Pad => write_pad(ctx, rng),
        Role::Lead => write_lead(ctx, rng),
        Role::Stabs => write_stabs(ctx, rng),
        Role::Bells => write_bells(ctx, rng),
    }
}

/// Sorts notes and trims same-key overlaps (a MIDI note-off would otherwise cut the newer
/// note). Drum notes are one-shots and need no trimming.
pub(super) fn finish_notes(notes: &mut Vec<Note>, drums: bool) {
    notes.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.key.cmp(&b.key)));
    if drums {
        return;
    }
    for i in 0..notes.len() {
        let (key, start) = (notes[i].key, notes[i].start_s);
        if let Some(next) = notes[i + 1..].iter().find(|n| n.key == key) {
            let room = next.start_s - start - 0.005;
            if notes[i].dur_s > room {
                notes[i].dur_s = room.max(0.01);
            }
        }
    }
    notes.retain(|n| n.dur_s > 0.0);
}

// GM percussion keys.
const KICK: i32 = 36;
const SNARE: i32 = 38;
const CLAP: i32 = 39;
const CLOSED_HAT: i32 = 42;
const PEDAL_HAT: i32 = 44;
const OPEN_HAT: i32 = 46;
const CRASH: i32 = 49;
const RIDE: i32 = 51;
const TOMS: [i32; 4] = [50, 48, 47, 45];

/// Drums: one groove per song (steps are 16ths), hats or ride by energy, a crash on section
/// starts and fills into the next section. The kick always plays beat 1 of every bar.
fn write_drums(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.004, 8);
    let steps = (ctx.beats_per_bar * 4) as usize;
    // (kick steps, snare steps) per groove.
    let grooves: &[(&[usize], &[usize])] = if ctx.beats_per_bar == 4 {
        &[
            (&[0, 8], &[4, 12]),        // rock
            (&[0, 8, 10], &[4, 12]),    // rock with push
            (&[0, 4, 8, 12], &[4, 12]), // four on the floor
            (&[0, 6, 8], &[4, 12]),     // syncopated
            (&[0, 3, 8, 11], &[4, 12]), // funk
            (&[0], &[8]),               // half time
        ]
    } else {
        &[
            (&[0], &[4, 8]),    // waltz
            (&[0, 6], &[4, 8]), // waltz with pickup
            (&[0, 8], &[4]),    // slow 3
        ]
    };
    let (kicks, snares) = *grooves.choose(rng).unwrap();
    let snare_key = if rng.gen_bool(0.25) { CLAP } else { SNARE };
    let sixteenth_hats = rng.gen_bool(0.3);
    let open_hat_offbeats = kicks.len() == 4 && rng.gen_bool(0.6);
    let fill_prob = rng.gen_range(0.5..0.9);
    let mut prev_kind = None;
    for bar in 0..ctx.sections.last().map_or(0, |s| s.start_bar + s.bars) {
        let section = ctx.section_at(bar);
        let energy = section.kind.energy();
        let b0 = ctx.bar_beat(bar);
        let section_start = bar == section.start_bar;
        let last_bar_of_section = bar + 1 == section.start_bar + section.bars;
        let has_next = (bar + 1) < ctx.sections.last().map_or(0, |s| s.start_bar + s.bars);
        let fill = last_bar_of_section && has_next && section.bars >= 2 && rng.gen_bool(fill_prob);
        let fill_from = if fill {
            steps
                - if energy >= 2 && ctx.beats_per_bar == 4 {
                    8
                } else {
                    4
                }
        } else {
            steps
        };
        if section_start && bar > 0 && prev_kind != Some(section.kind) {
            w.note(b0, 1.0, CRASH, 100, 0.0);
        }
        prev_kind = Some(section.kind);
        for step in 0..steps {
            let beat = b0 + step as f64 / 4.0;
            let on_beat = step % 4 == 0;
            if step >= fill_from {
                // Fill: 16th notes (8ths in sparse sections) on snare and toms, rising.
                if energy == 0 && step % 2 == 1 {
                    continue;
                }
                let k = (step - fill_from) * 4 / (steps - fill_from);
                let drum = if rng.gen_bool(0.4) {
                    SNARE
                } else {
                    TOMS[k.min(3)]
                };
                let vel = 70 + (30 * (step - fill_from) / (steps - fill_from)) as i32;
                w.note(beat, 0.25, drum, vel, 0.0);
                if step == fill_from {
                    w.note(beat, 0.25, KICK, 100, 0.0);
                }
                continue;
            }
            if step == 0 || (energy > 0 && kicks.contains(&step)) {
                w.note(beat, 0.25, KICK, if step == 0 { 112 } else { 100 }, 0.0);
            }
            if energy > 0 && snares.contains(&step) {
                w.note(beat, 0.25, snare_key, 105, 0.0);
            }
            // Cymbals: quarter-note pedal hat in sparse sections, hats in verses, ride or
            // busier hats in choruses.
            let (cym, every) = match energy {
                0 => (PEDAL_HAT, 4),
                1 => (CLOSED_HAT, if sixteenth_hats { 1 } else { 2 }),
                _ => {
                    if sixteenth_hats {
                        (CLOSED_HAT, 1)
                    } else {
                        (RIDE, 2)
                    }
                }
            };
            if step % every == 0 {
                let offbeat_eighth = step % 4 == 2;
                let (key, vel) = if open_hat_offbeats && offbeat_eighth && energy > 0 {
                    (OPEN_HAT, 80)
                } else if on_beat {
                    (cym, 85)
                } else {
                    (cym, 62)
                };
                w.note(beat, 0.25, key, vel, 0.0);
            }
        }
    }
    w.notes
}

/// Bass: the chord root in a low register, with a pattern per song (held roots, root-fifth,
/// 8th-note pulse, syncopated, octaves), approach notes before chord changes.
fn write_bass(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.008, 10);
    let pattern = rng.gen_range(0..5);
    let centre = rng.gen_range(38..=44);
    for span in ctx.chords {
        let bar = (span.start_beat / ctx.beats_per_bar as f64) as u32;
        let energy = ctx.section_at(bar).kind.energy();
        let root = nearest_key(span.chord.root, centre);
        let fifth = root + (span.chord.tones[2] as i32 - span.chord.root as i32).rem_euclid(12);
        let len = span.beats;
        let p = if energy == 0 { 0 } else { pattern };
        // (offset, length, key) in beats within the chord span.
        let mut hits: Vec<(f64, f64, i32)> = match p {
            0 => vec![(0.0, len, root)],
            1 => (0..len as usize)
                .map(|b| (b as f64, 1.0, if b % 2 == 1 { fifth } else { root }))
                .collect(),
            2 => (0..(len * 2.0) as usize)
                .map(|i| (i as f64 * 0.5, 0.5, root))
                .collect(),
            3 => {
                let mut v = vec![(0.0, 1.5, root)];
                if len >= 3.0 {
                    v.push((1.5, 0.5, root));
                    v.push((2.0, len - 2.0, if len >= 4.0 { fifth } else { root }));
                } else {
                    v.push((1.5, len - 1.5, root));
                }
                v
            }
            _ => (0..(len * 2.0) as usize)
                .map(|i| {
                    (
                        i as f64 * 0.5,
                        0.5,
                        if i % 2 == 1 { root + 12 } else { root },
                    )
                })
                .collect(),
        };
        // Chromatic or diatonic approach into the next chord now and then.
        if energy > 0 && len >= 2.0 && rng.gen_bool(0.3) {
            if let Some(next) = ctx.chords.iter().find(|c| c.start_beat > span.start_beat) {
                let target = nearest_key(next.chord.root, centre);
                let approach = if rng.gen_bool(0.5) {
                    target - 1
                } else {
                    target + 2
                };
                hits.retain(|&(o, _, _)| o < len - 0.5);
                if let Some(last) = hits.last_mut() {
                    last.1 = last.1.min(len - 0.5 - last.0);
                }
                hits.push((len - 0.5, 0.5, approach));
            }
        }
        for (o, l, k) in hits {
            let vel = if o.fract() == 0.0 { 100 } else { 85 };
            w.note(span.start_beat + o, l * 0.92, k, vel, 0.0);
        }
    }
    w.notes
}

/// Keys: voice-led chords in the middle register with a comping rhythm per song; a left-hand
/// root in some songs.
fn write_keys(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.008, 10);
    let rhythm = rng.gen_range(0..4);
    let left_hand = rng.gen_bool(0.4);
    let mut prev: Vec<i32> = Vec::new();
    for span in ctx.chords {
        let bar = (span.start_beat / ctx.beats_per_bar as f64) as u32;
        let energy = ctx.section_at(bar).kind.energy();
        let voicing = voice_close(&span.chord.tones, &prev, 55, 79);
        prev = voicing.clone();
        let len = span.beats;
        let hits: Vec<(f64, f64)> = match if energy == 0 { 0 } else { rhythm } {
            0 => vec![(0.0, len)],
            1 => (0..(len / 2.0).ceil() as usize)
                .map(|i| (i as f64 * 2.0, (len - i as f64 * 2.0).min(2.0)))
                .collect(),
            2 => (0..len as usize).map(|b| (b as f64, 0.9)).collect(),
            _ => [0.0, 1.5, 3.0]
                .iter()
                .filter(|&&o| o < len)
                .map(|&o| (o, if o == 0.0 { 1.5 } else { 1.0_f64.min(len - o) }))
                .collect(),
        };
        for (o, l) in hits {
            for &k in &voicing {
                w.note(span.start_beat + o, l * 0.95, k, 78, 0.0);
            }
        }
        if left_hand {
            let root = nearest_key(span.chord.root, 45);
            w.note(span.start_beat, len * 0.95, root, 72, 0.0);
        }
    }
    w.notes
}

/// Guitar: open-position style voicings, strummed (8th-note down/up with per-string delays)
/// or arpeggiated.
fn write_guitar(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.008, 12);
    let arpeggio = rng.gen_bool(0.4);
    let strum_pattern: &[usize] = [
        &[0, 2, 3, 5, 6][..],
        &[0, 3, 4, 6][..],
        &[0, 1, 2, 3, 4, 5, 6, 7][..],
    ]
    .choose(rng)
    .unwrap();
    for span in ctx.chords {
        let bar = (span.start_beat / ctx.beats_per_bar as f64) as u32;
        if ctx.section_at(bar).kind.energy() == 0 && rng.gen_bool(0.5) {
            continue;
        }
        let root = nearest_key(span.chord.root, 46);
        let iv = |i: usize| (span.chord.tones[i] as i32 - span.chord.root as i32).rem_euclid(12);
        let strings = [
            root,
            root + iv(2),
            root + 12,
            root + 12 + iv(1),
            root + 12 + iv(2),
        ];
        let eighths = (span.beats * 2.0) as usize;
        for e in 0..eighths {
            let beat = span.start_beat + e as f64 * 0.5;
            if arpeggio {
                let order = [0, 2, 3, 4, 3, 2, 1, 2];
                let k = strings[order[e % order.len()]];
                w.note(beat, 1.0, k, 80, 0.0);
            } else if strum_pattern.contains(&(e % 8)) {
                let down = e % 2 == 0;
                let held = ((eighths - e) as f64 * 0.5).min(1.0);
                let n = strings.len();
                for i in 0..n {
                    let (idx, order) = if down { (i, i) } else { (n - 1 - i, i) };
                    if !down && idx < 2 {
                        continue; // up-strums catch the top strings
                    }
                    let vel = if down { 88 } else { 70 } - 2 * order as i32;
                    w.note(beat, held * 0.9, strings[idx], vel, order as f64 * 0.012);
                }
            }
        }
    }
    w.notes
}

/// Pad: sustained voice-led chords, soft, one note set per chord span.
fn write_pad(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.01, 6);
    let mut prev = Vec::new();
    for span in ctx.chords {
        let voicing = voice_close(&span.chord.tones[..3], &prev, 52, 76);
        prev = voicing.clone();
        for &k in &voicing {
            w.note(span.start_beat, span.beats * 0.98, k, 64, 0.0);
        }
    }
    w.notes
}

/// Lead: a melody per section kind (repeats come back slightly varied), rhythm cells of
/// quarters, eighths and dotted figures, a step-wise walk on the scale that lands on chord
/// tones on strong beats, resting at phrase ends. Silent in intros and outros.
fn write_lead(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.01, 10);
    let tonic = 60 + ctx.key.tonic as i32 + if ctx.key.tonic > 6 { -12 } else { 0 };
    // Melodies per section kind: (offset in beats from section start, length, scale step).
    let mut melodies: Vec<(SectionKind, Melody)> = Vec::new();
    let cells: &[&[f64]] = &[
        &[1.0],
        &[0.5, 0.5],
        &[0.75, 0.25],
        &[1.5, 0.5],
        &[2.0],
        &[0.5, 1.0, 0.5],
    ];
    for section in ctx.sections {
        if section.kind.energy() == 0 {
            continue;
        }
        let s0 = ctx.bar_beat(section.start_bar);
        let total = (section.bars * ctx.beats_per_bar) as f64;
        let existing = melodies
            .iter()
            .find(|(k, _)| *k == section.kind)
            .map(|(_, m)| m.clone());
        let melody = match existing {
            Some(mut m) => {
                // Vary a repeat: nudge a few pitches by a step.
                for n in m.iter_mut() {
                    if rng.gen_bool(0.15) {
                        n.2 += if rng.gen_bool(0.5) { 1 } else { -1 };
                    }
                }
                m
            }
            None => {
                let mut m = Vec::new();
                let mut step: i32 = rng.gen_range(0..5);
                let phrase = (2 * ctx.beats_per_bar) as f64;
                let mut b = 0.0;
                while b < total - 1e-9 {
                    let in_phrase = b % phrase;
                    let cell = *cells.choose(rng).unwrap();
                    let cell_len: f64 = cell.iter().sum();
                    if in_phrase + cell_len > phrase - 1.0 + 1e-9 {
                        // End of phrase: a long note then rest to the phrase end.
                        let hold = phrase - in_phrase;
                        let chord = ctx.chord_at(s0 + b);
                        step = snap_to_chord(&ctx.key, tonic, step, &chord.chord);
                        m.push((b, (hold - 0.5).max(0.5), step));
                        b += hold;
                        continue;
                    }
                    for &d in cell {
                        if rng.gen_bool(0.12) {
                            b += d; // rest
                            continue;
                        }
                        step += *[-2, -1, -1, 0, 1, 1, 2, 3, -3].choose(rng).unwrap();
                        step = step.clamp(-3, 11);
                        let strong = (b % 2.0).abs() < 1e-9;
                        if strong {
                            let chord = ctx.chord_at(s0 + b);
                            step = snap_to_chord(&ctx.key, tonic, step, &chord.chord);
                        }
                        m.push((b, d, step));
                        b += d;
                    }
                }
                m.retain(|n| n.0 < total - 1e-9);
                melodies.push((section.kind, m.clone()));
                m
            }
        };
        for (o, l, step) in melody {
            if o >= total {
                continue;
            }
            let key = ctx.key.step_to_midi(tonic, step);
            let strong = o.fract() == 0.0;
            w.note(
                s0 + o,
                l.min(total - o) * 0.9,
                key,
                if strong { 96 } else { 84 },
                0.0,
            );
        }
    }
    w.notes
}

/// A melody: (offset in beats from the section start, length in beats, scale step).
type Melody = Vec<(f64, f64, i32)>;

/// The scale step nearest `step` whose pitch class is a chord tone.
fn snap_to_chord(key: &Key, tonic: i32, step: i32, chord: &Chord) -> i32 {
    [0, 1, -1, 2, -2]
        .iter()
        .map(|d| step + d)
        .find(|&s| {
            chord
                .tones
                .contains(&(key.step_to_midi(tonic, s).rem_euclid(12) as u8))
        })
        .unwrap_or(step)
}

/// Stabs: short chords on syncopated off-beats in choruses and bridges.
fn write_stabs(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.008, 8);
    let offsets: &[f64] = if ctx.beats_per_bar == 4 {
        [&[1.5, 3.5][..], &[0.0, 2.5][..], &[1.0, 3.0][..]]
            .choose(rng)
            .unwrap()
    } else {
        [&[1.0, 2.0][..], &[1.5][..]].choose(rng).unwrap()
    };
    let mut prev = Vec::new();
    for span in ctx.chords {
        let bar = (span.start_beat / ctx.beats_per_bar as f64) as u32;
        if ctx.section_at(bar).kind.energy() == 0 {
            continue;
        }
        let voicing = voice_close(&span.chord.tones[..3], &prev, 58, 80);
        prev = voicing.clone();
        let bar_beat = span.start_beat - ctx.bar_beat(bar);
        for &o in offsets {
            let rel = o - bar_beat;
            if rel >= 0.0 && rel < span.beats {
                for &k in &voicing {
                    w.note(span.start_beat + rel, 0.4, k, 96, 0.0);
                }
            }
        }
    }
    w.notes
}

/// Bells: a high arpeggio on chord tones, 8ths or 16ths, in the fuller sections.
fn write_bells(ctx: &Ctx, rng: &mut StdRng) -> Vec<Note> {
    let mut w = Writer::new(ctx, rng, 0.006, 8);
    let step = if rng.gen_bool(0.5) { 0.5 } else { 0.25 };
    let up_down = rng.gen_bool(0.5);
    for span in ctx.chords {
        let bar = (span.start_beat / ctx.beats_per_bar as f64) as u32;
        if ctx.section_at(bar).kind.energy() == 0 {
            continue;
        }
        let base = voice_close(&span.chord.tones[..3], &[], 72, 90);
        let mut seq: Vec<i32> = base.clone();
        seq.push(base[0] + 12);
        if up_down {
            seq.extend(base.iter().rev().skip(1).take(2).copied());
        }
        let n = (span.beats / step) as usize;
        for i in 0..n {
            let vel = if i % 4 == 0 { 80 } else { 66 };
            w.note(
                span.start_beat + i as f64 * step,
                step * 1.5,
                seq[i % seq.len()],
                vel,
                0.0,
            );
        }
    }
    w.notes
}
