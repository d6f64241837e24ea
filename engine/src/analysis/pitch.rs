//! The pitch of one held note: the MIDI note whose first harmonics carry the most energy, a
//! harmonic sum over a finely zero-padded spectrum. Made for the tokenizer's pitch check
//! (synthetic harmonic notes, one at a time), not for chords or real recordings.
//!
//! Why a harmonic sum and not the spectral peak: a low bass note's fundamental is weak next to
//! its harmonics (and E1 and F1 are 2.4 Hz apart), while its first harmonics together name it.

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
