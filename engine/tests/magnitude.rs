//! The default magnitude-RVQ tokenizer: STFT round trip, metrics, training on short
//! synthetic songs (TimGM6mb), RVQ levels improving the reconstruction, determinism,
//! save/load. `--ignored` runs a bigger measurement and prints its numbers.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use stemgen::analysis::distance::{
    compare, log_spectral_distance, mel_l1, multi_resolution_stft_distance,
};
use stemgen::analysis::stft::Stft;
use stemgen::audio::Audio;
use stemgen::codec::magnitude::phase::{reconstruct, PhaseSettings, PhaseStart};
use stemgen::codec::magnitude::{
    evaluate, evaluate_levels, MagnitudeConfig, MagnitudeTokenizer, CODEBOOKS_FILE, CONFIG_FILE,
};
use stemgen::codec::{no_progress, Tokenizer, Tokens};
use stemgen::data::synth::{
    load_soundfont, plan_song, render_parts, song_frames, PlanOptions, RenderOptions, TIMGM6MB,
};

fn soundfont() -> Arc<rustysynth::SoundFont> {
    load_soundfont(Path::new(TIMGM6MB)).expect("apt-get install timgm6mb-soundfont")
}

/// Mono 32 kHz mixes of seeded synthetic songs of about `secs` seconds.
fn render_songs(seeds: std::ops::Range<u64>, secs: f64) -> Vec<Audio> {
    let sf = soundfont();
    let ro = RenderOptions {
        stereo: false,
        tail_secs: 0.5,
        ..RenderOptions::default()
    };
    let po = PlanOptions {
        target_secs: secs,
        ..PlanOptions::default()
    };
    seeds
        .map(|seed| {
            let plan = plan_song(1000 + seed, &po);
            let parts: Vec<_> = plan.parts.iter().collect();
            render_parts(&sf, &parts, song_frames(&plan, &ro), &ro).unwrap()
        })
        .collect()
}

/// Four training songs and two held-out songs of ~10 s.
fn songs() -> &'static (Vec<Audio>, Vec<Audio>) {
    static SONGS: OnceLock<(Vec<Audio>, Vec<Audio>)> = OnceLock::new();
    SONGS.get_or_init(|| (render_songs(0..4, 10.0), render_songs(100..102, 10.0)))
}

fn tiny_config() -> MagnitudeConfig {
    MagnitudeConfig {
        codebook_size: 256,
        kmeans_iters: 6,
        ..MagnitudeConfig::default()
    }
}

fn trained() -> &'static MagnitudeTokenizer {
    static TOK: OnceLock<MagnitudeTokenizer> = OnceLock::new();
    TOK.get_or_init(|| MagnitudeTokenizer::train(&songs().0, tiny_config(), 7).unwrap())
}

fn test_signal(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let t = i as f32 / 32_000.0;
            0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * 1234.5 * t).sin() * (3.0 * t).cos()
        })
        .collect()
}

#[test]
fn stft_frames_and_inverse_round_trip() {
    let stft = Stft::new(2048, 640);
    for len in [1, 639, 640, 641, 32_000, 32_123] {
        let x = test_signal(len);
        let (spec, frames) = stft.forward(&x);
        assert_eq!(frames, len.div_ceil(640), "len {len}");
        assert_eq!(spec.len(), frames * 1025);
        if len < 2048 {
            continue; // reflect padding needs more than half a window of signal
        }
        let y = stft.inverse(&spec, frames);
        assert_eq!(y.len(), frames * 640);
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "len {len}: round-trip error {err}");
    }
}

#[test]
fn metrics_are_zero_for_identical_audio_and_grow_with_distortion() {
    // Noise, so that every bin is far above the metrics' floors.
    let mut state = 12345u32;
    let x: Vec<f32> = (0..32_000)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    assert!(log_spectral_distance(&x, &x).abs() < 1e-9);
    assert!(mel_l1(&x, &x, 32_000).abs() < 1e-9);
    let quiet: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
    let (lsd, mel) = compare(&x, &quiet, 32_000);
    // Halving the amplitude is 6.02 dB in every bin above the floor.
    assert!((lsd - 6.02).abs() < 0.3, "lsd {lsd}");
    assert!((mel - 0.602).abs() < 0.05, "mel {mel}");
    let silence = vec![0.0f32; x.len()];
    let (lsd_s, mel_s) = compare(&x, &silence, 32_000);
    assert!(lsd_s > lsd && mel_s > mel);
}

