//! The training objective (ARCHITECTURE §3.3): SoundStorm-style masking of one RVQ level, with
//! independent context / category dropout for classifier-free guidance.
//!
//! The masking draw ([`draw_mask`]) is separate from the loss so that it can be tested and
//! reproduced on its own; [`training_objective`] = draw + [`objective_with_masks`].

use std::f64::consts::FRAC_PI_2;

use candle_core::{bail, Result, Tensor, D};
use rand::Rng;

use super::kernels::cross_entropy;
use super::{ModelConfig, StemGenModel};

/// What the masking draw decided for one training example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleMask {
    /// The level q whose masked frames are predicted and scored. Levels below it are given,
    /// levels above it are fully masked.
    pub level: usize,
    /// p = cos(u), u ~ U[0, pi/2): the probability that a frame of `level` is masked.
    pub mask_ratio: f64,
    /// One flag per frame of `level`: true = masked (predicted). At least one is set.
    pub masked: Vec<bool>,
    /// The context is replaced by the NULL context.
    pub context_dropped: bool,
    /// The category is replaced by the NULL category.
    pub category_dropped: bool,
}

/// Draws one example's mask: level q uniform, u ~ U[0, pi/2), each frame of level q masked
/// with probability cos(u) (one random frame if none was), then context dropout (p_ctx)
/// and category dropout (p_cat), independently.
pub fn draw_mask(config: &ModelConfig, frames: usize, rng: &mut impl Rng) -> ExampleMask {
    let level = rng.gen_range(0..config.levels.max(1));
    let mask_ratio = rng.gen_range(0.0..FRAC_PI_2).cos();
    let mut masked: Vec<bool> = (0..frames).map(|_| rng.gen::<f64>() < mask_ratio).collect();
    if frames > 0 && !masked.contains(&true) {
        masked[rng.gen_range(0..frames)] = true;
    }
    ExampleMask {
        level,
        mask_ratio,
        masked,
        context_dropped: rng.gen::<f64>() < config.p_ctx,
        category_dropped: rng.gen::<f64>() < config.p_cat,
    }
}

impl ExampleMask {
    /// The target tokens the model sees, `[Q][N]` row-major like `target`: levels below
    /// `level` unchanged, the masked frames of `level` and every frame above it set to
    /// `mask_id`.
    pub fn mask_target(&self, target: &[u32], levels: usize, mask_id: u32) -> Vec<u32> {
        let frames = self.masked.len();
        let mut seen = target.to_vec();
        for q in self.level..levels {
            for n in 0..frames {
                if q > self.level || self.masked[n] {
                    seen[q * frames + n] = mask_id;
                }
            }
        }
        seen
    }

    pub fn masked_count(&self) -> usize {
        self.masked.iter().filter(|&&m| m).count()
    }
}

/// Model inputs after masking and dropout.
#[derive(Debug, Clone)]
pub struct MaskedInputs {
    /// The context tokens, unchanged (the context is never masked; dropout is a flag).
    pub context: Tensor,
    /// Target tokens with MASK ids per [`ExampleMask::mask_target`].
    pub target: Tensor,
    /// Categories, with the NULL category where dropped.
    pub category: Tensor,
    pub context_dropped: Vec<bool>,
}

/// Applies `masks` to a batch: `target` `[B, Q, N]` u32 codes, `category` `[B]` u32.
pub fn masked_inputs(
    config: &ModelConfig,
    context: &Tensor,
    target: &Tensor,
    category: &Tensor,
    masks: &[ExampleMask],
) -> Result<MaskedInputs> {
    let (batch, levels, frames) = check_masks(config, target, masks)?;
    let codes = target.flatten_all()?.to_vec1::<u32>()?;
    let per_example = levels * frames;
    let seen: Vec<u32> = masks
        .iter()
        .enumerate()
        .flat_map(|(b, mask)| {
            let example = &codes[b * per_example..(b + 1) * per_example];
            mask.mask_target(example, levels, config.mask_id())
        })
        .collect();
    let categories = category.to_vec1::<u32>()?;
    if categories.len() != batch {
        bail!(
            "{} categories for a batch of {batch} examples",
            categories.len()
        );
    }
    let categories: Vec<u32> = categories
        .iter()
        .zip(masks)
        .map(|(&c, mask)| {
            if mask.category_dropped {
                config.null_category()
            } else {
                c
            }
        })
        .collect();
    let device = target.device();
    Ok(MaskedInputs {
        context: context.clone(),
        target: Tensor::from_vec(seen, (batch, levels, frames), device)?,
        category: Tensor::from_vec(categories, batch, device)?,
        context_dropped: masks.iter().map(|m| m.context_dropped).collect(),
    })
}

