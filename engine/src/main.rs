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
    /// Copy a model directory (e.g. a training checkpoint) for shipping, weights and codebooks
    /// as f16, without the training state; the copy is loaded once as a check.
    Export {
        /// Model directory to copy (config.json, model.safetensors, tokenizer.json, tokenizer/).
        from: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// Keep f32 weights instead of storing f16.
        #[arg(long)]
        full_precision: bool,
    },
    /// Generate one instrument stem that fits a context (a mix, or a metronome click).
    Generate(GenerateArgs),
    /// Measure a model on held-out clips: coherence with the context and classical-feature
    /// distances for generated stems, ablations, real pairs (ceiling) and shuffled pairs
    /// (floor); writes report.json, report.md and SVG charts.
    Eval(EvalArgs),
    /// Two `stemgen eval` reports of the same clips compared clip by clip: each model's
    /// normalised mean on the untokenized anchors, B minus A with a 90% paired bootstrap
    /// interval, and every coherence metric side by side.
    EvalCompare {
        /// Report of model A (`report.json` or its folder).
        a: PathBuf,
        /// Report of model B, on the same clips.
        b: PathBuf,
        /// Seed of the bootstrap resampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Coherence of finished stems with their context, the metrics `eval` computes per clip:
    /// onset on the context's beat grid, beat F1, tempo agreement, key score, beat-synchronous
    /// chroma and in-key share. For checking a take by its figures, not only by ear.
    Coherence {
        /// The context the stems were generated for (or a real mix).
        #[arg(long, value_name = "WAV")]
        context: PathBuf,
        /// Stems to measure against it; each is cut to the shorter of the two.
        #[arg(required = true, value_name = "STEM")]
        stems: Vec<PathBuf>,
    },
    /// Held-out masked-token accuracy per level of a model directory on a token cache's
    /// held-out songs (as training validates, with more batches), next to the unigram baseline.
    Validate {
        /// Model directory (config.json, model.safetensors).
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// Token cache made with the model's tokenizer (repeat to join several).
        #[arg(long, value_name = "DIR", required = true)]
        cache: Vec<PathBuf>,
        /// Batches per level.
        #[arg(long, default_value_t = 16)]
        batches: usize,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Score the same batches again with the context reversed in time, from another song,
        /// and dropped: how much the model listens to its context, and to its timing.
        #[arg(long)]
        context_probes: bool,
        /// Mask every frame of the scored level (the sampler's first iteration of each level)
        /// instead of a cosine share.
        #[arg(long)]
        whole_level: bool,
    },
    /// Prepare training data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train the tokenizer or the model.
    #[command(subcommand)]
    Train(TrainCommand),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Render seeded synthetic multi-stem songs (one folder per song, one WAV per stem).
    Synth {
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        songs: usize,
        /// Approximate length of each song.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// General MIDI SoundFont (.sf2); default: FluidR3 or TimGM6mb from Debian.
        #[arg(long)]
        soundfont: Option<PathBuf>,
    },
    /// Draw context/target pairs from song folders and tokenize them into a cache shard.
    Cache {
        /// Folder of song folders (one audio file per stem, named by category).
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        /// A folder with tokenizer.json (a trained tokenizer or a model directory).
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// This machine's share of the songs: i/n.
        #[arg(long, default_value = "0/1")]
        shard: String,
        #[arg(long, default_value_t = 8)]
        pairs_per_song: usize,
        #[arg(long, default_value_t = 10.0)]
        crop_seconds: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Learn the magnitude-RVQ tokenizer's codebooks from song mixes; reports LSD and mel
    /// distance on held-out songs.
    Tokenizer {
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 4)]
        levels: usize,
        #[arg(long, default_value_t = 2048)]
        codebook_size: usize,
        /// What the per-frame gain measures: `peak` (the shipped tokenizer) or `mean` (0.12 dB
        /// lower held-out LSD in our measurements; gain range -100..-10 dB).
        #[arg(long, default_value = "peak")]
        gain_reference: String,
        /// Frames the k-means learns from at most (more generalises better, costs linearly).
        #[arg(long, default_value_t = 60_000)]
        train_frames: usize,
        /// Lloyd iterations per level.
        #[arg(long, default_value_t = 10)]
        kmeans_iters: usize,
        /// Paths the encoder's beam search keeps per frame (1: greedy). Wider beams code each
        /// frame more closely; they change the tokens, not the bitrate.
        #[arg(long, default_value_t = 1)]
        encode_beam: usize,
        /// More training songs (every song there is trained on; the held-out songs stay every
        /// 10th song of --songs). Repeatable.
        #[arg(long, value_name = "DIR")]
        extra_songs: Vec<PathBuf>,
        /// Report held-out LSD and mel L1 for the full token grid only, not for each level.
        #[arg(long)]
        full_grid_only: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fit the magnitude tokenizer's decoder refinement (a per-bin linear filter over
    /// neighbouring frames and levels) on song mixes; the tokens stay the same, so caches and
    /// models made with the tokenizer remain valid. Reports held-out LSD and mel L1.
    Refine {
        /// The tokenizer folder to refine.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// Frames each side the filter reads.
        #[arg(long, default_value_t = 4)]
        radius: usize,
    },
    /// Refit the magnitude tokenizer's decoding codewords jointly by least squares on frozen
    /// tokens (every level together, on many frames); the tokens stay the same, so caches and
    /// models made with the tokenizer remain valid. Reports held-out LSD and mel L1.
    Decoder {
        /// The tokenizer folder (or model directory's tokenizer folder) to refit.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// Also fit on every training song's stems (what the model generates), not only mixes.
        #[arg(long)]
        stems: bool,
        /// Weight, in frames, pulling rarely seen codes towards their encoder codeword.
        #[arg(long, default_value_t = 1.0)]
        ridge: f64,
        /// Gauss-Seidel sweeps over the levels.
        #[arg(long, default_value_t = 20)]
        sweeps: usize,
    },
    /// Train a postnet for the magnitude tokenizer: a small network that corrects the decoded
    /// log-magnitudes from the codes of neighbouring frames, trained on the log-spectral
    /// distance with the tokens frozen, so caches and models made with the tokenizer remain
    /// valid. Reports held-out LSD and mel L1.
    Postnet {
        /// The tokenizer folder to extend.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        /// Songs whose every 10th song is held out to score the result (and the rest trained
        /// on, unless --train-songs is given).
        #[arg(long, value_name = "DIR")]
        songs: PathBuf,
        /// Train on every song of this folder instead: songs the tokenizer was not trained
        /// on code like new music, which the postnet has to correct.
        #[arg(long, value_name = "DIR")]
        train_songs: Option<PathBuf>,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// Also train on every training song's stems (what the model generates), not only mixes.
        #[arg(long)]
        stems: bool,
        /// Hidden channels.
        #[arg(long, default_value_t = 384)]
        width: usize,
        /// Residual blocks.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Frames each block's temporal convolution reads (odd).
        #[arg(long, default_value_t = 3)]
        kernel: usize,
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// Windows per step.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Frames per window.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Peak learning rate (warm-up 5% of the steps, held to 40%, then halved every 15%).
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 250)]
        validate_every: usize,
        /// Griffin-Lim iterations of the saved tokenizer (default: the input's). More
        /// iterations rebuild phase more closely and decode slower.
        #[arg(long)]
        gl_iters: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train the StemGen model on a token cache (resumes from OUT/checkpoint if present).
    Model {
        /// Token cache folder; repeat to join several (for example caches of the same songs
        /// drawn with different seeds).
        #[arg(long, value_name = "DIR", required = true)]
        cache: Vec<PathBuf>,
        /// The tokenizer the cache was made with; copied into the checkpoint so it is a
        /// complete model directory for `stemgen generate`.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
        /// Model config JSON (default: a small CPU-sized model, or --init-from's config).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Start a fresh run from this model directory's weights (e.g. assets/default) instead
        /// of random ones; ignored when OUT/checkpoint already holds a run to resume.
        #[arg(long, value_name = "DIR")]
        init_from: Option<PathBuf>,
        /// Stop (with a checkpoint) after this many steps of the --steps schedule; running
        /// again without it resumes and finishes the schedule.
        #[arg(long)]
        stop_after: Option<usize>,
        #[arg(long, default_value_t = 10_000)]
        steps: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long, default_value_t = 5e-4)]
        lr: f64,
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: usize,
        #[arg(long, default_value_t = 500)]
        validate_every: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Share of examples trained as the sampler's first step (level 0, every frame
        /// masked), where only the context and category inform the model.
        #[arg(long, default_value_t = 0.0)]
        whole_level0_share: f64,
        /// Loss weight of frames where the context has an onset (1 = off; needs a model with
        /// gain_steps).
        #[arg(long, default_value_t = 1.0)]
        context_onset_weight: f64,
        /// Where to train: cpu, cuda or metal (the last two need a build with that feature).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Args)]
