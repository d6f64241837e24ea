//! The coherence metrics of a population as numbers to compare: per-metric means over the
//! clips, normalisation between the floor and ceiling anchors, and bootstrap intervals of the
//! normalised mean.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::eval::metrics::Coherence;

/// Names of the coherence metrics, in [`coherence_values`] order.
pub const COHERENCE_METRICS: [&str; 6] = [
    "onset_grid_share",
    "beat_f_measure",
    "tempo_agreement",
    "key_score",
    "beat_chroma_cosine",
    "in_key_share",
];

/// The fields of a [`Coherence`] in [`COHERENCE_METRICS`] order (`None`: undefined for the
/// clip).
pub fn coherence_values(c: &Coherence) -> [Option<f64>; 6] {
    [
        c.onset_grid_share,
        Some(c.beat_f_measure),
        Some(c.tempo_agreement),
        Some(c.key_score),
        c.beat_chroma_cosine,
        c.in_key_share,
    ]
}

/// Each coherence metric's mean over the clips where it is defined (and finite), in
/// [`COHERENCE_METRICS`] order, with the number of those clips.
pub fn coherence_means(clips: &[Coherence]) -> Vec<(Option<f64>, usize)> {
    (0..COHERENCE_METRICS.len())
        .map(|k| mean(clips.iter().map(|c| coherence_values(c)[k])))
        .collect()
}

/// The ceiling must exceed the floor by at least this much (every coherence metric lies in
/// [0, 1]) for a metric to be normalised: dividing by a rounding-level gap would turn noise
/// into huge values.
pub const MIN_ANCHOR_GAP: f64 = 1e-6;

/// `(x - floor) / (ceiling - floor)`: 0 at the floor, 1 at the ceiling. `None` when an input
/// is missing or the ceiling is not at least [`MIN_ANCHOR_GAP`] above the floor: such a
/// metric does not separate real from shuffled pairs on this test set, and a flipped or
/// near-zero denominator would only produce misleading numbers (the report lists it).
pub fn normalise(x: Option<f64>, floor: Option<f64>, ceiling: Option<f64>) -> Option<f64> {
    let (x, f, c) = (x?, floor?, ceiling?);
    (c - f >= MIN_ANCHOR_GAP).then(|| (x - f) / (c - f))
}

/// Mean of the metrics that could be normalised: the single figure a population is ranked by.
pub fn normalised_mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.flatten().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Resamples of the bootstrap interval of a normalised mean.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// 90% bootstrap interval of a population's normalised mean over the clips. Clips are
/// resampled with replacement, and the floor and ceiling are recomputed on the same resampled
/// clips, because every population is measured on the same clips. On 24 clips the discrete
/// metrics (tempo agreement, key score) move by whole clips, so two models' means differ by
/// chance more than the table suggests; this interval says by how much.
pub fn normalised_mean_interval(
    population: &[Coherence],
    floor: &[Coherence],
    ceiling: &[Coherence],
    seed: u64,
) -> Option<[f64; 2]> {
    let means: Vec<f64> = bootstrap_normalised_means(&[population], floor, ceiling, seed)?
        .into_iter()
        .map(|m| m[0])
        .collect();
    Some(interval_90(means))
}

/// The normalised means of several populations measured on the same clips, on each of
/// [`BOOTSTRAP_RESAMPLES`] resamples of those clips (the same resample for every population
/// and for the anchors). Resamples where a population's mean is undefined are left out;
/// `None` when fewer than 2 clips, mismatched lengths, or most resamples are undefined.
pub fn bootstrap_normalised_means(
    populations: &[&[Coherence]],
    floor: &[Coherence],
    ceiling: &[Coherence],
    seed: u64,
) -> Option<Vec<Vec<f64>>> {
    let n = floor.len();
    if n < 2 || ceiling.len() != n || populations.iter().any(|p| p.len() != n) {
        return None;
    }
    let values =
        |c: &[Coherence]| -> Vec<[Option<f64>; 6]> { c.iter().map(coherence_values).collect() };
    let pops: Vec<_> = populations.iter().map(|p| values(p)).collect();
    let (lo, hi) = (values(floor), values(ceiling));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resampled = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut picks = vec![0usize; n];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        picks.iter_mut().for_each(|i| *i = rng.gen_range(0..n));
        let metric_mean =
            |rows: &[[Option<f64>; 6]], k: usize| mean(picks.iter().map(|&i| rows[i][k])).0;
        let means: Option<Vec<f64>> = pops
            .iter()
            .map(|pop| {
                normalised_mean((0..COHERENCE_METRICS.len()).map(|k| {
                    normalise(
                        metric_mean(pop, k),
                        metric_mean(&lo, k),
                        metric_mean(&hi, k),
                    )
                }))
            })
            .collect();
        if let Some(means) = means {
            resampled.push(means);
        }
    }
    (resampled.len() >= BOOTSTRAP_RESAMPLES / 2).then_some(resampled)
}

/// The 5th and 95th percentiles of bootstrap values.
pub fn interval_90(mut values: Vec<f64>) -> [f64; 2] {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    [at(0.05), at(0.95)]
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> (Option<f64>, usize) {
    let v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        (None, 0)
    } else {
        (Some(v.iter().sum::<f64>() / v.len() as f64), v.len())
    }
}
