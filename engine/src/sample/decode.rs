//! Level-by-level iterative decoding with causal-bias ranking and guidance (ARCHITECTURE §3.4-3.5),
//! editing of a frame region and overlapping windows for long stems (§3.7).

use std::cmp::Ordering as CmpOrdering;
use std::f64::consts::FRAC_PI_2;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::attacks::AttackRule;
use super::guidance::{combine, keep_plausible, log_softmax, GuidanceWeights};
use super::harmony_prior::{PriorTarget, WindowPrior, PITCH_CLASSES};
use super::{SampleError, SamplerSettings};
use crate::analysis::context_features::FeatureFrames;
use crate::codec::{CodeProfiles, Tokens};
use crate::model::{kernels::fast_exp, ContextChannel, ModelConfig, StemGenModel};

/// Regenerate only `region` (frames `start..end`) of `previous`; every token outside the
/// region is returned exactly as it is in `previous`.
#[derive(Debug, Clone)]
pub struct Edit<'a> {
    /// The existing take, `[Q x N]` like the context.
    pub previous: &'a Tokens,
    pub region: Range<usize>,
}

/// What to sample. The output has the context's shape `[Q x N]`.
#[derive(Debug, Clone)]
pub struct SampleRequest<'a> {
    /// Context tokens `[Q x N]`, N >= 1 frames; N is also the output length.
    pub context: &'a Tokens,
    /// Instrument category id, `0..n_categories`.
    pub category: u32,
    /// Regenerate a region of a previous take instead of the whole stem.
    pub edit: Option<Edit<'a>>,
    /// Frames per model window; `None` = the model's `max_frames`. When N is longer, the
    /// stem is generated in overlapping windows.
    pub window: Option<usize>,
    /// Frames each window shares with the previous one (must be below the window length
    /// when N exceeds it). The overlap is kept fixed in the new window exactly like the
    /// kept part of an edit, so the new window continues the previous one. The last window
    /// is aligned to end at N, so its overlap may be longer.
    pub overlap: usize,
    /// Context features `[N x F]` for a model with [`ModelConfig::context_features`] (the
    /// same features in the same order); `None` gives such a model zeros, as when dropped.
    pub features: Option<&'a FeatureFrames>,
    /// What each code does to the stem's sound (the tokenizer's), for the harmony prior
    /// ([`SamplerSettings::harmony_prior`]); `None` = no prior.
    pub code_profiles: Option<&'a CodeProfiles>,
    /// For a bass stem, the chords it follows as features (their templates and bass notes:
    /// the producer's, or those heard in the context); the prior then also acts on level 0,
    /// pulls toward these chords and their bass notes, and is stronger (see
    /// [`PriorTarget`]). `None` for other stems: the prior pulls toward `features`.
    pub bass_chords: Option<&'a FeatureFrames>,
    /// The instrument's notes sound past their attack (not drums, percussion or effects):
    /// with [`SamplerSettings::hold_notes`], level-0 attacks are drawn with their notes
    /// ([`super::attacks`]).
    pub sustained_notes: bool,
}

impl<'a> SampleRequest<'a> {
    /// A full generation of one model window per `max_frames`, no overlap, no edit.
    pub fn new(context: &'a Tokens, category: u32) -> Self {
        SampleRequest {
            context,
            category,
            edit: None,
            window: None,
            overlap: 0,
            features: None,
            code_profiles: None,
            bass_chords: None,
            sustained_notes: false,
        }
    }
}

