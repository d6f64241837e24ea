//! The default tokenizer: log-magnitude STFT frames at 50 Hz, a 6-bit per-frame gain, and a
//! residual VQ learned with k-means; decoded with fast Griffin-Lim (no decoder training).
//!
//! **Tokens** (ARCHITECTURE §4: the token definition is separate from the decoder):
//! 1. mono 32 kHz, centred STFT (n_fft 2048, hop 640, periodic Hann), `ceil(len / 640)`
//!    frames, EnCodec's grid;
//! 2. per bin `dB = 20 log10(max(|X| / (sum(w) / 2), 1e-5))` (0 dB = a full-scale sinusoid,
//!    floor -100 dB). The log is the compression: k-means minimises squared dB error, which is
//!    exactly what the log-spectral distance and the log-mel metrics score;
//! 3. gain = the frame's peak dB, quantised uniformly on `[gain_min_db, gain_max_db]` to
//!    `gain_bits` bits; the shape `max(dB - gain_q, -dynamic_range_db)` (1025 values, ≤ 0 for
//!    a frame inside the gain range) is what the RVQ codes. Full-resolution bins are kept so
//!    that harmonics survive; the codebooks learn the band structure themselves;
//! 4. RVQ with `levels` levels, each by k-means on the previous level's residual.
//!
//! **Gain in the `[Q x T]` grid:** level 0 spends `gain_bits` of its `log2(codebook_size)`
//! bits on the gain: `token0 = gain_index * S0 + shape0` with `S0 = codebook_size >>
//! gain_bits` (default 2048 = 64 gain steps x 32 shape codes); levels 1.. are plain codebooks
//! of `codebook_size` codes. Every level stays below `codebook_size`, and the default is
//! 4 x 11 bits x 50 Hz = 2.2 kbps (ARCHITECTURE §4's budget is 2.5 kbps). The shipped
//! tokenizer uses 5 levels of 1024 codes (5 x 10 bits x 50 Hz = 2.5 kbps: 64 gain steps x 16
//! shapes) and the frame's mean dB as its gain (`gain_reference: mean`).
//!
//! **Decoder:** codes -> summed codewords + gain (or, when trained, the [`joint`] decoder's
//! codewords, refitted on frozen tokens) -> magnitudes -> fast Griffin-Lim
//! (`gl_iters` iterations, momentum `gl_momentum`, seeded initial phase) -> window-normalised
//! overlap-add inverse STFT.

pub mod joint;
pub mod kmeans;
pub mod metrics;
pub mod phase;
pub mod postnet;
pub mod refine;

use crate::analysis::stft::Stft;
use crate::audio::Audio;
use crate::codec::{Progress, Tokenizer, Tokens};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub use metrics::{evaluate, evaluate_levels};

/// The name [`Tokenizer::name`] reports and saved configs carry.
pub const NAME: &str = "magnitude-rvq";
/// Files of a saved tokenizer directory.
pub const CONFIG_FILE: &str = "config.json";
pub const CODEBOOKS_FILE: &str = "codebooks.safetensors";
const FORMAT_VERSION: u32 = 1;
/// Name of the refinement weights in [`CODEBOOKS_FILE`].
pub const REFINE_TENSOR: &str = "refine";
/// Prefix of the joint decoder's codewords in [`CODEBOOKS_FILE`] (`decoder0`, `decoder1`, ..).
pub const DECODER_TENSOR_PREFIX: &str = "decoder";

/// Everything that defines the tokens and the decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagnitudeConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    /// RVQ levels `Q`.
    pub levels: usize,
    /// Codes per level (level 0: gain steps x shape codes).
    pub codebook_size: usize,
    pub gain_bits: u32,
    /// What the per-frame gain measures (configs without the field: the peak).
    #[serde(default)]
    pub gain_reference: GainReference,
    pub gain_min_db: f32,
    pub gain_max_db: f32,
    /// Absolute floor of the log-magnitudes.
    pub floor_db: f32,
    /// Bins more than this below the frame's gain are clamped there.
    pub dynamic_range_db: f32,
    /// Frames each side that the learned refinement filter reads (`None`: decode the summed
    /// codewords as they are; see [`refine`]).
    #[serde(default)]
    pub refine_radius: Option<usize>,
    /// Training frames the refinement is fitted on at most.
    #[serde(default = "default_refine_frames")]
    pub refine_train_frames: usize,
    /// Full token grids decode with separate decoder codewords refitted jointly on frozen
    /// tokens (see [`joint`]); the encoder's codebooks still define the tokens.
    #[serde(default)]
    pub joint_decoder: bool,
    /// A network trained on frozen tokens corrects the (refined) decode of full token grids
    /// (see [`postnet`]).
    #[serde(default)]
    pub postnet: Option<postnet::PostnetConfig>,
    /// Paths the encoder's beam search keeps per frame (1: greedy, level by level). Part of the
    /// token definition: a model is trained on the tokens of one setting.
    #[serde(default = "default_encode_beam")]
    pub encode_beam: usize,
    /// Lloyd iterations per level.
    pub kmeans_iters: usize,
    /// Training frames per level at most (a seeded random subset beyond that).
    pub max_train_frames: usize,
    /// Fast Griffin-Lim iterations of the decoder, after the [`phase::PhaseStart`].
    pub gl_iters: usize,
    pub gl_momentum: f32,
    pub gl_seed: u64,
    /// How the decoder's phase starts (random for tokenizers saved before PGHI existed).
    #[serde(default)]
    pub phase_start: phase::PhaseStart,
}

