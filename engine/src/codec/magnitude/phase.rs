//! Phase reconstruction: a waveform whose STFT magnitude approaches decoded magnitudes.
//!
//! Three starts, then fast Griffin-Lim (Perraudin et al. 2013) from there:
//! - **random** phases: the classic start; Griffin-Lim needs ~100 iterations from it and still
//!   leaves phasey, smeared transients;
//! - **PGHI** (phase-gradient heap integration, Průša et al. 2017): the phase's time and
//!   frequency derivatives follow from the log-magnitude's frequency and time derivatives
//!   (exact for a Gaussian window; the Hann window is treated as the Gaussian of the same
//!   time-frequency spread, `gamma = 0.25645 L^2`), and are integrated outward from the
//!   loudest bins, so coherent partials and onsets get coherent phase with no iterations. A
//!   few Griffin-Lim iterations then remove what the Gaussian model misses;
//! - **peaks**: PGHI, with every spectral peak that continues from the previous frame given a
//!   sinusoid's phase at the peak's interpolated frequency ([`peak_locked_phases`]), so low
//!   partials keep their pitch (the shipped tokenizer's start, with 4 iterations).
//!
//! Phases are built in the centred-window convention (frame time origin at the window's
//! centre) and turned into [`Stft`]'s convention, whose frames start at the window's first
//! sample: for an even `n_fft` that is a factor `(-1)^m` on bin `m`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::analysis::peaks::find_peaks;
use crate::analysis::stft::Stft;

/// How the phase of the first Griffin-Lim iteration is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStart {
    /// Seeded uniform random phases (tokenizers saved before PGHI existed).
    #[default]
    Random,
    /// Phase-gradient heap integration.
    Pghi,
    /// PGHI, with every spectral peak that continues from the previous frame given the
    /// phase of a sinusoid at the peak's interpolated frequency (see [`peak_locked_phases`]).
    Peaks,
}

impl std::str::FromStr for PhaseStart {
    type Err = String;

    /// The names configs and the command line use: `random` or `pghi`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "random" => Ok(PhaseStart::Random),
            "pghi" => Ok(PhaseStart::Pghi),
            "peaks" => Ok(PhaseStart::Peaks),
            other => Err(format!(
                "unknown phase start {other:?} (random, pghi or peaks)"
            )),
        }
    }
}

/// The Hann window's Gaussian time-frequency spread relative to its length squared
/// (Průša et al. 2017, table 1).
const HANN_GAMMA: f64 = 0.25645;
/// Bins more than this far below the loudest (natural log of magnitude, about 87 dB) get a
/// random phase instead of an integrated one: their gradients are noise.
const PGHI_TOLERANCE: f64 = 10.0;

/// How a decoder reconstructs phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseSettings {
    pub start: PhaseStart,
    /// Fast Griffin-Lim iterations after the start.
    pub iters: usize,
    /// Griffin-Lim momentum (0 is the classic algorithm).
    pub momentum: f32,
    /// Seed of the random phases (of the start, or of PGHI's quiet bins).
    pub seed: u64,
}

/// A waveform of `frames * hop` samples whose STFT magnitude approaches `mags`
/// (`[frames][bins]`). `progress(i, iters)` after each Griffin-Lim iteration.
pub fn reconstruct(
    stft: &Stft,
    mags: &[f32],
    frames: usize,
    settings: &PhaseSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<f32> {
    if frames == 0 {
        return Vec::new();
    }
    assert_eq!(mags.len(), frames * stft.bins());
    let angles = match settings.start {
        PhaseStart::Random => random_phases(mags.len(), settings.seed),
        PhaseStart::Pghi => pghi_phases(stft, mags, frames, settings.seed),
        PhaseStart::Peaks => peak_locked_phases(stft, mags, frames, settings.seed),
    };
    let (iters, momentum) = (settings.iters, settings.momentum);
    griffin_lim(stft, mags, frames, angles, iters, momentum, progress)
}

fn random_phases(n: usize, seed: u64) -> Vec<Complex32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            Complex32::from_polar(
                1.0,
                rng.gen_range(-std::f32::consts::PI..std::f32::consts::PI),
            )
        })
        .collect()
}

