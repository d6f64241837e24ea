//! Training data: the instrument category set, and synthetic multi-stem songs rendered with
//! General MIDI SoundFonts (see DESIGN §3.1).

pub mod categories;
pub mod synth;

pub use categories::{Category, UnknownCategory};
