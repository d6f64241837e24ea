//! The StemGen network: input combiner (ARCHITECTURE §3.2), bidirectional LLaMA-style blocks and
//! one output head per RVQ level.
//!
//! By default every op here has a backward in candle 0.11: RMSNorm, attention, SwiGLU and
//! rotary positions are our fused CPU ops with a backward ([`super::kernels`]; candle's generic ops
//! or primitives on other devices), because the fused candle ops silently drop gradients
//! (ARCHITECTURE §4.1). [`StemGenModel::for_inference`] gives a copy that uses the fused
//! kernels instead (candle's `rms_norm` and `rope`, our attention and SwiGLU activation): same
//! weights and the same function up to float rounding, faster, no gradients.

use candle_core::{bail, DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::kernels::attention::CpuAttention;
use super::kernels::{rms_norm, rotary, silu_gate::SiluGate};
use super::ModelConfig;

/// Keeps the RMS normalisation finite on all-zero rows.
const RMS_EPS: f32 = 1e-5;

/// Output heads start with small logits (std ~0.2), so an untrained model predicts nearly
/// uniformly (loss ~ ln codebook_size) instead of confidently wrong.
const HEAD_INIT_SCALE: f64 = 0.2;
/// Name of the optional gain embedding table ([`ModelConfig::gain_steps`]).
pub const GAIN_EMBED: &str = "gain_embed";
/// Name of the optional context-feature projection ([`ModelConfig::context_features`]).
pub const CONTEXT_FEATURES_PROJ: &str = "context_features_proj";

/// Linear layer without bias, `weight` `[out, in]`. Unlike `candle_nn::Linear`, which runs a
/// `[B, N, in]` input as B batched products against a broadcast weight, it folds every leading
/// dimension into the rows of one matrix product: on the CPU one large GEMM keeps both cores
/// busier than B smaller ones (same values, same gradients).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let mut shape = xs.dims().to_vec();
        let rows = xs.elem_count() / in_dim.max(1);
        let ys = xs.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        if let Some(last) = shape.last_mut() {
            *last = out_dim;
        }
        ys.reshape(shape)
    }
}

/// [`Linear`] with LeCun-normal init scaled by `scale` (1 for most layers).
fn linear(in_dim: usize, out_dim: usize, scale: f64, vb: VarBuilder) -> Result<Linear> {
    let stdev = scale / (in_dim as f64).sqrt();
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0., stdev })?;
    Ok(Linear { weight })
}

/// RMSNorm with a backward for training ([`rms_norm`]); candle's fused kernel in
/// inference mode.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
}

impl RmsNorm {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
        })
    }

    fn apply(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight, RMS_EPS)
        } else {
            rms_norm::rms_norm(xs, &self.weight, RMS_EPS)
        }
    }
}

/// Rotary position tables, `[max_frames, head_dim / 2]` each (GPT-NeoX half-split layout).
#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        let half = config.head_dim() / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_theta
                    .powf(2.0 * i as f64 / config.head_dim() as f64) as f32
            })
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, config.max_frames as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((config.max_frames, 1))?;
        let angles = positions.broadcast_mul(&inv_freq)?;
        Ok(Rotary {
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    /// Rotates `xs` `[B, H, N, head_dim]` by position: candle's `rope` kernel (the same
    /// half-split layout, no backward) when `fused`, else [`rotary::rotate`], which has one.
    fn apply(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            return candle_nn::rotary_emb::rope(&xs.contiguous()?, &self.cos, &self.sin);
        }
        let frames = xs.dim(2)?;
        let cos = self.cos.narrow(0, 0, frames)?;
        let sin = self.sin.narrow(0, 0, frames)?;
        rotary::rotate(xs, &cos, &sin)
    }
}

