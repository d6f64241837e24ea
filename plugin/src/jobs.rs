//! What crosses between an instance and the worker threads: the captured context going out,
//! a job's status coming back, and the narrow [`JobOwner`] interface through which a worker
//! hands a finished take (or a message) to the instance that asked. Both sides import this
//! module and neither imports the other's types (`shared` -> `worker` only), so the worker
//! never sees the instance's locks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use stemgen::audio::Audio;

use crate::capture::CaptureInfo;
use crate::params::Quality;
use crate::peaks::TakePeaks;
use crate::playback::{Anchor, TakeAudio};
use crate::takes::{BarRegion, Take};

/// An `f64` in an atomic (bits), for values the audio thread publishes.
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    pub fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    pub fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed)
    }
}

/// A captured context, copied out of the ring.
#[derive(Debug, Clone)]
pub struct CapturedContext {
    pub info: CaptureInfo,
    /// Mono at `info.sample_rate`.
    pub samples: Vec<f32>,
}

/// The instance side of a job, as a worker sees it.
pub trait JobOwner: Send + Sync {
    /// Set when the plugin instance is removed: its work stops.
    fn is_closed(&self) -> bool;
    /// The rate the instance's audio thread plays at (takes are resampled to it).
    fn host_rate(&self) -> u32;
    fn set_message(&self, message: String);
    /// A finished take: added to the session, selected and sent to the audio thread.
    fn add_take(&self, take: Take, audio: Audio);
    /// A take loaded for playback (`None` stops playback).
    fn send_take(&self, take: Option<Arc<TakeAudio>>);
    /// A coarse preview of take `take_id` (the engine's first levels): played at once on the
    /// timeline where the take will play, until the full take replaces it.
    fn play_preview(&self, take_id: u64, anchor: Anchor, audio: &Audio);
    /// The waveforms of take `take_id` for the editor.
    fn set_peaks(&self, take_id: u64, peaks: Arc<TakePeaks>);
}

/// Stage of a generation, for the editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Queued = 0,
    LoadingModel = 1,
    Encoding = 2,
    Sampling = 3,
    Decoding = 4,
    Writing = 5,
    Done = 6,
    Failed = 7,
    Cancelled = 8,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        use Stage::*;
        [
            Queued,
            LoadingModel,
            Encoding,
            Sampling,
            Decoding,
            Writing,
            Done,
            Failed,
            Cancelled,
        ]
        .get(v as usize)
        .copied()
        .unwrap_or(Failed)
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::LoadingModel => "loading the model",
            Stage::Encoding => "listening to the context",
            Stage::Sampling => "generating",
            Stage::Decoding => "rendering audio",
            Stage::Writing => "saving the take",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Cancelled => "cancelled",
        }
    }
}

/// Progress and control of one generation, shared with the editor.
#[derive(Debug)]
pub struct JobStatus {
    cancel: AtomicBool,
    stage: AtomicU8,
    /// 0..1 as f32 bits.
    progress: AtomicU32,
    started: Instant,
    /// Seconds the generation took (NaN until finished).
    pub seconds: AtomicF64,
    /// Seconds until a coarse preview was playing (NaN while none is).
    pub preview_seconds: AtomicF64,
}

impl Default for JobStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl JobStatus {
    pub fn new() -> Self {
        JobStatus {
            cancel: AtomicBool::new(false),
            stage: AtomicU8::new(Stage::Queued as u8),
            progress: AtomicU32::new(0),
            started: Instant::now(),
            seconds: AtomicF64::new(f64::NAN),
            preview_seconds: AtomicF64::new(f64::NAN),
        }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    pub fn is_cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage(), Stage::Done | Stage::Failed | Stage::Cancelled)
    }

    pub fn progress(&self) -> f32 {
        f32::from_bits(self.progress.load(Ordering::Relaxed))
    }

    pub fn elapsed(&self) -> f64 {
        let done = self.seconds.load();
        if done.is_finite() {
            done
        } else {
            self.started.elapsed().as_secs_f64()
        }
    }

    pub(crate) fn set(&self, stage: Stage, progress: f32) {
        self.progress.store(progress.to_bits(), Ordering::Relaxed);
        self.stage.store(stage as u8, Ordering::Release);
    }

    pub(crate) fn finish(&self, stage: Stage) {
        self.seconds.store(self.started.elapsed().as_secs_f64());
        self.set(
            stage,
            if stage == Stage::Done {
                1.0
            } else {
                self.progress()
            },
        );
    }
}

/// One generation request from an instance.
pub struct GenerationJob {
    pub take_id: u64,
    pub model_dir: PathBuf,
    pub takes_dir: PathBuf,
    /// The last capture (`None` is fine for an edit, which hears its take's own context).
    pub context: Option<Arc<CapturedContext>>,
    pub instrument: u32,
    pub quality: Quality,
    pub cfg_context: f64,
    pub cfg_instrument: f64,
    pub seed: u64,
    /// The chords and key of the session when the job started (empty: none).
    pub chords: String,
    pub key: String,
    /// Takes mixed into the context (stem by stem).
    pub context_takes: Vec<Take>,
    /// Re-generate these bars of this take (its own context and audio) instead.
    pub edit: Option<(Take, BarRegion)>,
    pub status: Arc<JobStatus>,
    /// The instance that asked; the worker reaches it only through [`JobOwner`].
    pub owner: Arc<dyn JobOwner>,
}