/// Reported after every model iteration.
#[derive(Debug, Clone)]
pub struct StepReport<'a> {
    /// Index of the current window and the number of windows that have anything to do.
    pub window: usize,
    pub windows: usize,
    /// The current window's frames (global frame indices).
    pub window_frames: Range<usize>,
    /// Level being decoded (0 = coarsest).
    pub level: usize,
    /// Iterations done in this level (1-based) and the number this level runs
    /// (`min(steps[level], masked frames)`).
    pub step: usize,
    pub steps: usize,
    /// Iterations done and total over the whole request, for an overall progress bar.
    pub done: usize,
    pub total: usize,
    /// Frames (global indices) unmasked by this iteration, best-ranked first.
    pub unmasked: &'a [usize],
    /// After a level's last iteration: the window's codes `[Q][W]`, levels up to `level`
    /// decided, finer levels still MASK (what a coarse preview decodes).
    pub level_codes: Option<&'a [u32]>,
    /// At level 0's other iterations: the window's codes with the frames still masked
    /// filled by this iteration's candidates, a complete if rough level 0 long before the
    /// level is done (what an early preview decodes). Nothing of it is kept.
    pub draft_codes: Option<&'a [u32]>,
}

/// One model window and, per level, how many of its frames are generated.
struct WindowPlan {
    frames: Range<usize>,
    /// Per frame of the window: generated (true) or kept fixed (false).
    generate: Vec<bool>,
    /// Iterations per level: `steps[q]`, in a stem of several windows scaled by the share
    /// of the window's frames it generates (see [`plan_windows`]), at most the frames to
    /// generate.
    level_steps: Vec<usize>,
}

/// Samples target tokens for `request`: level by level, coarse to fine; in each level,
/// iteratively sample every masked frame from the guided distribution and unmask the
/// best-ranked ones on a cosine schedule (see the module docs of [`crate::sample`]).
///
/// `progress` is called after every iteration; `cancel` is checked before every iteration
/// and stops with [`SampleError::Cancelled`]. The same inputs, settings and seed give the
/// same tokens. The model is run with its fused inference kernels
/// ([`StemGenModel::for_inference`]).
pub fn sample(
    model: &StemGenModel,
    request: &SampleRequest,
    settings: &SamplerSettings,
    progress: &mut dyn FnMut(&StepReport),
    cancel: Option<&AtomicBool>,
) -> Result<Tokens, SampleError> {
    let config = model.config();
    let (levels, frames) = check_request(config, request, settings)?;
    let window_len = request.window.unwrap_or(config.max_frames).min(frames);

    // The output grid: kept tokens (an edit's outside) in place, MASK elsewhere.
    let mask_id = config.mask_id();
    let mut grid = vec![mask_id; levels * frames];
    let mut fixed = vec![false; frames];
    if let Some(edit) = &request.edit {
        grid.copy_from_slice(&edit.previous.codes);
        for (n, keep) in fixed.iter_mut().enumerate() {
            *keep = !edit.region.contains(&n);
        }
        for q in 0..levels {
            for n in edit.region.clone() {
                grid[q * frames + n] = mask_id;
            }
        }
    }

    let plans = plan_windows(frames, window_len, request.overlap, &fixed, &settings.steps);
    let total: usize = plans.iter().flat_map(|p| p.level_steps.iter()).sum();
    let model = if model.is_inference() {
        model.clone()
    } else {
        model.for_inference()
    };
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let mut done = 0;
    let guided_rows = guidance_rows(config, request.category, settings);
    let conditional_rows = conditional_row(request.category);
    let attack_rule = match config.shapes_per_gain() {
        Some(shapes) if settings.hold_notes && request.sustained_notes => {
            Some(AttackRule::new(shapes, mask_id))
        }
        _ => None,
    };

    for (index, plan) in plans.iter().enumerate() {
        let mut window = Window {
            model: &model,
            plan,
            guided_rows: &guided_rows,
            conditional_rows: &conditional_rows,
            settings,
            levels,
            context: window_codes(&request.context.codes, frames, levels, &plan.frames),
            target: window_codes(&grid, frames, levels, &plan.frames),
            features: request.features.map(|f| f.slice(plan.frames.clone())),
            prior: None,
            attack_rule,
        };
        if let (Some(profiles), true) = (request.code_profiles, settings.harmony_prior > 0.0) {
            window.prior = match request.bass_chords {
                Some(chords) => {
                    let chords = chords.slice(plan.frames.clone());
                    WindowPrior::new(profiles, &chords, PriorTarget::bass_following_chords())
                }
                None => window
                    .features
                    .as_ref()
                    .and_then(|f| WindowPrior::new(profiles, f, PriorTarget::chroma())),
            };
        }
        let mut report = |level: usize,
                          step: usize,
                          steps: usize,
                          unmasked: &[usize],
                          level_codes: Option<&[u32]>,
                          draft_codes: Option<&[u32]>| {
            done += 1;
            progress(&StepReport {
                window: index,
                windows: plans.len(),
                window_frames: plan.frames.clone(),
                level,
                step,
                steps,
                done,
                total,
                unmasked,
                level_codes,
                draft_codes,
            });
        };
        window.decode(&mut rng, &mut report, cancel)?;
        let len = plan.frames.len();
        for q in 0..levels {
            let row = &window.target[q * len..(q + 1) * len];
            grid[q * frames + plan.frames.start..q * frames + plan.frames.end].copy_from_slice(row);
        }
    }
    if let Some(i) = grid.iter().position(|&t| t == mask_id) {
        return Err(SampleError::InvalidInput(format!(
            "internal error: frame {} of level {} was left masked",
            i % frames,
            i / frames
        )));
    }
    Ok(Tokens {
        levels,
        frames,
        codes: grid,
    })
}

