//! The one high-level API the CLI and the plugin use (ARCHITECTURE §1, §5): load a model
//! directory once, then turn a request (context audio or a metronome, instrument, length,
//! sampler settings, optional edit) into a stem at the requested rate.
//!
//! A model directory holds `config.json` + `model.safetensors` (see [`crate::model`]) and
//! `tokenizer.json` (see [`crate::codec::load`]).
//!
//! Choices made here:
//! - **Length.** The context is mixed to mono at the tokenizer's rate and cropped or
//!   zero-padded (silence) to exactly the requested length *before* encoding, so the context
//!   tokens always span the requested frames and the padding is real silence tokens.
//! - **Windows.** Stems longer than the model's `max_frames` are generated in windows of
//!   `max_frames` frames that overlap by [`OVERLAP_FRACTION`] (25%) of a window: each window
//!   sees the last quarter of the previous one as fixed tokens and continues it. A quarter
//!   keeps enough of the groove in view; a window runs iterations in proportion to the frames
//!   it generates, so the overlap costs little and a 30 s stem costs about three 10 s ones.
//! - **Editing.** The previous take is given as audio (encoded like the context) or as the
//!   tokens of an earlier [`GeneratedStem`]; the tokens outside the region are kept exactly,
//!   and the whole take is decoded again from them. A take given as audio keeps that audio
//!   outside the region, sample for sample, with 20 ms cross-fades at the seams
//!   ([`splice_region`]).
//! - **Output.** The tokenizer decodes mono; it is resampled to the requested rate, copied
//!   to the requested channels and trimmed/padded to exactly `seconds * rate` frames.

mod conditioning;
mod metronome;
mod splice;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use serde::Serialize;

pub use conditioning::{analyse_context, ContextAnalysis, ContextKind, HarmonyRequest};
pub use metronome::metronome;
pub use splice::{splice_region, EDIT_CROSSFADE_S};

use crate::analysis::chord_recognition::recognize_chords;
use crate::analysis::context_features::FeatureFrames;
use crate::analysis::harmony::{add_key_template, apply_chords, key_of_features};
use crate::audio::{Audio, SILENCE_DBFS, SUPPORTED_RATES};
use crate::codec::load::load_tokenizer_on;
use crate::codec::{CodeProfiles, Tokenizer, Tokens};
use crate::data::categories::Category;
use crate::model::{ModelCheckpoint, ModelConfig, StemGenModel};
use crate::sample::{self, Edit, Preset, SampleError, SampleRequest, SamplerSettings};

/// Longest stem a request may ask for.
pub const MAX_SECONDS: f64 = 600.0;
/// Overlap between consecutive model windows, as a fraction of the window.
pub const OVERLAP_FRACTION: f64 = 0.25;
/// Most output channels a request may ask for.
pub const MAX_CHANNELS: usize = 32;
/// True-peak ceiling of every generated stem, dBFS: 1 dB of headroom keeps a stem from
/// clipping after resampling or lossy encoding.
pub const OUTPUT_CEILING_DBFS: f32 = -1.0;
/// Share of level 0's iterations after which a one-level preview is decoded: at `normal`
/// (12 iterations) the 4th, about 1.3 s into a 10 s stem on a 2-core CPU instead of 2-3 s after
/// the whole level. Its frames are the ones decided so far plus the current candidates of
/// the rest: the groove and the level contour are there, the detail is rough.
pub const EARLY_PREVIEW_SHARE: f64 = 0.3;

/// What the new stem listens to.
#[derive(Debug, Clone)]
pub enum ContextSource {
    /// Existing music at any rate and channel count.
    Audio(Audio),
    /// A synthesized click track (downbeats accented), see [`metronome`].
    Metronome {
        bpm: f64,
        /// Time signature numerator (beats are quarter notes).
        beats_per_bar: u32,
        bars: u32,
    },
}

/// Which instrument to generate.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoryChoice {
    Id(u32),
    /// A name from the category table (`bass`, `drums`, ...; see [`Category::from_name`]).
    Name(String),
}

