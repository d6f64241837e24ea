//! Helpers several command groups share: the `--device` flag, the sampler flags of `generate`
//! and `eval`, and a counting progress bar.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use stemgen::sample::SamplerOverrides;

/// `cpu`, `cuda` or `metal` (GPU 0). candle answers a GPU request in a build without that
/// feature with an error, which is passed on with the flag to rebuild with.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).context(
            "--device cuda: no usable CUDA GPU (build with `--features cuda` on a machine with the CUDA toolkit)",
        ),
        "metal" => Device::new_metal(0)
            .context("--device metal: no usable Metal GPU (build with `--features metal` on macOS)"),
        other => anyhow::bail!("--device '{other}' is not one of cpu, cuda, metal"),
    }
}

pub fn counting_bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {eta} left")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// The sampler settings `generate` and `eval` let a user change on top of the preset.
#[derive(Args, Debug, Clone)]
pub struct SamplerFlags {
    /// Iterations per token level, coarse to fine, instead of the preset's (e.g. 12,8,4,4,4;
    /// one number per level of the model).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    level_steps: Option<Vec<usize>>,
    /// Sampling temperature (0 = greedy; default: the preset's, 1).
    #[arg(long)]
    temperature: Option<f64>,
    /// Draw only from the most probable tokens whose probability sums to P (1 = all).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Draw only tokens that each guidance source's own prediction gives at least A times
    /// the probability of its likeliest token (0 = off; default: the preset's).
    #[arg(long, value_name = "A")]
    plausibility: Option<f64>,
    /// Weight of a token's probability when choosing which frames to keep each iteration
    /// (w_c; the rest of the rank is position and noise; default: the preset's).
    #[arg(long, value_name = "W")]
    w_confidence: Option<f64>,
    /// Guide only the first N levels, coarsest first; finer levels draw from the context
    /// and instrument together, a third of the work (default: the preset's).
    #[arg(long, value_name = "N")]
    guided_levels: Option<usize>,
    /// Harmony prior strength: favour codes whose spectrum puts energy on the pitch classes
    /// of the harmony (measured, or given by --chords/--key); 0 = off (default: the preset's).
    #[arg(long, value_name = "S")]
    harmony_prior: Option<f64>,
    /// Draw each level-0 attack of a pitched instrument together with its note (no loud
    /// frame whose next frames fall away at once); false = independent draws, as in the
    /// paper and every preset (default: false).
    #[arg(long, value_name = "BOOL")]
    hold_notes: Option<bool>,
}

impl SamplerFlags {
    pub fn overrides(&self) -> SamplerOverrides {
        SamplerOverrides {
            steps: self.level_steps.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            plausibility: self.plausibility,
            w_confidence: self.w_confidence,
            guided_levels: self.guided_levels,
            harmony_prior: self.harmony_prior,
            hold_notes: self.hold_notes,
        }
    }
}
