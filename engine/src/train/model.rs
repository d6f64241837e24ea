//! `stemgen train model`: the StemGen objective (ARCHITECTURE §3.3) on a token cache with AdamW,
//! the warm-up/hold/decay schedule, gradient clipping, per-level validation accuracy,
//! periodic checkpoints and resume.

use super::adamw::AdamW;
use super::features::{batch_features, FeatureMix};
use super::schedule::{clip_grad_norm, LrSchedule};
use crate::data::cache::TokenCache;
use crate::model::{draw_mask, weighted_objective_with_masks, ModelCheckpoint, ModelConfig};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub schedule: LrSchedule,
    pub weight_decay: f64,
    pub clip_norm: f64,
    /// Validate (and log per-level accuracy) every this many steps.
    pub validate_every: usize,
    /// Save a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Batches per level in each validation.
    pub validation_batches: usize,
    pub seed: u64,
    /// A model directory whose weights start a fresh run instead of random ones (to continue
    /// training a shipped model on a new schedule); its config must be the run's.
    #[serde(default)]
    pub init_from: Option<std::path::PathBuf>,
    /// Stop (with a checkpoint) after this many steps of the `steps`-long schedule.
    #[serde(default)]
    pub stop_after: Option<usize>,
    /// Share of examples trained as the sampler's first step: level 0 with every frame
    /// masked, so that only the context and the category can tell the model anything. With
    /// the plain objective the visible target frames and coarser levels explain so much that
    /// a small model never learns to listen to its context (`validate --context-probes`).
    #[serde(default)]
    pub whole_level0_share: f64,
    /// Loss weight of frames where the context has an onset (its level-0 gain rises by
    /// [`ONSET_GAIN_STEPS`] or more; needs a model with `gain_steps`), 1 = off. A context
    /// onset makes a target onset about 4 times as likely, but such frames are under a tenth
    /// of all, so the plain loss barely rewards listening to the context's timing. The
    /// weights depend on the input only, so what the model should predict does not change.
    #[serde(default = "one")]
    pub context_onset_weight: f64,
    /// Share of examples from songs with known chords that see the chord templates instead
    /// of the measured harmony (models with context features; see [`super::features`]).
    #[serde(default)]
    pub chord_template_share: f64,
    /// Share of examples that see no context features.
    #[serde(default)]
    pub feature_drop_share: f64,
    /// Learning rate of the context-feature projection relative to the rest. Added to a
    /// trained model it starts at zero; at the common rate it stays a few percent of the
    /// context embedding after 1000 steps (HISTORY, session 15), too small to steer pitch.
    #[serde(default = "one")]
    pub features_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// A rise of this many gain steps (about 4 dB with 64 steps over 90 dB) from one frame to the
/// next counts as an onset for [`ModelTrainConfig::context_onset_weight`].
pub const ONSET_GAIN_STEPS: u32 = 3;

/// Per-frame loss weights `[B * N]`: `weight` where the context's level-0 gain index rises by
/// at least [`ONSET_GAIN_STEPS`] from the previous frame, 1 elsewhere.
pub fn context_onset_weights(
    context: &Tensor,
    shapes_per_gain: usize,
    weight: f32,
) -> Result<Vec<f32>> {
    let (batch, _, frames) = context.dims3()?;
    let level0: Vec<u32> = context.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
    let gain = |b: usize, n: usize| level0[b * frames + n] / shapes_per_gain as u32;
    Ok((0..batch)
        .flat_map(|b| {
            (0..frames).map(move |n| {
                if n > 0 && gain(b, n) >= gain(b, n - 1) + ONSET_GAIN_STEPS {
                    weight
                } else {
                    1.0
                }
            })
        })
        .collect())
}

