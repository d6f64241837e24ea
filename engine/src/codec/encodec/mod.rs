//! EnCodec (Défossez et al.) in candle, numerically matching Hugging Face transformers'
//! `EncodecModel`: SEANet encoder/decoder with an LSTM, and a residual vector quantizer.
//!
//! candle-transformers has a port, but it pads with replicate instead of reflect (which breaks
//! parity at the edges) and has no weight-norm name variants, so the model is written here
//! from the layers in [`layers`]. The layer lists are described once ([`encoder_plan`],
//! [`decoder_plan`]) and used for loading, random weights and FLOP counts alike.

mod config;
mod cpu;
mod layers;
mod lstm;
mod quantizer;
mod weights;

pub use config::EncodecConfig;
pub use cpu::kernel_isa;
pub use weights::random_weights;

use super::{Progress, Tokenizer, Tokens};
use crate::audio::Audio;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use cpu::Signal;
use layers::{Conv1d, ConvTranspose1d, ResidualUnit};
use lstm::Lstm;
use quantizer::ResidualVq;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use weights::Checkpoint;

/// One convolution of the plan, with transformers' module name.
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl ConvSpec {
    fn new(name: String, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
            dilation: 1,
        }
    }

    /// Weight shape: `[C_out, C_in, K]` (a transposed conv stores `[C_in, C_out, K]`).
    pub fn shape(&self) -> [usize; 3] {
        [self.c_out, self.c_in, self.kernel]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TransposeSpec {
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl TransposeSpec {
    pub fn shape(&self) -> [usize; 3] {
        [self.c_in, self.c_out, self.kernel]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ResidualSpec {
    pub name: String,
    pub dim: usize,
    pub dilation: usize,
}

impl ResidualSpec {
    /// The unit's two convolutions: `block.1` (k, dilated, to dim / compress), `block.3` (1x1).
    pub fn convs(&self, cfg: &EncodecConfig) -> [ConvSpec; 2] {
        let hidden = self.dim / cfg.compress;
        let mut first = ConvSpec::new(
            format!("{}.block.1", self.name),
            self.dim,
            hidden,
            cfg.residual_kernel_size,
            1,
        );
        first.dilation = self.dilation;
        let second = ConvSpec::new(format!("{}.block.3", self.name), hidden, self.dim, 1, 1);
        [first, second]
    }
}

#[derive(Debug, Clone)]
pub(crate) enum StageSpec {
    Conv(ConvSpec),
    ConvTranspose(TransposeSpec),
    Residual(ResidualSpec),
    Lstm {
        name: String,
        dim: usize,
        layers: usize,
    },
    Elu,
}

/// The encoder's layers in transformers' `encoder.layers.{i}` numbering.
pub(crate) fn encoder_plan(cfg: &EncodecConfig) -> Vec<StageSpec> {
    let name = |i: usize| format!("encoder.layers.{i}");
    let mut plan = vec![StageSpec::Conv(ConvSpec::new(
        name(0),
        cfg.audio_channels,
        cfg.num_filters,
        cfg.kernel_size,
        1,
    ))];
    let mut dim = cfg.num_filters;
    for &ratio in cfg.upsampling_ratios.iter().rev() {
        for j in 0..cfg.num_residual_layers {
            plan.push(StageSpec::Residual(ResidualSpec {
                name: name(plan.len()),
                dim,
                dilation: cfg.dilation_growth_rate.pow(j as u32),
            }));
        }
        plan.push(StageSpec::Elu);
        let down = ConvSpec::new(name(plan.len()), dim, 2 * dim, 2 * ratio, ratio);
        plan.push(StageSpec::Conv(down));
        dim *= 2;
    }
    plan.push(StageSpec::Lstm {
        name: name(plan.len()),
        dim,
        layers: cfg.num_lstm_layers,
    });
    plan.push(StageSpec::Elu);
    let last = ConvSpec::new(
        name(plan.len()),
        dim,
        cfg.hidden_size,
        cfg.last_kernel_size,
        1,
    );
    plan.push(StageSpec::Conv(last));
    plan
}

/// The decoder's layers in transformers' `decoder.layers.{i}` numbering.
pub(crate) fn decoder_plan(cfg: &EncodecConfig) -> Vec<StageSpec> {
    let name = |i: usize| format!("decoder.layers.{i}");
    let mut dim = cfg.num_filters << cfg.upsampling_ratios.len();
    let mut plan = vec![
        StageSpec::Conv(ConvSpec::new(
            name(0),
            cfg.hidden_size,
            dim,
            cfg.kernel_size,
            1,
        )),
        StageSpec::Lstm {
            name: name(1),
            dim,
            layers: cfg.num_lstm_layers,
        },
    ];
    for &ratio in &cfg.upsampling_ratios {
        plan.push(StageSpec::Elu);
        plan.push(StageSpec::ConvTranspose(TransposeSpec {
            name: name(plan.len()),
            c_in: dim,
            c_out: dim / 2,
            kernel: 2 * ratio,
            stride: ratio,
        }));
        dim /= 2;
        for j in 0..cfg.num_residual_layers {
            plan.push(StageSpec::Residual(ResidualSpec {
                name: name(plan.len()),
                dim,
                dilation: cfg.dilation_growth_rate.pow(j as u32),
            }));
        }
    }
    plan.push(StageSpec::Elu);
    let last = ConvSpec::new(
        name(plan.len()),
        cfg.num_filters,
        cfg.audio_channels,
        cfg.last_kernel_size,
        1,
    );
    plan.push(StageSpec::Conv(last));
    plan
}

/// Multiply-add FLOPs (2 per MAC) of running `plan` on `len` input steps; returns the FLOPs and
/// the output length.
fn plan_flops(plan: &[StageSpec], cfg: &EncodecConfig, mut len: usize) -> (f64, usize) {
    let conv = |c: &ConvSpec, len: usize| {
        let out = len.div_ceil(c.stride);
        (2.0 * (c.c_in * c.c_out * c.kernel * out) as f64, out)
    };
    let mut total = 0.0;
    for spec in plan {
        match spec {
            StageSpec::Conv(c) => {
                let (f, out) = conv(c, len);
                total += f;
                len = out;
            }
            StageSpec::ConvTranspose(c) => {
                total += 2.0 * (c.c_in * c.c_out * c.kernel * len) as f64;
                len *= c.stride;
            }
            StageSpec::Residual(r) => {
                total += r.convs(cfg).iter().map(|c| conv(c, len).0).sum::<f64>()
            }
            StageSpec::Lstm { dim, layers, .. } => {
                total += (*layers * len * 2 * 2 * 4 * dim * dim) as f64;
            }
            StageSpec::Elu => {}
        }
    }
    (total, len)
}

enum Stage {
    Conv(Conv1d),
    ConvTranspose(ConvTranspose1d),
    Residual(ResidualUnit),
    Lstm(Lstm),
    Elu,
}

impl Stage {
    fn load(ck: &Checkpoint, cfg: &EncodecConfig, spec: &StageSpec) -> Result<Self> {
        Ok(match spec {
            StageSpec::Conv(c) => Stage::Conv(Conv1d::load(ck, c, cfg)?),
            StageSpec::ConvTranspose(c) => Stage::ConvTranspose(ConvTranspose1d::load(ck, c, cfg)?),
            StageSpec::Residual(r) => {
                let [a, b] = r.convs(cfg);
                Stage::Residual(ResidualUnit::new(
                    Conv1d::load(ck, &a, cfg)?,
                    Conv1d::load(ck, &b, cfg)?,
                ))
            }
            StageSpec::Lstm { name, dim, layers } => {
                Stage::Lstm(Lstm::load(ck, name, *dim, *layers)?)
            }
            StageSpec::Elu => Stage::Elu,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Stage::Conv(m) => m.forward(x),
            Stage::ConvTranspose(m) => m.forward(x),
            Stage::Residual(m) => m.forward(x),
            Stage::Lstm(m) => m.forward(x),
            Stage::Elu => Ok(x.elu(1.0)?),
        }
    }
}

impl Stage {
    /// A short label for per-stage timings, e.g. `conv 64->128 k8 s4`.
    fn label(&self) -> String {
        match self {
            Stage::Conv(m) => format!("conv {}", m.geometry()),
            Stage::ConvTranspose(m) => format!("transpose {}", m.geometry()),
            Stage::Residual(m) => format!("residual {}", m.geometry()),
            Stage::Lstm(m) => format!("lstm {}", m.geometry()),
            Stage::Elu => "elu".to_string(),
        }
    }
}

/// Wall time of each stage of one CPU pass, labelled (what `bench codec --stages` prints).
pub type StageTimes = Vec<(String, f64)>;

/// Runs the stages with the CPU kernels, fusing each ELU into the convolution after it; with
/// `timings`, records each stage's wall time.
fn run_cpu(
    stages: &[Stage],
    mut x: Signal,
    pool: &cpu::BufferPool,
    mut timings: Option<&mut StageTimes>,
) -> Signal {
    let mut i = 0;
    while i < stages.len() {
        let start = std::time::Instant::now();
        let first = i;
        let y = match (&stages[i], stages.get(i + 1)) {
            (Stage::Elu, Some(Stage::Conv(conv))) => {
                i += 1;
                conv.forward_cpu(&x, true, pool)
            }
            (Stage::Elu, Some(Stage::ConvTranspose(conv))) => {
                i += 1;
                conv.forward_cpu(&x, true, pool)
            }
            (Stage::Elu, _) => cpu::elu(&x, pool),
            (Stage::Conv(m), _) => m.forward_cpu(&x, false, pool),
            (Stage::ConvTranspose(m), _) => m.forward_cpu(&x, false, pool),
            (Stage::Residual(m), _) => m.forward_cpu(&x, pool),
            (Stage::Lstm(m), _) => m.forward_cpu(&x),
        };
        pool.give(std::mem::replace(&mut x, y).data);
        if let Some(t) = timings.as_deref_mut() {
            let fused = if i > first { "elu + " } else { "" };
            t.push((
                format!("{fused}{}", stages[i].label()),
                start.elapsed().as_secs_f64(),
            ));
        }
        i += 1;
    }
    x
}

/// Runs `stages` on `x` `[1, C, T]`: with the CPU kernels on the CPU (recycling `buffers`),
/// with candle ops elsewhere.
fn run(
    stages: &[Stage],
    x: &Tensor,
    backend: Backend,
    buffers: &Mutex<Vec<Vec<f32>>>,
) -> Result<Tensor> {
    match backend {
        Backend::CpuKernels => {
            let (_, c, t) = x.dims3()?;
            let data = x.flatten_all()?.to_vec1()?;
            let y = with_pool(buffers, |pool| {
                run_cpu(stages, Signal::new(c, t, data), pool, None)
            });
            Ok(Tensor::from_vec(
                y.data,
                (1, y.channels, y.len),
                x.device(),
            )?)
        }
        Backend::Candle => stages.iter().try_fold(x.clone(), |x, s| s.forward(&x)),
    }
}

/// Bytes of layer buffers an [`Encodec`] keeps between passes: all three large ones for clips
/// up to about 12 s (20 MB per second of audio), so repeated calls do not page-fault fresh
/// memory in every time, while an idle codec (e.g. in a plugin) holds at most this much.
const RETAINED_BUFFER_BYTES: usize = 256 << 20;

/// Runs `f` with a pool holding the buffers kept from earlier passes, then keeps the largest
/// again. Concurrent passes each get their own (the lock is held only to swap the list).
fn with_pool<R>(buffers: &Mutex<Vec<Vec<f32>>>, f: impl FnOnce(&cpu::BufferPool) -> R) -> R {
    let kept = std::mem::take(&mut *buffers.lock().unwrap_or_else(|e| e.into_inner()));
    let pool = cpu::BufferPool::with_buffers(kept);
    let result = f(&pool);
    *buffers.lock().unwrap_or_else(|e| e.into_inner()) = pool.retain(RETAINED_BUFFER_BYTES);
    result
}

/// Which implementation runs the convolution stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Strided-GEMM kernels on planar buffers (CPU only; several times faster there).
    CpuKernels,
    /// candle tensor ops (any device).
    Candle,
}

/// Long inputs are processed in windows of this many frames (30 s at 50 Hz) so memory stays
/// bounded; shorter inputs go through in one piece and match the reference exactly.
const WINDOW_FRAMES: usize = 1500;
/// Frames of context on each side of a window, discarded after processing, so that the
/// convolutions and (mostly) the LSTM see the same surroundings as a whole-file pass.
const WINDOW_CONTEXT: usize = 100;

pub struct Encodec {
    cfg: EncodecConfig,
    encoder: Vec<Stage>,
    decoder: Vec<Stage>,
    quantizer: ResidualVq,
    levels: usize,
    device: Device,
    backend: Backend,
    /// Layer buffers kept between CPU-kernel passes (see [`with_pool`]).
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl Encodec {
    /// Loads weights (safetensors) for `cfg`. Any mismatch between the two is an error naming
    /// the file and the tensor.
    pub fn load(weights: &Path, cfg: EncodecConfig, device: &Device) -> Result<Self> {
        Self::check_config(&cfg, weights)?;
        Self::build(Checkpoint::load(weights, device)?, cfg, device)
    }

    /// Builds from tensors in memory (e.g. [`random_weights`]).
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: EncodecConfig,
        device: &Device,
    ) -> Result<Self> {
        let origin = Path::new("<in-memory weights>");
        Self::check_config(&cfg, origin)?;
        Self::build(Checkpoint::from_tensors(origin, tensors)?, cfg, device)
    }

    fn check_config(cfg: &EncodecConfig, origin: &Path) -> Result<()> {
        cfg.validate()
            .with_context(|| format!("{}: unsupported EnCodec config", origin.display()))
    }

    fn build(ck: Checkpoint, cfg: EncodecConfig, device: &Device) -> Result<Self> {
        let load = |plan: Vec<StageSpec>| -> Result<Vec<Stage>> {
            plan.iter().map(|s| Stage::load(&ck, &cfg, s)).collect()
        };
        let levels = cfg.num_quantizers();
        Ok(Encodec {
            encoder: load(encoder_plan(&cfg))?,
            decoder: load(decoder_plan(&cfg))?,
            quantizer: ResidualVq::load(&ck, levels, cfg.codebook_size, cfg.hidden_size)?,
            levels,
            cfg,
            device: device.clone(),
            backend: if device.is_cpu() {
                Backend::CpuKernels
            } else {
                Backend::Candle
            },
            buffers: Mutex::default(),
        })
    }

    /// Loads weights with the config found next to them (`config.json`, Hugging Face's or
    /// ours) or, if there is none, MusicGen's 32 kHz config.
    pub fn load_with_sidecar_config(weights: &Path, device: &Device) -> Result<Self> {
        let sidecar = weights.with_file_name("config.json");
        let cfg = if sidecar.exists() {
            let text = std::fs::read_to_string(&sidecar)
                .with_context(|| format!("{}: cannot read", sidecar.display()))?;
            EncodecConfig::from_json(&text)
                .with_context(|| format!("{}: not an EnCodec config", sidecar.display()))?
        } else {
            EncodecConfig::encodec_32khz()
        };
        Self::load(weights, cfg, device)
    }

    /// Chooses the implementation (the CPU kernels need the CPU device).
    pub fn set_backend(&mut self, backend: Backend) -> Result<()> {
        anyhow::ensure!(
            backend == Backend::Candle || self.device.is_cpu(),
            "the CPU kernels need the CPU device"
        );
        self.backend = backend;
        Ok(())
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.cfg
    }

    /// Uses only the first `levels` RVQ levels (fewer bits, coarser audio).
    pub fn set_levels(&mut self, levels: usize) -> Result<()> {
        anyhow::ensure!(
            (1..=self.quantizer.levels()).contains(&levels),
            "levels must be 1..={}",
            self.quantizer.levels()
        );
        self.levels = levels;
        Ok(())
    }

    /// FLOPs to encode `samples` samples (convolutions, LSTM and RVQ search) in one pass.
    pub fn encode_flops(&self, samples: usize) -> f64 {
        let (f, frames) = plan_flops(&encoder_plan(&self.cfg), &self.cfg, samples);
        f + 2.0 * (frames * self.levels * self.cfg.codebook_size * self.cfg.hidden_size) as f64
    }

    /// FLOPs to decode `frames` token frames in one pass.
    pub fn decode_flops(&self, frames: usize) -> f64 {
        plan_flops(&decoder_plan(&self.cfg), &self.cfg, frames).0
    }

    /// Encoder output (pre-quantisation latent) `[1, D, T]` for mono samples at the codec rate.
    pub fn embed(&self, samples: &[f32]) -> Result<Tensor> {
        let x = Tensor::from_slice(samples, (1, 1, samples.len()), &self.device)?;
        run(&self.encoder, &x, self.backend, &self.buffers)
    }

    /// Codes `[levels][T]` for mono samples at the codec rate, in one pass.
    pub fn encode_samples(&self, samples: &[f32]) -> Result<Vec<Vec<u32>>> {
        self.quantize(&self.embed(samples)?.squeeze(0)?)
    }

    /// Codes `[levels][T]` of an encoder latent `[D, T]`.
    fn quantize(&self, latent: &Tensor) -> Result<Vec<Vec<u32>>> {
        self.quantizer
            .encode(&latent.t()?.contiguous()?, self.levels)
    }

    /// Per-stage wall times of one CPU-kernel pass of the encoder over `samples` and of the
    /// decoder over the latent it produces, plus the RVQ search as its own encoder stage.
    pub fn stage_times(&self, samples: &[f32]) -> (StageTimes, StageTimes) {
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        with_pool(&self.buffers, |pool| {
            let input = Signal::new(1, samples.len(), samples.to_vec());
            let latent = run_cpu(&self.encoder, input, pool, Some(&mut enc));
            let start = std::time::Instant::now();
            let codes =
                Tensor::from_slice(&latent.data, (latent.channels, latent.len), &Device::Cpu)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| self.quantize(&t));
            if codes.is_ok() {
                enc.push((
                    format!("rvq {} x {}", self.levels, self.cfg.codebook_size),
                    start.elapsed().as_secs_f64(),
                ));
            }
            run_cpu(&self.decoder, latent, pool, Some(&mut dec));
        });
        (enc, dec)
    }

    /// Mono samples at the codec rate for codes `[levels][T]`, in one pass.
    pub fn decode_codes(&self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        let latent = self.quantizer.decode(codes)?.t()?.unsqueeze(0)?;
        let audio = run(&self.decoder, &latent, self.backend, &self.buffers)?;
        Ok(audio.flatten_all()?.to_vec1()?)
    }
}

/// Splits `frames` into windows: (start, end) with context, and the core range they keep.
type Window = ((usize, usize), (usize, usize));

fn windows(frames: usize) -> Vec<Window> {
    if frames <= WINDOW_FRAMES + 2 * WINDOW_CONTEXT {
        return vec![((0, frames), (0, frames))];
    }
    (0..frames)
        .step_by(WINDOW_FRAMES)
        .map(|core_start| {
            let core_end = (core_start + WINDOW_FRAMES).min(frames);
            let start = core_start.saturating_sub(WINDOW_CONTEXT);
            let end = (core_end + WINDOW_CONTEXT).min(frames);
            ((start, end), (core_start, core_end))
        })
        .collect()
}

impl Tokenizer for Encodec {
    fn name(&self) -> &str {
        "encodec"
    }

    fn sample_rate(&self) -> u32 {
        self.cfg.sampling_rate
    }

    fn frame_rate(&self) -> f64 {
        self.cfg.frame_rate()
    }

    fn num_levels(&self) -> usize {
        self.levels
    }

    fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    fn encode(&self, audio: &Audio, progress: Progress) -> Result<Tokens> {
        if let Some((c, f)) = audio.first_non_finite() {
            anyhow::bail!("audio has a NaN or infinite sample at frame {f} of channel {c}");
        }
        let mono = audio.to_mono_at(self.cfg.sampling_rate)?;
        let samples = &mono.channels[0];
        anyhow::ensure!(!samples.is_empty(), "cannot encode empty audio");
        let hop = self.cfg.hop_length();
        let frames = samples.len().div_ceil(hop);
        let plan = windows(frames);
        let mut levels: Vec<Vec<u32>> = vec![Vec::with_capacity(frames); self.levels];
        for (i, &((start, end), (core_start, core_end))) in plan.iter().enumerate() {
            let piece = &samples[start * hop..(end * hop).min(samples.len())];
            let codes = self.encode_samples(piece)?;
            for (level, c) in levels.iter_mut().zip(codes) {
                level.extend_from_slice(&c[core_start - start..core_end - start]);
            }
            progress(i + 1, plan.len());
        }
        Tokens::new(self.levels, frames, levels.concat())
    }

    fn decode(&self, tokens: &Tokens, progress: Progress) -> Result<Audio> {
        anyhow::ensure!(
            (1..=self.quantizer.levels()).contains(&tokens.levels),
            "tokens have {} levels; this EnCodec decodes 1..={}",
            tokens.levels,
            self.quantizer.levels()
        );
        anyhow::ensure!(tokens.frames > 0, "no token frames to decode");
        let size = self.cfg.codebook_size as u32;
        if let Some(bad) = tokens.codes.iter().find(|&&c| c >= size) {
            anyhow::bail!("token {bad} is out of range for a codebook of {size}");
        }
        let hop = self.cfg.hop_length();
        let plan = windows(tokens.frames);
        let mut out = Vec::with_capacity(tokens.frames * hop);
        for (i, &((start, end), (core_start, core_end))) in plan.iter().enumerate() {
            let piece = tokens.slice_frames(start, end);
            let codes: Vec<Vec<u32>> = (0..piece.levels).map(|q| piece.level(q).to_vec()).collect();
            let samples = self.decode_codes(&codes)?;
            out.extend_from_slice(&samples[(core_start - start) * hop..(core_end - start) * hop]);
            progress(i + 1, plan.len());
        }
        Ok(Audio::mono(self.cfg.sampling_rate, out)?)
    }
}
