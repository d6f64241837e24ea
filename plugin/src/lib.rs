//! The StemGen plugin (VST3 + CLAP, and a standalone application): insert it on a track,
//! capture a few bars of the music on the host timeline, generate a stem that fits them in the
//! background, and play the chosen take in sync with the timeline (ARCHITECTURE §5).
//!
//! Threads: the host's audio thread runs [`StemGen::process`] (atomics and wait-free queues
//! only: `capture`, `playback`); the host's main thread runs the task executor (copies finished
//! captures, starts generations) and the editor; the plugin's own workers (`worker`) run the
//! engine's `Generator` and load takes. `shared::Shared` is the hub between them; the
//! workers reach it only through `jobs::JobOwner`.

pub mod capture;
#[cfg(all(unix, not(target_os = "macos")))]
pub mod drag_out;
pub mod editor;
pub mod fade;
pub mod jobs;
pub mod params;
pub mod peaks;
pub mod playback;
pub mod shared;
pub mod take_context;
pub mod take_view;
pub mod takes;
pub mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use nice_plug::prelude::*;

use capture::{CaptureInfo, CaptureRing, CaptureTracker, TransportFacts};
use fade::Fade;
use params::{ContextInput, StemGenParams};
use playback::TakePlayer;
use shared::Shared;

/// Finished captures that can wait for the main thread at once.
const CAPTURE_QUEUE: usize = 16;
/// Frames mixed to mono at a time (blocks larger than this are handled in pieces).
const SCRATCH_FRAMES: usize = 8192;

/// Work the audio thread hands to the host's main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainThreadTask {
    /// A capture finished: copy it out and maybe start generating.
    CaptureFinished,
    /// The selected take must be (re)loaded: state restored or the sample rate changed.
    LoadSelectedTake,
    /// The "Generate" trigger parameter rose.
    Generate,
}

pub struct StemGen {
    params: Arc<StemGenParams>,
    shared: Arc<Shared>,
    /// The worker threads, shared with the process's other instances; declared after
    /// `shared` so it is dropped last: the last instance joins the threads in its drop.
    _workers: Arc<worker::WorkerPool>,

    // Audio-thread state: nothing below is shared except through atomics and queues.
    ring: Arc<CaptureRing>,
    tracker: CaptureTracker,
    player: TakePlayer,
    captures_tx: rtrb::Producer<CaptureInfo>,
    mono: Vec<f32>,
    /// Per-sample gains of the current piece of a block (the smoothers, read per sample).
    thru_gains: Vec<f32>,
    stem_gains: Vec<f32>,
    /// "Mute stem" and "Stem only" as short fades instead of steps.
    mute_fade: Fade,
    solo_fade: Fade,
    seen: SeenRequests,
    trigger_was_on: bool,
    generate_was_on: bool,
    /// Set by `activate`; the next `process` asks the main thread to load the selected take.
    reload_take: bool,
    /// The session's restore count last acted on (a host state load means a new selected take).
    seen_restores: u32,
    sample_rate: f32,
}

/// The request counters the audio thread has acted on.
#[derive(Debug, Default, Clone, Copy)]
struct SeenRequests {
    arm: u32,
    cancel: u32,
    last: u32,
    audition: u32,
    stop_audition: u32,
    audition_at: u32,
}

