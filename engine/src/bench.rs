//! Speed measurements printed by `stemgen bench`. Figures are reported next to a plain
//! matmul measured in the same run, because absolute times on a shared machine drift.

use crate::codec::encodec::{kernel_isa, random_weights, Encodec, EncodecConfig, StageTimes};
use crate::codec::{no_progress, Tokenizer};
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;

/// Best-of-`repeats` wall time of `f` in seconds (after one warm-up call).
pub fn best_time<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut out = f()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        out = f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, out))
}

/// GFLOP/s of a square f32 candle matmul: the machine's practical compute ceiling.
pub fn matmul_gflops(n: usize, repeats: usize) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let (secs, _) = best_time(repeats, || Ok(a.matmul(&b)?))?;
    Ok(2.0 * (n * n * n) as f64 / secs / 1e9)
}

#[derive(Debug, Serialize)]
pub struct CodecBench {
    pub config: String,
    /// Instruction set of the convolution and LSTM kernels (`STEMGEN_MAX_ISA=avx2` caps it).
    pub kernels: &'static str,
    pub audio_seconds: f64,
    pub matmul_gflops: f64,
    pub encode_seconds: f64,
    pub encode_rtf: f64,
    pub encode_gflop: f64,
    pub encode_gflops: f64,
    pub decode_seconds: f64,
    pub decode_rtf: f64,
    pub decode_gflop: f64,
    pub decode_gflops: f64,
    /// Per-stage wall times (best of the repetitions), when asked for.
    pub encode_stages: StageTimes,
    pub decode_stages: StageTimes,
}

/// Times EnCodec encode and decode of `seconds` of noise-like audio. Without weights the full
/// 32 kHz architecture runs with seeded random weights: speed does not depend on the values.
pub fn codec(
    seconds: f64,
    repeats: usize,
    model: Option<Encodec>,
    stages: bool,
) -> Result<CodecBench> {
    let (model, config) = match model {
        Some(m) => (m, "loaded weights".to_string()),
        None => {
            let cfg = EncodecConfig::encodec_32khz();
            let w = random_weights(&cfg, 0, &Device::Cpu)?;
            (
                Encodec::from_tensors(w, cfg, &Device::Cpu)?,
                "encodec_32khz (random weights)".to_string(),
            )
        }
    };
    let rate = model.sample_rate();
    let n = (seconds * rate as f64) as usize;
    let samples: Vec<f32> = (0..n)
        .map(|i| 0.1 * ((i as f32 * 0.031).sin() + (i as f32 * 0.0007).cos() * 0.5))
        .collect();
    let audio = crate::audio::Audio::mono(rate, samples)?;
    let matmul = matmul_gflops(2048, repeats)?;
    let (enc, tokens) = best_time(repeats, || model.encode(&audio, &mut no_progress()))?;
    let (dec, _) = best_time(repeats, || model.decode(&tokens, &mut no_progress()))?;
    let (mut encode_stages, mut decode_stages) = (Vec::new(), Vec::new());
    if stages {
        for _ in 0..repeats.max(1) {
            let (enc, dec) = model.stage_times(&audio.channels[0]);
            keep_fastest(&mut encode_stages, enc);
            keep_fastest(&mut decode_stages, dec);
        }
    }
    let enc_flop = model.encode_flops(n) / 1e9;
    let dec_flop = model.decode_flops(tokens.frames) / 1e9;
    Ok(CodecBench {
        config,
        kernels: kernel_isa(),
        audio_seconds: seconds,
        matmul_gflops: matmul,
        encode_seconds: enc,
        encode_rtf: enc / seconds,
        encode_gflop: enc_flop,
        encode_gflops: enc_flop / enc,
        decode_seconds: dec,
        decode_rtf: dec / seconds,
        decode_gflop: dec_flop,
        decode_gflops: dec_flop / dec,
        encode_stages,
        decode_stages,
    })
}

/// Keeps the smaller time of each stage across runs (the first run fills `best`).
fn keep_fastest(best: &mut StageTimes, run: StageTimes) {
    if best.is_empty() {
        *best = run;
        return;
    }
    for ((_, b), (_, t)) in best.iter_mut().zip(run) {
        *b = b.min(t);
    }
}

