//! The model's hyper-parameters, stored as `config.json` next to the weights.

use serde::{Deserialize, Serialize};

use crate::analysis::context_features::{feature_dims, ContextFeature};

/// Hyper-parameters of a [`super::StemGenModel`]; everything needed to rebuild it from weights.
///
/// Token ids per level are `0..codebook_size`; id `codebook_size` is that level's MASK token.
/// Category ids are `0..n_categories`; id `n_categories` is the NULL category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// RVQ levels Q per frame (EnCodec 32 kHz: 4).
    pub levels: usize,
    /// Codes per level (EnCodec 32 kHz: 2048).
    pub codebook_size: usize,
    /// Width of the transformer; each channel (context, target) gets half of it.
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Instrument categories, not counting the NULL category.
    pub n_categories: usize,
    /// Longest sequence (frames) the model accepts; bounds the rotary tables and memory.
    pub max_frames: usize,
    /// The SwiGLU hidden width is `floor(8 * d_model / 3)` rounded up to a multiple of this
    /// (LLaMA's `multiple_of`); 1 gives the plain 8/3 width of the PyTorch anchor.
    pub ffn_multiple_of: usize,
    /// Base of the rotary position embedding frequencies.
    pub rope_theta: f64,
    /// Training only: probability of replacing an example's context by the NULL context.
    pub p_ctx: f64,
    /// Training only: probability of replacing an example's category by the NULL category.
    pub p_cat: f64,
    /// Gain steps folded into level 0 by a magnitude tokenizer (level-0 code = gain index x
    /// shapes + shape), or 0 for tokens without a gain (EnCodec). When set, each channel also
    /// embeds the gain index of its level-0 code (`gain_embed`). A code's own embedding is
    /// learned only from that code's rare appearances, so a model without it must learn the
    /// loudness of each of the 1024 codes separately before it can follow the context's
    /// dynamics; the shared gain rows are seen in every frame.
    #[serde(default)]
    pub gain_steps: usize,
    /// Frame-rate features of the context audio the model is conditioned on (chroma, bass
    /// chroma, onset strength, beat phase; ARCHITECTURE §3.8), in the order their values are
    /// concatenated. Empty (the default, and every model before them): tokens only. They
    /// enter through `context_features_proj`, a linear map added to the context channel,
    /// zero-initialised so that adding them to a trained model changes nothing at first;
    /// they are dropped together with the context for guidance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_features: Vec<ContextFeature>,
}

impl ModelConfig {
    /// The paper's size (d_model 1024, 20 layers, 16 heads, ~250M parameters) on EnCodec
    /// 32 kHz tokens, 20 s windows. The dropout rates are ours: the paper does not give them;
    /// 0.2 each leaves 64% fully conditioned examples and 4% unconditional ones.
    pub fn paper() -> Self {
        ModelConfig {
            levels: 4,
            codebook_size: 2048,
            d_model: 1024,
            n_layers: 20,
            n_heads: 16,
            n_categories: 18,
            max_frames: 1000,
            ffn_multiple_of: 256,
            rope_theta: 10_000.0,
            p_ctx: 0.2,
            p_cat: 0.2,
            gain_steps: 0,
            context_features: Vec::new(),
        }
    }

    /// The size of the shipped default model, trained and run on an ordinary 2-core CPU: 10 s
    /// windows (500 frames at 50 Hz), d_model 256 x 4 layers (~7.4M parameters with 4 x 2048
    /// codes, half of them the level embeddings and output heads; the shipped model has this
    /// trunk with 5 x 1024 codes and a level-0 gain embedding, 5.9M). Chosen by compute: a
    /// CPU-hour of training is ~1-2e14 FLOP, for which a few million non-embedding parameters is about the
    /// compute-optimal size; and 32 guided iterations (`normal`) of it must fit the 5 s budget
    /// for a 10 s stem (`stemgen bench generate` measures it).
    pub fn cpu_default() -> Self {
        ModelConfig {
            levels: 4,
            codebook_size: 2048,
            d_model: 256,
            n_layers: 4,
            n_heads: 4,
            n_categories: 18,
            max_frames: 500,
            ffn_multiple_of: 64,
            rope_theta: 10_000.0,
            p_ctx: 0.2,
            p_cat: 0.2,
            gain_steps: 0,
            context_features: Vec::new(),
        }
    }