/// How long the stem is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Seconds(f64),
    Bars {
        bars: f64,
        bpm: f64,
        beats_per_bar: u32,
    },
}

/// The take to edit: audio (e.g. a WAV of an earlier take) or an earlier stem's tokens.
#[derive(Debug, Clone)]
pub enum PreviousTake {
    Audio(Audio),
    Tokens(Tokens),
}

/// Regenerate only `region` (seconds from the start) of `previous`.
#[derive(Debug, Clone)]
pub struct EditRequest {
    pub region: Range<f64>,
    pub previous: PreviousTake,
}

/// Everything one generation needs besides the model.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub context: ContextSource,
    pub category: CategoryChoice,
    /// `None`: the context's own length (the metronome's bars).
    pub length: Option<Length>,
    /// Steps must have one entry per model level ([`Generator::settings`] builds them).
    pub settings: SamplerSettings,
    pub edit: Option<EditRequest>,
    /// Rate and channel count of the returned audio.
    pub output_rate: u32,
    pub output_channels: usize,
    /// Chords or a key from the producer (models with context features).
    pub harmony: HarmonyRequest,
    /// Report a [`Progress::Preview`] of this many levels (`None`: no preview). 1: an early
    /// preview of level 0 after [`EARLY_PREVIEW_SHARE`] of its iterations, the frames not yet
    /// decided filled by their current candidates; more: once that many levels are decided.
    /// It covers the first model window (the rest of a longer stem is silent).
    pub preview_levels: Option<usize>,
}

impl GenerateRequest {
    /// A request with the tokenizer-independent defaults: 44.1 kHz stereo output, no edit,
    /// the context's length.
    pub fn new(
        context: ContextSource,
        category: CategoryChoice,
        settings: SamplerSettings,
    ) -> Self {
        GenerateRequest {
            context,
            category,
            length: None,
            settings,
            edit: None,
            output_rate: 44_100,
            output_channels: 2,
            harmony: HarmonyRequest::default(),
            preview_levels: None,
        }
    }
}

/// Reported while generating; called on the generating thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Encoding the context (and the previous take): pieces done of total.
    Encoding { done: usize, total: usize },
    /// After every sampler iteration.
    Sampling {
        window: usize,
        windows: usize,
        level: usize,
        levels: usize,
        step: usize,
        steps: usize,
        /// Iterations done and total over the whole stem.
        done: usize,
        total: usize,
    },
    /// Decoding the tokens: pieces done of total.
    Decoding { done: usize, total: usize },
    /// A coarse version of the stem (the first `levels` levels decoded), shaped like the
    /// final take, `seconds` after the request started; the full take replaces it. For a
    /// stem longer than one model window it covers the first window and is silent after it
    /// (the later windows are sampled after the first one's finer levels).
    Preview {
        audio: std::sync::Arc<Audio>,
        levels: usize,
        seconds: f64,
    },
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub encode_s: f64,
    pub sample_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
}

/// What a take was made with (written next to it by callers that keep takes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StemMetadata {
    pub seed: u64,
    pub settings: SamplerSettings,
    pub category_id: u32,
    pub category: String,
    /// `"audio"` or `"metronome"`.
    pub context: String,
    pub tempo_bpm: Option<f64>,
    pub beats_per_bar: Option<u32>,
    pub bars: Option<f64>,
    pub seconds: f64,
    pub frames: usize,
    /// Edited region in seconds, if this take is an edit.
    pub region: Option<(f64, f64)>,
    pub tokenizer: String,
    /// The chord chart and key the producer gave, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chords: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The model was given no context features (`--no-context-features`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_context_features: bool,
    /// The tuning the decoder put the stem's low partials on, in cents from A4 = 440 Hz:
    /// the context's, where its pitches agree on one; absent: 440 Hz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning_cents: Option<f64>,
    /// The output stage's gain in dB: 0, or what brought the true peak down to
    /// [`OUTPUT_CEILING_DBFS`].
    pub output_gain_db: f32,
    pub sample_rate: u32,
    pub channels: usize,
    pub timings: Timings,
}

