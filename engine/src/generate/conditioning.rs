//! The context features of one request (ARCHITECTURE §3.8): measured from the context audio
//! as training measured them, then changed by what the producer says about the harmony.
//!
//! - **Chords** (`--chords`) replace the measured chroma and bass chroma: the producer's
//!   chart is the harmony, whatever the context suggests (with a metronome there is nothing
//!   to measure). Onsets and beat phase stay measured.
//! - **A key** (`--key`) adds to the measured harmony: pitch classes outside the key are
//!   removed from the chroma, and frames without any (a metronome, a break) get the key's
//!   template. With chords given, the chords win.
//! - **A metronome** has no harmony: its clicks are sine bursts at 1 and 1.5 kHz, which the
//!   chroma reads as B and F#, so the measured chroma and bass chroma of a click context are
//!   set to zero (what dropped harmony looks like to the model) before chords or a key apply.
//!   Without this a bass over a bare metronome was pulled toward B.

use anyhow::{bail, Result};

use crate::analysis::chroma::confident_tuning;
use crate::analysis::context_features::{measure_from, ContextFeature, FeatureFrames};
use crate::analysis::harmony::{apply_chords, apply_key, ChordChart, TimedChord};
use crate::analysis::spectrum::power_spectrogram;
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

/// What the generator reads off one request's context, from one analysis pass (one
/// resampling to [`ANALYSIS_RATE`], one power spectrogram).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextAnalysis {
    /// The model's context features ([`request_features`]'s rules); `None` for a model
    /// without them.
    pub features: Option<FeatureFrames>,
    /// The tuning the decoder retunes the stem's low partials to, in semitones from A4 =
    /// 440 Hz (within a half): the context's (`analysis::chroma::confident_tuning`) when it
    /// is at least [`RETUNE_MIN_OFFSET`] away from 440 Hz; `None` (440 Hz) when it is
    /// closer, when the context's pitches do not agree on one (drums, noise, silence) or
    /// for the metronome.
    pub tuning: Option<f64>,
}

/// The smallest measured detuning (semitones) the decoder follows. Why: the measurement
/// reads contexts rendered at 440 Hz between -7 and +7 cents (14 synthetic mixes and the
/// README's example), and a stem snapped to a grid 7 cents off would be out of tune by
/// that much; a context tuned +30 or -45 cents reads +29 / -47 (the example resampled).
pub const RETUNE_MIN_OFFSET: f64 = 0.15;

/// Whether a request's context is audio or the metronome's clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    Audio,
    Metronome,
}

impl ContextKind {
    /// The name in a take's report and sidecar.
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Audio => "audio",
            ContextKind::Metronome => "metronome",
        }
    }
}

/// The features and tuning of one request. `context` is the mono context fitted to the
/// stem's length; `tempo` is (BPM, beats per bar) when known.
pub fn analyse_context(
    config: &ModelConfig,
    context: &Audio,
    kind: ContextKind,
    frame_rate: f64,
    frames: usize,
    tempo: Option<(f64, u32)>,
    harmony: &HarmonyRequest,
) -> Result<ContextAnalysis> {
    let has_features = !config.context_features.is_empty();
    if !has_features && harmony.is_given() {
        bail!(
            "this model has no harmony conditioning (no context_features in its config), so \
             it cannot follow chords or a key; use a model trained with them"
        );
    }
    let measures_features = has_features && !harmony.no_features;
    // The metronome needs the audio only for features (it has no tuning).
    let audio = (measures_features || kind == ContextKind::Audio)
        .then(|| -> Result<_> {
            let samples = context.to_mono_at(ANALYSIS_RATE)?.channels.swap_remove(0);
            let power = power_spectrogram(&samples);
            Ok((samples, power))
        })
        .transpose()?;
    let tuning = match (&audio, kind) {
        (Some((_, power)), ContextKind::Audio) => {
            confident_tuning(power, ANALYSIS_RATE).filter(|t| t.abs() >= RETUNE_MIN_OFFSET)
        }
        _ => None,
    };
    let features = match &audio {
        _ if !has_features => None,
        Some((samples, power)) if measures_features => {
            let measured =
                measure_from(samples, power, &config.context_features, frame_rate, frames);
            let click = kind == ContextKind::Metronome;
            Some(request_features(
                measured, click, frame_rate, frames, tempo, harmony,
            )?)
        }
        _ => Some(FeatureFrames::zeros(&config.context_features, frames)),
    };
    Ok(ContextAnalysis { features, tuning })
}

/// The measured features changed by what the producer says (module header): a click's
/// harmony zeroed, then the key, then the chords.
fn request_features(
    mut features: FeatureFrames,
    click: bool,
    frame_rate: f64,
    frames: usize,
    tempo: Option<(f64, u32)>,
    harmony: &HarmonyRequest,
) -> Result<FeatureFrames> {
    if click {
        for feature in [ContextFeature::Chroma, ContextFeature::BassChroma] {
            features.replace(feature, |_| vec![0.0; feature.dims()]);
        }
    }
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
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::metronome;

    #[test]
    fn a_metronome_click_has_no_harmony_unless_one_is_given() {
        let config: ModelConfig =
            serde_json::from_str(include_str!("../../../assets/default/config.json")).unwrap();
        let click = metronome(120.0, 4, 2, 32_000);
        let frame_rate = 50.0;
        let frames = 200;
        let analysis = |kind: ContextKind, harmony: &HarmonyRequest| {
            analyse_context(&config, &click, kind, frame_rate, frames, None, harmony).unwrap()
        };
        let features = |is_click: bool, harmony: &HarmonyRequest| {
            let kind = if is_click {
                ContextKind::Metronome
            } else {
                ContextKind::Audio
            };
            analysis(kind, harmony).features.unwrap()
        };
        let chroma_sum = |f: &FeatureFrames| {
            let c = f.offset(ContextFeature::Chroma).unwrap();
            (0..f.frames)
                .map(|n| f.frame(n)[c..c + 12].iter().sum::<f32>())
                .sum::<f32>()
        };
        let none = HarmonyRequest::default();
        // Measured as audio, the clicks read as pitch classes (B and F#)...
        assert!(chroma_sum(&features(false, &none)) > 1.0);
        // ...as the metronome they are no harmony, and the beats stay.
        let f = features(true, &none);
        assert_eq!(chroma_sum(&f), 0.0);
        // The clicks' sines (about 20 cents sharp of B and F#) are no tuning either.
        assert_eq!(analysis(ContextKind::Metronome, &none).tuning, None);
        let onset = f.offset(ContextFeature::Onset).unwrap();
        assert!((0..frames).any(|n| f.frame(n)[onset] > 0.5));
        // A key given over the metronome fills every frame with its template.
        let key = HarmonyRequest {
            key: Some(crate::analysis::harmony::parse_key("C major").unwrap()),
            ..HarmonyRequest::default()
        };
        let f = features(true, &key);
        let c = f.offset(ContextFeature::Chroma).unwrap();
        assert_eq!(f.frame(10)[c], 1.0);
        assert_eq!(f.frame(10)[c + 1], 0.0);
    }
}
