//! engine::model: input combiner, transformer, training objective, checkpoints.
//! Tiny seeded models keep every test to a few seconds on the CPU.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stemgen::analysis::context_features::ContextFeature;
use stemgen::model::{
    draw_mask, masked_inputs, masked_loss, objective_with_masks, training_objective,
    weighted_objective_with_masks, ExampleMask, ModelCheckpoint, ModelConfig, StemGenModel,
    CONFIG_FILE, WEIGHTS_FILE,
};

fn tiny_config() -> ModelConfig {
    ModelConfig {
        levels: 3,
        codebook_size: 16,
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_categories: 4,
        max_frames: 24,
        ffn_multiple_of: 8,
        rope_theta: 10_000.0,
        p_ctx: 0.3,
        p_cat: 0.3,
        gain_steps: 0,
        context_features: Vec::new(),
    }
}

/// Seeded random context features `[BATCH, FRAMES, F]` for `config`.
fn random_features(config: &ModelConfig, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let dims = config.context_feature_dims();
    let values: Vec<f32> = (0..BATCH * FRAMES * dims).map(|_| rng.gen()).collect();
    Tensor::from_vec(values, (BATCH, FRAMES, dims), &Device::Cpu).unwrap()
}

const BATCH: usize = 6;
const FRAMES: usize = 12;

/// A batch whose targets are a fixed function of context, level and category, so that
/// there is something to learn: (context tokens, target tokens, categories).
fn batch(config: &ModelConfig, seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (q, v) = (config.levels, config.codebook_size as u32);
    let categories: Vec<u32> = (0..BATCH)
        .map(|_| rng.gen_range(0..config.n_categories as u32))
        .collect();
    let context: Vec<u32> = (0..BATCH * q * FRAMES)
        .map(|_| rng.gen_range(0..v))
        .collect();
    let target: Vec<u32> = context
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (b, level) = (i / (q * FRAMES), (i / FRAMES) % q);
            (c * 3 + level as u32 + categories[b]) % v
        })
        .collect();
    let dev = Device::Cpu;
    (
        Tensor::from_vec(context, (BATCH, q, FRAMES), &dev).unwrap(),
        Tensor::from_vec(target, (BATCH, q, FRAMES), &dev).unwrap(),
        Tensor::from_vec(categories, BATCH, &dev).unwrap(),
    )
}

fn random_model(config: &ModelConfig, seed: u64) -> ModelCheckpoint {
    ModelCheckpoint::random(config, &Device::Cpu, seed).unwrap()
}

