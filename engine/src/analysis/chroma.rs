//! STFT chroma as librosa 0.11's `feature.chroma_stft` with its defaults: tuning estimated
//! from spectral peaks (`estimate_tuning`), Ellis' Gaussian chroma filterbank centred on
//! octave 5 (`filters.chroma`), then each frame scaled to a maximum of 1.

use super::spectrum::{median, Frames, N_FFT};

/// Pitch classes per octave.
pub const N_CHROMA: usize = 12;

/// Tuning offset in fractions of a semitone (resolution 0.01, in [-0.5, 0.5)), as librosa's
/// `estimate_tuning(S=power)`: parabolically interpolated peaks between 150 Hz and 4 kHz that
/// exceed a tenth of their frame's maximum, the louder half of them, and the mode of their
/// deviation from equal temperament (A4 = 440 Hz). 0 when there are no peaks.
pub fn estimate_tuning(power: &Frames, sample_rate: u32) -> f64 {
    pitch_tuning(&tuning_peaks(power, sample_rate))
}

/// The tuning of `power` as [`estimate_tuning`], or `None` when its peaks do not agree on
/// one: fewer than [`TUNING_MIN_PEAKS`], or under [`TUNING_CONFIDENCE`] of them within
/// [`TUNING_AGREEMENT`] of the estimate. Why: the mode of a histogram always names some
/// tuning, and a context without steady pitches (drums, noise) names a random one.
pub fn confident_tuning(power: &Frames, sample_rate: u32) -> Option<f64> {
    let peaks = tuning_peaks(power, sample_rate);
    if peaks.len() < TUNING_MIN_PEAKS {
        return None;
    }
    let mode = pitch_tuning(&peaks);
    if tuning_agreement(&peaks, mode) < TUNING_CONFIDENCE {
        return None;
    }
    // The mode is a 0.01-semitone bin's left edge; the mean deviation of the peaks that
    // agree with it is finer.
    // The result is wrapped back into a half semitone (a mode at the edge, +0.45, refined
    // past it reads -0.55 otherwise: the same grid, but the sidecar would say -55 cents).
    let near: Vec<f64> = peaks
        .iter()
        .map(|&f| grid_deviation(f, mode))
        .filter(|d| d.abs() <= TUNING_AGREEMENT)
        .collect();
    let refined = mode + near.iter().sum::<f64>() / near.len() as f64;
    Some(refined - refined.round())
}

/// How far `freq` (Hz) lies from the nearest note of the equal-tempered grid at `tuning`,
/// in semitones, within a half.
fn grid_deviation(freq: f64, tuning: f64) -> f64 {
    let semis = N_CHROMA as f64 * (freq / 440.0).log2() - tuning;
    semis - semis.round()
}

/// The fewest spectral peaks [`confident_tuning`] names a tuning from.
pub const TUNING_MIN_PEAKS: usize = 50;
/// How close (in semitones) a peak's deviation must be to the estimate to agree with it.
pub const TUNING_AGREEMENT: f64 = 0.15;
/// The share of peaks that must agree; peaks spread evenly agree 0.30 of the time.
pub const TUNING_CONFIDENCE: f64 = 0.5;

/// The share of `freqs` whose deviation from the equal-tempered grid at `tuning` (in
/// semitones, wrapped to a half semitone) is within [`TUNING_AGREEMENT`].
pub fn tuning_agreement(freqs: &[f64], tuning: f64) -> f64 {
    if freqs.is_empty() {
        return 0.0;
    }
    let near = freqs
        .iter()
        .filter(|&&f| grid_deviation(f, tuning).abs() <= TUNING_AGREEMENT)
        .count();
    near as f64 / freqs.len() as f64
}

