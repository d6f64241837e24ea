//! `stemgen bench`: speed on this machine of the transformer (model), of whole generations
//! (generate), of a training step (train) and of the EnCodec codec (codec).

use anyhow::Result;
use candle_core::Device;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use stemgen::codec::encodec::Encodec;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Seconds per guided sampler iteration of the transformer, at the sizes of the PyTorch
    /// anchor (`small`: 33.6M, 10 s; `paper`: ~270M, 20 s) or the CPU default (`cpu`), with
    /// seeded random weights.
    Model {
        /// Which sizes to time.
        #[arg(long, value_delimiter = ',', default_value = "small")]
        sizes: Vec<String>,
        #[arg(long, default_value_t = 2)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
    /// End-to-end generation time of a model directory per preset and stem length (metronome
    /// context, `bass`), tokenizer real-time factors, load time and peak memory.
    Generate {
        /// Model directory (config.json, model.safetensors, tokenizer.json).
        #[arg(long, value_name = "DIR", default_value = "assets/default")]
        model: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "draft,normal")]
        presets: Vec<stemgen::sample::Preset>,
        /// Stem lengths in seconds.
        #[arg(long, value_delimiter = ',', default_value = "5,10,20,30")]
        seconds: Vec<f64>,
        /// Runs per preset and length; the run with the median total time is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
    /// Seconds per training step of a model directory's size (seeded random weights and
    /// tokens, `train model`'s step), tokens/s and the share of the matmul rate measured in
    /// the same run.
    Train {
        /// Model directory whose config.json gives the size (the weights are not read).
        #[arg(long, value_name = "DIR", default_value = "assets/default")]
        model: PathBuf,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Timed steps (after one warm-up step); the median is reported.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long)]
        json: bool,
    },
    /// EnCodec encode/decode real-time factor and GFLOP/s against a plain matmul.
    Codec {
        /// Seconds of audio to encode and decode.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Timed repetitions (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Weights to time instead of seeded random ones (speed does not depend on values).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Also time every encoder and decoder stage (best of the repetitions).
        #[arg(long)]
        stages: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The transformer sizes `xtask/anchors/stemgen_torch_bench.py` times, so the two can be
/// compared side by side.
fn anchor_model_size(name: &str) -> Result<(stemgen::model::ModelConfig, usize)> {
    let mut cfg = stemgen::model::ModelConfig::paper();
    cfg.ffn_multiple_of = 1; // the anchor's plain 8/3 width
    match name {
        "paper" => Ok((cfg, 1000)),
        "small" => {
            cfg.d_model = 512;
            cfg.n_layers = 8;
            cfg.n_heads = 8;
            cfg.max_frames = 500;
            Ok((cfg, 500))
        }
        "cpu" => Ok((stemgen::model::ModelConfig::cpu_default(), 500)),
        other => anyhow::bail!("unknown model size '{other}' (use cpu, small or paper)"),
    }
}

/// Runs one `bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Model {
            sizes,
            repeats,
            json,
        } => model(&sizes, repeats, json),
        BenchCommand::Generate {
            model,
            presets,
            seconds,
            repeats,
            json,
        } => generate(&model, &presets, &seconds, repeats, json),
        BenchCommand::Train {
            model,
            batch_size,
            steps,
            json,
        } => train(&model, batch_size, steps, json),
        BenchCommand::Codec {
            seconds,
            repeats,
            weights,
            stages,
            json,
        } => codec(seconds, repeats, weights, stages, json),
    }
}

fn train(model: &Path, batch_size: usize, steps: usize, json: bool) -> Result<()> {
    let config = stemgen::model::read_config(model)?;
    let report = stemgen::train::bench::train_steps(&config, batch_size, steps)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn model(sizes: &[String], repeats: usize, json: bool) -> Result<()> {
    for size in sizes {
        let (cfg, frames) = anchor_model_size(size)?;
        let report = stemgen::bench::model_iteration(size, &cfg, frames, repeats)?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{report}");
        }
    }
    Ok(())
}

fn generate(
    model: &Path,
    presets: &[stemgen::sample::Preset],
    seconds: &[f64],
    repeats: usize,
    json: bool,
) -> Result<()> {
    for &s in seconds {
        anyhow::ensure!(
            s > 0.0 && s <= stemgen::generate::MAX_SECONDS,
            "--seconds {s} must be in (0, {}]",
            stemgen::generate::MAX_SECONDS
        );
    }
    let report = stemgen::bench::generation(model, presets, seconds, repeats)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn codec(
    seconds: f64,
    repeats: usize,
    weights: Option<PathBuf>,
    stages: bool,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 600.0,
        "--seconds must be in (0, 600]"
    );
    let model = weights
        .map(|w| Encodec::load_with_sidecar_config(&w, &Device::Cpu))
        .transpose()?;
    let report = stemgen::bench::codec(seconds, repeats, model, stages)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
