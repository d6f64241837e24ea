//! Coherence metrics on [`Analysis`] results: how well a stem fits its context. Pure
//! functions; every threshold is a named constant. On their own they mean little, so
//! `stemgen eval` reports them between shuffled real pairs (floor) and real pairs (ceiling)
//! on the same clips. Distances between a signal and its reconstruction live in
//! [`crate::analysis::distance`].

use crate::analysis::key::{weighted_score, Key};
use crate::analysis::spectrum::Frames;
use crate::analysis::Analysis;
use crate::audio::{Audio, AudioError};

/// Tolerance for an onset or beat to count as on time (mir_eval's beat F-measure window).
pub const ONSET_WINDOW_SECS: f64 = 0.07;
/// Relative tempo difference still counted as the same tempo (mir_eval's tempo tolerance
/// is 8%; 4% keeps librosa's lag quantisation, about 2.4% at 120 BPM, from passing a
/// genuinely different tempo).
pub const TEMPO_TOLERANCE: f64 = 0.04;
/// Beat segments quieter than this (relative to the loudest segment) are left out of the
/// beat-synchronous chroma cosine: a silent segment's chroma direction is noise.
pub const SEGMENT_FLOOR: f64 = 1e-6;

/// Number of (reference, estimate) pairs in a maximum one-to-one matching of events at most
/// `window` seconds apart (mir_eval's `util.match_events`). Both inputs sorted ascending;
/// for events on a line a greedy earliest-first matching is maximum.
pub fn match_events(reference: &[f64], estimate: &[f64], window: f64) -> usize {
    let mut matched = 0;
    let mut j = 0;
    for &r in reference {
        // Estimates too early for this reference are too early for every later one.
        while j < estimate.len() && r > estimate[j] + window {
            j += 1;
        }
        if j < estimate.len() && r >= estimate[j] - window {
            matched += 1;
            j += 1;
        }
    }
    matched
}