impl Default for StemGen {
    fn default() -> Self {
        let params = Arc::new(StemGenParams::default());
        // A small ring until `activate` knows the rate (so scanning allocates little).
        let ring = Arc::new(CaptureRing::with_capacity(44_100, 1));
        let (captures_tx, captures_rx) = rtrb::RingBuffer::new(CAPTURE_QUEUE);
        let (sender, player) = playback::take_channel();
        let workers = worker::WorkerPool::acquire();
        let shared = Arc::new(Shared::new(
            params.clone(),
            ring.clone(),
            captures_rx,
            sender,
            Arc::downgrade(&workers),
        ));
        StemGen {
            params,
            shared,
            _workers: workers,
            ring,
            tracker: CaptureTracker::default(),
            player,
            captures_tx,
            mono: vec![0.0; SCRATCH_FRAMES],
            thru_gains: vec![0.0; SCRATCH_FRAMES],
            stem_gains: vec![0.0; SCRATCH_FRAMES],
            mute_fade: Fade::new(true, 44_100.0),
            solo_fade: Fade::new(true, 44_100.0),
            seen: SeenRequests::default(),
            trigger_was_on: false,
            generate_was_on: false,
            reload_take: false,
            seen_restores: 0,
            sample_rate: 44_100.0,
        }
    }
}

impl Drop for StemGen {
    fn drop(&mut self) {
        // A generation for this instance stops at its next iteration.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.cancel_generation();
    }
}

impl StemGen {
    /// Acts on the editor's requests and the capture trigger parameter.
    fn handle_requests(&mut self, facts: &TransportFacts, context: &mut impl ProcessContext<Self>) {
        let r = &self.shared.requests;
        let now = SeenRequests {
            arm: r.arm_capture.load(Ordering::Acquire),
            cancel: r.cancel_capture.load(Ordering::Acquire),
            last: r.capture_last.load(Ordering::Acquire),
            audition: r.audition.load(Ordering::Acquire),
            stop_audition: r.stop_audition.load(Ordering::Acquire),
            audition_at: r.audition_at.load(Ordering::Acquire),
        };
        let trigger = self.params.capture_trigger.value();
        let trigger_edge = trigger && !self.trigger_was_on;
        self.trigger_was_on = trigger;
        let generate = self.params.generate_trigger.value();
        if generate && !self.generate_was_on {
            context.execute_gui(MainThreadTask::Generate);
        }
        self.generate_was_on = generate;

        // The trigger arms a bar capture while playing; stopped, it takes the last bars heard.
        let arm = now.arm != self.seen.arm || (trigger_edge && facts.playing);
        let last = now.last != self.seen.last || (trigger_edge && !facts.playing);
        if arm {
            self.tracker.arm(self.params.capture_bars());
        }
        if now.cancel != self.seen.cancel {
            self.tracker.disarm();
        }
        if last {
            let seconds = match facts.tempo {
                Some(t) if t > 0.0 => self.params.capture_bars() * facts.beats_per_bar() * 60.0 / t,
                _ => self.params.capture_bars() * 2.0,
            };
            if let Some(info) = self.tracker.last_seconds(&self.ring, seconds, facts) {
                self.finish_capture(info, context);
            }
        }
        if now.audition != self.seen.audition {
            self.player.start_audition();
        }
        if now.audition_at != self.seen.audition_at {
            let from = self.shared.requests.audition_from.load();
            self.player.start_audition_from(from);
        }
        if now.stop_audition != self.seen.stop_audition {
            self.player.stop_audition();
        }
        self.seen = now;
    }

    fn finish_capture(&mut self, info: CaptureInfo, context: &mut impl ProcessContext<Self>) {
        if self.captures_tx.push(info).is_ok() {
            context.execute_gui(MainThreadTask::CaptureFinished);
        }
    }
}

fn transport_facts(transport: &Transport) -> TransportFacts {
    TransportFacts {
        playing: transport.playing,
        sample_rate: transport.sample_rate as f64,
        tempo: transport.tempo.filter(|t| t.is_finite() && *t > 0.0),
        time_sig: transport
            .time_sig_numerator
            .zip(transport.time_sig_denominator),
        pos_beats: transport.pos_beats(),
        pos_samples: transport.pos_samples(),
        bar_start_beats: transport.bar_start_pos_beats(),
        bar_number: transport.bar_number(),
    }
}

