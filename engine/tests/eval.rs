//! engine::eval against librosa 0.11 and mir_eval 0.8: golden fixtures made by
//! `xtask/fixtures/make_eval_fixtures.py` (inputs as 16-bit FLAC, outputs in
//! `expected.json`), plus checks that the coherence metrics separate aligned from
//! misaligned stems. Run with `--nocapture` to see the measured agreement.

use serde_json::Value;
use std::path::PathBuf;
use stemgen::analysis::distance::{
    multi_resolution_stft_distance, multi_resolution_stft_distance_within, si_sdr,
};
use stemgen::analysis::{key, Analysis, Key, ANALYSIS_RATE};
use stemgen::audio::{read_audio, Audio};
use stemgen::eval::distribution::{
    classical_features, frechet_distance, kernel_audio_distance, median_pairwise_distance,
    mirdd_classical, ClassicalDistances,
};
use stemgen::eval::metrics::{beat_f_measure, onset_grid_share, tempo_agreement};
use stemgen::eval::Coherence;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Every fixture signal with its expectations and the Rust analysis of the same samples.
fn analysed() -> Vec<(String, Value, Analysis)> {
    let exp = expected();
    let signals = exp["signals"].as_object().unwrap().clone();
    signals
        .into_iter()
        .map(|(name, e)| {
            let audio = read_audio(&fixtures().join(e["file"].as_str().unwrap())).unwrap();
            assert_eq!(audio.sample_rate, ANALYSIS_RATE);
            let a = Analysis::of_samples(&audio.channels[0], audio.sample_rate);
            (name, e, a)
        })
        .collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 && vb == 0.0 {
        1.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// (correlation, max abs error, max |expected|) of an envelope.
fn envelope_agreement(ours: &[f64], theirs: &[f64]) -> (f64, f64, f64) {
    assert_eq!(ours.len(), theirs.len(), "envelope length");
    let peak = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(theirs)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    (correlation(ours, theirs), err, peak)
}

/// Half a unit of the fixture's 4th decimal, on top of the numeric tolerance.
const ROUNDING: f64 = 5e-5 + 1e-9;

#[test]
fn onset_strength_matches_librosa() {
    for (name, e, a) in analysed() {
        for (ours, key) in [
            (&a.onset_env, "onset_env_mean"),
            (&a.onset_env_median, "onset_env_median"),
        ] {
            let theirs = floats(&e[key]);
            let (corr, err, peak) = envelope_agreement(ours, &theirs);
            eprintln!("{name:22} {key:17} corr {corr:.7} max_err {err:.1e} (peak {peak:.3})");
            assert!(corr > 0.99999, "{name} {key}: correlation {corr}");
            assert!(
                err <= 1e-4 * peak + ROUNDING,
                "{name} {key}: max error {err}"
            );
        }
    }
}

#[test]
fn onset_detection_matches_librosa() {
    for (name, e, a) in analysed() {
        let theirs = ints(&e["onset_frames"]);
        eprintln!(
            "{name:22} onsets ours {:?}\n{:22} librosa   {:?}",
            a.onset_frames, "", theirs
        );
        // Peak picking is discrete: allow one frame either way, but no missed or extra onset.
        assert_eq!(a.onset_frames.len(), theirs.len(), "{name}: onset count");
        let exact = a
            .onset_frames
            .iter()
            .zip(&theirs)
            .filter(|(o, t)| o == t)
            .count();
        assert!(
            exact as f64 >= 0.9 * theirs.len() as f64,
            "{name}: {exact} exact onsets"
        );
        for (o, t) in a.onset_frames.iter().zip(&theirs) {
            assert!(o.abs_diff(*t) <= 1, "{name}: onset {o} vs {t}");
        }
    }
}

#[test]
fn tempo_and_beats_match_librosa() {
    for (name, e, a) in analysed() {
        let tempo = e["tempo"].as_f64().unwrap();
        let beat_tempo = e["beat_tempo"].as_f64().unwrap();
        let beats = ints(&e["beat_frames"]);
        let within_one = a
            .beat_frames
            .iter()
            .filter(|&&b| beats.iter().any(|&t| t.abs_diff(b) <= 1))
            .count();
        eprintln!(
            "{name:22} tempo {:.2} (librosa {tempo:.2}) beat tempo {:.2} ({beat_tempo:.2}) \
             beats {} ({}) within one frame {within_one}",
            a.tempo_bpm,
            a.beat_tempo_bpm,
            a.beat_frames.len(),
            beats.len()
        );
        // Within 2%, which is less than one autocorrelation lag step at these tempi: the
        // same lag as librosa.
        assert!((a.tempo_bpm - tempo).abs() <= 0.02 * tempo, "{name}: tempo");
        assert!(
            (a.beat_tempo_bpm - beat_tempo).abs() <= 0.02 * beat_tempo,
            "{name}: beat tempo"
        );
        assert!(
            a.beat_frames.len().abs_diff(beats.len()) <= 1,
            "{name}: beat count"
        );
        assert!(
            within_one as f64 >= 0.9 * beats.len() as f64,
            "{name}: {within_one} of {} beats within one frame",
            beats.len()
        );
    }
}

#[test]
fn tuning_chroma_and_key_match_librosa() {
    for (name, e, a) in analysed() {
        let tuning = e["tuning"].as_f64().unwrap();
        let chroma = floats(&e["chroma"]);
        assert_eq!(a.chroma.data.len(), chroma.len(), "{name}: chroma shape");
        let max_err = a
            .chroma
            .data
            .iter()
            .zip(&chroma)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        let mean_err = a
            .chroma
            .data
            .iter()
            .zip(&chroma)
            .map(|(x, y)| (x - y).abs())
            .sum::<f64>()
            / chroma.len() as f64;
        let scores = floats(&e["key_scores"]);
        let ours = key::key_scores(&a.chroma.mean_frame());
        let score_err = ours
            .iter()
            .zip(&scores)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        eprintln!(
            "{name:22} tuning {:+.2} (librosa {tuning:+.2}) chroma max_err {max_err:.2e} \
             mean_err {mean_err:.2e} key {} ({}) key-score err {score_err:.1e}",
            a.tuning, a.key, e["key"]
        );
        assert!((a.tuning - tuning).abs() <= 0.0100001, "{name}: tuning");
        assert!(max_err < 1e-3, "{name}: chroma max error {max_err}");
        assert!(mean_err < 1e-4, "{name}: chroma mean error {mean_err}");
        assert!(
            score_err < 1e-3,
            "{name}: key correlation error {score_err}"
        );
        assert_eq!(a.key.to_string(), e["key"].as_str().unwrap(), "{name}: key");
    }
}

#[test]
fn beat_f_measure_matches_mir_eval() {
    let exp = expected();
    for case in exp["mir_eval"]["beat_f_measure"].as_array().unwrap() {
        let (r, e) = (floats(&case["reference"]), floats(&case["estimate"]));
        let want = case["f_measure"].as_f64().unwrap();
        let got = beat_f_measure(&r, &e);
        eprintln!("{:24} f {got:.6} (mir_eval {want:.6})", case["name"]);
        assert!(
            (got - want).abs() < 1e-12,
            "{}: {got} vs {want}",
            case["name"]
        );
    }
}

#[test]
fn key_weighted_score_matches_mir_eval() {
    let exp = expected();
    let keys: Vec<Key> = exp["mir_eval"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| Key::parse(k.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(keys.len(), 24);
    for (i, row) in exp["mir_eval"]["key_weighted_score"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (j, want) in floats(row).into_iter().enumerate() {
            let got = key::weighted_score(keys[i], keys[j]);
            assert_eq!(got, want, "{} vs {}", keys[i], keys[j]);
        }
    }
    assert_eq!(Key::parse("Eb minor"), Key::parse("D# minor"));
}

/// Analysing at another rate goes through the engine's resampler: the 120 BPM clicks at
/// 32 kHz still give librosa's tempo and beats within a frame.
#[test]
fn resampled_input_keeps_tempo_and_beats() {
    let exp = expected();
    let e = &exp["signals"]["clicks_120"];
    let audio = read_audio(&fixtures().join(e["file"].as_str().unwrap())).unwrap();
    let a = Analysis::of(&audio.resampled(32_000).unwrap()).unwrap();
    let beats = ints(&e["beat_frames"]);
    let tempo = e["tempo"].as_f64().unwrap();
    assert!(
        (a.tempo_bpm - tempo).abs() <= 0.02 * tempo,
        "{}",
        a.tempo_bpm
    );
    let near = a
        .beat_frames
        .iter()
        .filter(|&&b| beats.iter().any(|&t| t.abs_diff(b) <= 1))
        .count();
    assert!(
        near as f64 >= 0.9 * beats.len() as f64,
        "{near} of {}",
        beats.len()
    );
}

// ---- Synthetic signals for the metric checks ----

const SR: u32 = ANALYSIS_RATE;

/// A click (decaying noise burst from a small LCG, so the test needs no data) at each time.
fn clicks(times: &[f64], secs: f64, decay: f64, seed: u32) -> Vec<f32> {
    let mut y = vec![0.0f32; (secs * SR as f64) as usize];
    let mut state = seed;
    for &t in times {
        let s = (t * SR as f64).round() as usize;
        for i in 0..(0.03 * SR as f64) as usize {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            if let Some(v) = y.get_mut(s + i) {
                *v += 0.5 * noise * (-(i as f64) / SR as f64 / decay).exp() as f32;
            }
        }
    }
    y
}

/// Short decaying tone bursts (a plucked-string stand-in for a generated stem).
fn plucks(times: &[f64], secs: f64, hz: f64) -> Vec<f32> {
    let mut y = vec![0.0f32; (secs * SR as f64) as usize];
    for &t in times {
        let s = (t * SR as f64).round() as usize;
        for i in 0..(0.2 * SR as f64) as usize {
            let x = i as f64 / SR as f64;
            let v = (2.0 * std::f64::consts::PI * hz * x).sin() * (-x / 0.05).exp();
            if let Some(o) = y.get_mut(s + i) {
                *o += (0.4 * v) as f32;
            }
        }
    }
    y
}

fn grid(start: f64, bpm: f64, secs: f64) -> Vec<f64> {
    let mut t = start;
    let mut out = Vec::new();
    while t < secs - 0.3 {
        out.push(t);
        t += 60.0 / bpm;
    }
    out
}

fn coherence(context: &[f32], stem: &[f32]) -> Coherence {
    let c = Audio::mono(SR, context.to_vec()).unwrap();
    let s = Audio::mono(SR, stem.to_vec()).unwrap();
    Coherence::measure(&c, &s).unwrap()
}

/// ARCHITECTURE §6: the share of stem onsets on the context's beat/half-beat grid separates an
/// aligned stem (near 1), one shifted by 120 ms (near 0) and one at a wrong tempo (between).
#[test]
fn onset_grid_share_separates_aligned_shifted_and_wrong_tempo() {
    let secs = 12.0;
    let beats = grid(0.3, 120.0, secs);
    let context = clicks(&beats, secs, 0.008, 1);
    let aligned = plucks(&beats, secs, 220.0);
    let shifted: Vec<f64> = beats.iter().map(|t| t + 0.12).collect();
    let shifted = plucks(&shifted, secs, 220.0);
    let wrong = plucks(&grid(0.3, 97.0, secs), secs, 220.0);
    let a = coherence(&context, &aligned);
    let s = coherence(&context, &shifted);
    let w = coherence(&context, &wrong);
    eprintln!("aligned {a:?}\nshifted {s:?}\nwrong   {w:?}");
    let (a, s, w) = (
        a.onset_grid_share.unwrap(),
        s.onset_grid_share.unwrap(),
        w.onset_grid_share.unwrap(),
    );
    assert!(a >= 0.9, "aligned {a}");
    assert!(s <= 0.1, "shifted {s}");
    assert!(w > s + 0.2 && w < a - 0.2, "wrong tempo {w}");
}

#[test]
fn tempo_agreement_allows_octave_errors_only() {
    assert!(tempo_agreement(120.0, 123.0));
    assert!(tempo_agreement(120.0, 240.0));
    assert!(tempo_agreement(120.0, 61.0));
    assert!(!tempo_agreement(120.0, 126.0));
    assert!(!tempo_agreement(120.0, 180.0));
    assert!(!tempo_agreement(0.0, 120.0));
}

#[test]
fn onset_grid_share_counts_half_beats_and_edges() {
    let beats = [1.0, 1.5, 2.0, 2.5];
    // On a beat, on a half beat, before the first beat (extrapolated), 100 ms off.
    let share = onset_grid_share(&[1.5, 1.76, 0.52, 2.1], &beats, 3.0).unwrap();
    assert!((share - 0.75).abs() < 1e-12, "{share}");
    assert_eq!(onset_grid_share(&[], &beats, 3.0), None);
    assert_eq!(onset_grid_share(&[1.0], &[1.0], 3.0), None);
}

#[test]
fn codec_metrics_order_reconstructions() {
    let x: Vec<f32> = (0..SR as usize)
        .map(|i| (0.3 * (i as f64 * 0.05).sin() + 0.2 * (i as f64 * 0.31).sin()) as f32)
        .collect();
    let mut state = 7u32;
    let noisy = |amp: f32, state: &mut u32| -> Vec<f32> {
        x.iter()
            .map(|&v| {
                *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                v + amp * ((*state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    };
    let slight = noisy(0.01, &mut state);
    let heavy = noisy(0.1, &mut state);
    // A gain change is not an error for SI-SDR.
    let scaled: Vec<f32> = x.iter().map(|v| 0.5 * v).collect();
    assert!(si_sdr(&x, &scaled) > 100.0);
    let (s1, s2) = (si_sdr(&x, &slight), si_sdr(&x, &heavy));
    assert!(s1 > s2 + 15.0, "{s1} {s2}");
    assert!(multi_resolution_stft_distance(&x, &x) < 1e-9);
    let (m1, m2) = (
        multi_resolution_stft_distance(&x, &slight),
        multi_resolution_stft_distance(&x, &heavy),
    );
    assert!(m1 > 0.0 && m2 > m1, "{m1} {m2}");

    // Within 80 dB of the peak: still ordered by audible noise...
    let within = |y: &[f32]| multi_resolution_stft_distance_within(&x, y, 80.0);
    assert!(within(&x) < 1e-9);
    assert!(within(&slight) > 0.0 && within(&heavy) > within(&slight));
    // ...but blind to a floor 120 dB down, which dominates the absolute-floor distance.
    let faint = noisy(1e-6, &mut state);
    let (absolute, audible) = (multi_resolution_stft_distance(&x, &faint), within(&faint));
    assert!(absolute > 1.0 && audible < 0.01, "{absolute} {audible}");
}

#[test]
fn distribution_metrics_are_zero_for_the_same_set_and_grow_with_shift() {
    let reference: Vec<Vec<f64>> = (0..40)
        .map(|i| {
            let t = i as f64;
            vec![(t * 0.7).sin(), (t * 1.3).cos(), (t * 0.37).sin() * 2.0]
        })
        .collect();
    let shifted = |d: f64| -> Vec<Vec<f64>> {
        reference
            .iter()
            .map(|v| v.iter().map(|x| x + d).collect())
            .collect()
    };
    assert!(frechet_distance(&reference, &reference).unwrap().abs() < 1e-9);
    let f1 = frechet_distance(&reference, &shifted(0.5)).unwrap();
    let f2 = frechet_distance(&reference, &shifted(1.0)).unwrap();
    // A pure mean shift d in 3 dimensions adds 3 d^2.
    assert!(
        (f1 - 0.75).abs() < 1e-9 && (f2 - 3.0).abs() < 1e-9,
        "{f1} {f2}"
    );
    let bw = median_pairwise_distance(&reference).unwrap();
    let k0 = kernel_audio_distance(&reference, &reference, bw).unwrap();
    let k1 = kernel_audio_distance(&reference, &shifted(0.5), bw).unwrap();
    let k2 = kernel_audio_distance(&reference, &shifted(1.0), bw).unwrap();
    assert!(k0 < 0.0 + 0.05 && k1 > k0 && k2 > k1, "{k0} {k1} {k2}");
}

#[test]
fn classical_distances_separate_different_material() {
    let tonal: Vec<Analysis> = analysed()
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("chords") || n.starts_with("tone"))
        .map(|(_, _, a)| a)
        .collect();
    let rhythmic: Vec<Analysis> = analysed()
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("clicks"))
        .map(|(_, _, a)| a)
        .collect();
    assert_eq!(classical_features(&tonal[0]).len(), 20);
    let same = mirdd_classical(&tonal, &tonal).unwrap();
    assert!(same.mean.abs() < 1e-12);
    let other = mirdd_classical(&tonal, &rhythmic).unwrap();
    assert!(other.mean > 0.1, "{other:?}");
    let d_same = ClassicalDistances::between(&tonal, &tonal);
    let d_other = ClassicalDistances::between(&tonal, &rhythmic);
    eprintln!("same {d_same:?}\nother {d_other:?}");
    // Four clips in 20 dimensions: rank-deficient covariances, so the matrix square root
    // leaves ~1e-6 of round-off.
    assert!(d_same.classical_frechet.unwrap().abs() < 1e-4);
    assert!(d_other.classical_frechet.unwrap() > 1.0);
    assert!(d_other.classical_kad.unwrap() > d_same.classical_kad.unwrap());
}

/// Harmonic tones: `(start_secs, dur_secs, midi)` each with four partials.
fn tones(notes: &[(f64, f64, f64)], secs: f64) -> Vec<f32> {
    let mut y = vec![0.0f32; (secs * SR as f64) as usize];
    for &(start, dur, midi) in notes {
        let hz = 440.0 * 2f64.powf((midi - 69.0) / 12.0);
        let s = (start * SR as f64) as usize;
        for i in 0..(dur * SR as f64) as usize {
            let x = i as f64 / SR as f64;
            let env = (x / 0.01).min(1.0) * ((dur - x) / 0.02).min(1.0);
            let v: f64 = (1..=4)
                .map(|k| (2.0 * std::f64::consts::PI * hz * k as f64 * x).sin() / k as f64)
                .sum();
            if let Some(o) = y.get_mut(s + i) {
                *o += (0.2 * env * v) as f32;
            }
        }
    }
    y
}

/// The harmonic coherence metrics prefer a bass line following the context's chords
/// (C F G C) to the same line a tritone away.
#[test]
fn chroma_metrics_separate_in_key_from_out_of_key_stems() {
    let exp = expected();
    let file = exp["signals"]["chords_c_major"]["file"].as_str().unwrap();
    let context = read_audio(&fixtures().join(file)).unwrap();
    let secs = context.duration_secs();
    let line = |shift: f64| -> Vec<f32> {
        let roots = [36.0, 41.0, 43.0, 36.0];
        let notes: Vec<(f64, f64, f64)> = (0..8)
            .map(|i| (i as f64 * 0.5, 0.45, roots[i / 2] + 12.0 + shift))
            .collect();
        tones(&notes, secs)
    };
    let inside = Coherence::measure(&context, &Audio::mono(SR, line(0.0)).unwrap()).unwrap();
    let outside = Coherence::measure(&context, &Audio::mono(SR, line(6.0)).unwrap()).unwrap();
    eprintln!("in key  {inside:?}\nout key {outside:?}");
    let (ci, co) = (
        inside.beat_chroma_cosine.unwrap(),
        outside.beat_chroma_cosine.unwrap(),
    );
    let (ki, ko) = (inside.in_key_share.unwrap(), outside.in_key_share.unwrap());
    assert!(ci > co + 0.2, "chroma cosine {ci} vs {co}");
    // STFT chroma smears low notes over neighbouring pitch classes, so even an in-key bass
    // line stays well below 1; it must beat a random spread (7/12) and the tritone line.
    assert!(
        ki > 7.0 / 12.0 + 0.05 && ko < 7.0 / 12.0,
        "in-key share {ki} vs {ko}"
    );
    assert!(ki > ko + 0.15, "in-key share {ki} vs {ko}");
}

/// Digital silence and very short clips give empty or neutral features, never NaN or a
/// panic, and the coherence metrics that need material say so with `None`.
#[test]
fn silence_and_short_clips_are_handled() {
    for len in [0usize, 100, 2048, SR as usize * 3] {
        let a = Analysis::of_samples(&vec![0.0; len], SR);
        assert!(
            a.onset_frames.is_empty() && a.beat_frames.is_empty(),
            "{len}"
        );
        assert!(a.tempo_bpm.is_finite() && a.tuning == 0.0 && a.key_clarity == 0.0);
        assert!(a.chroma.data.iter().all(|v| *v == 0.0));
        assert!(
            classical_features(&a).iter().all(|v| v.is_finite()),
            "{len}"
        );
    }
    let silent = Audio::mono(SR, vec![0.0; SR as usize * 3]).unwrap();
    let c = Coherence::measure(&silent, &silent).unwrap();
    assert_eq!(c.onset_grid_share, None);
    assert_eq!(c.in_key_share, None);
    assert_eq!(c.beat_chroma_cosine, None);
    assert_eq!(c.beat_f_measure, 0.0);
}

#[test]
fn beat_f_measure_any_level_accepts_offbeat_double_and_half_time_but_not_another_tempo() {
    use stemgen::eval::metrics::beat_f_measure_any_level;
    let beats: Vec<f64> = (0..20).map(|i| 0.5 * i as f64).collect(); // 120 BPM
    let offbeat: Vec<f64> = beats.iter().map(|b| b + 0.25).take(19).collect();
    let double: Vec<f64> = (0..39).map(|i| 0.25 * i as f64).collect();
    let half_odd: Vec<f64> = beats.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(beat_f_measure(&beats, &offbeat), 0.0);
    for (name, est) in [
        ("off-beat", &offbeat),
        ("double", &double),
        ("half", &half_odd),
    ] {
        assert!(beat_f_measure_any_level(&beats, est) > 0.99, "{name}");
    }
    let other_tempo: Vec<f64> = (0..15).map(|i| 0.1 + 0.66 * i as f64).collect(); // ~91 BPM
    assert!(beat_f_measure_any_level(&beats, &other_tempo) < 0.5);
    assert_eq!(beat_f_measure_any_level(&beats, &[]), 0.0);
}

/// A `report.json` as `stemgen eval` writes it, reduced to what `eval-compare` reads.
fn eval_report(
    dir: &std::path::Path,
    name: &str,
    targets: &[&str],
    generated: &[Coherence],
    floor: &[Coherence],
    ceiling: &[Coherence],
) -> PathBuf {
    let clips: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"song": format!("song-{i:05}"), "target": t,
                "crop_start_s": i as f64 * 0.5, "context_stems": ["piano"]})
        })
        .collect();
    let population =
        |name: &str, clips: &[Coherence]| serde_json::json!({"name": name, "per_clip": clips});
    let report = serde_json::json!({
        "model_dir": name,
        "clips": clips,
        "populations": [population("generated", generated), population("shuffled_raw", floor),
            population("real_raw", ceiling)],
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    path
}

fn clip_coherence(level: f64, tempo: bool, key: Option<f64>) -> Coherence {
    Coherence {
        onset_grid_share: Some(level),
        beat_f_measure: level,
        tempo_agreement: if tempo { 1.0 } else { 0.0 },
        key_score: level,
        beat_chroma_cosine: Some(level),
        in_key_share: key,
    }
}

#[test]
fn eval_compare_pairs_clips_and_refuses_other_clips() {
    use stemgen::eval::compare::{compare, EvalRun};
    let dir = tempfile::tempdir().unwrap();
    let n = 12;
    let targets = vec!["bass"; n];
    let floor: Vec<Coherence> = (0..n)
        .map(|i| clip_coherence(0.2, i % 4 == 0, Some(0.5)))
        .collect();
    let ceiling: Vec<Coherence> = (0..n)
        .map(|i| clip_coherence(0.8, i % 4 != 3, Some(0.7)))
        .collect();
    // A model halfway on every clip and a model at the ceiling on every clip.
    let halfway: Vec<Coherence> = (0..n)
        .map(|i| clip_coherence(0.5, i % 2 == 0, if i == 0 { None } else { Some(0.6) }))
        .collect();
    let a = eval_report(dir.path(), "a", &targets, &halfway, &floor, &ceiling);
    let b = eval_report(dir.path(), "b", &targets, &ceiling, &floor, &ceiling);
    let (run_a, run_b) = (EvalRun::read(&a).unwrap(), EvalRun::read(&b).unwrap());

    let same = compare(&run_a, &run_a, 0).unwrap();
    assert_eq!((same.difference, same.interval), (0.0, [0.0, 0.0]));
    assert_eq!(same.share_not_above, 1.0);

    let c = compare(&run_a, &run_b, 0).unwrap();
    assert_eq!(c.clips, n);
    // Onset, beat F1, key score, chroma: (0.5 - 0.2) / 0.6 = 0.5; tempo: floor 3/12, ceiling
    // 9/12, A 6/12, so 0.5; in-key share: 0.5 too. The ceiling itself scores 1 exactly.
    assert!((c.mean_a - 0.5).abs() < 1e-12, "{}", c.mean_a);
    assert!((c.mean_b - 1.0).abs() < 1e-12, "{}", c.mean_b);
    assert!((c.difference - 0.5).abs() < 1e-12);
    assert!(
        c.interval[0] > 0.0 && c.interval[0] <= 0.5 && c.interval[1] >= 0.5,
        "{:?}",
        c.interval
    );
    assert_eq!(c.share_not_above, 0.0);
    assert_eq!(c.metrics.len(), 6);
    assert_eq!(c.metrics[1].metric, "beat_f_measure");
    let (beat_a, beat_b) = (c.metrics[1].a.unwrap(), c.metrics[1].b.unwrap());
    assert!((beat_a - 0.5).abs() < 1e-12 && (beat_b - 0.8).abs() < 1e-12);

    // Other clips, or other anchors on the same clips, are refused with both paths named.
    let mut other_targets = targets.clone();
    other_targets[3] = "drums";
    let other = eval_report(
        dir.path(),
        "other",
        &other_targets,
        &halfway,
        &floor,
        &ceiling,
    );
    let err = compare(&run_a, &EvalRun::read(&other).unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clip 3 differs") && err.contains("other.json"),
        "{err}"
    );
    let moved: Vec<Coherence> = floor
        .iter()
        .map(|c| clip_coherence(0.3, c.tempo_agreement > 0.5, Some(0.5)))
        .collect();
    let shifted = eval_report(dir.path(), "shifted", &targets, &halfway, &moved, &ceiling);
    let err = compare(&run_a, &EvalRun::read(&shifted).unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("different untokenized anchors"), "{err}");
    let fewer = eval_report(
        dir.path(),
        "fewer",
        &targets[..4],
        &halfway[..4],
        &floor[..4],
        &ceiling[..4],
    );
    let err = compare(&run_a, &EvalRun::read(&fewer).unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("12 clips") && err.contains("has 4"), "{err}");
    let err = EvalRun::read(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json: cannot read"), "{err}");
}
