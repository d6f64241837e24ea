//! `stemgen codec`: audio to EnCodec tokens and back (encode, decode, roundtrip), and the
//! held-out quality of a magnitude-RVQ tokenizer (eval).

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use stemgen::audio::{self, WavFormat};
use stemgen::codec::encodec::Encodec;
use stemgen::codec::{Tokenizer, Tokens};

#[derive(Args)]
pub struct CodecWeights {
    /// EnCodec weights (safetensors, Hugging Face names, e.g. facebook/encodec_32khz's
    /// model.safetensors). A config.json beside them is used if present.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Number of RVQ levels to use (default: all).
    #[arg(long)]
    levels: Option<usize>,
}

#[derive(Subcommand)]
pub enum CodecCommand {
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
    /// Held-out quality of a magnitude-RVQ tokenizer on songs (every 10th song of the folder,
    /// as `train tokenizer` holds out): LSD and mel L1 per number of levels, and the LSD of the
    /// decoded magnitudes before phase reconstruction.
    Eval {
        /// Tokenizer folder (or model directory's `tokenizer/`).
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        /// Griffin-Lim iterations to decode with (default: the tokenizer's own setting).
        #[arg(long)]
        gl_iters: Option<usize>,
        /// Griffin-Lim momentum (default: the tokenizer's own setting).
        #[arg(long)]
        gl_momentum: Option<f32>,
        /// Report the full token grid only, not each number of levels.
        #[arg(long)]
        full_grid_only: bool,
    },
}

/// Runs one `codec` subcommand.
pub fn run(cmd: CodecCommand) -> Result<()> {
    match cmd {
        CodecCommand::Encode {
            input,
            output,
            codec,
        } => encode(&input, &output, &codec),
        CodecCommand::Decode {
            input,
            output,
            codec,
            rate,
        } => decode(&input, &output, &codec, rate),
        CodecCommand::Roundtrip {
            input,
            output,
            codec,
        } => roundtrip(&input, &output, &codec),
        CodecCommand::Eval {
            tokenizer,
            songs,
            gl_iters,
            gl_momentum,
            full_grid_only,
        } => eval(&tokenizer, &songs, gl_iters, gl_momentum, full_grid_only),
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

fn encode(input: &Path, output: &Path, codec: &CodecWeights) -> Result<()> {
    let model = load_codec(codec)?;
    let (_, tokens) = encode_file(&model, input)?;
    tokens.save(output, &model)?;
    eprintln!(
        "{}: {} levels x {} frames ({:.2} s at {} Hz)",
        output.display(),
        tokens.levels,
        tokens.frames,
        tokens.frames as f64 / model.frame_rate(),
        model.frame_rate()
    );
    Ok(())
}

fn decode(input: &Path, output: &Path, codec: &CodecWeights, rate: Option<u32>) -> Result<()> {
    let model = load_codec(codec)?;
    let tokens = Tokens::load(input)?;
    let mut audio = model
        .decode(&tokens, &mut progress_bar("decoding"))
        .with_context(|| format!("{}: cannot decode", input.display()))?;
    if let Some(rate) = rate {
        audio = audio.resampled(rate)?;
    }
    audio::write_wav(output, &audio, WavFormat::Float32)?;
    Ok(())
}

fn roundtrip(input: &Path, output: &Path, codec: &CodecWeights) -> Result<()> {
    let model = load_codec(codec)?;
    let (original, tokens) = encode_file(&model, input)?;
    let decoded = model.decode(&tokens, &mut progress_bar("decoding"))?;
    let mut back = decoded
        .resampled(original.sample_rate)?
        .with_channels(original.num_channels());
    for ch in &mut back.channels {
        ch.truncate(original.num_frames());
    }
    audio::write_wav(output, &back, WavFormat::Float32)?;
    eprintln!(
        "{} -> {} ({} levels x {} frames)",
        input.display(),
        output.display(),
        tokens.levels,
        tokens.frames
    );
    Ok(())
}

/// `codec eval`: held-out LSD, mel L1 and SI-SDR of a magnitude tokenizer, as a table.
fn eval(
    tokenizer: &Path,
    songs: &Path,
    gl_iters: Option<usize>,
    gl_momentum: Option<f32>,
    full_grid_only: bool,
) -> Result<()> {
    use stemgen::codec::magnitude::{metrics, MagnitudeTokenizer};
    let tok = MagnitudeTokenizer::load(tokenizer)?;
    let (iters, momentum) = (
        gl_iters.unwrap_or(tok.config().gl_iters),
        gl_momentum.unwrap_or(tok.config().gl_momentum),
    );
    let tok = tok.with_griffin_lim(iters, momentum)?;
    let (_, held_out) = stemgen::pipeline::song_mixes(songs, tok.config().sample_rate)?;
    let t = std::time::Instant::now();
    let report = metrics::evaluate_report(&tok, &held_out, full_grid_only)?;
    println!(
        "{} held-out songs, Griffin-Lim {iters} iterations (momentum {momentum}), {:.0} s",
        held_out.len(),
        t.elapsed().as_secs_f64()
    );
    println!("| levels | LSD dB | mel L1 | LSD of the decoded magnitudes dB | SI-SDR dB |");
    println!("|---|---|---|---|---|");
    for r in report {
        println!(
            "| {} | {:.2} | {:.3} | {:.2} | {:.1} |",
            r.levels, r.lsd_db, r.mel_l1, r.token_lsd_db, r.si_sdr_db
        );
    }
    Ok(())
}