/// Multi-head self-attention over all frames (no causal mask: the model sees the whole
/// window in both directions). Q, K and V come from one fused projection: one large matmul
/// is faster than three small ones on the CPU.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    out: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.d_model;
        Ok(Attention {
            qkv: linear(d, 3 * d, 1.0, vb.pp("qkv"))?,
            out: linear(d, d, residual_scale(config), vb.pp("out"))?,
            n_heads: config.n_heads,
            head_dim: config.head_dim(),
        })
    }

    fn forward(&self, xs: &Tensor, rotary: &Rotary, fused: bool) -> Result<Tensor> {
        let (batch, frames, d_model) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((batch, frames, 3, self.n_heads, self.head_dim))?;
        let heads = |i: usize| -> Result<Tensor> {
            qkv.i((.., .., i))?.transpose(1, 2)?.contiguous() // [B, H, N, hd]
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            let q = rotary.apply(&heads(0)?, fused)?;
            let k = rotary.apply(&heads(1)?, fused)?;
            let v = heads(2)?;
            let scale = scale as f32;
            let mixed = if fused {
                q.apply_op3_no_bwd(&k, &v, &CpuAttention { scale })?
            } else {
                q.apply_op3(&k, &v, CpuAttention { scale })?
            };
            return self.out.forward(&mixed);
        }
        let q = (rotary.apply(&heads(0)?, fused)? * scale)?;
        let k = rotary.apply(&heads(1)?, fused)?;
        let v = heads(2)?;
        let scores = q.matmul(&k.t()?)?;
        let weights = if fused {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        };
        let mixed = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, frames, d_model))?;
        self.out.forward(&mixed)
    }
}

/// SwiGLU MLP; gate and up projections fused into one matmul like Q/K/V.
#[derive(Debug, Clone)]
struct SwiGlu {
    gate_up: Linear,
    down: Linear,
    hidden: usize,
}

impl SwiGlu {
    fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (d, hidden) = (config.d_model, config.ffn_dim());
        Ok(SwiGlu {
            gate_up: linear(d, 2 * hidden, 1.0, vb.pp("gate_up"))?,
            down: linear(hidden, d, residual_scale(config), vb.pp("down"))?,
            hidden,
        })
    }
}

impl SwiGlu {
    fn forward(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(xs)?;
        if gate_up.device().is_cpu() && gate_up.dtype() == DType::F32 {
            let gate_up = gate_up.contiguous()?;
            let activated = if fused {
                gate_up.apply_op1_no_bwd(&SiluGate)?
            } else {
                gate_up.apply_op1(SiluGate)?
            };
            return self.down.forward(&activated);
        }
        let gate = gate_up.narrow(D::Minus1, 0, self.hidden)?;
        let up = gate_up.narrow(D::Minus1, self.hidden, self.hidden)?;
        self.down.forward(&(gate.silu()? * up)?)
    }
}

/// Output projections into the residual stream start smaller so that the stream's scale
/// does not grow with depth (GPT-2's 1/sqrt(2 L) rule).
fn residual_scale(config: &ModelConfig) -> f64 {
    1.0 / (2.0 * config.n_layers as f64).sqrt()
}

/// Pre-norm transformer block.
#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: SwiGlu,
}

impl Block {
    fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            attn_norm: RmsNorm::new(config.d_model, vb.pp("attn_norm"))?,
            attn: Attention::new(config, vb.pp("attn"))?,
            mlp_norm: RmsNorm::new(config.d_model, vb.pp("mlp_norm"))?,
            mlp: SwiGlu::new(config, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor, rotary: &Rotary, fused: bool) -> Result<Tensor> {
        let attn_in = self.attn_norm.apply(xs, fused)?;
        let xs = (xs + self.attn.forward(&attn_in, rotary, fused)?)?;
        &xs + self.mlp.forward(&self.mlp_norm.apply(&xs, fused)?, fused)?
    }
}