/// A bass-like line with onsets: decaying harmonic notes and a click train, the material whose
/// smeared transients and partials Griffin-Lim from random phases is known for.
fn plucked_signal(len: usize) -> Vec<f32> {
    let note = 8_000;
    (0..len)
        .map(|i| {
            let (k, j) = (i / note, i % note);
            let f0 = [55.0, 82.4, 73.4, 98.0][k % 4];
            let t = j as f32 / 32_000.0;
            let env = (-6.0 * t).exp();
            let tone: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            let click = if j < 32 {
                0.3 * (1.0 - j as f32 / 32.0)
            } else {
                0.0
            };
            0.4 * env * tone + click
        })
        .collect()
}

/// A waveform rebuilt from `mags` by phase reconstruction from `start` and `iters` fast
/// Griffin-Lim iterations (momentum 0.99, seed 0).
fn rebuild(stft: &Stft, mags: &[f32], frames: usize, start: PhaseStart, iters: usize) -> Vec<f32> {
    let settings = PhaseSettings {
        start,
        iters,
        momentum: 0.99,
        seed: 0,
    };
    reconstruct(stft, mags, frames, &settings, &mut |_, _| {})
}

#[test]
fn pghi_starts_closer_than_random_phase() {
    let stft = Stft::new(2048, 640);
    let x = plucked_signal(64_000);
    let (spec, frames) = stft.forward(&x);
    let mags: Vec<f32> = spec.iter().map(|c| c.norm()).collect();
    let run = |start, iters| {
        multi_resolution_stft_distance(&x, &rebuild(&stft, &mags, frames, start, iters))
    };
    let (random0, pghi0) = (run(PhaseStart::Random, 0), run(PhaseStart::Pghi, 0));
    let (random32, pghi8) = (run(PhaseStart::Random, 32), run(PhaseStart::Pghi, 8));
    println!(
        "MRSTFT: random {random0:.3} (32 GL: {random32:.3}), PGHI {pghi0:.3} (8 GL: {pghi8:.3})"
    );
    assert!(
        pghi0 < 0.7 * random0,
        "PGHI {pghi0:.3} vs random {random0:.3}"
    );
    assert!(
        pghi8 < random32,
        "PGHI + 8 {pghi8:.3} vs random + 32 {random32:.3}"
    );
}

#[test]
fn griffin_lim_from_true_magnitudes_is_close() {
    let stft = Stft::new(2048, 640);
    let x = test_signal(64_000);
    let (spec, frames) = stft.forward(&x);
    let mags: Vec<f32> = spec.iter().map(|c| c.norm()).collect();
    let settings = PhaseSettings {
        start: PhaseStart::Random,
        iters: 32,
        momentum: 0.99,
        seed: 0,
    };
    let y = reconstruct(&stft, &mags, frames, &settings, &mut |_, _| {});
    let (lsd, mel) = compare(&x, &y, 32_000);
    assert!(lsd.is_finite() && mel.is_finite());
    assert!(
        mel < 0.2,
        "Griffin-Lim on exact magnitudes: LSD {lsd:.2} dB, mel L1 {mel:.3}"
    );
}