/// The peaks librosa's `estimate_tuning` reads (see there), in Hz.
fn tuning_peaks(power: &Frames, sample_rate: u32) -> Vec<f64> {
    let bins = power.rows;
    let (fmin, fmax) = (150.0, 4000.0f64.min(sample_rate as f64 / 2.0));
    let mut pitches = Vec::new();
    let mut mags = Vec::new();
    for t in 0..power.frames {
        let s = power.frame(t);
        let peak = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let floor = 0.1 * peak;
        let gated = |f: usize| if s[f] > floor { s[f] } else { 0.0 };
        for f in 1..bins {
            let freq = f as f64 * sample_rate as f64 / N_FFT as f64;
            if !(fmin..fmax).contains(&freq) {
                continue;
            }
            let is_max = if f == bins - 1 {
                gated(f) > gated(f - 1)
            } else {
                gated(f) > gated(f - 1) && gated(f) >= gated(f + 1)
            };
            if !is_max {
                continue;
            }
            let (shift, slope) = if f == bins - 1 {
                (0.0, s[f] - s[f - 1])
            } else {
                let a = s[f + 1] + s[f - 1] - 2.0 * s[f];
                let b = (s[f + 1] - s[f - 1]) / 2.0;
                (if b.abs() >= a.abs() { 0.0 } else { -b / a }, b)
            };
            // librosa stores pitches in a float32 array.
            let pitch = ((f as f64 + shift) * sample_rate as f64 / N_FFT as f64) as f32 as f64;
            if pitch > 0.0 {
                pitches.push(pitch);
                mags.push(s[f] + 0.5 * slope * shift);
            }
        }
    }
    let Some(threshold) = median(&mags) else {
        return Vec::new();
    };
    pitches
        .iter()
        .zip(&mags)
        .filter(|&(_, &m)| m >= threshold)
        .map(|(&p, _)| p)
        .collect()
}

/// The most common deviation of `freqs` from equal temperament, on numpy's histogram of 100
/// bins over [-0.5, 0.5] (the bin's left edge is returned).
fn pitch_tuning(freqs: &[f64]) -> f64 {
    const BINS: usize = 100;
    let edge = |i: usize| {
        if i == BINS {
            0.5
        } else {
            i as f64 * (1.0 / BINS as f64) - 0.5
        }
    };
    let mut counts = [0usize; BINS];
    for &f in freqs.iter().filter(|&&f| f > 0.0) {
        let octs = (f / (440.0 / 16.0)).log2();
        let mut r = (N_CHROMA as f64 * octs).rem_euclid(1.0);
        if r >= 0.5 {
            r -= 1.0;
        }
        if !(-0.5..=0.5).contains(&r) {
            continue;
        }
        // numpy's uniform-bin search with its edge corrections.
        let mut i = (((r + 0.5) / 1.0) * BINS as f64) as usize;
        if i == BINS {
            i -= 1;
        }
        if r < edge(i) {
            i = i.saturating_sub(1);
        }
        if i + 1 < BINS && r >= edge(i + 1) {
            i += 1;
        }
        counts[i] += 1;
    }
    if counts.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let best = (0..BINS).fold(0, |b, i| if counts[i] > counts[b] { i } else { b });
    edge(best)
}

/// librosa's `filters.chroma(sr, n_fft, tuning)`: `[12][n_fft / 2 + 1]` row-major, row 0 = C.
pub fn chroma_filterbank(sample_rate: u32, n_fft: usize, tuning: f64) -> Vec<f64> {
    let n = N_CHROMA as f64;
    let a440 = 440.0 * 2f64.powf(tuning / n);
    let mut frqbins: Vec<f64> = (1..n_fft)
        .map(|k| {
            let f = k as f64 * sample_rate as f64 / n_fft as f64;
            n * (f / (a440 / 16.0)).log2()
        })
        .collect();
    // The 0 Hz bin: 1.5 octaves below bin 1.
    frqbins.insert(0, frqbins[0] - 1.5 * n);
    let width: Vec<f64> = (0..n_fft)
        .map(|k| {
            if k + 1 < n_fft {
                (frqbins[k + 1] - frqbins[k]).max(1.0)
            } else {
                1.0
            }
        })
        .collect();
    let half = (n / 2.0).round();
    let mut wts = vec![0.0; N_CHROMA * n_fft];
    for k in 0..n_fft {
        for c in 0..N_CHROMA {
            let d = (frqbins[k] - c as f64 + half + 10.0 * n).rem_euclid(n) - half;
            wts[c * n_fft + k] = (-0.5 * (2.0 * d / width[k]).powi(2)).exp();
        }
        let norm = (0..N_CHROMA)
            .map(|c| wts[c * n_fft + k].powi(2))
            .sum::<f64>()
            .sqrt();
        // Octave weighting: Gaussian in octaves around octave 5, two octaves wide.
        let oct = (-0.5 * ((frqbins[k] / n - 5.0) / 2.0).powi(2)).exp();
        for c in 0..N_CHROMA {
            let w = &mut wts[c * n_fft + k];
            if norm > f64::MIN_POSITIVE {
                *w /= norm;
            }
            *w *= oct;
        }
    }
    // Row 0 = C (the bank above starts at A), keeping the non-aliased bins.
    let bins = n_fft / 2 + 1;
    let mut out = vec![0.0; N_CHROMA * bins];
    for c in 0..N_CHROMA {
        let src = (c + 3) % N_CHROMA;
        out[c * bins..(c + 1) * bins].copy_from_slice(&wts[src * n_fft..src * n_fft + bins]);
    }
    out
}