/// The StemGen transformer: predicts target-stem tokens from context tokens, partially
/// masked target tokens and an instrument category.
///
/// Parameter names (the safetensors keys):
/// `context_embed` / `target_embed` `[Q, codebook_size + 1, d_model / 2]` (row
/// `codebook_size` of each level is its MASK token), `category_embed`
/// `[n_categories + 1, d_model / 2]` (last row = NULL category), `null_context`
/// `[d_model / 2]`, `blocks.{i}.{attn_norm,attn.qkv,attn.out,mlp_norm,mlp.gate_up,mlp.down}`,
/// `final_norm`, `heads.{q}` `[codebook_size, d_model]`; with `gain_steps` > 0 also
/// `gain_embed` `[2, gain_steps + 1, d_model / 2]` (context, target; the last row is the MASK
/// token's); with `context_features`, `context_features_proj` `[F, d_model / 2]` (F values
/// per frame).
#[derive(Debug, Clone)]
pub struct StemGenModel {
    config: ModelConfig,
    context_embed: Tensor,
    target_embed: Tensor,
    /// Embeddings of the level-0 gain index ([`ModelConfig::gain_steps`]), zero-initialised
    /// so that adding them to a trained model changes nothing until they are trained.
    gain_embed: Option<Tensor>,
    /// Projection of the context features `[F, d_model / 2]`, added to the context channel;
    /// zero-initialised like the gain embedding.
    context_features_proj: Option<Tensor>,
    category_embed: Tensor,
    null_context: Tensor,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    heads: Vec<Linear>,
    rotary: Rotary,
    /// `q * (codebook_size + 1)` per level `[1, Q, 1]`: turns per-level ids into rows of the
    /// flattened `[Q * (codebook_size + 1), d]` embedding tables, so that all levels are
    /// looked up in one `index_select`.
    level_offsets: Tensor,
    /// Inference mode: fused RMSNorm / softmax / rotary kernels without backward.
    fused: bool,
}