/// mir_eval's `beat.f_measure(reference, estimate, 0.07)` (no 5 s trim): the F1 of matched
/// beats; 0 if either list is empty.
pub fn beat_f_measure(reference: &[f64], estimate: &[f64]) -> f64 {
    if reference.is_empty() || estimate.is_empty() {
        return 0.0;
    }
    let m = match_events(reference, estimate, ONSET_WINDOW_SECS) as f64;
    let (p, r) = (m / estimate.len() as f64, m / reference.len() as f64);
    if p == 0.0 && r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// [`beat_f_measure`] at the best of the allowed metrical levels of the reference (as
/// mir_eval's continuity "AMLt" allows them): as is, off-beat (the midpoints), double time
/// (beats and midpoints) and half time (every other beat, either phase).
///
/// Why not the beats of the context + stem mix, as first specified: measured on held-out
/// clips, the context dominates the mix's beat tracker, so shuffled stems from songs at other
/// tempos scored *higher* than the real ones (natural level: 0.756 vs 0.749; stem at the
/// context's RMS: 0.664 vs 0.547). And a stem's own beats at the plain level fail sparse,
/// well-aligned stems whose tracker locks onto their off-beats (ARCHITECTURE §6), hence the levels.
pub fn beat_f_measure_any_level(reference: &[f64], estimate: &[f64]) -> f64 {
    let mids: Vec<f64> = reference.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let mut double: Vec<f64> = reference.iter().chain(&mids).copied().collect();
    double.sort_by(f64::total_cmp);
    let half =
        |phase: usize| -> Vec<f64> { reference.iter().skip(phase).step_by(2).copied().collect() };
    [reference.to_vec(), mids, double, half(0), half(1)]
        .iter()
        .map(|r| beat_f_measure(r, estimate))
        .fold(0.0, f64::max)
}

/// The beat and half-beat grid of `beats` over `[0, duration]`: the beats, the midpoints
/// between them, and the median beat period extrapolated before the first and after the
/// last beat (librosa trims weak beats at the edges). Needs at least two beats.
pub fn beat_grid(beats: &[f64], duration: f64) -> Option<Vec<f64>> {
    if beats.len() < 2 {
        return None;
    }
    let periods: Vec<f64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
    let period = crate::analysis::spectrum::median(&periods)?;
    if period <= 0.0 {
        return None;
    }
    let half = period / 2.0;
    let mut grid = Vec::new();
    let mut t = beats[0];
    while t - half >= -half {
        t -= half;
        grid.push(t);
    }
    grid.reverse();
    for w in beats.windows(2) {
        grid.push(w[0]);
        grid.push(0.5 * (w[0] + w[1]));
    }
    let mut t = *beats.last()?;
    grid.push(t);
    while t + half <= duration + half {
        t += half;
        grid.push(t);
    }
    Some(grid)
}

/// Share of `stem_onsets` within [`ONSET_WINDOW_SECS`] of the context's beat or half-beat
/// grid ([`beat_grid`]). Robust where beat F-measure is not: a sparse stem on the beat can
/// make the tracker lock onto off-beats, but its onsets still sit on the grid. `None` when
/// the stem has no onsets or the context fewer than two beats.
pub fn onset_grid_share(stem_onsets: &[f64], context_beats: &[f64], duration: f64) -> Option<f64> {
    if stem_onsets.is_empty() {
        return None;
    }
    let grid = beat_grid(context_beats, duration)?;
    let on = stem_onsets
        .iter()
        .filter(|&&o| grid.iter().any(|&g| (o - g).abs() <= ONSET_WINDOW_SECS))
        .count();
    Some(on as f64 / stem_onsets.len() as f64)
}

/// Whether two tempi agree within [`TEMPO_TOLERANCE`], also at double or half tempo (the
/// octave errors every tempo estimator makes).
pub fn tempo_agreement(reference_bpm: f64, estimate_bpm: f64) -> bool {
    if reference_bpm <= 0.0 || estimate_bpm <= 0.0 {
        return false;
    }
    [1.0, 2.0, 0.5].iter().any(|&f| {
        let target = f * reference_bpm;
        (estimate_bpm - target).abs() <= TEMPO_TOLERANCE * target
    })
}

fn segment_sums(chroma: &Frames, bounds: &[usize]) -> Vec<Vec<f64>> {
    bounds
        .windows(2)
        .map(|w| {
            let mut s = vec![0.0; chroma.rows];
            for t in w[0]..w[1].min(chroma.frames) {
                for (a, &b) in s.iter_mut().zip(chroma.frame(t)) {
                    *a += b;
                }
            }
            s
        })
        .collect()
}

/// Mean cosine similarity between the context's and the stem's chroma energy summed over
/// the context's beat segments (librosa's `util.sync` boundaries: 0, the beats, the end;
/// fixed half-second segments when the context has no beats). Segments where either side is
/// below [`SEGMENT_FLOOR`] of its loudest segment are skipped; `None` if none is left.
pub fn beat_sync_chroma_cosine(
    context_chroma: &Frames,
    context_beats: &[usize],
    stem_chroma: &Frames,
    sample_rate: u32,
) -> Option<f64> {
    let frames = context_chroma.frames.min(stem_chroma.frames);
    let mut bounds = vec![0];
    if context_beats.len() >= 2 {
        bounds.extend(
            context_beats
                .iter()
                .copied()
                .filter(|&b| b > 0 && b < frames),
        );
    } else {
        let step = crate::analysis::spectrum::time_frame(0.5, sample_rate).max(1);
        bounds.extend((step..frames).step_by(step));
    }
    bounds.push(frames);
    let a = segment_sums(context_chroma, &bounds);
    let b = segment_sums(stem_chroma, &bounds);
    let energy = |v: &Vec<f64>| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let max_a = a.iter().map(energy).fold(0.0, f64::max);
    let max_b = b.iter().map(energy).fold(0.0, f64::max);
    let mut sum = 0.0;
    let mut n = 0;
    for (x, y) in a.iter().zip(&b) {
        let (ex, ey) = (energy(x), energy(y));
        if ex <= SEGMENT_FLOOR * max_a || ey <= SEGMENT_FLOOR * max_b || ex == 0.0 || ey == 0.0 {
            continue;
        }
        sum += x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / (ex * ey);
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Share of the stem's chroma energy (all frames) that falls on the scale of `key` (major or
/// natural minor). `None` for a silent stem. A random spread over 12 pitch classes scores
/// 7/12; STFT chroma smears low notes into neighbouring classes, so an in-key bass line
/// scores about 0.7, not 1 (measured in `tests/eval.rs`): read it between floor and ceiling.
pub fn in_key_chroma_share(stem_raw_chroma: &Frames, key: Key) -> Option<f64> {
    let total_pc = stem_raw_chroma.mean_frame();
    let total: f64 = total_pc.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let inside: f64 = key.scale().iter().map(|&pc| total_pc[pc]).sum();
    Some(inside / total)
}

/// Every coherence metric of a stem with its context. Options are `None` where the metric is
/// undefined for the clip (see each function); callers average over the defined ones and
/// report how many were defined.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Coherence {
    /// [`onset_grid_share`] of the stem's onsets on the context's beat grid.
    pub onset_grid_share: Option<f64>,
    /// [`beat_f_measure_any_level`] of the context's beats (reference) against the stem's own
    /// beats: does the stem pulse with the context, at the same tempo and phase?
    pub beat_f_measure: f64,
    /// 1 if the stem's tempo agrees with the context's ([`tempo_agreement`]), else 0.
    pub tempo_agreement: f64,
    /// mir_eval weighted key score of the stem's key against the context's.
    pub key_score: f64,
    /// [`beat_sync_chroma_cosine`] between context and stem.
    pub beat_chroma_cosine: Option<f64>,
    /// [`in_key_chroma_share`] of the stem in the context's key.
    pub in_key_share: Option<f64>,
}

impl Coherence {
    /// The metrics from analyses of the context and the stem (same length and rate).
    pub fn from_analyses(context: &Analysis, stem: &Analysis) -> Coherence {
        Coherence {
            onset_grid_share: onset_grid_share(
                &stem.onset_times,
                &context.beat_times,
                context.duration_secs,
            ),
            beat_f_measure: beat_f_measure_any_level(&context.beat_times, &stem.beat_times),
            tempo_agreement: f64::from(u8::from(tempo_agreement(
                context.tempo_bpm,
                stem.tempo_bpm,
            ))),
            key_score: weighted_score(context.key, stem.key),
            beat_chroma_cosine: beat_sync_chroma_cosine(
                &context.raw_chroma,
                &context.beat_frames,
                &stem.raw_chroma,
                context.sample_rate,
            ),
            in_key_share: in_key_chroma_share(&stem.raw_chroma, context.key),
        }
    }

    /// Analyses `context` and `stem` (both mixed to mono at the analysis rate and
    /// cut to the shorter) and returns the metrics.
    pub fn measure(context: &Audio, stem: &Audio) -> Result<Coherence, AudioError> {
        let rate = crate::analysis::ANALYSIS_RATE;
        let c = context.to_mono_at(rate)?.channels.swap_remove(0);
        let s = stem.to_mono_at(rate)?.channels.swap_remove(0);
        let n = c.len().min(s.len());
        let (c, s) = (&c[..n], &s[..n]);
        Ok(Coherence::from_analyses(
            &Analysis::of_samples(c, rate),
            &Analysis::of_samples(s, rate),
        ))
    }
}
