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
/// is missing or the ceiling is not at least [`MIN_ANCHOR_GAP`] above the floor.
pub fn normalise(x: Option<f64>, floor: Option<f64>, ceiling: Option<f64>) -> Option<f64> {
    let (x, f, c) = (x?, floor?, ceiling?);
    (c - f >= MIN_ANCHOR_GAP).then(|| (x - f) / (c - f))
}

/// Seed of the bootstrap that decides which metrics separate the anchors: fixed, so `eval`
/// and `eval-compare` decide alike on the same clips.
const SEPARATION_SEED: u64 = 0x5e9a_2a7e;

/// The floor and ceiling of one test set, and which metrics they separate.
///
/// A metric is normalised only where its real pairs score above its shuffled pairs beyond
/// the noise of these clips: the 90% paired-bootstrap interval of the per-clip difference
/// (ceiling minus floor) lies above 0. Why: on the music21 corpus works real and shuffled
/// pairs score alike on beat-chroma cosine (0.407 against 0.404 over 96 clips, interval
/// -0.025 .. +0.031), and dividing by that gap made the normalised mean +19.95; on the
/// synthetic test songs every metric separates (the narrowest, beat-chroma cosine, by
/// +0.09 .. +0.14), so their figures are unchanged.
#[derive(Debug, Clone)]
pub struct Anchors {
    floor: Vec<(Option<f64>, usize)>,
    ceiling: Vec<(Option<f64>, usize)>,
    /// Per metric, in [`COHERENCE_METRICS`] order.
    pub separating: [bool; 6],
}

impl Anchors {
    /// The anchors of `floor` and `ceiling`, measured on the same clips.
    pub fn new(floor: &[Coherence], ceiling: &[Coherence]) -> Anchors {
        let mut separating = [false; 6];
        for (k, s) in separating.iter_mut().enumerate() {
            *s = separates(floor, ceiling, k);
        }
        Anchors {
            floor: coherence_means(floor),
            ceiling: coherence_means(ceiling),
            separating,
        }
    }

    /// Metric `k`'s mean `x` between this floor and ceiling; `None` for a metric that does
    /// not separate them.
    pub fn normalise(&self, k: usize, x: Option<f64>) -> Option<f64> {
        if !self.separating[k] {
            return None;
        }
        normalise(x, self.floor[k].0, self.ceiling[k].0)
    }
}

/// Whether the ceiling's metric `k` lies above the floor's beyond noise (see [`Anchors`]).
fn separates(floor: &[Coherence], ceiling: &[Coherence], k: usize) -> bool {
    let gaps: Vec<f64> = floor
        .iter()
        .zip(ceiling)
        .filter_map(
            |(f, c)| match (coherence_values(f)[k], coherence_values(c)[k]) {
                (Some(f), Some(c)) if f.is_finite() && c.is_finite() => Some(c - f),
                _ => None,
            },
        )
        .collect();
    if gaps.len() < 2 || gaps.iter().sum::<f64>() / (gaps.len() as f64) < MIN_ANCHOR_GAP {
        return false;
    }
    let mut rng = StdRng::seed_from_u64(SEPARATION_SEED + k as u64);
    let means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            (0..gaps.len())
                .map(|_| gaps[rng.gen_range(0..gaps.len())])
                .sum::<f64>()
                / gaps.len() as f64
        })
        .collect();
    interval_90(means)[0] > 0.0
}

/// Mean of the metrics that could be normalised: the single figure a population is ranked by.
pub fn normalised_mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.flatten().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Resamples of a bootstrap interval.
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
/// and for the anchors), over the metrics that separate the anchors on all of them
/// ([`Anchors`]). Resamples where a population's mean is undefined are left out;
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
    let separating = Anchors::new(floor, ceiling).separating;
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
                    separating[k]
                        .then(|| {
                            normalise(
                                metric_mean(pop, k),
                                metric_mean(&lo, k),
                                metric_mean(&hi, k),
                            )
                        })
                        .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A clip whose every metric is `v`, except beat-chroma cosine `chroma`.
    fn clip(v: f64, chroma: f64) -> Coherence {
        Coherence {
            onset_grid_share: Some(v),
            beat_f_measure: v,
            tempo_agreement: v,
            key_score: v,
            beat_chroma_cosine: Some(chroma),
            in_key_share: Some(v),
        }
    }

    #[test]
    fn a_metric_whose_anchors_differ_only_by_noise_is_not_normalised() {
        // 40 clips: every metric 0.3 higher in the real pairs, except the beat-chroma cosine,
        // which alternates +-0.2 around the same mean in both.
        let wobble = |i: usize| if i.is_multiple_of(2) { 0.2 } else { -0.2 };
        let floor: Vec<_> = (0..40).map(|i| clip(0.2, 0.5 + wobble(i))).collect();
        let ceiling: Vec<_> = (0..40)
            .map(|i| clip(0.5, 0.5 + wobble(i + i / 4) + 0.002))
            .collect();
        let anchors = Anchors::new(&floor, &ceiling);
        assert_eq!(anchors.separating, [true, true, true, true, false, true]);
        assert!((anchors.normalise(1, Some(0.35)).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(anchors.normalise(4, Some(0.9)), None);
        // The population mean leaves it out; so does every bootstrap resample.
        let generated: Vec<_> = (0..40).map(|_| clip(0.35, 0.9)).collect();
        let means = bootstrap_normalised_means(&[&generated], &floor, &ceiling, 1).unwrap();
        assert!(means.iter().all(|m| (m[0] - 0.5).abs() < 1e-9));
        // One clip is no evidence.
        assert_eq!(
            Anchors::new(&floor[..1], &ceiling[..1]).separating,
            [false; 6]
        );
    }
}
