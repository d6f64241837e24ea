//! The harmony prior: a bias of each code's guided log-probability toward the pitch classes
//! of the harmony in the context features (measured, or the producer's chords or key).
//!
//! Why: the model reads the harmony through its features, but a 6M-parameter model trained
//! for a few CPU-hours follows it weakly (a bass over "C | Am | F | G" lands in C major or
//! A minor on 0-1 of 8 seeds). The tokens are log-magnitude spectra, so what a code does to
//! the stem's chroma is known without the model: its codeword's mean dB in each pitch
//! class's bins (the tokenizer's [`crate::codec::Tokenizer::code_profiles`]). The
//! prior adds `strength x sum_c w_c x profile_c` to each code, with `w` the frame's chroma
//! scaled to a maximum of 1 minus its mean, so a uniform loudness change scores 0 and a
//! flat or silent chroma adds nothing.
//!
//! Which levels: [`PRIOR_LEVELS`], the first residual level (a bass line following chords
//! also level 0: [`PriorTarget`]). Level 0 holds each frame's loudness and coarse
//! shape, and the finer levels the envelope's detail; a prior there trades the stem's
//! rhythm for its key. On 16 held-out bass and guitar clips at strength 4, with the prior
//! on levels 1-4 the loudest frames lost 8-16 dB and the onset envelope's periodicity (its
//! autocorrelation peak at beat lags) fell from 0.41 to 0.25; with the chroma averaged per
//! beat, on levels 1-2 to 0.33 and on level 1 alone it stayed at 0.41 (0.47 at strength 8)
//! while the key score rose from 0.14 to 0.33 (0.44). On 96 clips, levels 1-4 at strength 4
//! had cost beat F1 0.51 -> 0.34; level 1 at strength 8 costs none (the default's numbers
//! are at [`super::DEFAULT_HARMONY_PRIOR`]). Averaging the chroma over each of the
//! context's beats instead of using each frame's measured no better on 96 clips (beat F1
//! -0.03 on seed 1), so the target is the frame's.
//!
//! It re-weights only the codes that survive the plausibility constraint (it is added
//! after it): codes the model does not believe in stay out, whatever their pitch classes.
//! It is an extension of the paper's sampler (ARCHITECTURE §3.8); strength 0 is the paper's.

use std::ops::Range;

use crate::analysis::context_features::{ContextFeature, FeatureFrames};
use crate::codec::CodeProfiles;

/// Pitch classes per profile.
pub const PITCH_CLASSES: usize = 12;

/// The token levels the prior applies to (see the header: level 1 only).
pub const PRIOR_LEVELS: Range<usize> = 1..2;

/// The levels for a bass line following chords (the producer's, or those heard in the
/// context by [`crate::analysis::chord_recognition`]): level 0 too. Over a metronome with
/// "C | Am | F | G", level 1 alone left the bass on one chord tone across the bars (4 of 8
/// seeds in C major or A minor); with level 0 and the chords' bass notes weighted in
/// ([`BASS_NOTE_WEIGHT`]) it moves with the roots (7 of 8). The cost: the level-0 shapes
/// whose harmonics match the target are bright ones (a generated bass's energy above 1 kHz
/// rose from 0.0002 to 0.08-0.14 on 96 clips, the real stems' 0.006-0.020), which
/// [`BASS_BRIGHTNESS_PENALTY`] takes back.
pub const BASS_LEVELS: Range<usize> = 0..2;
/// For a bass line following chords, the level-0 penalty per dB of a code's brightness
/// ([`CodeProfiles::level0_brightness_db`]), in the same units as the pitch-class score.
/// Why: the level-0 shapes are coarse spectral envelopes, and the one a bass line has is
/// dull; the others (8-41% of their power above 1 kHz) match a chord's pitch classes
/// better through their harmonics, so the pitch score alone picks them. Over the README's
/// example song (8 seeds; its real bass has 0.86% of its energy above 1 kHz) the share of
/// the bass's energy above 1 kHz and the seeds read in G major or E minor were, from 0 to
/// 0.1: 4.7% (8 of 8), 2.4% (8), 1.8% (8), 0.86% at 0.04 (8), 0.11% at 0.05 (7), 0.01% at
/// 0.1 (6, and over "C | Am | F | G" 5 of 8 instead of 8: the dull shape alone cannot move
/// with the roots).
pub const BASS_BRIGHTNESS_PENALTY: f32 = 0.04;
/// For a bass line following chords, level-0 codes more than this many dB brighter than the
/// frame's likeliest code (before the prior) are not drawn. Why: the penalty above is small
/// next to the pitch score, which runs to hundreds of nats, so where the model's own level 0
/// is dull but a bright shape matches the chord the bright one still won every frame: one
/// of seed 1's eight bass clips of `stemgen eval` came out with 34-50% of its energy above
/// 1 kHz (none with the prior off; the real stem 0.00%). The shapes differ by 10 dB or more
/// from the dullest, so 6 or 12 keep the bass on the model's shape; on those eight clips (two
/// seeds each) the energy above 1 kHz went from 7.0% to 0.6% (real 0.4%) and the harmony
/// checks stayed at 8 of 8 and 8 of 8.
pub const BASS_BRIGHTNESS_MARGIN_DB: f32 = 6.0;
/// Weight of the bass chroma (the chords' bass notes) added to the chroma in the prior's
/// target for a bass line following chords.
pub const BASS_NOTE_WEIGHT: f32 = 2.0;
/// The prior's strength for a bass line following chords, as a multiple of the preset's.
/// Over the README's example song (chords heard in the context, before the key joined the
/// target), 8 seeds: at 1x 2 basses of 8 read as G major or E minor (the model's own level 0
/// keeps the tonic under every chord), at 1.5x 3, at 2x 6, at 3x 6.
pub const BASS_STRENGTH_SCALE: f32 = 2.0;