impl StemGenModel {
    /// Builds the model from a `VarBuilder` (a `VarMap` for training, loaded tensors for
    /// inference). Fails on an invalid config.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(problem) = config.validate() {
            bail!("invalid model config: {problem}");
        }
        let (q, rows, c) = (
            config.levels,
            config.codebook_size + 1,
            config.channel_dim(),
        );
        // Each level's sum of Q embeddings should have about unit scale.
        let token_init = Init::Randn {
            mean: 0.,
            stdev: 1.0 / (q as f64).sqrt(),
        };
        let unit_init = Init::Randn {
            mean: 0.,
            stdev: 1.0,
        };
        let context_embed = vb.get_with_hints((q, rows, c), "context_embed", token_init)?;
        let target_embed = vb.get_with_hints((q, rows, c), "target_embed", token_init)?;
        let category_embed =
            vb.get_with_hints((config.n_categories + 1, c), "category_embed", unit_init)?;
        let null_context = vb.get_with_hints(c, "null_context", unit_init)?;
        let gain_embed = (config.gain_steps > 0)
            .then(|| vb.get_with_hints((2, config.gain_steps + 1, c), GAIN_EMBED, Init::Const(0.0)))
            .transpose()?;
        let features = config.context_feature_dims();
        let context_features_proj = (features > 0)
            .then(|| vb.get_with_hints((features, c), CONTEXT_FEATURES_PROJ, Init::Const(0.0)))
            .transpose()?;
        let blocks = (0..config.n_layers)
            .map(|i| Block::new(config, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = RmsNorm::new(config.d_model, vb.pp("final_norm"))?;
        let heads = (0..q)
            .map(|level| {
                linear(
                    config.d_model,
                    config.codebook_size,
                    HEAD_INIT_SCALE,
                    vb.pp("heads").pp(level),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let device = vb.device();
        let offsets: Vec<u32> = (0..q).map(|level| (level * rows) as u32).collect();
        Ok(StemGenModel {
            config: config.clone(),
            context_embed,
            target_embed,
            gain_embed,
            context_features_proj,
            category_embed,
            null_context,
            blocks,
            final_norm,
            heads,
            rotary: Rotary::new(config, device)?,
            level_offsets: Tensor::from_vec(offsets, (1, q, 1), device)?,
            fused: false,
        })
    }

    /// A copy for inference (sampling): the same weights (shared, not copied), run with
    /// candle's fused RMSNorm, softmax and rotary kernels. These have no backward, so the
    /// copy must not be trained; its outputs equal this model's up to float rounding.
    pub fn for_inference(&self) -> StemGenModel {
        StemGenModel {
            fused: true,
            ..self.clone()
        }
    }

    /// Whether this copy uses the fused inference kernels (see [`Self::for_inference`]).
    pub fn is_inference(&self) -> bool {
        self.fused
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.null_context.device()
    }

    /// Logits for every level: `[B, Q, N, codebook_size]`.
    ///
    /// `context` `[B, Q, N]` u32 codes (`< codebook_size`); `target` `[B, Q, N]` u32 codes or
    /// MASK ids (`== codebook_size`); `category` `[B]` u32 (`n_categories` = NULL);
    /// `context_dropped[b]` replaces example b's context by the NULL context (its context
    /// tokens are then ignored, but must still be valid ids); `features` `[B, N, F]` f32 are
    /// the context features of a model that has them (`None`: all zero, as when dropped),
    /// ignored where the context is dropped.
    ///
    /// The sampler decodes one level at a time and should call [`Self::hidden`] once and
    /// [`Self::level_logits`] for the level it decodes instead.
    pub fn forward(
        &self,
        context: &Tensor,
        target: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
        features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let hidden = self.hidden(context, target, category, context_dropped, features)?;
        let per_level = (0..self.config.levels)
            .map(|level| self.level_logits(&hidden, level))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&per_level, 1)
    }

    /// The final-normalised hidden states `[B, N, d_model]`, input to the output heads.
    pub fn hidden(
        &self,
        context: &Tensor,
        target: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
        features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut xs = self.combine_inputs(context, target, category, context_dropped, features)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &self.rotary, self.fused)?;
        }
        self.final_norm.apply(&xs, self.fused)
    }

    /// Logits of one level's head for hidden states `[..., d_model]` -> `[..., codebook_size]`.
    pub fn level_logits(&self, hidden: &Tensor, level: usize) -> Result<Tensor> {
        match self.heads.get(level) {
            Some(head) => head.forward(hidden),
            None => bail!(
                "level {level} does not exist (the model has {} levels)",
                self.config.levels
            ),
        }
    }

    /// The input combiner (ARCHITECTURE §3.2): `[B, N, d_model]`,
    /// x[n] = [h_ctx[n] + e_c ; h_tgt[n] + e_c] with h = sum over levels of the embeddings.
    fn combine_inputs(
        &self,
        context: &Tensor,
        target: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
        features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, _, frames) = self.check_inputs(context, target, category, context_dropped)?;
        let mut context_sum = self.sum_level_embeddings(&self.context_embed, context)?;
        let mut target_sum = self.sum_level_embeddings(&self.target_embed, target)?;
        if let (Some(table), Some(shapes)) = (&self.gain_embed, self.config.shapes_per_gain()) {
            context_sum = (context_sum + self.gain_embeddings(table, 0, context, shapes)?)?;
            target_sum = (target_sum + self.gain_embeddings(table, 1, target, shapes)?)?;
        }
        match (&self.context_features_proj, features) {
            (Some(proj), Some(features)) => {
                let dims = self.config.context_feature_dims();
                if features.dims() != [batch, frames, dims] || features.dtype() != DType::F32 {
                    bail!(
                        "context features must be f32 [{batch}, {frames}, {dims}], got {:?} {:?}",
                        features.dtype(),
                        features.dims()
                    );
                }
                // Part of the context channel, so a dropped context drops them too.
                let projected = features
                    .reshape((batch * frames, dims))?
                    .matmul(proj)?
                    .reshape((batch, frames, self.config.channel_dim()))?;
                context_sum = (context_sum + projected)?;
            }
            (None, Some(_)) => bail!("context features given to a model that has none"),
            _ => {}
        }

        // Blend instead of select: 0/1 weights keep one code path, differentiable for both.
        let dropped: Vec<f32> = context_dropped.iter().map(|&d| f32::from(d)).collect();
        let dropped = Tensor::from_vec(dropped, (batch, 1, 1), self.device())?;
        let kept = (1.0 - &dropped)?;
        let null_context = self
            .null_context
            .reshape((1, 1, self.config.channel_dim()))?;
        let context_sum = context_sum
            .broadcast_mul(&kept)?
            .broadcast_add(&null_context.broadcast_mul(&dropped)?)?;

        let category_vec = self
            .category_embed
            .index_select(category, 0)?
            .unsqueeze(1)?;
        let context_channel = context_sum.broadcast_add(&category_vec)?;
        let target_channel = target_sum.broadcast_add(&category_vec)?;
        Tensor::cat(&[context_channel, target_channel], D::Minus1)
    }

    /// Channel `channel`'s gain embedding of each frame's level-0 code -> `[B, N, d_model / 2]`.
    /// The MASK id maps to the table's last row (`codebook_size / shapes == gain_steps`).
    fn gain_embeddings(
        &self,
        table: &Tensor,
        channel: usize,
        tokens: &Tensor,
        shapes: usize,
    ) -> Result<Tensor> {
        let (batch, _, frames) = tokens.dims3()?;
        // Integer division on the host: the ids are few (B x N) and already u32.
        let codes: Vec<u32> = tokens.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
        let gains: Vec<u32> = codes.iter().map(|&c| c / shapes as u32).collect();
        let ids = Tensor::from_vec(gains, batch * frames, tokens.device())?;
        table.get(channel)?.index_select(&ids, 0)?.reshape((
            batch,
            frames,
            self.config.channel_dim(),
        ))
    }

    /// sum_q E_q[tokens[:, q, n]] -> `[B, N, d_model / 2]`.
    fn sum_level_embeddings(&self, table: &Tensor, tokens: &Tensor) -> Result<Tensor> {
        let (batch, levels, frames) = tokens.dims3()?;
        let (q, rows, c) = table.dims3()?;
        let ids = tokens.broadcast_add(&self.level_offsets)?.flatten_all()?;
        table
            .reshape((q * rows, c))?
            .index_select(&ids, 0)?
            .reshape((batch, levels, frames, c))?
            .sum(1)
    }

    /// Shapes, dtypes and id ranges, checked so that bad input is an error, not a panic or
    /// an out-of-range lookup. Returns (B, Q, N).
    fn check_inputs(
        &self,
        context: &Tensor,
        target: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
    ) -> Result<(usize, usize, usize)> {
        let cfg = &self.config;
        for (name, tensor) in [
            ("context", context),
            ("target", target),
            ("category", category),
        ] {
            if tensor.dtype() != DType::U32 {
                bail!("{name} tokens must be u32, got {:?}", tensor.dtype());
            }
        }
        let (batch, levels, frames) = context.dims3()?;
        if target.dims() != context.dims() {
            bail!(
                "target tokens {:?} and context tokens {:?} differ in shape",
                target.dims(),
                context.dims()
            );
        }
        if levels != cfg.levels {
            bail!(
                "tokens have {levels} levels, the model expects {}",
                cfg.levels
            );
        }
        if batch == 0 || frames == 0 {
            bail!("empty batch: {batch} examples of {frames} frames");
        }
        if frames > cfg.max_frames {
            bail!(
                "{frames} frames exceed the model's maximum of {} frames",
                cfg.max_frames
            );
        }
        if category.dims() != [batch] {
            bail!(
                "category must have shape [{batch}], got {:?}",
                category.dims()
            );
        }
        if context_dropped.len() != batch {
            bail!(
                "context_dropped has {} entries for a batch of {batch}",
                context_dropped.len()
            );
        }
        let max_id = |t: &Tensor| -> Result<u32> { t.flatten_all()?.max(0)?.to_scalar::<u32>() };
        if max_id(context)? >= cfg.mask_id() {
            bail!(
                "context token id {} is out of range (codes are 0..{})",
                max_id(context)?,
                cfg.codebook_size
            );
        }
        if max_id(target)? > cfg.mask_id() {
            bail!(
                "target token id {} is out of range (codes 0..{}, MASK = {})",
                max_id(target)?,
                cfg.codebook_size,
                cfg.mask_id()
            );
        }
        if max_id(category)? > cfg.null_category() {
            bail!(
                "category id {} is out of range (0..{}, NULL = {})",
                max_id(category)?,
                cfg.n_categories,
                cfg.null_category()
            );
        }
        Ok((batch, levels, frames))
    }
}