impl Plugin for StemGen {
    const NAME: &'static str = "StemGen";
    const VENDOR: &'static str = "StemGen";
    // No public home page or support address exists yet: hosts get empty fields rather than
    // placeholders.
    const URL: &'static str = "";
    const EMAIL: &'static str = "";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: NonZeroU32::new(2),
        main_output_channels: NonZeroU32::new(2),
        aux_input_ports: &[new_nonzero_u32(2)],
        names: PortNames {
            layout: Some("Stereo + context sidechain"),
            // Left unnamed: the framework gives this name to the main output port too.
            main_input: None,
            main_output: Some("Output"),
            aux_inputs: &["Context"],
            aux_outputs: &[],
        },
        ..AudioIOLayout::const_default()
    }];

    type Editor = nice_plug_egui::EguiEditor<editor::StemGenEditor>;
    type SysExMessage = ();
    type BackgroundTask = MainThreadTask;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn task_executor(&mut self) -> TaskExecutor<Self> {
        let shared = self.shared.clone();
        Box::new(move |task| match task {
            MainThreadTask::CaptureFinished => shared.collect_captures(),
            MainThreadTask::LoadSelectedTake => shared.load_selected_take(),
            MainThreadTask::Generate => shared.start_generation(),
        })
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(self.shared.clone())
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        let rate = buffer_config.sample_rate;
        let rate_changed = rate != self.sample_rate;
        self.sample_rate = rate;
        self.shared
            .host
            .sample_rate
            .store(rate as u32, Ordering::Relaxed);
        if rate_changed || self.ring.capacity() <= 1 {
            // Allocated here, on the main thread, never in `process`.
            self.ring = Arc::new(CaptureRing::new(rate as u32));
            *self.shared.ring.lock() = self.ring.clone();
            self.tracker = CaptureTracker::default();
        }
        // The switches start settled where they are.
        self.mute_fade = Fade::new(!self.params.mute.value(), rate);
        self.solo_fade = Fade::new(!self.params.solo.value(), rate);
        // The take (at the old rate, or from restored state) is reloaded for this rate.
        self.reload_take = true;
        self.seen_restores = self.params.session.restores();
        // A trigger saved "on" must not fire a capture when the project reopens.
        self.trigger_was_on = self.params.capture_trigger.value();
        self.generate_was_on = self.params.generate_trigger.value();
        true
    }

    fn reset(&mut self) {
        self.tracker.disarm();
        self.player.stop_audition();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        // Denormals flushed to zero (FTZ/DAZ on x86, FZ on aarch64) for this block only: a
        // decaying tail or a quiet input otherwise costs several times a normal block. The
        // guard changes only this thread's floating-point flags and restores them on return.
        unsafe { no_denormals::no_denormals(|| self.process_block(buffer, aux, context)) }
    }
}

