//! Speed measurements printed by `stemgen bench`. Figures are reported next to a plain
//! matmul measured in the same run, because absolute times on a shared machine drift.

use crate::codec::encodec::{random_weights, Encodec, EncodecConfig};
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
}

/// Times EnCodec encode and decode of `seconds` of noise-like audio. Without weights the full
/// 32 kHz architecture runs with seeded random weights: speed does not depend on the values.
pub fn codec(seconds: f64, repeats: usize, model: Option<Encodec>) -> Result<CodecBench> {
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
    let enc_flop = model.encode_flops(n) / 1e9;
    let dec_flop = model.decode_flops(tokens.frames) / 1e9;
    Ok(CodecBench {
        config,
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
    })
}

impl std::fmt::Display for CodecBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "EnCodec bench: {}, {} s of audio, {} threads",
            self.config,
            self.audio_seconds,
            rayon::current_num_threads()
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
        Ok(())
    }
}