/// The result of one evaluation of the objective.
#[derive(Debug)]
pub struct ObjectiveOutput {
    /// Mean cross-entropy over every masked position of the chosen levels in the batch
    /// (a scalar to call `backward` on).
    pub loss: Tensor,
    /// Share of masked positions whose most likely code is the true one.
    pub accuracy: f32,
    /// Number of positions the loss averages over.
    pub masked_tokens: usize,
    pub masks: Vec<ExampleMask>,
}

/// One evaluation of the training objective on a batch: draws a mask per example from
/// `rng` (see [`draw_mask`]) and scores the model on it.
///
/// `context`, `target`: `[B, Q, N]` u32 codes (`< codebook_size`); `category`: `[B]` u32.
pub fn training_objective(
    model: &StemGenModel,
    context: &Tensor,
    target: &Tensor,
    category: &Tensor,
    rng: &mut impl Rng,
) -> Result<ObjectiveOutput> {
    let (batch, _, frames) = target.dims3()?;
    let masks = (0..batch)
        .map(|_| draw_mask(model.config(), frames, rng))
        .collect();
    objective_with_masks(model, context, target, category, masks)
}

/// The objective for given masks. Only the masked frames of each example's level are
/// scored, and only their hidden states go through an output head (grouped by level), so
/// the heads cost O(masked tokens) rather than O(Q * N) per example.
pub fn objective_with_masks(
    model: &StemGenModel,
    context: &Tensor,
    target: &Tensor,
    category: &Tensor,
    masks: Vec<ExampleMask>,
) -> Result<ObjectiveOutput> {
    weighted_objective_with_masks(model, context, target, category, None, masks, None)
}

/// [`objective_with_masks`] with a weight per frame (`[B * N]`, example-major): the loss is
/// the weighted mean over the masked positions. Weights that depend only on the inputs (not
/// on the labels) change which frames the gradient comes from, not what the model should
/// predict at each frame. `features` `[B, N, F]` are the context features of a model that
/// has them (see [`StemGenModel::forward`]).
pub fn weighted_objective_with_masks(
    model: &StemGenModel,
    context: &Tensor,
    target: &Tensor,
    category: &Tensor,
    features: Option<&Tensor>,
    masks: Vec<ExampleMask>,
    frame_weights: Option<&[f32]>,
) -> Result<ObjectiveOutput> {
    let config = model.config();
    let inputs = masked_inputs(config, context, target, category, &masks)?;
    let (batch, levels, frames) = target.dims3()?;
    let hidden = model
        .hidden(
            &inputs.context,
            &inputs.target,
            &inputs.category,
            &inputs.context_dropped,
            features,
        )?
        .reshape((batch * frames, config.d_model))?;

    let codes = target.flatten_all()?.to_vec1::<u32>()?;
    if let Some(w) = frame_weights {
        if w.len() != batch * frames || w.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            bail!("frame weights must be {} positive numbers", batch * frames);
        }
    }
    let mut logits = Vec::new();
    let mut labels = Vec::new();
    let mut weights = Vec::new();
    for level in 0..levels {
        let mut rows = Vec::new();
        for (b, mask) in masks.iter().enumerate().filter(|(_, m)| m.level == level) {
            for n in (0..frames).filter(|&n| mask.masked[n]) {
                rows.push((b * frames + n) as u32);
                labels.push(codes[(b * levels + level) * frames + n]);
                weights.push(frame_weights.map_or(1.0, |w| w[b * frames + n]));
            }
        }
        if !rows.is_empty() {
            let rows = Tensor::new(rows.as_slice(), hidden.device())?;
            logits.push(model.level_logits(&hidden.index_select(&rows, 0)?, level)?);
        }
    }
    let logits = Tensor::cat(&logits, 0)?;
    let (loss, accuracy) = match frame_weights {
        None => cross_entropy_and_accuracy(&logits, &labels)?,
        Some(_) => weighted_cross_entropy_and_accuracy(&logits, &labels, &weights)?,
    };
    Ok(ObjectiveOutput {
        loss,
        accuracy,
        masked_tokens: labels.len(),
        masks,
    })
}