impl Default for ModelTrainConfig {
    fn default() -> Self {
        ModelTrainConfig {
            steps: 10_000,
            batch_size: 16,
            schedule: LrSchedule {
                peak: 5e-4,
                warmup: 500,
                hold: 5_000,
                half_life: 10_000,
            },
            weight_decay: 0.01,
            clip_norm: 1.0,
            validate_every: 500,
            checkpoint_every: 250,
            validation_batches: 4,
            seed: 0,
            init_from: None,
            stop_after: None,
            whole_level0_share: 0.0,
            context_onset_weight: 1.0,
            chord_template_share: 0.0,
            feature_drop_share: 0.0,
            features_lr_scale: 1.0,
        }
    }
}

/// Where training ended and how well it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub step: usize,
    pub last_loss: f32,
    /// Conditional masked-token accuracy per level on the validation songs.
    pub validation_accuracy: Vec<f32>,
    /// Accuracy of always predicting each level's most frequent training code.
    pub unigram_accuracy: Vec<f32>,
    pub tokens_per_second: f64,
    /// Target tokens per second over all the steps of this invocation (data, forward,
    /// backward and update; checkpoints and validation excluded).
    pub mean_tokens_per_second: f64,
    /// The same steps' compute rate: three times the analytic forward FLOPs of a batch
    /// (forward plus a backward of about twice its cost) per second of step time.
    pub training_gflops: f64,
}

/// State saved next to the checkpoint so that a resumed run continues its schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    config: ModelTrainConfig,
    /// Updates in the saved AdamW moments (`optimizer.safetensors`); absent in checkpoints
    /// from before the moments were saved, whose runs restart them.
    #[serde(default)]
    optimizer_steps: Option<usize>,
    /// Position of the masking RNG's stream (decimal `u128`), so a resumed run draws the
    /// masks an uninterrupted one would.
    #[serde(default)]
    mask_rng_position: Option<String>,
    /// Training pairs the run draws from, so a resume on other caches is refused rather than
    /// silently drawing other batches; absent in older checkpoints.
    #[serde(default)]
    train_pairs: Option<usize>,
}

/// AdamW's moments, next to the weights in a checkpoint directory.
pub(crate) const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub(crate) const STATE_FILE: &str = "train_state.json";

/// Songs whose index is a multiple of this are held out for validation.
const VALIDATION_EVERY_NTH_SONG: usize = 10;

fn split(cache: &TokenCache) -> (Vec<usize>, Vec<usize>) {
    (0..cache.len()).partition(|&i| {
        !cache
            .song_index(i)
            .unwrap_or(0)
            .is_multiple_of(VALIDATION_EVERY_NTH_SONG)
    })
}

/// Per level, the share of targets equal to that level's most frequent code in `pairs`.
fn unigram_accuracy(cache: &TokenCache, train: &[usize], eval: &[usize]) -> Vec<f32> {
    let (levels, frames, size) = (
        cache.info.levels,
        cache.info.frames,
        cache.info.codebook_size,
    );
    (0..levels)
        .map(|q| {
            let mut counts = vec![0usize; size];
            for &i in train {
                let (_, tgt) = cache.pair_codes(i).expect("index in range");
                tgt[q * frames..(q + 1) * frames]
                    .iter()
                    .for_each(|&c| counts[c as usize] += 1);
            }
            let best = (0..size).max_by_key(|&c| counts[c]).unwrap_or(0) as u32;
            let (mut hit, mut total) = (0usize, 0usize);
            for &i in eval {
                let (_, tgt) = cache.pair_codes(i).expect("index in range");
                let row = &tgt[q * frames..(q + 1) * frames];
                hit += row.iter().filter(|&&c| c == best).count();
                total += row.len();
            }
            hit as f32 / total.max(1) as f32
        })
        .collect()
}

/// What the model is shown as context when it is scored: the pair's own, or a probe that
/// removes one kind of information, so the drop in accuracy says what the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextProbe {
    /// The pair's own context.
    Own,
    /// The same context played backwards: the same sounds, key and density, but no longer
    /// in time with the target.
    Reversed,
    /// The context of the next pair in the batch (another song).
    Other,
    /// The NULL context (as with context dropout).
    Dropped,
}

impl ContextProbe {
    pub const ALL: [ContextProbe; 4] = [Self::Own, Self::Reversed, Self::Other, Self::Dropped];

