//! engine::sample: guidance, causal-bias ranking, cosine schedule, editing, windows, errors.
//! A tiny seeded random model keeps every test to well under a second of model time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stemgen::codec::{CodeProfiles, Tokens};
use stemgen::model::{ModelCheckpoint, ModelConfig, StemGenModel};
use stemgen::sample::{
    guided_log_probs, log_softmax, sample, Edit, GuidanceWeights, Preset, SampleError,
    SampleRequest, SamplerOverrides, SamplerSettings, StepReport,
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
        p_ctx: 0.2,
        p_cat: 0.2,
        gain_steps: 0,
        context_features: Vec::new(),
    }
}

fn tiny_model() -> StemGenModel {
    ModelCheckpoint::random(&tiny_config(), &Device::Cpu, 7)
        .unwrap()
        .model
}

fn random_tokens(frames: usize, seed: u64) -> Tokens {
    let config = tiny_config();
    let mut rng = StdRng::seed_from_u64(seed);
    let codes = (0..config.levels * frames)
        .map(|_| rng.gen_range(0..config.codebook_size as u32))
        .collect();
    Tokens::new(config.levels, frames, codes).unwrap()
}

fn settings(steps: Vec<usize>, seed: u64) -> SamplerSettings {
    SamplerSettings {
        steps,
        ..SamplerSettings::preset(Preset::Normal, 3)
    }
    .with_seed(seed)
}

/// What a progress report said, owned.
#[derive(Debug, Clone)]
struct Report {
    window: usize,
    window_frames: std::ops::Range<usize>,
    level: usize,
    step: usize,
    steps: usize,
    done: usize,
    total: usize,
    unmasked: Vec<usize>,
}

fn run(
    model: &StemGenModel,
    request: &SampleRequest,
    settings: &SamplerSettings,
) -> (Tokens, Vec<Report>) {
    let mut reports = Vec::new();
    let tokens = sample(
        model,
        request,
        settings,
        &mut |r: &StepReport| {
            reports.push(Report {
                window: r.window,
                window_frames: r.window_frames.clone(),
                level: r.level,
                step: r.step,
                steps: r.steps,
                done: r.done,
                total: r.total,
                unmasked: r.unmasked.to_vec(),
            })
        },
        None,
    )
    .unwrap();
    (tokens, reports)
}

/// Frames unmasked at `level` of `window`, in the order the sampler unmasked them.
fn unmask_order(reports: &[Report], window: usize, level: usize) -> Vec<usize> {
    reports
        .iter()
        .filter(|r| r.window == window && r.level == level)
        .flat_map(|r| r.unmasked.iter().copied())
        .collect()
}

fn assert_valid_output(tokens: &Tokens, frames: usize) {
    let config = tiny_config();
    assert_eq!((tokens.levels, tokens.frames), (config.levels, frames));
    assert_eq!(tokens.codes.len(), config.levels * frames);
    assert!(
        tokens.codes.iter().all(|&t| t < config.mask_id()),
        "output holds MASK or out-of-range ids: {:?}",
        tokens.codes
    );
}

#[test]
fn presets_are_defined_and_parsed() {
    assert_eq!(SamplerSettings::paper().steps, vec![128, 64, 32, 32]);
    assert_eq!(SamplerSettings::normal().steps, vec![12, 8, 4, 4]);
    assert_eq!(SamplerSettings::draft().steps, vec![8, 4, 2, 2]);
    assert_eq!(Preset::Paper.steps(3), vec![128, 64, 32]);
    assert_eq!(Preset::Draft.steps(6), vec![8, 4, 2, 2, 2, 2]);
    let paper = SamplerSettings::paper();
    assert_eq!(
        (paper.w_confidence, paper.w_position, paper.w_random),
        (0.1, 0.1, 1.0)
    );
    assert_eq!((paper.lambda_context, paper.lambda_category), (3.0, 3.0));
    // The paper guides every level; the faster presets the two coarsest (fewer on a smaller
    // model).
    assert_eq!(SamplerSettings::preset(Preset::Paper, 5).guided_levels, 5);
    assert_eq!(SamplerSettings::preset(Preset::Normal, 5).guided_levels, 2);
    assert_eq!(SamplerSettings::preset(Preset::Draft, 1).guided_levels, 1);
    // The harmony prior is the faster presets' only; the paper's sampler has none.
    assert_eq!(paper.harmony_prior, 0.0);
    assert_eq!(SamplerSettings::normal().harmony_prior, 8.0);
    assert_eq!(SamplerSettings::draft().harmony_prior, 8.0);
    for preset in Preset::ALL {
        assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
    }
    let err = "fast".parse::<Preset>().unwrap_err().to_string();
    assert!(
        err.contains("fast") && err.contains("paper, normal, draft"),
        "{err}"
    );
}

