//! `stemgen eval` end to end on a tiny seeded random model (a small magnitude-RVQ tokenizer
//! trained on the test songs) and constructed songs whose stems all play on their song's beat grid, at
//! tempos and keys that differ between songs: the report has every population and output,
//! the real pairs beat the shuffled pairs on onset-on-grid share, and normalisation is
//! (x - floor) / (ceiling - floor). Plus the derangement and the one-line input errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use stemgen::audio::{read_audio, write_wav, Audio, WavFormat};
use stemgen::codec::magnitude::{MagnitudeConfig, MagnitudeTokenizer};
use stemgen::eval::report::{
    PLOT_DISTANCES, PLOT_NORMALISED, PLOT_RAW, PLOT_SOUND_BAND, PLOT_SOUND_CLICKS,
};
use stemgen::eval::suite::{derangement, standard_populations, COHERENCE_METRICS, MIN_ANCHOR_GAP};
use stemgen::model::{ModelCheckpoint, ModelConfig};

const RATE: u32 = 32_000;

/// Levels and codebook size of the fixture EnCodec (4 x 256, 50 frames/s at 32 kHz); a
/// 200-frame (4 s) window so the context holds enough beats to track.
fn tiny_config() -> ModelConfig {
    ModelConfig::tiny(200)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A model directory: random tiny model and tokenizer.json. `songs`: a magnitude-RVQ
/// tokenizer (4 x 256 codes, like the fixture EnCodec) trained on their stems, so the codec
/// round trip keeps the onsets; `None`: the random-weight fixture EnCodec (fast to load, for
/// input errors).
fn model_dir(songs: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ModelCheckpoint::random(&tiny_config(), &Device::Cpu, 3)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let Some(songs) = songs else {
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
        return dir;
    };
    let mut clips = Vec::new();
    for song in std::fs::read_dir(songs).unwrap() {
        for stem in std::fs::read_dir(song.unwrap().path()).unwrap() {
            clips.push(read_audio(&stem.unwrap().path()).unwrap());
        }
    }
    let config = MagnitudeConfig {
        codebook_size: 256,
        gain_bits: 4,
        kmeans_iters: 4,
        max_train_frames: 2000,
        gl_iters: 16,
        ..MagnitudeConfig::default()
    };
    MagnitudeTokenizer::train(&clips, config, 5)
        .unwrap()
        .save(&dir.path().join("tokenizer"))
        .unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"kind": "magnitude-rvq", "dir": "tokenizer"}"#,
    )
    .unwrap();
    dir
}

fn midi_hz(m: f64) -> f64 {
    440.0 * 2f64.powf((m - 69.0) / 12.0)
}

/// Plucked notes (sum of `pitches`, MIDI) starting at `onsets` seconds: harmonics up to
/// 8 kHz and a short noise transient, so the onset is broadband as with real instruments
/// (the beat tracker's median-over-bands onset strength ignores a pure sine).
fn notes(seconds: f64, onsets: &[f64], pitches: &[f64], decay_s: f64, gain: f32) -> Vec<f32> {
    let n = (seconds * RATE as f64) as usize;
    let mut out = vec![0.0f32; n];
    let transient = clicks(seconds, onsets, 0.3);
    for &t0 in onsets {
        let start = (t0 * RATE as f64) as usize;
        let len = ((decay_s * 4.0) * RATE as f64) as usize;
        for k in 0..len.min(n.saturating_sub(start)) {
            let t = k as f64 / RATE as f64;
            let env = (-t / decay_s).exp() * (1.0 - (-t / 0.003).exp());
            let mut v = 0.0;
            for &m in pitches {
                let f0 = midi_hz(m);
                for h in (1..).take_while(|&h| h as f64 * f0 < 8000.0) {
                    let h = h as f64;
                    v += (std::f64::consts::TAU * h * f0 * t).sin() / h;
                }
            }
            out[start + k] += gain * (env * v / pitches.len() as f64) as f32;
        }
    }
    out.iter_mut().zip(&transient).for_each(|(o, t)| *o += t);
    out
}

/// Noise clicks (a fixed LCG, so the songs are deterministic) at `onsets` seconds.
fn clicks(seconds: f64, onsets: &[f64], gain: f32) -> Vec<f32> {
    let n = (seconds * RATE as f64) as usize;
    let mut out = vec![0.0f32; n];
    let mut state = 12345u32;
    for &t0 in onsets {
        let start = (t0 * RATE as f64) as usize;
        for k in 0..((0.04 * RATE as f64) as usize).min(n.saturating_sub(start)) {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            out[start + k] += gain * noise * (-(k as f32) / (0.008 * RATE as f32)).exp();
        }
    }
    out
}