    /// The probe's context for a batch `[B, Q, N]` (`Dropped` keeps the tokens and sets the
    /// dropout flag instead).
    pub fn apply(self, context: &Tensor) -> Result<Tensor> {
        let (batch, _, frames) = context.dims3()?;
        Ok(match self {
            Self::Own | Self::Dropped => context.clone(),
            Self::Reversed => {
                let backwards: Vec<u32> = (0..frames as u32).rev().collect();
                let index = Tensor::new(backwards.as_slice(), context.device())?;
                context.index_select(&index, 2)?
            }
            Self::Other if batch < 2 => context.clone(),
            Self::Other => Tensor::cat(
                &[context.narrow(0, 1, batch - 1)?, context.narrow(0, 0, 1)?],
                0,
            )?,
        })
    }

    /// The same change applied to context features `[B, T, F]` (time is dimension 1).
    pub fn apply_features(self, features: &Tensor) -> Result<Tensor> {
        let (batch, frames, _) = features.dims3()?;
        Ok(match self {
            Self::Own | Self::Dropped => features.clone(),
            Self::Reversed => {
                let backwards: Vec<u32> = (0..frames as u32).rev().collect();
                let index = Tensor::new(backwards.as_slice(), features.device())?;
                features.index_select(&index, 1)?
            }
            Self::Other if batch < 2 => features.clone(),
            Self::Other => Tensor::cat(
                &[features.narrow(0, 1, batch - 1)?, features.narrow(0, 0, 1)?],
                0,
            )?,
        })
    }
}

/// Conditional accuracy and cross-entropy (nats per masked token) per level on `indices`,
/// category kept, context as `probe` says.
/// Every probe sees the same batches and masks. With `whole_level`, every frame of the scored
/// level is masked: the state in which the sampler starts each level, where nothing of the
/// level is known yet and only the context, the category and the coarser levels can help.
#[allow(clippy::too_many_arguments)]
fn validate(
    model: &crate::model::StemGenModel,
    cache: &TokenCache,
    indices: &[usize],
    batches: usize,
    batch_size: usize,
    probe: ContextProbe,
    whole_level: bool,
    device: &Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let config = model.config();
    let mut rng = StdRng::seed_from_u64(12345);
    let mut sampler = cache.sampler(777).with_indices(indices.to_vec());
    (0..config.levels)
        .map(|q| {
            let (mut hits, mut nll, mut total) = (0f64, 0f64, 0usize);
            for _ in 0..batches {
                let batch = sampler.next_batch(batch_size, device)?;
                let masks = (0..batch_size)
                    .map(|_| {
                        let mut m = draw_mask(config, cache.info.frames, &mut rng);
                        m.level = q;
                        if whole_level {
                            m.mask_ratio = 1.0;
                            m.masked.fill(true);
                        }
                        m.context_dropped = probe == ContextProbe::Dropped;
                        m.category_dropped = false;
                        m
                    })
                    .collect();
                let features = batch_features(
                    &batch,
                    &config.context_features,
                    cache.info.frames,
                    FeatureMix::MEASURED,
                    0,
                    device,
                )?;
                let features = match (probe, features) {
                    (ContextProbe::Own | ContextProbe::Dropped, f) => f,
                    // The features belong to the context: moved with it.
                    (_, Some(f)) => Some(probe.apply_features(&f)?),
                    (_, None) => None,
                };
                let out = weighted_objective_with_masks(
                    model,
                    &probe.apply(&batch.context)?,
                    &batch.target,
                    &batch.category,
                    features.as_ref(),
                    masks,
                    None,
                )?;
                hits += out.accuracy as f64 * out.masked_tokens as f64;
                nll += out.loss.to_scalar::<f32>()? as f64 * out.masked_tokens as f64;
                total += out.masked_tokens;
            }
            let n = total.max(1) as f64;
            Ok(((hits / n) as f32, (nll / n) as f32))
        })
        .collect::<Result<Vec<_>>>()
        .map(|scores| scores.into_iter().unzip())
}

