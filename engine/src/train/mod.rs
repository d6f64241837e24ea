//! Training loops. Each reads only pre-computed data (the token cache for the model), logs
//! CSV, checkpoints periodically and resumes from its last checkpoint.

pub mod adamw;
pub mod bench;
pub mod features;
pub mod model;
pub mod schedule;

pub use model::{
    context_onset_weights, held_out_accuracy, train_model, ContextProbe, HeldOutAccuracy,
    HeldOutOptions, ModelTrainConfig, ProbeScores, TrainReport,
};
pub use schedule::{clip_grad_norm, LrSchedule};
