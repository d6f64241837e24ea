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
//! codewords, refitted on frozen tokens) -> refinement filter and postnet when trained ->
//! magnitudes -> phase ([`phase`]: a random or PGHI start, `phase_start`, then `gl_iters` fast
//! Griffin-Lim iterations with momentum `gl_momentum`) -> window-normalised overlap-add
//! inverse STFT. The shipped tokenizer decodes with PGHI and 32 iterations: as good as 96
//! iterations from random phases on mixes and isolated stems, in a third of the time.
//!
//! Files: `config.rs` holds [`MagnitudeConfig`] (the token definition and decoder settings),
//! `fit.rs` trains the codebooks and fits the decoders on frozen tokens, `save.rs` writes and
//! reads a tokenizer directory; analysis, encoding and decoding stay here.

pub mod beam;
mod config;
mod fit;
pub mod joint;
pub mod kmeans;
pub mod metrics;
pub mod phase;
pub mod postnet;
mod profiles;
pub mod refine;
pub mod retune;
mod save;

use crate::analysis::stft::Stft;
use crate::audio::Audio;
use crate::codec::{Progress, Tokenizer, Tokens};
use anyhow::{bail, ensure, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::OnceLock;

pub use config::{GainReference, LowBandEmphasis, MagnitudeConfig};
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
    /// The codebooks prepared for the beam search, made on the first beam encode (their
    /// cross products take about 0.1 s and 25 MB; decoding never needs them).
    beam_search: OnceLock<beam::BeamSearch>,
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
            beam_search: OnceLock::new(),
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

    /// The same tokenizer with the decoder's retuning (see [`retune`]) on or off.
    pub fn with_retune(mut self, retune: bool) -> Self {
        self.config.retune = retune;
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
        // Codewords live in the emphasised space; decoded dB are plain.
        let inv_weights: Option<Vec<f32>> = c
            .low_band_emphasis
            .map(|_| c.bin_weights().iter().map(|w| 1.0 / w).collect());
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
                let codeword = &self.codebooks[q][row * bins..(row + 1) * bins];
                match &inv_weights {
                    Some(inv) => {
                        for ((d, &v), &i) in dst.iter_mut().zip(codeword).zip(inv) {
                            *d += v * i;
                        }
                    }
                    None => dst.iter_mut().zip(codeword).for_each(|(d, &v)| *d += v),
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
    let weights = config.bin_weights();
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
        shapes.extend(
            row.iter()
                .zip(&weights)
                .map(|(&v, &w)| (v - gq).max(lowest) * w),
        );
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
            let found = self
                .beam_search()?
                .encode(&a.shapes, self.config.encode_beam)?;
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
        self.decode_tuned(tokens, 0.0, progress)
    }

    fn decode_tuned(&self, tokens: &Tokens, tuning: f64, progress: Progress) -> Result<Audio> {
        let mut db = self.decode_db(tokens)?;
        if self.config.retune {
            let bin_hz = self.config.sample_rate as f64 / self.config.n_fft as f64;
            retune::retune(&mut db, self.config.bins(), bin_hz, tuning);
        }
        self.audio_from_db(&db, tokens.frames, progress)
    }

    fn phase_only_roundtrip(&self, audio: &Audio) -> Option<Result<Audio>> {
        let db = self.analyse_db(&audio.channels[0]);
        let frames = db.len() / self.config.bins();
        Some(self.audio_from_db(&db, frames, &mut super::no_progress()))
    }

    fn code_profiles(&self) -> Option<super::CodeProfiles> {
        Some(super::CodeProfiles {
            pitch_classes: self.compute_pitch_class_profiles(),
            level0_brightness_db: self.compute_level0_brightness_db(),
        })
    }
}

impl MagnitudeTokenizer {
    fn beam_search(&self) -> Result<&beam::BeamSearch> {
        if let Some(search) = self.beam_search.get() {
            return Ok(search);
        }
        let books: Vec<&[f32]> = self.codebooks.iter().map(|c| c.as_slice()).collect();
        let search = beam::BeamSearch::new(&books, self.config.bins())?;
        Ok(self.beam_search.get_or_init(|| search))
    }

    /// Log-magnitudes `[frames][bins]` (dB, as [`Self::decode_db`] gives them) to audio: the
    /// tokenizer's phase reconstruction.
    fn audio_from_db(&self, db: &[f32], frames: usize, progress: Progress) -> Result<Audio> {
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
        let samples = phase::reconstruct(&self.stft, &mags, frames, &settings, progress);
        Ok(Audio::mono(self.config.sample_rate, samples)?)
    }
}
