//! The pre-tokenised token cache: pairs ([`crate::data::pairs`]) drawn once, tokenised once,
//! and stored as safetensors shards, so training never runs the codec.
//!
//! Shard `i` of `n` (`--shard i/n`) handles the songs whose index in the sorted song list is
//! congruent to `i` mod `n`, and is written as `cache-{i}-of-{n}.safetensors` with u32 tensors
//! `context [P, Q, T]`, `target [P, Q, T]`, `category [P]`, `song_index [P]`, `crop_start [P]`
//! (samples) and the cache parameters in the header metadata, plus the pairs' context
//! features ([`crate::data::pair_features`]: f16 `features [P, T, 27]`, `chord_template
//! [P, T, 24]`, u32 `has_chords [P]`; shards made before them load without). The pairs of a song are drawn
//! from an RNG seeded with the cache seed mixed with the song's index, so a song gets the same
//! pairs whatever the shard count, and shards can be made on different machines independently.
//!
//! [`TokenCache::open`] loads every shard of a folder, checks that they agree (tokenizer,
//! rates, levels, codebook size, frames, shard count) and that no shard is missing, and serves
//! random batches as candle tensors ready for the training objective. [`TokenCache::open_all`]
//! joins several such folders (caches of the same songs drawn with different seeds).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context as _, Result};
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::audio::Audio;
use crate::codec::{no_progress, Tokenizer, Tokens};
use crate::data::datasets::{list_dataset, load_song_source, SongSource};
use crate::data::pair_features;
use crate::data::pairs::{draw_pair, PairConfig};
use crate::data::Category;

/// Value of the `format` metadata key of every shard.
pub const CACHE_FORMAT: &str = "stemgen-token-cache";
/// Version of the shard layout.
pub const CACHE_VERSION: u32 = 1;

/// Which part of the dataset a run tokenises: songs with `index % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl ShardSpec {
    /// The whole dataset in one shard.
    pub const ALL: ShardSpec = ShardSpec { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("invalid shard {index}/{count}: need 0 <= i < n");
        }
        Ok(ShardSpec { index, count })
    }

    /// Whether song number `song_index` (in the sorted song list) belongs to this shard.
    pub fn contains(&self, song_index: usize) -> bool {
        song_index % self.count == self.index
    }

    /// `cache-{i}-of-{n}.safetensors`.
    pub fn file_name(&self) -> String {
        format!("cache-{}-of-{}.safetensors", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = anyhow::Error;

    /// Parses `i/n`, e.g. `0/4`.
    fn from_str(s: &str) -> Result<Self> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("invalid shard '{s}': expected i/n, e.g. 0/4"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("invalid shard '{s}': expected i/n, e.g. 0/4"))
        };
        ShardSpec::new(parse(i)?, parse(n)?)
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// How a cache is drawn.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Pair drawing; its `sample_rate` is replaced by the tokenizer's.
    pub pairs: PairConfig,
    /// Pairs drawn per song (rejected draws are not retried beyond the pair config's attempts).
    pub pairs_per_song: usize,
    pub seed: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            pairs: PairConfig::default(),
            pairs_per_song: 8,
            seed: 0,
        }
    }
}

/// What [`write_shard`] did.
#[derive(Debug, Clone)]
pub struct ShardSummary {
    pub path: PathBuf,
    /// Songs in this shard.
    pub songs: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Draws that gave no pair (silence), per song id.
    pub rejected: Vec<(String, usize)>,
    /// Stem files that were not used, with the reason.
    pub skipped_files: Vec<(PathBuf, String)>,
}

/// SplitMix64 finaliser: decorrelates the per-song seeds.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG seed for the pairs of song number `song_index`.
pub fn song_seed(seed: u64, song_index: usize) -> u64 {
    mix64(seed ^ mix64(song_index as u64))
}

