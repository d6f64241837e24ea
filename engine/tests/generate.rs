//! engine::generate end to end on a tiny seeded model and the tiny EnCodec fixture:
//! lengths and rates, seeds, metronome grid, editing, cancel, bad inputs, and the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use stemgen::analysis::context_features::ContextFeature;
use stemgen::analysis::harmony::{parse_key, ChordChart};
use stemgen::audio::{read_audio, write_wav, Audio, WavFormat};
use stemgen::generate::{
    is_cancelled, metronome, CategoryChoice, ContextSource, EditRequest, GenerateRequest,
    GeneratedStem, Generator, Length, PreviousTake, Progress,
};
use stemgen::model::{ModelCheckpoint, ModelConfig};
use stemgen::sample::Preset;

/// Levels and codebook size match the fixture EnCodec (4 x 256, 50 frames/s at 32 kHz);
/// 40-frame windows so a 1.5 s stem (75 frames) needs three overlapping windows.
fn tiny_config() -> ModelConfig {
    ModelConfig::tiny(40)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A model directory: random tiny model, the fixture EnCodec in `codec/`, tokenizer.json.
fn model_dir(config: &ModelConfig) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ModelCheckpoint::random(config, &Device::Cpu, 3)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let codec = dir.path().join("codec");
    std::fs::create_dir(&codec).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture(&format!("encodec/{f}")), codec.join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"kind": "encodec", "weights": "codec/model.safetensors"}"#,
    )
    .unwrap();
    dir
}

/// 2 s of a stereo chord with a pulse at 44.1 kHz.
fn music(seconds: f64, rate: u32) -> Audio {
    let n = (seconds * rate as f64) as usize;
    let ch = |detune: f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let pulse = if (t * 4.0).fract() < 0.1 { 1.0 } else { 0.4 };
                pulse
                    * (0.3 * (std::f32::consts::TAU * 110.0 * detune * t).sin()
                        + 0.2 * (std::f32::consts::TAU * 277.0 * t).sin())
            })
            .collect()
    };
    Audio::new(rate, vec![ch(1.0), ch(1.01)]).unwrap()
}

fn request(
    generator: &Generator,
    context: ContextSource,
    seconds: f64,
    seed: u64,
) -> GenerateRequest {
    let mut req = GenerateRequest::new(
        context,
        CategoryChoice::Name("bass".into()),
        generator.settings(Preset::Draft).with_seed(seed),
    );
    req.length = Some(Length::Seconds(seconds));
    req
}