/// Checks everything that could otherwise panic or silently misbehave; returns (Q, N).
fn check_request(
    config: &ModelConfig,
    request: &SampleRequest,
    settings: &SamplerSettings,
) -> Result<(usize, usize), SampleError> {
    fn bad<T>(msg: String) -> Result<T, SampleError> {
        Err(SampleError::InvalidInput(msg))
    }
    settings.validate(config.levels)?;
    let check_grid = |name: &str, tokens: &Tokens| -> Result<(), SampleError> {
        if tokens.levels != config.levels {
            return bad(format!(
                "{name} tokens have {} levels, the model expects {}",
                tokens.levels, config.levels
            ));
        }
        if tokens.codes.len() != tokens.levels * tokens.frames {
            return bad(format!(
                "{name} token grid is {} x {} but holds {} codes",
                tokens.levels,
                tokens.frames,
                tokens.codes.len()
            ));
        }
        if let Some(&id) = tokens
            .codes
            .iter()
            .find(|&&id| id as usize >= config.codebook_size)
        {
            return bad(format!(
                "{name} token id {id} is out of range (codes are 0..{})",
                config.codebook_size
            ));
        }
        Ok(())
    };
    let context = request.context;
    check_grid("context", context)?;
    let frames = context.frames;
    if frames == 0 {
        return bad("the context has 0 frames; at least one frame is needed".into());
    }
    if request.category as usize >= config.n_categories {
        return bad(format!(
            "unknown category id {} (the model has categories 0..{})",
            request.category, config.n_categories
        ));
    }
    let window = request.window.unwrap_or(config.max_frames);
    if window == 0 || window > config.max_frames {
        return bad(format!(
            "window of {window} frames must be between 1 and the model's maximum of {} frames",
            config.max_frames
        ));
    }
    if frames > window && request.overlap >= window {
        return bad(format!(
            "overlap of {} frames must be shorter than the window of {window} frames",
            request.overlap
        ));
    }
    if let Some(features) = request.features {
        let wanted = &config.context_features;
        if wanted.is_empty() {
            return bad("context features were given to a model that has none".into());
        }
        if &features.features != wanted || features.frames != frames {
            return bad(format!(
                "context features {:?} x {} frames do not match the model's {:?} x {frames}",
                features.features, features.frames, wanted
            ));
        }
        if features.values.len() != features.frames * features.dims
            || features.values.iter().any(|v| !v.is_finite())
        {
            return bad("context features must be finite, one row per frame".into());
        }
    }
    if let Some(profiles) = request.code_profiles {
        let per_level = config.codebook_size * PITCH_CLASSES;
        let pitch = &profiles.pitch_classes;
        if pitch.len() != config.levels || pitch.iter().any(|p| p.len() != per_level) {
            return bad(format!(
                "pitch-class profiles must be {} levels x {per_level} values",
                config.levels
            ));
        }
        if profiles.level0_brightness_db.len() != config.codebook_size {
            return bad(format!(
                "level-0 brightness must be {} values",
                config.codebook_size
            ));
        }
        let values = pitch.iter().flatten().chain(&profiles.level0_brightness_db);
        if values.into_iter().any(|v| !v.is_finite()) {
            return bad("code profiles must be finite".into());
        }
    }
    if let Some(edit) = &request.edit {
        check_grid("previous take", edit.previous)?;
        if edit.previous.frames != frames {
            return bad(format!(
                "the previous take has {} frames but the context has {frames}",
                edit.previous.frames
            ));
        }
        let Range { start, end } = edit.region;
        if start >= end || end > frames {
            return bad(format!(
                "edit region {start}..{end} must be a non-empty range within 0..{frames}"
            ));
        }
    }
    Ok((config.levels, frames))
}