#[test]
fn encode_decode_shapes_ranges_and_speed() {
    let tok = trained();
    assert_eq!(tok.name(), "magnitude-rvq");
    assert_eq!(tok.sample_rate(), 32_000);
    assert_eq!(tok.frame_rate(), 50.0);
    assert_eq!(tok.hop_length(), 640);
    assert_eq!(tok.num_levels(), 4);
    assert_eq!(tok.codebook_size(), 256);
    let clip = &songs().1[0];
    let tokens = tok.encode(clip, &mut no_progress()).unwrap();
    assert_eq!(tokens.levels, 4);
    assert_eq!(tokens.frames, clip.num_frames().div_ceil(640));
    assert!(tokens.codes.iter().all(|&c| c < 256));
    // Level 0 carries the gain: 64 gain steps x 4 shape codes; many gains are used.
    let gains: std::collections::HashSet<u32> = tokens.level(0).iter().map(|c| c / 4).collect();
    assert!(gains.len() > 3, "gains used: {gains:?}");

    // Stereo input at another rate is mixed and resampled.
    let stereo44 = clip.with_channels(2).resampled(44_100).unwrap();
    let t2 = tok.encode(&stereo44, &mut no_progress()).unwrap();
    assert!(t2.frames.abs_diff(tokens.frames) <= 1);

    let t = Instant::now();
    let mut calls = 0;
    let audio = tok.decode(&tokens, &mut |_, _| calls += 1).unwrap();
    let rtf = t.elapsed().as_secs_f64() / clip.duration_secs();
    assert_eq!(calls, tok.config().gl_iters);
    assert_eq!(audio.sample_rate, 32_000);
    assert_eq!(audio.num_channels(), 1);
    assert_eq!(audio.num_frames(), tokens.frames * 640);
    assert!(audio.first_non_finite().is_none());
    println!("decode real-time factor {rtf:.4}");
    assert!(rtf < 1.0, "decode slower than real time: RTF {rtf}");

    // Fewer levels decode; zero levels and out-of-range codes are refused.
    assert!(tok.decode(&tokens.truncated(1), &mut no_progress()).is_ok());
    assert!(tok
        .decode(&tokens.truncated(0), &mut no_progress())
        .is_err());
    let mut bad = tokens.clone();
    bad.codes[tokens.frames] = 256;
    let err = tok
        .decode(&bad, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    // Empty audio gives an empty grid and decodes to nothing.
    let empty = Audio::mono(32_000, vec![]).unwrap();
    let te = tok.encode(&empty, &mut no_progress()).unwrap();
    assert_eq!(te.frames, 0);
    assert_eq!(tok.decode(&te, &mut no_progress()).unwrap().num_frames(), 0);
}

#[test]
fn more_levels_reconstruct_better_on_held_out_songs() {
    let tok = trained();
    let held_out = &songs().1;
    let mut results = Vec::new();
    for levels in 1..=4 {
        let (lsd, mel) = evaluate_levels(tok, held_out, levels).unwrap();
        println!("tiny 4 x 256, {levels} level(s): LSD {lsd:.2} dB, mel L1 {mel:.3}");
        assert!(lsd.is_finite() && mel.is_finite());
        results.push((lsd, mel));
    }
    for w in results.windows(2) {
        assert!(
            w[1].0 < w[0].0 + 0.05 && w[1].1 < w[0].1 + 0.005,
            "{results:?}"
        );
    }
    let (first, last) = (results[0], results[3]);
    assert!(
        last.0 < first.0 - 0.5 && last.1 < first.1 - 0.02,
        "{results:?}"
    );
    assert_eq!(evaluate(tok, held_out).unwrap(), last);
    // The training songs themselves fit better than held-out ones (or at least as well).
    let (lsd_train, _) = evaluate(tok, &songs().0[..1]).unwrap();
    assert!(lsd_train.is_finite());
}

#[test]
fn training_is_deterministic_per_seed() {
    let clips = &songs().0[..2];
    let cfg = MagnitudeConfig {
        codebook_size: 128,
        kmeans_iters: 3,
        levels: 2,
        ..MagnitudeConfig::default()
    };
    let a = MagnitudeTokenizer::train(clips, cfg.clone(), 3).unwrap();
    let b = MagnitudeTokenizer::train(clips, cfg.clone(), 3).unwrap();
    let c = MagnitudeTokenizer::train(clips, cfg.clone(), 4).unwrap();
    assert_eq!(a.codebooks(), b.codebooks());
    assert_ne!(a.codebooks(), c.codebooks());
    let clip = &songs().1[1];
    assert_eq!(
        a.encode(clip, &mut no_progress()).unwrap(),
        b.encode(clip, &mut no_progress()).unwrap()
    );
    let ta = a.encode(clip, &mut no_progress()).unwrap();
    assert_eq!(
        a.decode(&ta, &mut no_progress()).unwrap(),
        b.decode(&ta, &mut no_progress()).unwrap()
    );
    assert!(MagnitudeTokenizer::train(&[], cfg.clone(), 0).is_err());
    let bad = MagnitudeConfig {
        codebook_size: 100,
        ..cfg
    };
    assert!(MagnitudeTokenizer::train(clips, bad, 0).is_err());
}

#[test]
fn save_load_round_trip_and_clear_errors() {
    let tok = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok");
    tok.save(&path).unwrap();
    let loaded = MagnitudeTokenizer::load(&path).unwrap();
    assert_eq!(loaded.config(), tok.config());
    assert_eq!(loaded.codebooks(), tok.codebooks());
    let clip = &songs().1[0];
    assert_eq!(
        loaded.encode(clip, &mut no_progress()).unwrap(),
        tok.encode(clip, &mut no_progress()).unwrap()
    );

    let err = |p: &Path| {
        format!(
            "{:#}",
            MagnitudeTokenizer::load(p).err().expect("must fail")
        )
    };

    // Missing directory / files.
    let e = err(&dir.path().join("nope"));
    assert!(e.contains(CONFIG_FILE) && e.contains("cannot read"), "{e}");
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        for f in [CONFIG_FILE, CODEBOOKS_FILE] {
            std::fs::copy(path.join(f), p.join(f)).unwrap();
        }
        p
    };
    let p = copy("no_codebooks");
    std::fs::remove_file(p.join(CODEBOOKS_FILE)).unwrap();
    let e = err(&p);
    assert!(e.contains(CODEBOOKS_FILE) && e.contains("missing"), "{e}");

    // Corrupt files.
    let p = copy("bad_json");
    std::fs::write(p.join(CONFIG_FILE), "{ not json").unwrap();
    let e = err(&p);
    assert!(e.contains("not valid JSON"), "{e}");
    let p = copy("bad_tensors");
    std::fs::write(p.join(CODEBOOKS_FILE), b"garbage bytes").unwrap();
    let e = err(&p);
    assert!(e.contains("not a safetensors file"), "{e}");

    // Mismatches between config and codebooks, other tokenizers, bad configs.
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = copy(name);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join(CONFIG_FILE)).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(p.join(CONFIG_FILE), v.to_string()).unwrap();
        p
    };
    let e = err(&edit("size", &|v| {
        v["config"]["codebook_size"] = 512.into()
    }));
    assert!(e.contains("level0") && e.contains("shape"), "{e}");
    let e = err(&edit("levels", &|v| v["config"]["levels"] = 5.into()));
    assert!(e.contains("level4"), "{e}");
    let e = err(&edit("fewer", &|v| v["config"]["levels"] = 3.into()));
    assert!(e.contains("4 tensors"), "{e}");
    let e = err(&edit("name", &|v| v["tokenizer"] = "encodec_32khz".into()));
    assert!(e.contains("expected \"magnitude-rvq\""), "{e}");
    let e = err(&edit("version", &|v| v["format_version"] = 99.into()));
    assert!(e.contains("format_version"), "{e}");
    let e = err(&edit("gain", &|v| v["config"]["gain_bits"] = 9.into()));
    assert!(e.contains("invalid config"), "{e}");
}

