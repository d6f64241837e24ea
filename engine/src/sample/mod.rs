//! The guided iterative sampler (ARCHITECTURE §3.4-3.5) with editing and long-form generation
//! (§3.7).
//!
//! - [`SamplerSettings`]: steps per level ([`Preset`]s `paper`, `normal`, `draft`),
//!   temperature, causal-bias weights, guidance strengths, seed.
//! - [`sample`]: context tokens + category -> target tokens, level by level, coarse to fine;
//!   optionally regenerating only a frame region of a previous take ([`Edit`]) and covering
//!   stems longer than one model window with overlapping windows.
//! - [`guided_log_probs`] / [`log_softmax`]: the multi-source classifier-free guidance
//!   combination (paper Eq. 3) as a pure function on slices.
//!
//! Choices the paper leaves open (§3.6), made here:
//! - Confidence p(x_n) in the ranking is the probability of the sampled token under the
//!   *guided* distribution, renormalised, at temperature 1. Guided, because that is the
//!   distribution the token was drawn from; temperature 1, so that the ranking stays
//!   informative at low temperatures (at tau -> 0 every sampled token has probability 1).
//! - The cosine schedule counts from the number of frames masked when the level starts
//!   (fewer than N when editing), and a level never runs more iterations than it has masked
//!   frames: S_eff = min(S, M0), so each iteration unmasks at least one frame and the last
//!   one unmasks the rest.
//! - Position n in the causal term is relative to the current window (n / N with N the
//!   window length).
//! - Guidance rows whose weight is exactly 0 are not computed (lambda_context = 1 and
//!   lambda_category = 0 runs one forward row instead of three).
//! - Guidance may stop after the first [`SamplerSettings::guided_levels`] levels: finer
//!   levels then draw from the one row p(Y | context, category), a third of the forward's
//!   rows. The model was trained with both conditions present in most examples, so that row
//!   is its best-trained prediction.

pub mod attacks;
mod decode;
mod guidance;
pub mod harmony_prior;

use std::fmt;
use std::str::FromStr;

pub use decode::{sample, Edit, SampleRequest, StepReport};
pub use guidance::{guided_log_probs, log_softmax, GuidanceWeights};

/// Why sampling stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The cancel token was set; checked before every model iteration.
    #[error("generation cancelled")]
    Cancelled,
    /// Inputs or settings that cannot be sampled; the message says what is wrong.
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Named step schedules. Values are per RVQ level, coarse to fine, for Q = 4 levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The paper's schedule: 128 / 64 / 32 / 32 iterations (256 guided forwards).
    Paper,
    /// 12 / 8 / 4 / 4 (28 forwards, about 9x fewer than `paper`): the default for
    /// interactive use. 16 iterations at level 0 measured no better on 96 clips (coherence
    /// -0.053, 90% -0.139 .. +0.023, and -0.009, -0.076 .. +0.055 on two seeds, against 12);
    /// halving every level (`draft`) cost -0.069 on one seed (model card, Speed). With run
    /// 4's weights, 24 / 4 / 2 / 2 (fewer level-0 frames drawn at once, which removes most
    /// of its piano's attack-without-note bursts) cost -0.100 and -0.125 (model card, Sound).
    Normal,
    /// 8 / 4 / 2 / 2 (16 forwards): quick previews.
    Draft,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Paper, Preset::Normal, Preset::Draft];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Normal => "normal",
            Preset::Draft => "draft",
        }
    }

    /// The schedule for four levels.
    fn table(self) -> [usize; 4] {
        match self {
            Preset::Paper => [128, 64, 32, 32],
            Preset::Normal => [12, 8, 4, 4],
            Preset::Draft => [8, 4, 2, 2],
        }
    }

    /// Steps for a model with `levels` levels: the four-level table, truncated for fewer
    /// levels, with its last (finest) value repeated for more.
    pub fn steps(self, levels: usize) -> Vec<usize> {
        let table = self.table();
        (0..levels).map(|q| table[q.min(table.len() - 1)]).collect()
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = SampleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                SampleError::InvalidInput(format!(
                    "unknown steps preset '{s}' (valid: {})",
                    names.join(", ")
                ))
            })
    }
}

/// The plausibility constraint of the `normal` and `draft` presets. With 12-16 iterations at
/// level 0, 30-40 frames are drawn at once, independently, from the guided distribution's
/// full tail: a loud code the model barely considers becomes an isolated click. 0.02 removes
/// the clicks (1.7 -> 0.3-0.4 per second on 96 clips, real stems 0.4-0.6) while the stems
/// keep sounding (active share 0.45 -> 0.65, real 0.8); alpha 0.1 and w_c = 3 remove them
/// too but leave a quarter to a third of the stems silent (model card, Sound).
pub const DEFAULT_PLAUSIBILITY: f64 = 0.02;