impl Default for MagnitudeConfig {
    fn default() -> Self {
        MagnitudeConfig {
            sample_rate: 32_000,
            n_fft: 2048,
            hop: 640,
            levels: 4,
            codebook_size: 2048,
            gain_bits: 6,
            gain_reference: GainReference::Peak,
            gain_min_db: -90.0,
            gain_max_db: 6.0,
            floor_db: -100.0,
            dynamic_range_db: 80.0,
            refine_radius: None,
            refine_train_frames: default_refine_frames(),
            joint_decoder: false,
            postnet: None,
            encode_beam: 1,
            kmeans_iters: 10,
            max_train_frames: 60_000,
            gl_iters: 32,
            gl_momentum: 0.99,
            gl_seed: 0,
            phase_start: phase::PhaseStart::Random,
        }
    }
}

fn default_encode_beam() -> usize {
    1
}

fn default_refine_frames() -> usize {
    150_000
}

/// The level a frame's gain encodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GainReference {
    /// The loudest bin; bins more than `dynamic_range_db` below it are clamped there.
    #[default]
    Peak,
    /// The mean over bins: for squared dB error the best offset for any zero-mean shape, so
    /// the codebooks spend nothing on the frame's level.
    Mean,
}

impl MagnitudeConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            crate::audio::SUPPORTED_RATES.contains(&self.sample_rate),
            "sample_rate {} is not supported",
            self.sample_rate
        );
        ensure!(
            self.n_fft >= 16 && self.n_fft.is_multiple_of(2),
            "n_fft {} must be even and >= 16",
            self.n_fft
        );
        ensure!(
            self.hop >= 1 && self.hop <= self.n_fft,
            "hop {} must be in 1..=n_fft",
            self.hop
        );
        ensure!(self.levels >= 1, "levels must be at least 1");
        ensure!(
            (1..=64).contains(&self.encode_beam),
            "encode_beam {} must be in 1..=64",
            self.encode_beam
        );
        ensure!(
            self.codebook_size >= 2 && self.codebook_size <= 1 << 20,
            "codebook_size {} out of range",
            self.codebook_size
        );
        ensure!(
            self.gain_bits >= 1
                && self.gain_bits < 20
                && (1usize << self.gain_bits) < self.codebook_size
                && self.codebook_size.is_multiple_of(1 << self.gain_bits),
            "codebook_size {} must be a multiple of 2^gain_bits ({} gain bits) with room for \
             at least 2 shape codes",
            self.codebook_size,
            self.gain_bits
        );
        ensure!(
            self.gain_max_db > self.gain_min_db && self.gain_min_db >= self.floor_db,
            "gain range [{}, {}] dB is empty or below the floor {} dB",
            self.gain_min_db,
            self.gain_max_db,
            self.floor_db
        );
        ensure!(
            self.dynamic_range_db > 0.0,
            "dynamic_range_db must be positive"
        );
        ensure!(
            self.max_train_frames >= 1,
            "max_train_frames must be at least 1"
        );
        ensure!(
            (0.0..1.0).contains(&self.gl_momentum),
            "gl_momentum must be in [0, 1)"
        );
        if let Some(p) = &self.postnet {
            p.validate()?;
        }
        Ok(())
    }

    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    pub fn gain_steps(&self) -> usize {
        1 << self.gain_bits
    }

    /// Shape codes of level 0.
    pub fn level0_shapes(&self) -> usize {
        self.codebook_size >> self.gain_bits
    }

    /// The refinement filter's inputs, when the config has one.
    pub fn refine_layout(&self) -> Option<refine::Layout> {
        self.refine_radius.map(|radius| refine::Layout {
            radius,
            levels: self.levels,
        })
    }

    /// Codewords of level `q`.
    pub fn level_size(&self, q: usize) -> usize {
        if q == 0 {
            self.level0_shapes()
        } else {
            self.codebook_size
        }
    }

    pub fn frame_rate(&self) -> f64 {
        self.sample_rate as f64 / self.hop as f64
    }

    /// Bits per second of the token grid.
    pub fn bitrate(&self) -> f64 {
        self.levels as f64 * (self.codebook_size as f64).log2() * self.frame_rate()
    }

    fn gain_step_db(&self) -> f32 {
        (self.gain_max_db - self.gain_min_db) / (self.gain_steps() - 1) as f32
    }

    fn quantise_gain(&self, db: f32) -> usize {
        let i = ((db - self.gain_min_db) / self.gain_step_db()).round();
        i.clamp(0.0, (self.gain_steps() - 1) as f32) as usize
    }

    fn gain_db(&self, index: usize) -> f32 {
        self.gain_min_db + index as f32 * self.gain_step_db()
    }
}