    /// A tiny size for tests with seeded random weights: levels and codebook match the test
    /// fixture EnCodec (4 x 256), all 18 categories, windows of `max_frames`.
    pub fn tiny(max_frames: usize) -> Self {
        ModelConfig {
            levels: 4,
            codebook_size: 256,
            d_model: 32,
            n_layers: 2,
            n_heads: 2,
            n_categories: 18,
            max_frames,
            ffn_multiple_of: 8,
            rope_theta: 10_000.0,
            p_ctx: 0.2,
            p_cat: 0.2,
            gain_steps: 0,
            context_features: Vec::new(),
        }
    }

    /// The id that marks a masked (unknown) target token at any level.
    pub fn mask_id(&self) -> u32 {
        self.codebook_size as u32
    }

    /// The category id that means "no category" (guidance dropout).
    pub fn null_category(&self) -> u32 {
        self.n_categories as u32
    }

    /// Values per frame of [`Self::context_features`] (0 without them).
    pub fn context_feature_dims(&self) -> usize {
        feature_dims(&self.context_features)
    }

    /// Level-0 codes per gain step (`codebook_size / gain_steps`), when the tokens have a gain.
    pub fn shapes_per_gain(&self) -> Option<usize> {
        (self.gain_steps > 0).then(|| self.codebook_size / self.gain_steps)
    }

    /// Width of one channel (context or target) before concatenation.
    pub fn channel_dim(&self) -> usize {
        self.d_model / 2
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Hidden width of the SwiGLU MLP.
    pub fn ffn_dim(&self) -> usize {
        let base = 8 * self.d_model / 3;
        let multiple = self.ffn_multiple_of.max(1);
        base.div_ceil(multiple) * multiple
    }

    /// Number of trainable parameters, computed from the config alone (for `stemgen info`
    /// and for sizing a model without building it).
    pub fn parameter_count(&self) -> usize {
        let (d, c, q, v) = (
            self.d_model,
            self.channel_dim(),
            self.levels,
            self.codebook_size,
        );
        let gain = if self.gain_steps > 0 {
            2 * (self.gain_steps + 1) * c
        } else {
            0
        };
        let features = self.context_feature_dims() * c;
        let embeddings = 2 * q * (v + 1) * c + (self.n_categories + 1) * c + c + gain + features;
        let block = 2 * d + 3 * d * d + d * d + 3 * d * self.ffn_dim();
        let output = d + q * v * d;
        embeddings + self.n_layers * block + output
    }

    /// Checks that the numbers describe a buildable model; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let positive = [
            ("levels", self.levels),
            ("codebook_size", self.codebook_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_categories", self.n_categories),
            ("max_frames", self.max_frames),
            ("ffn_multiple_of", self.ffn_multiple_of),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.codebook_size >= u32::MAX as usize || self.n_categories >= u32::MAX as usize {
            problems.push("codebook_size and n_categories must fit u32 ids".into());
        }
        if !self.d_model.is_multiple_of(2) {
            problems.push(format!(
                "d_model {} must be even (two channels of d_model/2)",
                self.d_model
            ));
        }
        if self.n_heads > 0 && !self.d_model.is_multiple_of(self.n_heads) {
            problems.push(format!(
                "d_model {} is not divisible by n_heads {}",
                self.d_model, self.n_heads
            ));
        } else if self.n_heads > 0 && !self.head_dim().is_multiple_of(2) {
            problems.push(format!(
                "head dimension {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            problems.push(format!(
                "rope_theta {} must be a finite number above 1",
                self.rope_theta
            ));
        }
        if self.gain_steps > 0 && !self.codebook_size.is_multiple_of(self.gain_steps) {
            problems.push(format!(
                "gain_steps {} does not divide codebook_size {}",
                self.gain_steps, self.codebook_size
            ));
        }
        for (i, f) in self.context_features.iter().enumerate() {
            if self.context_features[..i].contains(f) {
                problems.push(format!("context feature {f:?} is listed twice"));
            }
        }
        for (name, p) in [("p_ctx", self.p_ctx), ("p_cat", self.p_cat)] {
            if !(0.0..=1.0).contains(&p) {
                problems.push(format!("{name} {p} must be a probability in [0, 1]"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
