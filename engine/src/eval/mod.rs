//! Evaluation from classical MIR features: no pretrained embedding model is available here,
//! so every claim about a codec or a generated stem is measured with features whose
//! reference implementations (librosa 0.11, mir_eval 0.8) are public, and checked against
//! them with golden fixtures (`engine/tests/eval.rs`, made by
//! `xtask/fixtures/make_eval_fixtures.py`). Reads audio only; never depends on the model.
//!
//! - [`spectrum`], [`onset`], [`rhythm`], [`chroma`], [`key`]: the features, at librosa's
//!   analysis defaults (22050 Hz, n_fft 2048, hop 512);
//! - [`Analysis`]: all of them for one clip;
//! - [`metrics`]: codec metrics and the coherence of a stem with its context;
//! - [`distribution`]: distances between sets of clips on classical features (labelled as
//!   such: not VGGish FAD, not the paper's MIRDD);
//! - [`suite`], [`report`], [`plot`]: `stemgen eval`, every metric for generated stems,
//!   ablations and real/shuffled anchors on the same held-out clips, written as JSON, Markdown
//!   and PNG charts.

mod analysis;
pub mod chroma;
pub mod compare;
pub mod distribution;
pub mod key;
pub mod metrics;
pub mod onset;
pub mod plot;
pub mod report;
pub mod rhythm;
pub mod spectrum;
pub mod suite;

pub use analysis::{Analysis, ANALYSIS_RATE};
pub use key::{Key, Mode};
pub use metrics::Coherence;
