//! StemGen engine: the data flow from audio to tokens, through the model and sampler, and
//! back to audio; plus data preparation, training and evaluation.

pub mod analysis;
pub mod audio;
pub mod bench;
pub mod codec;
pub mod data;
pub mod eval;
pub mod generate;
pub mod model;
pub mod pipeline;
pub mod sample;
pub mod train;
