//! The StemGen network: input combiner (ARCHITECTURE §3.2), bidirectional LLaMA-style blocks and
//! one output head per RVQ level.
//!
//! By default every op here has a backward in candle 0.11: the linear layers, embedding sums,
//! RMSNorm, attention (rotary positions inside), SwiGLU and rotary positions are our fused CPU
//! ops with a backward ([`super::kernels`]; candle's generic ops or primitives on other
//! devices), because the fused candle ops silently drop gradients and candle's generic backward
//! zero-fills and adds a gradient for every node (ARCHITECTURE §4.1).
//! [`StemGenModel::for_inference`] gives a copy without gradients: on the CPU its blocks run
//! through [`forward::hidden`] on plain slices of the same weights, elsewhere through candle's
//! fused `rms_norm` and `rope`; the same function up to float rounding, faster.

use std::sync::{Arc, Mutex};

use candle_core::{bail, DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::kernels::attention::QkvAttention;
use super::kernels::forward::{self, BlockWeights, Workspace};
use super::kernels::linear::LinearOp;
use super::kernels::{rms_norm, silu_gate::SiluGate, storage_f32};
use super::ModelConfig;

mod inputs;
pub use inputs::ContextChannel;

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
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return xs.contiguous()?.apply_op2(&self.weight, LinearOp);
        }
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

    /// Rotates `xs` `[B, H, N, head_dim]` by position on devices other than the CPU (whose
    /// attention rotates inside [`QkvAttention`]): candle's `rope` kernel (the same half-split
    /// layout, no backward) when `fused`, else primitives, which have one.
    fn apply(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            return candle_nn::rotary_emb::rope(&xs.contiguous()?, &self.cos, &self.sin);
        }
        let frames = xs.dim(2)?;
        let cos = self.cos.narrow(0, 0, frames)?;
        let sin = self.sin.narrow(0, 0, frames)?;
        let half = xs.dim(D::Minus1)? / 2;
        let x1 = xs.narrow(D::Minus1, 0, half)?;
        let x2 = xs.narrow(D::Minus1, half, half)?;
        let rotated1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let rotated2 = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
        Tensor::cat(&[rotated1, rotated2], D::Minus1)
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
        let qkv = self.qkv.forward(xs)?; // [B, N, 3d]
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            let op = QkvAttention {
                n_heads: self.n_heads,
            };
            let (cos, sin) = (&rotary.cos, &rotary.sin);
            let mixed = if fused {
                qkv.apply_op3_no_bwd(cos, sin, &op)?
            } else {
                qkv.apply_op3(cos, sin, op)?
            };
            return self.out.forward(&mixed);
        }
        let qkv = qkv.reshape((batch, frames, 3, self.n_heads, self.head_dim))?;
        let heads = |i: usize| -> Result<Tensor> {
            qkv.i((.., .., i))?.transpose(1, 2)?.contiguous() // [B, H, N, hd]
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
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
    /// Inference mode: fused RMSNorm / softmax / rotary kernels without backward, and on the
    /// CPU the block stack of [`forward::hidden`].
    fused: bool,
    /// The CPU inference forward's activations, kept between the sampler's iterations.
    workspace: Arc<Mutex<Workspace>>,
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
            workspace: Arc::default(),
        })
    }

    /// A copy for inference (sampling): the same weights (shared, not copied), run through
    /// [`forward::hidden`] on the CPU and candle's fused RMSNorm, softmax and rotary kernels
    /// elsewhere. These have no backward, so the copy must not be trained; its outputs equal
    /// this model's up to float rounding.
    pub fn for_inference(&self) -> StemGenModel {
        StemGenModel {
            fused: true,
            workspace: Arc::default(),
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
        let channel = self.context_channel(context, category, context_dropped, features)?;
        self.hidden_with(&channel, target)
    }

    /// [`Self::hidden`] for a context channel made once ([`Self::context_channel`]): the
    /// sampler's iterations over a window change only the target tokens.
    pub fn hidden_with(&self, channel: &ContextChannel, target: &Tensor) -> Result<Tensor> {
        let mut xs = self.combine_inputs(channel, target)?;
        if self.fused && xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return self.cpu_hidden(&xs);
        }
        for block in &self.blocks {
            xs = block.forward(&xs, &self.rotary, self.fused)?;
        }
        self.final_norm.apply(&xs, self.fused)
    }

    /// [`Self::hidden`]'s blocks and final norm on the CPU in inference mode: the same values
    /// through [`forward::hidden`] on the weights' own storage.
    fn cpu_hidden(&self, xs: &Tensor) -> Result<Tensor> {
        let (rows, frames, d_model) = xs.dims3()?;
        let xs = xs.contiguous()?;
        let mut tensors = vec![
            &xs,
            &self.final_norm.weight,
            &self.rotary.cos,
            &self.rotary.sin,
        ];
        for block in &self.blocks {
            tensors.extend([
                &block.attn_norm.weight,
                &block.attn.qkv.weight,
                &block.attn.out.weight,
                &block.mlp_norm.weight,
                &block.mlp.gate_up.weight,
                &block.mlp.down.weight,
            ]);
        }
        let held: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = held
            .iter()
            .map(|(storage, layout)| storage_f32(storage, layout, "cpu-forward"))
            .collect::<Result<Vec<_>>>()?;
        let blocks: Vec<BlockWeights> = slices[4..]
            .chunks_exact(6)
            .map(|w| BlockWeights {
                attn_norm: w[0],
                qkv: w[1],
                out: w[2],
                mlp_norm: w[3],
                gate_up: w[4],
                down: w[5],
            })
            .collect();
        let dims = forward::Dims {
            rows,
            frames,
            d_model,
            n_heads: self.config.n_heads,
            ffn: self.config.ffn_dim(),
        };
        let run = |workspace: &mut Workspace| {
            forward::hidden(
                workspace,
                dims,
                slices[0],
                &blocks,
                slices[1],
                (slices[2], slices[3]),
                RMS_EPS,
                candle_core::utils::get_num_threads(),
            )
        };
        // A model shared by two threads at once: the second gets a workspace of its own.
        let hidden = match self.workspace.try_lock() {
            Ok(mut workspace) => run(&mut workspace),
            Err(_) => run(&mut Workspace::default()),
        };
        Tensor::from_vec(hidden, (rows, frames, d_model), xs.device())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelCheckpoint;

    /// The CPU inference forward on plain slices gives exactly what candle's fused ops give
    /// block by block, and its target gather exactly what the gather-and-sum ops give: the
    /// reason a seed's stem did not change when it replaced them.
    #[test]
    fn cpu_inference_equals_the_candle_ops_bit_for_bit() {
        let config = ModelConfig {
            gain_steps: 16,
            ..ModelConfig::tiny(40)
        };
        let device = Device::Cpu;
        let trained = ModelCheckpoint::random(&config, &device, 5).unwrap().model;
        let model = trained.for_inference();
        let (batch, frames) = (3, 37);
        let ids = |seed: usize, top: usize| -> Vec<u32> {
            (0..batch * config.levels * frames)
                .map(|i| ((i * 7919 + seed * 104_729) % top) as u32)
                .collect()
        };
        let shape = (batch, config.levels, frames);
        let context = Tensor::from_vec(ids(1, config.codebook_size), shape, &device).unwrap();
        let target = Tensor::from_vec(ids(2, config.codebook_size + 1), shape, &device).unwrap();
        let category = Tensor::new(&[3u32, config.null_category(), 7], &device).unwrap();
        let channel = model
            .context_channel(&context, &category, &[false, false, true], None)
            .unwrap();
        let values = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };

        let gathered = model.combine_inputs(&channel, &target).unwrap();
        let through_ops = trained.combine_inputs(&channel, &target).unwrap();
        assert_eq!(values(gathered.clone()), values(through_ops));

        let mut blockwise = gathered.clone();
        for block in &model.blocks {
            blockwise = block.forward(&blockwise, &model.rotary, true).unwrap();
        }
        let blockwise = model.final_norm.apply(&blockwise, true).unwrap();
        let fast = model.cpu_hidden(&gathered).unwrap();
        assert_eq!(values(fast), values(blockwise));
    }
}