/// Fast Griffin-Lim from unit phasors `angles` (`[frames][bins]`).
pub fn griffin_lim(
    stft: &Stft,
    mags: &[f32],
    frames: usize,
    mut angles: Vec<Complex32>,
    iters: usize,
    momentum: f32,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<f32> {
    let norm = stft.window_sum(frames);
    let mut previous = vec![Complex32::default(); angles.len()];
    let mut spec = vec![Complex32::default(); angles.len()];
    let beta = momentum / (1.0 + momentum);
    for i in 0..iters {
        for ((s, &a), &m) in spec.iter_mut().zip(&angles).zip(mags) {
            *s = a * m;
        }
        let x = stft.synthesise_padded(&spec, frames, &norm);
        let rebuilt = stft.analyse_padded(&x, frames);
        angles
            .par_iter_mut()
            .zip(rebuilt.par_iter().zip(previous.par_iter()))
            .for_each(|(a, (&r, &p))| {
                let v = r - p * beta;
                let n = v.norm();
                *a = if n > 1e-12 {
                    v / n
                } else {
                    Complex32::new(1.0, 0.0)
                };
            });
        previous = rebuilt;
        progress(i + 1, iters);
    }
    for ((s, &a), &m) in spec.iter_mut().zip(&angles).zip(mags) {
        *s = a * m;
    }
    let padded = stft.synthesise_padded(&spec, frames, &norm);
    stft.crop(&padded, frames)
}

/// A bin waiting in the heap, ordered by its log-magnitude.
#[derive(PartialEq)]
struct Loud {
    log_mag: f64,
    index: usize,
}

impl Eq for Loud {}

impl PartialOrd for Loud {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Loud {
    fn cmp(&self, other: &Self) -> Ordering {
        self.log_mag
            .total_cmp(&other.log_mag)
            .then(other.index.cmp(&self.index))
    }
}

/// PGHI phases as unit phasors in [`Stft`]'s convention (see the module docs).
pub fn pghi_phases(stft: &Stft, mags: &[f32], frames: usize, seed: u64) -> Vec<Complex32> {
    to_stft_convention(&pghi_centred(stft, mags, frames, seed), stft.bins())
}

/// PGHI phases in the centred-window convention.
fn pghi_centred(stft: &Stft, mags: &[f32], frames: usize, seed: u64) -> Vec<f64> {
    let bins = stft.bins();
    let (a, m_fft) = (stft.hop() as f64, stft.n_fft() as f64);
    let gamma = HANN_GAMMA * m_fft * m_fft;
    let log: Vec<f64> = mags.iter().map(|&v| (v.max(1e-12) as f64).ln()).collect();
    let at = |t: usize, m: usize| log[t * bins + m];
    // Centred differences (one-sided at the edges), in index units.
    let d_time = |t: usize, m: usize| -> f64 {
        let (t0, t1) = (t.saturating_sub(1), (t + 1).min(frames - 1));
        if t1 == t0 {
            0.0
        } else {
            (at(t1, m) - at(t0, m)) / (t1 - t0) as f64
        }
    };
    let d_freq = |t: usize, m: usize| -> f64 {
        let (m0, m1) = (m.saturating_sub(1), (m + 1).min(bins - 1));
        (at(t, m1) - at(t, m0)) / (m1 - m0) as f64
    };
    // Phase advance per frame (time direction) and per bin (frequency direction).
    let two_pi = 2.0 * std::f64::consts::PI;
    let mut step_time = vec![0.0f64; frames * bins];
    let mut step_freq = vec![0.0f64; frames * bins];
    for t in 0..frames {
        for m in 0..bins {
            let i = t * bins + m;
            step_time[i] = a * m_fft / gamma * d_freq(t, m) + two_pi * a * m as f64 / m_fft;
            step_freq[i] = -gamma / (a * m_fft) * d_time(t, m);
        }
    }
    let max = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let threshold = max - PGHI_TOLERANCE;
    let mut phase = vec![0.0f64; frames * bins];
    let mut done: Vec<bool> = log.iter().map(|&l| l < threshold).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (p, _) in phase.iter_mut().zip(&done).filter(|(_, &d)| d) {
        *p = rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
    }
    // Seeds in order of loudness; each integrates its connected region of loud bins.
    let mut order: Vec<usize> = (0..log.len()).filter(|&i| !done[i]).collect();
    order.sort_by(|&x, &y| log[y].total_cmp(&log[x]));
    let mut heap = BinaryHeap::new();
    for seed_index in order {
        if done[seed_index] {
            continue;
        }
        done[seed_index] = true;
        heap.push(Loud {
            log_mag: log[seed_index],
            index: seed_index,
        });
        while let Some(Loud { index, .. }) = heap.pop() {
            let (t, m) = (index / bins, index % bins);
            let here = phase[index];
            let mut neighbours = [None; 4];
            if t + 1 < frames {
                let j = index + bins;
                neighbours[0] = Some((j, here + 0.5 * (step_time[index] + step_time[j])));
            }
            if t > 0 {
                let j = index - bins;
                neighbours[1] = Some((j, here - 0.5 * (step_time[index] + step_time[j])));
            }
            if m + 1 < bins {
                let j = index + 1;
                neighbours[2] = Some((j, here + 0.5 * (step_freq[index] + step_freq[j])));
            }
            if m > 0 {
                let j = index - 1;
                neighbours[3] = Some((j, here - 0.5 * (step_freq[index] + step_freq[j])));
            }
            for (j, value) in neighbours.into_iter().flatten() {
                if !done[j] {
                    done[j] = true;
                    phase[j] = value;
                    heap.push(Loud {
                        log_mag: log[j],
                        index: j,
                    });
                }
            }
        }
    }
    phase
}

/// Centred-window phases -> [`Stft`]'s convention, as unit phasors.
fn to_stft_convention(phase: &[f64], bins: usize) -> Vec<Complex32> {
    phase
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            // Centred window -> frames starting at the window's first sample.
            let sign = if (i % bins).is_multiple_of(2) {
                0.0
            } else {
                std::f64::consts::PI
            };
            Complex32::from_polar(1.0, (p + sign) as f32)
        })
        .collect()
}

