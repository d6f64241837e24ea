//! Helpers several command groups share: the `--device` flag and a counting progress bar.

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

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