/// A generated stem.
#[derive(Debug, Clone)]
pub struct GeneratedStem {
    pub audio: Audio,
    /// The target tokens `[Q x frames]` (keep them to edit this take exactly later).
    pub tokens: Tokens,
    pub metadata: StemMetadata,
}

/// True when `err` is a generation stopped by the cancel token.
pub fn is_cancelled(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<SampleError>(),
        Some(SampleError::Cancelled)
    )
}

/// A loaded model and tokenizer, ready to generate any number of stems.
pub struct Generator {
    model: StemGenModel,
    tokenizer: Box<dyn Tokenizer>,
    model_dir: PathBuf,
    /// The tokenizer's code profiles for the harmony prior, computed on first use.
    code_profiles: OnceLock<Option<CodeProfiles>>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("model_dir", &self.model_dir)
            .field("config", self.config())
            .field("tokenizer", &self.tokenizer.name())
            .finish()
    }
}

impl Generator {
    /// Loads the model (fused inference copy) and the tokenizer of `model_dir` on the CPU.
    pub fn load(model_dir: &Path) -> Result<Self> {
        Self::load_on(model_dir, &Device::Cpu)
    }

    /// Loads the model and the tokenizer of `model_dir` on `device`.
    pub fn load_on(model_dir: &Path, device: &Device) -> Result<Self> {
        ensure!(
            model_dir.is_dir(),
            "{}: not a model directory (it does not exist)",
            model_dir.display()
        );
        let checkpoint = ModelCheckpoint::load(model_dir, device)?;
        let tokenizer = load_tokenizer_on(model_dir, device)?;
        let mut generator = Self::from_parts(checkpoint.model.for_inference(), tokenizer)?;
        generator.model_dir = model_dir.to_path_buf();
        Ok(generator)
    }

