//! The context features of one request (ARCHITECTURE §3.8): measured from the context audio
//! as training measured them, then changed by what the producer says about the harmony.
//!
//! - **Chords** (`--chords`) replace the measured chroma and bass chroma: the producer's
//!   chart is the harmony, whatever the context suggests (with a metronome there is nothing
//!   to measure). Onsets and beat phase stay measured.
//! - **A key** (`--key`) adds to the measured harmony: pitch classes outside the key are
//!   removed from the chroma, and frames without any (a metronome, a break) get the key's
//!   template. With chords given, the chords win.

use anyhow::{bail, Result};

use crate::analysis::context_features::{measure, FeatureFrames};
use crate::analysis::harmony::{apply_chords, apply_key, ChordChart, TimedChord};
use crate::analysis::{Key, ANALYSIS_RATE};
use crate::audio::Audio;
use crate::model::ModelConfig;

/// What the producer says about the harmony, and whether to use the features at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HarmonyRequest {
    /// Chords per bar, repeated to the stem's length; they need the tempo.
    pub chords: Option<ChordChart>,
    /// Chords at given times (seconds from the stem's start) instead of a chart: a
    /// song's known chords. Used when not empty; a chart wins.
    pub timed_chords: Vec<TimedChord>,
    pub key: Option<Key>,
    /// (BPM, beats per bar) of the context, for placing the chords when the request has no
    /// other tempo (a metronome or a length in bars gives one).
    pub tempo: Option<(f64, u32)>,
    /// Give the model no context features (all zero, as in training's feature dropout).
    pub no_features: bool,
}

impl HarmonyRequest {
    pub fn is_given(&self) -> bool {
        self.chords.is_some() || !self.timed_chords.is_empty() || self.key.is_some()
    }
}

/// The features for a model with context features, `None` for a model without them.
/// `context` is the mono context fitted to the stem's length; `tempo` is (BPM, beats per bar)
/// when known.
pub fn request_features(
    config: &ModelConfig,
    context: &Audio,
    frame_rate: f64,
    frames: usize,
    tempo: Option<(f64, u32)>,
    harmony: &HarmonyRequest,
) -> Result<Option<FeatureFrames>> {
    if config.context_features.is_empty() {
        if harmony.is_given() {
            bail!(
                "this model has no harmony conditioning (no context_features in its config), so \
                 it cannot follow chords or a key; use a model trained with them"
            );
        }
        return Ok(None);
    }
    if harmony.no_features {
        return Ok(Some(FeatureFrames::zeros(&config.context_features, frames)));
    }
    let mono = context.to_mono_at(ANALYSIS_RATE)?;
    let mut features = measure(
        &mono.channels[0],
        &config.context_features,
        frame_rate,
        frames,
    );
    if let Some(key) = harmony.key {
        apply_key(&mut features, key);
    }
    if let Some(chart) = &harmony.chords {
        let Some((bpm, beats_per_bar)) = tempo.or(harmony.tempo) else {
            bail!(
                "chords need the tempo to place the bars: give the BPM and beats per bar \
                 (--bpm, --beats-per-bar) or use the metronome"
            );
        };
        let seconds = frames as f64 / frame_rate;
        apply_chords(
            &mut features,
            &chart.spans(bpm, beats_per_bar, seconds),
            frame_rate,
        );
    }
    if harmony.chords.is_none() && !harmony.timed_chords.is_empty() {
        apply_chords(&mut features, &harmony.timed_chords, frame_rate);
    }
    Ok(Some(features))
}