/// Masks that cover every level and both kinds of dropout, independent of any RNG.
fn covering_masks(config: &ModelConfig) -> Vec<ExampleMask> {
    (0..BATCH)
        .map(|b| ExampleMask {
            level: b % config.levels,
            mask_ratio: 0.5,
            masked: (0..FRAMES).map(|n| (n + b) % 3 != 0).collect(),
            context_dropped: b == 1,
            category_dropped: b == 2,
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

fn logits(model: &StemGenModel, context: &Tensor, target: &Tensor, category: &Tensor) -> Tensor {
    model
        .forward(context, target, category, &[false; BATCH], None)
        .unwrap()
}

#[test]
fn config_round_trips_as_json_and_counts_parameters() {
    let config = tiny_config();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), config);

    let checkpoint = random_model(&config, 0);
    assert_eq!(checkpoint.parameter_count(), config.parameter_count());
    // SwiGLU width: floor(8 * 32 / 3) = 85, rounded up to a multiple of 8.
    assert_eq!(config.ffn_dim(), 88);
    // ARCHITECTURE §3.2: the paper-sized model has about 250M parameters.
    let paper = ModelConfig::paper().parameter_count();
    assert!((230_000_000..280_000_000).contains(&paper), "{paper}");

    let mut odd = config.clone();
    odd.d_model = 33;
    assert!(odd.validate().unwrap_err().contains("d_model"));
    let mut heads = config.clone();
    heads.n_heads = 3;
    assert!(heads.validate().unwrap_err().contains("n_heads"));
    let mut dropout = config.clone();
    dropout.p_ctx = 1.5;
    assert!(dropout.validate().unwrap_err().contains("p_ctx"));

    // The gain embedding: two channels of gain_steps + 1 rows, and it must divide the codes.
    let gain = ModelConfig {
        gain_steps: 4,
        ..config.clone()
    };
    assert_eq!(
        gain.parameter_count(),
        config.parameter_count() + 2 * 5 * config.channel_dim()
    );
    assert_eq!(
        random_model(&gain, 0).parameter_count(),
        gain.parameter_count()
    );
    let bad = ModelConfig {
        gain_steps: 5,
        ..config
    };
    assert!(bad.validate().unwrap_err().contains("gain_steps"));
}

#[test]
fn masking_draw_follows_the_level_rules() {
    let config = tiny_config();
    let frames = 40;
    let draws = 4000;
    let mut rng = StdRng::seed_from_u64(7);
    let masks: Vec<ExampleMask> = (0..draws)
        .map(|_| draw_mask(&config, frames, &mut rng))
        .collect();

    let mut per_level = vec![0usize; config.levels];
    let (mut masked_frames, mut expected_frames) = (0.0, 0.0);
    for mask in &masks {
        per_level[mask.level] += 1;
        assert!(mask.masked_count() >= 1, "at least one frame is masked");
        assert!(mask.mask_ratio > 0.0 && mask.mask_ratio <= 1.0);
        masked_frames += mask.masked_count() as f64;
        expected_frames += mask.mask_ratio * frames as f64;
    }
    let share = |count: usize| count as f64 / draws as f64;
    for &count in &per_level {
        assert!((share(count) - 1.0 / 3.0).abs() < 0.04, "{per_level:?}");
    }
    // p = cos(u), u ~ U[0, pi/2]: E[p] = 2 / pi; each frame is masked with probability p.
    let mean_ratio = masks.iter().map(|m| m.mask_ratio).sum::<f64>() / draws as f64;
    assert!(
        (mean_ratio - 2.0 / std::f64::consts::PI).abs() < 0.02,
        "{mean_ratio}"
    );
    assert!((masked_frames / expected_frames - 1.0).abs() < 0.03);
    let ctx_share = share(masks.iter().filter(|m| m.context_dropped).count());
    let cat_share = share(masks.iter().filter(|m| m.category_dropped).count());
    let both_share = share(
        masks
            .iter()
            .filter(|m| m.context_dropped && m.category_dropped)
            .count(),
    );
    assert!((ctx_share - config.p_ctx).abs() < 0.03, "{ctx_share}");
    assert!((cat_share - config.p_cat).abs() < 0.03, "{cat_share}");
    assert!(
        (both_share - config.p_ctx * config.p_cat).abs() < 0.03,
        "independent"
    );

    // Same seed, same draws.
    let mut again = StdRng::seed_from_u64(7);
    assert_eq!(draw_mask(&config, frames, &mut again), masks[0]);

    // Applying a mask: coarser levels given, level q masked where drawn, finer levels masked.
    let (context, target, category) = batch(&config, 1);
    let batch_masks: Vec<ExampleMask> = (0..BATCH)
        .map(|_| draw_mask(&config, FRAMES, &mut rng))
        .collect();
    let inputs = masked_inputs(&config, &context, &target, &category, &batch_masks).unwrap();
    let truth = target.to_vec3::<u32>().unwrap();
    let seen = inputs.target.to_vec3::<u32>().unwrap();
    let mask_id = config.mask_id();
    for (b, mask) in batch_masks.iter().enumerate() {
        for q in 0..config.levels {
            for n in 0..FRAMES {
                let expected = if q < mask.level || (q == mask.level && !mask.masked[n]) {
                    truth[b][q][n]
                } else {
                    mask_id
                };
                assert_eq!(seen[b][q][n], expected, "example {b} level {q} frame {n}");
            }
        }
    }
    assert_eq!(
        inputs.context.to_vec3::<u32>().unwrap(),
        context.to_vec3::<u32>().unwrap(),
        "the context is never masked"
    );
    let categories = category.to_vec1::<u32>().unwrap();
    for (b, c) in inputs
        .category
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let expected = if batch_masks[b].category_dropped {
            config.null_category()
        } else {
            categories[b]
        };
        assert_eq!(c, expected);
        assert_eq!(inputs.context_dropped[b], batch_masks[b].context_dropped);
    }
}

