//! Rendering a [`SongPlan`] with rustysynth: one `Synthesizer` per stem, all sharing one
//! `Arc<SoundFont>`, reverb and chorus off so the stems add up to the mix exactly (up to
//! float rounding). rustysynth has no per-channel output, hence one synthesizer per stem.

use super::plan::{Part, SongPlan, DRUM_CHANNEL};
use super::SynthError;
use crate::audio::Audio;
use crate::data::Category;
use rayon::prelude::*;
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};
use std::sync::Arc;
use std::time::Instant;

/// How to render.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Output sample rate (rustysynth accepts 16-192 kHz). Default 32 kHz, the codec's rate.
    pub sample_rate: u32,
    /// Stereo (parts are panned) or mono (the stereo render averaged).
    pub stereo: bool,
    /// Seconds rendered after the last bar so releases ring out.
    pub tail_secs: f64,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            sample_rate: 32_000,
            stereo: true,
            tail_secs: 1.0,
        }
    }
}

/// rustysynth renders in blocks of this many frames and applies MIDI events at block
/// boundaries, so note onsets are late by less than one block (2 ms at 32 kHz).
pub const BLOCK_SIZE: usize = 64;

/// The synthesizer settings every stem uses: no reverb or chorus (they are shared effects
/// that would break "stems sum to the mix"), 256 voices (the most rustysynth allows) so that
/// voice stealing does not differ between a stem and a full mix.
pub fn synth_settings(sample_rate: u32) -> SynthesizerSettings {
    let mut s = SynthesizerSettings::new(sample_rate as i32);
    s.block_size = BLOCK_SIZE;
    s.maximum_polyphony = 256;
    s.enable_reverb_and_chorus = false;
    s
}

/// One rendered stem.
#[derive(Debug, Clone)]
pub struct Stem {
    pub category: Category,
    /// Index into `SongPlan::parts`.
    pub part_index: usize,
    pub audio: Audio,
    /// Wall time spent rendering this stem.
    pub render_secs: f64,
}

impl Stem {
    /// Seconds of audio rendered per second of wall time.
    pub fn realtime_factor(&self) -> f64 {
        self.audio.duration_secs() / self.render_secs.max(1e-9)
    }
}

/// All stems of a song, in the order of `SongPlan::parts`.
#[derive(Debug, Clone)]
pub struct RenderedSong {
    pub stems: Vec<Stem>,
}

impl RenderedSong {
    /// The mix: the sample-wise sum of the stems.
    pub fn mix(&self) -> Audio {
        let first = &self.stems[0].audio;
        let mut channels = vec![vec![0.0f32; first.num_frames()]; first.num_channels()];
        for stem in &self.stems {
            for (acc, ch) in channels.iter_mut().zip(&stem.audio.channels) {
                for (a, s) in acc.iter_mut().zip(ch) {
                    *a += s;
                }
            }
        }
        Audio {
            sample_rate: first.sample_rate,
            channels,
        }
    }

    pub fn stem(&self, category: Category) -> Option<&Stem> {
        self.stems.iter().find(|s| s.category == category)
    }
}

/// Number of frames every stem of `plan` has.
pub fn song_frames(plan: &SongPlan, options: &RenderOptions) -> usize {
    ((plan.duration_secs() + options.tail_secs.max(0.0)) * options.sample_rate as f64).ceil()
        as usize
}

/// Renders every part to its own stem, in parallel (rayon).
pub fn render_song(
    sound_font: &Arc<SoundFont>,
    plan: &SongPlan,
    options: &RenderOptions,
) -> Result<RenderedSong, SynthError> {
    if plan.parts.is_empty() {
        return Err(SynthError::Plan("the song has no parts".into()));
    }
    let frames = song_frames(plan, options);
    let stems = plan
        .parts
        .par_iter()
        .enumerate()
        .map(|(i, part)| {
            let t = Instant::now();
            let audio = render_parts(sound_font, &[part], frames, options)?;
            Ok(Stem {
                category: part.category,
                part_index: i,
                audio,
                render_secs: t.elapsed().as_secs_f64(),
            })
        })
        .collect::<Result<Vec<_>, SynthError>>()?;
    Ok(RenderedSong { stems })
}

