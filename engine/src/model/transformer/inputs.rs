//! The input combiner (ARCHITECTURE §3.2): token embeddings summed over levels, the gain
//! embedding, the context features and the category, in two channels of `d_model / 2`.
//!
//! The context channel is its own value ([`ContextChannel`]) because the sampler's iterations
//! over a window change only the target tokens: it is made once per window instead of once
//! per iteration. In inference on the CPU the target channel is gathered straight from the
//! embedding tables ([`embed::add_level_sums`]); candle's `index_select` and `sum` over the
//! levels cost about a tenth of a guided iteration.

use candle_core::{bail, DType, Result, Tensor, D};

use super::StemGenModel;
use crate::model::kernels::{embed, storage_f32};

/// One request's context side of the input: `h_ctx + e_c` per frame (the NULL context
/// `+ e_c` where the context is dropped), with the category vectors the target channel adds.
#[derive(Debug, Clone)]
pub struct ContextChannel {
    /// `[B, N, d_model / 2]`.
    channel: Tensor,
    /// `e_c` per example, `[B, 1, d_model / 2]`.
    category: Tensor,
}

impl ContextChannel {
    /// Examples and frames.
    fn dims(&self) -> Result<(usize, usize)> {
        let (batch, frames, _) = self.channel.dims3()?;
        Ok((batch, frames))
    }
}

impl StemGenModel {
    /// The context channel for `context` `[B, Q, N]` u32 codes, `category` `[B]` u32,
    /// `context_dropped` and the context features `[B, N, F]` (see [`Self::forward`]).
    pub fn context_channel(
        &self,
        context: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
        features: Option<&Tensor>,
    ) -> Result<ContextChannel> {
        let (batch, _, frames) = self.check_context(context, category, context_dropped)?;
        let mut context_sum = self.sum_level_embeddings(&self.context_embed, context)?;
        if let (Some(table), Some(shapes)) = (&self.gain_embed, self.config.shapes_per_gain()) {
            context_sum = (context_sum + self.gain_embeddings(table, 0, context, shapes)?)?;
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

        let category = self
            .category_embed
            .index_select(category, 0)?
            .unsqueeze(1)?;
        Ok(ContextChannel {
            channel: context_sum.broadcast_add(&category)?,
            category,
        })
    }

    /// `[B, N, d_model]`: x[n] = [h_ctx[n] + e_c ; h_tgt[n] + e_c] with h the sum over levels
    /// of the embeddings, for `target` `[B, Q, N]` u32 codes or MASK ids.
    pub(super) fn combine_inputs(
        &self,
        context: &ContextChannel,
        target: &Tensor,
    ) -> Result<Tensor> {
        self.check_target(context, target)?;
        if self.fused && target.device().is_cpu() && self.target_embed.dtype() == DType::F32 {
            return self.cpu_combine_inputs(context, target);
        }
        let mut target_sum = self.sum_level_embeddings(&self.target_embed, target)?;
        if let (Some(table), Some(shapes)) = (&self.gain_embed, self.config.shapes_per_gain()) {
            target_sum = (target_sum + self.gain_embeddings(table, 1, target, shapes)?)?;
        }
        let target_channel = target_sum.broadcast_add(&context.category)?;
        Tensor::cat(&[context.channel.clone(), target_channel], D::Minus1)
    }

    /// [`Self::combine_inputs`] on the CPU without candle's gathers: the same sums in the
    /// same order (levels from 0, then the gain, then the category).
    fn cpu_combine_inputs(&self, context: &ContextChannel, target: &Tensor) -> Result<Tensor> {
        let (batch, frames) = context.dims()?;
        let (levels, c) = (self.config.levels, self.config.channel_dim());
        let ids: Vec<u32> = target.flatten_all()?.to_vec1()?;
        let channel = context.channel.contiguous()?;
        let category = context.category.contiguous()?;
        let mut tensors = vec![&channel, &category, &self.target_embed];
        if let Some(gain) = &self.gain_embed {
            tensors.push(gain);
        }
        let held: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = held
            .iter()
            .map(|(storage, layout)| storage_f32(storage, layout, "combine-inputs"))
            .collect::<Result<Vec<_>>>()?;
        let mut xs = vec![0f32; batch * frames * 2 * c];
        let rows = self.config.codebook_size + 1;
        let gain = match (slices.get(3), self.config.shapes_per_gain()) {
            // The target channel's table, `[gain_steps + 1, c]`.
            (Some(table), Some(shapes)) => Some((&table[table.len() / 2..], shapes as u32)),
            _ => None,
        };
        for (b, example) in xs.chunks_exact_mut(frames * 2 * c).enumerate() {
            let ids = &ids[b * levels * frames..][..levels * frames];
            let category = &slices[1][b * c..][..c];
            for (n, x) in example.chunks_exact_mut(2 * c).enumerate() {
                let (context_half, target_half) = x.split_at_mut(c);
                context_half.copy_from_slice(&slices[0][(b * frames + n) * c..][..c]);
                let level_ids = (0..levels).map(|q| q * rows + ids[q * frames + n] as usize);
                embed::add_level_sums(slices[2], c, level_ids, target_half);
                if let Some((table, shapes)) = gain {
                    let row = (ids[n] / shapes) as usize;
                    embed::add_row(&table[row * c..][..c], target_half);
                }
                embed::add_row(category, target_half);
            }
        }
        Tensor::from_vec(xs, (batch, frames, 2 * c), target.device())
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
        if table.device().is_cpu() && table.dtype() == DType::F32 {
            return table
                .contiguous()?
                .apply_op2(&tokens.contiguous()?, embed::EmbedSum);
        }
        let (batch, levels, frames) = tokens.dims3()?;
        let (q, rows, c) = table.dims3()?;
        let ids = tokens.broadcast_add(&self.level_offsets)?.flatten_all()?;
        table
            .reshape((q * rows, c))?
            .index_select(&ids, 0)?
            .reshape((batch, levels, frames, c))?
            .sum(1)
    }

    /// The context side's shapes, dtypes and id ranges, checked so that bad input is an
    /// error, not a panic or an out-of-range lookup. Returns (B, Q, N).
    fn check_context(
        &self,
        context: &Tensor,
        category: &Tensor,
        context_dropped: &[bool],
    ) -> Result<(usize, usize, usize)> {
        let cfg = &self.config;
        for (name, tensor) in [("context", context), ("category", category)] {
            if tensor.dtype() != DType::U32 {
                bail!("{name} tokens must be u32, got {:?}", tensor.dtype());
            }
        }
        let (batch, levels, frames) = context.dims3()?;
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
        if max_id(context)? >= cfg.mask_id() {
            bail!(
                "context token id {} is out of range (codes are 0..{})",
                max_id(context)?,
                cfg.codebook_size
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

    /// The target tokens' shape (the context's), dtype and id range.
    fn check_target(&self, context: &ContextChannel, target: &Tensor) -> Result<()> {
        let cfg = &self.config;
        if target.dtype() != DType::U32 {
            bail!("target tokens must be u32, got {:?}", target.dtype());
        }
        let (batch, frames) = context.dims()?;
        if target.dims() != [batch, cfg.levels, frames] {
            bail!(
                "target tokens {:?} and context tokens {:?} differ in shape",
                target.dims(),
                [batch, cfg.levels, frames]
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
        Ok(())
    }
}

fn max_id(t: &Tensor) -> Result<u32> {
    t.flatten_all()?.max(0)?.to_scalar::<u32>()
}