#[test]
fn loss_counts_only_masked_positions_of_the_chosen_level() {
    let config = tiny_config();
    let (q, v) = (config.levels, config.codebook_size);
    let masks = covering_masks(&config);
    let mut rng = StdRng::seed_from_u64(3);
    let logit_values: Vec<f32> = (0..BATCH * q * FRAMES * v)
        .map(|_| rng.gen_range(-3.0..3.0))
        .collect();
    let (_, target, _) = batch(&config, 2);
    let labels = target.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let scored = |b: usize, level: usize, n: usize| masks[b].level == level && masks[b].masked[n];
    let loss_of = |logit_values: &[f32], labels: &[u32]| {
        let logits = Tensor::from_slice(logit_values, (BATCH, q, FRAMES, v), &Device::Cpu).unwrap();
        let target = Tensor::from_slice(labels, (BATCH, q, FRAMES), &Device::Cpu).unwrap();
        let (loss, accuracy) = masked_loss(&logits, &target, &masks).unwrap();
        (scalar(&loss), accuracy)
    };
    let (base, _) = loss_of(&logit_values, &labels);

    // Perturb every logit and label that is not scored: the loss must not move at all.
    let (mut other_logits, mut other_labels) = (logit_values.clone(), labels.clone());
    for b in 0..BATCH {
        for level in 0..q {
            for n in 0..FRAMES {
                if !scored(b, level, n) {
                    let position = (b * q + level) * FRAMES + n;
                    other_labels[position] = (labels[position] + 5) % v as u32;
                    for value in &mut other_logits[position * v..(position + 1) * v] {
                        *value = rng.gen_range(-9.0..9.0);
                    }
                }
            }
        }
    }
    assert_eq!(loss_of(&other_logits, &other_labels).0, base);

    // Changing one scored label or logit does change it.
    let position = masks[0].level * FRAMES + 1; // example 0, its level, frame 1 (masked)
    assert!(scored(0, masks[0].level, 1));
    let mut changed_labels = labels.clone();
    changed_labels[position] = (labels[position] + 1) % v as u32;
    assert_ne!(loss_of(&logit_values, &changed_labels).0, base);
    let mut changed_logits = logit_values.clone();
    changed_logits[position * v + labels[position] as usize] += 10.0;
    let (boosted, accuracy) = loss_of(&changed_logits, &labels);
    assert!(boosted < base);
    assert!(
        accuracy > 0.0,
        "the boosted position is predicted correctly"
    );

    // The model-level objective (heads on masked rows only) equals the reference loss on the
    // full forward pass, and cannot see or score finer levels.
    let checkpoint = random_model(&config, 4);
    let (context, target, category) = batch(&config, 2);
    let fast = objective_with_masks(
        &checkpoint.model,
        &context,
        &target,
        &category,
        masks.clone(),
    )
    .unwrap();
    let inputs = masked_inputs(&config, &context, &target, &category, &masks).unwrap();
    let full_logits = checkpoint
        .model
        .forward(
            &inputs.context,
            &inputs.target,
            &inputs.category,
            &inputs.context_dropped,
            None,
        )
        .unwrap();
    let (reference, reference_accuracy) = masked_loss(&full_logits, &target, &masks).unwrap();
    assert!((scalar(&fast.loss) - scalar(&reference)).abs() < 1e-5);
    assert_eq!(fast.accuracy, reference_accuracy);

    // Frame weights: all equal give the plain mean; one heavy frame pulls the mean to its
    // own cross-entropy; non-positive weights are refused.
    let weighted = |w: &[f32]| {
        weighted_objective_with_masks(
            &checkpoint.model,
            &context,
            &target,
            &category,
            None,
            masks.clone(),
            Some(w),
        )
    };
    let even = weighted(&vec![2.5; BATCH * FRAMES]).unwrap();
    assert!((scalar(&even.loss) - scalar(&fast.loss)).abs() < 1e-5);
    assert_eq!(even.accuracy, fast.accuracy);
    let (b, n) = (0, (0..FRAMES).find(|&n| masks[0].masked[n]).unwrap());
    let mut heavy = vec![1e-6; BATCH * FRAMES];
    heavy[b * FRAMES + n] = 1.0;
    let level_logits = full_logits
        .get(b)
        .unwrap()
        .get(masks[0].level)
        .unwrap()
        .get(n)
        .unwrap();
    let label = target.to_vec3::<u32>().unwrap()[b][masks[0].level][n];
    let log_probs = candle_nn::ops::log_softmax(&level_logits, 0).unwrap();
    let own = -log_probs
        .get(label as usize)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let pulled = scalar(&weighted(&heavy).unwrap().loss);
    assert!(
        (pulled - own).abs() < 1e-3 * own.max(1.0),
        "{pulled} vs {own}"
    );
    assert!(weighted(&vec![0.0; BATCH * FRAMES]).is_err());
    assert!(weighted(&[1.0]).is_err());
    let expected_count: usize = masks.iter().map(ExampleMask::masked_count).sum();
    assert_eq!(fast.masked_tokens, expected_count);

    let mut finer = target.to_vec3::<u32>().unwrap();
    for (b, mask) in masks.iter().enumerate() {
        for level_codes in &mut finer[b][mask.level + 1..] {
            for code in level_codes {
                *code = (*code + 7) % v as u32;
            }
        }
    }
    let finer = Tensor::new(finer, &Device::Cpu).unwrap();
    let unchanged = objective_with_masks(
        &checkpoint.model,
        &context,
        &finer,
        &category,
        masks.clone(),
    )
    .unwrap();
    assert_eq!(scalar(&unchanged.loss), scalar(&fast.loss));
}

#[test]
fn every_parameter_receives_a_gradient() {
    for gain_steps in [0, 4] {
        every_parameter_receives_a_gradient_with(ModelConfig {
            gain_steps,
            ..tiny_config()
        });
    }
    // The context-feature projection too, although it starts at zero.
    every_parameter_receives_a_gradient_with(ModelConfig {
        gain_steps: 4,
        context_features: ContextFeature::ALL.to_vec(),
        ..tiny_config()
    });
}

