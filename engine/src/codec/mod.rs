//! Tokenizers: audio <-> discrete tokens `[Q x T]` at a fixed frame rate.
//!
//! The model, the sampler and the plugin only ever see the [`Tokenizer`] trait, so EnCodec
//! (for users who own its weights) and the default tokenizer we train are interchangeable.

pub mod encodec;
pub mod load;
pub mod magnitude;
pub mod pitch_check;

use crate::audio::Audio;

/// Discrete tokens: `levels` rows (coarse to fine RVQ levels) of `frames` codes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub levels: usize,
    pub frames: usize,
    /// Row-major `[levels][frames]`.
    pub codes: Vec<u32>,
}

impl Tokens {
    pub fn new(levels: usize, frames: usize, codes: Vec<u32>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            codes.len() == levels * frames,
            "token grid is {levels} x {frames} but holds {} codes",
            codes.len()
        );
        Ok(Tokens {
            levels,
            frames,
            codes,
        })
    }

    pub fn level(&self, q: usize) -> &[u32] {
        &self.codes[q * self.frames..(q + 1) * self.frames]
    }

    /// The first `levels` levels only (coarser reconstruction, fewer bits).
    pub fn truncated(&self, levels: usize) -> Tokens {
        let levels = levels.min(self.levels);
        Tokens {
            levels,
            frames: self.frames,
            codes: self.codes[..levels * self.frames].to_vec(),
        }
    }

    /// Frames `start..end` of every level.
    pub fn slice_frames(&self, start: usize, end: usize) -> Tokens {
        let codes = (0..self.levels)
            .flat_map(|q| self.level(q)[start..end].iter().copied())
            .collect();
        Tokens {
            levels: self.levels,
            frames: end - start,
            codes,
        }
    }

    /// Concatenates grids with the same number of levels along time.
    pub fn concat(parts: &[Tokens]) -> anyhow::Result<Tokens> {
        let levels = parts.first().map_or(0, |p| p.levels);
        anyhow::ensure!(parts.iter().all(|p| p.levels == levels), "level mismatch");
        let frames = parts.iter().map(|p| p.frames).sum();
        let codes = (0..levels)
            .flat_map(|q| parts.iter().flat_map(move |p| p.level(q).iter().copied()))
            .collect();
        Ok(Tokens {
            levels,
            frames,
            codes,
        })
    }
}

/// Reports progress of long jobs as (done, total) units; called from the working thread.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Audio <-> tokens.
pub trait Tokenizer: Send + Sync {
    /// A short name for messages and metadata (e.g. "encodec_32khz").
    fn name(&self) -> &str;
    /// The rate the tokenizer works at; `encode` resamples anything else to it.
    fn sample_rate(&self) -> u32;
    /// Token frames per second.
    fn frame_rate(&self) -> f64;
    /// Number of RVQ levels `Q` produced by `encode`.
    fn num_levels(&self) -> usize;
    /// Codes per level.
    fn codebook_size(&self) -> usize;
    /// Gain steps folded into level 0 (level-0 code = gain index x shapes + shape), for
    /// tokens that carry a per-frame gain; a model's `gain_steps` must equal it.
    fn level0_gain_steps(&self) -> Option<usize> {
        None
    }
    /// Audio at any rate and channel count -> tokens (mixed to mono, resampled).
    fn encode(&self, audio: &Audio, progress: Progress) -> anyhow::Result<Tokens>;
    /// Tokens (any number of levels up to `num_levels`) -> mono audio at `sample_rate`.
    fn decode(&self, tokens: &Tokens, progress: Progress) -> anyhow::Result<Audio>;

    /// [`Self::decode`] for music tuned `tuning` semitones (within a half) away from A4 =
    /// 440 Hz, as `analysis::chroma::confident_tuning` measures a context: a decoder that
    /// moves partials onto the semitone grid uses that grid. Others decode as they are.
    fn decode_tuned(
        &self,
        tokens: &Tokens,
        _tuning: f64,
        progress: Progress,
    ) -> anyhow::Result<Audio> {
        self.decode(tokens, progress)
    }

    /// `audio` (mono, at `sample_rate`) through the decoder's waveform stage alone: for a
    /// tokenizer of magnitudes, its exact STFT magnitudes given to the phase reconstruction,
    /// with no tokens in between. `None` for codecs without such a stage (EnCodec). Separates
    /// what the quantisation loses from what the phase reconstruction loses.
    fn phase_only_roundtrip(&self, _audio: &Audio) -> Option<anyhow::Result<Audio>> {
        None
    }

    /// What each code does to a stem's sound, for tokens that are log-magnitude spectra;
    /// `None` for codecs whose codes have no such reading (EnCodec). The sampler's harmony
    /// prior uses it.
    fn code_profiles(&self) -> Option<CodeProfiles> {
        None
    }
    /// Samples per token frame at the native rate.
    fn hop_length(&self) -> usize {
        (self.sample_rate() as f64 / self.frame_rate()).round() as usize
    }
}

/// What each code does to a stem's sound, read off the codewords without the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeProfiles {
    /// `[levels][codes x 12]`: mean dB in each pitch class's bins, C first.
    pub pitch_classes: Vec<Vec<f32>>,
    /// Per level-0 code: how bright its shape is, the dB of its power share above
    /// [`BRIGHTNESS_EDGE_HZ`] over the dullest shape's (0 for the dullest).
    pub level0_brightness_db: Vec<f32>,
}

/// Where [`CodeProfiles::level0_brightness_db`] starts: the top of a bass line's band (the
/// edge of `stemgen eval`'s out-of-band energy for bass).
pub const BRIGHTNESS_EDGE_HZ: f64 = 1000.0;

/// A progress sink that ignores reports.
pub fn no_progress() -> impl FnMut(usize, usize) {
    |_, _| {}
}

impl Tokens {
    /// Writes the grid as safetensors: a `codes` tensor `[Q, T]` (u32) plus metadata naming the
    /// tokenizer and its rates, so a decode can check it is given the right codec.
    pub fn save(&self, path: &std::path::Path, tokenizer: &dyn Tokenizer) -> anyhow::Result<()> {
        use anyhow::Context;
        let t = candle_core::Tensor::from_slice(
            &self.codes,
            (self.levels, self.frames),
            &candle_core::Device::Cpu,
        )?;
        let meta = std::collections::HashMap::from([
            ("tokenizer".to_string(), tokenizer.name().to_string()),
            (
                "sample_rate".to_string(),
                tokenizer.sample_rate().to_string(),
            ),
            ("frame_rate".to_string(), tokenizer.frame_rate().to_string()),
            (
                "codebook_size".to_string(),
                tokenizer.codebook_size().to_string(),
            ),
        ]);
        let data = [("codes", t)];
        safetensors::tensor::serialize_to_file(data.iter().map(|(k, v)| (*k, v)), Some(meta), path)
            .with_context(|| format!("{}: cannot write tokens", path.display()))
    }

    /// Reads a grid written by [`Tokens::save`].
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: not a token file ({e})", path.display()))?;
        let codes = map
            .get("codes")
            .with_context(|| format!("{}: no 'codes' tensor", path.display()))?;
        let (levels, frames) = codes
            .dims2()
            .with_context(|| format!("{}: 'codes' is not a [Q, T] grid", path.display()))?;
        let codes = codes
            .to_dtype(candle_core::DType::U32)?
            .flatten_all()?
            .to_vec1()?;
        Tokens::new(levels, frames, codes)
    }
}