/// Windows of `window_len` frames covering 0..frames, each starting `window_len - overlap`
/// after the previous one, the last aligned to end at `frames`. A frame is generated in
/// the first window that contains it unless it is `fixed`; windows with nothing to generate
/// are dropped.
///
/// When there are several windows, each runs its levels' iterations in proportion to the
/// frames it generates (rounded up): a continuation window that keeps a quarter of its
/// frames from the previous window runs three quarters of the iterations, and the last one,
/// aligned to the end, fewer still. Each iteration then decides about as many frames as in
/// a full window, and the cost of a stem grows with its new frames instead of with its
/// windows (30 s: 3.0 instead of 4 windows' worth). A stem of one window (with or without an
/// edit) keeps the preset's iterations.
fn plan_windows(
    frames: usize,
    window_len: usize,
    overlap: usize,
    fixed: &[bool],
    steps: &[usize],
) -> Vec<WindowPlan> {
    let mut starts = vec![0];
    while let Some(&last) = starts.last() {
        if last + window_len >= frames {
            break;
        }
        starts.push((last + window_len - overlap).min(frames - window_len));
    }
    let several = starts.len() > 1;
    let mut covered = 0;
    let mut plans = Vec::new();
    for start in starts {
        let range = start..start + window_len;
        let generate: Vec<bool> = range.clone().map(|n| n >= covered && !fixed[n]).collect();
        covered = range.end;
        let count = generate.iter().filter(|&&g| g).count();
        if count == 0 {
            continue;
        }
        plans.push(WindowPlan {
            frames: range,
            generate,
            level_steps: steps
                .iter()
                .map(|&s| {
                    let s = if several {
                        (s * count).div_ceil(window_len).max(1)
                    } else {
                        s
                    };
                    s.min(count)
                })
                .collect(),
        });
    }
    plans
}

/// Frames `range` of every level of a row-major `[levels][frames]` grid.
fn window_codes(grid: &[u32], frames: usize, levels: usize, range: &Range<usize>) -> Vec<u32> {
    (0..levels)
        .flat_map(|q| {
            grid[q * frames + range.start..q * frames + range.end]
                .iter()
                .copied()
        })
        .collect()
}

/// One row of the guidance batch: (context dropped, category id, weight in Eq. 3).
type GuidanceRow = (bool, u32, f64);

/// The batch rows of Eq. 3 in order p(Y | context), p(Y | category), p(Y); rows whose
/// weight is exactly 0 are left out (their forward would be multiplied by 0).
fn guidance_rows(
    config: &ModelConfig,
    category: u32,
    settings: &SamplerSettings,
) -> Vec<GuidanceRow> {
    let null = config.null_category();
    let weights = GuidanceWeights::new(settings.lambda_context, settings.lambda_category);
    let [w_context, w_category, w_uncond] = weights.in_row_order();
    [
        (false, null, w_context),
        (true, category, w_category),
        (true, null, w_uncond),
    ]
    .into_iter()
    .filter(|row| row.2 != 0.0)
    .collect()
}

