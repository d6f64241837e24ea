//! Spectral peaks of one dB frame, and where a frequency sits on the semitone grid: what the
//! codec's retuning, its peak-locked phase and the tuning measure all read.

/// One local maximum of a dB spectrum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// The maximum's position in bins, refined by the parabola through it and its neighbours.
    pub bin: f64,
    /// The bin of the maximum itself.
    pub top: usize,
    /// The bins from the trough below it to the trough above it (inclusive).
    pub lo: usize,
    pub hi: usize,
}

/// Offset (in bins, -0.5..0.5) of the vertex of the parabola through `a`, `b`, `c` (the
/// values left of, at and right of a maximum) from the middle one.
pub fn parabola_offset(a: f64, b: f64, c: f64) -> f64 {
    let den = a - 2.0 * b + c;
    if den.abs() > 1e-9 {
        0.5 * (a - c) / den
    } else {
        0.0
    }
}

/// Cents of `hz` from the nearest semitone of A = 440 Hz, in -50..50.
pub fn grid_offset_cents(hz: f64) -> f64 {
    let c = 1200.0 * (hz / 440.0).log2();
    (c + 50.0).rem_euclid(100.0) - 50.0
}

/// The peaks of `db` whose maximum lies in bins `1..end` and within `range_db` of the loudest
/// bin there, ascending, written into `out` (cleared first). Peaks do not overlap: the next
/// search starts above the previous peak's upper trough.
pub fn find_peaks(db: &[f32], end: usize, range_db: f32, out: &mut Vec<Peak>) {
    out.clear();
    let end = end.min(db.len().saturating_sub(1));
    if end < 2 {
        return;
    }
    let loudest = db[1..end].iter().copied().fold(f32::MIN, f32::max);
    let mut k = 1;
    while k < end {
        let (a, b, c) = (db[k - 1], db[k], db[k + 1]);
        if !(b > a && b >= c && b > loudest - range_db) {
            k += 1;
            continue;
        }
        let (mut lo, mut hi) = (k, k);
        while lo > 1 && db[lo - 1] < db[lo] {
            lo -= 1;
        }
        while hi + 2 < db.len() && db[hi + 1] < db[hi] {
            hi += 1;
        }
        out.push(Peak {
            bin: k as f64 + parabola_offset(a as f64, b as f64, c as f64),
            top: k,
            lo,
            hi,
        });
        k = hi + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_are_found_with_their_regions_and_quiet_ones_are_left_out() {
        let db = [
            0.0, 10.0, 20.0, 12.0, 5.0, 8.0, 9.0, 3.0, -40.0, -35.0, -45.0, -50.0,
        ];
        let mut peaks = Vec::new();
        find_peaks(&db, db.len(), 30.0, &mut peaks);
        assert_eq!(peaks.len(), 2, "{peaks:?}");
        assert_eq!((peaks[0].top, peaks[0].lo, peaks[0].hi), (2, 1, 4));
        assert!(peaks[0].bin > 2.0 && peaks[0].bin < 2.5, "{}", peaks[0].bin);
        assert_eq!((peaks[1].top, peaks[1].lo, peaks[1].hi), (6, 4, 8));
        // The peak at bin 9 is 55 dB below the loudest.
        find_peaks(&db, db.len(), 60.0, &mut peaks);
        assert_eq!(peaks.len(), 3);
        assert!((grid_offset_cents(440.0 * 2f64.powf(0.3 / 12.0)) - 30.0).abs() < 1e-9);
        assert!((grid_offset_cents(440.0 * 2f64.powf(-0.7 / 12.0)) - 30.0).abs() < 1e-9);
    }
}
