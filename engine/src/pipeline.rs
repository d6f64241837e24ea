//! The training pipeline's commands, as functions the CLI calls: synthetic songs ->
//! tokenizer -> token cache -> model. Each step reads the previous step's folder.

use crate::audio::Audio;
use crate::codec::load::{load_tokenizer, TOKENIZER_FILE};
use crate::codec::magnitude::{metrics, MagnitudeConfig, MagnitudeTokenizer};
use crate::data::datasets::{list_dataset, load_song_source};
use anyhow::{Context, Result};
use std::path::Path;

/// Songs whose index is a multiple of this are held out (tokenizer evaluation, model
/// validation), matching the training loop's split.
pub const HELD_OUT_EVERY_NTH_SONG: usize = 10;

/// The full mix (sum of the stems) of every song of the dataset at `songs_dir` (any layout
/// `data::datasets` recognises), at `sample_rate`, split into (training, held-out) songs.
pub fn song_mixes(songs_dir: &Path, sample_rate: u32) -> Result<(Vec<Audio>, Vec<Audio>)> {
    song_clips(songs_dir, sample_rate, false)
}

/// [`song_mixes`], with each training song's non-silent stems after its mix when
/// `with_stems` (the held-out side stays mixes only, so reports stay comparable).
pub fn song_clips(
    songs_dir: &Path,
    sample_rate: u32,
    with_stems: bool,
) -> Result<(Vec<Audio>, Vec<Audio>)> {
    use rayon::prelude::*;
    let (_, sources) = list_dataset(songs_dir)?;
    let held_out_at = |i: usize| is_held_out(i, sources.len());
    // Songs load in parallel (decoding and resampling dominate), in order.
    let loaded = sources
        .par_iter()
        .enumerate()
        .map(|(i, source)| -> Result<(Audio, Vec<Audio>)> {
            let song = load_song_source(source, sample_rate)?;
            let mut mix = vec![0.0f32; song.len];
            for stem in &song.stems {
                for (m, s) in mix.iter_mut().zip(&stem.samples) {
                    *m += s;
                }
            }
            let mut stems = Vec::new();
            if with_stems && !held_out_at(i) {
                for stem in song.stems {
                    if stem.samples.iter().any(|&v| v != 0.0) {
                        stems.push(Audio::mono(sample_rate, stem.samples)?);
                    }
                }
            }
            Ok((Audio::mono(sample_rate, mix)?, stems))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut train = Vec::new();
    let mut held_out = Vec::new();
    for (i, (mix, stems)) in loaded.into_iter().enumerate() {
        if held_out_at(i) {
            held_out.push(mix);
        } else {
            train.push(mix);
            train.extend(stems);
        }
    }
    Ok((train, held_out))
}

/// Whether song `index` of `count` is held out: every [`HELD_OUT_EVERY_NTH_SONG`]th, and none
/// when the dataset has one song.
fn is_held_out(index: usize, count: usize) -> bool {
    index.is_multiple_of(HELD_OUT_EVERY_NTH_SONG) && count > 1
}

/// The held-out songs of the dataset at `songs_dir` (the split of [`song_clips`]) at
/// `sample_rate`, as groups of clips: `"mix"` (each song's mix), then each instrument
/// category's isolated stems by name, in category order; all-zero stems are left out. What a
/// user hears is a stem, so the tokenizer is measured on these as well as on mixes. Only the
/// held-out songs are read.
pub fn held_out_groups(songs_dir: &Path, sample_rate: u32) -> Result<Vec<(String, Vec<Audio>)>> {
    use rayon::prelude::*;
    let (_, sources) = list_dataset(songs_dir)?;
    let held_out: Vec<_> = sources
        .iter()
        .enumerate()
        .filter(|(i, _)| is_held_out(*i, sources.len()))
        .map(|(_, s)| s)
        .collect();
    let songs = held_out
        .par_iter()
        .map(|source| load_song_source(source, sample_rate))
        .collect::<Result<Vec<_>>>()?;
    let mut mixes = Vec::new();
    let mut groups: std::collections::BTreeMap<u32, (String, Vec<Audio>)> = Default::default();
    for song in songs {
        let mut mix = vec![0.0f32; song.len];
        for stem in song.stems {
            for (m, s) in mix.iter_mut().zip(&stem.samples) {
                *m += s;
            }
            if stem.samples.iter().any(|&v| v != 0.0) {
                let group = groups
                    .entry(stem.category.id())
                    .or_insert_with(|| (stem.category.name().to_string(), Vec::new()));
                group.1.push(Audio::mono(sample_rate, stem.samples)?);
            }
        }
        mixes.push(Audio::mono(sample_rate, mix)?);
    }
    let mut all = vec![("mix".to_string(), mixes)];
    all.extend(groups.into_values());
    Ok(all)
}

/// What `train tokenizer` measured on the held-out songs, per number of levels decoded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenizerReport {
    pub train_songs: usize,
    pub held_out_songs: usize,
    /// (levels, LSD dB, mel L1).
    pub held_out: Vec<(usize, f64, f64)>,
    pub train_seconds: f64,
}

/// Trains the magnitude-RVQ tokenizer on the song mixes and writes it to `out_dir` with a
/// `tokenizer.json`, so the folder can be given wherever a tokenizer is expected.
/// Every song of each `extra_songs` folder is a training song too (none is held out there),
/// so more songs can be learned from while the held-out songs stay those of `songs_dir`.
/// With `full_grid_only`, the held-out report covers only the full token grid (each
/// partial grid costs a Griffin-Lim pass over every held-out song).
pub fn train_tokenizer(
    songs_dir: &Path,
    extra_songs: &[std::path::PathBuf],
    out_dir: &Path,
    config: MagnitudeConfig,
    seed: u64,
    full_grid_only: bool,
) -> Result<TokenizerReport> {
    let (mut train, held_out) = song_mixes(songs_dir, config.sample_rate)?;
    for dir in extra_songs {
        let (more, more_held_out) = song_mixes(dir, config.sample_rate)?;
        train.extend(more);
        train.extend(more_held_out);
    }
    anyhow::ensure!(
        !train.is_empty(),
        "{}: no training songs",
        songs_dir.display()
    );
    let started = std::time::Instant::now();
    let tokenizer = MagnitudeTokenizer::train(&train, config, seed)?;
    let train_seconds = started.elapsed().as_secs_f64();
    save_tokenizer_dir(&tokenizer, out_dir)?;
    let mut report = TokenizerReport {
        train_songs: train.len(),
        held_out_songs: held_out.len(),
        held_out: Vec::new(),
        train_seconds,
    };
    if !held_out.is_empty() {
        use crate::codec::Tokenizer;
        let first = if full_grid_only {
            tokenizer.num_levels()
        } else {
            1
        };
        for levels in first..=tokenizer.num_levels() {
            let (lsd, mel) = metrics::evaluate_levels(&tokenizer, &held_out, levels)?;
            report.held_out.push((levels, lsd, mel));
        }
    }
    Ok(report)
}

/// Saves a magnitude tokenizer as a folder that [`load_tokenizer`] accepts.
fn save_tokenizer_dir(tokenizer: &MagnitudeTokenizer, out_dir: &Path) -> Result<()> {
    tokenizer.save(out_dir)?;
    std::fs::write(
        out_dir.join(TOKENIZER_FILE),
        r#"{"kind": "magnitude-rvq", "dir": "."}"#,
    )
    .with_context(|| format!("{}: cannot write {TOKENIZER_FILE}", out_dir.display()))
}

/// What a decoder fit on frozen tokens measured on the held-out songs (all levels, full round
/// trip), plus what the fit itself reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecoderFitReport<T> {
    pub train_clips: usize,
    pub held_out_songs: usize,
    /// (LSD dB, mel L1) without and with the new decoder.
    pub before: (f64, f64),
    pub after: (f64, f64),
    pub fit_seconds: f64,
    pub fit: T,
}

