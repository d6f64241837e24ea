//! Training data: the instrument category set, and synthetic multi-stem songs rendered with
//! General MIDI SoundFonts (see ARCHITECTURE §3.1).

pub mod cache;
pub mod categories;
pub mod datasets;
pub mod midi;
pub mod pair_features;
pub mod pairs;
pub mod synth;

pub use categories::{Category, UnknownCategory};