struct GenerateArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Where the model runs: cpu, cuda or metal (the last two need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The music to listen to (WAV/FLAC/OGG/MP3, any rate and channel count); the stem comes
    /// out at its rate and channel count.
    #[arg(long, value_name = "FILE", conflicts_with = "metronome")]
    context: Option<PathBuf>,
    /// Listen to a click track instead (needs --bpm and --bars); output is 44.1 kHz stereo.
    #[arg(long, required_unless_present = "context")]
    metronome: bool,
    /// Instrument category name (bass, drums, guitar, ...).
    #[arg(long)]
    instrument: String,
    /// Length in bars (needs --bpm).
    #[arg(long, conflicts_with = "seconds")]
    bars: Option<u32>,
    /// Tempo in beats per minute.
    #[arg(long)]
    bpm: Option<f64>,
    /// Time signature numerator.
    #[arg(long, default_value_t = 4)]
    beats_per_bar: u32,
    /// Length in seconds (default: the context's length).
    #[arg(long)]
    seconds: Option<f64>,
    /// Guidance strength of the context (1 = none).
    #[arg(long, default_value_t = 3.0)]
    cfg_context: f64,
    /// Guidance strength of the instrument (1 = none).
    #[arg(long, default_value_t = 3.0)]
    cfg_instrument: f64,
    /// Iterations preset: paper, normal or draft.
    #[arg(long, default_value = "normal")]
    steps: String,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Random seed (default: a fresh one, printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Regenerate only this region of --take, in seconds: A..B.
    #[arg(long, value_name = "A..B", requires = "take")]
    region: Option<String>,
    /// The previous take to edit (with --region).
    #[arg(long, value_name = "WAV", requires = "region")]
    take: Option<PathBuf>,
    /// Output WAV.
    #[arg(short, long, value_name = "WAV")]
    output: PathBuf,
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

#[derive(Subcommand)]
enum BenchCommand {
    /// Seconds per guided sampler iteration of the transformer, at the sizes of the PyTorch
    /// anchor (`small`: 31.5M, 10 s; `paper`: ~250M, 20 s) or the CPU default (`cpu`), with
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
        "cpu" => Ok((stemgen::model::ModelConfig::cpu_default(), 500)),
        other => anyhow::bail!("unknown model size '{other}' (use cpu, small or paper)"),
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
        Command::Codec(CodecCommand::Eval {
            tokenizer,
            songs,
            gl_iters,
            gl_momentum,
            full_grid_only,
        }) => {
            use stemgen::codec::magnitude::{metrics, MagnitudeTokenizer};
            let tok = MagnitudeTokenizer::load(&tokenizer)?;
            let (iters, momentum) = (
                gl_iters.unwrap_or(tok.config().gl_iters),
                gl_momentum.unwrap_or(tok.config().gl_momentum),
            );
            let tok = tok.with_griffin_lim(iters, momentum)?;
            let (_, held_out) = stemgen::pipeline::song_mixes(&songs, tok.config().sample_rate)?;
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
        }
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
        Command::Data(cmd) => data_command(cmd)?,
        Command::Train(cmd) => train_command(cmd)?,
        Command::Export {
            from,
            out,
            full_precision,
        } => {
            stemgen::pipeline::export_model_dir(&from, &out, !full_precision)?;
            println!("{} -> {}", from.display(), out.display());
        }
        Command::Validate {
            model,
            cache,
            batches,
            batch_size,
            context_probes,
            whole_level,
        } => {
            let checkpoint = ModelCheckpoint::load(&model, &Device::Cpu)?;
            let cache = stemgen::data::cache::TokenCache::open_all(&cache)?;
            let r = stemgen::train::held_out_accuracy(
                &checkpoint.model,
                &cache,
                stemgen::train::HeldOutOptions {
                    batches,
                    batch_size,
                    context_probes,
                    whole_level,
                },
                &Device::Cpu,
            )?;
            println!(
                "{} held-out pairs, {} x {} per level",
                r.pairs, r.batches, r.batch_size
            );
            let mode = if r.whole_level {
                "every frame of the level masked"
            } else {
                "a cosine share of the level masked"
            };
            println!("{mode}; accuracy / cross-entropy in nats per masked token");
            let probe_titles: String = r
                .probes
                .iter()
                .map(|p| format!(" context {:?} |", p.probe).to_lowercase())
                .collect();
            println!(
                "| level | unigram baseline | own context |{probe_titles}\n|---|---|---|{}",
                "---|".repeat(r.probes.len())
            );
            for q in 0..r.accuracy.len() {
                let probed: String = r
                    .probes
                    .iter()
                    .map(|p| format!(" {:.4} / {:.3} |", p.accuracy[q], p.loss[q]))
                    .collect();
                println!(
                    "| {q} | {:.4} | {:.4} / {:.3} |{probed}",
                    r.unigram[q], r.accuracy[q], r.loss[q]
                );
            }
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
        Command::Generate(args) => generate(args)?,
        Command::Eval(args) => eval_command(args)?,
        Command::EvalCompare { a, b, seed } => eval_compare_command(&a, &b, seed)?,
        Command::Coherence { context, stems } => coherence_command(&context, &stems)?,
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
        Command::Bench(BenchCommand::Generate {
            model,
            presets,
            seconds,
            repeats,
            json,
        }) => {
            for &s in &seconds {
                anyhow::ensure!(
                    s > 0.0 && s <= stemgen::generate::MAX_SECONDS,
                    "--seconds {s} must be in (0, {}]",
                    stemgen::generate::MAX_SECONDS
                );
            }
            let report = stemgen::bench::generation(&model, &presets, &seconds, repeats)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Bench(BenchCommand::Codec {
            seconds,
            repeats,
            weights,
            stages,
            json,
        }) => {
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
        }
    }
    Ok(())
}

/// `cpu`, `cuda` or `metal` (GPU 0). candle answers a GPU request in a build without that
/// feature with an error, which is passed on with the flag to rebuild with.
fn parse_device(name: &str) -> Result<Device> {
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

fn counting_bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {eta} left")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

fn data_command(cmd: DataCommand) -> Result<()> {
    use stemgen::data::synth;
    match cmd {
        DataCommand::Synth {
            out,
            songs,
            seconds,
            seed,
            soundfont,
        } => {
            let path = synth::find_soundfont(soundfont.as_deref())?;
            let font = synth::load_soundfont(&path)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut options = synth::GenerateOptions::default();
            options.plan.target_secs = seconds;
            let bar = counting_bar(songs as u64, "rendering songs");
            let t = std::time::Instant::now();
            synth::generate_songs(&out, &font, &name, seed, songs, &options, &|_| bar.inc(1))?;
            bar.finish_and_clear();
            eprintln!(
                "{songs} songs in {} with {name} ({:.0} s)",
                out.display(),
                t.elapsed().as_secs_f64()
            );
        }
        DataCommand::Cache {
            songs,
            tokenizer,
            out,
            shard,
            pairs_per_song,
            crop_seconds,
            seed,
        } => {
            use stemgen::data::cache::{write_shard, CacheConfig, ShardSpec};
            let shard: ShardSpec = shard.parse()?;
            let tokenizer = stemgen::codec::load::load_tokenizer(&tokenizer)?;
            let mut config = CacheConfig {
                pairs_per_song,
                seed,
                ..CacheConfig::default()
            };
            config.pairs.crop_seconds = crop_seconds;
            let bar = counting_bar(0, "tokenizing songs");
            let summary = write_shard(
                &songs,
                tokenizer.as_ref(),
                &config,
                shard,
                &out,
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            eprintln!(
                "{}: {} pairs from {} songs ({} draws rejected as silent, {} files skipped)",
                summary.path.display(),
                summary.pairs,
                summary.songs,
                summary.rejected.iter().map(|(_, n)| n).sum::<usize>(),
                summary.skipped_files.len()
            );
        }
    }
    Ok(())
}

fn train_command(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Tokenizer {
            songs,
            out,
            levels,
            codebook_size,
            gain_reference,
            train_frames,
            kmeans_iters,
            encode_beam,
            extra_songs,
            full_grid_only,
            seed,
        } => {
            use stemgen::codec::magnitude::{GainReference, MagnitudeConfig};
            let defaults = MagnitudeConfig::default();
            let (gain_reference, gain_min_db, gain_max_db) = match gain_reference.as_str() {
                "peak" => (
                    GainReference::Peak,
                    defaults.gain_min_db,
                    defaults.gain_max_db,
                ),
                "mean" => (GainReference::Mean, -100.0, -10.0),
                other => anyhow::bail!("--gain-reference {other:?}: expected peak or mean"),
            };
            let config = MagnitudeConfig {
                levels,
                codebook_size,
                gain_reference,
                gain_min_db,
                gain_max_db,
                max_train_frames: train_frames,
                kmeans_iters,
                encode_beam,
                ..defaults
            };
            let report = stemgen::pipeline::train_tokenizer(
                &songs,
                &extra_songs,
                &out,
                config,
                seed,
                full_grid_only,
            )?;
            eprintln!(
                "trained on {} songs in {:.0} s; held-out songs: {}",
                report.train_songs, report.train_seconds, report.held_out_songs
            );
            for (levels, lsd, mel) in &report.held_out {
                println!("levels {levels}: LSD {lsd:.2} dB, mel L1 {mel:.3}");
            }
            std::fs::write(
                out.join("report.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
        }
        TrainCommand::Refine {
            tokenizer,
            songs,
            out,
            radius,
        } => {
            let r = stemgen::pipeline::refine_tokenizer(&tokenizer, &songs, &out, radius)?;
            println!(
                "{} (fitted on {} songs in {:.0} s)",
                r.held_out_summary(),
                r.train_clips,
                r.fit_seconds
            );
            std::fs::write(
                out.join("refine_report.json"),
                serde_json::to_string_pretty(&r)?,
            )?;
        }
        TrainCommand::Decoder {
            tokenizer,
            songs,
            out,
            stems,
            ridge,
            sweeps,
        } => {
            let r = stemgen::pipeline::fit_joint_decoder(
                &tokenizer, &songs, &out, stems, ridge, sweeps,
            )?;
            println!(
                "{} (fitted on {} clips, {} frames, in {:.0} s; fit RMS {:.2} -> {:.2} dB)",
                r.held_out_summary(),
                r.train_clips,
                r.fit.error.frames,
                r.fit_seconds,
                r.fit.error.rms_before_db,
                r.fit.error.rms_after_db
            );
            std::fs::write(
                out.join("decoder_report.json"),
                serde_json::to_string_pretty(&r)?,
            )?;
        }
        TrainCommand::Postnet {
            tokenizer,
            songs,
            train_songs,
            out,
            stems,
            width,
            layers,
            kernel,
            steps,
            batch_size,
            window,
            lr,
            validate_every,
            gl_iters,
            seed,
        } => {
            use stemgen::codec::magnitude::postnet::{PostnetConfig, TrainOptions};
            use stemgen::train::schedule::LrSchedule;
            let warmup = (steps / 20).max(1);
            let options = TrainOptions {
                config: PostnetConfig {
                    width,
                    layers,
                    kernel,
                },
                steps,
                batch: batch_size,
                window,
                schedule: LrSchedule {
                    peak: lr,
                    warmup,
                    hold: (steps * 2 / 5).saturating_sub(warmup),
                    half_life: (steps * 3 / 20).max(1),
                },
                weight_decay: 0.0,
                clip_norm: 1.0,
                validate_every,
                seed,
            };
            let r = stemgen::pipeline::train_postnet(
                &tokenizer,
                &songs,
                train_songs.as_deref(),
                &out,
                stems,
                &options,
                gl_iters,
            )?;
            println!(
                "{} (trained on {} clips in {:.0} s, {:.0} frames/s; validation LSD before \
                 Griffin-Lim {:.2} -> {:.2} dB)",
                r.held_out_summary(),
                r.train_clips,
                r.fit_seconds,
                r.fit.frames_per_second,
                r.fit.lsd_before_db,
                r.fit.validation.last().map_or(f64::NAN, |v| v.1)
            );
            std::fs::write(
                out.join("postnet_report.json"),
                serde_json::to_string_pretty(&r)?,
            )?;
        }
        TrainCommand::Model {
            cache,
            tokenizer,
            out,
            config,
            init_from,
            stop_after,
            steps,
            batch_size,
            lr,
            warmup,
            checkpoint_every,
            validate_every,
            seed,
            whole_level0_share,
            context_onset_weight,
            device,
        } => {
            use stemgen::train::{LrSchedule, ModelTrainConfig};
            anyhow::ensure!(
                (0.0..=1.0).contains(&whole_level0_share),
                "--whole-level0-share {whole_level0_share} must be a share in [0, 1]"
            );
            let device = parse_device(&device)?;
            let model_config = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("{}: cannot read", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a model config", path.display()))?
                }
                None => match &init_from {
                    Some(dir) => stemgen::model::read_config(dir)?,
                    None => stemgen::model::ModelConfig::cpu_default(),
                },
            };
            if model_config.gain_steps > 0 {
                let tok = stemgen::codec::load::load_tokenizer(&tokenizer)?;
                anyhow::ensure!(
                    tok.level0_gain_steps() == Some(model_config.gain_steps),
                    "{}: the model config has gain_steps {}, but this tokenizer's level 0 has {} \
                     (set gain_steps to it, or to 0 for tokens without a gain)",
                    tokenizer.display(),
                    model_config.gain_steps,
                    tok.level0_gain_steps()
                        .map_or("no gain".to_string(), |g| format!("{g} gain steps"))
                );
            }
            let cache = stemgen::data::cache::TokenCache::open_all(&cache)?;
            let train = ModelTrainConfig {
                steps,
                batch_size,
                schedule: LrSchedule {
                    peak: lr,
                    warmup,
                    hold: steps / 2,
                    half_life: (steps / 4).max(1),
                },
                checkpoint_every,
                validate_every,
                seed,
                init_from,
                stop_after,
                whole_level0_share,
                context_onset_weight,
                ..Default::default()
            };
            let ckpt = out.join("checkpoint");
            std::fs::create_dir_all(&ckpt)?;
            stemgen::pipeline::attach_tokenizer(&ckpt, &tokenizer)?;
            let bar = counting_bar(steps as u64, "training");
            let report = stemgen::train::train_model(
                &cache,
                &model_config,
                &train,
                &out,
                &device,
                &mut |step, _, loss, acc| {
                    bar.set_position(step as u64);
                    bar.set_message(format!("loss {loss:.3} acc {acc:.3}"));
                },
            )?;
            bar.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.training_gflops > 0.0 {
                // The machine's ceiling, measured now, so the share is of this run's machine.
                let matmul = stemgen::bench::matmul_gflops(2048, 3)?;
                println!(
                    "throughput: {:.0} target tokens/s, {:.1} GFLOP/s ({:.0}% of the {matmul:.0} GFLOP/s plain matmul)",
                    report.mean_tokens_per_second,
                    report.training_gflops,
                    100.0 * report.training_gflops / matmul
                );
            }
        }
    }
    Ok(())
}

/// Parses `A..B` (seconds).
fn parse_region(text: &str) -> Result<std::ops::Range<f64>> {
    let (a, b) = text
        .split_once("..")
        .with_context(|| format!("--region '{text}' must look like A..B (seconds), e.g. 2..4"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--region '{text}': '{s}' is not a number of seconds"))
    };
    Ok(parse(a)?..parse(b)?)
}

fn generate(args: GenerateArgs) -> Result<()> {
    use std::sync::atomic::AtomicBool;
    use stemgen::generate::{
        CategoryChoice, ContextSource, EditRequest, GenerateRequest, Generator, Length,
        PreviousTake, Progress,
    };
    use stemgen::sample::Preset;

    let started = std::time::Instant::now();
    // Cheap checks first, so a typo does not wait for the model to load.
    stemgen::data::categories::Category::from_name(&args.instrument)?;
    let preset: Preset = args.steps.parse()?;
    if args.metronome {
        anyhow::ensure!(
            args.bpm.is_some() && args.bars.is_some(),
            "--metronome needs --bpm and --bars"
        );
    }
    if args.bars.is_some() {
        anyhow::ensure!(args.bpm.is_some(), "--bars needs --bpm");
    }
    let region = args.region.as_deref().map(parse_region).transpose()?;

    let (context, rate, channels) = match &args.context {
        Some(path) => {
            let audio = audio::read_audio(path)?;
            let (rate, channels) = (audio.sample_rate, audio.num_channels());
            (ContextSource::Audio(audio), rate, channels)
        }
        None => (
            ContextSource::Metronome {
                bpm: args.bpm.unwrap_or_default(),
                beats_per_bar: args.beats_per_bar,
                bars: args.bars.unwrap_or_default(),
            },
            44_100,
            2,
        ),
    };
    let length = match (args.seconds, args.bars, args.bpm) {
        (Some(s), _, _) => Some(Length::Seconds(s)),
        (None, Some(bars), Some(bpm)) => Some(Length::Bars {
            bars: bars as f64,
            bpm,
            beats_per_bar: args.beats_per_bar,
        }),
        _ => None,
    };
    let edit = match (region, &args.take) {
        (Some(region), Some(take)) => Some(EditRequest {
            region,
            previous: PreviousTake::Audio(audio::read_audio(take)?),
        }),
        _ => None,
    };

    let generator = Generator::load_on(&args.model, &parse_device(&args.device)?)?;
    let mut settings = generator.settings(preset);
    settings.lambda_context = args.cfg_context;
    settings.lambda_category = args.cfg_instrument;
    if let Some(t) = args.temperature {
        settings.temperature = t;
    }
    settings.seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    let request = GenerateRequest {
        context,
        category: CategoryChoice::Name(args.instrument.clone()),
        length,
        settings,
        edit,
        output_rate: rate,
        output_channels: channels,
    };

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} steps, {eta} left")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| match p {
        Progress::Encoding { .. } => bar.set_message("encoding context"),
        Progress::Sampling {
            window,
            windows,
            level,
            levels,
            done,
            total,
            ..
        } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(if windows > 1 {
                format!(
                    "window {}/{windows} level {}/{levels}",
                    window + 1,
                    level + 1
                )
            } else {
                format!("level {}/{levels}", level + 1)
            });
        }
        Progress::Decoding { .. } => bar.set_message("decoding"),
    };
    let cancel = AtomicBool::new(false);
    let result = generator.generate(&request, &mut on_progress, &cancel);
    bar.finish_and_clear();
    let stem = result?;
    audio::write_wav(&args.output, &stem.audio, WavFormat::Float32)?;
    let m = &stem.metadata;
    eprintln!(
        "{}: {:.2} s of {} in {:.1} s (seed {})",
        args.output.display(),
        m.seconds,
        m.category,
        started.elapsed().as_secs_f64(),
        m.seed
    );
    Ok(())
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Test songs in any layout `data cache` reads (default: synthesize held-out songs into
    /// OUT/songs, seeds from 900000).
    #[arg(long, value_name = "DIR")]
    songs: Option<PathBuf>,
    /// A few minutes on a laptop CPU: 6 clips and the draft preset (unless given).
    #[arg(long)]
    quick: bool,
    /// Number of clips (default: 6 with --quick, else 24).
    #[arg(long)]
    clips: Option<usize>,
    /// Iterations preset: paper, normal or draft (default: draft with --quick, else normal).
    #[arg(long)]
    preset: Option<stemgen::sample::Preset>,
    /// Seeds crops, target choices and generation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Leave out the four ablations (no guidance, one guidance source, no causal bias).
    #[arg(long)]
    no_ablations: bool,
    /// Sampling temperature of the generated stems (default: the preset's, 1).
    #[arg(long)]
    temperature: Option<f64>,
    /// SoundFont for synthesizing the test songs.
    #[arg(long)]
    soundfont: Option<PathBuf>,
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
}

fn eval_command(args: EvalArgs) -> Result<()> {
    use stemgen::eval::{report, suite};
    let mut options = suite::SuiteOptions::new(&args.model, &args.out, args.quick);
    options.songs = args.songs;
    options.clips = args.clips.unwrap_or(options.clips);
    options.preset = args.preset.unwrap_or(options.preset);
    options.seed = args.seed;
    options.ablations = !args.no_ablations;
    options.temperature = args.temperature;
    options.soundfont = args.soundfont;
    let result = suite::run(&options, &mut |line| eprintln!("{line}"))?;
    for path in report::write_all(&result, &args.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

fn eval_compare_command(a: &Path, b: &Path, seed: u64) -> Result<()> {
    use stemgen::eval::compare::{compare, EvalRun};
    let (run_a, run_b) = (EvalRun::read(a)?, EvalRun::read(b)?);
    let c = compare(&run_a, &run_b, seed)?;
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!(
        "{} clips; normalised means on the untokenized anchors (real_raw = 1, shuffled_raw = 0)",
        c.clips
    );
    println!("A {}: {:+.3}", run_a.model_dir, c.mean_a);
    println!("B {}: {:+.3}", run_b.model_dir, c.mean_b);
    println!(
        "B - A: {:+.3}, 90% paired bootstrap interval {:+.3} .. {:+.3}; B not above A in {:.1}% of resamples",
        c.difference,
        c.interval[0],
        c.interval[1],
        100.0 * c.share_not_above
    );
    println!("| metric | A | B |");
    println!("|---|---|---|");
    for m in &c.metrics {
        println!("| {} | {} | {} |", m.metric, cell(m.a), cell(m.b));
    }
    Ok(())
}

fn coherence_command(context: &Path, stems: &[PathBuf]) -> Result<()> {
    use stemgen::analysis::{Analysis, ANALYSIS_RATE};
    use stemgen::eval::{metrics::Coherence, suite::coherence_means};
    let mono = |path: &Path| -> Result<Vec<f32>> {
        let audio = audio::read_audio(path)?;
        Ok(audio
            .to_mono_at(ANALYSIS_RATE)
            .with_context(|| format!("{}: cannot resample for analysis", path.display()))?
            .channels
            .swap_remove(0))
    };
    let context_samples = mono(context)?;
    // Every file is read before anything is printed, so a bad one fails the command cleanly.
    let loaded_stems = stems
        .iter()
        .map(|path| {
            let samples = mono(path)?;
            anyhow::ensure!(
                samples.len().min(context_samples.len()) >= ANALYSIS_RATE as usize,
                "{}: under a second of audio overlaps the context; nothing to measure",
                path.display()
            );
            Ok((path, samples))
        })
        .collect::<Result<Vec<_>>>()?;
    let whole = Analysis::of_samples(&context_samples, ANALYSIS_RATE);
    println!(
        "context {}: {:.1} s, tempo {:.1} BPM, key {} (clarity {:.2}), {} beats",
        context.display(),
        whole.duration_secs,
        whole.tempo_bpm,
        whole.key,
        whole.key_clarity,
        whole.beat_times.len()
    );
    println!(
        "| stem | s | tempo BPM | key | onset on grid | beat F1 | tempo agree | key score | beat chroma cos | in-key share |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut all = Vec::with_capacity(stems.len());
    // The context cut to each stem's length, analysed once per length (takes share one).
    let mut context_cuts = std::collections::HashMap::from([(context_samples.len(), whole)]);
    for (path, stem_samples) in loaded_stems {
        let n = stem_samples.len().min(context_samples.len());
        let context_part = context_cuts
            .entry(n)
            .or_insert_with(|| Analysis::of_samples(&context_samples[..n], ANALYSIS_RATE));
        let stem = Analysis::of_samples(&stem_samples[..n], ANALYSIS_RATE);
        let c = Coherence::from_analyses(context_part, &stem);
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {:.3} | {} | {:.3} | {} | {} |",
            path.display(),
            stem.duration_secs,
            stem.tempo_bpm,
            stem.key,
            cell(c.onset_grid_share),
            c.beat_f_measure,
            if c.tempo_agreement > 0.5 { "yes" } else { "no" },
            c.key_score,
            cell(c.beat_chroma_cosine),
            cell(c.in_key_share),
        );
        all.push(c);
    }
    if all.len() > 1 {
        // Means over the stems where each metric is defined, as `eval` averages its clips.
        let means: String = coherence_means(&all)
            .iter()
            .map(|(m, _)| format!(" {} |", cell(*m)))
            .collect();
        println!("| mean of {} | | | |{means}", all.len());
    }
    Ok(())
}

/// Makes glibc's allocator keep freed memory instead of returning it to the OS.
///
/// Tensors of a few to tens of MB are allocated and freed on every operation. By default glibc
/// maps each large one fresh from the OS and unmaps it when freed, so every operation paid for
/// page faults, zeroing and cross-core TLB flushes: that was about a third of a training step's
/// time. The CLI's jobs are batch jobs, so holding on to their peak memory is the better
/// trade (the plugin runs in its host's process and leaves the host's allocator alone).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only changes allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() {
    keep_freed_memory();
    if let Err(e) = run(Cli::parse()) {
        // One line: the chain of causes joined, as a producer would read it in a terminal.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