/// Peaks in this lowest share of the band get peak-locked phases (5 kHz at 32 kHz).
const PEAK_BAND_SHARE: f64 = 0.3125;
/// Peaks this far below their frame's loudest peak are left to PGHI (dB).
const PEAK_RANGE_DB: f32 = 50.0;
/// A peak continues a peak of the previous frame at most this far away (bins).
const PEAK_CONTINUE_BINS: f64 = 1.0;

/// PGHI phases, with each spectral peak that continues a peak of the previous frame given
/// the phase of a sinusoid at the peak's frequency (the dB parabola through the peak bin
/// and its neighbours), advanced from the previous frame's peak by the mean of the two
/// frequencies; every bin of the peak, down to the troughs on both sides, gets that phase
/// (a phase-locked vocoder). New peaks (onsets) keep PGHI's phase.
///
/// Why: PGHI's time derivative comes from the log-magnitude's slope across bins, which a
/// Hann window and 15.6 Hz bins make coarse for low partials, and Griffin-Lim at 3.2x
/// redundancy wanders: a bass stem rebuilt from its exact magnitudes by 32 iterations from
/// random phases came back 20 cents off the semitone grid on average (1 cent before), by
/// this start alone 1.4. A sinusoid's phase advance per hop is exact once its frequency is
/// known.
pub fn peak_locked_phases(stft: &Stft, mags: &[f32], frames: usize, seed: u64) -> Vec<Complex32> {
    let bins = stft.bins();
    let mut phase = pghi_centred(stft, mags, frames, seed);
    let (hop, n_fft) = (stft.hop() as f64, stft.n_fft() as f64);
    let top_bin = ((PEAK_BAND_SHARE * bins as f64) as usize).clamp(2, bins - 2);
    let two_pi = 2.0 * std::f64::consts::PI;
    // (interpolated bin, centred phase) of the previous frame's peaks, ascending.
    let mut previous: Vec<(f64, f64)> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut db = vec![0.0f32; bins];
    let mut peaks = Vec::new();
    for t in 0..frames {
        let row = &mags[t * bins..(t + 1) * bins];
        for (d, &m) in db.iter_mut().zip(row) {
            *d = 20.0 * m.max(1e-12).log10();
        }
        find_peaks(&db, top_bin, PEAK_RANGE_DB, &mut peaks);
        current.clear();
        for peak in &peaks {
            let x = peak.bin;
            let nearest = previous
                .iter()
                .min_by(|p, q| (p.0 - x).abs().total_cmp(&(q.0 - x).abs()))
                .filter(|p| (p.0 - x).abs() <= PEAK_CONTINUE_BINS);
            let centre = match nearest {
                Some(&(px, pphase)) => pphase + two_pi * 0.5 * (px + x) * hop / n_fft,
                None => phase[t * bins + peak.top],
            };
            phase[t * bins + peak.lo..=t * bins + peak.hi].fill(centre);
            current.push((x, centre));
        }
        std::mem::swap(&mut previous, &mut current);
    }
    to_stft_convention(&phase, bins)
}