/// The objective's loss and accuracy computed from full logits `[B, Q, N, codebook_size]`
/// (e.g. [`StemGenModel::forward`] on the masked inputs) and the ground-truth `target`
/// `[B, Q, N]`: the definition the fast path in [`objective_with_masks`] must match, and
/// usable for validation passes.
pub fn masked_loss(
    logits: &Tensor,
    target: &Tensor,
    masks: &[ExampleMask],
) -> Result<(Tensor, f32)> {
    let (batch, levels, frames, vocab) = logits.dims4()?;
    if target.dims() != [batch, levels, frames] {
        bail!(
            "targets {:?} do not match logits {:?}",
            target.dims(),
            logits.dims()
        );
    }
    if masks.len() != batch
        || masks
            .iter()
            .any(|m| m.level >= levels || m.masked.len() != frames)
    {
        bail!("masks do not describe a batch of {batch} x {levels} levels x {frames} frames");
    }
    let codes = target.flatten_all()?.to_vec1::<u32>()?;
    let mut rows = Vec::new();
    for (b, mask) in masks.iter().enumerate() {
        for n in (0..frames).filter(|&n| mask.masked[n]) {
            rows.push(((b * levels + mask.level) * frames + n) as u32);
        }
    }
    let labels: Vec<u32> = rows.iter().map(|&row| codes[row as usize]).collect();
    let rows = Tensor::new(rows.as_slice(), logits.device())?;
    let selected = logits
        .reshape((batch * levels * frames, vocab))?
        .index_select(&rows, 0)?;
    cross_entropy_and_accuracy(&selected, &labels)
}

/// Mean cross-entropy of `logits` `[M, V]` against `labels` (M codes), and the share of rows
/// whose argmax is the label.
fn cross_entropy_and_accuracy(logits: &Tensor, labels: &[u32]) -> Result<(Tensor, f32)> {
    weighted_cross_entropy_and_accuracy(logits, labels, &vec![1.0; labels.len()])
}

/// The share of rows of `logits` `[M, V]` whose argmax is the label, after checking that there
/// is one label per row and every label is a code.
fn checked_accuracy(logits: &Tensor, labels: &[u32]) -> Result<f32> {
    let (count, vocab) = logits.dims2()?;
    if count == 0 || count != labels.len() {
        bail!("no masked positions to score");
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= vocab) {
        bail!("target code {bad} is out of range (codes are 0..{vocab})");
    }
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(correct as f32 / count as f32)
}

/// [`cross_entropy_and_accuracy`] with a weighted mean: sum(w * nll) / sum(w).
fn weighted_cross_entropy_and_accuracy(
    logits: &Tensor,
    labels: &[u32],
    weights: &[f32],
) -> Result<(Tensor, f32)> {
    let accuracy = checked_accuracy(logits, labels)?;
    let loss = cross_entropy::weighted_cross_entropy(logits, labels, weights)?;
    Ok((loss, accuracy))
}

/// Checks that `masks` fit `target` `[B, Q, N]` and that the targets are plain codes.
fn check_masks(
    config: &ModelConfig,
    target: &Tensor,
    masks: &[ExampleMask],
) -> Result<(usize, usize, usize)> {
    let (batch, levels, frames) = target.dims3()?;
    if masks.len() != batch {
        bail!("{} masks for a batch of {batch} examples", masks.len());
    }
    if let Some(mask) = masks
        .iter()
        .find(|m| m.level >= levels || m.masked.len() != frames)
    {
        bail!(
            "mask for level {} over {} frames does not fit {levels} levels x {frames} frames",
            mask.level,
            mask.masked.len()
        );
    }
    if masks.iter().all(|m| m.masked_count() == 0) {
        bail!("no masked positions to score");
    }
    let max_code = target.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max_code >= config.mask_id() {
        bail!(
            "target code {max_code} is out of range: training targets must be codes 0..{}",
            config.codebook_size
        );
    }
    Ok((batch, levels, frames))
}