/// Log-magnitude tokens + Griffin-Lim decoder.
pub struct MagnitudeTokenizer {
    config: MagnitudeConfig,
    /// Level `q`: `[config.level_size(q)][bins]`, row-major.
    codebooks: Vec<Vec<f32>>,
    /// Refinement weights `[bins][features]` when `config.refine_radius` is set.
    refine: Option<Vec<f32>>,
    /// Joint decoder codewords, level `q`: `[codebook_size][bins]` (level 0 indexed by the
    /// whole token, gain and shape), when `config.joint_decoder` is set.
    decoder: Option<Vec<Vec<f32>>>,
    /// The correcting network and its tensors (kept for saving) when `config.postnet` is set.
    postnet: Option<(postnet::Postnet, HashMap<String, Tensor>)>,
    stft: Stft,
}

/// Gain indices and normalised shapes `[frames][bins]` of a mono clip.
struct Analysis {
    frames: usize,
    gains: Vec<usize>,
    shapes: Vec<f32>,
}

impl MagnitudeTokenizer {
    /// Builds a tokenizer from a config, its codebooks and (when the config asks for them) its
    /// refinement filter, joint decoder codewords and postnet tensors (names without
    /// [`postnet::TENSOR_PREFIX`]), checking their shapes.
    pub fn from_parts(
        config: MagnitudeConfig,
        codebooks: Vec<Vec<f32>>,
        refine: Option<Vec<f32>>,
        decoder: Option<Vec<Vec<f32>>>,
        postnet_tensors: Option<HashMap<String, Tensor>>,
    ) -> Result<Self> {
        config.validate()?;
        ensure!(
            codebooks.len() == config.levels,
            "{} codebooks for {} levels",
            codebooks.len(),
            config.levels
        );
        for (q, cb) in codebooks.iter().enumerate() {
            let want = config.level_size(q) * config.bins();
            ensure!(
                cb.len() == want,
                "codebook {q} holds {} values, expected {} x {}",
                cb.len(),
                config.level_size(q),
                config.bins()
            );
            ensure!(
                cb.iter().all(|v| v.is_finite()),
                "codebook {q} holds non-finite values"
            );
        }
        match (config.refine_layout(), &refine) {
            (None, None) => {}
            (Some(layout), Some(w)) => {
                let want = config.bins() * layout.features();
                ensure!(
                    w.len() == want,
                    "refinement holds {} weights, expected {} bins x {}",
                    w.len(),
                    config.bins(),
                    layout.features()
                );
                ensure!(
                    w.iter().all(|v| v.is_finite()),
                    "refinement holds non-finite weights"
                );
            }
            (Some(_), None) => bail!("the config asks for a refinement filter but none is given"),
            (None, Some(_)) => bail!("a refinement filter is given but the config has none"),
        }
        match (&decoder, config.joint_decoder) {
            (None, false) => {}
            (Some(d), true) => {
                ensure!(
                    d.len() == config.levels,
                    "{} joint decoder levels for {} levels",
                    d.len(),
                    config.levels
                );
                for (q, cw) in d.iter().enumerate() {
                    ensure!(
                        cw.len() == config.codebook_size * config.bins(),
                        "joint decoder level {q} holds {} values, expected {} x {}",
                        cw.len(),
                        config.codebook_size,
                        config.bins()
                    );
                    ensure!(
                        cw.iter().all(|v| v.is_finite()),
                        "joint decoder level {q} holds non-finite values"
                    );
                }
            }
            (None, true) => bail!("the config asks for a joint decoder but none is given"),
            (Some(_), false) => bail!("joint decoder codewords are given but the config has none"),
        }
        let postnet = match (config.postnet, postnet_tensors) {
            (None, None) => None,
            (Some(p), Some(tensors)) => {
                ensure!(
                    tensors.len() == p.tensor_count(config.levels),
                    "postnet holds {} tensors, its config needs {}",
                    tensors.len(),
                    p.tensor_count(config.levels)
                );
                ensure!(
                    tensors.values().all(|t| t
                        .to_dtype(candle_core::DType::F32)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<f32>())
                        .is_ok_and(|v| v.iter().all(|x| x.is_finite()))),
                    "postnet holds non-finite weights"
                );
                let net = postnet::from_tensors(
                    p,
                    config.bins(),
                    config.levels,
                    config.codebook_size,
                    tensors.clone(),
                )?;
                Some((net, tensors))
            }
            (Some(_), None) => bail!("the config asks for a postnet but no weights are given"),
            (None, Some(_)) => bail!("postnet weights are given but the config has none"),
        };
        let stft = Stft::new(config.n_fft, config.hop);
        Ok(MagnitudeTokenizer {
            config,
            codebooks,
            refine,
            decoder,
            postnet,
            stft,
        })
    }

    pub fn config(&self) -> &MagnitudeConfig {
        &self.config
    }

    pub fn codebooks(&self) -> &[Vec<f32>] {
        &self.codebooks
    }

    /// The same tokens with another Griffin-Lim setting: the decoder is not part of the token
    /// definition, so this never changes what `encode` returns.
    pub fn with_griffin_lim(mut self, iters: usize, momentum: f32) -> Result<Self> {
        self.config.gl_iters = iters;
        self.config.gl_momentum = momentum;
        self.config.validate()?;
        Ok(self)
    }

    /// The same tokens with another phase start for the decoder (see [`phase`]).
    pub fn with_phase_start(mut self, start: phase::PhaseStart) -> Self {
        self.config.phase_start = start;
        self
    }

    /// Log-magnitudes in dB `[frames][bins]` of a mono clip at the tokenizer's rate, on the
    /// scale and floor that [`Self::decode_db`] uses (the target the tokens approximate).
    pub fn analyse_db(&self, samples: &[f32]) -> Vec<f32> {
        let (spec, _) = self.stft.forward(samples);
        let inv_scale = 1.0 / self.stft.amplitude_scale();
        let floor = 10f32.powf(self.config.floor_db / 20.0);
        spec.iter()
            .map(|c| 20.0 * (c.norm() * inv_scale).max(floor).log10())
            .collect()
    }

    /// A clip's tokens and the log-magnitudes they approximate ([`Self::analyse_db`]): what a
    /// decoder fitted on frozen tokens learns from.
    fn tokens_and_truth(&self, clip: &Audio) -> Result<(Tokens, Vec<f32>)> {
        let mono = clip.to_mono_at(self.config.sample_rate)?;
        let truth = self.analyse_db(&mono.channels[0]);
        Ok((self.encode(&mono, &mut crate::codec::no_progress())?, truth))
    }

    /// Trains the RVQ codebooks on `clips` (any rate and channel count; mixed to mono at
    /// `config.sample_rate`). Deterministic for a given seed.
    pub fn train(clips: &[Audio], config: MagnitudeConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let stft = Stft::new(config.n_fft, config.hop);
        let bins = config.bins();
        // Reserved up front: the frames of a few hundred songs take gigabytes, and growing by
        // doubling would briefly hold up to three times that.
        let expected_frames: usize = clips
            .iter()
            .map(|c| {
                let len = c.num_frames() as u64 * config.sample_rate as u64 / c.sample_rate as u64;
                len as usize / config.hop + 2
            })
            .sum();
        let mut data = Vec::with_capacity(expected_frames * bins);
        for clip in clips {
            let mono = clip.to_mono_at(config.sample_rate)?;
            let a = analyse(&config, &stft, &mono.channels[0]);
            data.extend_from_slice(&a.shapes);
        }
        let n = data.len() / bins;
        ensure!(n > 0, "no training audio: the clips hold no frames");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        if n > config.max_train_frames {
            let mut pick =
                rand::seq::index::sample(&mut rng, n, config.max_train_frames).into_vec();
            pick.sort_unstable();
            data = pick
                .iter()
                .flat_map(|&i| data[i * bins..(i + 1) * bins].iter().copied())
                .collect();
        }
        let mut codebooks = Vec::with_capacity(config.levels);
        for q in 0..config.levels {
            let cb = kmeans::kmeans(
                &data,
                bins,
                config.level_size(q),
                config.kmeans_iters,
                &mut rng,
            )?;
            let assign = kmeans::nearest(&data, bins, &cb)?;
            subtract_codewords(&mut data, bins, &cb, &assign);
            codebooks.push(cb);
        }
        let radius = config.refine_radius;
        let mut plain = config;
        plain.refine_radius = None;
        plain.joint_decoder = false;
        plain.postnet = None;
        let plain = Self::from_parts(plain, codebooks, None, None, None)?;
        match radius {
            Some(radius) => plain.with_refinement(clips, radius),
            None => Ok(plain),
        }
    }

    /// The same tokens with a refinement filter of `radius` frames fitted on `clips` (at most
    /// `config.refine_train_frames` frames of them) replacing any the tokenizer had: only the
    /// decoder changes, so token caches and models made with this tokenizer stay valid.
    pub fn with_refinement(self, clips: &[Audio], radius: usize) -> Result<Self> {
        let decoder = self.decoder;
        let mut plain = self.config.clone();
        plain.refine_radius = None;
        // A postnet was trained on the old decode, so it is dropped.
        plain.postnet = None;
        let plain = Self::from_parts(plain, self.codebooks, None, decoder, None)?;
        let mut config = plain.config.clone();
        config.refine_radius = Some(radius);
        let layout = config.refine_layout().expect("radius was just set");
        let bins = config.bins();
        let mut fit = refine::Fit::new(layout, bins);
        let mut frames = 0;
        for clip in clips {
            if frames >= config.refine_train_frames {
                break;
            }
            let (tokens, truth) = plain.tokens_and_truth(clip)?;
            let (full, partial) = plain.sum_codewords(&tokens, true)?;
            let decodes = refine::Decodes {
                full: &full,
                partial: &partial,
                frames: tokens.frames,
                bins,
            };
            fit.add(&decodes, &truth);
            frames += tokens.frames;
        }
        ensure!(frames > 0, "no audio to fit the refinement on");
        let weights = fit.solve()?;
        Self::from_parts(config, plain.codebooks, Some(weights), plain.decoder, None)
    }

    /// The same tokens with joint decoder codewords (see [`joint`]) fitted on every frame of
    /// `clips`, started from and pulled (`ridge` frames) towards the encoder's codewords, with
    /// `sweeps` Gauss-Seidel sweeps. Any refinement filter is dropped (it was fitted to the
    /// old decode). Also returns the fit's RMS error on the clips before and after.
    pub fn with_joint_decoder(
        self,
        clips: &[Audio],
        ridge: f64,
        sweeps: usize,
    ) -> Result<(Self, joint::FitError)> {
        let mut config = self.config.clone();
        config.refine_radius = None;
        config.joint_decoder = false;
        config.postnet = None;
        let plain = Self::from_parts(config.clone(), self.codebooks, None, None, None)?;
        let (bins, size) = (config.bins(), config.codebook_size);
        let mut fit = joint::JointFit::new(config.levels, size, bins);
        for clip in clips {
            let (tokens, truth) = plain.tokens_and_truth(clip)?;
            fit.add(&tokens, &truth)?;
        }
        ensure!(fit.frames() > 0, "no audio to fit the joint decoder on");
        let init = plain.encoder_codewords();
        let solved = fit.solve(&init, ridge, sweeps)?;
        config.joint_decoder = true;
        let tok = Self::from_parts(config, plain.codebooks, None, Some(solved.codewords), None)?;
        Ok((tok, solved.error))
    }

    /// The same tokens and decoder with a [`postnet`] trained on `clips` to correct the
    /// decode (replacing any postnet the tokenizer had): only the decoder changes, so token
    /// caches and models made with this tokenizer stay valid.
    pub fn with_postnet(
        self,
        clips: &[Audio],
        options: &postnet::TrainOptions,
        progress: impl FnMut(&str),
    ) -> Result<(Self, postnet::TrainReport)> {
        let mut config = self.config.clone();
        config.postnet = None;
        let base = Self::from_parts(config, self.codebooks, self.refine, self.decoder, None)?;
        let examples = clips
            .iter()
            .map(|clip| {
                let (tokens, truth_db) = base.tokens_and_truth(clip)?;
                let decode_db = base.decode_db(&tokens)?;
                Ok(postnet::Example {
                    tokens,
                    decode_db,
                    truth_db,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (tensors, report) = postnet::train(
            &examples,
            base.config.bins(),
            base.config.codebook_size,
            options,
            progress,
        )?;
        drop(examples);
        let mut config = base.config.clone();
        config.postnet = Some(options.config);
        let tok = Self::from_parts(
            config,
            base.codebooks,
            base.refine,
            base.decoder,
            Some(tensors),
        )?;
        Ok((tok, report))
    }

    /// What the plain decoder adds per token of every level, `[levels][codebook_size * bins]`
    /// (level 0: the token's gain plus its shape codeword; levels 1..: the codebooks, padded
    /// with copies of the last codeword if a level is smaller).
    fn encoder_codewords(&self) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (bins, s0) = (c.bins(), c.level0_shapes());
        (0..c.levels)
            .map(|q| {
                (0..c.codebook_size)
                    .flat_map(|code| {
                        let (row, gain) = if q == 0 {
                            (code % s0, c.gain_db(code / s0))
                        } else {
                            (code.min(c.level_size(q) - 1), 0.0)
                        };
                        self.codebooks[q][row * bins..(row + 1) * bins]
                            .iter()
                            .map(move |&v| v + gain)
                    })
                    .collect()
            })
            .collect()
    }

    /// Saves `config.json` and `codebooks.safetensors` into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        let json = serde_json::json!({
            "tokenizer": NAME,
            "format_version": FORMAT_VERSION,
            "config": self.config,
        });
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        let mut tensors = HashMap::new();
        for (q, cb) in self.codebooks.iter().enumerate() {
            let bins = self.config.bins();
            let t = Tensor::from_slice(cb, (cb.len() / bins, bins), &Device::Cpu)?;
            tensors.insert(format!("level{q}"), t);
        }
        if let (Some(w), Some(layout)) = (&self.refine, self.config.refine_layout()) {
            let t = Tensor::from_slice(w, (self.config.bins(), layout.features()), &Device::Cpu)?;
            tensors.insert(REFINE_TENSOR.to_string(), t);
        }
        for (q, cw) in self.decoder.iter().flatten().enumerate() {
            let shape = (self.config.codebook_size, self.config.bins());
            let t = Tensor::from_slice(cw, shape, &Device::Cpu)?;
            tensors.insert(format!("{DECODER_TENSOR_PREFIX}{q}"), t);
        }
        for (name, t) in self.postnet.iter().flat_map(|(_, tensors)| tensors) {
            tensors.insert(format!("{}{name}", postnet::TENSOR_PREFIX), t.clone());
        }
        let path = dir.join(CODEBOOKS_FILE);
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("{}: cannot write", path.display()))
    }

    /// Loads a directory written by [`MagnitudeTokenizer::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read tokenizer config", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        match json.get("tokenizer").and_then(|v| v.as_str()) {
            Some(NAME) => {}
            other => bail!(
                "{}: tokenizer is {:?}, expected {NAME:?}",
                path.display(),
                other
            ),
        }
        let version = json.get("format_version").and_then(|v| v.as_u64());
        ensure!(
            version == Some(FORMAT_VERSION as u64),
            "{}: format_version {:?} is not supported (expected {FORMAT_VERSION})",
            path.display(),
            version
        );
        let config: MagnitudeConfig = serde_json::from_value(
            json.get("config")
                .cloned()
                .with_context(|| format!("{}: no 'config' object", path.display()))?,
        )
        .with_context(|| format!("{}: invalid config", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;

        let path = dir.join(CODEBOOKS_FILE);
        ensure!(
            path.is_file(),
            "{}: codebook file is missing",
            path.display()
        );
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e})", path.display()))?;
        let mut codebooks = Vec::with_capacity(config.levels);
        for q in 0..config.levels {
            let name = format!("level{q}");
            let t = map
                .get(&name)
                .with_context(|| format!("{}: no '{name}' tensor", path.display()))?;
            let want = (config.level_size(q), config.bins());
            let dims = t.dims2().ok();
            ensure!(
                dims == Some(want),
                "{}: '{name}' has shape {:?}, the config needs {:?}",
                path.display(),
                t.dims(),
                want
            );
            codebooks.push(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            );
        }
        let refine = match config.refine_layout() {
            None => None,
            Some(layout) => {
                let t = map.get(REFINE_TENSOR).with_context(|| {
                    format!(
                        "{}: no '{REFINE_TENSOR}' tensor, which the config asks for",
                        path.display()
                    )
                })?;
                let want = (config.bins(), layout.features());
                ensure!(
                    t.dims2().ok() == Some(want),
                    "{}: '{REFINE_TENSOR}' has shape {:?}, the config needs {:?}",
                    path.display(),
                    t.dims(),
                    want
                );
                Some(
                    t.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1()?,
                )
            }
        };
        let decoder = if config.joint_decoder {
            let want = (config.codebook_size, config.bins());
            let levels = (0..config.levels)
                .map(|q| {
                    let name = format!("{DECODER_TENSOR_PREFIX}{q}");
                    let t = map.get(&name).with_context(|| {
                        format!(
                            "{}: no '{name}' tensor, which the config's joint decoder needs",
                            path.display()
                        )
                    })?;
                    ensure!(
                        t.dims2().ok() == Some(want),
                        "{}: '{name}' has shape {:?}, the config needs {:?}",
                        path.display(),
                        t.dims(),
                        want
                    );
                    Ok(t.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1()?)
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            Some(levels)
        } else {
            None
        };
        let postnet_tensors: Option<HashMap<String, Tensor>> = config.postnet.map(|_| {
            map.iter()
                .filter_map(|(k, t)| {
                    k.strip_prefix(postnet::TENSOR_PREFIX)
                        .map(|name| (name.to_string(), t.clone()))
                })
                .collect()
        });
        if let (Some(p), Some(t)) = (&config.postnet, &postnet_tensors) {
            ensure!(
                t.len() == p.tensor_count(config.levels),
                "{}: holds {} '{}*' tensors, the config's postnet needs {}",
                path.display(),
                t.len(),
                postnet::TENSOR_PREFIX,
                p.tensor_count(config.levels)
            );
        }
        let expected = config.levels
            + usize::from(refine.is_some())
            + decoder.as_ref().map_or(0, |d| d.len())
            + config.postnet.map_or(0, |p| p.tensor_count(config.levels));
        ensure!(
            map.len() == expected,
            "{}: holds {} tensors, the config needs {expected}",
            path.display(),
            map.len(),
        );
        Self::from_parts(config, codebooks, refine, decoder, postnet_tensors)
            .with_context(|| format!("{}", dir.display()))
    }

    /// Decoded log-magnitudes in dB `[frames][bins]` of a token grid, floored at
    /// `floor_db`, refined and corrected when the tokenizer has a refinement filter or a
    /// postnet and the grid has every level.
    pub fn decode_db(&self, tokens: &Tokens) -> Result<Vec<f32>> {
        let layout = self
            .config
            .refine_layout()
            .filter(|_| tokens.levels == self.config.levels);
        let (full, partial) = self.sum_codewords(tokens, layout.is_some())?;
        let decoded = match (layout, &self.refine) {
            (Some(layout), Some(weights)) => {
                let decodes = refine::Decodes {
                    full: &full,
                    partial: &partial,
                    frames: tokens.frames,
                    bins: self.config.bins(),
                };
                refine::apply(layout, weights, &decodes, self.config.floor_db)
            }
            _ => full,
        };
        match &self.postnet {
            Some((net, _)) if tokens.levels == self.config.levels => {
                net.apply(&decoded, tokens, self.config.floor_db)
            }
            _ => Ok(decoded),
        }
    }

    /// Gain plus summed codewords `[frames][bins]` (the joint decoder's, for a full grid when
    /// the tokenizer has one), floored; with `partials`, also the floored sums of the
    /// encoder's codewords after each level but the last.
    fn sum_codewords(&self, tokens: &Tokens, partials: bool) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let c = &self.config;
        ensure!(
            tokens.levels >= 1 && tokens.levels <= c.levels,
            "{NAME}: tokens have {} levels, this tokenizer decodes 1..={}",
            tokens.levels,
            c.levels
        );
        let bins = c.bins();
        let s0 = c.level0_shapes();
        let floored = |v: &[f32]| v.iter().map(|&x| x.max(c.floor_db)).collect::<Vec<f32>>();
        let joint = self.decoder.as_ref().filter(|_| tokens.levels == c.levels);
        // With the joint decoder, the encoder's codewords are only summed for the partials.
        let summed_levels = match joint {
            Some(_) if partials => tokens.levels - 1,
            Some(_) => 0,
            None => tokens.levels,
        };
        let mut db = vec![0.0f32; tokens.frames * bins];
        let mut partial = Vec::new();
        for q in 0..summed_levels {
            let limit = if q == 0 {
                c.codebook_size
            } else {
                c.level_size(q)
            };
            for (t, &code) in tokens.level(q).iter().enumerate() {
                let code = code as usize;
                ensure!(
                    code < limit,
                    "{NAME}: code {code} at level {q}, frame {t} is out of range (< {limit})"
                );
                let (row, gain) = if q == 0 {
                    (code % s0, Some(c.gain_db(code / s0)))
                } else {
                    (code, None)
                };
                let dst = &mut db[t * bins..(t + 1) * bins];
                if let Some(g) = gain {
                    dst.iter_mut().for_each(|d| *d += g);
                }
                for (d, &v) in dst
                    .iter_mut()
                    .zip(&self.codebooks[q][row * bins..(row + 1) * bins])
                {
                    *d += v;
                }
            }
            if partials && q + 1 < tokens.levels {
                partial.push(floored(&db));
            }
        }
        match joint {
            Some(decoder) => Ok((joint::decode(decoder, tokens, bins, c.floor_db)?, partial)),
            None => Ok((floored(&db), partial)),
        }
    }
}

