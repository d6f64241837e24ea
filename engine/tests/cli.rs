//! The `stemgen` binary end to end: codec commands on WAV and FLAC, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stemgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stemgen"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn roundtrip_wav_and_flac_at_any_rate_and_channel_count() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("encodec/model.safetensors");
    // A 48 kHz, 3-channel WAV next to the 44.1 kHz stereo FLAC fixture.
    let wav = dir.path().join("in.wav");
    let ch: Vec<f32> = (0..24_000).map(|i| 0.3 * (i as f32 * 0.02).sin()).collect();
    let a = stemgen::audio::Audio::new(48_000, vec![ch.clone(), ch.clone(), ch]).unwrap();
    stemgen::audio::write_wav(&wav, &a, stemgen::audio::WavFormat::Int24).unwrap();
    for input in [wav, fixture("audio/tone.flac")] {
        let original = stemgen::audio::read_audio(&input).unwrap();
        let out = dir.path().join("out.wav");
        let o = stemgen(&[
            "codec",
            "roundtrip",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let back = stemgen::audio::read_audio(&out).unwrap();
        assert_eq!(back.sample_rate, original.sample_rate);
        assert_eq!(back.num_channels(), original.num_channels());
        assert_eq!(back.num_frames(), original.num_frames());
    }
}

#[test]
fn encode_then_decode_through_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("encodec/model.safetensors");
    let tokens = dir.path().join("tone.tokens.safetensors");
    let o = stemgen(&[
        "codec",
        "encode",
        fixture("audio/tone.flac").to_str().unwrap(),
        "-o",
        tokens.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--levels",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stemgen::codec::Tokens::load(&tokens).unwrap();
    assert_eq!(t.levels, 2);
    assert_eq!(
        t.frames,
        (11_025usize * 32_000).div_ceil(44_100).div_ceil(640)
    );
    let wav = dir.path().join("tone.wav");
    let o = stemgen(&[
        "codec",
        "decode",
        tokens.to_str().unwrap(),
        "-o",
        wav.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--rate",
        "48000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stemgen::audio::read_audio(&wav).unwrap().sample_rate,
        48_000
    );
}

/// `generate --tokens` writes the codes the sampler chose, and they decode to the stem's length.
#[test]
fn generate_writes_the_stems_tokens_for_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let model = workspace.join("assets/default");
    let (wav, tokens) = (dir.path().join("bass.wav"), dir.path().join("bass.tokens"));
    let o = stemgen(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--metronome",
        "--bpm",
        "120",
        "--bars",
        "1",
        "--instrument",
        "bass",
        "--steps",
        "draft",
        "--seed",
        "1",
        "--tokens",
        tokens.to_str().unwrap(),
        "-o",
        wav.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stemgen::codec::Tokens::load(&tokens).unwrap();
    // One bar of 4 beats at 120 BPM: 2 s, 50 frames per second, every level.
    assert_eq!((t.levels, t.frames), (5, 100));
    let decoded = dir.path().join("decoded.wav");
    let o = stemgen(&[
        "codec",
        "decode",
        "--tokenizer",
        model.to_str().unwrap(),
        tokens.to_str().unwrap(),
        "-o",
        decoded.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audio = stemgen::audio::read_audio(&decoded).unwrap();
    assert!(
        (audio.duration_secs() - 2.0).abs() < 0.05,
        "{}",
        audio.duration_secs()
    );
}

#[test]
fn failures_exit_non_zero_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("encodec/model.safetensors");
    let bad_weights = dir.path().join("broken.safetensors");
    std::fs::write(&bad_weights, b"definitely not weights").unwrap();
    let empty = dir.path().join("empty.flac");
    std::fs::write(&empty, b"").unwrap();
    let out = dir.path().join("o.wav");
    let tone = fixture("audio/tone.flac");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "codec",
                "roundtrip",
                tone.to_str().unwrap(),
                out.to_str().unwrap(),
                "--weights",
                bad_weights.to_str().unwrap(),
            ],
            "broken.safetensors",
        ),
        (
            vec![
                "codec",
                "roundtrip",
                empty.to_str().unwrap(),
                out.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
            ],
            "empty.flac",
        ),
        (
            vec![
                "codec",
                "roundtrip",
                "missing.wav",
                out.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
            ],
            "missing.wav: file not found",
        ),
    ];
    for (args, needle) in cases {
        let o = stemgen(&args);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn info_prints_the_config_and_parameter_count_or_a_clear_error() {
    use stemgen::model::{ModelCheckpoint, ModelConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig {
        levels: 2,
        codebook_size: 16,
        d_model: 32,
        n_layers: 1,
        n_heads: 2,
        n_categories: 3,
        max_frames: 64,
        ffn_multiple_of: 1,
        rope_theta: 10_000.0,
        p_ctx: 0.1,
        p_cat: 0.1,
        gain_steps: 0,
        context_features: Vec::new(),
    };
    let ck = ModelCheckpoint::random(&config, &candle_core::Device::Cpu, 1).unwrap();
    ck.save(dir.path()).unwrap();
    let o = stemgen(&["info", dir.path().to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("\"d_model\": 32"), "{out}");
    assert!(
        out.contains(&format!("parameters: {}", ck.parameter_count())),
        "{out}"
    );

    std::fs::write(dir.path().join("model.safetensors"), b"truncated").unwrap();
    let o = stemgen(&["info", dir.path().to_str().unwrap()]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("model.safetensors"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Every training command end to end on a tiny dataset: synthetic songs -> tokenizer ->
/// token cache -> a few model steps -> a stem generated with the trained checkpoint.
#[test]
fn training_pipeline_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let o = stemgen(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    run(&[
        "data",
        "synth",
        "--out",
        &p("songs"),
        "--songs",
        "3",
        "--seconds",
        "6",
        "--seed",
        "7",
        "--soundfont",
        "/usr/share/sounds/sf2/TimGM6mb.sf2",
    ]);
    let o = run(&[
        "train",
        "tokenizer",
        "--songs",
        &p("songs"),
        "--out",
        &p("tok"),
        "--codebook-size",
        "128",
    ]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("levels 4: LSD"), "{report}");
    // The decoder stages on frozen tokens, as the shipped tokenizer was made: a refinement
    // filter (then the postnet on top of it below), and the joint decoder refit.
    run(&[
        "train",
        "refine",
        "--tokenizer",
        &p("tok"),
        "--songs",
        &p("songs"),
        "--out",
        &p("tok-refine"),
        "--radius",
        "1",
    ]);
    assert!(dir.path().join("tok-refine/refine_report.json").is_file());
    run(&[
        "train",
        "decoder",
        "--tokenizer",
        &p("tok"),
        "--songs",
        &p("songs"),
        "--out",
        &p("tok-joint"),
        "--sweeps",
        "2",
    ]);
    assert!(dir.path().join("tok-joint/decoder_report.json").is_file());
    for decoded in ["tok-refine", "tok-joint"] {
        stemgen::codec::magnitude::MagnitudeTokenizer::load(&dir.path().join(decoded)).unwrap();
    }
    let o = run(&[
        "train",
        "postnet",
        "--tokenizer",
        &p("tok-refine"),
        "--songs",
        &p("songs"),
        "--out",
        &p("tok-postnet"),
        "--width",
        "16",
        "--layers",
        "1",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--window",
        "16",
        "--validate-every",
        "2",
    ]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("held-out songs: LSD"), "{report}");
    assert!(dir.path().join("tok-postnet/postnet_report.json").is_file());
    stemgen::codec::magnitude::MagnitudeTokenizer::load(&dir.path().join("tok-postnet")).unwrap();
    run(&[
        "data",
        "cache",
        "--songs",
        &p("songs"),
        "--tokenizer",
        &p("tok"),
        "--out",
        &p("cache"),
        "--pairs-per-song",
        "2",
        "--crop-seconds",
        "2",
    ]);
    let config = dir.path().join("tiny.json");
    std::fs::write(&config, r#"{"levels":4,"codebook_size":128,"d_model":32,"n_layers":1,"n_heads":2,
        "n_categories":18,"max_frames":100,"ffn_multiple_of":1,"rope_theta":10000.0,"p_ctx":0.2,"p_cat":0.2,
        "gain_steps":64}"#).unwrap();
    let o = run(&[
        "train",
        "model",
        "--cache",
        &p("cache"),
        "--tokenizer",
        &p("tok"),
        "--out",
        &p("model"),
        "--config",
        config.to_str().unwrap(),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--warmup",
        "1",
        "--checkpoint-every",
        "2",
        "--validate-every",
        "3",
        "--whole-level0-share",
        "0.5",
        "--context-onset-weight",
        "2",
    ]);
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("\"step\": 3"), "{printed}");
    assert!(
        printed.contains("target tokens/s") && printed.contains("% of the"),
        "{printed}"
    );
    // Held-out scores with the context probes: one row per level, four contexts each.
    let o = run(&[
        "validate",
        "--model",
        &p("model/checkpoint"),
        "--cache",
        &p("cache"),
        "--batches",
        "1",
        "--batch-size",
        "2",
        "--context-probes",
        "--whole-level",
    ]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("context reversed") && table.contains("every frame"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.matches(" / ").count() == 4)
            .count(),
        4,
        "{table}"
    );
    run(&[
        "generate",
        "--model",
        &p("model/checkpoint"),
        "--metronome",
        "--bpm",
        "100",
        "--bars",
        "1",
        "--instrument",
        "bass",
        "--steps",
        "draft",
        "--seed",
        "1",
        "-o",
        &p("stem.wav"),
    ]);
    let stem = stemgen::audio::read_audio(&dir.path().join("stem.wav")).unwrap();
    assert_eq!(stem.sample_rate, 44_100);
    assert!(
        (stem.duration_secs() - 2.4).abs() < 0.01,
        "{}",
        stem.duration_secs()
    );
}

/// `coherence` on the shipped example: the real bass line of the song follows the context's
/// tempo and key. A missing stem, or one under a second long, fails the whole command by name
/// before anything is printed, even when it comes after a good one.
#[test]
fn coherence_scores_stems_against_their_context() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let context = repo.join("assets/examples/song50-no-bass.wav");
    let bass = repo.join("assets/examples/song50-bass.wav");
    let o = stemgen(&[
        "coherence",
        "--context",
        context.to_str().unwrap(),
        bass.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("key G major"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("song50-bass.wav"))
        .unwrap_or_else(|| panic!("no row for the stem: {table}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | stem | s | tempo | key | onset on grid | beat F1 | tempo agree | key score | ...
    assert_eq!(cells[4], "G major", "{row}");
    assert_eq!(cells[7], "yes", "{row}");
    assert_eq!(cells[8], "1.000", "{row}");
    assert!(cells[6].parse::<f64>().unwrap() > 0.8, "beat F1: {row}");

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.wav");
    let blip = stemgen::audio::Audio::new(32_000, vec![vec![0.1; 8_000]]).unwrap();
    stemgen::audio::write_wav(&short, &blip, stemgen::audio::WavFormat::Float32).unwrap();
    for (stem, needle) in [
        ("missing.wav", "missing.wav: file not found"),
        (short.to_str().unwrap(), "short.wav: under a second"),
    ] {
        let o = stemgen(&[
            "coherence",
            "--context",
            context.to_str().unwrap(),
            bass.to_str().unwrap(),
            stem,
        ]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(needle), "{err}");
        assert!(o.stdout.is_empty(), "printed before failing");
    }
}

/// `sound` on the shipped example's bass: in its band, unclipped; a step added to it is one
/// more click, at its time; an unknown instrument fails by name.
#[test]
fn sound_measures_a_stem_and_says_where_its_clicks_are() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bass = repo.join("assets/examples/song50-bass.wav");
    let dir = tempfile::tempdir().unwrap();
    let stepped = dir.path().join("stepped.wav");
    let mut audio = stemgen::audio::read_audio(&bass).unwrap();
    let at = audio.sample_rate as usize * 3 / 2;
    for ch in &mut audio.channels {
        ch[at..at + 4].iter_mut().for_each(|v| *v += 0.5);
    }
    stemgen::audio::write_wav(&stepped, &audio, stemgen::audio::WavFormat::Float32).unwrap();
    let o = stemgen(&[
        "sound",
        "--instrument",
        "bass",
        "--clicks",
        bass.to_str().unwrap(),
        stepped.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = |name: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.starts_with('|') && l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    // | file | s | peak | true peak | hot | crest | clicks/s | out of band | ...
    let clean = row("song50-bass.wav");
    assert!(clean[8].parse::<f64>().unwrap() < 0.05, "{out}");
    assert!(clean[4].parse::<f64>().unwrap() < -1.0, "{out}");
    let times = |name: &str| -> Vec<f64> {
        let line = out
            .lines()
            .find(|l| l.starts_with("clicks in") && l.contains(name))
            .unwrap_or_else(|| panic!("{out}"));
        line.rsplit(':')
            .next()
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    // The bass's own note attacks count too (its clicks/s is not 0); the step is one more.
    let near = |ts: &[f64]| ts.iter().any(|t| (t - 1.5).abs() < 0.02);
    assert!(!near(&times("song50-bass.wav")), "{out}");
    assert!(near(&times("stepped.wav")), "{out}");
    assert_eq!(
        times("stepped.wav").len(),
        times("song50-bass.wav").len() + 1,
        "{out}"
    );
    let o = stemgen(&["sound", "--instrument", "kazoo", bass.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("kazoo"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_shipped_tokenizer_round_trips_every_format_at_its_rate_and_channel_count() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tokenizer = workspace.join("assets/default/tokenizer");
    let model_dir = workspace.join("assets/default");
    // Two seconds of the shipped example song as a 48 kHz, 3-channel WAV: music, which is what
    // the tokenizer learned (pure tones come back far quieter: their spectrum is all floor
    // around one peak, unlike any training frame).
    let wav = dir.path().join("in.wav");
    let song = stemgen::audio::read_audio(&workspace.join("assets/examples/song50-no-bass.wav"))
        .unwrap()
        .to_mono_at(48_000)
        .unwrap();
    let ch: Vec<f32> = song.channels[0][48_000..144_000].to_vec();
    let a = stemgen::audio::Audio::new(48_000, vec![ch.clone(), ch.clone(), ch]).unwrap();
    stemgen::audio::write_wav(&wav, &a, stemgen::audio::WavFormat::Int24).unwrap();
    let inputs = [
        wav,
        fixture("audio/tone.flac"),
        fixture("audio/tone.ogg"),
        fixture("audio/tone.mp3"),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let original = stemgen::audio::read_audio(input).unwrap();
        let out = dir.path().join(format!("out{i}.wav"));
        // The tokenizer folder itself, or a model directory naming it.
        let source = if i % 2 == 0 { &tokenizer } else { &model_dir };
        let o = stemgen(&[
            "codec",
            "roundtrip",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--tokenizer",
            source.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}: {}", input.display(), stderr(&o));
        let back = stemgen::audio::read_audio(&out).unwrap();
        assert_eq!(back.sample_rate, original.sample_rate);
        assert_eq!(back.num_channels(), original.num_channels());
        assert_eq!(back.num_frames(), original.num_frames());
        if i == 0 {
            let (orig_db, back_db) = (
                stemgen::audio::rms_dbfs(&original.channels),
                stemgen::audio::rms_dbfs(&back.channels),
            );
            assert!(
                (orig_db - back_db).abs() < 3.0,
                "{}: level {orig_db:.1} dBFS came back at {back_db:.1}",
                input.display()
            );
        }
    }
    // Through a token file, and a clear error without a tokenizer.
    let tokens = dir.path().join("tone.tokens.safetensors");
    let o = stemgen(&[
        "codec",
        "encode",
        fixture("audio/tone.flac").to_str().unwrap(),
        "-o",
        tokens.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let decoded = dir.path().join("decoded.wav");
    let o = stemgen(&[
        "codec",
        "decode",
        tokens.to_str().unwrap(),
        "-o",
        decoded.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = stemgen::audio::read_audio(&decoded).unwrap();
    assert_eq!(full.sample_rate, 32_000);
    // `--levels` decodes the file's first levels (level 0 alone sounds different), and
    // refuses more levels than the file holds.
    let coarse = dir.path().join("coarse.wav");
    let decode_levels = |tokens: &Path, levels: &str, out: &Path| {
        stemgen(&[
            "codec",
            "decode",
            tokens.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--levels",
            levels,
        ])
    };
    let o = decode_levels(&tokens, "1", &coarse);
    assert!(o.status.success(), "{}", stderr(&o));
    let coarse = stemgen::audio::read_audio(&coarse).unwrap();
    assert_eq!(coarse.num_frames(), full.num_frames());
    assert_ne!(coarse.channels, full.channels);
    let two = dir.path().join("two.tokens.safetensors");
    let o = stemgen(&[
        "codec",
        "encode",
        fixture("audio/tone.flac").to_str().unwrap(),
        "-o",
        two.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--levels",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = decode_levels(&two, "3", &dir.path().join("none.wav"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds only 2 levels") && stderr(&o).contains("two.tokens"));
    let o = stemgen(&["codec", "roundtrip", "a.wav", "b.wav"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--weights") && stderr(&o).contains("--tokenizer"));
}
