//! The context features of each cached pair (ARCHITECTURE §3.8), measured once when the cache
//! is written, like the tokens, so that training never runs the analysis.
//!
//! Every shard holds all of [`CACHED_FEATURES`] (`features [P, T, 27]`, f16) whatever model
//! will be trained on it; a model picks its own features by name. Songs whose chords are
//! known (the synthetic songs' `metadata.json`) also get the chord templates of the crop
//! (`chord_template [P, T, 24]`: chroma then bass chroma, f16; `has_chords [P]` u32), which
//! training substitutes for the measured harmony some of the time, so that a model learns to
//! follow chords given by the producer as well as chords it hears.

use std::path::Path;

use anyhow::{bail, Result};
use half::f16;

use crate::analysis::context_features::{feature_dims, measure, ContextFeature, FeatureFrames};
use crate::analysis::harmony::{apply_chords, parse_chord, TimedChord};
use crate::analysis::ANALYSIS_RATE;
use crate::audio::Audio;
use crate::data::midi::MidiSongMetadata;
use crate::data::synth::{SongMetadata, METADATA_FILE};

/// The features every cache shard stores, in this order.
pub const CACHED_FEATURES: [ContextFeature; 4] = ContextFeature::ALL;
/// The harmony features a chord template replaces, in this order.
pub const TEMPLATE_FEATURES: [ContextFeature; 2] =
    [ContextFeature::Chroma, ContextFeature::BassChroma];

/// Values per frame of `features` in a shard.
pub fn cached_dims() -> usize {
    feature_dims(&CACHED_FEATURES)
}

/// Values per frame of `chord_template` in a shard.
pub fn template_dims() -> usize {
    feature_dims(&TEMPLATE_FEATURES)
}

/// [`CACHED_FEATURES`] of a pair's context on `frames` token frames.
pub fn measure_context(context: &Audio, frame_rate: f64, frames: usize) -> Result<Vec<f32>> {
    let mono = context.to_mono_at(ANALYSIS_RATE)?;
    Ok(measure(&mono.channels[0], &CACHED_FEATURES, frame_rate, frames).values)
}

/// The song's chords when its folder says them (a synthetic song's `metadata.json`, or a MIDI
/// song's with chords from its sidecar); `None` for other songs. A metadata file that exists but cannot be read is an error.
pub fn song_chords(dir: &Path) -> Result<Option<Vec<TimedChord>>> {
    let path = dir.join(METADATA_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", path.display()))?;
    if let Ok(meta) = serde_json::from_str::<SongMetadata>(&text) {
        return match meta.chord_spans() {
            Ok(spans) => Ok(Some(spans)),
            Err(e) => bail!("{}: {e}", path.display()),
        };
    }
    // A song made from a MIDI file, with chords when its sidecar gave them.
    if let Ok(meta) = serde_json::from_str::<MidiSongMetadata>(&text) {
        if meta.chords.is_empty() {
            return Ok(None);
        }
        let mut spans = Vec::new();
        for (start, end, symbol) in &meta.chords {
            let chord =
                parse_chord(symbol).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            spans.push(TimedChord {
                start: *start,
                end: *end,
                chord,
            });
        }
        return Ok(Some(spans));
    }
    // Another tool's metadata (a dataset's own JSON): no chords from it.
    Ok(None)
}

/// The chord templates of `spans` for a crop starting `offset` seconds into the song.
pub fn chord_template(
    spans: &[TimedChord],
    offset: f64,
    frame_rate: f64,
    frames: usize,
) -> Vec<f32> {
    let shifted: Vec<TimedChord> = spans
        .iter()
        .map(|s| TimedChord {
            start: s.start - offset,
            end: s.end - offset,
            chord: s.chord.clone(),
        })
        .collect();
    let mut out = FeatureFrames::zeros(&TEMPLATE_FEATURES, frames);
    apply_chords(&mut out, &shifted, frame_rate);
    out.values
}

/// f32 values as little-endian f16 bytes (what the shards store).
pub fn to_f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Little-endian f16 bytes back to f32.
pub fn from_f16_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

/// Columns of `model_features` taken from a row of [`CACHED_FEATURES`] values, appended to
/// `out`; the template (chroma, bass chroma) replaces the harmony columns when given.
pub fn select_columns(
    cached: &[f32],
    template: Option<&[f32]>,
    model_features: &[ContextFeature],
    out: &mut Vec<f32>,
) {
    for &feature in model_features {
        let from_template = template.and_then(|t| {
            let i = TEMPLATE_FEATURES.iter().position(|&f| f == feature)?;
            let start = feature_dims(&TEMPLATE_FEATURES[..i]);
            Some(&t[start..start + feature.dims()])
        });
        match from_template {
            Some(values) => out.extend_from_slice(values),
            None => {
                let i = CACHED_FEATURES
                    .iter()
                    .position(|&f| f == feature)
                    .expect("every feature is cached");
                let start = feature_dims(&CACHED_FEATURES[..i]);
                out.extend_from_slice(&cached[start..start + feature.dims()]);
            }
        }
    }
}
