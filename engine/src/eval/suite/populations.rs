//! The populations of a run (anchors, the model, ablations) and the fixed derangement that
//! pairs each clip with another clip's target for the shuffled floor.

use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What a population's numbers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Real pairs: the best a stem can fit (normalised 1).
    Ceiling,
    /// Shuffled real pairs: a real stem that belongs to other music (normalised 0).
    Floor,
    /// The model with the chosen settings.
    Model,
    /// The model with one setting changed.
    Ablation,
    /// Anchors without the codec round trip, for the codec's own cost.
    Reference,
}

/// Where a population's stem for a clip comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The clip's own target.
    Real,
    /// The target of the clip's [`derangement`] partner.
    Shuffled,
    /// Generated with these weights (other settings from the preset and the paper).
    Generated {
        lambda_context: f64,
        lambda_category: f64,
        w_position: f64,
        harmony: HarmonySource,
    },
}

/// The context features a generated population gives a model that has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HarmonySource {
    /// Measured from the clip's context, as a user's context would be.
    Measured,
    /// None (all zero): what the features add.
    Off,
    /// The clip's true chords (from its song's metadata) instead of the measured harmony,
    /// as a producer typing the progression would give them.
    TrueChords,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Population {
    pub name: &'static str,
    pub role: Role,
    pub source: Source,
    /// Real audio encoded and decoded by the model's tokenizer (generated audio always is).
    pub codec_round_trip: bool,
    pub description: &'static str,
}

/// The populations of a run: anchors, the model, the ablations of the paper's tables
/// (optional), the harmony variants (optional) and the raw anchors.
pub fn standard_populations(ablations: bool, harmony: bool) -> Vec<Population> {
    let with_harmony = |name, role, harmony, description| Population {
        name,
        role,
        source: Source::Generated {
            lambda_context: 3.0,
            lambda_category: 3.0,
            w_position: 0.1,
            harmony,
        },
        codec_round_trip: true,
        description,
    };
    let generated =
        |name, role, lambda_context, lambda_category, w_position, description| Population {
            name,
            role,
            source: Source::Generated {
                lambda_context,
                lambda_category,
                w_position,
                harmony: HarmonySource::Measured,
            },
            codec_round_trip: true,
            description,
        };
    let mut p = vec![
        Population {
            name: "real",
            role: Role::Ceiling,
            source: Source::Real,
            codec_round_trip: true,
            description: "the clip's true target, through the tokenizer",
        },
        Population {
            name: "shuffled",
            role: Role::Floor,
            source: Source::Shuffled,
            codec_round_trip: true,
            description:
                "the true target of another clip (fixed derangement), through the tokenizer",
        },
        generated(
            "generated",
            Role::Model,
            3.0,
            3.0,
            0.1,
            "the model: lambda_context 3, lambda_category 3, w_s 0.1",
        ),
    ];
    if ablations {
        p.extend([
            generated(
                "no_guidance",
                Role::Ablation,
                1.0,
                1.0,
                0.1,
                "both guidance strengths 1",
            ),
            generated(
                "context_guidance_only",
                Role::Ablation,
                3.0,
                1.0,
                0.1,
                "lambda_context 3, lambda_category 1",
            ),
            generated(
                "category_guidance_only",
                Role::Ablation,
                1.0,
                3.0,
                0.1,
                "lambda_context 1, lambda_category 3",
            ),
            generated(
                "no_causal_bias",
                Role::Ablation,
                3.0,
                3.0,
                0.0,
                "w_s 0 (VampNet-like ranking)",
            ),
        ]);
    }
    if harmony {
        p.extend([
            with_harmony(
                "no_context_features",
                Role::Ablation,
                HarmonySource::Off,
                "the model given no context features (harmony, onsets, beats)",
            ),
            with_harmony(
                "true_chords",
                Role::Ablation,
                HarmonySource::TrueChords,
                "the model given each clip's true chords instead of the measured harmony",
            ),
        ]);
    }
    p.extend([
        Population {
            name: "real_raw",
            role: Role::Reference,
            source: Source::Real,
            codec_round_trip: false,
            description: "the clip's true target as rendered (no tokenizer)",
        },
        Population {
            name: "shuffled_raw",
            role: Role::Reference,
            source: Source::Shuffled,
            codec_round_trip: false,
            description: "another clip's true target as rendered (no tokenizer)",
        },
    ]);
    p
}

/// A fixed derangement of `n = songs.len()` clips (`songs[i]`: the song clip `i` comes
/// from): `p[i] != i` for every clip, and `songs[p[i]] != songs[i]` for as many clips as
/// possible (all of them whenever no song holds more than half the clips). Seeded random
/// cycles (Sattolo's algorithm, never a fixed point) are repaired by swapping partners.
pub fn derangement(songs: &[usize], seed: u64) -> Result<Vec<usize>> {
    let n = songs.len();
    ensure!(n >= 2, "the shuffled floor needs at least 2 clips, got {n}");
    let mut rng = StdRng::seed_from_u64(seed);
    let same = |p: &[usize], i: usize| songs[p[i]] == songs[i];
    let mut best: Option<(usize, Vec<usize>)> = None;
    for _ in 0..20 {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.gen_range(0..i);
            p.swap(i, j);
        }
        // Swap partners of a same-song clip with any clip where the swap leaves both
        // without a fixed point and from different songs.
        let mut improved = true;
        while improved {
            improved = false;
            for i in 0..n {
                if !same(&p, i) {
                    continue;
                }
                for k in 0..n {
                    let (a, b) = (p[k], p[i]);
                    if k != i && a != i && b != k && songs[a] != songs[i] && songs[b] != songs[k] {
                        p.swap(i, k);
                        improved = true;
                        break;
                    }
                }
            }
        }
        let count = (0..n).filter(|&i| same(&p, i)).count();
        if best.as_ref().is_none_or(|(b, _)| count < *b) {
            best = Some((count, p));
        }
        if count == 0 {
            break;
        }
    }
    Ok(best.expect("at least one attempt").1)
}
