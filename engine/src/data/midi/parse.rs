//! A Standard MIDI File (type 0 or 1) as timed channel messages, each note tagged with the
//! instrument category it sounds as. Parsing is the `midly` crate's; this module resolves
//! time (the tempo map, or SMPTE timecode) and instruments (the program each channel has when
//! a note starts; channel 10 is drums, as General MIDI says).

use midly::{MetaMessage, MidiMessage, Smf, Timing, TrackEventKind};

use crate::data::Category;

/// The General MIDI drum channel (10, 0-based 9).
pub const DRUM_CHANNEL: u8 = 9;

/// One channel message at a time in seconds. Notes carry the category they sound as; every
/// other message (program change, controllers, pitch bend, aftertouch) has `None` and goes to
/// every stem's synthesizer so that each plays its notes with the right channel state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedMessage {
    pub seconds: f64,
    pub channel: u8,
    /// Status nibble: 0x80 note off, 0x90 note on, 0xA0 aftertouch, 0xB0 controller,
    /// 0xC0 program, 0xD0 channel pressure, 0xE0 pitch bend.
    pub status: u8,
    pub data1: u8,
    pub data2: u8,
    pub category: Option<Category>,
}

/// What the file says besides its notes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MidiFacts {
    /// (seconds, BPM) at each tempo change; 120 BPM from 0 s when the file sets none; empty
    /// for a timecode (SMPTE) file.
    pub tempo_map: Vec<(f64, f64)>,
    /// (seconds, numerator, denominator) at each time-signature change.
    pub time_signatures: Vec<(f64, u8, u8)>,
    /// The first key signature, e.g. "Eb major", when the file has one.
    pub key_signature: Option<String>,
    /// End of the last event.
    pub seconds: f64,
}

/// A parsed file: its messages in time order and the facts.
#[derive(Debug, Clone)]
pub struct MidiSong {
    pub messages: Vec<TimedMessage>,
    pub facts: MidiFacts,
}

impl MidiFacts {
    /// Seconds at quarter-note `beat` by the tempo map (120 BPM without one).
    pub fn beat_seconds(&self, beat: f64) -> f64 {
        let mut at = (0.0, 0.0, 120.0); // (seconds, beats, bpm) at the segment start
        for &(seconds, bpm) in &self.tempo_map {
            let beats_here = at.1 + (seconds - at.0) * at.2 / 60.0;
            if beats_here > beat {
                break;
            }
            at = (seconds, beats_here, bpm);
        }
        at.0 + (beat - at.1) * 60.0 / at.2
    }
}

impl MidiSong {
    /// The categories that have notes, sorted by id.
    pub fn categories(&self) -> Vec<Category> {
        let mut out: Vec<Category> = self.messages.iter().filter_map(|m| m.category).collect();
        out.sort_by_key(|c| c.id());
        out.dedup();
        out
    }
}