impl std::fmt::Display for CodecBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "EnCodec bench: {}, {} s of audio, {} threads, {} kernels",
            self.config,
            self.audio_seconds,
            rayon::current_num_threads(),
            self.kernels
        )?;
        writeln!(
            f,
            "  plain matmul (2048^3, same run): {:.1} GFLOP/s",
            self.matmul_gflops
        )?;
        for (what, s, rtf, gflop, rate) in [
            (
                "encode",
                self.encode_seconds,
                self.encode_rtf,
                self.encode_gflop,
                self.encode_gflops,
            ),
            (
                "decode",
                self.decode_seconds,
                self.decode_rtf,
                self.decode_gflop,
                self.decode_gflops,
            ),
        ] {
            writeln!(
                f,
                "  {what}: {s:.3} s  RTF {rtf:.4}  {gflop:.1} GFLOP  {rate:.1} GFLOP/s ({:.0}% of matmul)",
                100.0 * rate / self.matmul_gflops
            )?;
        }
        for (what, stages) in [
            ("encoder", &self.encode_stages),
            ("decoder", &self.decode_stages),
        ] {
            if stages.is_empty() {
                continue;
            }
            let total: f64 = stages.iter().map(|(_, t)| t).sum();
            writeln!(f, "  {what} stages (sum {total:.3} s):")?;
            for (label, t) in stages {
                writeln!(f, "    {t:7.4} s  {label}")?;
            }
        }
        Ok(())
    }
}

/// One guided sampler iteration of the transformer: a forward of the CFG batch of 3 over
/// `frames` frames plus one level's output head.
#[derive(Debug, Serialize)]
pub struct ModelBench {
    pub name: String,
    pub params_m: f64,
    pub frames: usize,
    pub matmul_gflops: f64,
    pub iteration_seconds: f64,
    pub iteration_gflop: f64,
    pub iteration_gflops: f64,
}

/// FLOPs of one forward of `batch` sequences of `frames` frames plus one output head.
pub fn model_flops(cfg: &crate::model::ModelConfig, batch: usize, frames: usize) -> f64 {
    let (n, d, f) = (frames as f64, cfg.d_model as f64, cfg.ffn_dim() as f64);
    let per_layer = 2.0 * n * d * (3.0 * d + d + 3.0 * f) + 4.0 * n * n * d;
    let head = 2.0 * n * d * cfg.codebook_size as f64;
    batch as f64 * (cfg.n_layers as f64 * per_layer + head)
}

/// Times one guided iteration (batch 3, as the sampler runs it) with seeded random weights.
pub fn model_iteration(
    name: &str,
    cfg: &crate::model::ModelConfig,
    frames: usize,
    repeats: usize,
) -> Result<ModelBench> {
    use crate::model::ModelCheckpoint;
    let device = Device::Cpu;
    let ck = ModelCheckpoint::random(cfg, &device, 0)?;
    let q = cfg.levels;
    let codes: Vec<u32> = (0..3 * q * frames)
        .map(|i| (i * 7919 % cfg.codebook_size) as u32)
        .collect();
    let context = Tensor::from_vec(codes.clone(), (3, q, frames), &device)?;
    let target = Tensor::from_vec(codes, (3, q, frames), &device)?;
    let null = cfg.n_categories as u32;
    let category = Tensor::new(&[0u32, null, 0], &device)?;
    let dropped = [false, false, true];
    let model = ck.model.for_inference();
    let dims = cfg.context_feature_dims();
    let features = (dims > 0)
        .then(|| Tensor::zeros((3, frames, dims), candle_core::DType::F32, &device))
        .transpose()?;
    let matmul = matmul_gflops(2048, repeats)?;
    let (secs, _) = best_time(repeats, || {
        let hidden = model.hidden(&context, &target, &category, &dropped, features.as_ref())?;
        Ok(model.level_logits(&hidden, 0)?)
    })?;
    let flop = model_flops(cfg, 3, frames) / 1e9;
    Ok(ModelBench {
        name: name.to_string(),
        params_m: ck.parameter_count() as f64 / 1e6,
        frames,
        matmul_gflops: matmul,
        iteration_seconds: secs,
        iteration_gflop: flop,
        iteration_gflops: flop / secs,
    })
}