/// One song's drawn and tokenised pairs.
struct SongPairs {
    index: usize,
    id: String,
    /// (context, target) tokens per pair.
    tokens: Vec<(Tokens, Tokens)>,
    /// The context features of each pair, [`pair_features::CACHED_FEATURES`] per frame.
    features: Vec<Vec<f32>>,
    /// The chord templates of each pair, when the song's chords are known.
    templates: Vec<Option<Vec<f32>>>,
    categories: Vec<u32>,
    crop_starts: Vec<u32>,
    /// Draws that gave no pair.
    misses: usize,
    skipped_files: Vec<(PathBuf, String)>,
}

/// Draws `config.pairs_per_song` pairs from song number `index` and tokenises them.
fn song_pairs(
    source: &SongSource,
    index: usize,
    tokenizer: &dyn Tokenizer,
    config: &CacheConfig,
    pairs_cfg: &PairConfig,
) -> Result<SongPairs> {
    let dir = &source.dir;
    let song = load_song_source(source, pairs_cfg.sample_rate)?;
    let chords = pair_features::song_chords(dir)?;
    let mut rng = StdRng::seed_from_u64(song_seed(config.seed, index));
    let mut out = SongPairs {
        index,
        id: song.id.clone(),
        tokens: Vec::new(),
        features: Vec::new(),
        templates: Vec::new(),
        categories: Vec::new(),
        crop_starts: Vec::new(),
        misses: 0,
        skipped_files: song.skipped.clone(),
    };
    for _ in 0..config.pairs_per_song {
        let Some(pair) = draw_pair(&song, pairs_cfg, &mut rng) else {
            out.misses += 1;
            continue;
        };
        let encode = |audio: &Audio| {
            tokenizer
                .encode(audio, &mut no_progress())
                .with_context(|| format!("{}: cannot tokenise a pair", dir.display()))
        };
        let (context, target) = (encode(&pair.context)?, encode(&pair.target)?);
        let frame_rate = tokenizer.frame_rate();
        out.features.push(
            pair_features::measure_context(&pair.context, frame_rate, context.frames)
                .with_context(|| format!("{}: cannot measure a pair's features", dir.display()))?,
        );
        out.templates.push(chords.as_ref().map(|spans| {
            let offset = pair.crop_start as f64 / pairs_cfg.sample_rate as f64;
            pair_features::chord_template(spans, offset, frame_rate, context.frames)
        }));
        out.tokens.push((context, target));
        out.categories.push(pair.category.id());
        out.crop_starts.push(pair.crop_start as u32);
    }
    Ok(out)
}