/// Levels the `normal` and `draft` presets guide (coarsest first); finer levels draw from
/// p(Y | context, category), one forward row instead of three: 0.77x the time of a 10 s stem
/// at `normal`. On 96 clips against guidance on all five levels, coherence -0.013
/// (90% -0.058 .. +0.026) and +0.019 (-0.025 .. +0.061) on two seeds, one more silent clip on
/// each; guiding level 0 alone (0.70x) left 4-6 more clips silent, mostly chromatic
/// percussion and ethnic instruments, whose sound the category's guidance keeps (model card,
/// Speed).
pub const DEFAULT_GUIDED_LEVELS: usize = 2;

/// Strength of the harmony prior ([`harmony_prior`], level 1 only) in the normal and draft
/// presets. At 8 on 96 clips against no prior (seeds 0 and 1): normalised coherence +0.100
/// (90% +0.032 .. +0.164) and +0.201 (+0.143 .. +0.271), key score +0.04 and +0.23, in-key
/// share +0.03 and +0.04, beat F1 unchanged (+0.001, +0.006), tempo agreement 0.04 lower on
/// both (intervals -0.115 .. +0.031 and -0.094 .. +0.010). 16 draws no more in key than 8
/// on 16 clips: the plausibility cut leaves level 1 few codes to choose from.
pub const DEFAULT_HARMONY_PRIOR: f64 = 8.0;

/// Everything that decides what the sampler draws, apart from the inputs (also stored with
/// each take's metadata).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplerSettings {
    /// Iterations per level, coarse to fine; one entry per model level, each at least 1.
    pub steps: Vec<usize>,
    /// Sampling temperature tau applied to the guided log-probabilities; 0 = greedy (argmax).
    pub temperature: f64,
    /// Nucleus of the guided distribution (at temperature 1) that tokens are drawn from: the
    /// most probable tokens whose mass reaches `top_p`; 1 = every token. Strong guidance
    /// (an unconditional weight of 1 - lambda_a - lambda_c) lifts codes the model barely
    /// considers; cutting the tail keeps them out (`stemgen eval` measures the effect).
    pub top_p: f64,
    /// Adaptive plausibility constraint alpha: a token is drawn only if each conditional
    /// guidance row gives it at least alpha times its most probable token's probability, so
    /// guidance re-weights what the model believes in instead of lifting codes every row finds
    /// unlikely (`guidance::keep_plausible`); 0 = off.
    pub plausibility: f64,
    /// w_c: weight of the sampled token's (guided) probability in the ranking.
    pub w_confidence: f64,
    /// w_s: weight of the causal bias (1 - n/N): earlier frames are unmasked first.
    pub w_position: f64,
    /// w_r: weight of the U(0,1) noise in the ranking.
    pub w_random: f64,
    /// lambda_a: guidance strength of the context (1 = no extra guidance).
    pub lambda_context: f64,
    /// lambda_c: guidance strength of the category (1 = no extra guidance).
    pub lambda_category: f64,
    /// Levels, coarsest first, decoded with the guidance of Eq. 3; the finer ones draw from
    /// p(Y | context, category) alone (one forward row instead of three), whatever the
    /// guidance strengths. The model's level count = guidance everywhere, as in the paper.
    pub guided_levels: usize,
    /// Strength of the harmony prior ([`harmony_prior`]): nats added to a level-1 code's
    /// guided log-probability per dB its codeword puts on the harmony's pitch classes
    /// (weighted by the context features' chroma); 0 = off, the paper's sampler. Only for
    /// tokenizers of log-magnitude spectra and models with chroma features.
    pub harmony_prior: f64,
    /// Level-0 attacks of instruments with sustained notes are drawn together with their
    /// notes ([`attacks`]); false = the paper's independent draws. Off in every preset: it
    /// removes level 0's frame-to-frame loudness flicker but not the piano's clicks, and cost
    /// coherence on one of two seeds ([`attacks`] has the numbers).
    pub hold_notes: bool,
    pub seed: u64,
}

/// Settings a user may change on top of a preset (`generate` and `eval` flags); `None`
/// keeps the preset's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplerOverrides {
    /// Iterations per level instead of the preset's (one entry per model level).
    pub steps: Option<Vec<usize>>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub plausibility: Option<f64>,
    pub w_confidence: Option<f64>,
    pub guided_levels: Option<usize>,
    pub harmony_prior: Option<f64>,
    pub hold_notes: Option<bool>,
}