fn every_parameter_receives_a_gradient_with(config: ModelConfig) {
    let checkpoint = random_model(&config, 5);
    let (context, target, category) = batch(&config, 6);
    let features = (!config.context_features.is_empty()).then(|| random_features(&config, 7));
    let output = weighted_objective_with_masks(
        &checkpoint.model,
        &context,
        &target,
        &category,
        features.as_ref(),
        covering_masks(&config),
        None,
    )
    .unwrap();
    let grads = output.loss.backward().unwrap();
    let vars = checkpoint.vars.data().lock().unwrap();
    let gain_tables = usize::from(config.gain_steps > 0);
    let feature_tables = usize::from(!config.context_features.is_empty());
    assert_eq!(
        vars.len(),
        4 + gain_tables + feature_tables + 6 * config.n_layers + 1 + config.levels
    );
    let mut missing = Vec::new();
    for (name, var) in vars.iter() {
        let norm = grads.get(var.as_tensor()).map(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        });
        if !norm.is_some_and(|n| n > 0.0 && n.is_finite()) {
            missing.push(format!("{name}: {norm:?}"));
        }
    }
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

#[test]
fn training_reduces_the_loss_on_a_fixed_batch() {
    let config = tiny_config();
    let checkpoint = random_model(&config, 8);
    let (context, target, category) = batch(&config, 9);
    let mut eval_rng = StdRng::seed_from_u64(10);
    let eval_masks: Vec<ExampleMask> = (0..BATCH)
        .map(|_| draw_mask(&config, FRAMES, &mut eval_rng))
        .collect();
    let eval = |model: &StemGenModel| {
        let out =
            objective_with_masks(model, &context, &target, &category, eval_masks.clone()).unwrap();
        (scalar(&out.loss), out.accuracy)
    };
    let (before, _) = eval(&checkpoint.model);

    let params = ParamsAdamW {
        lr: 1e-2,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut optimiser = AdamW::new(checkpoint.vars.all_vars(), params).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..60 {
        let step =
            training_objective(&checkpoint.model, &context, &target, &category, &mut rng).unwrap();
        optimiser.backward_step(&step.loss).unwrap();
    }
    let (after, accuracy) = eval(&checkpoint.model);
    eprintln!("loss {before:.3} -> {after:.3}, masked accuracy {accuracy:.2}");
    assert!(
        (before - 16f32.ln()).abs() < 0.3,
        "an untrained model guesses nearly uniformly: {before}"
    );
    assert!(after < 0.7 * before, "loss {before} -> {after}");
    assert!(accuracy > 0.3, "chance is 1/16: {accuracy}");
}

#[test]
fn save_and_load_round_trip_gives_identical_logits() {
    let config = tiny_config();
    let checkpoint = random_model(&config, 12);
    let (context, target, category) = batch(&config, 13);
    let original = logits(&checkpoint.model, &context, &target, &category);

    let dir = tempfile::tempdir().unwrap();
    checkpoint.save(dir.path()).unwrap();
    let loaded = ModelCheckpoint::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), &config);
    assert_eq!(loaded.parameter_count(), checkpoint.parameter_count());
    let reloaded = logits(&loaded.model, &context, &target, &category);
    assert_eq!(
        reloaded.dims(),
        [BATCH, config.levels, FRAMES, config.codebook_size]
    );
    assert_eq!(max_abs_diff(&original, &reloaded), 0.0);

    // Seeded init: the same seed rebuilds the same model, another seed does not.
    let same = logits(
        &random_model(&config, 12).model,
        &context,
        &target,
        &category,
    );
    assert_eq!(max_abs_diff(&original, &same), 0.0);
    let other = logits(
        &random_model(&config, 14).model,
        &context,
        &target,
        &category,
    );
    assert!(max_abs_diff(&original, &other) > 1e-3);
}