/// Writes a song of drums (every beat), bass (every beat, the root) and piano (a triad every
/// two beats) at `bpm` in the major key of MIDI note `root`; `stems` picks which files exist.
fn write_song(dir: &Path, bpm: f64, root: f64, seconds: f64, stems: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let beat = 60.0 / bpm;
    let beats: Vec<f64> = (0..)
        .map(|k| 0.05 + k as f64 * beat)
        .take_while(|&t| t < seconds - 0.1)
        .collect();
    let halves: Vec<f64> = beats.iter().step_by(2).copied().collect();
    for &stem in stems {
        let samples = match stem {
            "drums" => clicks(seconds, &beats, 0.5),
            "bass" => notes(seconds, &beats, &[root - 12.0], 0.15, 0.5),
            "piano" => notes(
                seconds,
                &halves,
                &[root + 12.0, root + 16.0, root + 19.0],
                0.4,
                0.3,
            ),
            other => panic!("no stem {other}"),
        };
        let audio = Audio::mono(RATE, samples).unwrap();
        write_wav(&dir.join(format!("{stem}.wav")), &audio, WavFormat::Float32).unwrap();
    }
}

/// Four songs at clearly different tempos (not octave-related) and keys.
fn songs_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let songs = [(96.0, 45.0), (124.0, 50.0), (150.0, 43.0), (108.0, 48.0)];
    for (i, (bpm, root)) in songs.into_iter().enumerate() {
        write_song(
            &dir.path().join(format!("song-{i}")),
            bpm,
            root,
            7.0,
            &["drums", "bass", "piano"],
        );
    }
    dir
}

fn stemgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stemgen"))
        .args(args)
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Checks that a chart is a whole SVG document of a sensible size with bars in it, and
/// returns its text.
fn check_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "{}", path.display());
    assert!(text.trim_end().ends_with("</svg>"), "{}", path.display());
    let attr = |name: &str| -> u32 {
        let at = text.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        text[at..].split('"').next().unwrap().parse().unwrap()
    };
    assert!(
        attr("width") >= 400 && attr("height") >= 300,
        "{}",
        path.display()
    );
    assert!(
        text.matches("<rect").count() >= 3,
        "{}: no bars",
        path.display()
    );
    text
}