/// A bigger measurement: 4 x 2048 codebooks trained on ~2 minutes of synthetic songs,
/// evaluated on held-out songs. Run with `-- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_default_size() {
    let t = Instant::now();
    let train = render_songs(0..6, 20.0);
    let held_out = render_songs(100..104, 15.0);
    let train_secs: f64 = train.iter().map(|c| c.duration_secs()).sum();
    let test_secs: f64 = held_out.iter().map(|c| c.duration_secs()).sum();
    println!(
        "rendered {train_secs:.0} s train, {test_secs:.0} s held-out in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cfg = MagnitudeConfig::default();
    println!("bitrate {:.0} bps", cfg.bitrate());
    let t = Instant::now();
    let tok = MagnitudeTokenizer::train(&train, cfg, 1).unwrap();
    println!("trained 4 x 2048 in {:.1} s", t.elapsed().as_secs_f64());
    for levels in 1..=4 {
        let t = Instant::now();
        let (lsd, mel) = evaluate_levels(&tok, &held_out, levels).unwrap();
        println!(
            "held-out, {levels} level(s): LSD {lsd:.2} dB, mel L1 {mel:.3} ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }
    let (lsd, mel) = evaluate(&tok, &train[..2]).unwrap();
    println!("training songs (first 2): LSD {lsd:.2} dB, mel L1 {mel:.3}");
    let tokens = tok.encode(&held_out[0], &mut no_progress()).unwrap();
    let t = Instant::now();
    tok.decode(&tokens, &mut no_progress()).unwrap();
    println!(
        "decode RTF {:.4}",
        t.elapsed().as_secs_f64() / held_out[0].duration_secs()
    );
}

#[test]
fn model_directories_can_name_the_magnitude_tokenizer() {
    use stemgen::codec::load::load_tokenizer;
    let dir = tempfile::tempdir().unwrap();
    trained().save(&dir.path().join("tokenizer")).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"kind": "magnitude-rvq", "dir": "tokenizer"}"#,
    )
    .unwrap();
    let loaded = load_tokenizer(dir.path()).unwrap();
    assert_eq!(loaded.name(), "magnitude-rvq");
    let clip = &songs().1[0];
    let a = loaded.encode(clip, &mut |_, _| {}).unwrap();
    let b = trained().encode(clip, &mut |_, _| {}).unwrap();
    assert_eq!(a, b);

    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"kind": "magnitude-rvq", "dir": "nowhere"}"#,
    )
    .unwrap();
    let err = format!("{:#}", load_tokenizer(dir.path()).err().unwrap());
    assert!(
        err.contains("tokenizer.json") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn refinement_keeps_the_tokens_and_lowers_held_out_error() {
    let (train, held_out) = songs();
    let plain = trained();
    let plain_dir = tempfile::tempdir().unwrap();
    plain.save(plain_dir.path()).unwrap();
    let refined = MagnitudeTokenizer::load(plain_dir.path())
        .unwrap()
        .with_refinement(train, 2)
        .unwrap();
    let clip = &held_out[0];
    let tokens = plain.encode(clip, &mut no_progress()).unwrap();
    assert_eq!(refined.encode(clip, &mut no_progress()).unwrap(), tokens);
    let (lsd_plain, mel_plain) = evaluate(plain, held_out).unwrap();
    let (lsd, mel) = evaluate(&refined, held_out).unwrap();
    println!("refinement: LSD {lsd_plain:.2} -> {lsd:.2}, mel {mel_plain:.3} -> {mel:.3}");
    // It minimises the squared dB error, which is what LSD scores; the mel distance is only
    // reported (on FluidR3 songs it moved by +0.004).
    assert!(
        lsd < lsd_plain - 0.05 && mel.is_finite(),
        "{lsd} vs {lsd_plain}"
    );

    // Saved and loaded with its filter; a file without the filter is a clear error.
    assert_saved_with(&refined, plain_dir.path(), &tokens, "'refine'");
}

#[test]
fn joint_decoder_keeps_the_tokens_and_lowers_the_error() {
    let (train, held_out) = songs();
    let plain = trained();
    let plain_dir = tempfile::tempdir().unwrap();
    plain.save(plain_dir.path()).unwrap();
    let (joint, fit) = MagnitudeTokenizer::load(plain_dir.path())
        .unwrap()
        .with_joint_decoder(train, 1.0, 10)
        .unwrap();
    assert!(joint.config().joint_decoder);
    let clip = &held_out[0];
    let tokens = plain.encode(clip, &mut no_progress()).unwrap();
    assert_eq!(joint.encode(clip, &mut no_progress()).unwrap(), tokens);
    // Least squares on the training frames can only lower their error.
    assert!(
        fit.rms_after_db < fit.rms_before_db - 0.1,
        "fit {} -> {}",
        fit.rms_before_db,
        fit.rms_after_db
    );
    // On the fitted songs the round trip improves too. Held-out gains need far more frames
    // per code than these 2,000 (with 551,000 FluidR3 frames: LSD 5.88 -> 5.76 dB); here the
    // held-out songs only have to decode to something sensible.
    let (lsd_plain, _) = evaluate(plain, train).unwrap();
    let (lsd, _) = evaluate(&joint, train).unwrap();
    println!("joint decoder, fitted songs: LSD {lsd_plain:.2} -> {lsd:.2}");
    assert!(lsd < lsd_plain - 0.05, "{lsd} vs {lsd_plain}");
    let (lsd_held_out, mel) = evaluate(&joint, held_out).unwrap();
    assert!(
        lsd_held_out < 12.0 && mel.is_finite(),
        "{lsd_held_out} {mel}"
    );
    // Fewer levels decode with the encoder's codewords, as before.
    assert_eq!(
        joint.decode_db(&tokens.truncated(2)).unwrap(),
        plain.decode_db(&tokens.truncated(2)).unwrap()
    );

    // Saved and loaded with its codewords; a file without them is a clear error.
    assert_saved_with(&joint, plain_dir.path(), &tokens, "'decoder0'");
}

/// `tokenizer` saves and loads to the same decode of `tokens`, and with the codebook file of
/// the plain tokenizer saved in `plain_dir` instead of its own, loading fails naming `tensor`.
fn assert_saved_with(
    tokenizer: &MagnitudeTokenizer,
    plain_dir: &Path,
    tokens: &Tokens,
    tensor: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    tokenizer.save(dir.path()).unwrap();
    let loaded = MagnitudeTokenizer::load(dir.path()).unwrap();
    assert_eq!(
        loaded.decode_db(tokens).unwrap(),
        tokenizer.decode_db(tokens).unwrap()
    );
    std::fs::copy(
        plain_dir.join(CODEBOOKS_FILE),
        dir.path().join(CODEBOOKS_FILE),
    )
    .unwrap();
    let e = format!("{:#}", MagnitudeTokenizer::load(dir.path()).err().unwrap());
    assert!(e.contains(tensor), "{e}");
}

#[test]
fn mean_gain_tokenizer_round_trips() {
    use stemgen::codec::magnitude::GainReference;
    let cfg = MagnitudeConfig {
        codebook_size: 128,
        kmeans_iters: 3,
        levels: 2,
        gain_reference: GainReference::Mean,
        gain_min_db: -100.0,
        gain_max_db: -10.0,
        ..MagnitudeConfig::default()
    };
    let tok = MagnitudeTokenizer::train(&songs().0[..2], cfg, 1).unwrap();
    let (lsd, mel) = evaluate(&tok, &songs().1[..1]).unwrap();
    assert!(
        lsd.is_finite() && lsd < 15.0 && mel.is_finite(),
        "{lsd} {mel}"
    );
}

#[test]
fn postnet_keeps_the_tokens_and_lowers_the_error() {
    use stemgen::codec::magnitude::postnet::{PostnetConfig, TrainOptions};
    use stemgen::train::schedule::LrSchedule;
    let (train, held_out) = songs();
    let plain = trained();
    let plain_dir = tempfile::tempdir().unwrap();
    plain.save(plain_dir.path()).unwrap();
    let options = TrainOptions {
        config: PostnetConfig {
            width: 32,
            layers: 2,
            kernel: 3,
        },
        steps: 300,
        batch: 4,
        window: 32,
        schedule: LrSchedule {
            peak: 3e-3,
            warmup: 10,
            hold: 150,
            half_life: 50,
        },
        weight_decay: 0.0,
        clip_norm: 1.0,
        validate_every: 60,
        seed: 0,
    };
    let (net, report) = MagnitudeTokenizer::load(plain_dir.path())
        .unwrap()
        .with_postnet(train, &options, |_| {})
        .unwrap();
    assert!(net.config().postnet.is_some());
    let clip = &held_out[0];
    let tokens = plain.encode(clip, &mut no_progress()).unwrap();
    assert_eq!(net.encode(clip, &mut no_progress()).unwrap(), tokens);
    // The clips it trained on (all but the last, its validation clip) decode closer, before
    // Griffin-Lim. Held-out gains need many songs (FluidR3, 180 songs: LSD 5.35 -> 5.28 dB).
    let token_lsd = |tok: &MagnitudeTokenizer| -> f64 {
        let clips = &train[..train.len() - 1];
        clips
            .iter()
            .map(|clip| {
                let truth = tok.analyse_db(&clip.to_mono_at(32_000).unwrap().channels[0]);
                let tokens = tok.encode(clip, &mut no_progress()).unwrap();
                let db = tok.decode_db(&tokens).unwrap();
                let bins = tok.config().bins();
                let frames = db.len() / bins;
                db.chunks(bins)
                    .zip(truth.chunks(bins))
                    .map(|(a, b)| {
                        let se: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                        (se / bins as f64).sqrt()
                    })
                    .sum::<f64>()
                    / frames as f64
            })
            .sum::<f64>()
            / clips.len() as f64
    };
    let (before, after) = (token_lsd(plain), token_lsd(&net));
    println!(
        "postnet: fitted clips' LSD {before:.2} -> {after:.2} dB, validation clip {:.2} -> {:.2}",
        report.lsd_before_db,
        report.validation.last().unwrap().1
    );
    assert!(after < before - 0.02, "{before} -> {after}");
    let (lsd, mel) = evaluate(&net, held_out).unwrap();
    assert!(lsd < 12.0 && mel.is_finite(), "{lsd} {mel}");
    // Fewer levels decode as before.
    assert_eq!(
        net.decode_db(&tokens.truncated(2)).unwrap(),
        plain.decode_db(&tokens.truncated(2)).unwrap()
    );
    assert_saved_with(&net, plain_dir.path(), &tokens, "postnet");
}

#[test]
fn beam_search_encoding_codes_frames_more_closely() {
    let (train, _) = songs();
    let greedy = trained();
    let dir = tempfile::tempdir().unwrap();
    greedy.save(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["config"]["encode_beam"] = 8.into();
    std::fs::write(dir.path().join(CONFIG_FILE), json.to_string()).unwrap();
    let beam = MagnitudeTokenizer::load(dir.path()).unwrap();
    let clip = &train[0];
    let truth = greedy.analyse_db(&clip.to_mono_at(32_000).unwrap().channels[0]);
    let rms = |tok: &MagnitudeTokenizer| {
        let tokens = tok.encode(clip, &mut no_progress()).unwrap();
        let db = tok.decode_db(&tokens).unwrap();
        let se: f64 = db
            .iter()
            .zip(&truth)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        (tokens, (se / db.len() as f64).sqrt())
    };
    let (greedy_tokens, greedy_rms) = rms(greedy);
    let (beam_tokens, beam_rms) = rms(&beam);
    println!("RMS dB error: greedy {greedy_rms:.3}, beam 8 {beam_rms:.3}");
    assert_ne!(beam_tokens, greedy_tokens);
    assert!(beam_rms < greedy_rms - 0.02, "{beam_rms} vs {greedy_rms}");
}

/// Mean absolute dB error of the decode over the bins below `hz` (what carries a bass line).
fn low_band_error(tok: &MagnitudeTokenizer, clips: &[Audio], hz: f32) -> f64 {
    let cfg = tok.config();
    let low = (hz * cfg.n_fft as f32 / cfg.sample_rate as f32) as usize;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for clip in clips {
        let mono = clip.to_mono_at(cfg.sample_rate).unwrap();
        let truth = tok.analyse_db(&mono.channels[0]);
        let tokens = tok.encode(&mono, &mut no_progress()).unwrap();
        let decoded = tok.decode_db(&tokens).unwrap();
        for (t, d) in truth.chunks(cfg.bins()).zip(decoded.chunks(cfg.bins())) {
            for k in 1..low {
                sum += (t[k] - d[k]).abs() as f64;
                n += 1;
            }
        }
    }
    sum / n as f64
}

#[test]
fn low_band_emphasis_decodes_plain_db_and_codes_the_bass_band_closer() {
    use stemgen::codec::magnitude::LowBandEmphasis;
    let plain = MagnitudeConfig {
        codebook_size: 128,
        kmeans_iters: 4,
        levels: 2,
        ..MagnitudeConfig::default()
    };
    let emphasised = MagnitudeConfig {
        low_band_emphasis: Some(LowBandEmphasis {
            below_hz: 500.0,
            factor: 8.0,
        }),
        ..plain.clone()
    };
    let a = MagnitudeTokenizer::train(&songs().0, plain, 2).unwrap();
    let b = MagnitudeTokenizer::train(&songs().0, emphasised, 2).unwrap();
    let held_out = &songs().1;
    let (err_a, err_b) = (
        low_band_error(&a, held_out, 300.0),
        low_band_error(&b, held_out, 300.0),
    );
    let (lsd_a, _) = evaluate(&a, held_out).unwrap();
    let (lsd_b, _) = evaluate(&b, held_out).unwrap();
    println!(
        "below 300 Hz: {err_a:.2} dB plain, {err_b:.2} dB emphasised; LSD {lsd_a:.2} / {lsd_b:.2}"
    );
    assert!(err_b < 0.8 * err_a, "{err_a} {err_b}");
    // Decoded in plain dB: the whole spectrum stays close to the plain tokenizer's.
    assert!(lsd_b.is_finite() && lsd_b < lsd_a + 1.5, "{lsd_a} {lsd_b}");
    // Saved and loaded with its emphasis (part of the token definition).
    let dir = tempfile::tempdir().unwrap();
    b.save(dir.path()).unwrap();
    let loaded = MagnitudeTokenizer::load(dir.path()).unwrap();
    assert_eq!(
        loaded.config().low_band_emphasis,
        b.config().low_band_emphasis
    );
    let clip = held_out[0].to_mono_at(32_000).unwrap();
    let tokens = b.encode(&clip, &mut no_progress()).unwrap();
    assert_eq!(loaded.encode(&clip, &mut no_progress()).unwrap(), tokens);
    assert_eq!(
        loaded.decode_db(&tokens).unwrap(),
        b.decode_db(&tokens).unwrap()
    );
    // A bad emphasis is refused before anything is trained.
    let bad = MagnitudeConfig {
        low_band_emphasis: Some(LowBandEmphasis {
            below_hz: 500.0,
            factor: 0.5,
        }),
        ..MagnitudeConfig::default()
    };
    let Err(err) = MagnitudeTokenizer::train(&songs().0[..1], bad, 0) else {
        panic!("a factor below 1 was accepted");
    };
    assert!(err.to_string().contains("low_band_emphasis"), "{err}");
}

/// The frequency (Hz) of the strongest partial between `lo` and `hi` Hz of `x` (32 kHz):
/// a zero-padded Hann spectrum of the whole signal, parabola through the peak's dB.
fn partial_hz(x: &[f32], lo: f64, hi: f64) -> f64 {
    use rustfft::{num_complex::Complex32, FftPlanner};
    let n = 1 << 19;
    let mut buf = vec![Complex32::default(); n];
    let len = x.len().min(n);
    for (i, (b, &v)) in buf.iter_mut().zip(x).enumerate() {
        let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / len as f64).cos();
        *b = Complex32::new(v * w as f32, 0.0);
    }
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let bin_hz = 32_000.0 / n as f64;
    let db = |k: usize| 20.0 * (buf[k].norm() as f64).max(1e-12).log10();
    let k = ((lo / bin_hz) as usize..(hi / bin_hz) as usize)
        .max_by(|&a, &b| db(a).total_cmp(&db(b)))
        .unwrap();
    let (a, b, c) = (db(k - 1), db(k), db(k + 1));
    (k as f64 + 0.5 * (a - c) / (a - 2.0 * b + c)) * bin_hz
}

#[test]
fn a_flat_low_note_retuned_and_peak_locked_comes_back_in_tune() {
    use stemgen::codec::magnitude::retune::retune;
    let stft = Stft::new(2048, 640);
    // A held G2 (98 Hz) with five harmonics, 35 cents flat.
    let f0 = 98.0 * 2f32.powf(-35.0 / 1200.0);
    let held: Vec<f32> = (0..64_000)
        .map(|i| {
            let t = i as f32 / 32_000.0;
            (1..6)
                .map(|h| (std::f32::consts::TAU * f0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>()
                * 0.3
        })
        .collect();
    let (spec, frames) = stft.forward(&held);
    let mut db: Vec<f32> = spec
        .iter()
        .map(|c| 20.0 * c.norm().max(1e-9).log10())
        .collect();
    retune(&mut db, stft.bins(), 32_000.0 / 2048.0, 0.0);
    let mags: Vec<f32> = db.iter().map(|v| 10f32.powf(v / 20.0)).collect();
    let cents = |y: &[f32]| 1200.0 * (partial_hz(y, 80.0, 120.0) / 98.0).log2();
    let (peaks, pghi) = (
        cents(&rebuild(&stft, &mags, frames, PhaseStart::Peaks, 0)),
        cents(&rebuild(&stft, &mags, frames, PhaseStart::Pghi, 32)),
    );
    // Phase alone, on a plucked line's exact magnitudes: the peak-locked start is as close
    // to the signal as PGHI's.
    let plucked = plucked_signal(64_000);
    let (spec, frames) = stft.forward(&plucked);
    let exact: Vec<f32> = spec.iter().map(|c| c.norm()).collect();
    let distance = |start, iters| {
        multi_resolution_stft_distance(&plucked, &rebuild(&stft, &exact, frames, start, iters))
    };
    let (d_peaks, d_pghi) = (
        distance(PhaseStart::Peaks, 0),
        distance(PhaseStart::Pghi, 0),
    );
    println!(
        "35 cents flat, retuned: peak-locked {peaks:.1} cents, PGHI + 32 GL {pghi:.1}; \
         MRSTFT on plucked notes: peak-locked {d_peaks:.3}, PGHI {d_pghi:.3}"
    );
    assert!(peaks.abs() < 8.0, "peak-locked: {peaks:.1} cents");
    assert!(d_peaks < 1.1 * d_pghi, "{d_peaks:.3} vs PGHI {d_pghi:.3}");
}