/// The one row of the levels past [`SamplerSettings::guided_levels`]: p(Y | context,
/// category), unguided.
fn conditional_row(category: u32) -> Vec<GuidanceRow> {
    vec![(false, category, 1.0)]
}

/// The model inputs of one set of guidance rows for one window (built once per window and
/// row set, reused by every iteration).
struct RowInputs<'r> {
    rows: &'r [GuidanceRow],
    /// The rows' context channel, made once per window.
    context: ContextChannel,
}

/// Called after each iteration of a window with (level, step, steps, unmasked frames, the
/// window's codes after a level's last iteration, the level-0 draft of other iterations).
type IterationReport<'r> =
    dyn FnMut(usize, usize, usize, &[usize], Option<&[u32]>, Option<&[u32]>) + 'r;

/// The state of one window being decoded.
struct Window<'a> {
    model: &'a StemGenModel,
    plan: &'a WindowPlan,
    /// Rows of the guided levels and of the finer, unguided ones.
    guided_rows: &'a [GuidanceRow],
    conditional_rows: &'a [GuidanceRow],
    settings: &'a SamplerSettings,
    levels: usize,
    /// Context codes of the window, `[Q][W]`.
    context: Vec<u32>,
    /// Target codes of the window, `[Q][W]`, MASK where not yet decided.
    target: Vec<u32>,
    /// Context features of the window, `[W x F]`.
    features: Option<FeatureFrames>,
    /// The harmony prior's pitch-class profiles per level and chroma weights per frame.
    prior: Option<WindowPrior<'a>>,
    /// Level-0 attacks drawn with their notes ([`super::attacks`]); `None` = off.
    attack_rule: Option<AttackRule>,
}

