//! The pitch of one held note: the MIDI note whose first harmonics carry the most energy, a
//! harmonic sum over a finely zero-padded spectrum. Made for the tokenizer's pitch check
//! (synthetic harmonic notes, one at a time), not for chords or real recordings. Also how far
//! a whole stem plays from the semitone grid ([`tuning_cents`]), which any stem can be asked.
//!
//! Why a harmonic sum and not the spectral peak: a low bass note's fundamental is weak next to
//! its harmonics (and E1 and F1 are 2.4 Hz apart), while its first harmonics together name it.

use super::peaks::{grid_offset_cents, parabola_offset};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// Harmonics summed per candidate note.
const HARMONICS: usize = 7;

/// The frequency of MIDI note `note` (A4 = 69 = 440 Hz).
pub fn note_hz(note: u8) -> f64 {
    440.0 * 2f64.powf((note as f64 - 69.0) / 12.0)
}

/// The note in `lowest..=highest` whose harmonics 1-7 (weighted 1/sqrt(k)) carry the most
/// spectral magnitude in `samples`; `None` for silence or an empty range.
pub fn note_pitch(samples: &[f32], sample_rate: u32, lowest: u8, highest: u8) -> Option<u8> {
    if samples.is_empty() || lowest > highest || samples.iter().all(|&s| s == 0.0) {
        return None;
    }
    // Bins of at most 0.5 Hz, so neighbouring low notes land on different bins.
    let n = (2 * sample_rate as usize)
        .max(samples.len())
        .next_power_of_two();
    let len = samples.len();
    let mut buf: Vec<Complex<f64>> = vec![Complex::default(); n];
    for (i, (&s, b)) in samples.iter().zip(&mut buf).enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / len as f64).cos();
        b.re = s as f64 * hann;
    }
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let magnitude = |hz: f64| {
        let bin = (hz * n as f64 / sample_rate as f64).round() as usize;
        buf.get(bin)
            .filter(|_| bin < n / 2)
            .map_or(0.0, |c| c.norm())
    };
    (lowest..=highest)
        .map(|note| {
            let f0 = note_hz(note);
            let score: f64 = (1..=HARMONICS)
                .map(|k| magnitude(f0 * k as f64) / (k as f64).sqrt())
                .sum();
            (note, score)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(note, _)| note)
}

/// A plucked harmonic note, the pitch check's test signal: partials 1/k up to 4 kHz (all a
/// tokenizer's low band), a 5 ms attack and an exponential decay, peak about 0.3 x 1.8.
pub fn pluck(note: u8, seconds: f64, sample_rate: u32) -> Vec<f32> {
    let f0 = note_hz(note);
    (0..(seconds * sample_rate as f64) as usize)
        .map(|i| {
            let t = i as f64 / sample_rate as f64;
            let partials: f64 = (1..20)
                .filter(|&k| f0 * k as f64 <= 4000.0)
                .map(|k| (2.0 * std::f64::consts::PI * f0 * k as f64 * t).sin() / k as f64)
                .sum();
            let envelope = (-3.0 * t).exp() * (t / 0.005).min(1.0);
            (0.3 * envelope * partials) as f32
        })
        .collect()
}

/// "E1", "C#3": a MIDI note's name (middle C = C4 = 60).
pub fn note_name(note: u8) -> String {
    const NAMES: [&str; 12] = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ];
    format!("{}{}", NAMES[note as usize % 12], note as i32 / 12 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_from_e1_to_c5_is_named_right() {
        for note in 28..=72 {
            let samples = pluck(note, 0.35, 32_000);
            assert_eq!(
                note_pitch(&samples, 32_000, 24, 84),
                Some(note),
                "{}",
                note_name(note)
            );
        }
        assert_eq!(note_pitch(&[0.0; 1000], 32_000, 24, 84), None);
        assert_eq!(note_name(28), "E1");
        assert_eq!(note_name(61), "C#4");
    }
}