/// What the prior pulls toward: which levels, how much of the bass chroma joins the
/// chroma, and how strongly.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PriorTarget {
    pub levels: Range<usize>,
    pub bass_weight: f32,
    pub strength_scale: f32,
    /// Level-0 penalty per dB of brightness (0 = none).
    pub brightness_penalty: f32,
    /// Level-0 codes this much brighter than the likeliest are cut (infinite = none).
    pub brightness_margin_db: f32,
}

impl PriorTarget {
    /// Any stem over any harmony: [`PRIOR_LEVELS`], the chroma alone.
    pub(super) fn chroma() -> PriorTarget {
        PriorTarget {
            levels: PRIOR_LEVELS,
            bass_weight: 0.0,
            strength_scale: 1.0,
            brightness_penalty: 0.0,
            brightness_margin_db: f32::INFINITY,
        }
    }

    /// A bass line following chords: [`BASS_LEVELS`], the chords' bass notes weighted in,
    /// [`BASS_STRENGTH_SCALE`], bright level-0 shapes held back ([`BASS_BRIGHTNESS_PENALTY`],
    /// [`BASS_BRIGHTNESS_MARGIN_DB`]).
    pub(super) fn bass_following_chords() -> PriorTarget {
        PriorTarget {
            levels: BASS_LEVELS,
            bass_weight: BASS_NOTE_WEIGHT,
            strength_scale: BASS_STRENGTH_SCALE,
            brightness_penalty: BASS_BRIGHTNESS_PENALTY,
            brightness_margin_db: BASS_BRIGHTNESS_MARGIN_DB,
        }
    }
}

/// The prior of one window: the codes' profiles and each frame's chroma weights.
pub(super) struct WindowPrior<'a> {
    profiles: &'a CodeProfiles,
    /// Per frame of the window; `None` where the chroma is silent or flat.
    weights: Vec<Option<[f32; 12]>>,
    levels: Range<usize>,
    strength_scale: f32,
    brightness_penalty: f32,
    brightness_margin_db: f32,
}

impl<'a> WindowPrior<'a> {
    /// `None` when the features have no chroma.
    pub(super) fn new(
        profiles: &'a CodeProfiles,
        features: &FeatureFrames,
        target: PriorTarget,
    ) -> Option<Self> {
        let offset = features.offset(ContextFeature::Chroma)?;
        let bass = features
            .offset(ContextFeature::BassChroma)
            .filter(|_| target.bass_weight > 0.0);
        let weights = (0..features.frames)
            .map(|n| {
                let frame = features.frame(n);
                let mut chroma = [0.0f32; PITCH_CLASSES];
                chroma.copy_from_slice(&frame[offset..offset + PITCH_CLASSES]);
                if let Some(b) = bass {
                    for (c, &v) in chroma.iter_mut().zip(&frame[b..b + PITCH_CLASSES]) {
                        *c += target.bass_weight * v;
                    }
                }
                weights_of(&chroma)
            })
            .collect();
        Some(WindowPrior {
            profiles,
            weights,
            levels: target.levels,
            strength_scale: target.strength_scale,
            brightness_penalty: target.brightness_penalty,
            brightness_margin_db: target.brightness_margin_db,
        })
    }

    /// Adds the prior of window frame `n` at `level` to its guided log-probabilities (at
    /// its target's levels only; the brightness cut and penalty where the frame has a
    /// harmony).
    pub(super) fn apply(&self, guided: &mut [f32], level: usize, n: usize, strength: f32) {
        if !self.levels.contains(&level) {
            return;
        }
        if let Some(w) = &self.weights[n] {
            if level == 0 && self.brightness_margin_db.is_finite() {
                let brightness = &self.profiles.level0_brightness_db;
                hold_brightness(guided, brightness, self.brightness_margin_db);
            }
            let strength = strength * self.strength_scale;
            add(guided, &self.profiles.pitch_classes[level], w, strength);
            if level == 0 && self.brightness_penalty > 0.0 {
                let penalty = strength * self.brightness_penalty;
                penalise(guided, &self.profiles.level0_brightness_db, penalty);
            }
        }
    }
}