impl<T> DecoderFitReport<T> {
    /// `N held-out songs: LSD a -> b dB, mel L1 c -> d`, the start of every fit's summary.
    pub fn held_out_summary(&self) -> String {
        format!(
            "{} held-out songs: LSD {:.2} -> {:.2} dB, mel L1 {:.3} -> {:.3}",
            self.held_out_songs, self.before.0, self.after.0, self.before.1, self.after.1
        )
    }
}

/// Loads the magnitude tokenizer in `tokenizer_dir`, gives `fit` the training clips of
/// `songs_dir` (mixes, and stems when `with_stems`), saves the tokenizer it returns to
/// `out_dir` and scores both on the held-out mixes. Only decoders are fitted this way, so
/// caches and models made with the tokenizer stay valid.
fn fit_decoder<T>(
    tokenizer_dir: &Path,
    songs_dir: &Path,
    out_dir: &Path,
    with_stems: bool,
    fit: impl FnOnce(MagnitudeTokenizer, &[Audio]) -> Result<(MagnitudeTokenizer, T)>,
) -> Result<DecoderFitReport<T>> {
    fit_decoder_on(tokenizer_dir, songs_dir, None, out_dir, with_stems, fit)
}

/// [`fit_decoder`], training on every song of `train_songs` instead when it is given (the
/// held-out songs stay every 10th song of `songs_dir`).
fn fit_decoder_on<T>(
    tokenizer_dir: &Path,
    songs_dir: &Path,
    train_songs: Option<&Path>,
    out_dir: &Path,
    with_stems: bool,
    fit: impl FnOnce(MagnitudeTokenizer, &[Audio]) -> Result<(MagnitudeTokenizer, T)>,
) -> Result<DecoderFitReport<T>> {
    let tokenizer = MagnitudeTokenizer::load(tokenizer_dir)?;
    let rate = tokenizer.config().sample_rate;
    let (mut train, held_out) = song_clips(songs_dir, rate, with_stems)?;
    if let Some(dir) = train_songs {
        let (more, more_held_out) = song_clips(dir, rate, with_stems)?;
        train = more;
        // That folder's every 10th song comes as a mix only; it is trained on all the same.
        train.extend(more_held_out);
    }
    anyhow::ensure!(
        !train.is_empty() && !held_out.is_empty(),
        "{}: needs at least 2 songs (training and held-out)",
        songs_dir.display()
    );
    let before = metrics::evaluate(&tokenizer, &held_out)?;
    let started = std::time::Instant::now();
    let (fitted, report) = fit(tokenizer, &train)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    save_tokenizer_dir(&fitted, out_dir)?;
    Ok(DecoderFitReport {
        train_clips: train.len(),
        held_out_songs: held_out.len(),
        before,
        after: metrics::evaluate(&fitted, &held_out)?,
        fit_seconds,
        fit: report,
    })
}