/// Stretches [`tuning_cents`] reads, seconds (hop: half of it).
const TUNING_STRETCH_SECONDS: f64 = 0.4;
/// Partials [`tuning_cents`] looks at, Hz.
const TUNING_BAND_HZ: (f64, f64) = (40.0, 1000.0);
/// Stretches whose strongest partial is this far below the stem's strongest (dB) are skipped.
const TUNING_RANGE_DB: f64 = 26.0;

/// How far a stem plays from the 440 Hz semitone grid: the mean distance in cents (0..50) of
/// each 0.4 s stretch's strongest partial between 40 Hz and 1 kHz from its nearest semitone,
/// over the stretches within 26 dB of the loudest; `None` for silence. An in-tune stem
/// measures a few cents, pitches spread uniformly 25.
///
/// Why: a codec whose low partials land between semitones plays out of tune, which a key or
/// chroma measure reads only as a weaker key. The peak is the parabola through the dB of a
/// zero-padded (about 0.17 Hz per bin) Hann spectrum's maximum and its neighbours.
pub fn tuning_cents(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let len = (TUNING_STRETCH_SECONDS * sample_rate as f64) as usize;
    let hop = (len / 2).max(1);
    if len < 16 || samples.len() < len {
        return None;
    }
    let n = (8 * sample_rate as usize).next_power_of_two() / 2;
    let fft = FftPlanner::new().plan_fft_forward(n);
    let bin_hz = sample_rate as f64 / n as f64;
    let (lo, hi) = (
        (TUNING_BAND_HZ.0 / bin_hz) as usize,
        ((TUNING_BAND_HZ.1 / bin_hz) as usize).min(n / 2 - 1),
    );
    let mut buf: Vec<Complex<f64>> = vec![Complex::default(); n];
    let mut found: Vec<(f64, f64)> = Vec::new(); // (dB, cents off the grid)
    for start in (0..=samples.len() - len).step_by(hop) {
        buf.iter_mut().for_each(|b| *b = Complex::default());
        for (i, (&s, b)) in samples[start..start + len].iter().zip(&mut buf).enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / len as f64).cos();
            b.re = s as f64 * hann;
        }
        fft.process(&mut buf);
        let db = |k: usize| 20.0 * buf[k].norm().max(1e-12).log10();
        let Some(k) = (lo.max(1)..hi).max_by(|&a, &b| buf[a].norm().total_cmp(&buf[b].norm()))
        else {
            continue;
        };
        let (a, b, c) = (db(k - 1), db(k), db(k + 1));
        if b > -200.0 {
            let x = k as f64 + parabola_offset(a, b, c);
            found.push((b, grid_offset_cents(x * bin_hz).abs()));
        }
    }
    let loudest = found.iter().map(|f| f.0).fold(f64::NEG_INFINITY, f64::max);
    let kept: Vec<f64> = found
        .iter()
        .filter(|f| f.0 > loudest - TUNING_RANGE_DB)
        .map(|f| f.1)
        .collect();
    (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64)
}

#[cfg(test)]
mod tuning_tests {
    use super::*;

    fn tone(hz: f64, seconds: f64, rate: u32) -> Vec<f32> {
        (0..(seconds * rate as f64) as usize)
            .map(|i| {
                let t = i as f64 / rate as f64;
                (1..5)
                    .map(|h| (std::f64::consts::TAU * hz * h as f64 * t).sin() / h as f64)
                    .sum::<f64>() as f32
                    * 0.2
            })
            .collect()
    }

    #[test]
    fn an_in_tune_note_measures_near_zero_and_a_detuned_one_its_offset() {
        let rate = 22_050;
        let in_tune = tuning_cents(&tone(note_hz(43), 2.0, rate), rate).unwrap();
        assert!(in_tune < 2.0, "{in_tune}");
        let flat = tuning_cents(
            &tone(note_hz(43) * 2f64.powf(-30.0 / 1200.0), 2.0, rate),
            rate,
        )
        .unwrap();
        assert!((flat - 30.0).abs() < 3.0, "{flat}");
        assert_eq!(tuning_cents(&vec![0.0; 44_100], rate), None);
        assert_eq!(tuning_cents(&[0.1; 100], rate), None);
    }
}
