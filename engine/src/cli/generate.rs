//! `stemgen generate`: one instrument stem that fits a context (a mix, or a metronome click),
//! or a region of an earlier take regenerated, written as a WAV.

use crate::cli::common::{parse_device, SamplerFlags};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use stemgen::analysis::harmony::{parse_key, ChordChart};
use stemgen::audio::{self, WavFormat};
use stemgen::generate::{
    CategoryChoice, ContextSource, EditRequest, GenerateRequest, GeneratedStem, Generator,
    HarmonyRequest, Length, PreviousTake, Progress,
};
use stemgen::sample::{Preset, SamplerSettings};

#[derive(Args)]
pub struct GenerateArgs {
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
    #[command(flatten)]
    sampler: SamplerFlags,
    /// Random seed (default: a fresh one, printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Regenerate only this region of --take, in seconds: A..B.
    #[arg(long, value_name = "A..B", requires = "take")]
    region: Option<String>,
    /// The previous take to edit (with --region).
    #[arg(long, value_name = "WAV", requires = "region")]
    take: Option<PathBuf>,
    /// Chords per bar, repeated to the stem's length, e.g. "Am | F | C | G7" (several chords
    /// in a bar share it: "C G | Am"). They replace the harmony heard in the context; they
    /// need the tempo (--bpm, --beats-per-bar, or --metronome).
    #[arg(long, value_name = "CHART")]
    chords: Option<String>,
    /// The key, e.g. "G minor" or "Eb major": pitch classes outside it are removed from the
    /// harmony heard in the context (with --chords, the chords win).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Give the model no context features (harmony, onsets, beats): tokens only.
    #[arg(long, conflicts_with_all = ["chords", "key"])]
    no_context_features: bool,
    /// Also write a coarse preview as soon as the first levels exist (stems up to one model
    /// window, 10 s with the shipped model), before the full take.
    #[arg(long, value_name = "WAV")]
    preview: Option<PathBuf>,
    /// Levels in the preview: 1 (early: level 0 after 30% of its iterations, the frames not
    /// yet decided filled by their current candidates) or more (once they are decided).
    #[arg(long, default_value_t = 1, requires = "preview")]
    preview_levels: usize,
    /// Also write the stem's tokens, the `[levels x frames]` codes the sampler chose, as a
    /// token file (`stemgen codec decode --tokenizer MODEL` turns it back into audio): to see
    /// what the sampler decided where, apart from the decoder.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Output WAV.
    #[arg(short, long, value_name = "WAV")]
    output: PathBuf,
}

/// Runs `generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (preset, region) = check_args(&args)?;
    let harmony = harmony_request(&args)?;
    let (context, rate, channels) = context_source(&args)?;
    let length = stem_length(&args);
    let edit = match (region, &args.take) {
        (Some(region), Some(take)) => Some(EditRequest {
            region,
            previous: PreviousTake::Audio(audio::read_audio(take)?),
        }),
        _ => None,
    };

    let generator = Generator::load_on(&args.model, &parse_device(&args.device)?)?;
    let request = GenerateRequest {
        context,
        category: CategoryChoice::Name(args.instrument.clone()),
        length,
        settings: sampler_settings(&generator, preset, &args),
        edit,
        output_rate: rate,
        output_channels: channels,
        harmony,
        preview_levels: args.preview.is_some().then_some(args.preview_levels),
    };

    let stem = generate_with_progress(&generator, &request, args.preview.as_deref())?;
    audio::write_wav(&args.output, &stem.audio, WavFormat::Float32)?;
    if let Some(path) = &args.tokens {
        stem.tokens.save(path, generator.tokenizer())?;
    }
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

/// Cheap checks first, so a typo does not wait for the model to load: the instrument, the
/// preset, the flags that need each other, and the region (parsed).
fn check_args(args: &GenerateArgs) -> Result<(Preset, Option<Range<f64>>)> {
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
    Ok((preset, region))
}

/// `--chords`, `--key` and `--no-context-features`, parsed before the model loads.
fn harmony_request(args: &GenerateArgs) -> Result<HarmonyRequest> {
    let chords = args
        .chords
        .as_deref()
        .map(ChordChart::parse)
        .transpose()
        .context("--chords")?;
    let key = args
        .key
        .as_deref()
        .map(parse_key)
        .transpose()
        .context("--key")?;
    let tempo = args.bpm.map(|bpm| (bpm, args.beats_per_bar));
    anyhow::ensure!(
        chords.is_none() || tempo.is_some(),
        "--chords needs the tempo to place the bars: add --bpm (and --beats-per-bar if not 4)"
    );
    Ok(HarmonyRequest {
        chords,
        key,
        tempo,
        no_features: args.no_context_features,
        ..HarmonyRequest::default()
    })
}

/// Parses `A..B` (seconds).
fn parse_region(text: &str) -> Result<Range<f64>> {
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

/// The context to listen to, and the output's rate and channel count: the context file's, or
/// 44.1 kHz stereo for a metronome.
fn context_source(args: &GenerateArgs) -> Result<(ContextSource, u32, usize)> {
    Ok(match &args.context {
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
    })
}

/// `--seconds`, else `--bars` at `--bpm`, else none (the context's length).
fn stem_length(args: &GenerateArgs) -> Option<Length> {
    match (args.seconds, args.bars, args.bpm) {
        (Some(s), _, _) => Some(Length::Seconds(s)),
        (None, Some(bars), Some(bpm)) => Some(Length::Bars {
            bars: bars as f64,
            bpm,
            beats_per_bar: args.beats_per_bar,
        }),
        _ => None,
    }
}

/// The preset's settings with the guidance, sampler and seed flags applied (a fresh seed
/// from the clock unless `--seed` is given).
fn sampler_settings(generator: &Generator, preset: Preset, args: &GenerateArgs) -> SamplerSettings {
    let mut settings = generator.settings(preset);
    settings.lambda_context = args.cfg_context;
    settings.lambda_category = args.cfg_instrument;
    args.sampler.overrides().apply(&mut settings);
    settings.seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    settings
}

/// Generates the stem with a progress bar of the sampler's steps.
fn generate_with_progress(
    generator: &Generator,
    request: &GenerateRequest,
    preview: Option<&std::path::Path>,
) -> Result<GeneratedStem> {
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
        Progress::Preview {
            audio,
            levels,
            seconds,
        } => {
            if let Some(path) = preview {
                match audio::write_wav(path, &audio, WavFormat::Float32) {
                    Ok(()) => bar.suspend(|| {
                        eprintln!(
                            "{}: preview ({levels} level(s)) after {seconds:.1} s",
                            path.display()
                        )
                    }),
                    Err(e) => bar.suspend(|| eprintln!("preview not written: {e:#}")),
                }
            }
        }
    };
    let cancel = AtomicBool::new(false);
    let result = generator.generate(request, &mut on_progress, &cancel);
    bar.finish_and_clear();
    result
}