/// The refinement filter's settings, for [`DecoderFitReport`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefineFit {
    pub radius: usize,
}

/// Fits a refinement filter of `radius` frames to the magnitude tokenizer in `tokenizer_dir`
/// on the training mixes of `songs_dir` and saves the result to `out_dir`.
pub fn refine_tokenizer(
    tokenizer_dir: &Path,
    songs_dir: &Path,
    out_dir: &Path,
    radius: usize,
) -> Result<DecoderFitReport<RefineFit>> {
    fit_decoder(tokenizer_dir, songs_dir, out_dir, false, |tok, train| {
        Ok((tok.with_refinement(train, radius)?, RefineFit { radius }))
    })
}

/// The joint decoder fit's settings and error on its own frames, for [`DecoderFitReport`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct JointFit {
    pub with_stems: bool,
    pub ridge: f64,
    pub sweeps: usize,
    pub error: crate::codec::magnitude::joint::FitError,
}

/// Fits joint decoder codewords (see `codec::magnitude::joint`) to the magnitude tokenizer in
/// `tokenizer_dir` on the training songs of `songs_dir` (and their stems, `with_stems`) and
/// saves the result to `out_dir`.
pub fn fit_joint_decoder(
    tokenizer_dir: &Path,
    songs_dir: &Path,
    out_dir: &Path,
    with_stems: bool,
    ridge: f64,
    sweeps: usize,
) -> Result<DecoderFitReport<JointFit>> {
    fit_decoder(
        tokenizer_dir,
        songs_dir,
        out_dir,
        with_stems,
        |tok, train| {
            let (fitted, error) = tok.with_joint_decoder(train, ridge, sweeps)?;
            let fit = JointFit {
                with_stems,
                ridge,
                sweeps,
                error,
            };
            Ok((fitted, fit))
        },
    )
}

/// Trains a postnet (see `codec::magnitude::postnet`) for the magnitude tokenizer in
/// `tokenizer_dir` on the training songs of `songs_dir` (and their stems, `with_stems`) and
/// saves the result to `out_dir`.
/// With `train_songs`, it trains on every song there instead (songs the tokenizer's codebooks
/// never saw code like new music, unlike its own training songs). `gl_iters` sets the saved
/// tokenizer's Griffin-Lim iterations (the held-out "after" figures use them).
pub fn train_postnet(
    tokenizer_dir: &Path,
    songs_dir: &Path,
    train_songs: Option<&Path>,
    out_dir: &Path,
    with_stems: bool,
    options: &crate::codec::magnitude::postnet::TrainOptions,
    gl_iters: Option<usize>,
) -> Result<DecoderFitReport<crate::codec::magnitude::postnet::TrainReport>> {
    fit_decoder_on(
        tokenizer_dir,
        songs_dir,
        train_songs,
        out_dir,
        with_stems,
        |tok, train| {
            let (tok, report) = tok.with_postnet(train, options, |line| eprintln!("{line}"))?;
            let momentum = tok.config().gl_momentum;
            let iters = gl_iters.unwrap_or(tok.config().gl_iters);
            Ok((tok.with_griffin_lim(iters, momentum)?, report))
        },
    )
}

