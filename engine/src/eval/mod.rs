//! Evaluation from classical MIR features: no pretrained embedding model is available here,
//! so every claim about a codec or a generated stem is measured with features whose
//! reference implementations (librosa 0.11, mir_eval 0.8) are public, and checked against
//! them with golden fixtures (`engine/tests/eval.rs`). The features themselves live in
//! [`crate::analysis`]; this module turns them into verdicts.
//!
//! - [`metrics`]: the coherence of a stem with its context;
//! - [`sound`]: sound quality (peaks, clicks, out-of-band energy, ...) per instrument category;
//! - [`distribution`]: distances between sets of clips on classical features (labelled as
//!   such: not VGGish FAD, not the paper's MIRDD);
//! - [`suite`], [`report`], [`plot`]: `stemgen eval`, every metric for generated stems,
//!   ablations and real/shuffled anchors on the same held-out clips, written as JSON, Markdown
//!   and SVG charts.

pub mod compare;
pub mod distribution;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod sound;
pub mod suite;

pub use metrics::Coherence;
