//! `stemgen bench train`: the speed of one training step of a model's size, beside the
//! matmul rate measured in the same run, so that a change to the training path is judged
//! by a ratio on one machine rather than by absolute times on shared, noisy ones.
//!
//! The step is `stemgen train model`'s (masks with the first-step share, context-onset
//! weights, context features, forward, backward, clipping, AdamW) on seeded random weights
//! and random tokens: speed does not depend on the values. FLOPs are counted as training
//! counts them: three times the analytic forward of the batch.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

use super::adamw::AdamW;
use super::model::context_onset_weights;
use super::schedule::clip_grad_norm;
use crate::bench::{cpu_name, matmul_gflops, model_flops};
use crate::model::{draw_mask, weighted_objective_with_masks, ModelCheckpoint, ModelConfig};

/// The figures of [`train_steps`].
#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub cpu: String,
    pub params_m: f64,
    pub batch_size: usize,
    pub frames: usize,
    pub steps: usize,
    /// Median seconds per step (data, forward, backward, clipping, update).
    pub step_seconds: f64,
    /// Target tokens (batch x frames x levels) per second, as `train model` logs them.
    pub tokens_per_second: f64,
    pub step_gflops: f64,
    pub matmul_gflops: f64,
}

/// Times `steps` training steps (after one warm-up step) of a model with `config`.
pub fn train_steps(config: &ModelConfig, batch: usize, steps: usize) -> Result<TrainBench> {
    anyhow::ensure!(batch > 0 && steps > 0, "batch size and steps must be > 0");
    let device = Device::Cpu;
    let frames = config.max_frames;
    let checkpoint = ModelCheckpoint::random(config, &device, 0)?;
    let vars = checkpoint.vars.all_vars();
    let named = checkpoint.named_vars()?;
    let mut opt = AdamW::new(&named, 3e-4, 0.01)?;
    let mut rng = StdRng::seed_from_u64(1);
    let q = config.levels;
    let codes = |rng: &mut StdRng| -> Result<Tensor> {
        let v: Vec<u32> = (0..batch * q * frames)
            .map(|_| rng.gen_range(0..config.codebook_size as u32))
            .collect();
        Ok(Tensor::from_vec(v, (batch, q, frames), &device)?)
    };
    let context = codes(&mut rng)?;
    let target = codes(&mut rng)?;
    let category = Tensor::from_vec(
        (0..batch)
            .map(|b| (b % config.n_categories) as u32)
            .collect(),
        batch,
        &device,
    )?;
    let dims = config.context_feature_dims();
    let features = (dims > 0)
        .then(|| Tensor::rand(0f32, 1f32, (batch, frames, dims), &device))
        .transpose()?;
    let onset = config
        .shapes_per_gain()
        .map(|shapes| context_onset_weights(&context, shapes, 4.0))
        .transpose()?;
    let matmul = matmul_gflops(2048, 3)?;
    let mut times = Vec::with_capacity(steps);
    for step in 0..=steps {
        let t0 = Instant::now();
        let masks = (0..batch)
            .map(|_| {
                let mut m = draw_mask(config, frames, &mut rng);
                if rng.gen::<f64>() < 0.4 {
                    m.level = 0;
                    m.mask_ratio = 1.0;
                    m.masked.fill(true);
                }
                m
            })
            .collect();
        let out = weighted_objective_with_masks(
            &checkpoint.model,
            &context,
            &target,
            &category,
            features.as_ref(),
            masks,
            onset.as_deref(),
        )?;
        let mut grads = out.loss.backward()?;
        clip_grad_norm(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        anyhow::ensure!(out
            .loss
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?
            .is_finite());
        if step > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let step_seconds = times[times.len() / 2];
    Ok(TrainBench {
        cpu: cpu_name(),
        params_m: checkpoint.parameter_count() as f64 / 1e6,
        batch_size: batch,
        frames,
        steps,
        step_seconds,
        tokens_per_second: (batch * frames * q) as f64 / step_seconds,
        step_gflops: 3.0 * model_flops(config, batch, frames) / 1e9 / step_seconds,
        matmul_gflops: matmul,
    })
}

impl std::fmt::Display for TrainBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {:.1}M parameters, batch {} x {} frames, median of {} steps: {:.3} s per step, {:.0} tokens/s, {:.1} GFLOP/s = {:.0}% of the {:.1} GFLOP/s matmul",
            self.cpu,
            self.params_m,
            self.batch_size,
            self.frames,
            self.steps,
            self.step_seconds,
            self.tokens_per_second,
            self.step_gflops,
            100.0 * self.step_gflops / self.matmul_gflops,
            self.matmul_gflops,
        )
    }
}
