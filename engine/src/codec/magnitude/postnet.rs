//! The nonlinear part of the magnitude decoder: a small network trained on frozen tokens
//! that corrects the decoded log-magnitudes.
//!
//! The codeword sum (and the linear [`super::refine`] filter after it) can only add up what
//! each level's codewords hold. The network sees more: which code was chosen at every level
//! (a learned embedding per code, so it is not limited to their sum), the decode of the
//! neighbouring frames (temporal convolutions) and every bin at once (dense layers), and it
//! is trained on the held-out metric itself, the log-spectral distance in dB. Its output
//! layer starts at zero, so training starts from the decoder it corrects.
//!
//! `decode + out(blocks(in(norm(decode)) + sum_q embed_q[code_q]))`, each block
//! `h + proj(gelu(time_conv(rms_norm(h))))`. Only ops with a candle backward are used
//! (ARCHITECTURE §4.1: no fused norms).

use crate::analysis::distance::LSD_FLOOR_DB;
use crate::codec::Tokens;
use crate::train::adamw::AdamW;
use crate::train::schedule::{clip_grad_norm, LrSchedule};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Names of the network's tensors in the tokenizer's safetensors file start with this.
pub const TENSOR_PREFIX: &str = "postnet.";

/// Inputs are scaled to about unit range: `(dB - INPUT_OFFSET_DB) / INPUT_SCALE_DB`.
const INPUT_OFFSET_DB: f64 = -60.0;
const INPUT_SCALE_DB: f64 = 20.0;
const NORM_EPS: f64 = 1e-5;

/// The network's shape (stored in the tokenizer's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostnetConfig {
    /// Channels of the hidden frames.
    pub width: usize,
    /// Residual blocks.
    pub layers: usize,
    /// Frames each block's temporal convolution reads (odd, centred).
    pub kernel: usize,
}

impl Default for PostnetConfig {
    fn default() -> Self {
        PostnetConfig {
            width: 384,
            layers: 4,
            kernel: 3,
        }
    }
}

impl PostnetConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (8..=4096).contains(&self.width),
            "postnet width {} out of range",
            self.width
        );
        ensure!(
            (1..=32).contains(&self.layers),
            "postnet layers {} out of range",
            self.layers
        );
        ensure!(
            self.kernel % 2 == 1 && self.kernel <= 15,
            "postnet kernel {} must be odd and at most 15",
            self.kernel
        );
        Ok(())
    }

    /// Tensors the network stores for a tokenizer of `levels` levels.
    pub fn tensor_count(&self, levels: usize) -> usize {
        levels + 2 + 5 * self.layers + 2
    }
}

struct Block {
    norm: Tensor,
    conv_w: Tensor,
    conv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
}

/// The network, built from a `VarBuilder` (trained variables or loaded tensors).
pub struct Postnet {
    config: PostnetConfig,
    bins: usize,
    embed: Vec<Tensor>,
    in_w: Tensor,
    in_b: Tensor,
    blocks: Vec<Block>,
    out_w: Tensor,
    out_b: Tensor,
}