#[test]
fn a_gain_embedding_extends_a_trained_model_without_changing_it() {
    let config = tiny_config();
    let checkpoint = random_model(&config, 12);
    let (context, target, category) = batch(&config, 13);
    let original = logits(&checkpoint.model, &context, &target, &category);
    let dir = tempfile::tempdir().unwrap();
    checkpoint.save(dir.path()).unwrap();

    // Loaded into a config with gain_steps: one more (zero) table, the same logits.
    let gain = ModelConfig {
        gain_steps: 4,
        ..config.clone()
    };
    let extended = ModelCheckpoint::load_extended(dir.path(), &gain, &Device::Cpu).unwrap();
    assert_eq!(extended.parameter_count(), gain.parameter_count());
    let same = logits(&extended.model, &context, &target, &category);
    assert_eq!(max_abs_diff(&original, &same), 0.0);
    // Saved and loaded as an ordinary model directory, and a non-zero table is used.
    let with_gain = tempfile::tempdir().unwrap();
    extended.save(with_gain.path()).unwrap();
    let trained = random_model(&gain, 3);
    let random_gain = logits(&trained.model, &context, &target, &category);
    let plain = ModelCheckpoint::load_extended(dir.path(), &gain, &Device::Cpu).unwrap();
    {
        let mut vars = plain.vars.data().lock().unwrap();
        let table = vars.get_mut("gain_embed").unwrap();
        table
            .set(&Tensor::ones(table.shape(), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    }
    let shifted = logits(&plain.model, &context, &target, &category);
    assert!(max_abs_diff(&original, &shifted) > 1e-4);
    assert!(max_abs_diff(&random_gain, &original) > 1e-4);
    let reloaded = ModelCheckpoint::load(with_gain.path(), &Device::Cpu).unwrap();
    assert_eq!(reloaded.config(), &gain);

    // Anything else that differs is refused, naming the config file.
    let wider = ModelConfig {
        d_model: 64,
        ..gain
    };
    let err = ModelCheckpoint::load_extended(dir.path(), &wider, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("gain_steps"),
        "{err}"
    );
}

#[test]
fn context_features_extend_a_trained_model_without_changing_it() {
    let config = tiny_config();
    let checkpoint = random_model(&config, 21);
    let (context, target, category) = batch(&config, 22);
    let original = logits(&checkpoint.model, &context, &target, &category);
    let dir = tempfile::tempdir().unwrap();
    checkpoint.save(dir.path()).unwrap();

    let with = ModelConfig {
        context_features: ContextFeature::ALL.to_vec(),
        ..config.clone()
    };
    assert_eq!(with.context_feature_dims(), 27);
    assert_eq!(
        with.parameter_count(),
        config.parameter_count() + 27 * config.channel_dim()
    );
    let extended = ModelCheckpoint::load_extended(dir.path(), &with, &Device::Cpu).unwrap();
    assert_eq!(extended.parameter_count(), with.parameter_count());
    let features = random_features(&with, 23);
    let run = |model: &StemGenModel, f: Option<&Tensor>, dropped: &[bool]| {
        model
            .forward(&context, &target, &category, dropped, f)
            .unwrap()
    };
    // Zero-initialised: the same logits with or without features.
    let same = run(&extended.model, Some(&features), &[false; BATCH]);
    assert_eq!(max_abs_diff(&original, &same), 0.0);
    // A trained (non-zero) projection uses them, except where the context is dropped.
    {
        let mut vars = extended.vars.data().lock().unwrap();
        let proj = vars.get_mut("context_features_proj").unwrap();
        proj.set(&Tensor::ones(proj.shape(), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    }
    let used = run(&extended.model, Some(&features), &[false; BATCH]);
    assert!(max_abs_diff(&original, &used) > 1e-4);
    let dropped = [true; BATCH];
    assert_eq!(
        max_abs_diff(
            &run(&extended.model, Some(&features), &dropped),
            &run(&extended.model, None, &dropped)
        ),
        0.0
    );
    // Wrong shapes and features for a model without them are errors.
    let short = features.narrow(1, 0, FRAMES - 1).unwrap();
    let err = extended
        .model
        .forward(&context, &target, &category, &[false; BATCH], Some(&short))
        .unwrap_err()
        .to_string();
    assert!(err.contains("context features"), "{err}");
    let err = checkpoint
        .model
        .forward(
            &context,
            &target,
            &category,
            &[false; BATCH],
            Some(&features),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("has none"), "{err}");
    // Saved, its config lists the features; configs without the field still load.
    let saved = tempfile::tempdir().unwrap();
    extended.save(saved.path()).unwrap();
    assert_eq!(
        ModelCheckpoint::load(saved.path(), &Device::Cpu)
            .unwrap()
            .config(),
        &with
    );
    let json = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    assert!(!json.contains("context_features"), "{json}");
}

#[test]
fn mismatched_or_corrupt_model_directory_is_a_clear_error() {
    let config = tiny_config();
    let dir = tempfile::tempdir().unwrap();
    random_model(&config, 15).save(dir.path()).unwrap();
    let config_path = dir.path().join(CONFIG_FILE);
    let weights_path = dir.path().join(WEIGHTS_FILE);
    let load_error = || {
        ModelCheckpoint::load(dir.path(), &Device::Cpu)
            .err()
            .expect("loading must fail")
            .to_string()
    };
    let write_config = |config: &ModelConfig| {
        std::fs::write(&config_path, serde_json::to_string(config).unwrap()).unwrap()
    };

    let mut deeper = config.clone();
    deeper.n_layers = 3;
    write_config(&deeper);
    let message = load_error();
    assert!(message.contains(WEIGHTS_FILE), "{message}");
    assert!(
        message.contains("blocks.2") && message.contains("missing"),
        "{message}"
    );

    let mut wider = config.clone();
    wider.codebook_size = 32;
    write_config(&wider);
    let message = load_error();
    assert!(
        message.contains("shape") && message.contains(WEIGHTS_FILE),
        "{message}"
    );

    let mut shallower = config.clone();
    shallower.n_layers = 1;
    write_config(&shallower);
    let message = load_error();
    assert!(
        message.contains("blocks.1") && message.contains("does not describe"),
        "{message}"
    );

    std::fs::write(&config_path, "{ \"levels\": 4,").unwrap();
    let message = load_error();
    assert!(
        message.contains(CONFIG_FILE) && message.contains("not a valid"),
        "{message}"
    );

    let mut invalid = config.clone();
    invalid.n_heads = 5;
    write_config(&invalid);
    let message = load_error();
    assert!(
        message.contains(CONFIG_FILE) && message.contains("n_heads"),
        "{message}"
    );

    write_config(&config);
    assert!(ModelCheckpoint::load(dir.path(), &Device::Cpu).is_ok());
    let bytes = std::fs::read(&weights_path).unwrap();
    std::fs::write(&weights_path, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_error();
    assert!(
        message.contains(WEIGHTS_FILE) && message.contains("truncated"),
        "{message}"
    );

    std::fs::remove_file(&weights_path).unwrap();
    let message = load_error();
    assert!(
        message.contains(WEIGHTS_FILE) && message.contains("missing"),
        "{message}"
    );

    let message = ModelCheckpoint::load(&dir.path().join("nowhere"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains(CONFIG_FILE), "{message}");
}

#[test]
fn attention_is_bidirectional_and_a_dropped_context_is_ignored() {
    let config = tiny_config();
    let model = random_model(&config, 16).model;
    let (context, target, category) = batch(&config, 17);
    let base = logits(&model, &context, &target, &category);

    // A change in the last frame's context reaches the first frame's logits.
    let mut late = context.to_vec3::<u32>().unwrap();
    late[0][0][FRAMES - 1] = (late[0][0][FRAMES - 1] + 1) % config.codebook_size as u32;
    let late = Tensor::new(late, &Device::Cpu).unwrap();
    let changed = logits(&model, &late, &target, &category);
    let first_frame = |t: &Tensor| t.narrow(0, 0, 1).unwrap().narrow(2, 0, 1).unwrap();
    assert!(max_abs_diff(&first_frame(&base), &first_frame(&changed)) > 1e-6);

    // With the context dropped, the context tokens do not matter at all.
    let dropped = [true; BATCH];
    let a = model
        .forward(&context, &target, &category, &dropped, None)
        .unwrap();
    let b = model
        .forward(&late, &target, &category, &dropped, None)
        .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(
        max_abs_diff(&a, &base) > 1e-6,
        "NULL context differs from a real one"
    );

    // The NULL category is a category of its own.
    let null = Tensor::new(&[config.null_category(); BATCH], &Device::Cpu).unwrap();
    assert!(max_abs_diff(&logits(&model, &context, &target, &null), &base) > 1e-6);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let config = tiny_config();
    let model = random_model(&config, 18).model;
    let (context, target, category) = batch(&config, 19);
    let ok = [false; BATCH];
    let error = |result: candle_core::Result<Tensor>| result.expect_err("must fail").to_string();

    let too_big = (&context + 100.0).unwrap();
    assert!(
        error(model.forward(&too_big, &target, &category, &ok, None)).contains("context token")
    );
    let masked_everywhere =
        Tensor::full(config.mask_id(), (BATCH, 3, FRAMES), &Device::Cpu).unwrap();
    assert!(model
        .forward(&context, &masked_everywhere, &category, &ok, None)
        .is_ok());
    let beyond_mask = (&masked_everywhere + 1.0).unwrap();
    assert!(
        error(model.forward(&context, &beyond_mask, &category, &ok, None)).contains("target token")
    );
    let bad_category = Tensor::new(&[9u32; BATCH], &Device::Cpu).unwrap();
    assert!(error(model.forward(&context, &target, &bad_category, &ok, None)).contains("category"));
    let two_levels = context.narrow(1, 0, 2).unwrap();
    assert!(
        error(model.forward(&two_levels, &two_levels, &category, &ok, None)).contains("levels")
    );
    let long = Tensor::zeros((BATCH, 3, 30), DType::U32, &Device::Cpu).unwrap();
    assert!(error(model.forward(&long, &long, &category, &ok, None)).contains("maximum"));
    assert!(
        error(model.forward(&context, &target, &category, &[false; 2], None))
            .contains("context_dropped")
    );
    let floats = context.to_dtype(DType::F32).unwrap();
    assert!(error(model.forward(&floats, &target, &category, &ok, None)).contains("u32"));
    assert!(model
        .level_logits(
            &Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap(),
            3
        )
        .is_err());

    // Training targets must be plain codes, not MASK ids.
    let mut rng = StdRng::seed_from_u64(20);
    let message = training_objective(&model, &context, &masked_everywhere, &category, &mut rng)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("training targets"), "{message}");
}

/// The training attention (one op, its backward recomputing the probabilities) against
/// candle's generic ops: values and the gradients of q, k and v.
#[test]
fn training_attention_and_its_gradients_match_the_generic_ops() {
    use candle_core::{IndexOp, Var, D};
    use stemgen::model::kernels::attention::QkvAttention;
    let device = Device::Cpu;
    let (b, h, n, d) = (2, 3, 37, 8);
    let scale = 1.0 / (d as f64).sqrt();
    // Large scores, so the softmax is peaked on some rows.
    let qkv =
        Var::from_tensor(&Tensor::randn(0f32, 2.0, (b, n, 3 * h * d), &device).unwrap()).unwrap();
    // Rotary tables longer than the window, as the model's are.
    let angles: Vec<f32> = (0..(n + 5) * d / 2)
        .map(|i| (i / (d / 2)) as f32 * 0.3 / (1 + i % (d / 2)) as f32)
        .collect();
    let angles = Tensor::from_vec(angles, (n + 5, d / 2), &device).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let probe = Tensor::randn(0f32, 1.0, (b, n, h * d), &device).unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        let y = f(qkv.as_tensor());
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, grads.get(qkv.as_tensor()).unwrap().clone())
    };
    let (fused, fused_grad) = run(&|qkv| {
        qkv.apply_op3(&cos, &sin, QkvAttention { n_heads: h })
            .unwrap()
    });
    let (generic, generic_grad) = run(&|qkv| {
        let split = qkv.reshape((b, n, 3, h, d)).unwrap();
        let heads = |i: usize| split.i((.., .., i)).unwrap().transpose(1, 2).unwrap();
        let (c, s) = (cos.narrow(0, 0, n).unwrap(), sin.narrow(0, 0, n).unwrap());
        let rotate = |x: Tensor| {
            let x1 = x.narrow(D::Minus1, 0, d / 2).unwrap();
            let x2 = x.narrow(D::Minus1, d / 2, d / 2).unwrap();
            let r1 = (x1.broadcast_mul(&c).unwrap() - x2.broadcast_mul(&s).unwrap()).unwrap();
            let r2 = (x1.broadcast_mul(&s).unwrap() + x2.broadcast_mul(&c).unwrap()).unwrap();
            Tensor::cat(&[r1, r2], D::Minus1).unwrap()
        };
        let (q, k, v) = (rotate(heads(0)), rotate(heads(1)), heads(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&v.contiguous().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, h * d))
            .unwrap()
    });
    let err = max_abs_diff(&fused, &generic);
    assert!(err < 1e-5, "values differ by {err}");
    let err = max_abs_diff(&fused_grad, &generic_grad);
    assert!(err < 1e-4, "gradients differ by {err}");
}

/// The SwiGLU activation with its backward against candle's generic ops.
#[test]
fn training_swiglu_and_its_gradient_match_the_generic_ops() {
    use candle_core::{Var, D};
    use stemgen::model::kernels::silu_gate::SiluGate;
    let device = Device::Cpu;
    let hidden = 24;
    let x =
        Var::from_tensor(&Tensor::randn(0f32, 3.0, (3, 17, 2 * hidden), &device).unwrap()).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (3, 17, hidden), &device).unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        let y = f(x.as_tensor());
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, grads.get(x.as_tensor()).unwrap().clone())
    };
    let (fused, fused_grad) = run(&|t| t.apply_op1(SiluGate).unwrap());
    let (generic, generic_grad) = run(&|t| {
        let gate = t.narrow(D::Minus1, 0, hidden).unwrap();
        let up = t.narrow(D::Minus1, hidden, hidden).unwrap();
        (gate.silu().unwrap() * up).unwrap()
    });
    assert!(max_abs_diff(&fused, &generic) < 1e-5, "values");
    let err = max_abs_diff(&fused_grad, &generic_grad);
    assert!(err < 1e-4, "gradients differ by {err}");
}