/// Renders `parts` together through one synthesizer (each part on its own MIDI channel) to
/// `frames` frames. With one part this is a stem; with all parts, the mix as a single
/// General MIDI player would play it.
pub fn render_parts(
    sound_font: &Arc<SoundFont>,
    parts: &[&Part],
    frames: usize,
    options: &RenderOptions,
) -> Result<Audio, SynthError> {
    if !(16_000..=192_000).contains(&options.sample_rate) {
        return Err(SynthError::SampleRate(options.sample_rate));
    }
    let sr = options.sample_rate as f64;
    let mut synth = Synthesizer::new(sound_font, &synth_settings(options.sample_rate))
        .map_err(|e| SynthError::Plan(format!("synthesizer: {e}")))?;

    // Events: (frame, order, channel, command, data1, data2). Note-offs sort before
    // note-ons at the same frame so a re-struck key is not cut by its previous note's off.
    let mut events: Vec<(usize, u8, i32, i32, i32, i32)> = Vec::new();
    for part in parts {
        let ch = part.channel as i32;
        if part.channel == DRUM_CHANNEL {
            events.push((0, 0, ch, 0xB0, 0x00, 128)); // bank select: drum kits
        } else {
            events.push((0, 0, ch, 0xB0, 0x00, 0));
        }
        events.push((0, 0, ch, 0xC0, part.program as i32, 0));
        events.push((0, 0, ch, 0xB0, 0x07, part.volume as i32));
        events.push((0, 0, ch, 0xB0, 0x0A, part.pan as i32));
        events.push((0, 0, ch, 0xB0, 0x5B, 0)); // reverb send
        events.push((0, 0, ch, 0xB0, 0x5D, 0)); // chorus send
        for n in &part.notes {
            let on = (n.start_s * sr).round() as usize;
            if on >= frames {
                continue;
            }
            events.push((on, 2, ch, 0x90, n.key as i32, n.velocity as i32));
            // Drums are one-shots (GM convention): no note-off, the sample plays out.
            if part.channel != DRUM_CHANNEL {
                let off = ((n.start_s + n.dur_s) * sr).round() as usize;
                events.push((off.max(on + 1), 1, ch, 0x80, n.key as i32, 0));
            }
        }
    }
    events.sort_by_key(|e| (e.0, e.1, e.2, e.4));

    Ok(render_messages(
        &mut synth,
        events
            .into_iter()
            .map(|(frame, _, ch, cmd, d1, d2)| (frame, ch, cmd, d1, d2)),
        frames,
        options,
    ))
}

/// Plays `messages` (frame, channel, command, data1, data2), in frame order, through `synth`
/// into `frames` frames: each message applied at its frame (rendering up to it first), the
/// rest rendered after the last. Stereo, or the average of the two sides for mono.
pub fn render_messages(
    synth: &mut Synthesizer,
    messages: impl IntoIterator<Item = (usize, i32, i32, i32, i32)>,
    frames: usize,
    options: &RenderOptions,
) -> Audio {
    let mut left = vec![0.0f32; frames];
    let mut right = vec![0.0f32; frames];
    let mut pos = 0;
    for (frame, ch, cmd, d1, d2) in messages {
        let frame = frame.min(frames);
        if frame > pos {
            synth.render(&mut left[pos..frame], &mut right[pos..frame]);
            pos = frame;
        }
        synth.process_midi_message(ch, cmd, d1, d2);
    }
    if pos < frames {
        synth.render(&mut left[pos..], &mut right[pos..]);
    }
    let channels = if options.stereo {
        vec![left, right]
    } else {
        vec![left
            .iter()
            .zip(&right)
            .map(|(l, r)| 0.5 * (l + r))
            .collect()]
    };
    Audio {
        sample_rate: options.sample_rate,
        channels,
    }
}
