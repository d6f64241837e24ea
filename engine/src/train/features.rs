//! The context features a training step shows the model (ARCHITECTURE §3.8): the measured
//! features of each pair's context most of the time; the chord templates of the true
//! progression instead of the measured harmony some of the time (so that chords typed by a
//! producer mean what chords heard in the context mean); no features at all some of the
//! time (so that a context without usable harmony, or a user who turns them off, still gets
//! a good stem). A dropped context drops its features too, inside the model.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::analysis::context_features::{feature_dims, ContextFeature};
use crate::data::cache::Batch;
use crate::data::pair_features::{cached_dims, select_columns, template_dims};

/// How each example's features are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureMix {
    /// Share of examples whose song's chords are known that see the chord templates instead
    /// of the measured chroma and bass chroma.
    pub chord_template_share: f64,
    /// Share of examples that see no features (all zero).
    pub feature_drop_share: f64,
}

impl FeatureMix {
    /// Measured features for every example (validation).
    pub const MEASURED: FeatureMix = FeatureMix {
        chord_template_share: 0.0,
        feature_drop_share: 0.0,
    };
}

/// The `[B, T, F]` features of `batch` for a model with `features`, drawn by `mix` from an
/// RNG seeded with `seed` (a step's own seed, so a resumed run draws the same), or `None` for
/// a model without features.
pub fn batch_features(
    batch: &Batch,
    features: &[ContextFeature],
    frames: usize,
    mix: FeatureMix,
    seed: u64,
    device: &Device,
) -> Result<Option<Tensor>> {
    if features.is_empty() {
        return Ok(None);
    }
    let Some(measured) = &batch.features else {
        bail!(
            "the token cache has no context features; rebuild it with this version of \
             `stemgen data cache` to train a model with context_features"
        );
    };
    let (cached, template) = (cached_dims(), template_dims());
    let dims = feature_dims(features);
    let examples = batch.has_chords.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(examples * frames * dims);
    for b in 0..examples {
        let dropped = rng.gen::<f64>() < mix.feature_drop_share;
        let use_template = batch.has_chords[b] && rng.gen::<f64>() < mix.chord_template_share;
        if dropped {
            values.extend(std::iter::repeat_n(0.0, frames * dims));
            continue;
        }
        for n in 0..frames {
            let row = &measured[(b * frames + n) * cached..][..cached];
            let chords = match (&batch.templates, use_template) {
                (Some(t), true) => Some(&t[(b * frames + n) * template..][..template]),
                _ => None,
            };
            select_columns(row, chords, features, &mut values);
        }
    }
    Ok(Some(Tensor::from_vec(
        values,
        (examples, frames, dims),
        device,
    )?))
}
