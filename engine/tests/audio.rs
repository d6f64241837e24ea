//! engine::audio: formats, resampling accuracy, mixing, levels and bad input.

use std::path::Path;
use stemgen::audio::{self, Audio, WavFormat};

fn sine(rate: u32, freq: f32, secs: f32, amp: f32) -> Vec<f32> {
    let n = (rate as f32 * secs) as usize;
    (0..n)
        .map(|i| amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
        .collect()
}

fn write_int_wav(path: &Path, bits: u16, channels: &[Vec<f32>], rate: u32) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let full = ((1i64 << (bits - 1)) - 1) as f32;
    for f in 0..channels[0].len() {
        for ch in channels {
            let v = (ch[f] * full).round() as i32;
            match bits {
                8 => w.write_sample(v as i8).unwrap(),
                16 => w.write_sample(v as i16).unwrap(),
                _ => w.write_sample(v).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

#[test]
fn reads_every_integer_wav_depth_and_any_channel_count() {
    let dir = tempfile::tempdir().unwrap();
    let chans: Vec<Vec<f32>> = (0..3)
        .map(|c| sine(22_050, 300.0 * (c + 1) as f32, 0.1, 0.5))
        .collect();
    for bits in [8u16, 16, 24, 32] {
        let p = dir.path().join(format!("b{bits}.wav"));
        write_int_wav(&p, bits, &chans, 22_050);
        let a = audio::read_audio(&p).unwrap();
        assert_eq!(a.num_channels(), 3);
        assert_eq!(a.sample_rate, 22_050);
        assert_eq!(a.num_frames(), chans[0].len());
        let tol = 2.0 / (1u64 << (bits - 1)) as f32;
        for (got, want) in a.channels.iter().zip(&chans) {
            let err = got
                .iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f32::max);
            assert!(err <= tol, "{bits}-bit error {err} > {tol}");
        }
    }
}

#[test]
fn float_and_int_wav_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a = Audio::new(
        48_000,
        vec![
            sine(48_000, 440.0, 0.05, 0.7),
            sine(48_000, 660.0, 0.05, 0.2),
        ],
    )
    .unwrap();
    for (fmt, tol) in [
        (WavFormat::Float32, 0.0),
        (WavFormat::Int24, 1e-6),
        (WavFormat::Int16, 1e-4),
    ] {
        let p = dir.path().join("x.wav");
        audio::write_wav(&p, &a, fmt).unwrap();
        let b = audio::read_audio(&p).unwrap();
        assert_eq!(b.num_channels(), 2);
        let err = a
            .channels
            .iter()
            .flatten()
            .zip(b.channels.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(err <= tol, "{fmt:?}: {err}");
    }
}

#[test]
fn reads_flac_ogg_and_mp3_fixtures() {
    // Fixtures made by xtask/fixtures/make_audio_fixtures.py: 0.25 s, 440 Hz at 0.5, stereo 44.1 kHz.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
    for (name, tol) in [
        ("tone.flac", 1e-4f32),
        ("tone.ogg", 0.05),
        ("tone.mp3", 0.1),
    ] {
        let a = audio::read_audio(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.sample_rate, 44_100, "{name}");
        assert_eq!(a.num_channels(), 2, "{name}");
        assert!(
            a.num_frames() >= 11_000,
            "{name}: {} frames",
            a.num_frames()
        );
        let rms = audio::rms_dbfs(&a.channels);
        let want = 20.0 * (0.5f32 / 2f32.sqrt()).log10();
        assert!((rms - want).abs() < 1.0, "{name}: rms {rms} dB vs {want}");
        if name == "tone.flac" {
            let s = sine(44_100, 440.0, 0.25, 0.5);
            let err = s
                .iter()
                .zip(&a.channels[0])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(err < tol, "flac sample error {err}");
        }
    }
}

fn error_of(path: &Path) -> String {
    audio::read_audio(path).unwrap_err().to_string()
}

#[test]
fn bad_files_get_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.wav");
    assert!(error_of(&missing).contains("nope.wav") && error_of(&missing).contains("not found"));

    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"RIFF this is not really a wave file").unwrap();
    let e = error_of(&garbage);
    assert!(e.contains("garbage.wav") && e.contains("WAV"), "{e}");

    let garbage_flac = dir.path().join("garbage.flac");
    std::fs::write(&garbage_flac, [0u8; 100]).unwrap();
    assert!(error_of(&garbage_flac).contains("garbage.flac"));

    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    assert!(error_of(&txt).contains("unsupported audio format"));

    let empty = dir.path().join("empty.wav");
    audio::write_wav(
        &empty,
        &Audio {
            sample_rate: 32_000,
            channels: vec![vec![]],
        },
        WavFormat::Int16,
    )
    .unwrap();
    assert!(error_of(&empty).contains("no audio frames"));

    let nan = dir.path().join("nan.wav");
    let mut s = sine(32_000, 100.0, 0.01, 0.5);
    s[17] = f32::NAN;
    audio::write_wav(&nan, &Audio::mono(32_000, s).unwrap(), WavFormat::Float32).unwrap();
    let e = error_of(&nan);
    assert!(e.contains("nan.wav") && e.contains("frame 17"), "{e}");

    let slow = dir.path().join("slow.wav");
    write_int_wav(&slow, 16, &[vec![0.1; 100]], 4_000);
    assert!(error_of(&slow).contains("outside the supported"));
    for e in [error_of(&missing), error_of(&garbage), error_of(&nan)] {
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }
}

/// Error of `b` against `a` in dB relative to `a`'s energy, skipping the edges.
fn error_db(a: &[f32], b: &[f32], skip: usize) -> f32 {
    let n = a.len().min(b.len()) - skip;
    let (mut e, mut s) = (0.0f64, 0.0f64);
    for i in skip..n {
        e += ((a[i] - b[i]) as f64).powi(2);
        s += (a[i] as f64).powi(2);
    }
    (10.0 * (e / s).log10()) as f32
}

#[test]
fn sine_survives_44k1_to_32k_and_back_within_minus_60_db() {
    let x = sine(44_100, 1000.0, 1.0, 0.5);
    let a = Audio::mono(44_100, x.clone()).unwrap();
    let down = a.resampled(32_000).unwrap();
    assert_eq!(down.num_frames(), 32_000);
    let up = down.resampled(44_100).unwrap();
    assert_eq!(up.num_frames(), 44_100);
    let err = error_db(&x, &up.channels[0], 2_000);
    assert!(err < -60.0, "round-trip error {err} dB");
    // And the 32 kHz version is the sine at 32 kHz, time aligned (no resampler delay left).
    let direct = sine(32_000, 1000.0, 1.0, 0.5);
    let err = error_db(&direct, &down.channels[0], 2_000);
    assert!(err < -60.0, "alignment error {err} dB");
}

#[test]
fn resamples_between_any_supported_rates() {
    for (from, to) in [
        (8_000u32, 192_000u32),
        (192_000, 32_000),
        (22_050, 32_000),
        (96_000, 44_100),
        (32_000, 11_025),
    ] {
        let a = Audio::new(from, vec![sine(from, 500.0, 0.2, 0.3); 2]).unwrap();
        let b = a.resampled(to).unwrap();
        assert_eq!(
            b.num_frames(),
            (a.num_frames() as u64 * to as u64).div_ceil(from as u64) as usize
        );
        assert_eq!(b.num_channels(), 2);
        let rms = audio::rms_dbfs(&b.channels);
        assert!(
            (rms - audio::rms_dbfs(&a.channels)).abs() < 0.3,
            "{from}->{to}: {rms}"
        );
    }
    assert!(Audio::mono(32_000, vec![0.0; 10])
        .unwrap()
        .resampled(4_000)
        .is_err());
}

#[test]
fn mixing_levels_and_silence() {
    let l = vec![1.0f32, 0.5, 0.0];
    let r = vec![0.0f32, 0.5, 1.0];
    let mono = audio::mix_channels(&[l.clone(), r.clone()], 1);
    assert_eq!(mono, vec![vec![0.5, 0.5, 0.5]]);
    let up = audio::mix_channels(std::slice::from_ref(&l), 2);
    assert_eq!(up, vec![l.clone(), l.clone()]);
    let four = audio::mix_channels(&[l.clone(), r.clone()], 4);
    assert_eq!(four[2], l);
    assert_eq!(audio::mix_channels(&four, 2), vec![l.clone(), r.clone()]);

    let mut x = vec![sine(32_000, 200.0, 0.5, 0.1)];
    let gain = audio::normalize_rms(&mut x, -20.0, -1.0);
    assert!((audio::rms_dbfs(&x) + 20.0).abs() < 0.01, "gain {gain}");
    // A peak limit wins over the RMS target.
    audio::normalize_rms(&mut x, 0.0, -1.0);
    assert!((audio::peak_dbfs(&x) + 1.0).abs() < 0.01);
    audio::normalize_peak(&mut x, -6.0);
    assert!((audio::peak_dbfs(&x) + 6.0).abs() < 0.01);

    let mut silent = vec![vec![0.0f32; 1000]];
    assert_eq!(audio::normalize_rms(&mut silent, -20.0, 0.0), 0.0);
    assert!(silent[0].iter().all(|s| *s == 0.0));
    let a = Audio::mono(32_000, silent[0].clone()).unwrap();
    assert!(a.is_silent(audio::SILENCE_DBFS));
    assert!(!Audio::mono(32_000, sine(32_000, 100.0, 0.1, 0.01))
        .unwrap()
        .is_silent(audio::SILENCE_DBFS));
}

#[test]
fn true_peak_sees_inter_sample_peaks_and_the_output_stage_keeps_below_the_ceiling() {
    use stemgen::audio::{limit_true_peak, peak_dbfs, true_peak_dbfs};
    // A full-scale sine at a quarter of the rate, sampled 45 degrees off its crests: every
    // sample is at 0.707 (-3 dBFS) while the waveform between them reaches 1.0.
    let sine: Vec<f32> = (0..4800)
        .map(|i| (std::f32::consts::FRAC_PI_2 * i as f32 + std::f32::consts::FRAC_PI_4).sin())
        .collect();
    let mut channels = vec![sine];
    let sample_peak = peak_dbfs(&channels);
    let true_peak = true_peak_dbfs(&channels);
    assert!(
        (sample_peak + 3.01).abs() < 0.05,
        "sample peak {sample_peak}"
    );
    assert!((-0.05..0.15).contains(&true_peak), "true peak {true_peak}");
    let gain = limit_true_peak(&mut channels, -1.0);
    assert!((gain + 1.0).abs() < 0.15, "gain {gain}");
    assert!(true_peak_dbfs(&channels) <= -1.0);
    // Below the ceiling nothing changes.
    let before = channels.clone();
    assert_eq!(limit_true_peak(&mut channels, -1.0), 0.0);
    assert_eq!(channels, before);
}

#[test]
fn sound_measures_find_clicks_out_of_band_energy_and_noise() {
    use stemgen::analysis::sound::SoundQuality;
    let rate = 32_000;
    // Four seconds of a 55 Hz bass note with harmonics up to 275 Hz.
    let bass: Vec<f32> = (0..4 * rate)
        .map(|i| {
            let t = i as f32 / rate as f32;
            (1..6)
                .map(|h| 0.3 / h as f32 * (2.0 * std::f32::consts::PI * 55.0 * h as f32 * t).sin())
                .sum()
        })
        .collect();
    let clean = Audio::mono(rate as u32, bass.clone()).unwrap();
    let q = SoundQuality::measure(&clean, Some((0.0, 1000.0)), true).unwrap();
    assert_eq!(q.clicks_per_second, 0.0, "{q:?}");
    // A1 is on the grid; an unpitched measure has no tuning.
    assert!(q.tuning_cents.unwrap() < 3.0, "{q:?}");
    assert_eq!(q.active_share, 1.0, "{q:?}");
    assert!(q.out_of_band_share.unwrap() < 0.01, "{q:?}");
    assert!(q.spectral_flatness < 0.05, "{q:?}");
    assert_eq!(q.hot_sample_share, 0.0);
    // The same note for its first second only, then a -60 dBFS hiss: a quarter sounds.
    let mut faded = bass.clone();
    for (i, v) in faded.iter_mut().enumerate().skip(rate) {
        *v = if i % 2 == 0 { 1e-3 } else { -1e-3 };
    }
    let q = SoundQuality::measure(&Audio::mono(rate as u32, faded).unwrap(), None, false).unwrap();
    assert!((q.active_share - 0.25).abs() < 0.01, "{q:?}");
    // Six steps in the waveform: six broadband clicks, and energy above 1 kHz.
    let mut clicked = bass;
    for k in 0..6 {
        let at = rate / 4 + k * rate / 2;
        for v in &mut clicked[at..at + 3] {
            *v += 0.5;
        }
    }
    let clicked = Audio::mono(rate as u32, clicked).unwrap();
    let (q, times) =
        SoundQuality::measure_with_click_times(&clicked, Some((0.0, 1000.0)), false).unwrap();
    assert!((q.clicks_per_second * 4.0 - 6.0).abs() < 0.5, "{q:?}");
    // ... each found where it is, within the click STFT's half window (12 ms).
    assert_eq!(times.len(), 6, "{times:?}");
    for (k, t) in times.iter().enumerate() {
        assert!((t - (0.25 + 0.5 * k as f64)).abs() < 0.012, "{times:?}");
    }
    // White noise: flat, mostly outside a bass band, and clipped samples counted.
    let mut state = 1u32;
    let noise: Vec<f32> = (0..2 * rate)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let q = SoundQuality::measure(
        &Audio::mono(rate as u32, noise).unwrap(),
        Some((0.0, 1000.0)),
        false,
    )
    .unwrap();
    assert!(q.spectral_flatness > 0.4, "{q:?}");
    assert_eq!(q.tuning_cents, None);
    assert!(q.out_of_band_share.unwrap() > 0.8, "{q:?}");
    // Uniform noise on [-1, 1]: 1 - 10^(-1/20) = 10.9% of the samples at or above -1 dBFS.
    assert!((q.hot_sample_share - 0.109).abs() < 0.01, "{q:?}");
}