    /// A generator from an already built model and tokenizer; they must agree on the levels
    /// and the codebook size.
    pub fn from_parts(model: StemGenModel, tokenizer: Box<dyn Tokenizer>) -> Result<Self> {
        let config = model.config();
        ensure!(
            tokenizer.num_levels() == config.levels
                && tokenizer.codebook_size() == config.codebook_size,
            "the tokenizer ({}) produces {} levels of {} codes but the model expects {} levels \
             of {} codes; tokenizer.json does not match this model",
            tokenizer.name(),
            tokenizer.num_levels(),
            tokenizer.codebook_size(),
            config.levels,
            config.codebook_size
        );
        let model = if model.is_inference() {
            model
        } else {
            model.for_inference()
        };
        Ok(Generator {
            model,
            tokenizer,
            model_dir: PathBuf::new(),
            code_profiles: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn tokenizer(&self) -> &dyn Tokenizer {
        self.tokenizer.as_ref()
    }

    /// The directory this generator was loaded from (empty for [`Self::from_parts`]).
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// The profiles the harmony prior needs, when it is on, the category plays pitches and
    /// the tokenizer's codes are spectra.
    fn code_profiles_for(
        &self,
        category: u32,
        settings: &SamplerSettings,
    ) -> Option<&CodeProfiles> {
        let pitched = Category::from_id(category).is_some_and(|c| c.is_pitched());
        if settings.harmony_prior <= 0.0 || !pitched {
            return None;
        }
        self.code_profiles
            .get_or_init(|| self.tokenizer.code_profiles())
            .as_ref()
    }

    /// A preset's settings for this model's number of levels.
    pub fn settings(&self, preset: Preset) -> SamplerSettings {
        SamplerSettings::preset(preset, self.config().levels)
    }

    /// Resolves a category choice to (id, name) for this model.
    pub fn resolve_category(&self, choice: &CategoryChoice) -> Result<(u32, String)> {
        let n = self.config().n_categories;
        let id = match choice {
            CategoryChoice::Name(name) => Category::from_name(name)?.id(),
            CategoryChoice::Id(id) => *id,
        };
        ensure!(
            (id as usize) < n,
            "instrument category {id} is not one this model knows (it has categories 0..{n})"
        );
        let name =
            Category::from_id(id).map_or_else(|| format!("category-{id}"), |c| c.name().into());
        Ok((id, name))
    }

    /// Generates one stem; see the module docs for what happens to lengths and channels.
    ///
    /// `progress` is called on this thread; `cancel` is checked before encoding, before
    /// every sampler iteration and before decoding; a cancelled generation returns an error
    /// for which [`is_cancelled`] is true.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<GeneratedStem> {
        let started = Instant::now();
        let tok = self.tokenizer.as_ref();
        let config = self.config();
        let frame_rate = tok.frame_rate();
        let hop = tok.hop_length();
        let (category_id, category_name) = self.resolve_category(&request.category)?;
        ensure!(
            SUPPORTED_RATES.contains(&request.output_rate),
            "output sample rate {} Hz is outside the supported 8-192 kHz",
            request.output_rate
        );
        ensure!(
            (1..=MAX_CHANNELS).contains(&request.output_channels),
            "output channel count {} must be 1..={MAX_CHANNELS}",
            request.output_channels
        );
        request
            .settings
            .validate(config.levels)
            .map_err(anyhow::Error::from)?;

        // Length first (checked before any audio is synthesized or resampled), then the
        // context audio, mono at the tokenizer's rate.
        let mut tempo = None;
        if let ContextSource::Metronome {
            bpm,
            beats_per_bar,
            bars,
        } = request.context
        {
            check_tempo(bpm, beats_per_bar, bars as f64)?;
            tempo = Some((bpm, beats_per_bar, bars as f64));
        }
        let seconds = match request.length {
            Some(len) => {
                if let Length::Bars {
                    bars,
                    bpm,
                    beats_per_bar,
                } = len
                {
                    tempo = Some((bpm, beats_per_bar, bars));
                }
                length_seconds(&len)?
            }
            None => match &request.context {
                ContextSource::Audio(a) => a.duration_secs(),
                ContextSource::Metronome {
                    bpm,
                    beats_per_bar,
                    bars,
                } => *bars as f64 * *beats_per_bar as f64 * 60.0 / bpm,
            },
        };
        check_seconds(seconds)?;
        let frames = ((seconds * frame_rate).round() as usize).max(1);
        let samples = frames * hop;
        let (context_audio, context_kind) = match &request.context {
            ContextSource::Audio(audio) => {
                check_context_audio(audio, frame_rate)?;
                (audio.to_mono_at(tok.sample_rate())?, ContextKind::Audio)
            }
            ContextSource::Metronome {
                bpm,
                beats_per_bar,
                bars,
            } => {
                // Enough bars to cover a longer requested length too (at most 10 minutes).
                let bar_s = *beats_per_bar as f64 * 60.0 / bpm;
                let bars = (*bars).max((seconds / bar_s).ceil() as u32);
                let click = metronome(*bpm, *beats_per_bar, bars, tok.sample_rate());
                (click, ContextKind::Metronome)
            }
        };

        // Encode the context (and the previous take) at exactly `frames` frames.
        check_cancel(cancel)?;
        let t0 = Instant::now();
        let context = encode_fitted(tok, &context_audio, samples, progress)
            .context("cannot encode the context")?;
        ensure!(
            context.frames == frames,
            "internal error: the context encoded to {} frames, expected {frames}",
            context.frames
        );
        let mut fitted = context_audio.clone();
        fitted.channels.truncate(1);
        fitted.channels[0].resize(samples, 0.0);
        let ContextAnalysis { features, tuning } = analyse_context(
            config,
            &fitted,
            context_kind,
            frame_rate,
            frames,
            tempo.map(|(bpm, beats_per_bar, _)| (bpm, beats_per_bar)),
            &request.harmony,
        )?;
        let bass_chords = match &features {
            Some(f) if Category::from_id(category_id) == Some(Category::Bass) => {
                bass_chords(f, &request.harmony, frame_rate)
            }
            _ => None,
        };
        let edit = match &request.edit {
            None => None,
            Some(e) => Some(self.prepare_edit(e, seconds, frames, samples, progress)?),
        };
        let encode_s = t0.elapsed().as_secs_f64();

        // Sample.
        let t1 = Instant::now();
        let window = config.max_frames;
        let overlap = ((window as f64 * OVERLAP_FRACTION) as usize).min(window.saturating_sub(1));
        let sample_request = SampleRequest {
            context: &context,
            category: category_id,
            edit: edit.as_ref().map(|(previous, region)| Edit {
                previous,
                region: region.clone(),
            }),
            window: Some(window),
            overlap,
            features: features.as_ref(),
            code_profiles: self.code_profiles_for(category_id, &request.settings),
            bass_chords: bass_chords.as_ref(),
            sustained_notes: Category::from_id(category_id).is_some_and(Category::sustains_notes),
        };
        let levels = config.levels;
        let tokens = sample::sample(
            &self.model,
            &sample_request,
            &request.settings,
            &mut |r| {
                progress(Progress::Sampling {
                    window: r.window,
                    windows: r.windows,
                    level: r.level,
                    levels,
                    step: r.step,
                    steps: r.steps,
                    done: r.done,
                    total: r.total,
                });
                // A coarse preview once the first window's first levels exist (level 0's
                // draft for one level): all of a one-window stem; the first window of a
                // longer one (the rest silent).
                let wanted = request.preview_levels.map(|l| l.clamp(1, levels));
                let codes = match wanted {
                    Some(1) if r.level == 0 && r.step == early_preview_step(r.steps) => {
                        r.draft_codes.or(r.level_codes)
                    }
                    Some(w) if w > 1 && r.level + 1 == w => r.level_codes,
                    _ => None,
                };
                if let (Some(codes), Some(wanted), 0) = (codes, wanted, r.window) {
                    if wanted < levels {
                        let width = r.window_frames.len();
                        let coarse = Tokens {
                            levels: wanted,
                            frames: width,
                            codes: codes[..wanted * width].to_vec(),
                        };
                        let lead = (r.window_frames.start as f64 / frame_rate
                            * tok.sample_rate() as f64)
                            .round() as usize;
                        // A preview that cannot be made is skipped; the take still comes.
                        let preview = tok
                            .decode_tuned(
                                &coarse,
                                tuning.unwrap_or(0.0),
                                &mut crate::codec::no_progress(),
                            )
                            .map(|decoded| delayed(decoded, lead))
                            .and_then(|decoded| finish_audio(decoded, request, seconds));
                        if let Ok((audio, _)) = preview {
                            progress(Progress::Preview {
                                audio: std::sync::Arc::new(audio),
                                levels: wanted,
                                seconds: started.elapsed().as_secs_f64(),
                            });
                        }
                    }
                }
            },
            Some(cancel),
        )?;
        let sample_s = t1.elapsed().as_secs_f64();

        // Decode and shape the output.
        check_cancel(cancel)?;
        let t2 = Instant::now();
        let decoded = tok
            .decode_tuned(&tokens, tuning.unwrap_or(0.0), &mut |done, total| {
                progress(Progress::Decoding { done, total })
            })
            .context("cannot decode the generated tokens")?;
        let (audio, output_gain_db) = finish_audio(decoded, request, seconds)?;
        let decode_s = t2.elapsed().as_secs_f64();

        let metadata = StemMetadata {
            seed: request.settings.seed,
            settings: request.settings.clone(),
            category_id,
            category: category_name,
            context: context_kind.name().into(),
            tempo_bpm: tempo.map(|t| t.0),
            beats_per_bar: tempo.map(|t| t.1),
            bars: tempo.map(|t| t.2),
            seconds,
            frames,
            region: request
                .edit
                .as_ref()
                .map(|e| (e.region.start, e.region.end)),
            tokenizer: tok.name().into(),
            chords: request.harmony.chords.as_ref().map(|c| c.text.clone()),
            key: request.harmony.key.map(|k| k.to_string()),
            no_context_features: request.harmony.no_features,
            tuning_cents: tuning.map(|t| t * 100.0),
            output_gain_db,
            sample_rate: request.output_rate,
            channels: request.output_channels,
            timings: Timings {
                encode_s,
                sample_s,
                decode_s,
                total_s: started.elapsed().as_secs_f64(),
            },
        };
        Ok(GeneratedStem {
            audio,
            tokens,
            metadata,
        })
    }

    /// The previous take's tokens at `frames` frames and the region in frames.
    fn prepare_edit(
        &self,
        edit: &EditRequest,
        seconds: f64,
        frames: usize,
        samples: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Tokens, Range<usize>)> {
        let Range { start, end } = edit.region;
        ensure!(
            start.is_finite() && end.is_finite() && 0.0 <= start && start < end,
            "edit region {start}..{end} s must be a non-empty range of seconds from 0"
        );
        ensure!(
            start < seconds,
            "edit region {start}..{end} s starts after the end of the {seconds:.2} s stem"
        );
        let frame_rate = self.tokenizer.frame_rate();
        let a = ((start * frame_rate).floor() as usize).min(frames - 1);
        let b = ((end * frame_rate).ceil() as usize).clamp(a + 1, frames);
        let previous = match &edit.previous {
            PreviousTake::Tokens(t) => {
                ensure!(
                    t.levels == self.config().levels && t.frames == frames,
                    "the previous take has {} levels x {} frames; this stem needs {} x {frames}",
                    t.levels,
                    t.frames,
                    self.config().levels
                );
                t.clone()
            }
            PreviousTake::Audio(audio) => {
                ensure!(
                    audio.num_frames() > 0,
                    "the previous take is empty; edit needs the take to change"
                );
                if let Some((c, f)) = audio.first_non_finite() {
                    bail!("the previous take has a NaN or infinite sample at frame {f} of channel {c}");
                }
                let mono = audio.to_mono_at(self.tokenizer.sample_rate())?;
                encode_fitted(self.tokenizer.as_ref(), &mono, samples, progress)
                    .context("cannot encode the previous take")?
            }
        };
        Ok((previous, a..b))
    }
}

/// The decoded tokens as the request wants them: at its rate and channel count, exactly
/// `seconds` long, through the true-peak output stage (its gain in dB is returned), and an
/// edit of a take given as audio spliced into that audio.
fn finish_audio(decoded: Audio, request: &GenerateRequest, seconds: f64) -> Result<(Audio, f32)> {
    let mut audio = decoded
        .resampled(request.output_rate)?
        .with_channels(request.output_channels);
    let out_len = (seconds * request.output_rate as f64).round() as usize;
    for ch in &mut audio.channels {
        ch.resize(out_len, 0.0);
    }
    if let Some((c, f)) = audio.first_non_finite() {
        bail!(
            "internal error: the decoded stem has a non-finite sample at frame {f} of channel {c}"
        );
    }
    let gain_db = crate::audio::limit_true_peak(&mut audio.channels, OUTPUT_CEILING_DBFS);
    if let Some(EditRequest {
        region,
        previous: PreviousTake::Audio(previous),
    }) = &request.edit
    {
        let mut shaped = previous
            .resampled(request.output_rate)?
            .with_channels(request.output_channels);
        for ch in &mut shaped.channels {
            ch.resize(out_len, 0.0);
        }
        splice_region(&shaped, &mut audio, region);
    }
    Ok((audio, gain_db))
}

/// Weight of the key's template (tonic triad 1, other scale tones 0.5) added to the chords'
/// chroma in a bass line's prior target. A bass that plays the chords' roots alone is
/// ambiguous between neighbouring keys (roots G, E, C, D, A sit in G and C major alike);
/// the key's scale tips its passing notes and chord tones toward the song's key and away
/// from notes outside it. The README's example song, seeds 1-24, bass in G major or E minor
/// (`stemgen coherence`): heard chords alone 14 of 24, with the key at 0.5 17, at 1.0 23
/// (before heard chords: 8).
const BASS_KEY_WEIGHT: f32 = 1.0;

/// The harmony a bass stem follows, as features: the chords (the producer's, already in
/// `features`, or those heard in the measured context by [`recognize_chords`], written over
/// a copy) plus the key's template ([`BASS_KEY_WEIGHT`]; the producer's key, or the one the
/// chroma implies). Without features (dropped) there is nothing to follow.
fn bass_chords(
    features: &FeatureFrames,
    harmony: &HarmonyRequest,
    frame_rate: f64,
) -> Option<FeatureFrames> {
    if harmony.no_features {
        return None;
    }
    let given = harmony.chords.is_some() || !harmony.timed_chords.is_empty();
    let mut chords = features.clone();
    if !given {
        apply_chords(
            &mut chords,
            &recognize_chords(features, frame_rate),
            frame_rate,
        );
    }
    if let Some(key) = harmony.key.or_else(|| key_of_features(features)) {
        add_key_template(&mut chords, key, BASS_KEY_WEIGHT);
    }
    Some(chords)
}

/// The level-0 iteration after which the one-level preview is decoded (of `steps`).
fn early_preview_step(steps: usize) -> usize {
    ((steps as f64 * EARLY_PREVIEW_SHARE).ceil() as usize).clamp(1, steps.max(1))
}

/// `audio` starting `lead` samples later (silence before it).
fn delayed(mut audio: Audio, lead: usize) -> Audio {
    if lead > 0 {
        for ch in &mut audio.channels {
            ch.splice(0..0, std::iter::repeat_n(0.0, lead));
        }
    }
    audio
}

/// Seconds of a [`Length`], checked.
fn length_seconds(length: &Length) -> Result<f64> {
    match *length {
        Length::Seconds(s) => Ok(s),
        Length::Bars {
            bars,
            bpm,
            beats_per_bar,
        } => {
            check_tempo(bpm, beats_per_bar, bars)?;
            Ok(bars * beats_per_bar as f64 * 60.0 / bpm)
        }
    }
}

fn check_tempo(bpm: f64, beats_per_bar: u32, bars: f64) -> Result<()> {
    ensure!(
        bpm.is_finite() && (20.0..=400.0).contains(&bpm),
        "tempo {bpm} BPM must be between 20 and 400"
    );
    ensure!(
        (1..=32).contains(&beats_per_bar),
        "{beats_per_bar} beats per bar must be between 1 and 32"
    );
    ensure!(
        bars.is_finite() && bars > 0.0,
        "the number of bars ({bars}) must be positive"
    );
    Ok(())
}

fn check_seconds(seconds: f64) -> Result<()> {
    ensure!(
        seconds.is_finite() && seconds > 0.0,
        "the stem length ({seconds} s) must be positive"
    );
    ensure!(
        seconds <= MAX_SECONDS,
        "a {seconds:.1} s stem is longer than the {MAX_SECONDS:.0} s (10 minute) limit; \
         generate it in parts"
    );
    Ok(())
}

fn check_context_audio(audio: &Audio, frame_rate: f64) -> Result<()> {
    if let Some((c, f)) = audio.first_non_finite() {
        bail!("the context has a NaN or infinite sample at frame {f} of channel {c}");
    }
    ensure!(
        audio.duration_secs() * frame_rate >= 1.0,
        "the context is {:.1} ms long, shorter than one token frame ({:.1} ms); give at least \
         one frame of music",
        audio.duration_secs() * 1e3,
        1e3 / frame_rate
    );
    ensure!(
        !audio.is_silent(SILENCE_DBFS),
        "the context is silent (below {SILENCE_DBFS} dBFS RMS); give music to listen to, or \
         use a metronome context"
    );
    Ok(())
}

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(SampleError::Cancelled.into());
    }
    Ok(())
}

