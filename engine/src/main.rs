//! `stemgen`: the command-line face of the engine.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use stemgen::audio::{self, WavFormat};
use stemgen::codec::encodec::Encodec;
use stemgen::codec::{Tokenizer, Tokens};
use stemgen::model::ModelCheckpoint;

#[derive(Parser)]
#[command(
    name = "stemgen",
    version,
    about = "Generate instrument stems that fit the music you already have"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn audio into tokens and back with a tokenizer.
    #[command(subcommand)]
    Codec(CodecCommand),
    /// Measure speed on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a model directory's configuration and parameter count (checks the weights).
    Info {
        /// Directory with config.json and model.safetensors.
        model_dir: PathBuf,
    },
}

#[derive(Args)]
struct CodecWeights {
    /// EnCodec weights (safetensors, Hugging Face names, e.g. facebook/encodec_32khz's
    /// model.safetensors). A config.json beside them is used if present.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Number of RVQ levels to use (default: all).
    #[arg(long)]
    levels: Option<usize>,
}

#[derive(Subcommand)]
enum CodecCommand {
    /// Audio file (WAV/FLAC/OGG/MP3, any rate and channel count) -> token file.
    Encode {
        input: PathBuf,
        #[arg(short, long, value_name = "TOKENS")]
        output: PathBuf,
        #[command(flatten)]
        codec: CodecWeights,
    },
    /// Token file -> WAV at the codec's rate (or --rate).
    Decode {
        input: PathBuf,
        #[arg(short, long, value_name = "WAV")]
        output: PathBuf,
        #[command(flatten)]
        codec: CodecWeights,
        /// Output sample rate (default: the codec's).
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Encode and decode an audio file; the WAV comes back at the input's rate and channel
    /// count, so it can be compared with the original directly.
    Roundtrip {
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        codec: CodecWeights,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Seconds per guided sampler iteration of the transformer, at the sizes of the PyTorch
    /// anchor (`small`: 31.5M, 10 s; `paper`: ~250M, 20 s) with seeded random weights.
    Model {
        /// Which sizes to time.
        #[arg(long, value_delimiter = ',', default_value = "small")]
        sizes: Vec<String>,
        #[arg(long, default_value_t = 2)]
        repeats: usize,
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
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The transformer sizes `../shared/anchors/stemgen_torch_bench.py` times, so the two can be
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
        other => anyhow::bail!("unknown model size '{other}' (use small or paper)"),
    }
}

fn load_codec(c: &CodecWeights) -> Result<Encodec> {
    let mut model = Encodec::load_with_sidecar_config(&c.weights, &Device::Cpu)?;
    if let Some(levels) = c.levels {
        model.set_levels(levels)?;
    }
    Ok(model)
}

/// A progress bar that only appears for work split into more than one piece.
fn progress_bar(what: &'static str) -> impl FnMut(usize, usize) {
    let mut bar: Option<ProgressBar> = None;
    move |done, total| {
        if total < 2 {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} windows, {eta} left")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(what);
            b
        });
        b.set_position(done as u64);
        if done == total {
            b.finish_and_clear();
        }
    }
}

fn encode_file(model: &Encodec, input: &Path) -> Result<(audio::Audio, Tokens)> {
    let audio = audio::read_audio(input)?;
    let tokens = model
        .encode(&audio, &mut progress_bar("encoding"))
        .with_context(|| format!("{}: cannot encode", input.display()))?;
    Ok((audio, tokens))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Codec(CodecCommand::Encode {
            input,
            output,
            codec,
        }) => {
            let model = load_codec(&codec)?;
            let (_, tokens) = encode_file(&model, &input)?;
            tokens.save(&output, &model)?;
            eprintln!(
                "{}: {} levels x {} frames ({:.2} s at {} Hz)",
                output.display(),
                tokens.levels,
                tokens.frames,
                tokens.frames as f64 / model.frame_rate(),
                model.frame_rate()
            );
        }
        Command::Codec(CodecCommand::Decode {
            input,
            output,
            codec,
            rate,
        }) => {
            let model = load_codec(&codec)?;
            let tokens = Tokens::load(&input)?;
            let mut audio = model
                .decode(&tokens, &mut progress_bar("decoding"))
                .with_context(|| format!("{}: cannot decode", input.display()))?;
            if let Some(rate) = rate {
                audio = audio.resampled(rate)?;
            }
            audio::write_wav(&output, &audio, WavFormat::Float32)?;
        }
        Command::Codec(CodecCommand::Roundtrip {
            input,
            output,
            codec,
        }) => {
            let model = load_codec(&codec)?;
            let (original, tokens) = encode_file(&model, &input)?;
            let decoded = model.decode(&tokens, &mut progress_bar("decoding"))?;
            let mut back = decoded
                .resampled(original.sample_rate)?
                .with_channels(original.num_channels());
            for ch in &mut back.channels {
                ch.truncate(original.num_frames());
            }
            audio::write_wav(&output, &back, WavFormat::Float32)?;
            eprintln!(
                "{} -> {} ({} levels x {} frames)",
                input.display(),
                output.display(),
                tokens.levels,
                tokens.frames
            );
        }
        Command::Info { model_dir } => {
            let checkpoint = ModelCheckpoint::load(&model_dir, &Device::Cpu)?;
            let config = checkpoint.config();
            println!("{}", serde_json::to_string_pretty(config)?);
            println!(
                "parameters: {} ({:.1}M); window {} frames",
                checkpoint.parameter_count(),
                checkpoint.parameter_count() as f64 / 1e6,
                config.max_frames
            );
        }
        Command::Bench(BenchCommand::Model {
            sizes,
            repeats,
            json,
        }) => {
            for size in sizes {
                let (cfg, frames) = anchor_model_size(&size)?;
                let report = stemgen::bench::model_iteration(&size, &cfg, frames, repeats)?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{report}");
                }
            }
        }
        Command::Bench(BenchCommand::Codec {
            seconds,
            repeats,
            weights,
            json,
        }) => {
            anyhow::ensure!(
                seconds > 0.0 && seconds <= 600.0,
                "--seconds must be in (0, 600]"
            );
            let model = weights
                .map(|w| Encodec::load_with_sidecar_config(&w, &Device::Cpu))
                .transpose()?;
            let report = stemgen::bench::codec(seconds, repeats, model)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        // One line: the chain of causes joined, as a producer would read it in a terminal.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
