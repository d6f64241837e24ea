//! What one plugin instance shares between its audio thread, the host's main thread, the
//! editor and the worker threads. The audio thread only touches atomics and the wait-free
//! queues it owns the other end of; everything behind a lock here is for the other threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use stemgen::audio::Audio;

use crate::capture::{CaptureInfo, CapturePhase, CaptureRing, TransportFacts};
use crate::jobs::{AtomicF64, CapturedContext, GenerationJob, JobOwner, JobStatus};
use crate::params::StemGenParams;
use crate::peaks::TakePeaks;
use crate::playback::{TakeAudio, TakeSender};
use crate::takes::{self, BarRegion, Take};
use crate::worker::{self, WorkerPool};

/// What the host transport said last, published by the audio thread for the editor.
#[derive(Debug, Default)]
pub struct HostInfo {
    pub playing: AtomicBool,
    pub sample_rate: AtomicU32,
    /// NaN when unknown.
    pub tempo: AtomicF64,
    pub time_sig_num: AtomicU32,
    pub time_sig_den: AtomicU32,
    /// NaN when unknown.
    pub pos_beats: AtomicF64,
    pub capture_phase: AtomicU8,
    pub capture_progress: AtomicF64,
    pub input_peak: AtomicF64,
    pub stem_peak: AtomicF64,
    /// The take the audio thread is playing (u64::MAX for none).
    pub playing_take: AtomicU64,
    pub auditioning: AtomicBool,
    /// Where in the playing take the playhead is (0..1; NaN when it is silent).
    pub take_position: AtomicF64,
}

impl HostInfo {
    pub fn publish(&self, facts: &TransportFacts) {
        self.playing.store(facts.playing, Ordering::Relaxed);
        self.sample_rate
            .store(facts.sample_rate as u32, Ordering::Relaxed);
        self.tempo.store(facts.tempo.unwrap_or(f64::NAN));
        let (num, den) = facts.time_sig.unwrap_or((0, 0));
        self.time_sig_num
            .store(num.max(0) as u32, Ordering::Relaxed);
        self.time_sig_den
            .store(den.max(0) as u32, Ordering::Relaxed);
        self.pos_beats.store(facts.pos_beats.unwrap_or(f64::NAN));
    }

    pub fn tempo(&self) -> Option<f64> {
        Some(self.tempo.load()).filter(|t| t.is_finite())
    }

    pub fn capture_phase(&self) -> CapturePhase {
        CapturePhase::from_u8(self.capture_phase.load(Ordering::Relaxed))
    }
}

/// Requests from the editor to the audio thread: counters the audio thread compares with the
/// last value it saw, so no request is lost or repeated.
#[derive(Debug, Default)]
pub struct Requests {
    pub arm_capture: AtomicU32,
    pub cancel_capture: AtomicU32,
    pub capture_last: AtomicU32,
    pub audition: AtomicU32,
    pub stop_audition: AtomicU32,
    /// Audition from [`Requests::audition_from`] (a click on the waveform).
    pub audition_at: AtomicU32,
    /// 0..1 of the playing take.
    pub audition_from: AtomicF64,
}