/// The linear layer and the level-summed embedding lookup, each one op with its own backward,
/// against candle's primitives and their gradients.
#[test]
fn training_linear_and_embedding_sum_match_the_primitives() {
    use candle_core::Var;
    use stemgen::model::kernels::{embed::EmbedSum, linear::LinearOp};
    let device = Device::Cpu;
    let grads_of = |y: &Tensor, probe: &Tensor, vars: &[&Var]| -> Vec<Tensor> {
        let grads = (y * probe).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().clone())
            .collect()
    };

    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7, 12), &device).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 12), &device).unwrap()).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (3, 7, 5), &device).unwrap();
    let fused = x.as_tensor().apply_op2(w.as_tensor(), LinearOp).unwrap();
    let generic = x
        .as_tensor()
        .broadcast_matmul(&w.as_tensor().t().unwrap())
        .unwrap();
    assert!(max_abs_diff(&fused, &generic) < 1e-5, "linear values");
    let (a, b) = (
        grads_of(&fused, &probe, &[&x, &w]),
        grads_of(&generic, &probe, &[&x, &w]),
    );
    for (fused, generic) in a.iter().zip(&b) {
        let err = max_abs_diff(fused, generic);
        assert!(err < 1e-4, "linear gradients differ by {err}");
    }

    let (levels, rows, width) = (3, 6, 4);
    let table =
        Var::from_tensor(&Tensor::randn(0f32, 1.0, (levels, rows, width), &device).unwrap())
            .unwrap();
    // Repeated ids in one level: their gradients must add up.
    let ids: Vec<u32> = (0..2 * levels * 5).map(|i| (i * 7 % 5) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, levels, 5), &device).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (2, 5, width), &device).unwrap();
    let fused = table.as_tensor().apply_op2(&ids, EmbedSum).unwrap();
    let offsets = Tensor::new(&[0u32, rows as u32, 2 * rows as u32], &device)
        .unwrap()
        .reshape((1, levels, 1))
        .unwrap();
    let flat_ids = ids.broadcast_add(&offsets).unwrap().flatten_all().unwrap();
    let generic = table
        .as_tensor()
        .reshape((levels * rows, width))
        .unwrap()
        .index_select(&flat_ids, 0)
        .unwrap()
        .reshape((2, levels, 5, width))
        .unwrap()
        .sum(1)
        .unwrap();
    assert_eq!(max_abs_diff(&fused, &generic), 0.0, "embedding sums");
    let err = max_abs_diff(
        &grads_of(&fused, &probe, &[&table])[0],
        &grads_of(&generic, &probe, &[&table])[0],
    );
    assert!(err < 1e-5, "embedding gradients differ by {err}");
    let past = Tensor::new(&[[[rows as u32]; 1]; 3], &device)
        .unwrap()
        .reshape((1, levels, 1))
        .unwrap();
    let err = table.as_tensor().apply_op2(&past, EmbedSum).unwrap_err();
    assert!(err.to_string().contains("past the table"), "{err}");
}