/// Makes `model_dir` a complete model directory for `generate`: copies the tokenizer folder
/// `tokenizer_dir` into `model_dir/tokenizer/` and writes a `tokenizer.json` pointing at it.
pub fn attach_tokenizer(model_dir: &Path, tokenizer_dir: &Path) -> Result<()> {
    // Loading first checks that the tokenizer folder is usable at all.
    load_tokenizer(tokenizer_dir)?;
    let dest = model_dir.join("tokenizer");
    std::fs::create_dir_all(&dest).with_context(|| format!("{}: cannot create", dest.display()))?;
    for entry in std::fs::read_dir(tokenizer_dir)
        .with_context(|| format!("{}: cannot read", tokenizer_dir.display()))?
    {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().expect("a file has a name");
            std::fs::copy(&path, dest.join(name))
                .with_context(|| format!("{}: cannot copy", path.display()))?;
        }
    }
    // The copied tokenizer.json points at "."; the model directory's points at the copy.
    let spec = std::fs::read_to_string(dest.join(TOKENIZER_FILE))?;
    let mut spec: serde_json::Value = serde_json::from_str(&spec)?;
    if let Some(dir) = spec.get_mut("dir") {
        *dir = serde_json::Value::String("tokenizer".into());
    }
    if let Some(w) = spec
        .get("weights")
        .and_then(|w| w.as_str())
        .map(str::to_owned)
    {
        spec["weights"] = serde_json::Value::String(format!("tokenizer/{w}"));
    }
    std::fs::write(
        model_dir.join(TOKENIZER_FILE),
        serde_json::to_string_pretty(&spec)?,
    )?;
    load_tokenizer(model_dir).with_context(|| {
        format!(
            "{}: the attached tokenizer does not load",
            model_dir.display()
        )
    })?;
    Ok(())
}

/// Copies a model directory (e.g. a training checkpoint) to `dst` for shipping: JSON files as
/// they are, every safetensors file (the model's weights, the tokenizer's codebooks) with its
/// f32 tensors stored as f16 when `half` — half the size in git, and the loaders widen them
/// to f32 — and the training state and optimizer moments left behind. The result is loaded
/// once as a check.
pub fn export_model_dir(src: &Path, dst: &Path, half: bool) -> Result<()> {
    use candle_core::DType;
    /// Tensors kept in f32: the tokenizer's refinement filter multiplies log-magnitudes near
    /// -100 dB, where f16's relative rounding would add a few hundredths of a dB, and it is
    /// only a few tens of kB.
    const KEEP_F32: &[&str] = &[crate::codec::magnitude::REFINE_TENSOR];
    fn copy_dir(src: &Path, dst: &Path, half: bool) -> Result<()> {
        std::fs::create_dir_all(dst)
            .with_context(|| format!("{}: cannot create", dst.display()))?;
        for entry in
            std::fs::read_dir(src).with_context(|| format!("{}: cannot read", src.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().expect("a directory entry has a name");
            let out = dst.join(name);
            if path.is_dir() {
                copy_dir(&path, &out, half)?;
            } else if name == crate::train::model::STATE_FILE
                || name == crate::train::model::OPTIMIZER_FILE
                || name.to_string_lossy().ends_with(".tmp")
            {
                continue;
            } else if half && path.extension().is_some_and(|e| e == "safetensors") {
                let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
                    .with_context(|| format!("{}: not a safetensors file", path.display()))?;
                let converted = tensors
                    .into_iter()
                    .map(|(k, t)| {
                        let t = if t.dtype() == DType::F32 && !KEEP_F32.contains(&k.as_str()) {
                            t.to_dtype(DType::F16)?
                        } else {
                            t
                        };
                        Ok((k, t))
                    })
                    .collect::<Result<std::collections::HashMap<_, _>>>()?;
                candle_core::safetensors::save(&converted, &out)
                    .with_context(|| format!("{}: cannot write", out.display()))?;
            } else {
                std::fs::copy(&path, &out)
                    .with_context(|| format!("{}: cannot copy", path.display()))?;
            }
        }
        Ok(())
    }
    // Absolute paths, so that a destination inside the source (which the copy would walk
    // into) is seen however the two are spelled.
    let absolute = |p: &Path| -> Result<std::path::PathBuf> {
        std::path::absolute(p).with_context(|| format!("{}: bad path", p.display()))
    };
    anyhow::ensure!(
        !absolute(dst)?.starts_with(absolute(src)?),
        "{}: the export destination must be outside the model directory {}",
        dst.display(),
        src.display()
    );
    copy_dir(src, dst, half)?;
    crate::generate::Generator::load(dst)
        .with_context(|| format!("{}: the exported model does not load", dst.display()))?;
    Ok(())
}
