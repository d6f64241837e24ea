//! `stemgen info` and `stemgen export`: a model directory's configuration and parameter count,
//! and a copy of a model directory for shipping.

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use stemgen::model::ModelCheckpoint;

#[derive(Args)]
pub struct InfoArgs {
    /// Directory with config.json and model.safetensors.
    model_dir: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Model directory to copy (config.json, model.safetensors, tokenizer.json, tokenizer/).
    from: PathBuf,
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    /// Keep f32 weights instead of storing f16.
    #[arg(long)]
    full_precision: bool,
}

/// Runs `info`: loads the model (which checks the weights) and prints its configuration.
pub fn info(args: InfoArgs) -> Result<()> {
    let checkpoint = ModelCheckpoint::load(&args.model_dir, &Device::Cpu)?;
    let config = checkpoint.config();
    println!("{}", serde_json::to_string_pretty(config)?);
    println!(
        "parameters: {} ({:.1}M); window {} frames",
        checkpoint.parameter_count(),
        checkpoint.parameter_count() as f64 / 1e6,
        config.max_frames
    );
    Ok(())
}

/// Runs `export`.
pub fn export(args: ExportArgs) -> Result<()> {
    let ExportArgs {
        from,
        out,
        full_precision,
    } = args;
    stemgen::pipeline::export_model_dir(&from, &out, !full_precision)?;
    println!("{} -> {}", from.display(), out.display());
    Ok(())
}