fn run(generator: &Generator, req: &GenerateRequest) -> anyhow::Result<GeneratedStem> {
    generator.generate(req, &mut |_| {}, &AtomicBool::new(false))
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn generates_the_requested_length_and_rate_over_several_windows() {
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let mut req = request(&g, ContextSource::Audio(music(2.0, 44_100)), 1.5, 1);
    req.output_rate = 48_000;
    req.output_channels = 2;
    let mut windows = 0;
    let mut sampling = 0;
    let stem = g
        .generate(
            &req,
            &mut |p| {
                if let Progress::Sampling { windows: w, .. } = p {
                    windows = w;
                    sampling += 1;
                }
            },
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(stem.audio.sample_rate, 48_000);
    assert_eq!(stem.audio.num_channels(), 2);
    assert_eq!(stem.audio.num_frames(), 72_000);
    assert!(stem.audio.first_non_finite().is_none());
    assert_eq!((stem.tokens.levels, stem.tokens.frames), (4, 75));
    assert_eq!(windows, 3, "75 frames in 40-frame windows with 25% overlap");
    assert!(sampling > 0);
    let m = &stem.metadata;
    assert_eq!((m.seed, m.category.as_str(), m.frames), (1, "bass", 75));
    assert!((m.seconds - 1.5).abs() < 1e-9);
    assert!(m.timings.sample_s > 0.0 && m.timings.total_s >= m.timings.sample_s);
    // The output stage: never above the true-peak ceiling, and only ever turned down.
    let true_peak = stemgen::audio::true_peak_dbfs(&stem.audio.channels);
    assert!(
        true_peak <= stemgen::generate::OUTPUT_CEILING_DBFS,
        "{true_peak} dBFS"
    );
    assert!(m.output_gain_db <= 0.0);

    // A context shorter than the request is silence-padded; no length = the context's.
    let short = request(&g, ContextSource::Audio(music(0.5, 22_050)), 1.0, 1);
    assert_eq!(run(&g, &short).unwrap().tokens.frames, 50);
    let mut own = short.clone();
    own.length = None;
    assert_eq!(run(&g, &own).unwrap().tokens.frames, 25);
}

#[test]
fn a_coarse_preview_comes_before_the_full_take() {
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let mut req = request(&g, ContextSource::Audio(music(1.0, 44_100)), 0.6, 2);
    req.preview_levels = Some(1);
    let mut events = Vec::new();
    let mut last_step = None;
    let mut preview_after = None;
    let stem = g
        .generate(
            &req,
            &mut |p| match p {
                Progress::Sampling {
                    level, step, steps, ..
                } => last_step = Some((level, step, steps)),
                Progress::Preview { audio, levels, .. } => {
                    preview_after = last_step;
                    events.push(format!("preview {levels}"));
                    assert_eq!(
                        (audio.sample_rate, audio.num_channels(), audio.num_frames()),
                        (44_100, 2, 26_460)
                    );
                    assert!(audio.channels.iter().flatten().all(|s| s.is_finite()));
                }
                Progress::Decoding { .. } => events.push("decoding".into()),
                _ => {}
            },
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(
        events.first().map(String::as_str),
        Some("preview 1"),
        "{events:?}"
    );
    assert!(events.contains(&"decoding".to_string()));
    // Early: after 30% of level 0's iterations, rounded up.
    let (level, step, steps) = preview_after.expect("a preview");
    assert_eq!(level, 0);
    assert!(steps > 1, "the test needs several level-0 iterations");
    assert_eq!(step, (steps as f64 * 0.3).ceil() as usize);
    // The same seed gives the same take with or without a preview.
    req.preview_levels = None;
    assert_eq!(run(&g, &req).unwrap().tokens, stem.tokens);
    // A stem longer than one window: one preview of the whole length, the first window
    // heard and silence after it.
    req.preview_levels = Some(1);
    req.length = Some(Length::Seconds(1.5));
    let window_s = g.config().max_frames as f64 / g.tokenizer().frame_rate();
    assert!(
        window_s < 1.4,
        "the test needs a stem longer than the window"
    );
    let mut previews = Vec::new();
    g.generate(
        &req,
        &mut |p| {
            if let Progress::Preview { audio, .. } = p {
                previews.push(audio);
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(previews.len(), 1);
    let preview = &previews[0];
    assert_eq!(preview.num_frames(), 66_150);
    let end = ((window_s + 0.05) * 44_100.0) as usize;
    let left = &preview.channels[0];
    assert!(
        left[..end].iter().any(|s| s.abs() > 1e-4),
        "the first window is heard"
    );
    assert!(
        left[end..].iter().all(|&s| s == 0.0),
        "silent after the first window"
    );
}

#[test]
fn same_seed_same_audio_different_seed_different() {
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let ctx = ContextSource::Audio(music(1.0, 32_000));
    let a = run(&g, &request(&g, ctx.clone(), 1.0, 7)).unwrap();
    let b = run(&g, &request(&g, ctx.clone(), 1.0, 7)).unwrap();
    let c = run(&g, &request(&g, ctx, 1.0, 8)).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.audio, b.audio);
    assert_ne!(a.tokens, c.tokens);
    assert_ne!(a.audio, c.audio);
}

/// Sample indices where a click starts: the first sample above a threshold after at least
/// 50 ms below it.
fn onsets(samples: &[f32], rate: u32) -> Vec<usize> {
    let gap = rate as usize / 20;
    let mut out = Vec::new();
    let mut quiet = gap;
    for (i, s) in samples.iter().enumerate() {
        if s.abs() > 0.02 {
            if quiet >= gap {
                out.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    out
}

#[test]
fn metronome_clicks_land_on_the_beat_grid_with_accented_downbeats() {
    for (bpm, beats_per_bar, bars, rate) in [(120.0, 4, 2, 32_000), (97.0, 3, 3, 44_100)] {
        let click = metronome(bpm, beats_per_bar, bars, rate);
        assert_eq!(click.sample_rate, rate);
        let beat_s = 60.0 / bpm;
        let expected = (bars * beats_per_bar) as usize;
        let expect_len = (expected as f64 * beat_s * rate as f64).round() as usize;
        assert_eq!(click.num_frames(), expect_len);
        let on = onsets(&click.channels[0], rate);
        assert_eq!(on.len(), expected, "{bpm} BPM");
        for (k, &i) in on.iter().enumerate() {
            let err = (i as f64 / rate as f64 - k as f64 * beat_s).abs();
            assert!(err < 0.001, "beat {k} is {err} s off the grid");
        }
        let peak = |i: usize| {
            click.channels[0][i..i + rate as usize / 50]
                .iter()
                .fold(0f32, |m, s| m.max(s.abs()))
        };
        for (k, &i) in on.iter().enumerate() {
            if k % beats_per_bar as usize == 0 {
                assert!(peak(i) > 1.5 * peak(on[1]), "downbeat {k} is not accented");
            }
        }
    }

    // As a context: length follows the bars when none is given, and metadata the tempo.
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let mut req = request(
        &g,
        ContextSource::Metronome {
            bpm: 240.0,
            beats_per_bar: 4,
            bars: 1,
        },
        1.0,
        2,
    );
    req.length = None;
    let stem = run(&g, &req).unwrap();
    assert_eq!(stem.audio.num_frames(), 44_100);
    assert_eq!(stem.audio.num_channels(), 2);
    assert_eq!(stem.metadata.tempo_bpm, Some(240.0));
    assert_eq!(stem.metadata.context, "metronome");
    // A length beyond the given bars extends the click track.
    req.length = Some(Length::Seconds(1.5));
    assert_eq!(run(&g, &req).unwrap().tokens.frames, 75);
}

#[test]
fn edit_keeps_tokens_outside_the_region() {
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let base = request(&g, ContextSource::Audio(music(1.0, 32_000)), 1.0, 4);
    let take = run(&g, &base).unwrap();
    let mut edit = base.clone();
    edit.settings.seed = 5;
    edit.edit = Some(EditRequest {
        region: 0.4..0.6,
        previous: PreviousTake::Tokens(take.tokens.clone()),
    });
    let edited = run(&g, &edit).unwrap();
    let (a, b) = (20, 30); // 0.4..0.6 s at 50 frames/s
    let mut changed = false;
    for q in 0..4 {
        let (old, new) = (take.tokens.level(q), edited.tokens.level(q));
        assert_eq!(old[..a], new[..a], "level {q} changed before the region");
        assert_eq!(old[b..], new[b..], "level {q} changed after the region");
        changed |= old[a..b] != new[a..b];
    }
    assert!(changed, "nothing was regenerated inside the region");
    assert_eq!(edited.metadata.region, Some((0.4, 0.6)));

    // A take given as audio is encoded like the context; the region must lie in the stem.
    edit.edit = Some(EditRequest {
        region: 0.2..0.5,
        previous: PreviousTake::Audio(take.audio.clone()),
    });
    let from_audio = run(&g, &edit).unwrap();
    let encoded = g
        .tokenizer()
        .encode(
            &take.audio.to_mono_at(32_000).unwrap(),
            &mut stemgen::codec::no_progress(),
        )
        .unwrap();
    assert_eq!(from_audio.tokens.level(0)[30..], encoded.level(0)[30..50]);
    // Its audio outside the region (and the 20 ms seams) is the previous take's, bit for bit;
    // inside, the new take's; no step at the seams larger than the signals make.
    let rate = take.audio.sample_rate as f64;
    let at = |s: f64| (s * rate) as usize;
    let (old, new) = (&take.audio.channels[0], &from_audio.audio.channels[0]);
    assert_eq!(old[..at(0.19)], new[..at(0.19)]);
    assert_eq!(old[at(0.51)..], new[at(0.51)..]);
    assert_ne!(old[at(0.21)..at(0.49)], new[at(0.21)..at(0.49)]);
    let largest_step = |x: &[f32]| x.windows(2).fold(0.0f32, |m, w| m.max((w[1] - w[0]).abs()));
    let seams = largest_step(&new[at(0.18)..at(0.22)]).max(largest_step(&new[at(0.48)..at(0.52)]));
    let bodies = largest_step(old).max(largest_step(&new[at(0.21)..at(0.49)]));
    assert!(
        seams <= bodies * 1.5 + 1e-6,
        "seam step {seams} vs {bodies}"
    );
    edit.edit = Some(EditRequest {
        region: 2.0..3.0,
        previous: PreviousTake::Tokens(take.tokens.clone()),
    });
    assert!(err_text(run(&g, &edit)).contains("region"));
}

#[test]
fn cancel_returns_a_cancelled_error() {
    let dir = model_dir(&tiny_config());
    let g = Generator::load(dir.path()).unwrap();
    let req = request(&g, ContextSource::Audio(music(1.0, 32_000)), 1.0, 1);
    let cancel = AtomicBool::new(true);
    let err = g.generate(&req, &mut |_| {}, &cancel).unwrap_err();
    assert!(is_cancelled(&err), "{err:#}");

    // Cancelled during sampling: stops within one iteration.
    let cancel = AtomicBool::new(false);
    let mut after = 0;
    let err = g
        .generate(
            &req,
            &mut |p| {
                if let Progress::Sampling { .. } = p {
                    if cancel.swap(true, Ordering::Relaxed) {
                        after += 1;
                    }
                }
            },
            &cancel,
        )
        .unwrap_err();
    assert!(is_cancelled(&err), "{err:#}");
    assert_eq!(after, 0);
    assert_eq!(format!("{err}"), "generation cancelled");
}

#[test]
fn chords_and_a_key_condition_a_model_with_context_features() {
    let config = ModelConfig {
        context_features: ContextFeature::ALL.to_vec(),
        ..tiny_config()
    };
    let dir = model_dir(&config);
    let g = Generator::load(dir.path()).unwrap();
    let click = ContextSource::Metronome {
        bpm: 120.0,
        beats_per_bar: 4,
        bars: 1,
    };
    let mut req = request(&g, click.clone(), 2.0, 4);
    req.harmony.chords = Some(ChordChart::parse("C | Am F").unwrap());
    req.harmony.key = Some(parse_key("C major").unwrap());
    let stem = run(&g, &req).unwrap();
    assert_eq!(stem.metadata.chords.as_deref(), Some("C | Am F"));
    assert_eq!(stem.metadata.key.as_deref(), Some("C major"));
    let json = serde_json::to_string(&stem.metadata).unwrap();
    assert!(json.contains(r#""chords":"C | Am F""#), "{json}");
    // Chords need a tempo: an audio context with a length in seconds has none.
    let mut req = request(&g, ContextSource::Audio(music(2.0, 32_000)), 1.0, 4);
    req.harmony.chords = Some(ChordChart::parse("C").unwrap());
    assert!(err_text(run(&g, &req)).contains("--bpm"));
    req.harmony.tempo = Some((120.0, 4));
    assert!(run(&g, &req).is_ok());
    // No features: runs, and says so.
    let mut req = request(&g, click.clone(), 2.0, 4);
    req.harmony.no_features = true;
    assert!(run(&g, &req).unwrap().metadata.no_context_features);

    // A model without context features refuses chords rather than ignoring them.
    let plain_dir = model_dir(&tiny_config());
    let plain = Generator::load(plain_dir.path()).unwrap();
    let mut req = request(&plain, click, 2.0, 4);
    req.harmony.key = Some(parse_key("A minor").unwrap());
    assert!(err_text(run(&plain, &req)).contains("no harmony conditioning"));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let config = tiny_config();
    let dir = model_dir(&config);
    let g = Generator::load(dir.path()).unwrap();
    let ctx = ContextSource::Audio(music(1.0, 32_000));

    let mut req = request(&g, ctx.clone(), 1.0, 1);
    req.category = CategoryChoice::Name("kazoo".into());
    let e = err_text(run(&g, &req));
    assert!(
        e.contains("kazoo") && e.contains("bass") && e.contains("drums"),
        "{e}"
    );

    let tiny = Audio::mono(32_000, vec![0.5; 100]).unwrap();
    let e = err_text(run(&g, &request(&g, ContextSource::Audio(tiny), 1.0, 1)));
    assert!(e.contains("shorter than one token frame"), "{e}");

    let silent = Audio::mono(32_000, vec![0.0; 32_000]).unwrap();
    let e = err_text(run(&g, &request(&g, ContextSource::Audio(silent), 1.0, 1)));
    assert!(e.contains("silent"), "{e}");

    let e = err_text(run(&g, &request(&g, ctx.clone(), 700.0, 1)));
    assert!(e.contains("limit"), "{e}");
    let click = ContextSource::Metronome {
        bpm: 120.0,
        beats_per_bar: 4,
        bars: 100_000,
    };
    let mut req = request(&g, click, 1.0, 1);
    req.length = None;
    let e = err_text(run(&g, &req));
    assert!(e.contains("limit"), "{e}");

    let e = err_text(run(
        &g,
        &request(
            &g,
            ContextSource::Metronome {
                bpm: 0.0,
                beats_per_bar: 4,
                bars: 2,
            },
            1.0,
            1,
        ),
    ));
    assert!(e.contains("BPM"), "{e}");

    // Model directories.
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = err_text(Generator::load(dir.path()));
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    std::fs::write(dir.path().join("tokenizer.json"), r#"{"kind": "opus"}"#).unwrap();
    let e = err_text(Generator::load(dir.path()));
    assert!(
        e.contains("unknown tokenizer kind 'opus'") && e.contains("encodec"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"kind": "encodec", "weights": "nope.safetensors"}"#,
    )
    .unwrap();
    let e = err_text(Generator::load(dir.path()));
    assert!(
        e.contains("nope.safetensors") && e.contains("does not exist"),
        "{e}"
    );

    let mismatched = model_dir(&ModelConfig {
        codebook_size: 128,
        ..tiny_config()
    });
    let e = err_text(Generator::load(mismatched.path()));
    assert!(e.contains("256 codes") && e.contains("128 codes"), "{e}");

    let e = err_text(Generator::load(&dir.path().join("missing")));
    assert!(e.contains("not a model directory"), "{e}");
}

fn stemgen_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stemgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_generates_from_a_context_and_a_metronome() {
    let dir = model_dir(&tiny_config());
    let model = dir.path().to_str().unwrap();
    let ctx = dir.path().join("mix.wav");
    write_wav(&ctx, &music(1.0, 48_000), WavFormat::Int24).unwrap();
    let out = dir.path().join("bass.wav");
    let o = stemgen_cli(&[
        "generate",
        "--model",
        model,
        "--context",
        ctx.to_str().unwrap(),
        "--instrument",
        "bass",
        "--seconds",
        "0.8",
        "--steps",
        "draft",
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("seed 3"), "{stderr}");
    let a = read_audio(&out).unwrap();
    assert_eq!(
        (a.sample_rate, a.num_channels(), a.num_frames()),
        (48_000, 2, 38_400)
    );

    // Edit a region of that take.
    let edited = dir.path().join("bass2.wav");
    let o = stemgen_cli(&[
        "generate",
        "--model",
        model,
        "--context",
        ctx.to_str().unwrap(),
        "--instrument",
        "bass",
        "--steps",
        "draft",
        "--region",
        "0.2..0.4",
        "--take",
        out.to_str().unwrap(),
        "-o",
        edited.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let click = dir.path().join("drums.wav");
    let o = stemgen_cli(&[
        "generate",
        "--model",
        model,
        "--metronome",
        "--bpm",
        "240",
        "--bars",
        "1",
        "--instrument",
        "drums",
        "--steps",
        "draft",
        "-o",
        click.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = read_audio(&click).unwrap();
    assert_eq!(
        (a.sample_rate, a.num_channels(), a.num_frames()),
        (44_100, 2, 44_100)
    );

    for (args, needle) in [
        (
            vec!["--metronome", "--bpm", "120", "--instrument", "drums"],
            "--bars",
        ),
        (
            vec![
                "--metronome",
                "--bpm",
                "120",
                "--bars",
                "2",
                "--instrument",
                "kazoo",
            ],
            "valid names",
        ),
        (
            vec![
                "--metronome",
                "--bpm",
                "120",
                "--bars",
                "2",
                "--instrument",
                "bass",
                "--chords",
                "Am | Hm7",
            ],
            "'Hm7' in bar 2",
        ),
        (
            vec![
                "--metronome",
                "--bpm",
                "120",
                "--bars",
                "2",
                "--instrument",
                "bass",
                "--key",
                "H",
            ],
            "G minor",
        ),
    ] {
        let mut full = vec!["generate", "--model", model];
        full.extend(args);
        full.extend(["-o", click.to_str().unwrap()]);
        let o = stemgen_cli(&full);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
            "{stderr}"
        );
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn export_stores_half_precision_weights_that_load_and_generate() {
    let dir = model_dir(&tiny_config());
    std::fs::write(dir.path().join("train_state.json"), "{}").unwrap();
    std::fs::copy(
        dir.path().join("model.safetensors"),
        dir.path().join("optimizer.safetensors"),
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("exported");
    stemgen::pipeline::export_model_dir(dir.path(), &out, true).unwrap();
    assert!(!out.join("train_state.json").exists());
    assert!(!out.join("optimizer.safetensors").exists());

    let original =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let halved =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(original.len(), halved.len());
    for (name, t) in &original {
        let h = &halved[name];
        assert_eq!(h.dtype(), candle_core::DType::F16, "{name}");
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = h
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-3 * x.abs().max(1e-2),
                "{name}: {x} vs {y}"
            );
        }
    }
    let generator = Generator::load(&out).unwrap();
    let stem = run(
        &generator,
        &request(&generator, ContextSource::Audio(music(1.0, 32_000)), 0.5, 1),
    )
    .unwrap();
    assert!(stem.audio.first_non_finite().is_none());

    // Exporting over or into its own source is refused rather than recursing or corrupting it.
    assert!(stemgen::pipeline::export_model_dir(&out, &out, true).is_err());
    let inside = stemgen::pipeline::export_model_dir(dir.path(), &dir.path().join("x"), true);
    assert!(format!("{:#}", inside.unwrap_err()).contains("must be outside"));
}

#[test]
fn bench_generate_reports_every_preset_and_length() {
    let dir = model_dir(&tiny_config());
    let o = stemgen_cli(&[
        "bench",
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--presets",
        "draft",
        "--seconds",
        "0.5,1",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, seconds) in runs.iter().zip([0.5, 1.0]) {
        assert_eq!(run["preset"], "draft");
        assert_eq!(run["seconds"].as_f64().unwrap(), seconds);
        assert!(run["iterations"].as_u64().unwrap() >= 4, "{run}");
        assert!(run["total_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn cli_device_flag_gives_a_clear_error_for_unavailable_or_unknown_devices() {
    let dir = model_dir(&tiny_config());
    let model = dir.path().to_str().unwrap();
    let base = [
        "generate",
        "--model",
        model,
        "--metronome",
        "--bpm",
        "120",
        "--bars",
        "1",
        "--instrument",
        "bass",
        "-o",
        "never.wav",
    ];
    let o = stemgen_cli(&[&base[..], &["--device", "tpu"]].concat());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--device 'tpu' is not one of cpu, cuda, metal"));
    if !cfg!(feature = "cuda") {
        let o = stemgen_cli(&[&base[..], &["--device", "cuda"]].concat());
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--features cuda"));
    }
}
