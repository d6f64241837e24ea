//! `stemgen train`: the magnitude tokenizer (tokenizer), its decoder refinements fitted on
//! frozen tokens (refine, decoder, postnet), and the StemGen model on a token cache (model).

use crate::cli::common::{counting_bar, parse_device};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use stemgen::model::ModelConfig;
use stemgen::train::TrainReport;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Learn the magnitude-RVQ tokenizer's codebooks from song mixes; reports LSD and mel
    /// distance on held-out songs.
    Tokenizer(TokenizerArgs),
    /// Fit the magnitude tokenizer's decoder refinement (a per-bin linear filter over
    /// neighbouring frames and levels) on song mixes; the tokens stay the same, so caches and
    /// models made with the tokenizer remain valid. Reports held-out LSD and mel L1.
    Refine(RefineArgs),
    /// Refit the magnitude tokenizer's decoding codewords jointly by least squares on frozen
    /// tokens (every level together, on many frames); the tokens stay the same, so caches and
    /// models made with the tokenizer remain valid. Reports held-out LSD and mel L1.
    Decoder(DecoderArgs),
    /// Train a postnet for the magnitude tokenizer: a small network that corrects the decoded
    /// log-magnitudes from the codes of neighbouring frames, trained on the log-spectral
    /// distance with the tokens frozen, so caches and models made with the tokenizer remain
    /// valid. Reports held-out LSD and mel L1.
    Postnet(PostnetArgs),
    /// Train the StemGen model on a token cache (resumes from OUT/checkpoint if present).
    Model(ModelArgs),
}

#[derive(Args)]
pub struct TokenizerArgs {
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
    /// Weight low bins more in the codebooks' error, as HZ:FACTOR (e.g. 500:8): bins below HZ
    /// weighted by HZ / f, at most FACTOR, so bass pitches survive (`stemgen codec pitch`).
    #[arg(long, value_name = "HZ:FACTOR")]
    low_band_emphasis: Option<String>,
    /// More training songs (every song there is trained on; the held-out songs stay every
    /// 10th song of --songs). Repeatable.
    #[arg(long, value_name = "DIR")]
    extra_songs: Vec<PathBuf>,
    /// Report held-out LSD and mel L1 for the full token grid only, not for each level.
    #[arg(long)]
    full_grid_only: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct RefineArgs {
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
}

#[derive(Args)]
pub struct DecoderArgs {
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
}

#[derive(Args)]
pub struct PostnetArgs {
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
}

#[derive(Args)]
pub struct ModelArgs {
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
    /// Share of examples from songs with known chords that see the chord templates instead of
    /// the measured harmony (a model with context_features).
    #[arg(long, default_value_t = 0.0)]
    chord_template_share: f64,
    /// Share of examples that see no context features (a model with context_features).
    #[arg(long, default_value_t = 0.0)]
    feature_drop_share: f64,
    /// Learning rate of the context-feature projection relative to --lr (a model with
    /// context_features; a projection added to a trained model starts at zero).
    #[arg(long, default_value_t = 1.0)]
    features_lr_scale: f64,
    /// Where to train: cpu, cuda or metal (the last two need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}
/// Runs one `train` subcommand.
pub fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Tokenizer(args) => tokenizer(args),
        TrainCommand::Refine(args) => refine(args),
        TrainCommand::Decoder(args) => decoder(args),
        TrainCommand::Postnet(args) => postnet(args),
        TrainCommand::Model(args) => model(args),
    }
}

fn tokenizer(args: TokenizerArgs) -> Result<()> {
    use stemgen::codec::magnitude::{GainReference, MagnitudeConfig};
    let TokenizerArgs {
        songs,
        out,
        levels,
        codebook_size,
        gain_reference,
        train_frames,
        kmeans_iters,
        encode_beam,
        low_band_emphasis,
        extra_songs,
        full_grid_only,
        seed,
    } = args;
    let low_band_emphasis = low_band_emphasis
        .map(|text| {
            let parsed = text.split_once(':').and_then(|(hz, factor)| {
                Some(stemgen::codec::magnitude::LowBandEmphasis {
                    below_hz: hz.trim().parse().ok()?,
                    factor: factor.trim().parse().ok()?,
                })
            });
            parsed.with_context(|| {
                format!("--low-band-emphasis {text:?}: expected HZ:FACTOR, e.g. 500:8")
            })
        })
        .transpose()?;
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
        low_band_emphasis,
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
    Ok(())
}

fn refine(args: RefineArgs) -> Result<()> {
    let RefineArgs {
        tokenizer,
        songs,
        out,
        radius,
    } = args;
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
    Ok(())
}

fn decoder(args: DecoderArgs) -> Result<()> {
    let DecoderArgs {
        tokenizer,
        songs,
        out,
        stems,
        ridge,
        sweeps,
    } = args;
    let r = stemgen::pipeline::fit_joint_decoder(&tokenizer, &songs, &out, stems, ridge, sweeps)?;
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
    Ok(())
}

fn postnet(args: PostnetArgs) -> Result<()> {
    use stemgen::codec::magnitude::postnet::{PostnetConfig, TrainOptions};
    use stemgen::train::schedule::LrSchedule;
    let PostnetArgs {
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
    } = args;
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
    Ok(())
}

fn model(args: ModelArgs) -> Result<()> {
    use stemgen::train::{LrSchedule, ModelTrainConfig};
    let ModelArgs {
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
        chord_template_share,
        feature_drop_share,
        features_lr_scale,
        device,
    } = args;
    anyhow::ensure!(
        (0.0..=1.0).contains(&whole_level0_share),
        "--whole-level0-share {whole_level0_share} must be a share in [0, 1]"
    );
    let device = parse_device(&device)?;
    let model_config = model_config(config.as_deref(), init_from.as_deref())?;
    check_gain_steps(&model_config, &tokenizer)?;
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
        chord_template_share,
        feature_drop_share,
        features_lr_scale,
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
    print_model_report(&report)
}

/// The model's configuration: `--config`'s file, else `--init-from`'s, else the CPU default.
fn model_config(config: Option<&Path>, init_from: Option<&Path>) -> Result<ModelConfig> {
    Ok(match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a model config", path.display()))?
        }
        None => match init_from {
            Some(dir) => stemgen::model::read_config(dir)?,
            None => ModelConfig::cpu_default(),
        },
    })
}

/// A model that predicts gains needs a tokenizer whose level 0 has the same gain steps.
fn check_gain_steps(model_config: &ModelConfig, tokenizer: &Path) -> Result<()> {
    if model_config.gain_steps > 0 {
        let tok = stemgen::codec::load::load_tokenizer(tokenizer)?;
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
    Ok(())
}

/// Prints the training report, and the run's throughput against this machine's matmul.
fn print_model_report(report: &TrainReport) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
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
    Ok(())
}