/// Overrides replace exactly the settings they carry.
#[test]
fn sampler_overrides_replace_only_what_they_set() {
    let preset = SamplerSettings::normal();
    let mut settings = preset.clone();
    SamplerOverrides::default().apply(&mut settings);
    assert_eq!(settings, preset);
    let overrides = SamplerOverrides {
        steps: Some(vec![12, 8, 4, 4]),
        temperature: Some(0.5),
        top_p: Some(0.9),
        plausibility: Some(0.1),
        w_confidence: Some(2.0),
        guided_levels: Some(4),
        harmony_prior: Some(0.1),
        hold_notes: Some(true),
    };
    overrides.apply(&mut settings);
    assert_eq!(
        settings,
        SamplerSettings {
            steps: vec![12, 8, 4, 4],
            temperature: 0.5,
            top_p: 0.9,
            plausibility: 0.1,
            w_confidence: 2.0,
            guided_levels: 4,
            harmony_prior: 0.1,
            hold_notes: true,
            ..preset
        }
    );
}

#[test]
fn guidance_equals_the_formula_on_known_logits() {
    let context = [2.0f32, 0.5, -1.0, 0.0];
    let category = [0.0f32, 1.0, 3.0, -2.0];
    let uncond = [1.0f32, 1.0, 1.0, 1.0];
    // log-softmax by hand, in f64.
    let lsm = |row: &[f32]| -> Vec<f64> {
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        row.iter().map(|&x| x as f64 - z).collect()
    };
    for (a, c) in [(3.0, 3.0), (1.5, 0.5), (1.0, 1.0), (-0.5, 2.0)] {
        let (la, lc, lu) = (lsm(&context), lsm(&category), lsm(&uncond));
        let got = guided_log_probs(
            &log_softmax(&context),
            &log_softmax(&category),
            &log_softmax(&uncond),
            GuidanceWeights::new(a, c),
        );
        for v in 0..4 {
            let expected = a * la[v] + c * lc[v] + (1.0 - a - c) * lu[v];
            assert!(
                (got[v] as f64 - expected).abs() < 1e-5,
                "lambda ({a}, {c}) v={v}: {} vs {expected}",
                got[v]
            );
        }
    }
    // Hand-computed single value: uniform unconditional row, log p = -ln 4; lambda 3/3:
    // 3 * ls(context)[0] + 3 * ls(category)[0] - 5 * (-ln 4).
    let l0 = lsm(&context)[0];
    let c0 = lsm(&category)[0];
    let g = guided_log_probs(
        &log_softmax(&context),
        &log_softmax(&category),
        &log_softmax(&uncond),
        GuidanceWeights::new(3.0, 3.0),
    );
    assert!((g[0] as f64 - (3.0 * l0 + 3.0 * c0 + 5.0 * 4f64.ln())).abs() < 1e-5);
    assert_eq!(GuidanceWeights::new(3.0, 3.0).unconditional, -5.0);

    let lp = log_softmax(&context);
    let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-6);
}

#[test]
fn guidance_with_lambda_one_and_zero_is_exactly_one_model() {
    let context = log_softmax(&[0.3, -1.2, 2.5, 0.0, 0.7]);
    let category = log_softmax(&[1.0, 1.1, -0.4, 0.2, 0.0]);
    let uncond = log_softmax(&[-0.3, 0.0, 0.9, 1.4, -2.0]);
    let ninf = [f32::NEG_INFINITY; 5];
    // Unused rows are not read: even -inf there does not leak in as NaN.
    let g = guided_log_probs(&context, &ninf, &ninf, GuidanceWeights::new(1.0, 0.0));
    assert_eq!(g, context);
    let g = guided_log_probs(&ninf, &category, &ninf, GuidanceWeights::new(0.0, 1.0));
    assert_eq!(g, category);
    let g = guided_log_probs(&ninf, &ninf, &uncond, GuidanceWeights::new(0.0, 0.0));
    assert_eq!(g, uncond);
    // And a genuine mix is none of them.
    let g = guided_log_probs(&context, &category, &uncond, GuidanceWeights::new(3.0, 3.0));
    assert_ne!(g, context);
    assert_ne!(g, uncond);
}

#[test]
fn inference_kernels_match_the_differentiable_model() {
    let model = tiny_model();
    let fast = model.for_inference();
    assert!(fast.is_inference() && !model.is_inference());
    let config = tiny_config();
    let (ctx, tgt) = (random_tokens(20, 1), random_tokens(20, 2));
    let mut target = tgt.codes.clone();
    for t in target.iter_mut().step_by(3) {
        *t = config.mask_id();
    }
    let dev = Device::Cpu;
    let context = Tensor::from_vec(ctx.codes.repeat(2), (2, 3, 20), &dev).unwrap();
    let target = Tensor::from_vec(target.repeat(2), (2, 3, 20), &dev).unwrap();
    let category = Tensor::new(&[1u32, 4], &dev).unwrap();
    let slow = model
        .forward(&context, &target, &category, &[false, true], None)
        .unwrap();
    let quick = fast
        .forward(&context, &target, &category, &[false, true], None)
        .unwrap();
    let diff = (slow - quick)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "fused and generic kernels differ by {diff}");
}