/// Draws, tokenises and writes shard `shard` of the songs under `dataset` into `out_dir`.
/// `progress(done, total)` is called after each song.
pub fn write_shard(
    dataset: &Path,
    tokenizer: &dyn Tokenizer,
    config: &CacheConfig,
    shard: ShardSpec,
    out_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ShardSummary> {
    let pairs_cfg = PairConfig {
        sample_rate: tokenizer.sample_rate(),
        ..config.pairs.clone()
    };
    pairs_cfg.validate()?;
    // Any layout `datasets` recognises (Slakh2100, MUSDB18-HQ, MoisesDB, song folders).
    let (_, songs) = list_dataset(dataset)?;
    let mine: Vec<(usize, &SongSource)> = songs
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.contains(*i))
        .collect();
    let levels = tokenizer.num_levels();
    let (feature_dims, template_dims) =
        (pair_features::cached_dims(), pair_features::template_dims());
    let mut frames: Option<usize> = None;
    let (mut context, mut target) = (Vec::new(), Vec::new());
    let (mut category, mut song_index, mut crop_start) = (Vec::new(), Vec::new(), Vec::new());
    let (mut features, mut templates, mut has_chords) = (Vec::new(), Vec::new(), Vec::new());
    let mut rejected = Vec::new();
    let mut skipped_files = Vec::new();
    // Songs are drawn and tokenised in parallel, a few per core at a time (each song's pairs
    // come from its own seeded RNG, so the shard is the same on any number of threads), and
    // merged in song order.
    let chunk = 2 * rayon::current_num_threads().max(1);
    let mut done = 0;
    for group in mine.chunks(chunk) {
        let results: Vec<Result<SongPairs>> = group
            .par_iter()
            .map(|&(i, source)| song_pairs(source, i, tokenizer, config, &pairs_cfg))
            .collect();
        for result in results {
            let song = result?;
            skipped_files.extend(song.skipped_files);
            for (ctx, tgt) in &song.tokens {
                for tokens in [ctx, tgt] {
                    if tokens.levels != levels {
                        bail!(
                            "tokenizer returned {} levels, declared {levels}",
                            tokens.levels
                        );
                    }
                    match frames {
                        None => frames = Some(tokens.frames),
                        Some(t) if t != tokens.frames => {
                            bail!(
                                "tokenizer returned {} frames for a crop, earlier {t}",
                                tokens.frames
                            )
                        }
                        Some(_) => {}
                    }
                }
                context.extend_from_slice(&ctx.codes);
                target.extend_from_slice(&tgt.codes);
            }
            for (f, t) in song.features.iter().zip(&song.templates) {
                features.extend_from_slice(f);
                match t {
                    Some(t) => templates.extend_from_slice(t),
                    // No chords known: zeros, flagged by `has_chords`.
                    None => templates.extend(std::iter::repeat_n(
                        0.0,
                        f.len() / feature_dims * template_dims,
                    )),
                }
                has_chords.push(u32::from(t.is_some()));
            }
            let pairs = song.tokens.len();
            category.extend(song.categories);
            song_index.extend(std::iter::repeat_n(song.index as u32, pairs));
            crop_start.extend(song.crop_starts);
            if song.misses > 0 {
                rejected.push((song.id, song.misses));
            }
            done += 1;
            progress(done, mine.len());
        }
    }
    let frames = match frames {
        Some(t) => t,
        // No pair at all: learn the grid length from a silent crop so the header is complete.
        None => {
            let silence = Audio::mono(pairs_cfg.sample_rate, vec![0.0; pairs_cfg.crop_samples()])?;
            tokenizer.encode(&silence, &mut no_progress())?.frames
        }
    };
    let p = category.len();
    let dev = Device::Cpu;
    let tensors = [
        (
            "context",
            Tensor::from_vec(context, (p, levels, frames), &dev)?,
        ),
        (
            "target",
            Tensor::from_vec(target, (p, levels, frames), &dev)?,
        ),
        ("category", Tensor::from_vec(category, p, &dev)?),
        ("song_index", Tensor::from_vec(song_index, p, &dev)?),
        ("crop_start", Tensor::from_vec(crop_start, p, &dev)?),
        (
            "features",
            Tensor::from_vec(features, (p, frames, feature_dims), &dev)?.to_dtype(DType::F16)?,
        ),
        (
            "chord_template",
            Tensor::from_vec(templates, (p, frames, template_dims), &dev)?.to_dtype(DType::F16)?,
        ),
        ("has_chords", Tensor::from_vec(has_chords, p, &dev)?),
    ];
    let meta = HashMap::from(
        [
            ("format", CACHE_FORMAT.to_string()),
            ("version", CACHE_VERSION.to_string()),
            ("tokenizer", tokenizer.name().to_string()),
            ("sample_rate", tokenizer.sample_rate().to_string()),
            ("frame_rate", tokenizer.frame_rate().to_string()),
            ("levels", levels.to_string()),
            ("codebook_size", tokenizer.codebook_size().to_string()),
            ("crop_frames", frames.to_string()),
            ("crop_seconds", pairs_cfg.crop_seconds.to_string()),
            ("seed", config.seed.to_string()),
            ("pairs_per_song", config.pairs_per_song.to_string()),
            ("shard_index", shard.index.to_string()),
            ("shard_count", shard.count.to_string()),
            ("dataset_songs", songs.len().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create cache folder", out_dir.display()))?;
    let path = out_dir.join(shard.file_name());
    let tmp = out_dir.join(format!(".{}.tmp", shard.file_name()));
    safetensors::tensor::serialize_to_file(tensors.iter().map(|(k, v)| (*k, v)), Some(meta), &tmp)
        .with_context(|| format!("{}: cannot write cache shard", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("{}: cannot write cache shard", path.display()))?;
    Ok(ShardSummary {
        path,
        songs: mine.len(),
        pairs: p,
        rejected,
        skipped_files,
    })
}

/// The parameters every shard of a cache must share.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheInfo {
    pub tokenizer: String,
    pub sample_rate: u32,
    pub frame_rate: f64,
    pub levels: usize,
    pub codebook_size: usize,
    /// T: frames per pair.
    pub frames: usize,
    pub shard_count: usize,
}

/// A batch for the training objective.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, Q, T]` u32.
    pub context: Tensor,
    /// `[B, Q, T]` u32.
    pub target: Tensor,
    /// `[B]` u32 category ids.
    pub category: Tensor,
    /// The pairs' context features, [`pair_features::CACHED_FEATURES`] per frame,
    /// `[B][T][F]` on the host (training picks a model's columns and may swap in the chord
    /// templates); `None` for caches made before features were stored.
    pub features: Option<Vec<f32>>,
    /// The pairs' chord templates `[B][T][24]`, zeros where `has_chords` is false.
    pub templates: Option<Vec<f32>>,
    pub has_chords: Vec<bool>,
}

/// All shards of a cache folder, in memory.
#[derive(Debug, Clone)]
pub struct TokenCache {
    pub info: CacheInfo,
    context: Vec<u32>,
    target: Vec<u32>,
    category: Vec<u32>,
    song_index: Vec<u32>,
    /// `[P][T][F]` context features and `[P][T][24]` chord templates, when every shard has
    /// them (f16, as stored: half the memory of f32).
    features: Option<Vec<half::f16>>,
    templates: Option<Vec<half::f16>>,
    has_chords: Vec<bool>,
}

/// An optional f16 tensor of a shard with the given shape; `None` when the shard lacks it.
fn f16_tensor(
    st: &safetensors::SafeTensors,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Option<Vec<half::f16>>> {
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    if view.dtype() != safetensors::Dtype::F16 || view.shape() != shape {
        bail!(
            "{}: '{name}' is {:?} {:?}, expected F16 {shape:?}",
            path.display(),
            view.dtype(),
            view.shape()
        );
    }
    Ok(Some(
        view.data()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
            .collect(),
    ))
}

fn u32_tensor(
    st: &safetensors::SafeTensors,
    name: &str,
    path: &Path,
) -> Result<(Vec<usize>, Vec<u32>)> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: cache shard has no '{name}' tensor", path.display()))?;
    if view.dtype() != safetensors::Dtype::U32 {
        bail!(
            "{}: '{name}' is {:?}, expected U32",
            path.display(),
            view.dtype()
        );
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((view.shape().to_vec(), data))
}

impl TokenCache {
    /// Loads every `cache-*-of-*.safetensors` in `dir`. Errors name the folder or shard when
    /// there are none, a file is not a cache shard, shards disagree, or a shard is missing.
    pub fn open(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read token cache folder", dir.display()))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("{}: cannot read token cache folder", dir.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("cache-") && name.ends_with(".safetensors") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            bail!(
                "{}: no token cache shards (cache-I-of-N.safetensors) in this folder",
                dir.display()
            );
        }
        let mut info: Option<(CacheInfo, PathBuf)> = None;
        let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
        let mut cache = TokenCache {
            info: CacheInfo {
                tokenizer: String::new(),
                sample_rate: 0,
                frame_rate: 0.0,
                levels: 0,
                codebook_size: 0,
                frames: 0,
                shard_count: 0,
            },
            context: Vec::new(),
            target: Vec::new(),
            category: Vec::new(),
            song_index: Vec::new(),
            features: Some(Vec::new()),
            templates: Some(Vec::new()),
            has_chords: Vec::new(),
        };
        for path in &paths {
            let bytes = std::fs::read(path)
                .with_context(|| format!("{}: cannot read cache shard", path.display()))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| anyhow!("{}: not a safetensors file ({e})", path.display()))?;
            let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
                .map_err(|e| anyhow!("{}: not a safetensors file ({e})", path.display()))?;
            let meta = header.metadata().clone().unwrap_or_default();
            let get = |k: &str| -> Result<&str> {
                meta.get(k).map(String::as_str).ok_or_else(|| {
                    anyhow!(
                        "{}: not a token cache shard (no '{k}' metadata)",
                        path.display()
                    )
                })
            };
            if get("format")? != CACHE_FORMAT {
                bail!("{}: not a token cache shard", path.display());
            }
            let num = |k: &str| -> Result<usize> {
                get(k)?
                    .parse()
                    .map_err(|_| anyhow!("{}: bad '{k}' metadata", path.display()))
            };
            let this = CacheInfo {
                tokenizer: get("tokenizer")?.to_string(),
                sample_rate: num("sample_rate")? as u32,
                frame_rate: get("frame_rate")?
                    .parse()
                    .map_err(|_| anyhow!("{}: bad 'frame_rate' metadata", path.display()))?,
                levels: num("levels")?,
                codebook_size: num("codebook_size")?,
                frames: num("crop_frames")?,
                shard_count: num("shard_count")?,
            };
            let index = num("shard_index")?;
            match &info {
                None => info = Some((this.clone(), path.clone())),
                Some((first, first_path)) if *first != this => bail!(
                    "token cache shards disagree: {} has tokenizer '{}' at {} Hz, {} frames/s, \
                     {} levels x {} codes, {} frames, {} shards; {} has tokenizer '{}' at {} Hz, \
                     {} frames/s, {} levels x {} codes, {} frames, {} shards (rebuild them with \
                     one tokenizer and crop length)",
                    first_path.display(),
                    first.tokenizer,
                    first.sample_rate,
                    first.frame_rate,
                    first.levels,
                    first.codebook_size,
                    first.frames,
                    first.shard_count,
                    path.display(),
                    this.tokenizer,
                    this.sample_rate,
                    this.frame_rate,
                    this.levels,
                    this.codebook_size,
                    this.frames,
                    this.shard_count,
                ),
                Some(_) => {}
            }
            if let Some(prev) = seen.insert(index, path.clone()) {
                bail!(
                    "{} and {}: both are shard {index}",
                    prev.display(),
                    path.display()
                );
            }
            let (q, t) = (this.levels, this.frames);
            let (shape, ctx) = u32_tensor(&st, "context", path)?;
            let p = shape.first().copied().unwrap_or(0);
            if shape != [p, q, t] {
                bail!(
                    "{}: 'context' has shape {shape:?}, expected [P, {q}, {t}]",
                    path.display()
                );
            }
            let (tshape, tgt) = u32_tensor(&st, "target", path)?;
            if tshape != shape {
                bail!(
                    "{}: 'target' has shape {tshape:?}, expected {shape:?}",
                    path.display()
                );
            }
            let (cshape, cat) = u32_tensor(&st, "category", path)?;
            let (sshape, song) = u32_tensor(&st, "song_index", path)?;
            if cshape != [p] || sshape != [p] {
                bail!(
                    "{}: 'category'/'song_index' do not have {p} entries",
                    path.display()
                );
            }
            if let Some(bad) = cat.iter().find(|&&c| Category::from_id(c).is_none()) {
                bail!("{}: unknown category id {bad}", path.display());
            }
            if let Some(bad) = ctx
                .iter()
                .chain(&tgt)
                .find(|&&c| c as usize >= this.codebook_size)
            {
                bail!(
                    "{}: token {bad} is outside the codebook (size {})",
                    path.display(),
                    this.codebook_size
                );
            }
            let features =
                f16_tensor(&st, "features", &[p, t, pair_features::cached_dims()], path)?;
            let templates = f16_tensor(
                &st,
                "chord_template",
                &[p, t, pair_features::template_dims()],
                path,
            )?;
            let has_chords = match st.tensor("has_chords") {
                Ok(_) => u32_tensor(&st, "has_chords", path)?.1,
                Err(_) => vec![0; p],
            };
            if has_chords.len() != p {
                bail!("{}: 'has_chords' does not have {p} entries", path.display());
            }
            // Features are usable only when every shard has them.
            match (&mut cache.features, features) {
                (Some(all), Some(f)) => all.extend(f),
                (all, _) => *all = None,
            }
            match (&mut cache.templates, templates) {
                (Some(all), Some(f)) => all.extend(f),
                (all, _) => *all = None,
            }
            cache.has_chords.extend(has_chords.iter().map(|&h| h != 0));
            cache.context.extend(ctx);
            cache.target.extend(tgt);
            cache.category.extend(cat);
            cache.song_index.extend(song);
        }
        let (info, _) = info.expect("at least one shard");
        let missing: Vec<String> = (0..info.shard_count)
            .filter(|i| !seen.contains_key(i))
            .map(|i| {
                ShardSpec {
                    index: i,
                    count: info.shard_count,
                }
                .file_name()
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: token cache is incomplete, missing {}",
                dir.display(),
                missing.join(", ")
            );
        }
        if let Some(extra) = seen.keys().find(|&&i| i >= info.shard_count) {
            bail!("{}: shard index {extra} is out of range", dir.display());
        }
        cache.info = info;
        Ok(cache)
    }

    /// Loads several cache folders as one set of pairs, for example caches drawn from the same
    /// songs with different seeds (new crops, targets and context subsets). Each folder is
    /// checked as by [`TokenCache::open`]; the folders must agree on tokenizer, rates, levels,
    /// codebook size and frames. Song indices are kept as stored, so the held-out songs stay
    /// held out when every folder was drawn from the same song list.
    pub fn open_all(dirs: &[PathBuf]) -> Result<Self> {
        let Some((first_dir, rest)) = dirs.split_first() else {
            bail!("no token cache folder given");
        };
        let mut cache = Self::open(first_dir)?;
        for dir in rest {
            let more = Self::open(dir)?;
            let (a, b) = (&cache.info, &more.info);
            let same = a.tokenizer == b.tokenizer
                && a.sample_rate == b.sample_rate
                && a.frame_rate == b.frame_rate
                && a.levels == b.levels
                && a.codebook_size == b.codebook_size
                && a.frames == b.frames;
            if !same {
                bail!(
                    "token caches disagree: {} has tokenizer '{}' at {} Hz, {} frames/s, {} levels \
                     x {} codes, {} frames; {} has tokenizer '{}' at {} Hz, {} frames/s, {} levels \
                     x {} codes, {} frames (train on caches made with one tokenizer and crop length)",
                    first_dir.display(),
                    a.tokenizer,
                    a.sample_rate,
                    a.frame_rate,
                    a.levels,
                    a.codebook_size,
                    a.frames,
                    dir.display(),
                    b.tokenizer,
                    b.sample_rate,
                    b.frame_rate,
                    b.levels,
                    b.codebook_size,
                    b.frames,
                );
            }
            cache.context.extend(more.context);
            cache.target.extend(more.target);
            cache.category.extend(more.category);
            cache.song_index.extend(more.song_index);
            match (&mut cache.features, more.features) {
                (Some(all), Some(f)) => all.extend(f),
                (all, _) => *all = None,
            }
            match (&mut cache.templates, more.templates) {
                (Some(all), Some(f)) => all.extend(f),
                (all, _) => *all = None,
            }
            cache.has_chords.extend(more.has_chords);
        }
        Ok(cache)
    }

    /// Whether every pair has its context features stored.
    pub fn has_features(&self) -> bool {
        self.features.is_some()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.category.len()
    }

    pub fn is_empty(&self) -> bool {
        self.category.is_empty()
    }

    /// The category of pair `i`.
    pub fn category(&self, i: usize) -> Option<Category> {
        self.category.get(i).and_then(|&c| Category::from_id(c))
    }

    /// The song (index in the sorted dataset) pair `i` came from; useful for splitting off
    /// validation songs.
    pub fn song_index(&self, i: usize) -> Option<usize> {
        self.song_index.get(i).map(|&s| s as usize)
    }

    /// Context and target codes of pair `i`, each `[Q * T]` row-major.
    pub fn pair_codes(&self, i: usize) -> Option<(&[u32], &[u32])> {
        let n = self.info.levels * self.info.frames;
        (i < self.len()).then(|| {
            (
                &self.context[i * n..(i + 1) * n],
                &self.target[i * n..(i + 1) * n],
            )
        })
    }

    /// The pairs at `indices` as a batch on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let (q, t) = (self.info.levels, self.info.frames);
        let b = indices.len();
        let mut ctx = Vec::with_capacity(b * q * t);
        let mut tgt = Vec::with_capacity(b * q * t);
        let mut cat = Vec::with_capacity(b);
        for &i in indices {
            let (c, g) = self
                .pair_codes(i)
                .ok_or_else(|| anyhow!("pair {i} is out of range ({} pairs)", self.len()))?;
            ctx.extend_from_slice(c);
            tgt.extend_from_slice(g);
            cat.push(self.category[i]);
        }
        let rows = |all: &Option<Vec<half::f16>>, dims: usize| {
            all.as_ref().map(|all| {
                indices
                    .iter()
                    .flat_map(|&i| {
                        all[i * t * dims..(i + 1) * t * dims]
                            .iter()
                            .map(|v| v.to_f32())
                    })
                    .collect::<Vec<f32>>()
            })
        };
        Ok(Batch {
            context: Tensor::from_vec(ctx, (b, q, t), device)?,
            target: Tensor::from_vec(tgt, (b, q, t), device)?,
            category: Tensor::from_vec(cat, b, device)?,
            features: rows(&self.features, pair_features::cached_dims()),
            templates: rows(&self.templates, pair_features::template_dims()),
            has_chords: indices.iter().map(|&i| self.has_chords[i]).collect(),
        })
    }

    /// Random batches: each epoch visits every pair once in an order shuffled by `seed`.
    pub fn sampler(&self, seed: u64) -> BatchSampler<'_> {
        BatchSampler {
            cache: self,
            indices: (0..self.len()).collect(),
            rng: StdRng::seed_from_u64(seed),
            pos: usize::MAX,
        }
    }
}