/// Chroma energy per frame before normalisation, `[frames][12]`: the power spectrogram
/// through the chroma filterbank tuned by `tuning`.
pub fn raw_chroma(power: &Frames, sample_rate: u32, tuning: f64) -> Frames {
    let fb = chroma_filterbank(sample_rate, N_FFT, tuning);
    let bins = power.rows;
    let mut out = Frames::zeros(power.frames, N_CHROMA);
    for t in 0..power.frames {
        let p = power.frame(t);
        for (c, o) in out.frame_mut(t).iter_mut().enumerate() {
            *o = fb[c * bins..(c + 1) * bins]
                .iter()
                .zip(p)
                .map(|(w, v)| w * v)
                .sum();
        }
    }
    out
}

/// Each frame divided by its maximum (silent frames stay zero), librosa's `norm=np.inf`.
pub fn normalize_frames(raw: &Frames) -> Frames {
    let mut out = raw.clone();
    for t in 0..out.frames {
        let f = out.frame_mut(t);
        let m = f.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if m >= f32::MIN_POSITIVE as f64 {
            f.iter_mut().for_each(|v| *v /= m);
        }
    }
    out
}

/// `librosa.feature.chroma_stft(y, sr)` from the power spectrogram: `(chroma, tuning)`.
pub fn chroma_stft(power: &Frames, sample_rate: u32) -> (Frames, f64) {
    let tuning = estimate_tuning(power, sample_rate);
    (
        normalize_frames(&raw_chroma(power, sample_rate, tuning)),
        tuning,
    )
}

#[cfg(test)]
mod tests {
    use super::super::spectrum::power_spectrogram;
    use super::*;

    const RATE: u32 = 22_050;

    /// 4 s of a triad's notes one after another (with two harmonics), `cents` from 440 Hz's
    /// grid.
    fn tuned_notes(cents: f64) -> Vec<f32> {
        let per_note = RATE as usize;
        [57, 61, 64, 69]
            .iter()
            .flat_map(|&midi| {
                let hz = 440.0 * 2f64.powf((midi as f64 - 69.0) / 12.0 + cents / 1200.0);
                (0..per_note).map(move |i| {
                    let t = i as f64 / RATE as f64;
                    (1..=3)
                        .map(|h| (std::f64::consts::TAU * hz * h as f64 * t).sin() / h as f64)
                        .sum::<f64>() as f32
                        * 0.2
                })
            })
            .collect()
    }

    #[test]
    fn steady_notes_30_cents_sharp_name_their_tuning() {
        let power = power_spectrogram(&tuned_notes(30.0));
        let tuning = confident_tuning(&power, RATE).expect("steady notes agree");
        // Parabolic peaks on 10.8 Hz bins read a few cents off.
        assert!((tuning - 0.3).abs() <= 0.08, "{tuning}");
        let in_tune = confident_tuning(&power_spectrogram(&tuned_notes(0.0)), RATE).unwrap();
        assert!(in_tune.abs() <= 0.08, "{in_tune}");
    }

    #[test]
    fn a_tuning_near_half_a_semitone_stays_within_a_half() {
        // Notes 51 cents sharp and 50 flat read 0.51 / 0.53 before the wrap.
        for cents in [51.0, -50.0] {
            let power = power_spectrogram(&tuned_notes(cents));
            let tuning = confident_tuning(&power, RATE).expect("steady notes agree");
            assert!(tuning.abs() <= 0.5, "{cents}: {tuning}");
            // +0.49 and -0.51 are the same grid: compare on the circle.
            let off = tuning - cents / 100.0;
            assert!((off - off.round()).abs() <= 0.08, "{cents}: {tuning}");
        }
    }

    #[test]
    fn noise_and_silence_name_no_tuning() {
        let mut state = 12345u64;
        let noise: Vec<f32> = (0..4 * RATE as usize)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
            })
            .collect();
        let power = power_spectrogram(&noise);
        let tuning = estimate_tuning(&power, RATE);
        assert_eq!(confident_tuning(&power, RATE), None, "noise: {tuning}");
        let silence = power_spectrogram(&vec![0.0; 2 * RATE as usize]);
        assert_eq!(confident_tuning(&silence, RATE), None);
    }
}