/// The CPU inference forward keeps its activations between calls: a call of another shape in
/// between (the sampler's one-row levels, a shorter last window) changes nothing, and a
/// context channel made once gives what `hidden` gives.
#[test]
fn inference_forward_reuses_its_workspace_across_shapes() {
    let fast = tiny_model().for_inference();
    let config = tiny_config();
    let dev = Device::Cpu;
    let inputs = |batch: usize, frames: usize, seed: u64| {
        let tokens = random_tokens(frames, seed).codes.repeat(batch);
        let mut target = random_tokens(frames, seed + 1).codes.repeat(batch);
        for t in target.iter_mut().step_by(2) {
            *t = config.mask_id();
        }
        let shape = (batch, config.levels, frames);
        let categories: Vec<u32> = (0..batch as u32).collect();
        (
            Tensor::from_vec(tokens, shape, &dev).unwrap(),
            Tensor::from_vec(target, shape, &dev).unwrap(),
            Tensor::from_vec(categories, batch, &dev).unwrap(),
            (0..batch).map(|b| b == 1).collect::<Vec<bool>>(),
        )
    };
    let hidden = |model: &StemGenModel, batch: usize, frames: usize, seed: u64| {
        let (context, target, category, dropped) = inputs(batch, frames, seed);
        let channel = model
            .context_channel(&context, &category, &dropped, None)
            .unwrap();
        let with = model.hidden_with(&channel, &target).unwrap();
        let whole = model
            .hidden(&context, &target, &category, &dropped, None)
            .unwrap();
        let (with, whole): (Vec<f32>, Vec<f32>) = (
            with.flatten_all().unwrap().to_vec1().unwrap(),
            whole.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(with, whole);
        with
    };
    let first = hidden(&fast, 3, 20, 11);
    let other = hidden(&fast, 1, 12, 21);
    assert_eq!(hidden(&fast, 3, 20, 11), first);
    let fresh = tiny_model().for_inference();
    assert_eq!(hidden(&fresh, 1, 12, 21), other);
    assert_ne!(first[..other.len()], other[..]);
}

/// Greedy decoding with one step per level reproduces a reference built directly on the
/// (non-fused) model's three conditional forwards combined by Eq. 3: this pins which batch
/// row carries which condition. Past `guided_levels`, the reference is the forward with
/// both context and category.
#[test]
fn sampler_guides_with_the_right_conditions() {
    let model = tiny_model();
    let config = tiny_config();
    let frames = 12;
    let ctx = random_tokens(frames, 3);
    let category = 2u32;
    let dev = Device::Cpu;
    let null = config.null_category();
    let reference = |lambda_a: f64, lambda_c: f64, guided_levels: usize| -> Vec<u32> {
        let mut target = vec![config.mask_id(); config.levels * frames];
        let context = Tensor::from_vec(ctx.codes.clone(), (1, 3, frames), &dev).unwrap();
        for q in 0..config.levels {
            let tgt = Tensor::from_vec(target.clone(), (1, 3, frames), &dev).unwrap();
            let logits = |cat: u32, dropped: bool| -> Vec<Vec<f32>> {
                let cat = Tensor::new(&[cat], &dev).unwrap();
                let all = model
                    .forward(&context, &tgt, &cat, &[dropped], None)
                    .unwrap();
                let level: Vec<Vec<Vec<f32>>> = all.squeeze(0).unwrap().to_vec3().unwrap();
                level[q].clone()
            };
            let (given_ctx, given_cat, neither) = (
                logits(null, false),
                logits(category, true),
                logits(null, true),
            );
            let given_both = logits(category, false);
            for n in 0..frames {
                let g = if q < guided_levels {
                    guided_log_probs(
                        &log_softmax(&given_ctx[n]),
                        &log_softmax(&given_cat[n]),
                        &log_softmax(&neither[n]),
                        GuidanceWeights::new(lambda_a, lambda_c),
                    )
                } else {
                    log_softmax(&given_both[n])
                };
                let best = (0..g.len())
                    .max_by(|&a, &b| g[a].partial_cmp(&g[b]).unwrap().then(b.cmp(&a)))
                    .unwrap();
                target[q * frames + n] = best as u32;
            }
        }
        target
    };
    let mut outputs = Vec::new();
    for (a, c, guided) in [
        (1.0, 0.0, 3),
        (0.0, 1.0, 3),
        (0.0, 0.0, 3),
        (3.0, 3.0, 3),
        (3.0, 3.0, 1),
        (3.0, 3.0, 0),
    ] {
        let settings = SamplerSettings {
            temperature: 0.0,
            lambda_context: a,
            lambda_category: c,
            guided_levels: guided,
            ..settings(vec![1, 1, 1], 0)
        };
        let (tokens, reports) = run(&model, &SampleRequest::new(&ctx, category), &settings);
        assert_eq!(reports.len(), 3, "one iteration per level");
        let expected = reference(a, c, guided);
        assert_eq!(
            tokens.codes, expected,
            "lambda ({a}, {c}), {guided} guided levels"
        );
        outputs.push(tokens.codes);
    }
    // The conditions really differ on this model, so the test can tell them apart.
    assert_ne!(outputs[0], outputs[1]);
    assert_ne!(outputs[0], outputs[2]);
    assert_ne!(outputs[1], outputs[2]);
    assert_ne!(
        outputs[3], outputs[4],
        "guidance past level 0 changes the tokens"
    );
    assert_ne!(
        outputs[4], outputs[5],
        "guidance of level 0 changes the tokens"
    );
}

#[test]
fn causal_bias_alone_unmasks_strictly_left_to_right() {
    let model = tiny_model();
    let frames = 20;
    let ctx = random_tokens(frames, 4);
    let causal = SamplerSettings {
        w_confidence: 0.0,
        w_random: 0.0,
        w_position: 0.1,
        ..settings(vec![5, 4, 3], 11)
    };
    let (tokens, reports) = run(&model, &SampleRequest::new(&ctx, 1), &causal);
    assert_valid_output(&tokens, frames);
    for level in 0..3 {
        assert_eq!(
            unmask_order(&reports, 0, level),
            (0..frames).collect::<Vec<_>>(),
            "level {level}"
        );
    }
    // Cosine schedule, M0 = 20, S = 5: still masked after step s = floor(cos(pi/2 s/5) 20)
    // = 19, 16, 11, 6, 0, i.e. 1, 3, 5, 5, 6 unmasked per step.
    let per_step: Vec<usize> = reports
        .iter()
        .filter(|r| r.level == 0)
        .map(|r| r.unmasked.len())
        .collect();
    assert_eq!(per_step, vec![1, 3, 5, 5, 6]);
    let levels: Vec<(usize, usize, usize)> =
        reports.iter().map(|r| (r.level, r.step, r.steps)).collect();
    assert_eq!(levels.len(), 12);
    assert_eq!(levels[5], (1, 1, 4));
    assert_eq!(
        reports.iter().map(|r| r.done).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert!(reports.iter().all(|r| r.total == 12));

    // Control: with the paper's noise weight the order is not left to right.
    let (_, noisy) = run(
        &model,
        &SampleRequest::new(&ctx, 1),
        &settings(vec![5, 4, 3], 11),
    );
    assert_ne!(unmask_order(&noisy, 0, 0), (0..frames).collect::<Vec<_>>());
}

#[test]
fn every_level_ends_fully_unmasked() {
    let model = tiny_model();
    for (frames, steps) in [(1, vec![3, 2, 1]), (7, vec![16, 8, 4]), (24, vec![4, 2, 1])] {
        let ctx = random_tokens(frames, 5);
        let (tokens, reports) = run(&model, &SampleRequest::new(&ctx, 0), &settings(steps, 5));
        assert_valid_output(&tokens, frames);
        for level in 0..3 {
            let mut order = unmask_order(&reports, 0, level);
            order.sort();
            assert_eq!(order, (0..frames).collect::<Vec<_>>(), "each frame once");
            let level_reports: Vec<&Report> = reports.iter().filter(|r| r.level == level).collect();
            assert!(level_reports.iter().all(|r| !r.unmasked.is_empty()));
            // Never more iterations than masked frames.
            assert!(level_reports.len() <= frames);
        }
    }
}

#[test]
fn level0_drafts_are_complete_and_agree_with_the_decided_frames() {
    let model = tiny_model();
    let frames = 24;
    let ctx = random_tokens(frames, 8);
    let mask = tiny_config().codebook_size as u32;
    let mut drafts = Vec::new();
    let mut decided = vec![false; frames];
    let tokens = sample(
        &model,
        &SampleRequest::new(&ctx, 2),
        &settings(vec![4, 2, 2], 9),
        &mut |r: &StepReport| {
            if r.level == 0 {
                r.unmasked.iter().for_each(|&n| decided[n] = true);
            }
            assert_eq!(
                r.draft_codes.is_some(),
                r.level == 0 && r.step < r.steps,
                "a draft at level 0's iterations before the last"
            );
            if let Some(d) = r.draft_codes {
                drafts.push((decided.clone(), d[..frames].to_vec()));
            }
        },
        None,
    )
    .unwrap();
    assert_eq!(drafts.len(), 3);
    for (decided, draft) in &drafts {
        assert!(draft.iter().all(|&c| c < mask), "no MASK left in the draft");
        for n in (0..frames).filter(|&n| decided[n]) {
            assert_eq!(
                draft[n], tokens.codes[n],
                "frame {n}: decided frames are final"
            );
        }
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let model = tiny_model();
    let ctx = random_tokens(16, 6);
    let request = SampleRequest::new(&ctx, 3);
    let (a, _) = run(&model, &request, &settings(vec![4, 2, 2], 42));
    let (b, _) = run(&model, &request, &settings(vec![4, 2, 2], 42));
    let (c, _) = run(&model, &request, &settings(vec![4, 2, 2], 43));
    assert_eq!(a.codes, b.codes);
    assert_ne!(a.codes, c.codes);
}

#[test]
fn region_edit_never_changes_tokens_outside_the_region() {
    let model = tiny_model();
    let frames = 20;
    let ctx = random_tokens(frames, 7);
    let previous = random_tokens(frames, 8);
    for (region, seed) in [(5..12, 1), (0..3, 2), (19..20, 3), (0..20, 4)] {
        let request = SampleRequest {
            edit: Some(Edit {
                previous: &previous,
                region: region.clone(),
            }),
            ..SampleRequest::new(&ctx, 2)
        };
        let (tokens, reports) = run(&model, &request, &settings(vec![4, 3, 2], seed));
        assert_valid_output(&tokens, frames);
        for q in 0..3 {
            for n in (0..frames).filter(|n| !region.contains(n)) {
                assert_eq!(tokens.level(q)[n], previous.level(q)[n], "q {q} n {n}");
            }
            let mut order = unmask_order(&reports, 0, q);
            order.sort();
            assert_eq!(order, region.clone().collect::<Vec<_>>());
        }
        if region.len() >= 3 {
            let inside_changed = (0..3)
                .flat_map(|q| region.clone().map(move |n| (q, n)))
                .any(|(q, n)| tokens.level(q)[n] != previous.level(q)[n]);
            assert!(inside_changed, "region {region:?} was not regenerated");
        }
    }
}

#[test]
fn cancel_stops_within_one_iteration() {
    let model = tiny_model();
    let ctx = random_tokens(16, 9);
    let request = SampleRequest::new(&ctx, 0);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut calls = 0;
    let result = sample(
        &model,
        &request,
        &settings(vec![8, 4, 4], 0),
        &mut |_: &StepReport| {
            calls += 1;
            cancel.store(true, Ordering::Relaxed);
        },
        Some(&cancel),
    );
    assert!(matches!(result, Err(SampleError::Cancelled)), "{result:?}");
    assert_eq!(calls, 1, "no iteration after the cancel");

    let mut calls = 0;
    let result = sample(
        &model,
        &request,
        &settings(vec![8, 4, 4], 0),
        &mut |_: &StepReport| calls += 1,
        Some(&AtomicBool::new(true)),
    );
    assert!(matches!(result, Err(SampleError::Cancelled)));
    assert_eq!(calls, 0);
}

#[test]
fn long_generation_keeps_the_overlap_of_the_previous_window() {
    let model = tiny_model();
    let frames = 60;
    let ctx = random_tokens(frames, 10);
    let request = SampleRequest {
        overlap: 8,
        ..SampleRequest::new(&ctx, 1)
    };
    let settings = settings(vec![4, 2, 2], 77);
    let (tokens, reports) = run(&model, &request, &settings);
    assert_valid_output(&tokens, frames);

    // Windows of 24 frames: 0..24, 16..40, 32..56 and the last aligned to the end, 36..60.
    let mut windows: Vec<(usize, std::ops::Range<usize>)> = reports
        .iter()
        .map(|r| (r.window, r.window_frames.clone()))
        .collect();
    windows.dedup();
    assert_eq!(
        windows,
        vec![(0, 0..24), (1, 16..40), (2, 32..56), (3, 36..60)]
    );
    // Iterations in proportion to the frames each window generates (24, 16, 16 and 4 of
    // 24), rounded up: the preset's [4, 2, 2] only in the first window.
    for (w, expected) in [[4, 2, 2], [3, 2, 2], [3, 2, 2], [1, 1, 1]]
        .iter()
        .enumerate()
    {
        for (level, &steps) in expected.iter().enumerate() {
            let seen: Vec<usize> = reports
                .iter()
                .filter(|r| r.window == w && r.level == level)
                .map(|r| r.steps)
                .collect();
            assert_eq!(seen.len(), steps, "window {w} level {level}: {seen:?}");
            assert!(seen.iter().all(|&s| s == steps), "window {w} level {level}");
        }
    }
    // A window only generates frames after the previous window's end.
    for level in 0..3 {
        let mut all = Vec::new();
        for (w, range) in &windows {
            let order = unmask_order(&reports, *w, level);
            let first_new = if *w == 0 { 0 } else { windows[*w - 1].1.end };
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (first_new..range.end).collect::<Vec<_>>());
            all.extend(order);
        }
        all.sort();
        assert_eq!(all, (0..frames).collect::<Vec<_>>());
    }
    // The first window is exactly a standalone generation of its frames (same seed), so the
    // later windows left its overlap tokens untouched.
    let first = ctx.slice_frames(0, 24);
    let (alone, _) = run(&model, &SampleRequest::new(&first, 1), &settings);
    assert_eq!(tokens.slice_frames(0, 24).codes, alone.codes);
    // The second window saw the first window's overlap: it differs from generating it alone.
    let second = ctx.slice_frames(16, 40);
    let (second_alone, _) = run(&model, &SampleRequest::new(&second, 1), &settings);
    assert_ne!(tokens.slice_frames(16, 40).codes, second_alone.codes);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model = tiny_model();
    let config = tiny_config();
    let ctx = random_tokens(10, 12);
    let good = settings(vec![2, 2, 2], 0);
    let expect_err =
        |request: &SampleRequest, settings: &SamplerSettings, needle: &str| match sample(
            &model,
            request,
            settings,
            &mut |_: &StepReport| {},
            None,
        ) {
            Err(SampleError::InvalidInput(msg)) => {
                assert!(msg.contains(needle), "'{msg}' lacks '{needle}'")
            }
            other => panic!("expected an input error with '{needle}', got {other:?}"),
        };

    let empty = Tokens::new(3, 0, vec![]).unwrap();
    expect_err(&SampleRequest::new(&empty, 0), &good, "0 frames");
    let two_levels = Tokens::new(2, 10, vec![0; 20]).unwrap();
    expect_err(&SampleRequest::new(&two_levels, 0), &good, "2 levels");
    let out_of_range = Tokens::new(3, 2, vec![0, 1, 2, 3, 4, 16]).unwrap();
    expect_err(&SampleRequest::new(&out_of_range, 0), &good, "token id 16");
    let torn = Tokens {
        levels: 3,
        frames: 10,
        codes: vec![0; 7],
    };
    expect_err(&SampleRequest::new(&torn, 0), &good, "holds 7 codes");
    expect_err(&SampleRequest::new(&ctx, 4), &good, "unknown category id 4");
    expect_err(
        &SampleRequest::new(&ctx, 99),
        &good,
        "unknown category id 99",
    );

    expect_err(
        &SampleRequest::new(&ctx, 0),
        &settings(vec![], 0),
        "steps has 0 entries",
    );
    expect_err(
        &SampleRequest::new(&ctx, 0),
        &settings(vec![2, 2], 0),
        "3 levels",
    );
    expect_err(
        &SampleRequest::new(&ctx, 0),
        &settings(vec![2, 0, 2], 0),
        "level 1 is 0",
    );
    let nan = SamplerSettings {
        temperature: f64::NAN,
        ..good.clone()
    };
    expect_err(&SampleRequest::new(&ctx, 0), &nan, "temperature");
    let inf = SamplerSettings {
        lambda_category: f64::INFINITY,
        ..good.clone()
    };
    expect_err(&SampleRequest::new(&ctx, 0), &inf, "lambda_category");
    let too_many = SamplerSettings {
        guided_levels: 4,
        ..good.clone()
    };
    expect_err(&SampleRequest::new(&ctx, 0), &too_many, "guided_levels 4");

    let long = random_tokens(40, 13);
    let bad_overlap = SampleRequest {
        overlap: 24,
        ..SampleRequest::new(&long, 0)
    };
    expect_err(&bad_overlap, &good, "overlap");
    let big_window = SampleRequest {
        window: Some(config.max_frames + 1),
        ..SampleRequest::new(&ctx, 0)
    };
    expect_err(&big_window, &good, "window");

    let previous = random_tokens(10, 14);
    let short_prev = random_tokens(9, 14);
    for (prev, region, needle) in [
        (&previous, 4..4, "non-empty"),
        (&previous, 6..11, "within 0..10"),
        (&short_prev, 0..2, "9 frames"),
    ] {
        let request = SampleRequest {
            edit: Some(Edit {
                previous: prev,
                region,
            }),
            ..SampleRequest::new(&ctx, 0)
        };
        expect_err(&request, &good, needle);
    }
}

/// The tiny model with every context feature and `n_categories` categories, seeded random
/// weights (the harmony prior's tests).
fn model_with_context_features(n_categories: usize) -> (ModelConfig, StemGenModel) {
    use stemgen::analysis::context_features::ContextFeature;
    let config = ModelConfig {
        context_features: ContextFeature::ALL.to_vec(),
        n_categories,
        ..tiny_config()
    };
    let model = ModelCheckpoint::random(&config, &Device::Cpu, 7)
        .unwrap()
        .model;
    (config, model)
}

/// The harmony prior: a strong prior draws the code whose profile puts dB on the chroma's
/// pitch classes at level 1, and only there; a silent chroma or strength 0 leaves the
/// sampler as it was; profiles of the wrong shape are refused.
#[test]
fn the_harmony_prior_favours_codes_on_the_harmony_and_is_off_without_one() {
    use stemgen::analysis::context_features::{ContextFeature, FeatureFrames};
    let (config, model) = model_with_context_features(tiny_config().n_categories);
    let frames = 20;
    let ctx = random_tokens(frames, 3);
    let silent = FeatureFrames::zeros(&config.context_features, frames);
    let mut triad = silent.clone();
    triad.replace(ContextFeature::Chroma, |_| {
        let mut v = vec![0.0; 12];
        for c in [0, 4, 7] {
            v[c] = 1.0;
        }
        v
    });
    // Code 5 puts 6 dB on C, E and G at every level; every other code is neutral.
    let mut level = vec![0.0f32; config.codebook_size * 12];
    for c in [0, 4, 7] {
        level[5 * 12 + c] = 6.0;
    }
    let profiles = CodeProfiles {
        pitch_classes: vec![level; config.levels],
        level0_brightness_db: vec![0.0; config.codebook_size],
    };
    let run = |features: &FeatureFrames, prior: f64, profiles: Option<&CodeProfiles>| {
        let settings = SamplerSettings {
            plausibility: 0.0,
            harmony_prior: prior,
            ..settings(vec![4, 2, 2], 11)
        };
        let request = SampleRequest {
            features: Some(features),
            code_profiles: profiles,
            ..SampleRequest::new(&ctx, 1)
        };
        sample(&model, &request, &settings, &mut |_| {}, None)
    };
    let plain = run(&triad, 0.0, None).unwrap();
    let favoured = run(&triad, 10.0, Some(&profiles)).unwrap();
    // The prior decides level 1; level 0 (each frame's loudness and coarse shape) and the
    // finer levels (the envelope's detail) are left to the model.
    let level = |codes: &[u32], q: usize| codes[q * frames..(q + 1) * frames].to_vec();
    assert!(
        level(&favoured.codes, 1).iter().all(|&c| c == 5),
        "{:?}",
        favoured.codes
    );
    assert_eq!(level(&favoured.codes, 0), level(&plain.codes, 0));
    assert!(level(&plain.codes, 1).iter().any(|&c| c != 5));
    assert!(
        level(&favoured.codes, 2).iter().any(|&c| c != 5),
        "{:?}",
        favoured.codes
    );
    assert_eq!(
        run(&triad, 0.0, Some(&profiles)).unwrap().codes,
        plain.codes
    );
    let no_harmony = run(&silent, 10.0, Some(&profiles)).unwrap();
    assert_eq!(no_harmony.codes, run(&silent, 0.0, None).unwrap().codes);

    let short = CodeProfiles {
        pitch_classes: vec![vec![0.0f32; 12]; config.levels],
        ..profiles.clone()
    };
    let err = run(&triad, 1.0, Some(&short)).unwrap_err().to_string();
    assert!(err.contains("pitch-class profiles"), "{err}");
    let nan = CodeProfiles {
        level0_brightness_db: vec![f32::NAN; config.codebook_size],
        ..profiles.clone()
    };
    let err = run(&triad, 1.0, Some(&nan)).unwrap_err().to_string();
    assert!(err.contains("finite"), "{err}");
}

/// A bass stem following chords: the prior also decides level 0 (holding back bright codes
/// there) and pulls toward the chords' bass notes; the same stem pulled toward the chroma
/// alone keeps level 0 the model's.
#[test]
fn a_bass_following_chords_gets_the_prior_on_level_0_too() {
    use stemgen::analysis::context_features::{ContextFeature, FeatureFrames};
    use stemgen::data::categories::Category;
    let (config, model) = model_with_context_features(5);
    let frames = 20;
    let ctx = random_tokens(frames, 3);
    // A minor over C in the bass (Am/C): the chroma A, C, E; the bass chroma C.
    let mut features = FeatureFrames::zeros(&config.context_features, frames);
    features.replace(ContextFeature::Chroma, |_| {
        let mut v = vec![0.0; 12];
        for c in [9, 0, 4] {
            v[c] = 1.0;
        }
        v
    });
    features.replace(ContextFeature::BassChroma, |_| {
        let mut v = vec![0.0; 12];
        v[0] = 1.0;
        v
    });
    // Code 5 puts 6 dB on A, code 6 on C; every other code is neutral.
    let mut level = vec![0.0f32; config.codebook_size * 12];
    level[5 * 12 + 9] = 6.0;
    level[6 * 12] = 6.0; // C
    let mut profiles = CodeProfiles {
        pitch_classes: vec![level; config.levels],
        level0_brightness_db: vec![0.0; config.codebook_size],
    };
    let bass = Category::Bass as u32;
    let run = |profiles: &CodeProfiles, follows_chords: bool, prior: f64| {
        let settings = SamplerSettings {
            plausibility: 0.0,
            harmony_prior: prior,
            ..settings(vec![4, 2, 2], 11)
        };
        let request = SampleRequest {
            features: Some(&features),
            code_profiles: Some(profiles),
            bass_chords: follows_chords.then_some(&features),
            ..SampleRequest::new(&ctx, bass)
        };
        sample(&model, &request, &settings, &mut |_| {}, None).unwrap()
    };
    let level = |codes: &[u32], q: usize| codes[q * frames..(q + 1) * frames].to_vec();
    let plain = run(&profiles, false, 0.0);
    let chroma_only = run(&profiles, false, 10.0);
    let following = run(&profiles, true, 10.0);
    assert_eq!(level(&chroma_only.codes, 0), level(&plain.codes, 0));
    for q in [0, 1] {
        // The bass note (C, weighted in) wins over the other chord tone (A).
        assert!(
            level(&following.codes, q).iter().all(|&c| c == 6),
            "level {q}: {:?}",
            following.codes
        );
    }
    assert!(level(&plain.codes, 0).iter().any(|&c| c != 6));
    // Toward the chroma alone the two chord tones score alike at level 1.
    assert!(level(&chroma_only.codes, 1)
        .iter()
        .all(|&c| c == 5 || c == 6));

    // Code 6 (C) made far brighter than every other level-0 code: level 0 takes the other
    // chord tone (A, code 5), level 1 (no brightness there) keeps the bass note.
    profiles.level0_brightness_db[6] = 200.0;
    let dull = run(&profiles, true, 10.0);
    assert!(
        level(&dull.codes, 0).iter().all(|&c| c == 5),
        "{:?}",
        dull.codes
    );
    assert!(
        level(&dull.codes, 1).iter().all(|&c| c == 6),
        "{:?}",
        dull.codes
    );
    // Code 5 (A) too 7 dB brighter than the rest: more than the margin above the model's own
    // likeliest code wherever that is a dull one, so level 0 leaves the chord tones there.
    profiles.level0_brightness_db[5] = 7.0;
    let capped = run(&profiles, true, 10.0);
    assert!(
        level(&capped.codes, 0).iter().any(|&c| c != 5 && c != 6),
        "{:?}",
        capped.codes
    );
    // Toward the chroma alone level 0 stays the model's, brightness or not.
    assert_eq!(
        level(&run(&profiles, false, 10.0).codes, 0),
        level(&plain.codes, 0)
    );
}

/// Attacks without their notes in a level-0 row of `shapes` codes per gain step: frames that
/// rise by the rule's steps over the frame before and are followed within three frames by
/// one further below than the rule allows.
fn attacks_without_notes(row: &[u32], shapes: u32) -> usize {
    use stemgen::sample::attacks::{ATTACK_RISE_STEPS, NOTE_FLOOR_STEPS};
    let gain = |n: usize| (row[n] / shapes) as i32;
    (1..row.len())
        .filter(|&a| gain(a) - gain(a - 1) >= ATTACK_RISE_STEPS)
        .filter(|&a| {
            NOTE_FLOOR_STEPS
                .iter()
                .enumerate()
                .any(|(j, f)| a + 1 + j < row.len() && gain(a + 1 + j) < gain(a) - f)
        })
        .count()
}

#[test]
fn attacks_of_sustained_instruments_come_with_their_notes() {
    // 8 gain steps x 2 shapes: a random model draws gains all over the place.
    let config = ModelConfig {
        gain_steps: 8,
        ..tiny_config()
    };
    let model = ModelCheckpoint::random(&config, &Device::Cpu, 3)
        .unwrap()
        .model;
    let ctx = random_tokens(24, 9);
    let (mut without_rule, mut with_rule) = (0, 0);
    for seed in 0..6 {
        let free = settings(vec![6, 2, 2], seed);
        assert!(!free.hold_notes, "no preset holds notes");
        let held = SamplerSettings {
            hold_notes: true,
            ..free.clone()
        };
        let sustained = SampleRequest {
            sustained_notes: true,
            ..SampleRequest::new(&ctx, 1)
        };
        let (a, _) = run(&model, &sustained, &free);
        let (b, _) = run(&model, &sustained, &held);
        // A drum-like request (no sustained notes) is drawn as without the rule.
        let (c, _) = run(&model, &SampleRequest::new(&ctx, 1), &held);
        assert_eq!(a.codes, c.codes);
        assert_valid_output(&b, 24);
        without_rule += attacks_without_notes(a.level(0), 2);
        with_rule += attacks_without_notes(b.level(0), 2);
    }
    assert!(
        without_rule >= 6,
        "the test needs conflicts: {without_rule}"
    );
    assert_eq!(with_rule, 0, "{without_rule} attacks without notes before");
}
