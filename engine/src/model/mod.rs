//! The StemGen model (ARCHITECTURE §3.2) and its training objective (§3.3).
//!
//! - [`ModelConfig`]: hyper-parameters, stored as `config.json`.
//! - [`StemGenModel`]: the network, built from a `candle_nn::VarBuilder`;
//!   `forward(context, target, category, context_dropped) -> [B, Q, N, codebook_size]`,
//!   or [`StemGenModel::hidden`] once plus [`StemGenModel::level_logits`] per level.
//! - [`ModelCheckpoint`]: the model with its variables; seeded init, save and checked load
//!   of a model directory (`config.json` + `model.safetensors`).
//! - [`training_objective`]: masking draw + masked cross-entropy for the training loop.
//!
//! Conventions: token ids are u32; per level, id `codebook_size` is MASK; category id
//! `n_categories` is NULL; a dropped context is a per-example flag that swaps the summed
//! context embeddings for one learned NULL vector.

mod checkpoint;
mod config;
pub mod kernels;
mod objective;
mod transformer;

use std::path::PathBuf;

pub use checkpoint::{read_config, ModelCheckpoint, CONFIG_FILE, WEIGHTS_FILE};
pub use config::ModelConfig;
pub use objective::{
    draw_mask, masked_inputs, masked_loss, objective_with_masks, training_objective,
    weighted_objective_with_masks, ExampleMask, MaskedInputs, ObjectiveOutput,
};
pub use transformer::{ContextChannel, StemGenModel, CONTEXT_FEATURES_PROJ};

/// A problem with a model directory or config, phrased for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