impl Window<'_> {
    fn decode(
        &mut self,
        rng: &mut StdRng,
        report: &mut IterationReport,
        cancel: Option<&AtomicBool>,
    ) -> Result<(), SampleError> {
        let len = self.plan.frames.len();
        let guided = self.row_inputs(self.guided_rows)?;
        let conditional = if self.settings.guided_levels < self.levels {
            Some(self.row_inputs(self.conditional_rows)?)
        } else {
            None
        };
        let mask_id = self.model.config().mask_id();

        for level in 0..self.levels {
            let steps = self.plan.level_steps[level];
            let mut masked: Vec<usize> = (0..len).filter(|&n| self.plan.generate[n]).collect();
            for &n in &masked {
                self.target[level * len + n] = mask_id;
            }
            let start_count = masked.len();
            let inputs = match &conditional {
                Some(inputs) if level >= self.settings.guided_levels => inputs,
                _ => &guided,
            };
            let batch = inputs.rows.len();
            for step in 1..=steps {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(SampleError::Cancelled);
                }
                let device = self.model.device();
                let target = repeat_rows(&self.target, batch, self.levels, len, device)?;
                let hidden = self.model.hidden_with(&inputs.context, &target)?;
                let index: Vec<u32> = masked.iter().map(|&n| n as u32).collect();
                let index = Tensor::from_vec(index, masked.len(), device)?;
                let logits = self
                    .model
                    .level_logits(&hidden.index_select(&index, 1)?, level)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let mut candidates =
                    self.draw_candidates(inputs.rows, &logits, level, &masked, len, rng);

                // Cosine schedule: after step s, floor(cos(pi/2 s/S) M0) frames stay masked;
                // at least one is unmasked per step and enough stay for the steps left.
                let goal = if step == steps {
                    0
                } else {
                    ((FRAC_PI_2 * step as f64 / steps as f64).cos() * start_count as f64).floor()
                        as usize
                };
                let remaining = goal.max(steps - step).min(masked.len() - 1);
                let unmask = masked.len() - remaining;

                let mut order: Vec<usize> = (0..masked.len()).collect();
                order.sort_by(|&a, &b| {
                    candidates[b]
                        .rank
                        .partial_cmp(&candidates[a].rank)
                        .unwrap_or(CmpOrdering::Equal)
                        .then(masked[a].cmp(&masked[b]))
                });
                let chosen = &order[..unmask];
                if level == 0 {
                    self.settle_attacks(chosen, &masked, &mut candidates);
                }
                let mut unmasked_frames = Vec::with_capacity(unmask);
                for &i in chosen {
                    let n = masked[i];
                    self.target[level * len + n] = candidates[i].token;
                    unmasked_frames.push(self.plan.frames.start + n);
                }
                let mut keep = vec![true; masked.len()];
                for &i in chosen {
                    keep[i] = false;
                }
                // Level 0's draft: no RNG is drawn and nothing is kept, so the seed's tokens
                // do not depend on whether anyone looks at it.
                let draft = (level == 0 && step < steps).then(|| {
                    let mut codes = self.target.clone();
                    for (i, &n) in masked.iter().enumerate() {
                        if keep[i] {
                            codes[n] = candidates[i].token;
                        }
                    }
                    codes
                });
                let mut i = 0;
                masked.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
                let codes = (step == steps).then_some(self.target.as_slice());
                report(
                    level,
                    step,
                    steps,
                    &unmasked_frames,
                    codes,
                    draft.as_deref(),
                );
            }
        }
        Ok(())
    }

    /// The window's context channel for `rows` (its context, categories and features repeated
    /// for each), made once per window: the iterations change only the target.
    fn row_inputs<'r>(&self, rows: &'r [GuidanceRow]) -> Result<RowInputs<'r>, SampleError> {
        let device = self.model.device();
        let (batch, len) = (rows.len(), self.plan.frames.len());
        // The same features in every row: rows with the context dropped ignore them inside
        // the model.
        let features = match &self.features {
            Some(f) => {
                let data: Vec<f32> = (0..batch).flat_map(|_| f.values.iter().copied()).collect();
                Some(Tensor::from_vec(data, (batch, len, f.dims), device)?)
            }
            None => None,
        };
        let categories: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let dropped: Vec<bool> = rows.iter().map(|r| r.0).collect();
        let context = self.model.context_channel(
            &repeat_rows(&self.context, batch, self.levels, len, device)?,
            &Tensor::from_vec(categories, batch, device)?,
            &dropped,
            features.as_ref(),
        )?;
        Ok(RowInputs { rows, context })
    }

    /// Level 0 with the attack rule: the `chosen` candidates are written in time order, each
    /// drawn again from its own distribution, restricted to the codes the rule allows, when
    /// its first draw breaks the rule with the frames decided before it (in earlier
    /// iterations, or earlier in time in this one).
    fn settle_attacks(&mut self, chosen: &[usize], masked: &[usize], candidates: &mut [Candidate]) {
        let Some(rule) = self.attack_rule else {
            return;
        };
        let len = self.plan.frames.len();
        let mut in_time_order = chosen.to_vec();
        in_time_order.sort_by_key(|&i| masked[i]);
        for i in in_time_order {
            let n = masked[i];
            let candidate = &mut candidates[i];
            let row = &self.target[..len];
            if !rule.allows(row, n, candidate.token) {
                if let Some(guided) = &candidate.guided {
                    let mut restricted = guided.clone();
                    for (code, g) in restricted.iter_mut().enumerate() {
                        if !rule.allows(row, n, code as u32) {
                            *g = f32::NEG_INFINITY;
                        }
                    }
                    if restricted.iter().any(|g| g.is_finite()) {
                        let (token, _) =
                            draw_token(&restricted, self.settings.temperature, candidate.uniform);
                        candidate.token = token as u32;
                    }
                }
            }
            self.target[n] = candidate.token;
        }
    }

    /// For each masked frame (in order): a token drawn from the guided distribution at the
    /// temperature, and its rank rho(n) = w_c p(x_n) + w_s (1 - n/N) + w_r U(0,1), with
    /// p(x_n) the renormalised guided probability at temperature 1.
    ///
    /// The uniforms are drawn from `rng` first, in frame order (the token's, then the rank
    /// noise), so the frames can then be worked on in parallel and a seed still gives the same
    /// tokens on any number of threads. The per-frame softmaxes over the codebook were a
    /// quarter of a guided iteration's time on one core.
    fn draw_candidates(
        &self,
        rows: &[GuidanceRow],
        logits: &[f32],
        level: usize,
        masked: &[usize],
        len: usize,
        rng: &mut StdRng,
    ) -> Vec<Candidate> {
        use rayon::prelude::*;
        let vocab = self.model.config().codebook_size;
        let count = masked.len();
        let s = self.settings;
        let uniforms: Vec<(f64, f64)> = (0..count)
            .map(|_| {
                let token_u = if s.temperature == 0.0 { 0.0 } else { rng.gen() };
                (token_u, rng.gen())
            })
            .collect();
        // The rows the plausibility constraint reads: those with a condition (context row
        // first), or every row when guidance has none.
        let null = self.model.config().null_category();
        let mut conditional_rows: Vec<usize> = (0..rows.len())
            .filter(|&r| !rows[r].0 || rows[r].1 != null)
            .collect();
        if conditional_rows.is_empty() {
            conditional_rows = (0..rows.len()).collect();
        }
        // The attack rule may draw a level-0 frame again from the same distribution.
        let keep_guided = level == 0 && self.attack_rule.is_some();
        masked
            .par_iter()
            .zip(uniforms.par_iter())
            .enumerate()
            .map_init(
                || vec![0.0f32; vocab],
                |guided, (m, (&n, &(token_u, noise)))| {
                    let log_probs: Vec<Vec<f32>> = (0..rows.len())
                        .map(|r| log_softmax(&logits[(r * count + m) * vocab..][..vocab]))
                        .collect();
                    let terms: Vec<(f64, &[f32])> = rows
                        .iter()
                        .zip(&log_probs)
                        .map(|(row, lp)| (row.2, lp.as_slice()))
                        .collect();
                    combine(&terms, guided);
                    if s.plausibility > 0.0 {
                        let conditionals: Vec<&[f32]> = conditional_rows
                            .iter()
                            .map(|&r| log_probs[r].as_slice())
                            .collect();
                        keep_plausible(&conditionals, s.plausibility, guided);
                    }
                    if let Some(prior) = &self.prior {
                        prior.apply(guided, level, n, s.harmony_prior as f32);
                    }
                    if s.top_p < 1.0 {
                        keep_nucleus(guided, s.top_p);
                    }
                    let (token, probability) = draw_token(guided, s.temperature, token_u);
                    let position = 1.0 - n as f64 / len as f64;
                    Candidate {
                        token: token as u32,
                        rank: s.w_confidence * probability
                            + s.w_position * position
                            + s.w_random * noise,
                        guided: keep_guided.then(|| guided.clone()),
                        uniform: token_u,
                    }
                },
            )
            .collect()
    }
}