/// Subtracts each row's assigned codeword from the residual rows.
fn subtract_codewords(residual: &mut [f32], bins: usize, codebook: &[f32], assign: &[(u32, f32)]) {
    for (row, &(c, _)) in residual.chunks_mut(bins).zip(assign) {
        let c = c as usize;
        for (r, &v) in row.iter_mut().zip(&codebook[c * bins..(c + 1) * bins]) {
            *r -= v;
        }
    }
}

fn analyse(config: &MagnitudeConfig, stft: &Stft, x: &[f32]) -> Analysis {
    let (spec, frames) = stft.forward(x);
    let bins = stft.bins();
    let inv_scale = 1.0 / stft.amplitude_scale();
    let floor = 10f32.powf(config.floor_db / 20.0);
    let mut gains = Vec::with_capacity(frames);
    let mut shapes = Vec::with_capacity(frames * bins);
    let mut row = vec![0.0f32; bins];
    for frame in spec.chunks(bins) {
        let mut peak = f32::NEG_INFINITY;
        let mut sum = 0.0f64;
        for (r, c) in row.iter_mut().zip(frame) {
            *r = 20.0 * (c.norm() * inv_scale).max(floor).log10();
            peak = peak.max(*r);
            sum += *r as f64;
        }
        let level = match config.gain_reference {
            GainReference::Peak => peak,
            GainReference::Mean => (sum / bins as f64) as f32,
        };
        let g = config.quantise_gain(level);
        let gq = config.gain_db(g);
        gains.push(g);
        let lowest = match config.gain_reference {
            GainReference::Peak => -config.dynamic_range_db,
            GainReference::Mean => config.floor_db - gq,
        };
        shapes.extend(row.iter().map(|&v| (v - gq).max(lowest)));
    }
    Analysis {
        frames,
        gains,
        shapes,
    }
}

