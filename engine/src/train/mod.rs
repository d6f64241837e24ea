//! Training loops. Each reads only pre-computed data (the token cache for the model), logs
//! CSV, checkpoints periodically and resumes from its last checkpoint.

pub mod model;
pub mod schedule;

pub use model::{train_model, ModelTrainConfig, TrainReport};
pub use schedule::{clip_grad_norm, LrSchedule};
