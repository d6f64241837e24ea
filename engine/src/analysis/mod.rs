//! The analysis floor: what a musician or a codec engineer reads off audio, computed from
//! samples alone. It sits at the bottom of the engine beside `audio`, below the codec (which
//! takes its STFT and distances from here), the evaluation (every feature and metric) and
//! the model's conditioning features, so none of them imports another for a spectral helper.
//!
//! The features follow librosa 0.11 / mir_eval 0.8 at their analysis defaults (22050 Hz,
//! n_fft 2048, hop 512) and are checked against them with golden fixtures
//! (`engine/tests/eval.rs`, made by `xtask/fixtures/make_eval_fixtures.py`):
//! - [`stft`]: the centred STFT and its inverse, which every spectral computation uses;
//! - [`spectrum`]: power and mel spectrograms on librosa's frame grid, the mel filterbank;
//! - [`onset`], [`rhythm`], [`chroma`], [`key`]: onset strength and peaks, tempo and beats,
//!   tuning-corrected chroma, Krumhansl-Schmuckler key;
//! - [`Analysis`]: all of them for one clip;
//! - [`context_features`]: chroma, bass chroma, onset strength and beat phase on the
//!   tokenizer's frames, what the model is conditioned on; [`harmony`]: chord symbols,
//!   charts and keys given by the producer, as the same features; [`chord_recognition`]:
//!   the chords heard in measured features, beat by beat;
//! - [`distance`]: LSD, mel L1, multi-resolution STFT distance and SI-SDR between a signal
//!   and its reconstruction;
//! - [`sound`]: sound-quality measures of one stem (peaks, hot samples, crest, clicks,
//!   out-of-band energy, flatness);
//! - [`peaks`]: the peaks of one dB frame and a frequency's distance from the semitone grid;
//! - [`pitch`]: the pitch of one held note (the tokenizer's pitch check) and how far a stem
//!   plays from the semitone grid (`tuning_cents`, in the sound measures).

pub mod chord_recognition;
pub mod chroma;
pub mod context_features;
pub mod distance;
mod features;
pub mod harmony;
pub mod key;
pub mod onset;
pub mod peaks;
pub mod pitch;
pub mod rhythm;
pub mod sound;
pub mod spectrum;
pub mod stft;

pub use features::{Analysis, ANALYSIS_RATE};
pub use key::{Key, Mode};