struct Candidate {
    token: u32,
    rank: f64,
    /// The guided log-probabilities the token was drawn from (kept for the attack rule).
    guided: Option<Vec<f32>>,
    /// The uniform the token was drawn with.
    uniform: f64,
}

/// Sets every token outside the nucleus of softmax(`guided`) to -inf: the fewest most
/// probable tokens whose probabilities sum to at least `top_p` stay (ties at the boundary
/// stay too, so the result does not depend on the order of equal values).
fn keep_nucleus(guided: &mut [f32], top_p: f64) {
    let max = fast_exp::max_of(guided);
    let mut weights = guided.to_vec();
    let z = fast_exp::exp_in_place(&mut weights, max, 1.0) as f64;
    let mut sorted = weights.clone();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let goal = top_p * z;
    let mut mass = 0.0;
    let mut threshold = sorted[sorted.len() - 1];
    for &w in &sorted {
        mass += w as f64;
        if mass >= goal {
            threshold = w;
            break;
        }
    }
    for (g, &w) in guided.iter_mut().zip(&weights) {
        if w < threshold {
            *g = f32::NEG_INFINITY;
        }
    }
}

/// Draws from softmax(guided / temperature) with the uniform `u` in [0, 1) (argmax at
/// temperature 0) and returns the token with its probability under softmax(guided).
fn draw_token(guided: &[f32], temperature: f64, u: f64) -> (usize, f64) {
    let max = fast_exp::max_of(guided);
    let mut weights = guided.to_vec();
    let z = fast_exp::exp_in_place(&mut weights, max, 1.0) as f64;
    let token = if temperature == 0.0 {
        guided.iter().position(|&g| g == max).unwrap_or(0)
    } else {
        if temperature != 1.0 {
            weights.copy_from_slice(guided);
            fast_exp::exp_in_place(&mut weights, max, (1.0 / temperature) as f32);
        }
        // Tokens cut (-inf: nucleus, plausibility) get exactly 0, not exp's smallest value.
        for (w, &g) in weights.iter_mut().zip(guided) {
            if g == f32::NEG_INFINITY {
                *w = 0.0;
            }
        }
        // Summed in the order the walk below subtracts, so the walk always ends inside.
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut target = u * total;
        let mut chosen = weights.len() - 1;
        for (v, &w) in weights.iter().enumerate() {
            let w = w as f64;
            if target < w {
                chosen = v;
                break;
            }
            target -= w;
        }
        chosen
    };
    let probability = ((guided[token] - max) as f64).exp() / z;
    (token, probability)
}