/// A model's masked-token accuracy on a cache's held-out songs.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutAccuracy {
    /// Held-out pairs in the cache (every 10th song).
    pub pairs: usize,
    /// Batches of `batch_size` pairs scored per level.
    pub batches: usize,
    pub batch_size: usize,
    /// Conditional masked-token accuracy per level (context and category kept).
    pub accuracy: Vec<f32>,
    /// Always predicting each level's most frequent training code.
    pub unigram: Vec<f32>,
    /// Cross-entropy per level (nats per masked token): more sensitive than accuracy to what
    /// the model has learned when the most likely code rarely changes.
    pub loss: Vec<f32>,
    /// With `probes`: accuracy and cross-entropy per level with each context probe.
    pub probes: Vec<ProbeScores>,
    /// Every frame of the scored level was masked ([`HeldOutOptions::whole_level`]).
    pub whole_level: bool,
}

/// Held-out scores with one [`ContextProbe`].
#[derive(Debug, Clone, Serialize)]
pub struct ProbeScores {
    pub probe: ContextProbe,
    pub accuracy: Vec<f32>,
    pub loss: Vec<f32>,
}

/// How [`held_out_accuracy`] scores.
#[derive(Debug, Clone, Copy)]
pub struct HeldOutOptions {
    /// Batches per level.
    pub batches: usize,
    pub batch_size: usize,
    /// Score the same batches again with each [`ContextProbe`].
    pub context_probes: bool,
    /// Mask every frame of the scored level instead of a cosine share, as the sampler's
    /// first iteration of each level sees it.
    pub whole_level: bool,
}