impl std::fmt::Display for ModelBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {:.1}M parameters, {} frames: {:.3} s per guided iteration (batch 3), {:.1} GFLOP, {:.1} GFLOP/s ({:.0}% of the {:.1} GFLOP/s matmul)",
            self.name,
            self.params_m,
            self.frames,
            self.iteration_seconds,
            self.iteration_gflop,
            self.iteration_gflops,
            100.0 * self.iteration_gflops / self.matmul_gflops,
            self.matmul_gflops
        )
    }
}

/// One timed generation of [`generation`].
#[derive(Debug, Serialize)]
pub struct GenerationRun {
    pub preset: String,
    pub seconds: f64,
    /// Guided model iterations (each a forward of up to 3 rows) over all windows.
    pub iterations: usize,
    pub total_s: f64,
    pub encode_s: f64,
    pub sample_s: f64,
    pub decode_s: f64,
    /// When the coarse preview (level 0 decoded) was ready, for stems of one model window.
    pub preview_s: Option<f64>,
    /// Seconds per guided iteration of the transformer (sampling time / iterations).
    pub iteration_s: f64,
    /// Achieved GFLOP/s of the forward passes (analytic FLOPs / sampling time).
    pub forward_gflops: f64,
    /// Wall time per second of audio (below 1: faster than real time).
    pub rtf: f64,
}

/// What `stemgen bench generate` measures for one model directory.
#[derive(Debug, Serialize)]
pub struct GenerationBench {
    pub model_dir: String,
    pub params_m: f64,
    pub tokenizer: String,
    pub load_s: f64,
    /// The CPU (`model name` of /proc/cpuinfo) and its logical cores.
    pub cpu: String,
    /// The plain matmul rate: the better of a measurement before the runs and one after.
    pub matmul_gflops: f64,
    /// Tokenizer encode and decode real-time factors on 10 s of the benchmark context.
    pub encode_rtf: f64,
    pub decode_rtf: f64,
    pub runs: Vec<GenerationRun>,
    /// Peak resident memory of this process (Linux `VmHWM`), if known.
    pub peak_rss_mb: Option<f64>,
}

/// "AMD EPYC (2 logical cores)": the CPU model from /proc/cpuinfo (Linux) and the cores.
pub fn cpu_name() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model} ({cores} logical cores)")
}