/// Mono audio at the tokenizer's rate, cropped or zero-padded to `samples`, encoded.
fn encode_fitted(
    tok: &dyn Tokenizer,
    mono: &Audio,
    samples: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Tokens> {
    let mut fitted = mono.clone();
    fitted.channels.truncate(1);
    fitted.channels[0].resize(samples, 0.0);
    tok.encode(&fitted, &mut |done, total| {
        progress(Progress::Encoding { done, total })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::context_features::ContextFeature;
    use crate::analysis::harmony::ChordChart;

    /// Measured features of 40 frames at 10 frames/s: an A minor chroma, a bass chroma on
    /// E (a voicing's low note), beats every 5 frames.
    fn measured() -> FeatureFrames {
        let mut f = FeatureFrames::zeros(&ContextFeature::ALL, 40);
        f.replace(ContextFeature::Chroma, |_| {
            let mut v = vec![0.0; 12];
            [9, 0, 4].iter().for_each(|&c| v[c] = 1.0);
            v
        });
        f.replace(ContextFeature::BassChroma, |_| {
            let mut v = vec![0.0; 12];
            v[4] = 1.0;
            v
        });
        f.replace(ContextFeature::BeatPhase, |n| {
            let p = std::f32::consts::TAU * (n % 5) as f32 / 5.0;
            vec![p.sin(), p.cos()]
        });
        f
    }

    #[test]
    fn a_bass_follows_the_chords_heard_in_a_measured_context() {
        let f = measured();
        let chords = bass_chords(&f, &HarmonyRequest::default(), 10.0).unwrap();
        let bass = chords.offset(ContextFeature::BassChroma).unwrap();
        // The heard chord's root (A), not the measured low note (E).
        assert!(
            (0..40).all(|n| chords.frame(n)[bass + 9] == 1.0 && chords.frame(n)[bass + 4] == 0.0)
        );
        // Onsets and beats stay measured.
        let beat = f.offset(ContextFeature::BeatPhase).unwrap();
        assert_eq!(chords.frame(7)[beat..beat + 2], f.frame(7)[beat..beat + 2]);
    }

    #[test]
    fn given_chords_are_followed_as_given_and_dropped_features_give_nothing() {
        let f = measured();
        let given = HarmonyRequest {
            chords: Some(ChordChart::parse("C").unwrap()),
            ..HarmonyRequest::default()
        };
        // `features` already carry the given chords (analyse_context wrote them): their
        // bass notes stay, and the key they imply joins the chroma.
        let chords = bass_chords(&f, &given, 10.0).unwrap();
        let (c, b) = (
            f.offset(ContextFeature::Chroma).unwrap(),
            f.offset(ContextFeature::BassChroma).unwrap(),
        );
        let key = key_of_features(&f).unwrap();
        assert_eq!(key.to_string(), "A minor");
        let template = crate::analysis::harmony::key_template(key);
        for n in 0..40 {
            assert_eq!(chords.frame(n)[b..b + 12], f.frame(n)[b..b + 12]);
            let added = chords.frame(n)[c..c + 12]
                .iter()
                .zip(&f.frame(n)[c..c + 12])
                .map(|(x, y)| x - y);
            for (added, t) in added.zip(template) {
                assert!((added - BASS_KEY_WEIGHT * t).abs() < 1e-6);
            }
        }
        // A key the producer gave wins over the one the chroma implies.
        let g_major = HarmonyRequest {
            key: Some(crate::analysis::harmony::parse_key("G major").unwrap()),
            ..given.clone()
        };
        let chords = bass_chords(&f, &g_major, 10.0).unwrap();
        assert!(
            chords.frame(0)[c + 6] > f.frame(0)[c + 6],
            "F# is in G major"
        );
        let dropped = HarmonyRequest {
            no_features: true,
            ..HarmonyRequest::default()
        };
        assert!(bass_chords(&f, &dropped, 10.0).is_none());
    }
}
