//! `stemgen codec`: audio to tokens and back (encode, decode, roundtrip) with EnCodec weights
//! or any tokenizer folder (the shipped magnitude tokenizer included), and the held-out
//! quality of a magnitude-RVQ tokenizer on mixes and isolated stems (eval), and which pitches
//! survive a tokenizer (pitch).

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{ArgGroup, Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use stemgen::audio::{self, WavFormat};
use stemgen::codec::encodec::Encodec;
use stemgen::codec::magnitude::phase::PhaseStart;
use stemgen::codec::magnitude::MagnitudeTokenizer;
use stemgen::codec::{Tokenizer, Tokens};

/// Which tokenizer a codec command uses: EnCodec weights, or a tokenizer folder.
#[derive(Args)]
#[command(group(ArgGroup::new("codec_source").required(true).args(["weights", "tokenizer"])))]
pub struct CodecWeights {
    /// EnCodec weights (safetensors, Hugging Face names, e.g. facebook/encodec_32khz's
    /// model.safetensors). A config.json beside them is used if present.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// A magnitude tokenizer folder (e.g. assets/default/tokenizer) or a model directory,
    /// whose tokenizer.json names its tokenizer (e.g. assets/default).
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
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
    /// Which pitches survive the tokenizer: plucked harmonic notes, one per semitone (0.5 s
    /// each), encoded, decoded with 1..Q levels, and each decoded note's pitch compared with
    /// the note played.
    Pitch {
        #[command(flatten)]
        codec: CodecWeights,
        /// Lowest note, MIDI number (28 = E1, a bass guitar's low E).
        #[arg(long, default_value_t = 28)]
        lowest: u8,
        /// Highest note, MIDI number (72 = C5).
        #[arg(long, default_value_t = 72)]
        highest: u8,
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
        /// Phase reconstruction's start, random, pghi or peaks (default: the tokenizer's own
        /// setting).
        #[arg(long)]
        phase: Option<PhaseStart>,
        /// Also measure the round trip on the held-out songs' isolated stems, per instrument
        /// category (LSD, mel L1, multi-resolution STFT distance, decode real-time factor).
        #[arg(long)]
        stems: bool,
        /// With --stems: more decoders to compare on the same tokens, as START:ITERS
        /// (e.g. random:96,pghi:16,peaks:0:retune), START being random, pghi or peaks, ITERS
        /// Griffin-Lim iterations, and an optional `:retune` or `:plain` whether low peaks are
        /// moved onto the semitone grid first (default: the tokenizer's own setting).
        #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "stems")]
        decoders: Vec<String>,
        /// With --stems: score only the first this many seconds of every clip (faster).
        #[arg(long, requires = "stems")]
        clip_seconds: Option<f64>,
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
        CodecCommand::Pitch {
            codec,
            lowest,
            highest,
        } => pitch(&codec, lowest, highest),
        CodecCommand::Eval {
            tokenizer,
            songs,
            gl_iters,
            gl_momentum,
            full_grid_only,
            phase,
            stems,
            decoders,
            clip_seconds,
        } => {
            let tok = decoder_with(&tokenizer, gl_iters, gl_momentum, phase)?;
            eval(&tok, &songs, full_grid_only)?;
            if stems {
                eval_stems(&tok, &tokenizer, &decoders, &songs, clip_seconds)?;
            }
            Ok(())
        }
    }
}

/// The tokenizer a codec command names, and how many levels it keeps (`None`: all).
fn load_codec(c: &CodecWeights) -> Result<(Box<dyn Tokenizer>, Option<usize>)> {
    if let Some(weights) = &c.weights {
        let mut model = Encodec::load_with_sidecar_config(weights, &Device::Cpu)?;
        if let Some(levels) = c.levels {
            model.set_levels(levels)?;
        }
        return Ok((Box::new(model), None));
    }
    let Some(dir) = &c.tokenizer else {
        bail!("give --weights (EnCodec) or --tokenizer (a tokenizer folder)");
    };
    let tokenizer: Box<dyn Tokenizer> = if dir.join(stemgen::codec::load::TOKENIZER_FILE).is_file()
    {
        stemgen::codec::load::load_tokenizer(dir)?
    } else {
        Box::new(MagnitudeTokenizer::load(dir)?)
    };
    if let Some(levels) = c.levels {
        let all = tokenizer.num_levels();
        if !(1..=all).contains(&levels) {
            bail!("--levels {levels}: {} has 1..={all} levels", dir.display());
        }
    }
    Ok((tokenizer, c.levels))
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

fn encode_file(
    model: &dyn Tokenizer,
    levels: Option<usize>,
    input: &Path,
) -> Result<(audio::Audio, Tokens)> {
    let audio = audio::read_audio(input)?;
    let tokens = model
        .encode(&audio, &mut progress_bar("encoding"))
        .with_context(|| format!("{}: cannot encode", input.display()))?;
    let tokens = match levels {
        Some(q) => tokens.truncated(q),
        None => tokens,
    };
    Ok((audio, tokens))
}

fn encode(input: &Path, output: &Path, codec: &CodecWeights) -> Result<()> {
    let (model, levels) = load_codec(codec)?;
    let (_, tokens) = encode_file(model.as_ref(), levels, input)?;
    tokens.save(output, model.as_ref())?;
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
    let (model, levels) = load_codec(codec)?;
    let mut tokens = Tokens::load(input)?;
    // The first `--levels` of the file's levels (the magnitude tokenizer decodes any number).
    if let Some(q) = levels {
        if q > tokens.levels {
            bail!(
                "--levels {q}: {} holds only {} levels",
                input.display(),
                tokens.levels
            );
        }
        tokens = tokens.truncated(q);
    }
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
    let (model, levels) = load_codec(codec)?;
    let (original, tokens) = encode_file(model.as_ref(), levels, input)?;
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

/// Prints which notes come back at their pitch, per number of levels, bass range apart.
fn pitch(codec: &CodecWeights, lowest: u8, highest: u8) -> Result<()> {
    use stemgen::analysis::pitch::note_name;
    if !(12..=108).contains(&lowest) || !(lowest..=108).contains(&highest) {
        bail!("--lowest {lowest} --highest {highest}: give MIDI notes with 12 <= lowest <= highest <= 108");
    }
    let (model, levels) = load_codec(codec)?;
    let all: Vec<usize> = (1..=levels.unwrap_or(model.num_levels())).collect();
    let results = stemgen::codec::pitch_check::pitch_check(model.as_ref(), lowest..=highest, &all)?;
    // A bass guitar's range (up to E3) apart from the notes above it.
    let bass = lowest..=highest.min(52);
    let above = lowest.max(53)..=highest;
    println!(
        "{}: plucked notes {}-{}, 0.5 s each, pitch read 50-400 ms into each note",
        model.name(),
        note_name(lowest),
        note_name(highest)
    );
    println!("| levels | bass exact | bass pitch class | above E3 exact | above E3 pitch class |");
    println!("|---|---|---|---|---|");
    let cell = |(hits, of): (usize, usize)| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{hits}/{of}")
        }
    };
    for r in &results {
        let levels = match r.levels {
            0 => "none: exact magnitudes, phase reconstruction only".to_string(),
            q => q.to_string(),
        };
        println!(
            "| {levels} | {} | {} | {} | {} |",
            cell(r.exact(bass.clone())),
            cell(r.pitch_class(bass.clone())),
            cell(r.exact(above.clone())),
            cell(r.pitch_class(above.clone())),
        );
    }
    if let Some(full) = results.iter().rfind(|r| r.levels > 0) {
        let wrong: Vec<String> = full
            .notes
            .iter()
            .filter(|(played, heard)| Some(*played) != *heard)
            .map(|(played, heard)| {
                let heard = heard.map_or("silence".to_string(), note_name);
                format!("{}->{heard}", note_name(*played))
            })
            .collect();
        println!(
            "all {} levels, notes heard at another pitch: {}",
            full.levels,
            if wrong.is_empty() {
                "none".to_string()
            } else {
                wrong.join(" ")
            }
        );
    }
    Ok(())
}

/// The magnitude tokenizer in `dir` with the decoder settings `codec eval` was given.
fn decoder_with(
    dir: &Path,
    gl_iters: Option<usize>,
    gl_momentum: Option<f32>,
    phase: Option<PhaseStart>,
) -> Result<MagnitudeTokenizer> {
    let tok = MagnitudeTokenizer::load(dir)?;
    let (iters, momentum) = (
        gl_iters.unwrap_or(tok.config().gl_iters),
        gl_momentum.unwrap_or(tok.config().gl_momentum),
    );
    let start = phase.unwrap_or(tok.config().phase_start);
    Ok(tok
        .with_griffin_lim(iters, momentum)?
        .with_phase_start(start))
}

/// `codec eval`: held-out LSD, mel L1 and SI-SDR of a magnitude tokenizer on mixes, as a
/// table per number of levels.
fn eval(tok: &MagnitudeTokenizer, songs: &Path, full_grid_only: bool) -> Result<()> {
    use stemgen::codec::magnitude::metrics;
    let c = tok.config();
    let (_, held_out) = stemgen::pipeline::song_mixes(songs, c.sample_rate)?;
    let t = std::time::Instant::now();
    let report = metrics::evaluate_report(tok, &held_out, full_grid_only)?;
    println!(
        "{} held-out songs, phase {:?} + Griffin-Lim {} iterations (momentum {}), {:.0} s",
        held_out.len(),
        c.phase_start,
        c.gl_iters,
        c.gl_momentum,
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

/// A decoder setting of `--decoders`: `START:ITERS`, or `START:ITERS:retune` (peaks moved
/// onto the semitone grid first) or `START:ITERS:plain` (not moved).
fn parse_decoder(dir: &Path, text: &str) -> Result<MagnitudeTokenizer> {
    let fields: Vec<&str> = text.split(':').map(str::trim).collect();
    let parsed = match fields[..] {
        [start, iters] => Some((start, iters, None)),
        [start, iters, "retune"] => Some((start, iters, Some(true))),
        [start, iters, "plain"] => Some((start, iters, Some(false))),
        _ => None,
    }
    .and_then(|(start, iters, retune)| {
        Some((
            start.parse::<PhaseStart>().ok()?,
            iters.parse::<usize>().ok()?,
            retune,
        ))
    });
    let Some((start, iters, retune)) = parsed else {
        bail!(
            "--decoders: {text:?} is not START:ITERS[:retune|:plain] (START random, pghi or \
             peaks, e.g. pghi:16 or peaks:0:retune)"
        );
    };
    let tok = MagnitudeTokenizer::load(dir)?;
    let momentum = tok.config().gl_momentum;
    let retune = retune.unwrap_or(tok.config().retune);
    Ok(tok
        .with_griffin_lim(iters, momentum)?
        .with_phase_start(start)
        .with_retune(retune))
}

/// `codec eval --stems`: the full round trip on the held-out mixes and on each category's
/// isolated stems, with the tokenizer's decoder and every one of `decoders`.
fn eval_stems(
    tok: &MagnitudeTokenizer,
    dir: &Path,
    decoders: &[String],
    songs: &Path,
    clip_seconds: Option<f64>,
) -> Result<()> {
    use stemgen::codec::magnitude::metrics;
    let rate = tok.config().sample_rate;
    let mut groups = stemgen::pipeline::held_out_groups(songs, rate)?;
    if let Some(secs) = clip_seconds {
        let len = (secs * rate as f64).round().max(1.0) as usize;
        for clip in groups.iter_mut().flat_map(|(_, clips)| clips.iter_mut()) {
            clip.channels.iter_mut().for_each(|c| c.truncate(len));
        }
    }
    let label = |t: &MagnitudeTokenizer| {
        let c = t.config();
        let retune = if c.retune { "+retune" } else { "" };
        format!("{:?}+GL{}{retune}", c.phase_start, c.gl_iters).to_lowercase()
    };
    let others = decoders
        .iter()
        .map(|d| parse_decoder(dir, d))
        .collect::<Result<Vec<_>>>()?;
    let mut all: Vec<(String, &dyn Tokenizer)> = vec![(label(tok), tok as &dyn Tokenizer)];
    all.extend(others.iter().map(|t| (label(t), t as &dyn Tokenizer)));
    let reports = metrics::evaluate_round_trip(&all, &groups)?;
    println!(
        "| clips | decoder | count | seconds | LSD dB | mel L1 | MRSTFT | MRSTFT within {:.0} dB | \
         decode RTF |",
        metrics::AUDIBLE_RANGE_DB
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.group,
            r.decoder,
            r.clips,
            r.seconds_of_audio,
            r.lsd_db,
            r.mel_l1,
            r.mrstft,
            r.mrstft_audible,
            r.decode_rtf
        );
    }
    Ok(())
}
