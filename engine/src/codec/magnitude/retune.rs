//! Retuning decoded log-magnitude frames: each low spectral peak moved onto the
//! equal-tempered grid of the context's tuning (A4 = 440 Hz when unknown) before phase
//! reconstruction.
//!
//! Why: a codeword is an average of many training frames, so a decoded partial sits where
//! the codebook happens to put it, not on a semitone, and below a few hundred Hz a fraction
//! of a 15.6 Hz bin is a large share of a semitone. Measured as the mean distance (cents)
//! of a stem's strongest partial below 300 Hz from the grid (uniform pitches give 25): the
//! real bass of the shipped example 1.2, its tokenizer round trip 12.3, generated bass
//! stems 22-25, which reads as out of tune and as the wrong key (a G heard between F# and
//! G). With each peak retuned and peak-locked phases ([`super::phase::PhaseStart::Peaks`])
//! the round trip measures 1.9.
//!
//! A peak (a dB maximum within [`PEAK_RANGE_DB`] of the frame's loudest below
//! [`SNAP_MAX_HZ`]) is located by the parabola through its bin and neighbours; the bins from
//! the trough below it to the trough above it are resampled along frequency by the shift
//! that puts the peak on its nearest semitone. Above [`SNAP_MAX_HZ`] a bin is a small
//! fraction of a semitone and nothing moves. The grid is the context's tuning when the
//! generator could measure one (`analysis::chroma::confident_tuning`), else A = 440 Hz: a
//! stem snapped to 440 Hz over a context tuned 30 cents sharp would clash with it.

use crate::analysis::peaks::{find_peaks, grid_offset_cents};

/// Highest peak moved onto the grid.
pub const SNAP_MAX_HZ: f64 = 700.0;
/// Lowest peak moved (below it the bins hold no resolvable partial).
const MIN_HZ: f64 = 35.0;
/// Peaks this far below the frame's loudest (below [`SNAP_MAX_HZ`]) stay where they are.
const PEAK_RANGE_DB: f32 = 30.0;

/// Retunes `[frames][bins]` dB frames in place (`bin_hz`: the bin spacing) onto the grid
/// `tuning` semitones (within a half) from A4 = 440 Hz.
pub fn retune(db: &mut [f32], bins: usize, bin_hz: f64, tuning: f64) {
    let reference = 2f64.powf(-tuning / 12.0);
    if bins < 4 {
        return;
    }
    let end = ((SNAP_MAX_HZ / bin_hz).ceil() as usize).min(bins - 2);
    let mut out = vec![0.0f32; bins];
    let mut peaks = Vec::new();
    for frame in db.chunks_exact_mut(bins) {
        out.copy_from_slice(frame);
        find_peaks(frame, end, PEAK_RANGE_DB, &mut peaks);
        for peak in peaks.iter().filter(|p| p.bin * bin_hz >= MIN_HZ) {
            let hz = peak.bin * bin_hz;
            let offset = grid_offset_cents(hz * reference);
            let shift = hz * (2f64.powf(-offset / 1200.0) - 1.0) / bin_hz;
            for (j, o) in out.iter_mut().enumerate().take(peak.hi + 1).skip(peak.lo) {
                let src = (j as f64 - shift).clamp(0.0, (bins - 1) as f64);
                let i = (src.floor() as usize).min(bins - 2);
                let t = (src - i as f64) as f32;
                *o = frame[i] * (1.0 - t) + frame[i + 1] * t;
            }
        }
        frame.copy_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dB spectrum (within 6 bins of the partial, -100 dB elsewhere) of a 2048-point
    /// Hann-windowed sinusoid at `hz`, 32 kHz.
    fn frame_with_partial(hz: f64, bins: usize, bin_hz: f64) -> Vec<f32> {
        let n = 2048;
        (0..bins)
            .map(|k| {
                if (k as f64 - hz / bin_hz).abs() > 6.0 {
                    return -100.0;
                }
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for i in 0..n {
                    let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos();
                    let x = w * (std::f64::consts::TAU * hz * i as f64 / 32000.0).cos();
                    let a = std::f64::consts::TAU * (k * i) as f64 / n as f64;
                    re += x * a.cos();
                    im -= x * a.sin();
                }
                (20.0 * re.hypot(im).max(1e-5).log10()) as f32
            })
            .collect()
    }

    fn peak_hz(frame: &[f32], bin_hz: f64) -> f64 {
        let k = (1..frame.len() - 1)
            .max_by(|&a, &b| frame[a].total_cmp(&frame[b]))
            .unwrap();
        let (a, b, d) = (frame[k - 1] as f64, frame[k] as f64, frame[k + 1] as f64);
        (k as f64 + 0.5 * (a - d) / (a - 2.0 * b + d)) * bin_hz
    }

    #[test]
    fn a_detuned_low_partial_moves_onto_its_semitone_and_a_high_one_stays() {
        let (bins, bin_hz) = (1025, 15.625);
        // G2 (98.0 Hz) 40 cents flat, in the first frame; 1.5 kHz in the second.
        let low = 97.999 * 2f64.powf(-40.0 / 1200.0);
        let mut db = frame_with_partial(low, bins, bin_hz);
        db.extend(frame_with_partial(1500.0, bins, bin_hz));
        let before = peak_hz(&db[..bins], bin_hz);
        assert!(grid_offset_cents(before).abs() > 25.0, "{before}");
        retune(&mut db, bins, bin_hz, 0.0);
        let after = peak_hz(&db[..bins], bin_hz);
        assert!(grid_offset_cents(after).abs() < 8.0, "{before} -> {after}");
        assert!((after - 98.0).abs() < 1.0, "{after}");
        let high = frame_with_partial(1500.0, bins, bin_hz);
        assert!(high.iter().any(|&v| v > 0.0));
        assert_eq!(db[bins..], high[..]);
    }

    #[test]
    fn a_partial_moves_onto_the_grid_of_the_given_tuning() {
        let (bins, bin_hz) = (1025, 15.625);
        // A context tuned 30 cents sharp (0.3 semitone); a partial 10 cents above A2 there
        // moves to A2 of that grid, not 440 Hz's.
        let a2 = 110.0 * 2f64.powf(30.0 / 1200.0);
        let mut db = frame_with_partial(a2 * 2f64.powf(10.0 / 1200.0), bins, bin_hz);
        retune(&mut db, bins, bin_hz, 0.3);
        let after = peak_hz(&db, bin_hz);
        let cents = 1200.0 * (after / a2).log2();
        assert!(
            cents.abs() < 8.0,
            "{after} Hz, {cents} cents from the tuned A2"
        );
        assert!(
            grid_offset_cents(after) > 20.0,
            "{after} Hz is on 440 Hz's grid"
        );
    }

    #[test]
    fn silence_and_tiny_frames_are_left_alone() {
        let mut db = vec![-100.0f32; 2 * 1025];
        retune(&mut db, 1025, 15.625, 0.0);
        assert!(db.iter().all(|&v| v == -100.0));
        let mut tiny = vec![0.0f32, 1.0, 0.0];
        retune(&mut tiny, 3, 15.625, 0.0);
        assert_eq!(tiny, [0.0, 1.0, 0.0]);
    }
}