/// `[batch, levels, len]` u32 tensor holding `codes` (`[levels][len]`) in every row.
fn repeat_rows(
    codes: &[u32],
    batch: usize,
    levels: usize,
    len: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let data: Vec<u32> = (0..batch).flat_map(|_| codes.iter().copied()).collect();
    Tensor::from_vec(data, (batch, levels, len), device)
}

#[cfg(test)]
mod tests {
    use super::keep_nucleus;

    /// Log-probabilities of `probs` shifted by a constant (the nucleus must not care).
    fn logits(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| (p.ln() + 3.0) as f32).collect()
    }

    fn kept(probs: &[f64], top_p: f64) -> Vec<bool> {
        let mut g = logits(probs);
        keep_nucleus(&mut g, top_p);
        g.iter().map(|v| v.is_finite()).collect()
    }

    #[test]
    fn nucleus_keeps_the_fewest_most_probable_tokens_reaching_the_mass() {
        let probs = [0.05, 0.5, 0.15, 0.3];
        assert_eq!(kept(&probs, 0.5), [false, true, false, false]);
        assert_eq!(kept(&probs, 0.79), [false, true, false, true]);
        assert_eq!(kept(&probs, 0.81), [false, true, true, true]);
        assert_eq!(kept(&probs, 1.0), [true, true, true, true]);
        // Equal probabilities at the boundary stay together.
        assert_eq!(kept(&[0.4, 0.2, 0.2, 0.2], 0.5), [true, true, true, true]);
        assert_eq!(
            kept(&[0.4, 0.2, 0.2, 0.2], 0.3),
            [true, false, false, false]
        );
    }

    #[test]
    fn cut_tokens_are_never_drawn() {
        let mut g = logits(&[0.3, 0.3, 0.2, 0.2]);
        keep_nucleus(&mut g, 0.6);
        for i in 0..1000 {
            let (token, p) = super::draw_token(&g, 1.0, i as f64 / 1000.0);
            assert!(token < 2, "drew cut token {token}");
            assert!((p - 0.5).abs() < 1e-5, "renormalised probability {p}");
        }
    }
}
