//! `stemgen data`: training data, as synthetic multi-stem songs (synth) and as token caches of
//! context/target pairs drawn from song folders (cache).

use crate::cli::common::counting_bar;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Render seeded synthetic multi-stem songs (one folder per song, one WAV per stem).
    Synth(SynthArgs),
    /// Draw context/target pairs from song folders and tokenize them into a cache shard.
    Cache(CacheArgs),
    /// Render every multitrack MIDI file of a folder into a song folder (one WAV per
    /// instrument category, metadata.json), skipping finished ones.
    Midi(MidiArgs),
}

#[derive(Args)]
pub struct MidiArgs {
    /// Folder of MIDI files (.mid, .midi, .kar; searched recursively).
    #[arg(long = "in", value_name = "DIR")]
    input: PathBuf,
    /// Folder the song folders are written to.
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    /// General MIDI SoundFont (.sf2); default: FluidR3 or TimGM6mb from Debian.
    #[arg(long)]
    soundfont: Option<PathBuf>,
}

#[derive(Args)]
pub struct SynthArgs {
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
}

#[derive(Args)]
pub struct CacheArgs {
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
}

/// Runs one `data` subcommand.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Cache(args) => cache(args),
        DataCommand::Midi(args) => midi(args),
    }
}

fn midi(args: MidiArgs) -> Result<()> {
    use stemgen::data::midi::{convert_folder, list_midi_files, Converted};
    use stemgen::data::synth;
    let path = synth::find_soundfont(args.soundfont.as_deref())?;
    let font = synth::load_soundfont(&path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let files = list_midi_files(&args.input)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the folder ({e})", args.input.display()))?;
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no MIDI files (.mid, .midi, .kar) in this folder",
        args.input.display()
    );
    let bar = counting_bar(files.len() as u64, "rendering MIDI files");
    let t = std::time::Instant::now();
    let results = convert_folder(
        &args.input,
        &args.out,
        &font,
        &name,
        &synth::RenderOptions::default(),
        &|result| {
            if let Converted::Failed(file, problem) = result {
                bar.suspend(|| eprintln!("{}: skipped: {problem}", file.display()));
            }
            bar.inc(1);
        },
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    bar.finish_and_clear();
    let count = |f: fn(&Converted) -> bool| results.iter().filter(|r| f(r)).count();
    eprintln!(
        "{}: {} songs written, {} already there, {} files skipped ({:.0} s, {name})",
        args.out.display(),
        count(|r| matches!(r, Converted::Written(_))),
        count(|r| matches!(r, Converted::Skipped(_))),
        count(|r| matches!(r, Converted::Failed(..))),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn synth(args: SynthArgs) -> Result<()> {
    use stemgen::data::synth;
    let SynthArgs {
        out,
        songs,
        seconds,
        seed,
        soundfont,
    } = args;
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
    Ok(())
}

fn cache(args: CacheArgs) -> Result<()> {
    use stemgen::data::cache::{write_shard, CacheConfig, ShardSpec};
    let CacheArgs {
        songs,
        tokenizer,
        out,
        shard,
        pairs_per_song,
        crop_seconds,
        seed,
    } = args;
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
    Ok(())
}