impl Tokenizer for MagnitudeTokenizer {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn frame_rate(&self) -> f64 {
        self.config.frame_rate()
    }

    fn num_levels(&self) -> usize {
        self.config.levels
    }

    fn codebook_size(&self) -> usize {
        self.config.codebook_size
    }

    fn level0_gain_steps(&self) -> Option<usize> {
        Some(1 << self.config.gain_bits)
    }

    fn encode(&self, audio: &Audio, progress: Progress) -> Result<Tokens> {
        let mono = audio.to_mono_at(self.config.sample_rate)?;
        let a = analyse(&self.config, &self.stft, &mono.channels[0]);
        let bins = self.config.bins();
        let (q_n, t_n) = (self.config.levels, a.frames);
        let mut codes = vec![0u32; q_n * t_n];
        let s0 = self.config.level0_shapes() as u32;
        let mut put = |q: usize, t: usize, c: u32| {
            codes[q * t_n + t] = if q == 0 {
                a.gains[t] as u32 * s0 + c
            } else {
                c
            };
        };
        if self.config.encode_beam > 1 {
            let books: Vec<&[f32]> = self.codebooks.iter().map(|c| c.as_slice()).collect();
            let found = kmeans::beam_encode(&a.shapes, bins, &books, self.config.encode_beam)?;
            for (q, level) in found.iter().enumerate() {
                for (t, &c) in level.iter().enumerate() {
                    put(q, t, c);
                }
            }
            progress(q_n, q_n);
        } else {
            let mut residual = a.shapes;
            for q in 0..q_n {
                let cb = &self.codebooks[q];
                let assign = kmeans::nearest(&residual, bins, cb)?;
                subtract_codewords(&mut residual, bins, cb, &assign);
                for (t, &(c, _)) in assign.iter().enumerate() {
                    put(q, t, c);
                }
                progress(q + 1, q_n);
            }
        }
        Tokens::new(q_n, t_n, codes)
    }

    fn decode(&self, tokens: &Tokens, progress: Progress) -> Result<Audio> {
        let db = self.decode_db(tokens)?;
        let scale = self.stft.amplitude_scale();
        let floor = self.config.floor_db;
        let mags: Vec<f32> = db
            .iter()
            .map(|&v| 10f32.powf(v.max(floor) / 20.0) * scale)
            .collect();
        let settings = phase::PhaseSettings {
            start: self.config.phase_start,
            iters: self.config.gl_iters,
            momentum: self.config.gl_momentum,
            seed: self.config.gl_seed,
        };
        let samples = phase::reconstruct(&self.stft, &mags, tokens.frames, &settings, progress);
        Ok(Audio::mono(self.config.sample_rate, samples)?)
    }
}