#[test]
fn eval_writes_every_population_and_the_ceiling_beats_the_floor() {
    let songs = songs_dir();
    let model = model_dir(Some(songs.path()));
    // A solo groove (no context to draw): its planned clip comes from the next song.
    write_song(
        &songs.path().join("song-4-solo"),
        110.0,
        45.0,
        7.0,
        &["drums"],
    );
    let out = tempfile::tempdir().unwrap();
    let clips = 6;
    let o = stemgen(&[
        "eval",
        "--model",
        path(model.path()),
        "--songs",
        path(songs.path()),
        "--clips",
        &clips.to_string(),
        "--preset",
        "draft",
        "--out",
        path(out.path()),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "eval failed: {stderr}");
    assert!(
        stderr.contains("eval: clip"),
        "progress on stderr: {stderr}"
    );
    assert!(
        stderr.contains("1 songs with a single stem skipped (no context to draw): song-4-solo"),
        "{stderr}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();

    // Every population, with one coherence result per clip.
    let pops = json["populations"].as_array().unwrap();
    let names: Vec<&str> = pops.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let expected: Vec<&str> = standard_populations(true, false)
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, expected);
    // The harmony variants come before the raw anchors when asked for.
    let harmony: Vec<&str> = standard_populations(false, true)
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(harmony[3..5], ["no_context_features", "true_chords"]);
    for name in [
        "real",
        "shuffled",
        "generated",
        "no_guidance",
        "context_guidance_only",
        "category_guidance_only",
        "no_causal_bias",
    ] {
        assert!(names.contains(&name), "{name} missing");
        assert!(
            md.contains(&format!("| {name} |")),
            "{name} not in report.md"
        );
    }
    for p in pops {
        assert_eq!(p["per_clip"].as_array().unwrap().len(), clips);
        assert_eq!(
            p["coherence"].as_array().unwrap().len(),
            COHERENCE_METRICS.len()
        );
    }
    let generated = &pops[2];
    assert_eq!(generated["settings"]["lambda_context"], 3.0);
    assert_eq!(pops[3]["settings"]["lambda_context"], 1.0);
    assert_eq!(pops[3]["settings"]["lambda_category"], 1.0);
    assert_eq!(pops[6]["settings"]["w_position"], 0.0);
    assert!(md.contains("not VGGish FAD"));

    // The clips: window length, varied targets, a derangement partner from another song.
    let clip_list = json["clips"].as_array().unwrap();
    assert_eq!(clip_list.len(), clips);
    assert!((json["window_seconds"].as_f64().unwrap() - 4.0).abs() < 1e-9);
    let mut targets: Vec<&str> = clip_list
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(
        targets,
        ["bass", "drums", "piano"],
        "targets vary across clips"
    );
    for (i, c) in clip_list.iter().enumerate() {
        assert_ne!(c["song"], "song-4-solo");
        let p = c["shuffled_partner"].as_u64().unwrap() as usize;
        assert_ne!(p, i);
        assert_ne!(clip_list[p]["song"], c["song"]);
    }

    // Ceiling above floor on onset-on-grid share: these stems sit on their own song's grid.
    let metric = |pop: &serde_json::Value, m: &str| -> serde_json::Value {
        pop["coherence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["metric"] == m)
            .unwrap()
            .clone()
    };
    let (real, shuffled) = (&pops[0], &pops[1]);
    let ceiling = metric(real, "onset_grid_share")["mean"].as_f64().unwrap();
    let floor = metric(shuffled, "onset_grid_share")["mean"]
        .as_f64()
        .unwrap();
    assert!(
        ceiling > floor + 0.1,
        "onset grid share: ceiling {ceiling} vs floor {floor}"
    );
    let raw_ceiling = metric(&pops[7], "onset_grid_share")["mean"]
        .as_f64()
        .unwrap();
    let raw_floor = metric(&pops[8], "onset_grid_share")["mean"]
        .as_f64()
        .unwrap();
    assert!(
        raw_ceiling > raw_floor + 0.1,
        "{raw_ceiling} vs {raw_floor}"
    );

    // Normalisation is (x - floor) / (ceiling - floor) with the tokenized anchors, for the
    // metrics whose ceiling lies above the floor beyond the clips' noise (as the report says).
    let separating = |m: &str| {
        json["ceiling_above_floor"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == m)
            .unwrap()[1]
            .as_bool()
            .unwrap()
    };
    assert!(
        separating("onset_grid_share"),
        "the clearest metric separates"
    );
    for m in COHERENCE_METRICS {
        let f = metric(shuffled, m)["mean"].as_f64();
        let c = metric(real, m)["mean"].as_f64();
        for p in pops {
            let s = metric(p, m);
            let norm = s["normalised"].as_f64();
            match (s["mean"].as_f64(), f, c) {
                (Some(x), Some(f), Some(c)) if separating(m) => {
                    assert!(c - f >= MIN_ANCHOR_GAP);
                    let want = (x - f) / (c - f);
                    let got = norm.unwrap();
                    assert!((got - want).abs() < 1e-9, "{m}: {got} vs {want}");
                }
                _ => assert!(
                    norm.is_none(),
                    "{m}: normalised without a ceiling above the floor"
                ),
            }
        }
    }
    // The same against the untokenized anchors, and the per-population means of both.
    let named = |name: &str| pops.iter().find(|p| p["name"] == name).unwrap();
    let (real_raw, shuffled_raw) = (named("real_raw"), named("shuffled_raw"));
    for p in pops {
        let mut defined = Vec::new();
        for m in COHERENCE_METRICS {
            let (x, f, c) = (
                metric(p, m)["mean"].as_f64(),
                metric(shuffled_raw, m)["mean"].as_f64(),
                metric(real_raw, m)["mean"].as_f64(),
            );
            let got = metric(p, m)["normalised_raw"].as_f64();
            // The untokenized anchors decide their own separation; where they normalise,
            // the value is the formula's.
            match (x, f, c, got) {
                (Some(x), Some(f), Some(c), Some(got)) => {
                    assert!(c - f >= MIN_ANCHOR_GAP, "{m}");
                    assert!((got - (x - f) / (c - f)).abs() < 1e-9, "{m}")
                }
                (_, _, _, got) => assert!(got.is_none() || x.is_none(), "{m}"),
            }
            defined.extend(metric(p, m)["normalised"].as_f64());
        }
        let want = defined.iter().sum::<f64>() / defined.len() as f64;
        assert!((p["normalised_mean"].as_f64().unwrap() - want).abs() < 1e-9);
    }
    // Bootstrap interval over the clips: the anchors sit exactly at 1 and 0 in every
    // resample; the model's interval is ordered.
    let interval = |p: &serde_json::Value| -> (f64, f64) {
        let i = &p["normalised_mean_interval"];
        (i[0].as_f64().unwrap(), i[1].as_f64().unwrap())
    };
    let (lo, hi) = interval(real);
    assert!(
        (lo - 1.0).abs() < 1e-9 && (hi - 1.0).abs() < 1e-9,
        "{lo} {hi}"
    );
    let (lo, hi) = interval(shuffled);
    assert!(lo.abs() < 1e-9 && hi.abs() < 1e-9, "{lo} {hi}");
    let (lo, hi) = interval(generated);
    assert!(lo <= hi, "{lo} {hi}");
    let n = metric(real, "onset_grid_share")["normalised"]
        .as_f64()
        .unwrap();
    assert!((n - 1.0).abs() < 1e-12);
    let n = metric(shuffled, "onset_grid_share")["normalised"]
        .as_f64()
        .unwrap();
    assert!(n.abs() < 1e-12);

    // Distribution distances are reported for every population; real against itself is
    // closest.
    for p in pops {
        assert!(p["classical_distances"]["mirdd_classical"]
            .as_f64()
            .is_some());
    }
    let kad = |p: &serde_json::Value| p["classical_distances"]["classical_kad"].as_f64().unwrap();
    assert!(kad(real) <= kad(generated));

    // The sound section: every measured category, generated next to real; generated stems
    // (model and ablations) stay below the output stage's true-peak ceiling.
    assert!(md.contains("## Sound quality per target category"));
    for p in pops {
        let sound = p["sound"].as_array().unwrap();
        assert!(!sound.is_empty());
        let name = p["name"].as_str().unwrap();
        if p["role"] == "model" || p["role"] == "ablation" {
            for s in sound {
                let peak = s["true_peak_dbfs_max"].as_f64().unwrap();
                assert!(peak <= -1.0, "{name}: {s}");
            }
        }
    }
    for name in [PLOT_SOUND_CLICKS, PLOT_SOUND_BAND] {
        check_svg(&out.path().join(name));
    }

    // The coherence charts are whole SVG documents naming every population.
    for name in [PLOT_NORMALISED, PLOT_RAW, PLOT_DISTANCES] {
        let svg = check_svg(&out.path().join(name));
        for p in pops {
            let population = p["name"].as_str().unwrap();
            let first_word = population.split('_').next().unwrap();
            assert!(svg.contains(first_word), "{name} lacks {population}");
        }
    }
}

#[test]
fn derangement_never_pairs_a_clip_with_itself() {
    for n in 2..40 {
        for groups in [1usize, 2, 3, 5, n] {
            let songs: Vec<usize> = (0..n).map(|i| i % groups).collect();
            let p = derangement(&songs, n as u64).unwrap();
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            assert!((0..n).all(|i| p[i] != i), "fixed point in {p:?}");
            // With no song holding more than half the clips, every partner is from another
            // song.
            let largest = (0..groups)
                .map(|g| songs.iter().filter(|&&s| s == g).count())
                .max()
                .unwrap();
            if 2 * largest <= n {
                assert!(
                    (0..n).all(|i| songs[p[i]] != songs[i]),
                    "same-song partner in {p:?} for {songs:?}"
                );
            }
        }
        // Deterministic per seed.
        let songs: Vec<usize> = (0..n).collect();
        assert_eq!(
            derangement(&songs, 7).unwrap(),
            derangement(&songs, 7).unwrap()
        );
    }
    assert!(derangement(&[0], 0).is_err());
}

/// Runs `eval --model M --songs S --out O EXTRA..` expecting failure; returns its one-line
/// error.
fn eval_error(model: &Path, songs: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "eval",
        "--model",
        path(model),
        "--songs",
        path(songs),
        "--out",
        path(out),
    ];
    args.extend_from_slice(extra);
    let o = stemgen(&args);
    assert!(!o.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: "), "{err}");
    last
}

#[test]
fn bad_inputs_give_one_line_errors_naming_the_path() {
    let out = tempfile::tempdir().unwrap();
    let songs = songs_dir();
    let missing = out.path().join("no-such-model");
    let e = eval_error(&missing, songs.path(), out.path(), &[]);
    assert!(e.contains("no-such-model"), "{e}");

    let model = model_dir(None);
    let empty = tempfile::tempdir().unwrap();
    let e = eval_error(model.path(), empty.path(), out.path(), &[]);
    assert!(e.contains(path(empty.path())), "{e}");

    let single = tempfile::tempdir().unwrap();
    let song = single.path().join("lonely-song");
    write_song(&song, 120.0, 45.0, 6.0, &["bass"]);
    let e = eval_error(model.path(), single.path(), out.path(), &["--clips", "2"]);
    assert!(
        e.contains("lonely-song") && e.contains("single stem"),
        "{e}"
    );

    let e = eval_error(model.path(), songs.path(), out.path(), &["--clips", "1"]);
    assert!(e.contains("--clips"), "{e}");
}
