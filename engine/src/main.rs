//! `stemgen`: the command-line face of the engine.
//!
//! This file parses the arguments and hands each command to its group's module under `cli/`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::{bench, codec, data, eval, generate, info, sound, train};

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

// Parsed once at start-up; boxing the larger argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Turn audio into tokens and back with a tokenizer.
    #[command(subcommand)]
    Codec(codec::CodecCommand),
    /// Measure speed on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a model directory's configuration and parameter count (checks the weights).
    Info(info::InfoArgs),
    /// Copy a model directory (e.g. a training checkpoint) for shipping, weights and codebooks
    /// as f16, without the training state; the copy is loaded once as a check.
    Export(info::ExportArgs),
    /// Generate one instrument stem that fits a context (a mix, or a metronome click).
    Generate(generate::GenerateArgs),
    /// Measure a model on held-out clips: coherence with the context and classical-feature
    /// distances for generated stems, ablations, real pairs (ceiling) and shuffled pairs
    /// (floor); writes report.json, report.md and SVG charts.
    Eval(eval::EvalArgs),
    /// Two `stemgen eval` reports of the same clips compared clip by clip: each model's
    /// normalised mean on the untokenized anchors, B minus A with a 90% paired bootstrap
    /// interval, and every coherence metric side by side.
    EvalCompare(eval::EvalCompareArgs),
    /// Coherence of finished stems with their context, the metrics `eval` computes per clip:
    /// onset on the context's beat grid, beat F1, tempo agreement, key score, beat-synchronous
    /// chroma and in-key share. For checking a take by its figures, not only by ear.
    Coherence(eval::CoherenceArgs),
    /// Sound-quality measures of finished stems, as `eval` reports them per category: peak and
    /// true peak, hot samples, crest factor, clicks, energy outside the instrument's usual
    /// band, flatness, how much sounds, tuning; `--clicks` lists when the clicks happen.
    Sound(sound::SoundArgs),
    /// Held-out masked-token accuracy per level of a model directory on a token cache's
    /// held-out songs (as training validates, with more batches), next to the unigram baseline.
    Validate(eval::ValidateArgs),
    /// Prepare training data.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train the tokenizer or the model.
    #[command(subcommand)]
    Train(train::TrainCommand),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Codec(cmd) => codec::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Info(args) => info::info(args),
        Command::Export(args) => info::export(args),
        Command::Generate(args) => generate::run(args),
        Command::Eval(args) => eval::eval(args),
        Command::EvalCompare(args) => eval::eval_compare(args),
        Command::Coherence(args) => eval::coherence(args),
        Command::Sound(args) => sound::sound(args),
        Command::Validate(args) => eval::validate(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(cmd) => train::run(cmd),
    }
}

/// Shortens how long candle's idle matmul workers spin before they sleep, unless the user set
/// it. Its default (25,000 spins) suits many cores; on 2 cores the spinning worker takes a core
/// from the rayon tasks that run between matmuls (attention, the sampler). The README job
/// alternating with the default on a 2-core AMD EPYC: wall 0.92x (0.87 .. 1.07) in 10 pairs,
/// 0.96x (0.87 .. 1.00) in 8 more; the same stems. The plugin leaves its host's environment
/// alone.
fn short_spins() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        // Called before any other thread exists (edition 2021: `set_var` is safe to call).
        std::env::set_var(VAR, "200");
    }
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

/// Ends the process quietly when its output pipe closes (`stemgen coherence ... | head`), as
/// command-line tools do, instead of panicking in `println!` on the broken pipe: Rust
/// ignores SIGPIPE by default, which suits servers, not a tool whose tables are piped.
fn exit_on_closed_pipe() {
    #[cfg(unix)]
    // Safety: restores the default disposition of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    exit_on_closed_pipe();
    keep_freed_memory();
    short_spins();
    if let Err(e) = run(Cli::parse()) {
        // One line: the chain of causes joined, as a producer would read it in a terminal.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
