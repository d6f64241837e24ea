//! Metronome context (STAGE's idea, ARCHITECTURE §3.7): a click track to generate against when
//! there is no music yet, so the stem follows the tempo and bar grid.

use crate::audio::{Audio, SUPPORTED_RATES};

/// Click length; long enough to be heard and encoded, short enough not to blur the grid.
const CLICK_SECONDS: f64 = 0.03;
/// Decay time constant of a click's exponential envelope.
const DECAY_SECONDS: f64 = 0.006;
/// Downbeats: higher and louder, so the bar grid is audible (and visible to the model).
const DOWNBEAT_HZ: f64 = 1_500.0;
const DOWNBEAT_GAIN: f64 = 0.9;
const BEAT_HZ: f64 = 1_000.0;
const BEAT_GAIN: f64 = 0.5;

/// A mono click track of `bars` bars of `beats_per_bar` beats at `bpm`, at `sample_rate`.
///
/// Each beat is a short decaying sine burst that starts exactly on the beat sample
/// (`round(beat * 60 / bpm * sample_rate)`); the first beat of each bar is accented (higher
/// pitch, louder). The clip lasts exactly `bars * beats_per_bar * 60 / bpm` seconds.
///
/// Out-of-range inputs are clamped rather than panicking: bpm to 1..=1000 (a non-finite bpm
/// counts as 120), at least one beat per bar and one bar, the rate to the supported range.
pub fn metronome(bpm: f64, beats_per_bar: u32, bars: u32, sample_rate: u32) -> Audio {
    let bpm = if bpm.is_finite() {
        bpm.clamp(1.0, 1_000.0)
    } else {
        120.0
    };
    let beats_per_bar = beats_per_bar.max(1) as usize;
    let bars = bars.max(1) as usize;
    let rate = sample_rate.clamp(*SUPPORTED_RATES.start(), *SUPPORTED_RATES.end());
    let sr = rate as f64;
    let beat_seconds = 60.0 / bpm;
    let beats = beats_per_bar * bars;
    let len = (beats as f64 * beat_seconds * sr).round() as usize;
    let click_len = (CLICK_SECONDS * sr).round() as usize;
    let mut samples = vec![0f32; len];
    for beat in 0..beats {
        let start = (beat as f64 * beat_seconds * sr).round() as usize;
        let (hz, gain) = if beat % beats_per_bar == 0 {
            (DOWNBEAT_HZ, DOWNBEAT_GAIN)
        } else {
            (BEAT_HZ, BEAT_GAIN)
        };
        for (i, s) in samples.iter_mut().skip(start).take(click_len).enumerate() {
            let t = i as f64 / sr;
            let env = (-t / DECAY_SECONDS).exp();
            *s += (gain * env * (std::f64::consts::TAU * hz * t).sin()) as f32;
        }
    }
    Audio {
        sample_rate: rate,
        channels: vec![samples],
    }
}
