//! `train::train_model` end to end on a tiny token cache: the loss falls, checkpoints are
//! written, and an interrupted run resumes where its checkpoint stopped.

use candle_core::{Device, Tensor};
use std::path::Path;
use stemgen::analysis::context_features::ContextFeature;
use stemgen::audio::{write_wav, Audio, WavFormat};
use stemgen::codec::encodec::Encodec;
use stemgen::data::cache::{write_shard, CacheConfig, ShardSpec, TokenCache};
use stemgen::data::pairs::PairConfig;
use stemgen::model::{ModelCheckpoint, ModelConfig};
use stemgen::train::features::{batch_features, FeatureMix};
use stemgen::train::{
    context_onset_weights, held_out_accuracy, train_model, ContextProbe, HeldOutOptions,
    LrSchedule, ModelTrainConfig,
};

use std::f32::consts::TAU;

const SR: u32 = 32_000;

/// Songs of three stems: a bass pulse on the beat, a chord pad and a hat on the off-beats,
/// at a tempo that varies per song, so the target is predictable from the context.
fn write_dataset(root: &Path, songs: usize) {
    for s in 0..songs {
        let dir = root.join(format!("song-{s:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        let beat = 0.35 + 0.05 * s as f32;
        let n = SR as usize * 2;
        let stem = |f: &dyn Fn(f32) -> f32| -> Audio {
            Audio::mono(SR, (0..n).map(|i| f(i as f32 / SR as f32)).collect()).unwrap()
        };
        let env = |t: f32, offset: f32| (-((t + offset) % beat) * 20.0).exp();
        let bass = stem(&|t| 0.4 * env(t, 0.0) * (TAU * 110.0 * t).sin());
        let pad = stem(&|t| 0.1 * ((TAU * 440.0 * t).sin() + (TAU * 554.0 * t).sin()));
        let hat = stem(&|t| 0.2 * env(t, beat / 2.0) * (TAU * 5000.0 * t).sin());
        for (name, audio) in [("bass", bass), ("strings", pad), ("drums", hat)] {
            write_wav(&dir.join(format!("{name}.wav")), &audio, WavFormat::Float32).unwrap();
        }
    }
}

fn tiny_model() -> ModelConfig {
    ModelConfig {
        levels: 4,
        codebook_size: 256,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_categories: 18,
        max_frames: 64,
        ffn_multiple_of: 1,
        rope_theta: 10_000.0,
        p_ctx: 0.1,
        p_cat: 0.1,
        gain_steps: 0,
        context_features: Vec::new(),
    }
}

fn train_config(steps: usize) -> ModelTrainConfig {
    ModelTrainConfig {
        steps,
        batch_size: 4,
        schedule: LrSchedule {
            peak: 3e-3,
            warmup: 5,
            hold: 100,
            half_life: 100,
        },
        weight_decay: 0.0,
        clip_norm: 1.0,
        validate_every: 10,
        checkpoint_every: 10,
        validation_batches: 1,
        seed: 3,
        init_from: None,
        stop_after: None,
        whole_level0_share: 0.0,
        context_onset_weight: 1.0,
        chord_template_share: 0.0,
        feature_drop_share: 0.0,
        features_lr_scale: 1.0,
    }
}

/// A token cache of `songs` songs with `pairs_per_song` 1 s pairs, tokenised by the tiny
/// fixture EnCodec.
fn tiny_cache(songs: usize, pairs_per_song: usize) -> TokenCache {
    let data = tempfile::tempdir().unwrap();
    write_dataset(data.path(), songs);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encodec/model.safetensors");
    let codec = Encodec::load_with_sidecar_config(&fixture, &Device::Cpu).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        pairs: PairConfig {
            crop_seconds: 1.0,
            ..PairConfig::default()
        },
        pairs_per_song,
        seed: 1,
    };
    write_shard(
        data.path(),
        &codec,
        &config,
        ShardSpec::ALL,
        cache_dir.path(),
        &mut |_, _| {},
    )
    .unwrap();
    TokenCache::open(cache_dir.path()).unwrap()
}

#[test]
fn trains_checkpoints_and_resumes() {
    let cache = tiny_cache(11, 4);
    assert_eq!(cache.info.frames, 50);

    let out = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    // Stopped after 20 steps of a 60-step schedule...
    let mut stopped = train_config(60);
    stopped.stop_after = Some(20);
    train_model(
        &cache,
        &tiny_model(),
        &stopped,
        out.path(),
        &Device::Cpu,
        &mut |_, _, l, _| losses.push(l),
    )
    .unwrap();
    assert!(out.path().join("checkpoint/model.safetensors").is_file());
    let state = std::fs::read_to_string(out.path().join("checkpoint/train_state.json")).unwrap();
    assert!(state.contains("\"step\": 20"), "{state}");
    // Resuming on other pairs would silently draw other batches: refused, checkpoint kept.
    let err = train_model(
        &tiny_cache(11, 2),
        &tiny_model(),
        &train_config(60),
        out.path(),
        &Device::Cpu,
        &mut |_, _, _, _| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("training pairs"), "{err:#}");
    assert!(out.path().join("checkpoint/model.safetensors").is_file());
    // ...and resumed to 60: the progress continues from step 21.
    let mut steps_seen = Vec::new();
    let report = train_model(
        &cache,
        &tiny_model(),
        &train_config(60),
        out.path(),
        &Device::Cpu,
        &mut |s, _, l, _| {
            steps_seen.push(s);
            losses.push(l);
        },
    )
    .unwrap();
    assert_eq!(steps_seen.first(), Some(&21));
    assert_eq!(report.step, 60);
    let log = std::fs::read_to_string(out.path().join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 61, "header + one line per step");
    assert_eq!(report.validation_accuracy.len(), 4);
    assert_eq!(report.unigram_accuracy.len(), 4);
    assert!(report.tokens_per_second > 0.0);
    // The compute rate is the token rate times the analytic FLOPs per target token.
    let (batch, frames) = (train_config(60).batch_size, cache.info.frames);
    let tokens_per_batch = (batch * frames * cache.info.levels) as f64;
    let flop_per_batch = 3.0 * stemgen::bench::model_flops(&tiny_model(), batch, frames);
    let expected = report.mean_tokens_per_second / tokens_per_batch * flop_per_batch / 1e9;
    assert!(
        report.training_gflops > 0.0
            && (report.training_gflops - expected).abs() <= 1e-9 * expected.max(1.0),
        "{} GFLOP/s, expected {expected}",
        report.training_gflops
    );
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.8 * first, "loss did not fall: {first} -> {last}");
    // The checkpoint is an ordinary model directory, and scoring it on the held-out songs
    // with training's own validation settings reproduces the last validation exactly.
    let trained = out.path().join("checkpoint");
    let loaded = ModelCheckpoint::load(&trained, &Device::Cpu).unwrap();
    let held_out = held_out_accuracy(
        &loaded.model,
        &cache,
        HeldOutOptions {
            batches: 1,
            batch_size: 4,
            context_probes: true,
            whole_level: false,
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(held_out.accuracy, report.validation_accuracy);
    assert_eq!(held_out.unigram, report.unigram_accuracy);
    assert!(held_out.pairs > 0);
    let probed: Vec<ContextProbe> = held_out.probes.iter().map(|p| p.probe).collect();
    assert_eq!(
        probed,
        [
            ContextProbe::Reversed,
            ContextProbe::Other,
            ContextProbe::Dropped
        ]
    );
    for p in &held_out.probes {
        assert_eq!((p.accuracy.len(), p.loss.len()), (4, 4), "{:?}", p.probe);
        assert!(
            p.accuracy.iter().all(|a| (0.0..=1.0).contains(a)),
            "{:?}: {:?}",
            p.probe,
            p.accuracy
        );
        assert!(p.loss.iter().all(|l| l.is_finite() && *l > 0.0), "{p:?}");
    }
    assert!(held_out.loss.iter().all(|l| l.is_finite() && *l > 0.0));
    let mismatched = ModelCheckpoint::random(
        &ModelConfig {
            codebook_size: 2048,
            ..tiny_model()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    let err = held_out_accuracy(
        &mismatched.model,
        &cache,
        HeldOutOptions {
            batches: 1,
            batch_size: 4,
            context_probes: false,
            whole_level: true,
        },
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");

    // A fresh run started from it (at a negligible learning rate) begins at its loss, not at
    // a random model's.
    let out2 = tempfile::tempdir().unwrap();
    let mut config = train_config(5);
    config.schedule.peak = 1e-9;
    config.init_from = Some(trained.clone());
    let mut continued = Vec::new();
    train_model(
        &cache,
        &tiny_model(),
        &config,
        out2.path(),
        &Device::Cpu,
        &mut |_, _, l, _| continued.push(l),
    )
    .unwrap();
    let start: f32 = continued.iter().sum::<f32>() / continued.len() as f32;
    assert!(
        start < 0.85 * first,
        "init_from did not carry the weights: {start} vs random {first}"
    );
    // A model of another shape cannot start the run.
    let mut other = tiny_model();
    other.d_model *= 2;
    let err = train_model(
        &cache,
        &other,
        &config,
        tempfile::tempdir().unwrap().path(),
        &Device::Cpu,
        &mut |_, _, _, _| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("config differs"), "{err:#}");
}

/// Every tensor of `dir/model.safetensors`, by name.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn resumed_training_matches_an_uninterrupted_run() {
    let cache = tiny_cache(11, 4);
    assert!(cache.has_features());
    let mut config = train_config(24);
    // Half the examples as the sampler's first step, and context features dropped for a
    // third: their draws must resume exactly too.
    config.whole_level0_share = 0.5;
    config.feature_drop_share = 0.3;
    config.weight_decay = 0.01;
    let model = ModelConfig {
        context_features: ContextFeature::ALL.to_vec(),
        ..tiny_model()
    };
    let run = |config: &ModelTrainConfig, out: &Path| {
        train_model(
            &cache,
            &model,
            config,
            out,
            &Device::Cpu,
            &mut |_, _, _, _| {},
        )
        .unwrap()
    };
    let straight = tempfile::tempdir().unwrap();
    run(&config, straight.path());

    // Stopped after 9 steps, and the checkpoint caught between the two renames of a save
    // (the finished copy still under its temporary name).
    let resumed = tempfile::tempdir().unwrap();
    // What was put beside the weights before training (the CLI attaches the tokenizer so
    // that a checkpoint is a model directory) stays through every save.
    let ckpt = resumed.path().join("checkpoint");
    std::fs::create_dir_all(ckpt.join("tokenizer")).unwrap();
    std::fs::write(ckpt.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(ckpt.join("tokenizer/codebooks.bin"), [1u8, 2, 3]).unwrap();
    run(
        &ModelTrainConfig {
            stop_after: Some(9),
            ..config.clone()
        },
        resumed.path(),
    );
    assert!(ckpt.join("optimizer.safetensors").is_file());
    std::fs::rename(&ckpt, resumed.path().join("checkpoint.next")).unwrap();
    let report = run(&config, resumed.path());
    assert_eq!(report.step, 24);
    assert!(!resumed.path().join("checkpoint.next").exists());
    assert_eq!(std::fs::read(ckpt.join("tokenizer.json")).unwrap(), b"{}");
    assert_eq!(
        std::fs::read(ckpt.join("tokenizer/codebooks.bin")).unwrap(),
        [1u8, 2, 3]
    );

    // Same batches, masks and AdamW moments: the same weights, bit for bit.
    let (a, b) = (weights(&straight.path().join("checkpoint")), weights(&ckpt));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs after resuming");
    }
}

#[test]
fn schedule_warms_up_holds_and_halves() {
    let s = LrSchedule {
        peak: 1e-3,
        warmup: 10,
        hold: 20,
        half_life: 5,
    };
    assert!((s.at(0) - 1e-4).abs() < 1e-12);
    assert!((s.at(9) - 1e-3).abs() < 1e-12);
    assert_eq!(s.at(29), 1e-3);
    assert!((s.at(35) - 5e-4).abs() < 1e-12);
}

#[test]
fn mismatched_cache_and_model_is_an_error() {
    let cache = tiny_cache(2, 1);
    let mut model = tiny_model();
    model.codebook_size = 2048;
    let out = tempfile::tempdir().unwrap();
    let err = train_model(
        &cache,
        &model,
        &train_config(2),
        out.path(),
        &Device::Cpu,
        &mut |_, _, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");
}

#[test]
fn context_probes_reverse_time_and_swap_songs() {
    // Two examples, one level, three frames: codes 10 * example + frame.
    let context = Tensor::new(&[[[0u32, 1, 2]], [[10, 11, 12]]], &Device::Cpu).unwrap();
    let rows =
        |p: ContextProbe| -> Vec<Vec<Vec<u32>>> { p.apply(&context).unwrap().to_vec3().unwrap() };
    assert_eq!(rows(ContextProbe::Own), [[[0, 1, 2]], [[10, 11, 12]]]);
    assert_eq!(rows(ContextProbe::Reversed), [[[2, 1, 0]], [[12, 11, 10]]]);
    assert_eq!(rows(ContextProbe::Other), [[[10, 11, 12]], [[0, 1, 2]]]);
    assert_eq!(rows(ContextProbe::Dropped), [[[0, 1, 2]], [[10, 11, 12]]]);
}

#[test]
fn context_onsets_are_gain_rises_of_level_0() {
    // One example, level-0 codes with 4 shapes per gain step: gains 0, 0, 3, 3, 4, 8, 1.
    let codes = [0u32, 1, 12, 13, 17, 33, 5];
    let mut rows = codes.to_vec();
    rows.extend([7u32; 7]); // level 1 is ignored
    let context = Tensor::from_vec(rows, (1, 2, 7), &Device::Cpu).unwrap();
    let w = context_onset_weights(&context, 4, 5.0).unwrap();
    assert_eq!(w, [1.0, 1.0, 5.0, 1.0, 1.0, 5.0, 1.0]);

    // Training with an onset weight needs a model whose tokens carry a gain.
    let cache = tiny_cache(2, 1);
    let mut config = train_config(2);
    config.context_onset_weight = 4.0;
    let err = train_model(
        &cache,
        &tiny_model(),
        &config,
        tempfile::tempdir().unwrap().path(),
        &Device::Cpu,
        &mut |_, _, _, _| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("gain_steps"), "{err:#}");
}

#[test]
fn each_example_sees_measured_features_chord_templates_or_none() {
    let cache = tiny_cache(3, 2);
    let mut batch = cache.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
    let frames = cache.info.frames;
    // The tiny songs have no metadata: no chords known.
    assert_eq!(batch.has_chords, vec![false; 4]);
    let measured = batch.features.clone().unwrap();
    assert_eq!(measured.len(), 4 * frames * 27);
    assert!(measured.iter().any(|&v| v > 0.0));
    // Pretend example 1's chords are known (a template of all 0.5).
    batch.has_chords[1] = true;
    batch.templates = Some(vec![0.5; 4 * frames * 24]);
    let features = [ContextFeature::Chroma, ContextFeature::Onset];
    let draw = |mix: FeatureMix| -> Vec<f32> {
        batch_features(&batch, &features, frames, mix, 9, &Device::Cpu)
            .unwrap()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let chords = FeatureMix {
        chord_template_share: 1.0,
        feature_drop_share: 0.0,
    };
    let got = draw(chords);
    let row = |b: usize, n: usize| &got[(b * frames + n) * 13..][..13];
    // Example 1: chroma from the template, onset still measured; example 0: all measured.
    assert_eq!(&row(1, 5)[..12], &[0.5; 12]);
    assert_eq!(row(1, 5)[12], measured[(frames + 5) * 27 + 24]);
    assert_eq!(&row(0, 5)[..12], &measured[5 * 27..5 * 27 + 12]);
    let dropped = draw(FeatureMix {
        chord_template_share: 0.0,
        feature_drop_share: 1.0,
    });
    assert!(dropped.iter().all(|&v| v == 0.0));
    // A model without features gets none; a cache without them is refused for one with.
    assert!(batch_features(&batch, &[], frames, chords, 9, &Device::Cpu)
        .unwrap()
        .is_none());
    batch.features = None;
    let err = batch_features(&batch, &features, frames, chords, 9, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("rebuild"), "{err}");
}

#[test]
fn training_benchmark_times_real_steps_with_gain_and_features() {
    // The shipped model's options (gain embedding, context features) at a tiny size.
    let config = ModelConfig {
        gain_steps: 16,
        context_features: stemgen::analysis::context_features::ContextFeature::ALL.to_vec(),
        ..tiny_model()
    };
    let report = stemgen::train::bench::train_steps(&config, 2, 2).unwrap();
    assert_eq!((report.batch_size, report.frames, report.steps), (2, 64, 2));
    assert!(report.step_seconds > 0.0 && report.step_seconds.is_finite());
    let tokens = (2 * 64 * 4) as f64 / report.step_seconds;
    assert!((report.tokens_per_second - tokens).abs() < 1e-6 * tokens);
    assert!(report.step_gflops > 0.0 && report.matmul_gflops > 0.0);
    assert!(report.to_string().contains("% of the"));
    assert!(stemgen::train::bench::train_steps(&config, 0, 2).is_err());
}