/// Endless shuffled batches from a [`TokenCache`] (see [`TokenCache::sampler`]).
pub struct BatchSampler<'a> {
    cache: &'a TokenCache,
    indices: Vec<usize>,
    rng: StdRng,
    pos: usize,
}

impl BatchSampler<'_> {
    /// Restricts sampling to these pairs (e.g. the training songs).
    pub fn with_indices(mut self, indices: Vec<usize>) -> Self {
        self.indices = indices;
        self.pos = usize::MAX;
        self
    }

    /// The next `batch_size` pair indices, reshuffling at each epoch's end.
    pub fn next_indices(&mut self, batch_size: usize) -> Result<Vec<usize>> {
        if self.indices.is_empty() {
            bail!("the token cache has no pairs to sample");
        }
        let mut out = Vec::with_capacity(batch_size);
        while out.len() < batch_size {
            if self.pos >= self.indices.len() {
                self.indices.shuffle(&mut self.rng);
                self.pos = 0;
            }
            out.push(self.indices[self.pos]);
            self.pos += 1;
        }
        Ok(out)
    }

    /// The next batch on `device`.
    pub fn next_batch(&mut self, batch_size: usize, device: &Device) -> Result<Batch> {
        let idx = self.next_indices(batch_size)?;
        self.cache.batch(&idx, device)
    }
}