impl StemGen {
    /// [`Plugin::process`] with denormals off.
    fn process_block(
        &mut self,
        buffer: &mut Buffer,
        aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let mut facts = transport_facts(context.transport());
        facts.sample_rate = self.sample_rate as f64;
        self.shared.host.publish(&facts);
        let restores = self.params.session.restores();
        if restores != self.seen_restores {
            // The host loaded state into this running instance.
            self.seen_restores = restores;
            self.reload_take = true;
            self.trigger_was_on = self.params.capture_trigger.value();
        }
        if self.reload_take {
            self.reload_take = false;
            context.execute_gui(MainThreadTask::LoadSelectedTake);
        }
        self.player.receive();
        self.handle_requests(&facts, context);

        let frames = buffer.samples();
        let from_sidechain = self.params.context_input.value() == ContextInput::Sidechain;
        let mute = self.params.mute.value();
        let solo = self.params.solo.value();
        let mut input_peak = 0.0f32;
        let mut stem_peak = 0.0f32;

        let out = buffer.as_slice();
        let sidechain = aux.inputs.first_mut().map(|b| b.as_slice_immutable());
        let mut start = 0;
        while start < frames {
            let n = (frames - start).min(self.mono.len());
            let source: &[&mut [f32]] = &*out;
            // Context to mono, before the output is touched (main input = output buffer).
            for i in 0..n {
                let (l, r) = match (&sidechain, from_sidechain) {
                    (Some(sc), true) if sc.len() >= 2 => (sc[0][start + i], sc[1][start + i]),
                    (Some(sc), true) if sc.len() == 1 => (sc[0][start + i], sc[0][start + i]),
                    (_, true) => (0.0, 0.0),
                    _ => (source[0][start + i], source[1][start + i]),
                };
                let m = 0.5 * (l + r);
                self.mono[i] = m;
                if m.is_finite() {
                    input_peak = input_peak.max(m.abs());
                }
            }
            let mut block_facts = facts;
            if start > 0 {
                advance(&mut block_facts, start);
            }
            if let Some(info) =
                self.tracker
                    .process_block(&self.ring, &self.mono[..n], &block_facts)
            {
                self.finish_capture(info, context);
            }
            start += n;
        }

        let (left, right) = match out {
            [l, r, ..] => (l, r),
            _ => return ProcessStatus::Normal,
        };
        // The gains, read per sample from their smoothers, with the switches' fades.
        let mut start = 0;
        while start < frames {
            let n = (frames - start).min(SCRATCH_FRAMES);
            let (thru, stem) = (&mut self.thru_gains[..n], &mut self.stem_gains[..n]);
            self.params.thru_gain.smoothed.next_block(thru, n);
            self.params.stem_gain.smoothed.next_block(stem, n);
            for (t, g) in thru.iter_mut().zip(stem.iter_mut()) {
                *t *= self.solo_fade.next(!solo);
                *g *= self.mute_fade.next(!mute);
            }
            let (l, r) = (&mut left[start..start + n], &mut right[start..start + n]);
            for ((l, r), t) in l.iter_mut().zip(r.iter_mut()).zip(thru.iter()) {
                *l *= t;
                *r *= t;
            }
            if !self.mute_fade.is_off(!mute) {
                let mut piece = facts;
                if start > 0 {
                    advance(&mut piece, start);
                }
                stem_peak = stem_peak.max(self.player.render(&piece, stem, l, r));
            }
            start += n;
        }
        // Never hand the host NaN or inf, whatever came in.
        for s in left.iter_mut().chain(right.iter_mut()) {
            if !s.is_finite() {
                *s = 0.0;
            }
        }

        let host = &self.shared.host;
        host.capture_phase
            .store(self.tracker.phase() as u8, Ordering::Relaxed);
        host.capture_progress
            .store(self.tracker.progress(&self.ring) as f64);
        host.input_peak
            .store(host.input_peak.load().max(input_peak as f64));
        host.stem_peak
            .store(host.stem_peak.load().max(stem_peak as f64));
        host.playing_take.store(
            self.player.current_id().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        host.auditioning
            .store(self.player.is_auditioning(), Ordering::Relaxed);
        host.take_position
            .store(self.player.position().unwrap_or(f64::NAN));
        ProcessStatus::Normal
    }
}

/// The transport `frames` samples later (for blocks handled in pieces).
fn advance(facts: &mut TransportFacts, frames: usize) {
    if let Some(p) = facts.pos_samples.as_mut() {
        *p += frames as i64;
    }
    if let (Some(b), Some(t)) = (facts.pos_beats.as_mut(), facts.tempo) {
        *b += frames as f64 / (60.0 / t * facts.sample_rate);
    }
}

impl ClapPlugin for StemGen {
    const CLAP_ID: &'static str = "org.stemgen.stemgen";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Generates an instrument stem that fits the music on the track");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Stereo,
        ClapFeature::Utility,
    ];
}

impl Vst3Plugin for StemGen {
    const VST3_CLASS_ID: [u8; 16] = *b"StemGenPluginV01";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Generator];
}

nice_export_clap!(StemGen);
nice_export_vst3!(StemGen);