/// `chroma / max - mean(chroma / max)`, or `None` when the chroma is silent or flat.
fn weights_of(chroma: &[f32]) -> Option<[f32; 12]> {
    let max = chroma.iter().fold(0.0f32, |m, &v| m.max(v));
    if max <= 1e-6 {
        return None;
    }
    let mean = chroma.iter().map(|&v| v / max).sum::<f32>() / PITCH_CLASSES as f32;
    let mut w = [0.0f32; 12];
    for (w, &v) in w.iter_mut().zip(chroma) {
        *w = v / max - mean;
    }
    w.iter().any(|v| v.abs() > 1e-6).then_some(w)
}

/// Adds the prior to `guided` (one frame's log-probabilities over the codebook; `-inf`
/// entries, cut by plausibility or the nucleus, stay cut). `profiles` is `[codes x 12]`.
fn add(guided: &mut [f32], profiles: &[f32], weights: &[f32; 12], strength: f32) {
    debug_assert_eq!(profiles.len(), guided.len() * PITCH_CLASSES);
    for (g, profile) in guided.iter_mut().zip(profiles.chunks_exact(PITCH_CLASSES)) {
        if g.is_finite() {
            let score: f32 = profile.iter().zip(weights).map(|(p, w)| p * w).sum();
            *g += strength * score;
        }
    }
}

/// Sets the codes more than `margin_db` brighter than the likeliest one to `-inf` (called
/// before the prior is added, so "likeliest" is the model's own, after guidance).
fn hold_brightness(guided: &mut [f32], brightness_db: &[f32], margin_db: f32) {
    let Some(top) = (0..guided.len()).max_by(|&a, &b| guided[a].total_cmp(&guided[b])) else {
        return;
    };
    let ceiling = brightness_db[top] + margin_db;
    for (g, &b) in guided.iter_mut().zip(brightness_db) {
        if b > ceiling {
            *g = f32::NEG_INFINITY;
        }
    }
}

/// Subtracts `penalty x brightness` from each code's finite log-probability.
fn penalise(guided: &mut [f32], brightness_db: &[f32], penalty: f32) {
    debug_assert_eq!(brightness_db.len(), guided.len());
    for (g, &b) in guided.iter_mut().zip(brightness_db) {
        if g.is_finite() {
            *g -= penalty * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_or_silent_chroma_has_no_weights() {
        assert!(weights_of(&[0.0; 12]).is_none());
        assert!(weights_of(&[0.7; 12]).is_none());
        let w = weights_of(&[1., 0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 0.]).unwrap();
        assert!((w.iter().sum::<f32>()).abs() < 1e-5, "zero mean");
        assert!((w[0] - 0.75).abs() < 1e-6 && (w[1] + 0.25).abs() < 1e-6);
    }

    #[test]
    fn codes_much_brighter_than_the_likeliest_are_cut() {
        let brightness = [0.0, 5.0, 12.0, 20.0];
        let mut guided = vec![-1.0, -3.0, -2.0, f32::NEG_INFINITY];
        hold_brightness(&mut guided, &brightness, 6.0);
        assert_eq!(guided, [-1.0, -3.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        // The margin counts from the likeliest code's own brightness.
        let mut guided = vec![-5.0, -3.0, -0.5, -9.0];
        hold_brightness(&mut guided, &brightness, 6.0);
        assert_eq!(guided, [-5.0, -3.0, -0.5, f32::NEG_INFINITY]);
    }

    #[test]
    fn chord_tone_codes_gain_and_a_uniform_level_change_scores_nothing() {
        // C major triad; code 0 puts 6 dB on C, E and G, code 1 on C#, code 2 is 10 dB
        // louder everywhere, code 3 was cut.
        let w = weights_of(&[1., 0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 0.]).unwrap();
        let mut profiles = vec![0.0f32; 4 * 12];
        for c in [0, 4, 7] {
            profiles[c] = 6.0;
        }
        profiles[12 + 1] = 6.0;
        profiles[24..36].fill(10.0);
        let mut guided = vec![-1.0, -1.0, -1.0, f32::NEG_INFINITY];
        add(&mut guided, &profiles, &w, 0.1);
        assert!((guided[0] - (-1.0 + 0.1 * 3.0 * 6.0 * 0.75)).abs() < 1e-5);
        assert!((guided[1] - (-1.0 - 0.1 * 6.0 * 0.25)).abs() < 1e-5);
        assert!((guided[2] + 1.0).abs() < 1e-5, "{}", guided[2]);
        assert_eq!(guided[3], f32::NEG_INFINITY);
    }
}
