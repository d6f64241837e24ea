//! `stemgen eval`, `eval-compare`, `coherence` and `validate`: how good a model is, by its
//! generated stems on held-out clips, by two eval reports side by side, by finished stems'
//! coherence with their context, and by masked-token accuracy on a token cache.

use crate::cli::common::SamplerFlags;
use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use std::path::{Path, PathBuf};
use stemgen::audio;
use stemgen::model::ModelCheckpoint;
use stemgen::train::HeldOutAccuracy;

#[derive(Args)]
pub struct EvalArgs {
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
    /// Also generate with no context features and with each clip's true chords (a model
    /// with context features; songs made by `data synth`, whose metadata has the chords).
    #[arg(long)]
    harmony: bool,
    /// Sampler settings of every generated population (default: the preset's).
    #[command(flatten)]
    sampler: SamplerFlags,
    /// SoundFont for synthesizing the test songs.
    #[arg(long)]
    soundfont: Option<PathBuf>,
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args)]
pub struct EvalCompareArgs {
    /// Report of model A (`report.json` or its folder).
    a: PathBuf,
    /// Report of model B, on the same clips.
    b: PathBuf,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct CoherenceArgs {
    /// The context the stems were generated for (or a real mix).
    #[arg(long, value_name = "WAV")]
    context: PathBuf,
    /// Stems to measure against it; each is cut to the shorter of the two.
    #[arg(required_unless_present = "chords", value_name = "STEM")]
    stems: Vec<PathBuf>,
    /// Also print the chords heard in the context, beat by beat (what a bass stem over it
    /// follows).
    #[arg(long)]
    chords: bool,
}

#[derive(Args)]
pub struct ValidateArgs {
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
}

/// Runs `eval`.
pub fn eval(args: EvalArgs) -> Result<()> {
    use stemgen::eval::{report, suite};
    let mut options = suite::SuiteOptions::new(&args.model, &args.out, args.quick);
    options.songs = args.songs;
    options.clips = args.clips.unwrap_or(options.clips);
    options.preset = args.preset.unwrap_or(options.preset);
    options.seed = args.seed;
    options.ablations = !args.no_ablations;
    options.harmony = args.harmony;
    options.sampler = args.sampler.overrides();
    options.soundfont = args.soundfont;
    let result = suite::run(&options, &mut |line| eprintln!("{line}"))?;
    for path in report::write_all(&result, &args.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Runs `eval-compare`.
pub fn eval_compare(args: EvalCompareArgs) -> Result<()> {
    use stemgen::eval::compare::{compare, EvalRun};
    let EvalCompareArgs { a, b, seed } = args;
    let (run_a, run_b) = (EvalRun::read(&a)?, EvalRun::read(&b)?);
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

/// Runs `coherence`.
pub fn coherence(args: CoherenceArgs) -> Result<()> {
    use stemgen::analysis::{Analysis, ANALYSIS_RATE};
    use stemgen::eval::{metrics::Coherence, suite::coherence_means};
    let CoherenceArgs {
        context,
        stems,
        chords,
    } = args;
    let context_samples = analysis_mono(&context)?;
    let loaded_stems = load_stems(&stems, context_samples.len())?;
    let whole = Analysis::of_samples(&context_samples, ANALYSIS_RATE);
    let power = stemgen::analysis::spectrum::power_spectrogram(&context_samples);
    let tuning = match stemgen::analysis::chroma::confident_tuning(&power, ANALYSIS_RATE) {
        Some(t) => format!("{:+.0} cents", t * 100.0),
        None => "none heard".into(),
    };
    println!(
        "context {}: {:.1} s, tempo {:.1} BPM, key {} (clarity {:.2}), {} beats, tuning {}",
        context.display(),
        whole.duration_secs,
        whole.tempo_bpm,
        whole.key,
        whole.key_clarity,
        whole.beat_times.len(),
        tuning
    );
    if !stems.is_empty() {
        println!(
            "| stem | s | tempo BPM | key | onset on grid | beat F1 | tempo agree | key score | beat chroma cos | in-key share |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }
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
    if chords {
        print_heard_chords(&context_samples);
    }
    Ok(())
}

/// The chords heard in mono `samples` at the analysis rate, one span per line.
fn print_heard_chords(samples: &[f32]) {
    use stemgen::analysis::chord_recognition::recognize_chords;
    use stemgen::analysis::context_features::{measure, ContextFeature};
    use stemgen::analysis::ANALYSIS_RATE;
    let frame_rate = ANALYSIS_RATE as f64 / stemgen::analysis::spectrum::HOP as f64;
    let frames = (samples.len() as f64 / ANALYSIS_RATE as f64 * frame_rate) as usize;
    let features = measure(
        samples,
        &[
            ContextFeature::Chroma,
            ContextFeature::BassChroma,
            ContextFeature::BeatPhase,
        ],
        frame_rate,
        frames,
    );
    println!("chords heard in the context (start s, end s, chord):");
    for span in recognize_chords(&features, frame_rate) {
        let name = span.chord.map_or("N.C.".to_string(), |c| c.symbol);
        println!("{:.2} {:.2} {name}", span.start, span.end);
    }
}

/// An audio file as mono samples at the analysis rate.
fn analysis_mono(path: &Path) -> Result<Vec<f32>> {
    use stemgen::analysis::ANALYSIS_RATE;
    let audio = audio::read_audio(path)?;
    Ok(audio
        .to_mono_at(ANALYSIS_RATE)
        .with_context(|| format!("{}: cannot resample for analysis", path.display()))?
        .channels
        .swap_remove(0))
}

/// Every stem, read before anything is printed, so a bad one fails the command cleanly; each
/// must overlap the context (`context_len` samples) by a second at least.
fn load_stems(stems: &[PathBuf], context_len: usize) -> Result<Vec<(&PathBuf, Vec<f32>)>> {
    use stemgen::analysis::ANALYSIS_RATE;
    stems
        .iter()
        .map(|path| {
            let samples = analysis_mono(path)?;
            anyhow::ensure!(
                samples.len().min(context_len) >= ANALYSIS_RATE as usize,
                "{}: under a second of audio overlaps the context; nothing to measure",
                path.display()
            );
            Ok((path, samples))
        })
        .collect()
}

/// Runs `validate`.
pub fn validate(args: ValidateArgs) -> Result<()> {
    let ValidateArgs {
        model,
        cache,
        batches,
        batch_size,
        context_probes,
        whole_level,
    } = args;
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
    print_held_out_accuracy(&r);
    Ok(())
}

/// The accuracy table of `validate`: per level, the unigram baseline, the model with its own
/// context, and with each probed context.
fn print_held_out_accuracy(r: &HeldOutAccuracy) {
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