impl Requests {
    pub fn send(counter: &AtomicU32) {
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// The per-instance hub (see the module docs).
pub struct Shared {
    pub params: Arc<StemGenParams>,
    pub host: HostInfo,
    pub requests: Requests,
    /// The capture ring the audio thread writes (replaced on activate when the rate changes).
    pub ring: Mutex<Arc<CaptureRing>>,
    /// Finished captures from the audio thread.
    pub captures: Mutex<rtrb::Consumer<CaptureInfo>>,
    pub last_capture: Mutex<Option<Arc<CapturedContext>>>,
    /// Sends takes to the audio thread.
    pub take_sender: Mutex<TakeSender>,
    /// The running or last generation.
    pub job: Mutex<Option<Arc<JobStatus>>>,
    /// The latest message for the producer (errors say what to do).
    pub message: Mutex<Option<String>>,
    /// Set when the plugin is removed: running work for it stops.
    pub closed: AtomicBool,
    /// Waveforms of the takes the editor has drawn (or asked for: `None` while loading).
    peaks: Mutex<HashMap<u64, Option<Arc<TakePeaks>>>>,
    /// The worker threads; the instance (`StemGen`) owns them, this is only a way to reach
    /// them, so a job holding this `Shared` never keeps them alive.
    workers: Weak<WorkerPool>,
}

impl Shared {
    pub fn new(
        params: Arc<StemGenParams>,
        ring: Arc<CaptureRing>,
        captures: rtrb::Consumer<CaptureInfo>,
        take_sender: TakeSender,
        workers: Weak<WorkerPool>,
    ) -> Self {
        let host = HostInfo::default();
        host.playing_take.store(u64::MAX, Ordering::Relaxed);
        host.take_position.store(f64::NAN);
        Shared {
            params,
            host,
            requests: Requests::default(),
            ring: Mutex::new(ring),
            captures: Mutex::new(captures),
            last_capture: Mutex::new(None),
            take_sender: Mutex::new(take_sender),
            job: Mutex::new(None),
            message: Mutex::new(None),
            closed: AtomicBool::new(false),
            peaks: Mutex::new(HashMap::new()),
            workers,
        }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        *self.message.lock() = Some(message.into());
    }

    /// Copies finished captures out of the ring (main thread or editor); starts a generation
    /// when "Generate after capture" is on.
    pub fn collect_captures(self: &Arc<Self>) {
        let infos: Vec<CaptureInfo> = {
            let mut rx = self.captures.lock();
            std::iter::from_fn(|| rx.pop().ok()).collect()
        };
        let Some(info) = infos.last().copied() else {
            return;
        };
        let ring = self.ring.lock().clone();
        let copied = (ring.sample_rate() == info.sample_rate)
            .then(|| ring.copy_range(info.start_frame, info.frames as usize))
            .flatten();
        let Some(samples) = copied else {
            self.set_message("The capture was overwritten before it could be read; capture again.");
            return;
        };
        *self.last_capture.lock() = Some(Arc::new(CapturedContext { info, samples }));
        self.set_message(format!("Captured {}.", describe_capture(&info)));
        if self.params.auto_generate.value() {
            self.start_generation();
        }
    }

    /// Queues a generation with the current settings: from the last capture plus the takes
    /// added to the context, or, with bars selected on a take, of those bars only.
    pub fn start_generation(self: &Arc<Self>) {
        let context = self.last_capture.lock().clone();
        let (context_takes, edit) = {
            let session = self.params.session.read();
            let context_takes: Vec<Take> = session
                .context_takes
                .iter()
                .filter_map(|id| session.take(*id).cloned())
                .collect();
            let edit = session
                .region
                .and_then(|r| session.take(r.take).map(|t| (t.clone(), r)));
            (context_takes, edit)
        };
        if context.is_none() && edit.is_none() {
            self.set_message("Nothing captured yet: arm a capture and play the song first.");
            return;
        }
        if let Some(job) = self.job.lock().as_ref() {
            if !job.is_finished() {
                self.set_message("A generation is already running; cancel it first.");
                return;
            }
        }
        let p = &self.params;
        let (model_dir, takes_dir, seed, id) = {
            let mut session = p.session.write();
            let model_dir = worker::resolve_model_dir(session.model_dir.as_deref());
            let takes_dir = session.takes_dir();
            session.next_take_id += 1;
            (model_dir, takes_dir, session.seed, session.next_take_id)
        };
        let status = Arc::new(JobStatus::new());
        *self.job.lock() = Some(status.clone());
        *self.message.lock() = None;
        let Some(workers) = self.workers.upgrade() else {
            return;
        };
        workers.submit(GenerationJob {
            take_id: id,
            model_dir,
            takes_dir,
            context,
            instrument: p.instrument.value() as u32,
            quality: p.quality.value(),
            cfg_context: p.cfg_context.value() as f64,
            cfg_instrument: p.cfg_instrument.value() as f64,
            seed,
            chords: p.session.read().chords.clone(),
            key: p.session.read().key.clone(),
            context_takes,
            edit,
            status,
            owner: self.clone(),
        });
    }

    pub fn cancel_generation(&self) {
        if let Some(job) = self.job.lock().as_ref() {
            job.cancel();
        }
    }

    /// Adds a finished take to the session, selects it and sends it to the audio thread (first:
    /// whoever sees the take in the session finds it already on its way to be heard).
    pub fn add_take(&self, take: Take, audio: Audio) {
        let id = take.id;
        let host_rate = self.host.sample_rate.load(Ordering::Relaxed).max(1);
        match takes::take_audio(&take, &audio, host_rate) {
            Ok(prepared) => self.send_take(Some(Arc::new(prepared))),
            Err(e) => self.set_message(format!("{e:#}")),
        }
        let mut session = self.params.session.write();
        session.takes.push(take);
        session.selected = Some(id);
    }

    pub fn send_take(&self, take: Option<Arc<TakeAudio>>) {
        if !self.take_sender.lock().send(take) {
            self.set_message("The audio thread is not picking up takes (is the host stopped?).");
        }
    }

    /// Selects a take: it is loaded from its file (off this thread) and plays on the timeline.
    pub fn select_take(self: &Arc<Self>, id: Option<u64>) {
        let take = {
            let mut session = self.params.session.write();
            session.selected = id;
            id.and_then(|id| session.take(id).cloned())
        };
        match take {
            Some(take) => {
                if let Some(workers) = self.workers.upgrade() {
                    workers.load_take(self.clone(), take);
                }
            }
            None => self.send_take(None),
        }
    }

    /// (Re)loads the selected take, e.g. after the state was restored or the rate changed.
    pub fn load_selected_take(self: &Arc<Self>) {
        let selected = self.params.session.read().selected;
        if selected.is_some() {
            self.select_take(selected);
        }
    }

    /// The waveforms of `take`; the first call for a take asks the loader for them, so `None`
    /// until they are read.
    pub fn take_peaks(self: &Arc<Self>, take: &Take) -> Option<Arc<TakePeaks>> {
        let mut peaks = self.peaks.lock();
        if let Some(known) = peaks.get(&take.id) {
            return known.clone();
        }
        peaks.insert(take.id, None);
        drop(peaks);
        if let Some(workers) = self.workers.upgrade() {
            workers.load_peaks(self.clone(), take.clone());
        }
        None
    }

    /// Adds a take to (or removes it from) the context the next generation hears.
    pub fn set_in_context(&self, id: u64, in_context: bool) {
        let mut session = self.params.session.write();
        session.context_takes.retain(|t| *t != id);
        if in_context && session.take(id).is_some() {
            session.context_takes.push(id);
        }
    }

    /// Bars selected on a take's waveform (`None` clears the selection): Generate then
    /// re-generates only those bars.
    pub fn select_region(&self, region: Option<BarRegion>) {
        self.params.session.write().region = region;
    }

    /// Deletes a take from the session and its files from disk.
    pub fn delete_take(self: &Arc<Self>, id: u64) {
        let (take, was_selected) = {
            let mut session = self.params.session.write();
            let Some(pos) = session.takes.iter().position(|t| t.id == id) else {
                return;
            };
            let was_selected = session.selected == Some(id);
            if was_selected {
                session.selected = None;
            }
            session.context_takes.retain(|t| *t != id);
            if session.region.is_some_and(|r| r.take == id) {
                session.region = None;
            }
            self.peaks.lock().remove(&id);
            (session.takes.remove(pos), was_selected)
        };
        if was_selected {
            self.send_take(None);
        }
        if let Err(e) = takes::delete_take_files(&take) {
            self.set_message(format!("{e:#}"));
        }
    }
}

impl JobOwner for Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn host_rate(&self) -> u32 {
        self.host.sample_rate.load(Ordering::Relaxed)
    }

    fn set_message(&self, message: String) {
        Shared::set_message(self, message)
    }

    fn add_take(&self, take: Take, audio: Audio) {
        Shared::add_take(self, take, audio)
    }

    fn send_take(&self, take: Option<Arc<TakeAudio>>) {
        Shared::send_take(self, take)
    }

    fn set_peaks(&self, take_id: u64, peaks: Arc<TakePeaks>) {
        self.peaks.lock().insert(take_id, Some(peaks));
    }

    fn play_preview(&self, take_id: u64, anchor: crate::playback::Anchor, audio: &Audio) {
        let host_rate = self.host.sample_rate.load(Ordering::Relaxed).max(1);
        match takes::playback_audio(take_id, anchor, audio, host_rate) {
            Ok(prepared) => self.send_take(Some(Arc::new(prepared))),
            Err(e) => self.set_message(format!("The preview cannot play: {e:#}")),
        }
    }
}

/// "8 bars at 120.0 BPM (4/4) from bar 17" or "6.0 s".
pub fn describe_capture(info: &CaptureInfo) -> String {
    let mut s = match (info.bars, info.tempo) {
        (Some(bars), Some(tempo)) => format!("{bars:.0} bars at {tempo:.1} BPM"),
        _ => format!("{:.1} s", info.seconds()),
    };
    if let Some((n, d)) = info.time_sig {
        s += &format!(" ({n}/{d})");
    }
    if let Some(bar) = info.start_bar {
        s += &format!(" from bar {}", bar + 1);
    }
    s
}