impl SamplerOverrides {
    /// Writes every value that is set into `settings`.
    pub fn apply(&self, settings: &mut SamplerSettings) {
        let SamplerOverrides {
            steps,
            temperature,
            top_p,
            plausibility,
            w_confidence,
            guided_levels,
            harmony_prior,
            hold_notes,
        } = self.clone();
        settings.steps = steps.unwrap_or_else(|| settings.steps.clone());
        settings.temperature = temperature.unwrap_or(settings.temperature);
        settings.top_p = top_p.unwrap_or(settings.top_p);
        settings.plausibility = plausibility.unwrap_or(settings.plausibility);
        settings.w_confidence = w_confidence.unwrap_or(settings.w_confidence);
        settings.guided_levels = guided_levels.unwrap_or(settings.guided_levels);
        settings.harmony_prior = harmony_prior.unwrap_or(settings.harmony_prior);
        settings.hold_notes = hold_notes.unwrap_or(settings.hold_notes);
    }
}

impl SamplerSettings {
    /// A preset's steps for `levels` levels with the paper's other settings: tau = 1, top-p
    /// 1 (off), w_c = 0.1, w_s = 0.1, w_r = 1.0, lambda_context = lambda_category = 3, seed 0;
    /// and [`DEFAULT_PLAUSIBILITY`], [`DEFAULT_GUIDED_LEVELS`] and [`DEFAULT_HARMONY_PRIOR`]
    /// except for `paper`, which keeps the paper's sampler (no plausibility cut, every level
    /// guided, no harmony prior).
    pub fn preset(preset: Preset, levels: usize) -> Self {
        SamplerSettings {
            steps: preset.steps(levels),
            temperature: 1.0,
            top_p: 1.0,
            plausibility: match preset {
                Preset::Paper => 0.0,
                Preset::Normal | Preset::Draft => DEFAULT_PLAUSIBILITY,
            },
            w_confidence: 0.1,
            w_position: 0.1,
            w_random: 1.0,
            lambda_context: 3.0,
            lambda_category: 3.0,
            guided_levels: match preset {
                Preset::Paper => levels,
                Preset::Normal | Preset::Draft => DEFAULT_GUIDED_LEVELS.min(levels),
            },
            harmony_prior: match preset {
                Preset::Paper => 0.0,
                Preset::Normal | Preset::Draft => DEFAULT_HARMONY_PRIOR,
            },
            hold_notes: false,
            seed: 0,
        }
    }

    /// The paper's settings for four levels (128 / 64 / 32 / 32 steps).
    pub fn paper() -> Self {
        Self::preset(Preset::Paper, 4)
    }

    /// [`Preset::Normal`] steps for four levels, paper settings otherwise.
    pub fn normal() -> Self {
        Self::preset(Preset::Normal, 4)
    }

    /// [`Preset::Draft`] steps for four levels, paper settings otherwise.
    pub fn draft() -> Self {
        Self::preset(Preset::Draft, 4)
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Total model iterations for one window (each is one batched guided forward).
    pub fn total_steps(&self) -> usize {
        self.steps.iter().sum()
    }

    /// Checks the settings against a model with `levels` levels.
    pub fn validate(&self, levels: usize) -> Result<(), SampleError> {
        let bad = |msg: String| Err(SampleError::InvalidInput(msg));
        if self.steps.len() != levels {
            return bad(format!(
                "steps has {} entries but the model has {levels} levels (one entry per level)",
                self.steps.len()
            ));
        }
        if let Some(q) = self.steps.iter().position(|&s| s == 0) {
            return bad(format!(
                "steps for level {q} is 0; each level needs at least 1"
            ));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature {} must be a finite number >= 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if self.guided_levels > levels {
            return bad(format!(
                "guided_levels {} exceeds the model's {levels} levels",
                self.guided_levels
            ));
        }
        if !(0.0..1.0).contains(&self.plausibility) {
            return bad(format!(
                "plausibility {} must be in [0, 1)",
                self.plausibility
            ));
        }
        if !(self.harmony_prior.is_finite() && self.harmony_prior >= 0.0) {
            return bad(format!(
                "harmony_prior {} must be a finite number >= 0",
                self.harmony_prior
            ));
        }
        for (name, value) in [
            ("w_confidence", self.w_confidence),
            ("w_position", self.w_position),
            ("w_random", self.w_random),
            ("lambda_context", self.lambda_context),
            ("lambda_category", self.lambda_category),
        ] {
            if !value.is_finite() {
                return bad(format!("{name} {value} must be a finite number"));
            }
        }
        Ok(())
    }
}