/// Peak resident set size of this process in MB (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Loads the model directory and generates a `bass` stem against a 120 BPM metronome context
/// for every preset and length (seed 0), timing each stage end to end as a user would see it.
/// Each cell runs `repeats` times and reports the run with the median total time: on a shared
/// 2-core machine single runs vary by 10-20%.
pub fn generation(
    model_dir: &std::path::Path,
    presets: &[crate::sample::Preset],
    lengths: &[f64],
    repeats: usize,
) -> Result<GenerationBench> {
    use crate::generate::{CategoryChoice, ContextSource, GenerateRequest, Generator, Length};
    use std::sync::atomic::AtomicBool;
    let t = Instant::now();
    let generator = Generator::load(model_dir)?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = generator.config().clone();
    let params_m = cfg.parameter_count() as f64 / 1e6;
    let matmul = matmul_gflops(2048, 2)?;
    let tok = generator.tokenizer();

    // The tokenizer alone, on 10 s of the same click context.
    let click = crate::generate::metronome(120.0, 4, 5, tok.sample_rate());
    let (enc_s, tokens) = best_time(1, || tok.encode(&click, &mut no_progress()))?;
    let (dec_s, _) = best_time(1, || tok.decode(&tokens, &mut no_progress()))?;
    let click_s = click.duration_secs();

    let cancel = AtomicBool::new(false);
    let mut runs = Vec::new();
    for &preset in presets {
        for &seconds in lengths {
            let mut request = GenerateRequest::new(
                ContextSource::Metronome {
                    bpm: 120.0,
                    beats_per_bar: 4,
                    bars: 1,
                },
                CategoryChoice::Name("bass".into()),
                generator.settings(preset),
            );
            request.length = Some(Length::Seconds(seconds));
            request.preview_levels = Some(1);
            // Forward rows per iteration: the guidance batch on the guided levels, one row
            // past them (`SamplerSettings::guided_levels`).
            let guided_levels = request.settings.guided_levels;
            let mut timed = Vec::new();
            for _ in 0..repeats.max(1) {
                let mut iterations = 0;
                let mut row_iterations = 0;
                let mut preview = None;
                let stem = generator.generate(
                    &request,
                    &mut |p| match p {
                        crate::generate::Progress::Sampling { total, level, .. } => {
                            iterations = total;
                            row_iterations += if level < guided_levels { 3 } else { 1 };
                        }
                        crate::generate::Progress::Preview { seconds, .. } => {
                            preview = Some(seconds)
                        }
                        _ => {}
                    },
                    &cancel,
                )?;
                timed.push((stem, (iterations, row_iterations, preview)));
            }
            timed.sort_by(|a, b| {
                let total = |r: &(crate::generate::GeneratedStem, (usize, usize, Option<f64>))| {
                    r.0.metadata.timings.total_s
                };
                total(a).total_cmp(&total(b))
            });
            let (stem, (iterations, row_iterations, preview)) = &timed[timed.len() / 2];
            let (iterations, preview_s) = (*iterations, *preview);
            let tm = &stem.metadata.timings;
            let frames = stem.tokens.frames.min(cfg.max_frames);
            let flop = model_flops(&cfg, 1, frames) * *row_iterations as f64 / 1e9;
            runs.push(GenerationRun {
                preset: preset.name().to_string(),
                seconds,
                iterations,
                total_s: tm.total_s,
                encode_s: tm.encode_s,
                sample_s: tm.sample_s,
                decode_s: tm.decode_s,
                preview_s,
                iteration_s: tm.sample_s / iterations.max(1) as f64,
                forward_gflops: flop / tm.sample_s,
                rtf: tm.total_s / seconds,
            });
        }
    }
    // Measured again after the runs and the better kept: a moment of contention on a shared
    // machine during one measurement would otherwise inflate every ratio to it.
    let matmul = matmul.max(matmul_gflops(2048, 2)?);
    Ok(GenerationBench {
        model_dir: model_dir.display().to_string(),
        params_m,
        tokenizer: tok.name().to_string(),
        load_s,
        cpu: cpu_name(),
        matmul_gflops: matmul,
        encode_rtf: enc_s / click_s,
        decode_rtf: dec_s / click_s,
        runs,
        peak_rss_mb: peak_rss_mb(),
    })
}

impl std::fmt::Display for GenerationBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {:.1}M parameters, tokenizer {}; loaded in {:.2} s; tokenizer RTF encode {:.3}, decode {:.3}; {}: matmul {:.0} GFLOP/s",
            self.model_dir,
            self.params_m,
            self.tokenizer,
            self.load_s,
            self.encode_rtf,
            self.decode_rtf,
            self.cpu,
            self.matmul_gflops
        )?;
        writeln!(
            f,
            "| preset | stem s | iterations | total s | preview s | encode s | sample s | decode s | s/iteration | forward GFLOP/s | RTF |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        for r in &self.runs {
            writeln!(
                f,
                "| {} | {:.0} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} ({:.0}% of matmul) | {:.3} |",
                r.preset,
                r.seconds,
                r.iterations,
                r.total_s,
                r.preview_s.map_or("-".to_string(), |s| format!("{s:.2}")),
                r.encode_s,
                r.sample_s,
                r.decode_s,
                r.iteration_s,
                r.forward_gflops,
                100.0 * r.forward_gflops / self.matmul_gflops,
                r.rtf
            )?;
        }
        if let Some(mb) = self.peak_rss_mb {
            writeln!(f, "peak memory: {mb:.0} MB")?;
        }
        Ok(())
    }
}