/// Parses `bytes` as a type 0 or type 1 file. The error says what is wrong.
pub fn parse_midi(bytes: &[u8]) -> Result<MidiSong, String> {
    let smf = Smf::parse(bytes).map_err(|e| format!("not a readable MIDI file ({e})"))?;
    if smf.header.format == midly::Format::Sequential {
        return Err("type 2 (sequential) MIDI files are not supported".into());
    }
    // Every event of every track by absolute tick; within a tick, track order then file order.
    let mut events = Vec::new();
    for (track, events_of_track) in smf.tracks.iter().enumerate() {
        let mut tick = 0u64;
        for (i, event) in events_of_track.iter().enumerate() {
            tick += u64::from(event.delta.as_int());
            events.push((tick, track, i, event.kind));
        }
    }
    events.sort_by_key(|e| (e.0, e.1, e.2));

    let clock = Clock::new(smf.header.timing, &events);
    let mut facts = MidiFacts {
        tempo_map: clock.tempo_map(),
        time_signatures: Vec::new(),
        key_signature: None,
        seconds: 0.0,
    };
    let mut program = [0u8; 16];
    // The category each sounding (channel, key) started with, so its note-off matches.
    let mut sounding: Vec<Vec<Category>> = vec![Vec::new(); 16 * 128];
    let mut messages = Vec::new();
    for &(tick, _, _, kind) in &events {
        let seconds = clock.seconds(tick);
        facts.seconds = facts.seconds.max(seconds);
        match kind {
            TrackEventKind::Meta(MetaMessage::TimeSignature(num, den_pow, _, _)) => {
                let den = 1u8.checked_shl(u32::from(den_pow)).unwrap_or(0);
                facts.time_signatures.push((seconds, num, den));
            }
            TrackEventKind::Meta(MetaMessage::KeySignature(sharps, minor))
                if facts.key_signature.is_none() =>
            {
                facts.key_signature = key_name(sharps, minor);
            }
            TrackEventKind::Midi { channel, message } => {
                let channel = channel.as_int();
                let category_now = || {
                    if channel == DRUM_CHANNEL {
                        Category::Drums
                    } else {
                        Category::from_gm_program(program[channel as usize])
                    }
                };
                let slot = |key: u8| channel as usize * 128 + key as usize;
                let (status, data1, data2, category) = match message {
                    MidiMessage::NoteOn { key, vel } if vel.as_int() > 0 => {
                        let c = category_now();
                        sounding[slot(key.as_int())].push(c);
                        (0x90, key.as_int(), vel.as_int(), Some(c))
                    }
                    // A note-on with velocity 0 is a note-off.
                    MidiMessage::NoteOn { key, .. } | MidiMessage::NoteOff { key, .. } => {
                        let started = sounding[slot(key.as_int())].pop();
                        (
                            0x80,
                            key.as_int(),
                            0,
                            Some(started.unwrap_or_else(category_now)),
                        )
                    }
                    MidiMessage::Aftertouch { key, vel } => {
                        (0xA0, key.as_int(), vel.as_int(), None)
                    }
                    MidiMessage::Controller { controller, value } => {
                        (0xB0, controller.as_int(), value.as_int(), None)
                    }
                    MidiMessage::ProgramChange { program: p } => {
                        program[channel as usize] = p.as_int();
                        (0xC0, p.as_int(), 0, None)
                    }
                    MidiMessage::ChannelAftertouch { vel } => (0xD0, vel.as_int(), 0, None),
                    MidiMessage::PitchBend { bend } => {
                        let v = bend.0.as_int();
                        (0xE0, (v & 0x7F) as u8, (v >> 7) as u8, None)
                    }
                };
                messages.push(TimedMessage {
                    seconds,
                    channel,
                    status,
                    data1,
                    data2,
                    category,
                });
            }
            _ => {}
        }
    }
    if !messages.iter().any(|m| m.status == 0x90) {
        return Err("the file has no notes".into());
    }
    Ok(MidiSong { messages, facts })
}

/// "C major", "F# minor", ... from a key signature's sharps (negative: flats).
fn key_name(sharps: i8, minor: bool) -> Option<String> {
    const MAJOR: [&str; 15] = [
        "Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#",
    ];
    const MINOR: [&str; 15] = [
        "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#",
    ];
    let i = usize::try_from(i16::from(sharps) + 7).ok()?;
    let (names, mode) = if minor {
        (MINOR, "minor")
    } else {
        (MAJOR, "major")
    };
    names.get(i).map(|n| format!("{n} {mode}"))
}

/// Ticks to seconds: the tempo map of a metrical file, or SMPTE frames.
struct Clock {
    /// (tick, seconds at that tick, seconds per tick from there).
    segments: Vec<(u64, f64, f64)>,
    /// Ticks per quarter note (metrical files).
    ticks_per_beat: Option<f64>,
}

impl Clock {
    fn new(timing: Timing, events: &[(u64, usize, usize, TrackEventKind)]) -> Clock {
        let per_beat = match timing {
            Timing::Metrical(ticks) => f64::from(ticks.as_int().max(1)),
            Timing::Timecode(fps, subframes) => {
                let per_tick = 1.0 / (f64::from(fps.as_f32()) * f64::from(subframes.max(1)));
                return Clock {
                    segments: vec![(0, 0.0, per_tick)],
                    ticks_per_beat: None,
                };
            }
        };
        // 120 BPM until the first tempo event.
        let mut segments = vec![(0u64, 0.0f64, 0.5 / per_beat)];
        for &(tick, _, _, kind) in events {
            if let TrackEventKind::Meta(MetaMessage::Tempo(us)) = kind {
                let &(t0, s0, per_tick) = segments.last().expect("one segment");
                let seconds = s0 + (tick - t0) as f64 * per_tick;
                let per_tick = f64::from(us.as_int().max(1)) / 1e6 / per_beat;
                if tick == t0 {
                    segments.pop();
                }
                segments.push((tick, seconds, per_tick));
            }
        }
        Clock {
            segments,
            ticks_per_beat: Some(per_beat),
        }
    }

    fn seconds(&self, tick: u64) -> f64 {
        let i = self.segments.partition_point(|s| s.0 <= tick).max(1) - 1;
        let (t0, s0, per_tick) = self.segments[i];
        s0 + (tick.saturating_sub(t0)) as f64 * per_tick
    }

    /// (seconds, BPM) at each tempo change; empty for a timecode file (it has no beats).
    fn tempo_map(&self) -> Vec<(f64, f64)> {
        let Some(per_beat) = self.ticks_per_beat else {
            return Vec::new();
        };
        self.segments
            .iter()
            .map(|&(_, seconds, per_tick)| (seconds, 60.0 / (per_tick * per_beat)))
            .collect()
    }
}