/// The weighted cross-entropy with its backward against candle's generic ops.
#[test]
fn training_cross_entropy_and_its_gradient_match_the_generic_ops() {
    use candle_core::{Var, D};
    use stemgen::model::kernels::cross_entropy::weighted_cross_entropy;
    let device = Device::Cpu;
    let (rows, vocab) = (53, 40);
    let logits =
        Var::from_tensor(&Tensor::randn(0f32, 4.0, (rows, vocab), &device).unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let labels: Vec<u32> = (0..rows).map(|_| rng.gen_range(0..vocab as u32)).collect();
    let weights: Vec<f32> = (0..rows).map(|_| rng.gen_range(0.5..4.0)).collect();
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        // Scaled, so the backward's incoming gradient is not 1.
        let loss = (f(logits.as_tensor()) * 2.5).unwrap();
        let grads = loss.backward().unwrap();
        (loss, grads.get(logits.as_tensor()).unwrap().clone())
    };
    let (fused, fused_grad) = run(&|t| weighted_cross_entropy(t, &labels, &weights).unwrap());
    let (generic, generic_grad) = run(&|t| {
        let picked = candle_nn::ops::log_softmax(t, D::Minus1)
            .unwrap()
            .gather(
                &Tensor::new(labels.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(1)
                    .unwrap(),
                1,
            )
            .unwrap()
            .squeeze(1)
            .unwrap();
        let total: f32 = weights.iter().sum();
        let w = Tensor::new(weights.as_slice(), &device).unwrap();
        ((picked * w).unwrap().sum_all().unwrap().neg().unwrap() / total as f64).unwrap()
    });
    assert!(max_abs_diff(&fused, &generic) < 1e-4, "values");
    let err = max_abs_diff(&fused_grad, &generic_grad);
    assert!(err < 1e-5, "gradients differ by {err}");
}

#[test]
fn training_rms_norm_and_its_gradients_match_the_generic_op() {
    use candle_core::Var;
    let device = Device::Cpu;
    // 300 rows (more than one block of the weight gradient's partial sums), one all-zero row,
    // a non-contiguous input.
    let mut x = Tensor::randn(0f32, 2.0, (3, 24, 100), &device).unwrap();
    x = x
        .slice_assign(
            &[0..1, 0..24, 5..6],
            &Tensor::zeros((1, 24, 1), DType::F32, &device).unwrap(),
        )
        .unwrap();
    let x = x
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(1, 2)
        .unwrap();
    let w = Tensor::randn(1f32, 0.5, 24, &device).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (3, 100, 24), &device).unwrap();
    let run = |f: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
        let xv = Var::from_tensor(&x.transpose(1, 2).unwrap().contiguous().unwrap()).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let y = f(xv.as_tensor(), wv.as_tensor());
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (gx, gw) = (
            grads.get(xv.as_tensor()).unwrap().clone(),
            grads.get(wv.as_tensor()).unwrap().clone(),
        );
        (y, gx, gw)
    };
    let fused = run(&|x, w| stemgen::model::kernels::rms_norm::rms_norm(x, w, 1e-5).unwrap());
    let generic = run(&|x, w| candle_nn::ops::rms_norm_slow(x, w, 1e-5).unwrap());
    // Relative to the largest value of the generic result.
    let rel_diff = |a: &Tensor, b: &Tensor| -> f32 {
        max_abs_diff(a, b) / max_abs_diff(b, &b.zeros_like().unwrap()).max(1e-6)
    };
    assert!(rel_diff(&fused.0, &generic.0) < 1e-5, "values");
    assert!(rel_diff(&fused.1, &generic.1) < 1e-4, "input gradient");
    assert!(rel_diff(&fused.2, &generic.2) < 1e-4, "weight gradient");
    // The same weight gradient on every run (fixed summation order).
    let again = run(&|x, w| stemgen::model::kernels::rms_norm::rms_norm(x, w, 1e-5).unwrap());
    assert_eq!(
        again.2.to_vec1::<f32>().unwrap(),
        fused.2.to_vec1::<f32>().unwrap()
    );
}
