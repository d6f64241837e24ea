//! Rendering: what the host feeds the inputs, stretches of timeline rendered block by block
//! on the audio thread with the transport sent every block, and timeline positions.

use std::f64::consts::TAU;

use clack_host::events::event_types::{TransportEvent, TransportFlags};
use clack_host::events::{EventFlags, EventHeader};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};

use crate::host::TestHost;
use crate::{BEATS_PER_BAR, SENTINEL, TEMPO};

/// What the host feeds the plugin's inputs (main and sidechain alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Input {
    Silence,
    /// A chord accented on every beat.
    Music,
    /// Music with NaN and infinite samples mixed in.
    Garbage,
    /// Music scaled into the subnormal range (a decaying tail, a quiet input).
    Denormal,
}

impl Input {
    pub(crate) fn frame(self, t: i64, rate: f64) -> (f32, f32) {
        match self {
            Input::Silence => (0.0, 0.0),
            Input::Music => {
                let m = music(t, rate);
                (m, 0.9 * m)
            }
            Input::Denormal => {
                let (l, r) = Input::Music.frame(t, rate);
                (l * 1e-38, r * 1e-38)
            }
            Input::Garbage => {
                let (l, r) = Input::Music.frame(t, rate);
                match (t.rem_euclid(97), t.rem_euclid(89)) {
                    (0, _) => (f32::NAN, r),
                    (1, _) => (f32::INFINITY, f32::NEG_INFINITY),
                    (_, 0) => (l, f32::NAN),
                    _ => (l, r),
                }
            }
        }
    }
}

/// A chord at timeline sample `t`, louder on every beat.
fn music(t: i64, rate: f64) -> f32 {
    let s = t as f64 / rate;
    let accent = if (s * TEMPO / 60.0).rem_euclid(1.0) < 0.1 {
        1.0
    } else {
        0.4
    };
    let chord: f64 = [110.0, 138.59, 164.81]
        .iter()
        .map(|f| (TAU * f * s).sin())
        .sum();
    (0.2 * accent * chord) as f32
}

/// A stretch of audio the host renders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span<'a> {
    /// Timeline position of the first frame, in samples (the playhead stays there if stopped).
    pub(crate) start: i64,
    pub(crate) frames: usize,
    /// Block sizes, used in turn.
    pub(crate) blocks: &'a [usize],
    pub(crate) playing: bool,
    pub(crate) input: Input,
    /// Parameter changes (name, CLAP value) sent with the first block.
    pub(crate) changes: &'a [(&'a str, f64)],
}

impl<'a> Span<'a> {
    pub(crate) fn playing(start: i64, frames: usize) -> Self {
        Span {
            start,
            frames,
            blocks: &[512],
            playing: true,
            input: Input::Silence,
            changes: &[],
        }
    }

    pub(crate) fn stopped(at: i64, frames: usize) -> Self {
        Span {
            playing: false,
            ..Span::playing(at, frames)
        }
    }

    pub(crate) fn blocks(self, blocks: &'a [usize]) -> Self {
        Span { blocks, ..self }
    }

    pub(crate) fn input(self, input: Input) -> Self {
        Span { input, ..self }
    }

    pub(crate) fn changes(self, changes: &'a [(&'a str, f64)]) -> Self {
        Span { changes, ..self }
    }
}

/// Rendered output.
#[derive(Debug, Default)]
pub(crate) struct Stereo {
    pub(crate) left: Vec<f32>,
    pub(crate) right: Vec<f32>,
    /// Wall time spent inside the plug-in's `process` calls (not the host's own work).
    pub(crate) process_seconds: f64,
}

impl Stereo {
    pub(crate) fn samples(&self) -> impl Iterator<Item = f32> + '_ {
        self.left.iter().chain(&self.right).copied()
    }

    pub(crate) fn peak(&self) -> f32 {
        self.samples().fold(0.0, |m, s| m.max(s.abs()))
    }
}

/// The audio thread's side of `Plugin::render`.
pub(crate) fn process_span(
    audio: &mut PluginAudioProcessor<TestHost>,
    span: &Span,
    first_events: &EventBuffer,
    rate: f64,
    max_block: usize,
    steady_time: u64,
) -> Stereo {
    let processor = audio
        .ensure_processing_started()
        .expect("start_processing failed");
    let [mut in_l, mut in_r, mut sc_l, mut sc_r, mut out_l, mut out_r] =
        std::array::from_fn(|_| vec![0.0f32; max_block]);
    let mut input_ports = AudioPorts::with_capacity(4, 2);
    let mut output_ports = AudioPorts::with_capacity(2, 1);
    let no_events = EventBuffer::new();
    let mut out_events = EventBuffer::with_capacity(256);
    let mut rendered = Stereo::default();
    let mut done = 0;
    for (i, &size) in span.blocks.iter().cycle().enumerate() {
        if done >= span.frames {
            break;
        }
        let n = size.min(span.frames - done).min(max_block);
        // The input keeps flowing while the transport is stopped (someone playing live).
        let heard = span.start + done as i64;
        for k in 0..n {
            let (l, r) = span.input.frame(heard + k as i64, rate);
            (in_l[k], in_r[k], sc_l[k], sc_r[k]) = (l, r, l, r);
        }
        out_l[..n].fill(SENTINEL);
        out_r[..n].fill(SENTINEL);
        let position = if span.playing { heard } else { span.start };
        let transport = transport_at(position, rate, span.playing);
        let events = if i == 0 { first_events } else { &no_events };
        out_events.clear();
        {
            let inputs = input_ports.with_input_buffers([
                AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_input_only([
                        InputChannel::variable(&mut in_l[..n]),
                        InputChannel::variable(&mut in_r[..n]),
                    ]),
                },
                AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_input_only([
                        InputChannel::variable(&mut sc_l[..n]),
                        InputChannel::variable(&mut sc_r[..n]),
                    ]),
                },
            ]);
            let mut outputs = output_ports.with_output_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only([&mut out_l[..n], &mut out_r[..n]]),
            }]);
            let started = std::time::Instant::now();
            processor
                .process(
                    &inputs,
                    &mut outputs,
                    &InputEvents::from_buffer(events),
                    &mut OutputEvents::from_buffer(&mut out_events),
                    Some(steady_time + done as u64),
                    Some(&transport),
                )
                .unwrap_or_else(|e| panic!("process failed at timeline sample {position}: {e}"));
            rendered.process_seconds += started.elapsed().as_secs_f64();
        }
        rendered.left.extend_from_slice(&out_l[..n]);
        rendered.right.extend_from_slice(&out_r[..n]);
        done += n;
    }
    rendered
}

/// The CLAP transport with the playhead at timeline sample `pos` (positions in both beats and
/// seconds, and the bar it is in, as a DAW fills them).
fn transport_at(pos: i64, rate: f64, playing: bool) -> TransportEvent {
    let seconds = pos as f64 / rate;
    let beats = seconds * TEMPO / 60.0;
    let bar = (beats / BEATS_PER_BAR).floor();
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(seconds),
        tempo: TEMPO,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::default(),
        loop_end_beats: BeatTime::default(),
        loop_start_seconds: SecondsTime::default(),
        loop_end_seconds: SecondsTime::default(),
        bar_start: BeatTime::from_float(bar * BEATS_PER_BAR),
        bar_number: bar as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

/// Timeline sample of a quarter-note position.
pub(crate) fn at_beat(beats: f64, rate: f64) -> i64 {
    (beats * 60.0 / TEMPO * rate).round() as i64
}

pub(crate) fn seconds(s: f64, rate: f64) -> usize {
    (s * rate).round() as usize
}