/// Scores `model` on the held-out songs of `cache` exactly as training validates (the same
/// split, masks and seeds), with `batches` batches per level: more batches than training's
/// periodic check give figures steady enough to compare models. With `probes`, the same
/// batches are scored again with the context reversed in time, taken from another song and
/// dropped: how much the model listens to its context, and to its timing.
pub fn held_out_accuracy(
    model: &crate::model::StemGenModel,
    cache: &TokenCache,
    options: HeldOutOptions,
    device: &Device,
) -> Result<HeldOutAccuracy> {
    let HeldOutOptions {
        batches,
        batch_size,
        context_probes,
        whole_level,
    } = options;
    let config = model.config();
    anyhow::ensure!(
        cache.info.levels == config.levels && cache.info.codebook_size == config.codebook_size,
        "the token cache has {} levels x {} codes but the model expects {} x {}",
        cache.info.levels,
        cache.info.codebook_size,
        config.levels,
        config.codebook_size
    );
    anyhow::ensure!(
        batches > 0 && batch_size > 0,
        "batches and batch size must be > 0"
    );
    let (train_idx, val_idx) = split(cache);
    anyhow::ensure!(
        !val_idx.is_empty() && !train_idx.is_empty(),
        "the token cache needs both training and held-out songs (every {VALIDATION_EVERY_NTH_SONG}th song is held out)"
    );
    let score = |probe| {
        validate(
            model,
            cache,
            &val_idx,
            batches,
            batch_size,
            probe,
            whole_level,
            device,
        )
    };
    let (accuracy, loss) = score(ContextProbe::Own)?;
    Ok(HeldOutAccuracy {
        pairs: val_idx.len(),
        batches,
        batch_size,
        accuracy,
        loss,
        unigram: unigram_accuracy(cache, &train_idx, &val_idx),
        whole_level,
        probes: if context_probes {
            ContextProbe::ALL[1..]
                .iter()
                .map(|&probe| {
                    let (accuracy, loss) = score(probe)?;
                    Ok(ProbeScores {
                        probe,
                        accuracy,
                        loss,
                    })
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        },
    })
}

/// Trains (or resumes, when `out_dir/checkpoint` exists) a model on `cache`.
///
/// Writes `out_dir/checkpoint/` (a model directory + `train_state.json`) every
/// `checkpoint_every` steps and at the end, and appends to `out_dir/log.csv`. The checkpoint
/// holds the optimiser's moments and the RNG positions too, so a resumed run trains exactly
/// as an uninterrupted one would (see [`save_checkpoint`] for how a save stays atomic).
pub fn train_model(
    cache: &TokenCache,
    model_config: &ModelConfig,
    config: &ModelTrainConfig,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize, f32, f32),
) -> Result<TrainReport> {
    anyhow::ensure!(
        cache.info.levels == model_config.levels
            && cache.info.codebook_size == model_config.codebook_size,
        "the token cache has {} levels x {} codes but the model expects {} x {}",
        cache.info.levels,
        cache.info.codebook_size,
        model_config.levels,
        model_config.codebook_size
    );
    anyhow::ensure!(
        cache.info.frames <= model_config.max_frames,
        "cache pairs have {} frames, more than the model's max_frames {}",
        cache.info.frames,
        model_config.max_frames
    );
    anyhow::ensure!(
        config.batch_size > 0 && config.steps > 0,
        "steps and batch size must be > 0"
    );
    anyhow::ensure!(
        config.context_onset_weight == 1.0 || model_config.gain_steps > 0,
        "a context onset weight needs a model with gain_steps (onsets are read from the gain)"
    );
    anyhow::ensure!(
        config.context_onset_weight.is_finite() && config.context_onset_weight > 0.0,
        "the context onset weight must be a positive number"
    );
    anyhow::ensure!(
        model_config.context_features.is_empty() || cache.has_features(),
        "the model has context features but the token cache has none stored; rebuild the \
         cache with this version of `stemgen data cache`"
    );
    for (name, share) in [
        ("chord template share", config.chord_template_share),
        ("feature drop share", config.feature_drop_share),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&share),
            "the {name} {share} must be in [0, 1]"
        );
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create the output folder", out_dir.display()))?;
    let ckpt_dir = out_dir.join("checkpoint");
    recover_interrupted_save(&ckpt_dir)?;
    let state_path = ckpt_dir.join(STATE_FILE);
    let mut resumed: Option<TrainState> = None;
    let (checkpoint, start) = if state_path.is_file() {
        let state: TrainState = serde_json::from_str(&std::fs::read_to_string(&state_path)?)
            .with_context(|| format!("{}: unreadable training state", state_path.display()))?;
        let start = state.step;
        resumed = Some(state);
        (ModelCheckpoint::load(&ckpt_dir, device)?, start)
    } else if let Some(init) = &config.init_from {
        let checkpoint = ModelCheckpoint::load_extended(init, model_config, device)
            .with_context(|| format!("{}: cannot start from this model", init.display()))?;
        (checkpoint, 0)
    } else {
        (
            ModelCheckpoint::random(model_config, device, config.seed)?,
            0,
        )
    };
    let vars = checkpoint.vars.all_vars();
    let named_vars = checkpoint.named_vars()?;
    let mut opt = AdamW::new(&named_vars, config.schedule.at(start), config.weight_decay)?;
    if config.features_lr_scale != 1.0 {
        anyhow::ensure!(
            !model_config.context_features.is_empty(),
            "a features learning-rate scale needs a model with context features"
        );
        opt.scale_learning_rate(
            crate::model::CONTEXT_FEATURES_PROJ,
            config.features_lr_scale,
        )?;
    }
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    if let Some(state) = &resumed {
        match state.optimizer_steps {
            Some(steps) => opt.load(&ckpt_dir.join(OPTIMIZER_FILE), steps)?,
            None => eprintln!(
                "{}: no optimizer state (an older checkpoint): AdamW's moments restart",
                ckpt_dir.display()
            ),
        }
        match &state.mask_rng_position {
            Some(pos) => rng.set_word_pos(
                pos.parse()
                    .with_context(|| format!("{}: bad mask_rng_position", state_path.display()))?,
            ),
            // Older checkpoints seeded the masks of a resumed run by its first step.
            None => rng = ChaCha12Rng::seed_from_u64(config.seed.wrapping_add(start as u64 * 7919)),
        }
    }
    let (train_idx, val_idx) = split(cache);
    anyhow::ensure!(
        !train_idx.is_empty(),
        "the token cache has no training pairs"
    );
    if let Some(saved) = resumed.as_ref().and_then(|s| s.train_pairs) {
        anyhow::ensure!(
            saved == train_idx.len(),
            "{}: this run was trained on {saved} training pairs, but the given caches hold {}; \
             resume with the same --cache folders (or train into a new folder with --init-from)",
            ckpt_dir.display(),
            train_idx.len()
        );
    }
    let unigram = unigram_accuracy(
        cache,
        &train_idx,
        if val_idx.is_empty() {
            &train_idx
        } else {
            &val_idx
        },
    );
    let log_path = out_dir.join("log.csv");
    let new_log = !log_path.exists();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}: cannot open the log", log_path.display()))?;
    if new_log {
        writeln!(
            log,
            "step,lr,loss,accuracy,grad_norm,tokens_per_s,validation_accuracy"
        )?;
    }
    // The batch order continues where it stopped: replaying the shuffles of the steps
    // already done (indices only, no data) puts the sampler where it was.
    let train_idx_len = train_idx.len();
    let mut sampler = cache.sampler(config.seed).with_indices(train_idx);
    for _ in 0..start {
        sampler.next_indices(config.batch_size)?;
    }
    let save = |step: usize, opt: &AdamW, rng: &ChaCha12Rng| -> Result<()> {
        let state = TrainState {
            step,
            config: config.clone(),
            optimizer_steps: Some(opt.steps()),
            mask_rng_position: Some(rng.get_word_pos().to_string()),
            train_pairs: Some(train_idx_len),
        };
        save_checkpoint(&ckpt_dir, |dir| {
            checkpoint.save(dir)?;
            opt.save(&dir.join(OPTIMIZER_FILE))?;
            std::fs::write(dir.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
            Ok(())
        })
    };
    let tokens_per_batch = config.batch_size * cache.info.frames * cache.info.levels;
    let (mut last_loss, mut val_acc, mut tps) = (f32::NAN, Vec::new(), 0.0);
    let mut step_seconds = 0.0;
    let end = config.steps.min(config.stop_after.unwrap_or(usize::MAX));
    for step in start..end {
        let t0 = Instant::now();
        let lr = config.schedule.at(step);
        opt.set_learning_rate(lr);
        let batch = sampler.next_batch(config.batch_size, device)?;
        let onset_weights = match checkpoint.model.config().shapes_per_gain() {
            Some(shapes) if config.context_onset_weight != 1.0 => Some(context_onset_weights(
                &batch.context,
                shapes,
                config.context_onset_weight as f32,
            )?),
            _ => None,
        };
        // Drawn exactly as `training_objective` draws them; the first-step share draws once
        // more per example only when it is set, so runs without it keep their batches and masks.
        let masks = (0..config.batch_size)
            .map(|_| {
                let mut m = draw_mask(checkpoint.model.config(), cache.info.frames, &mut rng);
                if config.whole_level0_share > 0.0 && rng.gen::<f64>() < config.whole_level0_share {
                    m.level = 0;
                    m.mask_ratio = 1.0;
                    m.masked.fill(true);
                }
                m
            })
            .collect();
        let mix = FeatureMix {
            chord_template_share: config.chord_template_share,
            feature_drop_share: config.feature_drop_share,
        };
        let step_seed = config.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let features = batch_features(
            &batch,
            &model_config.context_features,
            cache.info.frames,
            mix,
            step_seed,
            device,
        )?;
        let out = weighted_objective_with_masks(
            &checkpoint.model,
            &batch.context,
            &batch.target,
            &batch.category,
            features.as_ref(),
            masks,
            onset_weights.as_deref(),
        )?;
        let mut grads = out.loss.backward()?;
        let norm = clip_grad_norm(&mut grads, &vars, config.clip_norm)?;
        opt.step(&grads)?;
        last_loss = out.loss.to_scalar::<f32>()?;
        anyhow::ensure!(
            last_loss.is_finite(),
            "training diverged at step {step} (loss {last_loss})"
        );
        let seconds = t0.elapsed().as_secs_f64();
        step_seconds += seconds;
        tps = tokens_per_batch as f64 / seconds;
        let done = step + 1;
        let mut val_field = String::new();
        let validate_now = done.is_multiple_of(config.validate_every) || done == end;
        if validate_now && !val_idx.is_empty() {
            {
                val_acc = validate(
                    &checkpoint.model,
                    cache,
                    &val_idx,
                    config.validation_batches,
                    config.batch_size,
                    ContextProbe::Own,
                    false,
                    device,
                )?
                .0;
                val_field = val_acc
                    .iter()
                    .map(|a| format!("{a:.4}"))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
        writeln!(
            log,
            "{done},{lr:.3e},{last_loss:.4},{:.4},{norm:.3},{tps:.0},{val_field}",
            out.accuracy
        )?;
        if done.is_multiple_of(config.checkpoint_every) || done == end {
            save(done, &opt, &rng)?;
        }
        progress(done, config.steps, last_loss, out.accuracy);
    }
    let steps_timed = end.saturating_sub(start) as f64;
    let timed_rate = |per_step: f64| {
        if step_seconds > 0.0 {
            per_step * steps_timed / step_seconds
        } else {
            0.0
        }
    };
    Ok(TrainReport {
        step: end.max(start),
        last_loss,
        validation_accuracy: val_acc,
        unigram_accuracy: unigram,
        tokens_per_second: tps,
        mean_tokens_per_second: timed_rate(tokens_per_batch as f64),
        training_gflops: timed_rate(
            3.0 * crate::bench::model_flops(
                checkpoint.model.config(),
                config.batch_size,
                cache.info.frames,
            ) / 1e9,
        ),
    })
}

/// Writes a checkpoint as a whole: into `DIR.next`, which then replaces `DIR` by two
/// renames. Weights, moments and state therefore always belong to the same step; an
/// interruption at any point leaves one complete checkpoint (see
/// [`recover_interrupted_save`]).
fn save_checkpoint(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (next, prev) = (sibling(dir, "next"), sibling(dir, "prev"));
    if next.exists() {
        std::fs::remove_dir_all(&next)?;
    }
    std::fs::create_dir_all(&next).with_context(|| format!("{}: cannot create", next.display()))?;
    write(&next).with_context(|| format!("{}: cannot write the checkpoint", next.display()))?;
    if dir.exists() {
        carry_over(dir, &next)?;
        if prev.exists() {
            std::fs::remove_dir_all(&prev)?;
        }
        std::fs::rename(dir, &prev)?;
    }
    std::fs::rename(&next, dir)?;
    if prev.exists() {
        std::fs::remove_dir_all(&prev)?;
    }
    Ok(())
}

/// Links (or copies) into `to` every entry of `from` that `to` lacks: what was put beside
/// the weights, such as the attached tokenizer that makes a checkpoint a model directory,
/// stays with every later save.
fn carry_over(from: &Path, to: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("{}: cannot read", from.display()))?
    {
        let path = entry?.path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if target.exists() {
            continue;
        }
        if path.is_dir() {
            std::fs::create_dir_all(&target)?;
            carry_over(&path, &target)?;
        } else if std::fs::hard_link(&path, &target).is_err() {
            std::fs::copy(&path, &target)
                .with_context(|| format!("{}: cannot copy", path.display()))?;
        }
    }
    Ok(())
}

/// Finishes or undoes a [`save_checkpoint`] that was interrupted: a complete `DIR.next`
/// (its state file is written last) becomes `DIR` if `DIR` is gone, else `DIR.prev` comes back.
fn recover_interrupted_save(dir: &Path) -> Result<()> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(());
    }
    let (next, prev) = (sibling(dir, "next"), sibling(dir, "prev"));
    for candidate in [next, prev] {
        if candidate.join(STATE_FILE).is_file() {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            std::fs::rename(&candidate, dir).with_context(|| {
                format!("{}: cannot restore the checkpoint", candidate.display())
            })?;
            eprintln!("{}: restored from an interrupted save", dir.display());
            return Ok(());
        }
    }
    Ok(())
}

/// `DIR.suffix` next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    name.into()
}