impl Postnet {
    /// Weights are `[in, out]`, so a layer is `x.matmul(w) + b`.
    pub fn new(
        config: PostnetConfig,
        bins: usize,
        levels: usize,
        codebook_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        config.validate()?;
        let w = config.width;
        let dense = |vb: &VarBuilder, name: &str, i: usize, o: usize| -> Result<(Tensor, Tensor)> {
            let bound = 1.0 / (i as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            Ok((
                vb.get_with_hints((i, o), &format!("{name}.weight"), init)?,
                vb.get_with_hints(o, &format!("{name}.bias"), Init::Const(0.0))?,
            ))
        };
        let embed = (0..levels)
            .map(|q| {
                let init = Init::Randn {
                    mean: 0.0,
                    stdev: 0.5,
                };
                Ok(vb.get_with_hints((codebook_size, w), &format!("embed{q}"), init)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let (in_w, in_b) = dense(&vb, "input", bins, w)?;
        let blocks = (0..config.layers)
            .map(|l| {
                let p = format!("block{l}");
                let norm = vb.get_with_hints(w, &format!("{p}.norm"), Init::Const(1.0))?;
                let (conv_w, conv_b) = dense(&vb, &format!("{p}.conv"), config.kernel * w, w)?;
                let (proj_w, proj_b) = dense(&vb, &format!("{p}.proj"), w, w)?;
                Ok(Block {
                    norm,
                    conv_w,
                    conv_b,
                    proj_w,
                    proj_b,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Zero output: the untrained network passes the decode through unchanged.
        let out_w = vb.get_with_hints((w, bins), "output.weight", Init::Const(0.0))?;
        let out_b = vb.get_with_hints(bins, "output.bias", Init::Const(0.0))?;
        Ok(Postnet {
            config,
            bins,
            embed,
            in_w,
            in_b,
            blocks,
            out_w,
            out_b,
        })
    }

    /// Corrected log-magnitudes `[batch, frames, bins]` (not floored) from the decode being
    /// corrected `[batch, frames, bins]` and the codes `[batch, frames, levels]` (u32).
    pub fn forward(&self, decode_db: &Tensor, codes: &Tensor) -> Result<Tensor> {
        let (b, t, bins) = decode_db.dims3()?;
        ensure!(
            bins == self.bins,
            "postnet: {bins} bins, expected {}",
            self.bins
        );
        let (cb, ct, levels) = codes.dims3()?;
        ensure!(
            (cb, ct, levels) == (b, t, self.embed.len()),
            "postnet: codes {:?} do not match the decode {:?} and {} levels",
            codes.dims(),
            decode_db.dims(),
            self.embed.len()
        );
        let w = self.config.width;
        let x = ((decode_db - INPUT_OFFSET_DB)? / INPUT_SCALE_DB)?.reshape((b * t, bins))?;
        let mut h = x.matmul(&self.in_w)?.broadcast_add(&self.in_b)?;
        for (q, table) in self.embed.iter().enumerate() {
            let ids = codes.narrow(2, q, 1)?.flatten_all()?;
            h = (h + table.index_select(&ids, 0)?)?;
        }
        let half = self.config.kernel / 2;
        for block in &self.blocks {
            let n = rms_norm(&h, &block.norm)?.reshape((b, t, w))?;
            let window = if half == 0 {
                n
            } else {
                let padded = n.pad_with_zeros(1, half, half)?;
                let taps = (0..self.config.kernel)
                    .map(|o| padded.narrow(1, o, t))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&taps, 2)?
            };
            let u = window
                .reshape((b * t, self.config.kernel * w))?
                .matmul(&block.conv_w)?
                .broadcast_add(&block.conv_b)?
                .gelu()?;
            h = (h + u.matmul(&block.proj_w)?.broadcast_add(&block.proj_b)?)?;
        }
        let correction = h
            .matmul(&self.out_w)?
            .broadcast_add(&self.out_b)?
            .reshape((b, t, bins))?;
        Ok((decode_db + correction)?)
    }

    /// Corrects one clip's decode `[frames][bins]` given its full token grid; floored.
    pub fn apply(&self, decode_db: &[f32], tokens: &Tokens, floor_db: f32) -> Result<Vec<f32>> {
        let t = tokens.frames;
        ensure!(
            decode_db.len() == t * self.bins,
            "postnet: decode holds {} values for {t} frames",
            decode_db.len()
        );
        if t == 0 {
            return Ok(Vec::new());
        }
        let device = Device::Cpu;
        let x = Tensor::from_slice(decode_db, (1, t, self.bins), &device)?;
        let codes = Tensor::from_vec(frame_major_codes(tokens), (1, t, tokens.levels), &device)?;
        let y = self.forward(&x, &codes)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(y.into_iter().map(|v| v.max(floor_db)).collect())
    }
}

/// `x * g / sqrt(mean(x^2) + eps)` over the last dimension, from ops that have a backward.
fn rms_norm(x: &Tensor, gain: &Tensor) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + NORM_EPS)?
        .sqrt()?
        .recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(gain)?)
}

/// Codes `[frames][levels]` (the grid is stored level-major).
fn frame_major_codes(tokens: &Tokens) -> Vec<u32> {
    let mut out = vec![0u32; tokens.frames * tokens.levels];
    for q in 0..tokens.levels {
        for (t, &c) in tokens.level(q).iter().enumerate() {
            out[t * tokens.levels + q] = c;
        }
    }
    out
}

/// One training clip: its tokens, the decode the network corrects and the log-magnitudes
/// the tokens approximate, both `[frames][bins]`.
pub struct Example {
    pub tokens: Tokens,
    pub decode_db: Vec<f32>,
    pub truth_db: Vec<f32>,
}

/// How to train the network.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub config: PostnetConfig,
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Frames per window.
    pub window: usize,
    pub schedule: LrSchedule,
    pub weight_decay: f64,
    pub clip_norm: f64,
    /// Validate (and report) every this many steps.
    pub validate_every: usize,
    pub seed: u64,
}

/// Token-domain LSD (decoded magnitudes before Griffin-Lim) on the validation clips.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub train_clips: usize,
    pub validation_clips: usize,
    pub train_frames: usize,
    /// Validation LSD in dB of the decode the network corrects.
    pub lsd_before_db: f64,
    /// (step, validation LSD in dB after the network).
    pub validation: Vec<(usize, f64)>,
    pub seconds: f64,
    pub frames_per_second: f64,
}

/// Mean over frames of the per-frame RMS dB error, both floored at the LSD's floor.
fn lsd_loss(estimate: &Tensor, truth: &Tensor, floor_db: f64) -> Result<Tensor> {
    let diff = (estimate.maximum(floor_db)? - truth.maximum(floor_db)?)?;
    let per_frame = (diff.sqr()?.mean(D::Minus1)? + 1e-6)?.sqrt()?;
    Ok(per_frame.mean_all()?)
}

/// Trains the network on `examples` (every 10th clip, or the last of fewer than 10, is kept
/// for validation when there are at least 2) and returns its tensors (names without [`TENSOR_PREFIX`]) and a report.
/// `progress` gets a line every `validate_every` steps.
pub fn train(
    examples: &[Example],
    bins: usize,
    codebook_size: usize,
    options: &TrainOptions,
    mut progress: impl FnMut(&str),
) -> Result<(HashMap<String, Tensor>, TrainReport)> {
    ensure!(!examples.is_empty(), "no clips to train the postnet on");
    ensure!(
        options.batch >= 1 && options.window >= 1,
        "batch and window must be at least 1"
    );
    let levels = examples[0].tokens.levels;
    for e in examples {
        ensure!(
            e.tokens.levels == levels
                && e.decode_db.len() == e.tokens.frames * bins
                && e.truth_db.len() == e.tokens.frames * bins,
            "postnet: a training clip's tokens, decode and truth do not match"
        );
    }
    let (mut train_set, mut validation) = (Vec::new(), Vec::new());
    let n = examples.len();
    for (i, e) in examples.iter().enumerate() {
        // Every 10th clip, or the last of fewer than 10.
        if n >= 2 && (i % 10 == 9 || (n < 10 && i == n - 1)) {
            validation.push(e);
        } else {
            train_set.push(e);
        }
    }
    let window = train_set
        .iter()
        .map(|e| e.tokens.frames)
        .max()
        .unwrap_or(0)
        .min(options.window);
    ensure!(window > 0, "postnet: the training clips hold no frames");
    let usable: Vec<&Example> = train_set
        .iter()
        .copied()
        .filter(|e| e.tokens.frames >= window)
        .collect();
    let codes: Vec<Vec<u32>> = usable
        .iter()
        .map(|e| frame_major_codes(&e.tokens))
        .collect();
    let cumulative: Vec<usize> = usable
        .iter()
        .scan(0, |acc, e| {
            *acc += e.tokens.frames - window + 1;
            Some(*acc)
        })
        .collect();
    let starts_total = *cumulative.last().expect("at least one usable clip");

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = Postnet::new(options.config, bins, levels, codebook_size, vb)?;
    let named: HashMap<String, candle_core::Var> = varmap
        .data()
        .lock()
        .expect("the var map is not shared")
        .clone();
    let vars: Vec<candle_core::Var> = named.values().cloned().collect();
    let mut opt = AdamW::new(&named, options.schedule.at(0), options.weight_decay)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let floor = LSD_FLOOR_DB;

    let validate = |net: &Postnet, corrected: bool| -> Result<f64> {
        let mut sum = 0.0;
        let mut frames = 0usize;
        for e in &validation {
            let t = e.tokens.frames;
            if t == 0 {
                continue;
            }
            let estimate = if corrected {
                net.apply(&e.decode_db, &e.tokens, floor as f32)?
            } else {
                e.decode_db.clone()
            };
            for (est, tru) in estimate.chunks(bins).zip(e.truth_db.chunks(bins)) {
                let ms = est
                    .iter()
                    .zip(tru)
                    .map(|(&a, &b)| ((a as f64).max(floor) - (b as f64).max(floor)).powi(2))
                    .sum::<f64>()
                    / bins as f64;
                sum += ms.sqrt();
            }
            frames += t;
        }
        Ok(if frames == 0 {
            f64::NAN
        } else {
            sum / frames as f64
        })
    };
    let lsd_before_db = validate(&net, false)?;
    progress(&format!(
        "postnet: {} training clips, {} validation clips; validation LSD before {lsd_before_db:.3} dB",
        usable.len(),
        validation.len()
    ));

    let started = std::time::Instant::now();
    let mut report_validation = Vec::new();
    let (mut x, mut y, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut running = 0.0;
    let mut running_n = 0;
    for step in 0..options.steps {
        x.clear();
        y.clear();
        c.clear();
        for _ in 0..options.batch {
            let pick = rng.gen_range(0..starts_total);
            let clip = cumulative.partition_point(|&end| end <= pick);
            let start = pick - if clip == 0 { 0 } else { cumulative[clip - 1] };
            let e = usable[clip];
            x.extend_from_slice(&e.decode_db[start * bins..(start + window) * bins]);
            y.extend_from_slice(&e.truth_db[start * bins..(start + window) * bins]);
            c.extend_from_slice(&codes[clip][start * levels..(start + window) * levels]);
        }
        let shape = (options.batch, window, bins);
        let xt = Tensor::from_slice(&x, shape, &device)?;
        let yt = Tensor::from_slice(&y, shape, &device)?;
        let ct = Tensor::from_slice(&c, (options.batch, window, levels), &device)?;
        let loss = lsd_loss(&net.forward(&xt, &ct)?, &yt, floor)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &vars, options.clip_norm)?;
        opt.set_learning_rate(options.schedule.at(step));
        opt.step(&grads)?;
        let l = loss.to_scalar::<f32>()? as f64;
        ensure!(
            l.is_finite(),
            "postnet: the loss is not finite at step {step}"
        );
        running += l;
        running_n += 1;
        let last = step + 1 == options.steps;
        if (step + 1) % options.validate_every.max(1) == 0 || last {
            let v = validate(&net, true)?;
            report_validation.push((step + 1, v));
            let elapsed = started.elapsed().as_secs_f64();
            progress(&format!(
                "postnet step {}/{}: train LSD {:.3} dB, validation {v:.3} dB (before {lsd_before_db:.3}), lr {:.2e}, {:.0} frames/s",
                step + 1,
                options.steps,
                running / running_n as f64,
                options.schedule.at(step),
                ((step + 1) * options.batch * window) as f64 / elapsed
            ));
            running = 0.0;
            running_n = 0;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let tensors = named
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let report = TrainReport {
        train_clips: usable.len(),
        validation_clips: validation.len(),
        train_frames: usable.iter().map(|e| e.tokens.frames).sum(),
        lsd_before_db,
        validation: report_validation,
        seconds,
        frames_per_second: (options.steps * options.batch * window) as f64 / seconds.max(1e-9),
    };
    Ok((tensors, report))
}

/// Builds the network from stored tensors (names without [`TENSOR_PREFIX`]).
pub fn from_tensors(
    config: PostnetConfig,
    bins: usize,
    levels: usize,
    codebook_size: usize,
    tensors: HashMap<String, Tensor>,
) -> Result<Postnet> {
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Postnet::new(config, bins, levels, codebook_size, vb).context("postnet weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PostnetConfig {
        PostnetConfig {
            width: 16,
            layers: 2,
            kernel: 3,
        }
    }

    /// Random (bins 9, levels 2, 4 codes) clips whose truth is the decode plus a pattern the
    /// codes and the neighbouring frames determine.
    fn examples(n: usize, frames: usize) -> Vec<Example> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let bins = 9;
        (0..n)
            .map(|_| {
                let codes: Vec<u32> = (0..2 * frames).map(|_| rng.gen_range(0..4)).collect();
                let tokens = Tokens::new(2, frames, codes).unwrap();
                let decode_db: Vec<f32> = (0..frames * bins)
                    .map(|_| rng.gen_range(-80.0..-20.0))
                    .collect();
                let truth_db = (0..frames * bins)
                    .map(|i| {
                        let (t, k) = (i / bins, i % bins);
                        let prev = tokens.level(0)[t.saturating_sub(1)] as f32;
                        let here = tokens.level(1)[t] as f32;
                        decode_db[i] + 3.0 * here - 2.0 * prev + k as f32 * 0.5
                    })
                    .collect();
                Example {
                    tokens,
                    decode_db,
                    truth_db,
                }
            })
            .collect()
    }

    #[test]
    fn untrained_postnet_passes_the_decode_through_and_every_parameter_gets_a_gradient() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Postnet::new(tiny(), 9, 2, 4, vb).unwrap();
        let e = &examples(1, 7)[0];
        let out = net.apply(&e.decode_db, &e.tokens, -100.0).unwrap();
        assert_eq!(out, e.decode_db);

        // With a non-zero output layer, the loss reaches every tensor.
        let vars = varmap.data().lock().unwrap().clone();
        let out_w = &vars["output.weight"];
        out_w
            .set(&Tensor::randn(0f32, 0.1, out_w.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let x = Tensor::from_slice(&e.decode_db, (1, 7, 9), &Device::Cpu).unwrap();
        let y = Tensor::from_slice(&e.truth_db, (1, 7, 9), &Device::Cpu).unwrap();
        let codes =
            Tensor::from_vec(frame_major_codes(&e.tokens), (1, 7, 2), &Device::Cpu).unwrap();
        let loss = lsd_loss(&net.forward(&x, &codes).unwrap(), &y, -100.0).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(vars.len(), tiny().tensor_count(2));
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name}: zero gradient");
        }
    }

    #[test]
    fn training_learns_a_pattern_of_codes_and_neighbouring_frames() {
        let data = examples(20, 40);
        let options = TrainOptions {
            config: tiny(),
            steps: 300,
            batch: 4,
            window: 16,
            schedule: LrSchedule {
                peak: 3e-2,
                warmup: 10,
                hold: 150,
                half_life: 50,
            },
            weight_decay: 0.0,
            clip_norm: 1.0,
            validate_every: 300,
            seed: 1,
        };
        let (tensors, report) = train(&data, 9, 4, &options, |_| {}).unwrap();
        let (_, after) = *report.validation.last().unwrap();
        // The untrained correction leaves an error of several dB; the pattern is learnable.
        assert!(report.lsd_before_db > 4.0, "{report:?}");
        assert!(after < report.lsd_before_db * 0.5, "{report:?}");
        let net = from_tensors(tiny(), 9, 2, 4, tensors).unwrap();
        let e = &data[9];
        assert_eq!(
            net.apply(&e.decode_db, &e.tokens, -100.0).unwrap().len(),
            40 * 9
        );
    }
}
