//! StemGen loaded from its CLAP bundle by a headless host built on `clack-host`, and driven the
//! way a DAW drives it: main-thread calls on the test's thread, `process` on a separate audio
//! thread with the transport sent every block, parameter changes as CLAP events, main-thread
//! callbacks serviced when the plugin asks for them, and the plugin state saved and restored
//! through the state extension.
//!
//! The bundle is the debug build of `cargo xtask bundle stemgen-plugin`: its
//! `assert_process_allocs` feature aborts this whole test binary if `process` ever allocates.
//! Generation uses a tiny random model (`STEMGEN_MODEL_DIR`), so a take takes seconds.

use std::collections::HashMap;
use std::f64::consts::TAU;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::Device;
use clack_extensions::audio_ports::{AudioPortFlags, AudioPortInfoBuffer, PluginAudioPorts};
use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::{ParamValueEvent, TransportEvent, TransportFlags};
use clack_host::events::{EventFlags, EventHeader, Pckn};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use serde_json::Value;
use stemgen::audio::{read_audio, Audio};
use stemgen::model::{ModelCheckpoint, ModelConfig};

/// The host's song: 120 BPM in 4/4 from the start.
const TEMPO: f64 = 120.0;
const BEATS_PER_BAR: f64 = 4.0;
/// Written into the output buffers before every block: a sample the plugin leaves unwritten
/// shows up as this value (real hosts hand plugins dirty buffers too).
const SENTINEL: f32 = 1000.0;
/// Longest wait for a generation with the tiny model (generous: the machine may be busy).
const GENERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a take to be (re)loaded for playback.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

// CLAP values of the parameters set here. nice-plug reports every parameter as a CLAP range
// `0..=step_count`: the variant index for enums, `value - min` for ints, 0/1 for bools (checked
// against the plugin's parameter info in `parameters_are_reported_as_nice_plug_maps_them`).
const ON: f64 = 1.0;
const OFF: f64 = 0.0;
/// "Capture length": 4 bars, 8 bars, 16 bars, Custom.
const CUSTOM_LENGTH: f64 = 3.0;
/// "Quality": Draft, Normal, Paper.
const DRAFT: f64 = 0.0;
const PAPER: f64 = 2.0;

/// "Custom bars" (1..=32) as a CLAP value.
fn custom_bars(bars: u32) -> f64 {
    f64::from(bars - 1)
}

// ---------------------------------------------------------------------------------------------
// Shared fixture: one bundle, one tiny model and one takes folder for the whole test binary.

struct Env {
    entry: PluginEntry,
    takes_root: PathBuf,
}

/// Builds the bundle, writes the tiny model and points the plugin at it (once per binary: the
/// tests run in parallel threads of one process, which share the environment).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace");
        // A target directory of its own: the outer `cargo test` holds the lock on `target/`.
        let target = workspace.join("target").join("clap-host-test");
        let bundle = build_bundle(workspace, &target);

        let run = target.join("run");
        let _ = std::fs::remove_dir_all(&run);
        let model = run.join("model");
        write_tiny_model(&model, workspace);
        let takes_root = run.join("takes");
        std::fs::create_dir_all(&takes_root).unwrap();
        // Read by the plugin when it generates, long after this; no instance exists yet.
        std::env::set_var("STEMGEN_MODEL_DIR", &model);
        std::env::set_var("STEMGEN_TAKES_DIR", &takes_root);

        // SAFETY: the library is this workspace's own CLAP plugin, built just above.
        let entry = unsafe { PluginEntry::load(&bundle) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", bundle.display()));
        Env { entry, takes_root }
    })
}

/// `cargo xtask bundle stemgen-plugin` (debug, so allocations in `process` abort); returns the
/// `.clap` it made.
fn build_bundle(workspace: &Path, target: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["xtask", "bundle", "stemgen-plugin"])
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cannot run cargo");
    assert!(
        output.status.success(),
        "`cargo xtask bundle stemgen-plugin` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bundle = target.join("bundled").join("StemGen.clap");
    assert!(bundle.exists(), "no bundle at {}", bundle.display());
    bundle
}

/// A model directory like the engine's generate tests use: a random tiny transformer whose
/// levels and codebook match the fixture EnCodec in `codec/`.
fn write_tiny_model(dir: &Path, workspace: &Path) {
    let config = ModelConfig::tiny(40);
    std::fs::create_dir_all(dir).unwrap();
    ModelCheckpoint::random(&config, &Device::Cpu, 7)
        .unwrap()
        .save(dir)
        .unwrap();
    let codec = dir.join("codec");
    std::fs::create_dir(&codec).unwrap();
    let fixtures = workspace.join("engine/tests/fixtures/encodec");
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(fixtures.join(file), codec.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"kind": "encodec", "weights": "codec/model.safetensors"}"#,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The host.

/// What the plugin's threads may call on the host: only the main-thread callback request
/// matters here (the plugin uses it to hand finished captures and take loads to the main thread).
#[derive(Default)]
struct HostShared {
    callback_requested: AtomicBool,
}

impl SharedHandler<'_> for HostShared {
    fn request_restart(&self) {}

    fn request_process(&self) {}

    fn request_callback(&self) {
        self.callback_requested.store(true, Ordering::Release);
    }
}

struct TestHost;

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

#[derive(Debug, Clone, Copy)]
struct Param {
    id: ClapId,
    max: f64,
}

/// One StemGen instance and the host state around it. Lives on the thread that made it (the
/// "main thread"); `render` runs `process` on a separate audio thread.
struct Plugin {
    instance: PluginInstance<TestHost>,
    /// Present while active; moved to the audio thread for each render. Processing is started
    /// once per activation, as DAWs do (starting it resets the plugin's capture).
    audio: Option<PluginAudioProcessor<TestHost>>,
    params: HashMap<String, Param>,
    rate: f64,
    max_block: usize,
    steady_time: u64,
}

impl Plugin {
    fn new() -> Self {
        let env = env();
        let factory = env.entry.get_plugin_factory().expect("no plugin factory");
        let descriptor = factory
            .plugin_descriptors()
            .find(|d| d.id().is_some_and(|id| id == c"org.stemgen.stemgen"))
            .expect("the bundle does not offer org.stemgen.stemgen");
        assert_eq!(descriptor.name(), Some(c"StemGen"));
        let info = HostInfo::new(
            "clap_host test",
            "StemGen",
            "https://example.invalid",
            "1.0",
        )
        .unwrap();
        let mut instance = PluginInstance::<TestHost>::new(
            |_| HostShared::default(),
            |_| (),
            &env.entry,
            c"org.stemgen.stemgen",
            &info,
        )
        .expect("cannot instantiate StemGen");

        let handle = instance.plugin_handle();
        let ext: PluginParams = handle.get_extension().expect("no params extension");
        let mut buffer = ParamInfoBuffer::new();
        let params = (0..ext.count(&handle))
            .map(|i| {
                let info = ext.get_info(&handle, i, &mut buffer).expect("param info");
                let name = String::from_utf8_lossy(info.name).into_owned();
                let param = Param {
                    id: info.id,
                    max: info.max_value,
                };
                (name, param)
            })
            .collect();
        Plugin {
            instance,
            audio: None,
            params,
            rate: 0.0,
            max_block: 0,
            steady_time: 0,
        }
    }

    fn param(&self, name: &str) -> Param {
        *self
            .params
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name:?} in {:?}", self.params.keys()))
    }

    /// Checks a parameter's current CLAP value as the host reads it (nice-plug keeps normalized
    /// `f32` values, so stepped values come back within `f32` precision).
    fn assert_value(&mut self, name: &str, expected: f64) {
        let id = self.param(name).id;
        let handle = self.instance.plugin_handle();
        let ext: PluginParams = handle.get_extension().unwrap();
        let value = ext.get_value(&handle, id).expect("get_value");
        assert!(
            (value - expected).abs() < 1e-4,
            "{name:?} is {value}, expected {expected}"
        );
    }

    /// (Re)activates at `rate` with blocks of up to `max_block` frames.
    fn activate(&mut self, rate: f64, max_block: usize) {
        self.deactivate();
        let config = PluginAudioConfiguration {
            sample_rate: rate,
            min_frames_count: 1,
            max_frames_count: max_block as u32,
        };
        let stopped = self
            .instance
            .activate(|_, _| (), config)
            .unwrap_or_else(|e| panic!("activation at {rate} Hz failed: {e}"));
        self.audio = Some(stopped.into());
        self.rate = rate;
        self.max_block = max_block;
    }

    fn deactivate(&mut self) {
        let Some(audio) = self.audio.take() else {
            return;
        };
        // `stop_processing` belongs on the audio thread, `deactivate` on the main thread.
        let stopped = std::thread::scope(|s| s.spawn(move || audio.into_stopped()).join())
            .expect("the audio thread panicked while stopping");
        self.instance.deactivate(stopped);
    }

    /// Renders `span` block by block on an audio thread, then services the main thread.
    fn render(&mut self, span: Span) -> Stereo {
        let mut audio = self.audio.take().expect("render needs an active plugin");
        let mut events = EventBuffer::with_capacity(span.changes.len());
        for &(name, value) in span.changes {
            let id = self.param(name).id;
            events.push(&ParamValueEvent::new(0, id, Pckn::match_all(), value));
        }
        let (rate, max_block, steady_time) = (self.rate, self.max_block, self.steady_time);
        let (audio, out) = std::thread::scope(|s| {
            s.spawn(move || {
                let out = process_span(&mut audio, &span, &events, rate, max_block, steady_time);
                (audio, out)
            })
            .join()
            .expect("the audio thread panicked")
        });
        self.audio = Some(audio);
        self.steady_time += span.frames as u64;
        self.service_main_thread();
        out
    }

    /// Runs the plugin's main-thread callback if it asked for one (as a host's event loop does).
    fn service_main_thread(&mut self) {
        while self
            .instance
            .access_shared_handler(|h| h.callback_requested.swap(false, Ordering::AcqRel))
        {
            self.instance.call_on_main_thread_callback();
        }
    }

    fn save_state(&mut self) -> Vec<u8> {
        let handle = self.instance.plugin_handle();
        let state: PluginState = handle.get_extension().expect("no state extension");
        let mut bytes = Vec::new();
        state.save(&handle, &mut bytes).expect("state save failed");
        bytes
    }

    fn load_state(&mut self, bytes: &[u8]) {
        let handle = self.instance.plugin_handle();
        let state: PluginState = handle.get_extension().expect("no state extension");
        state
            .load(&handle, &mut &bytes[..])
            .expect("state load failed");
        self.service_main_thread();
    }

    /// The plugin's `Session` (takes, selection) as the saved state holds it.
    fn session(&mut self) -> Value {
        session_of(&self.save_state())
    }

    /// Polls `step` (which may render and inspect) until it gives a value; panics after
    /// `timeout` naming `what` and showing the last session. Sleeps between polls so the
    /// plugin's worker threads get the CPU.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut step: impl FnMut(&mut Self) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = step(self) {
                return value;
            }
            if started.elapsed() > timeout {
                panic!(
                    "no {what} after {timeout:?}; last session state: {}",
                    self.session()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Renders silence around `anchor` (a take's first sample) until the take is heard there:
    /// takes load asynchronously after activation or a state restore.
    fn wait_until_take_plays(&mut self, anchor: i64) -> Stereo {
        let what = format!(
            "take playing at timeline sample {anchor} ({} Hz)",
            self.rate
        );
        self.wait_for(&what, LOAD_TIMEOUT, |p| {
            let out = p.render(Span::playing(anchor - 1000, 8000));
            (out.peak() > 0.0).then_some(out)
        })
    }

    fn check_audio_ports(&mut self) {
        let handle = self.instance.plugin_handle();
        let ports: PluginAudioPorts = handle.get_extension().expect("no audio-ports extension");
        let mut buffer = AudioPortInfoBuffer::default();
        let mut describe = |index, is_input| {
            let info = ports
                .get(&handle, index, is_input, &mut buffer)
                .expect("port info");
            let main = info.flags.contains(AudioPortFlags::IS_MAIN);
            let name = String::from_utf8_lossy(info.name).into_owned();
            (name, info.channel_count, main)
        };
        assert_eq!(ports.count(&handle, true), 2, "inputs: main + sidechain");
        assert_eq!(ports.count(&handle, false), 1, "one main output");
        assert_eq!(describe(0, true), ("Input".into(), 2, true));
        assert_eq!(describe(1, true), ("Context".into(), 2, false));
        assert_eq!(describe(0, false), ("Output".into(), 2, true));
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // Deactivated before destruction, as CLAP requires (skipped while a test is failing).
        if !std::thread::panicking() {
            self.deactivate();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// What the host feeds the plugin's inputs (main and sidechain alike).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    Silence,
    /// A chord accented on every beat.
    Music,
    /// Music with NaN and infinite samples mixed in.
    Garbage,
}

impl Input {
    fn frame(self, t: i64, rate: f64) -> (f32, f32) {
        match self {
            Input::Silence => (0.0, 0.0),
            Input::Music => {
                let m = music(t, rate);
                (m, 0.9 * m)
            }
            Input::Garbage => {
                let (l, r) = Input::Music.frame(t, rate);
                match (t.rem_euclid(97), t.rem_euclid(89)) {
                    (0, _) => (f32::NAN, r),
                    (1, _) => (f32::INFINITY, f32::NEG_INFINITY),
                    (_, 0) => (l, f32::NAN),
                    _ => (l, r),
                }
            }
        }
    }
}

/// A chord at timeline sample `t`, louder on every beat.
fn music(t: i64, rate: f64) -> f32 {
    let s = t as f64 / rate;
    let accent = if (s * TEMPO / 60.0).rem_euclid(1.0) < 0.1 {
        1.0
    } else {
        0.4
    };
    let chord: f64 = [110.0, 138.59, 164.81]
        .iter()
        .map(|f| (TAU * f * s).sin())
        .sum();
    (0.2 * accent * chord) as f32
}

/// A stretch of audio the host renders.
#[derive(Debug, Clone, Copy)]
struct Span<'a> {
    /// Timeline position of the first frame, in samples (the playhead stays there if stopped).
    start: i64,
    frames: usize,
    /// Block sizes, used in turn.
    blocks: &'a [usize],
    playing: bool,
    input: Input,
    /// Parameter changes (name, CLAP value) sent with the first block.
    changes: &'a [(&'a str, f64)],
}

impl<'a> Span<'a> {
    fn playing(start: i64, frames: usize) -> Self {
        Span {
            start,
            frames,
            blocks: &[512],
            playing: true,
            input: Input::Silence,
            changes: &[],
        }
    }

    fn stopped(at: i64, frames: usize) -> Self {
        Span {
            playing: false,
            ..Span::playing(at, frames)
        }
    }

    fn blocks(self, blocks: &'a [usize]) -> Self {
        Span { blocks, ..self }
    }

    fn input(self, input: Input) -> Self {
        Span { input, ..self }
    }

    fn changes(self, changes: &'a [(&'a str, f64)]) -> Self {
        Span { changes, ..self }
    }
}

/// Rendered output.
#[derive(Debug, Default)]
struct Stereo {
    left: Vec<f32>,
    right: Vec<f32>,
}

impl Stereo {
    fn samples(&self) -> impl Iterator<Item = f32> + '_ {
        self.left.iter().chain(&self.right).copied()
    }

    fn peak(&self) -> f32 {
        self.samples().fold(0.0, |m, s| m.max(s.abs()))
    }
}

/// The audio thread's side of `Plugin::render`.
fn process_span(
    audio: &mut PluginAudioProcessor<TestHost>,
    span: &Span,
    first_events: &EventBuffer,
    rate: f64,
    max_block: usize,
    steady_time: u64,
) -> Stereo {
    let processor = audio
        .ensure_processing_started()
        .expect("start_processing failed");
    let [mut in_l, mut in_r, mut sc_l, mut sc_r, mut out_l, mut out_r] =
        std::array::from_fn(|_| vec![0.0f32; max_block]);
    let mut input_ports = AudioPorts::with_capacity(4, 2);
    let mut output_ports = AudioPorts::with_capacity(2, 1);
    let no_events = EventBuffer::new();
    let mut out_events = EventBuffer::with_capacity(256);
    let mut rendered = Stereo::default();
    let mut done = 0;
    for (i, &size) in span.blocks.iter().cycle().enumerate() {
        if done >= span.frames {
            break;
        }
        let n = size.min(span.frames - done).min(max_block);
        // The input keeps flowing while the transport is stopped (someone playing live).
        let heard = span.start + done as i64;
        for k in 0..n {
            let (l, r) = span.input.frame(heard + k as i64, rate);
            (in_l[k], in_r[k], sc_l[k], sc_r[k]) = (l, r, l, r);
        }
        out_l[..n].fill(SENTINEL);
        out_r[..n].fill(SENTINEL);
        let position = if span.playing { heard } else { span.start };
        let transport = transport_at(position, rate, span.playing);
        let events = if i == 0 { first_events } else { &no_events };
        out_events.clear();
        {
            let inputs = input_ports.with_input_buffers([
                AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_input_only([
                        InputChannel::variable(&mut in_l[..n]),
                        InputChannel::variable(&mut in_r[..n]),
                    ]),
                },
                AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_input_only([
                        InputChannel::variable(&mut sc_l[..n]),
                        InputChannel::variable(&mut sc_r[..n]),
                    ]),
                },
            ]);
            let mut outputs = output_ports.with_output_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only([&mut out_l[..n], &mut out_r[..n]]),
            }]);
            processor
                .process(
                    &inputs,
                    &mut outputs,
                    &InputEvents::from_buffer(events),
                    &mut OutputEvents::from_buffer(&mut out_events),
                    Some(steady_time + done as u64),
                    Some(&transport),
                )
                .unwrap_or_else(|e| panic!("process failed at timeline sample {position}: {e}"));
        }
        rendered.left.extend_from_slice(&out_l[..n]);
        rendered.right.extend_from_slice(&out_r[..n]);
        done += n;
    }
    rendered
}

/// The CLAP transport with the playhead at timeline sample `pos` (positions in both beats and
/// seconds, and the bar it is in, as a DAW fills them).
fn transport_at(pos: i64, rate: f64, playing: bool) -> TransportEvent {
    let seconds = pos as f64 / rate;
    let beats = seconds * TEMPO / 60.0;
    let bar = (beats / BEATS_PER_BAR).floor();
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(seconds),
        tempo: TEMPO,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::default(),
        loop_end_beats: BeatTime::default(),
        loop_start_seconds: SecondsTime::default(),
        loop_end_seconds: SecondsTime::default(),
        bar_start: BeatTime::from_float(bar * BEATS_PER_BAR),
        bar_number: bar as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

/// Timeline sample of a quarter-note position.
fn at_beat(beats: f64, rate: f64) -> i64 {
    (beats * 60.0 / TEMPO * rate).round() as i64
}

fn seconds(s: f64, rate: f64) -> usize {
    (s * rate).round() as usize
}

// ---------------------------------------------------------------------------------------------
// State and takes.

/// The plugin's `Session` in a saved state: nice-plug writes an 8-byte length, then JSON whose
/// persisted field "session" is itself a JSON string.
fn session_of(state: &[u8]) -> Value {
    let (length, json) = state.split_at(8);
    let length = u64::from_le_bytes(length.try_into().unwrap());
    assert_eq!(length as usize, json.len(), "state length prefix");
    let state: Value = serde_json::from_slice(json).expect("the state is not JSON");
    let session = state["fields"]["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in the state: {state}"));
    serde_json::from_str(session).expect("the session is not JSON")
}

fn takes(session: &Value) -> &[Value] {
    session["takes"].as_array().map_or(&[], Vec::as_slice)
}

/// Waits (rendering `keep_playing` meanwhile) until the session holds `count` takes.
fn wait_for_takes(
    plugin: &mut Plugin,
    count: usize,
    mut keep_playing: impl FnMut(&mut Plugin),
) -> Value {
    plugin.wait_for("generated take", GENERATION_TIMEOUT, |p| {
        keep_playing(p);
        let session = p.session();
        (takes(&session).len() >= count).then_some(session)
    })
}

/// Checks `out`, rendered from timeline sample `start` with only the stem audible, against the
/// take's own audio placed with its first sample at timeline sample `anchor`.
fn assert_plays_take(out: &Stereo, start: i64, take: &Audio, anchor: i64) {
    let len = take.num_frames() as i64;
    let mut expected_peak = 0.0f32;
    for (i, (&l, &r)) in out.left.iter().zip(&out.right).enumerate() {
        let t = start + i as i64;
        let idx = t - anchor;
        let (el, er) = if (0..len).contains(&idx) {
            let idx = idx as usize;
            (take.channels[0][idx], take.channels[1][idx])
        } else {
            (0.0, 0.0)
        };
        expected_peak = expected_peak.max(el.abs()).max(er.abs());
        assert!(
            (l - el).abs() <= 1e-5 && (r - er).abs() <= 1e-5,
            "timeline sample {t} (take sample {idx}): played ({l}, {r}), the take has ({el}, {er})"
        );
    }
    let overlaps = start < anchor + len && anchor < start + out.left.len() as i64;
    assert!(
        !overlaps || expected_peak > 1e-3,
        "the take is (nearly) silent here, so this comparison proves nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// The plugin as a DAW sees it: ports and the parameter value mapping this test relies on.
fn parameters_are_reported_as_nice_plug_maps_them(plugin: &mut Plugin) {
    plugin.check_audio_ports();
    for (name, steps) in [
        ("Capture length", 3.0),
        ("Custom bars", 31.0),
        ("Quality", 2.0),
        ("Capture", 1.0),
        ("Stem only", 1.0),
        ("Generate after capture", 1.0),
    ] {
        assert_eq!(plugin.param(name).max, steps, "CLAP range of {name:?}");
    }
    plugin.assert_value("Generate after capture", ON);
}

/// Scenario 1: Capture pressed mid-bar while playing starts at the next bar line, lasts the
/// chosen bars, and the worker turns it into a take while the host keeps playing.
fn capture_starts_at_the_next_bar_and_becomes_a_take(a: &mut Plugin) -> (Value, Audio) {
    let rate = a.rate;
    let start = at_beat(1.5, rate);
    // Up to beat 13: the capture runs from beat 4 to beat 12.
    let frames = (at_beat(13.0, rate) - start) as usize;
    a.render(
        Span::playing(start, frames)
            .input(Input::Music)
            .blocks(&[480, 1000, 37, 4096])
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(2)),
                ("Quality", DRAFT),
                ("Capture", ON),
            ]),
    );
    a.assert_value("Capture length", CUSTOM_LENGTH);
    a.assert_value("Custom bars", custom_bars(2));
    a.assert_value("Quality", DRAFT);

    // Release the button, then keep the song playing while the take is generated.
    let mut position = start + frames as i64;
    let chunk = seconds(0.1, rate);
    a.render(
        Span::playing(position, chunk)
            .input(Input::Music)
            .changes(&[("Capture", OFF)]),
    );
    position += chunk as i64;
    let session = wait_for_takes(a, 1, |a| {
        a.render(Span::playing(position, chunk).input(Input::Music));
        position += chunk as i64;
    });

    let takes = takes(&session);
    assert_eq!(takes.len(), 1, "one capture, one take: {session}");
    let take = takes[0].clone();
    let anchor = &take["anchor"];
    assert_eq!(
        anchor["start_beats"], 4.0,
        "the capture starts at the next bar line: {take}"
    );
    assert_eq!(anchor["start_samples"], at_beat(4.0, rate), "{take}");
    assert_eq!(anchor["tempo"], TEMPO, "{take}");
    assert_eq!(take["tempo"], TEMPO, "{take}");
    assert_eq!(take["bars"], 2.0, "{take}");
    assert_eq!(
        take["start_bar"], 1,
        "beat 4 is the second bar (0-based 1): {take}"
    );
    assert_eq!(take["time_sig"], serde_json::json!([4, 4]), "{take}");
    assert_eq!(take["sample_rate"], rate as u32, "{take}");
    assert_eq!(session["selected"], take["id"], "the new take is selected");

    let path = PathBuf::from(take["path"].as_str().expect("take path"));
    assert!(
        path.is_file(),
        "the take's WAV {} is missing",
        path.display()
    );
    assert!(
        path.starts_with(&env().takes_root),
        "{} is not under STEMGEN_TAKES_DIR",
        path.display()
    );
    let wav = read_audio(&path).expect("the take's WAV cannot be read");
    assert_eq!(wav.sample_rate, rate as u32);
    assert_eq!(wav.channels.len(), 2);
    assert_eq!(
        wav.num_frames(),
        seconds(4.0, rate),
        "two bars at 120 BPM last 4 s"
    );
    assert!(wav.channels.iter().flatten().all(|s| s.is_finite()));
    (take, wav)
}

/// Scenario 2: the take plays under the playhead, sample for sample, also after seeks.
fn the_take_plays_in_time_with_the_timeline(a: &mut Plugin, wav: &Audio) {
    let rate = a.rate;
    let anchor = at_beat(4.0, rate);
    let len = wav.num_frames() as i64;
    a.render(Span::playing(0, 64).changes(&[("Stem only", ON)]));
    a.wait_until_take_plays(anchor);
    let windows = [
        (anchor - 1000, seconds(1.0, rate), &[512][..]),
        // Seeks: the middle, just after the start, across the end.
        (anchor + len / 2, 20_000, &[333, 1024, 64][..]),
        (anchor + 1500, 3000, &[1, 7, 4096][..]),
        (anchor + len - 2000, 6000, &[4096][..]),
    ];
    for (start, frames, blocks) in windows {
        let out = a.render(Span::playing(start, frames).blocks(blocks));
        assert_plays_take(&out, start, wav, anchor);
    }
    let stopped = a.render(Span::stopped(anchor + 1000, 4096));
    assert_eq!(
        stopped.peak(),
        0.0,
        "nothing plays while the transport is stopped"
    );
}

/// Scenario 3: a project reopened at another sample rate: the state brings the take back and it
/// plays at its anchor, resampled and still aligned.
fn the_state_restores_the_take_at_another_rate(state: &[u8], wav: &Audio) {
    let mut b = Plugin::new();
    b.load_state(state);
    assert_eq!(
        takes(&b.session()),
        takes(&session_of(state)),
        "the restored session has the takes"
    );
    let rate = 96_000.0;
    b.activate(rate, 4096);
    let anchor = at_beat(4.0, rate);
    let out = b.wait_until_take_plays(anchor);
    let before = 1000; // wait_until_take_plays renders from anchor - 1000
    assert!(
        out.left[..before]
            .iter()
            .chain(&out.right[..before])
            .all(|&s| s == 0.0),
        "silence before the anchor"
    );
    let after = out.left[before..]
        .iter()
        .fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(
        after > 1e-3,
        "the take plays after the anchor (peak {after})"
    );

    // At twice the rate, output frame 2k is the take's frame k; the alignment is exact when no
    // other lag fits better.
    let error_at = |lag: i64| -> f64 {
        (20..3400)
            .map(|k: i64| {
                let played = out.left[(before as i64 + 2 * k + lag) as usize] as f64;
                (played - wav.channels[0][k as usize] as f64).powi(2)
            })
            .sum()
    };
    let energy: f64 = (20..3400)
        .map(|k| (wav.channels[0][k] as f64).powi(2))
        .sum();
    let (best, _) = (-8..=8i64)
        .map(|lag| (lag, error_at(lag)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(
        best, 0,
        "the resampled take is shifted by {best} samples at 96 kHz"
    );
    assert!(
        error_at(0) < 1e-3 * energy,
        "the resampled take differs from the original: error {} vs energy {energy}",
        error_at(0)
    );
}

/// Scenario 3b: a host loads a project into an instance that is already running (a preset
/// recall): the restored selected take plays without a re-activation, and a Capture switch saved
/// "on" does not start a capture when the project opens.
fn a_state_loaded_while_running_brings_its_take(state: &[u8], wav: &Audio) {
    let rate = 48_000.0;
    let mut e = Plugin::new();
    e.activate(rate, 1024);
    e.render(Span::playing(0, 4096).input(Input::Music));
    e.load_state(&with_param(state, "capture", Value::Bool(true)));
    let anchor = at_beat(4.0, rate);
    let out = e.wait_until_take_plays(anchor);
    assert_plays_take(&out, anchor - 1000, wav, anchor);
    // Four bars of music later, still no capture started by the restored switch.
    e.render(Span::playing(anchor, seconds(8.0, rate)).input(Input::Music));
    let before: Value = session_of(state);
    assert_eq!(
        e.session()["next_take_id"],
        before["next_take_id"],
        "a restored Capture switch started a capture"
    );
}

/// `state` with the plain value of parameter `id` replaced by `value` (as a project saved with it would be).
fn with_param(state: &[u8], id: &str, value: Value) -> Vec<u8> {
    let mut json: Value = serde_json::from_slice(&state[8..]).expect("the state is not JSON");
    let params = json["params"]
        .as_object_mut()
        .expect("no params object in the state");
    // nice-plug tags each value with its kind: {"bool": false}, {"f32": 0.5}, ...
    let tagged = params
        .get_mut(id)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no tagged parameter {id} in the state"));
    let kind = tagged
        .keys()
        .next()
        .cloned()
        .expect("an empty parameter value");
    tagged.insert(kind, value);
    let body = serde_json::to_vec(&json).unwrap();
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend(body);
    bytes
}

/// Scenario 4: any rate, any block size (up to twice the plugin's 8192-frame scratch), and
/// non-finite input: the output stays finite and every sample is written; at the take's own
/// rate it is exactly the scrubbed input plus the take. (An allocation in `process` would abort
/// the test binary.)
fn any_rate_and_block_size_with_garbage_input(a: &mut Plugin, wav: &Audio) {
    let patterns: [&[usize]; 7] = [
        &[1],
        &[7],
        &[64],
        &[512],
        &[4096],
        &[10_000, 16_384],
        &[1, 300, 7, 4096, 64, 13],
    ];
    for rate in [44_100.0, 48_000.0, 96_000.0] {
        a.activate(rate, 16_384);
        let anchor = at_beat(4.0, rate);
        a.render(Span::playing(0, 64).changes(&[("Stem only", ON)]));
        a.wait_until_take_plays(anchor);
        for blocks in patterns {
            // Centred on the take's start; block size 1 gets a shorter stretch.
            let length = seconds(if blocks == [1] { 0.25 } else { 2.0 }, rate);
            let start = anchor - length as i64 / 2;
            let out = a.render(
                Span::playing(start, length)
                    .blocks(blocks)
                    .input(Input::Garbage)
                    .changes(&[("Stem only", OFF)]),
            );
            let bad = out.samples().position(|s| !s.is_finite() || s.abs() > 10.0);
            assert!(
                bad.is_none(),
                "{rate} Hz, blocks {blocks:?}: sample {bad:?} of the output is not finite or \
                 was not written"
            );
            if rate as u32 == wav.sample_rate {
                assert_input_plus_take(&out, start, wav, anchor, blocks);
            }
        }
    }
}

/// Checks `out` (rendered from `start` with garbage input passed through at unity gain) is the
/// input plus the take anchored at `anchor`, with non-finite sums replaced by silence.
fn assert_input_plus_take(out: &Stereo, start: i64, wav: &Audio, anchor: i64, blocks: &[usize]) {
    let rate = f64::from(wav.sample_rate);
    for (i, (&l, &r)) in out.left.iter().zip(&out.right).enumerate() {
        let t = start + i as i64;
        let (in_l, in_r) = Input::Garbage.frame(t, rate);
        let idx = t - anchor;
        let (take_l, take_r) = if (0..wav.num_frames() as i64).contains(&idx) {
            (wav.channels[0][idx as usize], wav.channels[1][idx as usize])
        } else {
            (0.0, 0.0)
        };
        let scrub = |s: f32| if s.is_finite() { s } else { 0.0 };
        let (el, er) = (scrub(in_l + take_l), scrub(in_r + take_r));
        assert!(
            (l - el).abs() <= 1e-5 && (r - er).abs() <= 1e-5,
            "blocks {blocks:?}, timeline sample {t}: output ({l}, {r}), expected ({el}, {er})"
        );
    }
}

/// Scenarios 1 to 4 on one project: capture, generate, play in time, save and reopen, then
/// every rate and block size.
#[test]
fn capture_generate_play_restore_in_a_clap_host() {
    let mut a = Plugin::new();
    parameters_are_reported_as_nice_plug_maps_them(&mut a);
    a.activate(48_000.0, 4096);
    let (_take, wav) = capture_starts_at_the_next_bar_and_becomes_a_take(&mut a);
    the_take_plays_in_time_with_the_timeline(&mut a, &wav);
    let state = a.save_state();
    the_state_restores_the_take_at_another_rate(&state, &wav);
    a_state_loaded_while_running_brings_its_take(&state, &wav);
    any_rate_and_block_size_with_garbage_input(&mut a, &wav);
}

/// Scenario 5: Capture with nothing to capture (stopped with no history, or playing silence)
/// neither crashes nor adds a take; an instance removed mid-generation is harmless; "the last
/// bars heard" while stopped does make a take.
#[test]
fn captures_of_nothing_add_no_take() {
    let rate = 48_000.0;
    let one_bar_draft = &[
        ("Capture length", CUSTOM_LENGTH),
        ("Custom bars", custom_bars(1)),
        ("Quality", DRAFT),
    ];
    let press = &[("Capture", ON)];
    let release = &[("Capture", OFF)];

    let mut c = Plugin::new();
    c.activate(rate, 1024);
    // Stopped and nothing heard yet: "the last bars heard" has nothing to take.
    c.render(Span::stopped(0, 1024).changes(one_bar_draft));
    c.render(Span::stopped(0, seconds(0.5, rate)).changes(press));
    c.render(Span::stopped(0, 1024).changes(release));
    let session = c.session();
    assert!(takes(&session).is_empty(), "{session}");
    assert_eq!(
        session["next_take_id"], 0,
        "no generation started: {session}"
    );

    // Playing silence: the bar capture completes, its generation must fail without a take.
    c.render(Span::playing(0, seconds(2.25, rate)).changes(press));
    c.render(Span::playing(seconds(2.25, rate) as i64, 1024).changes(release));
    let session = c.session();
    assert_eq!(
        session["next_take_id"], 1,
        "the silent capture reached the generator: {session}"
    );

    // An instance removed while its (long) generation runs: nothing crashes or stalls, and
    // the process's one worker goes on to serve the next instance (`d` below).
    let mut f = Plugin::new();
    f.activate(rate, 4096);
    f.render(
        Span::playing(0, at_beat(40.0, rate) as usize)
            .input(Input::Music)
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(8)),
                ("Quality", PAPER),
                ("Capture", ON),
            ]),
    );
    let mut position = at_beat(40.0, rate);
    f.wait_for("generation started", GENERATION_TIMEOUT, |f| {
        f.render(Span::playing(position, 4096).changes(release));
        position += 4096;
        (f.session()["next_take_id"] == 1).then_some(())
    });
    drop(f);

    // The plugin's generation worker runs jobs in order: once a later job's take exists, the
    // earlier ones have finished. That job captures the last bar heard after the song stopped.
    let mut d = Plugin::new();
    d.activate(rate, 1024);
    let stop = at_beat(6.0, rate);
    d.render(
        Span::playing(0, stop as usize)
            .input(Input::Music)
            .changes(one_bar_draft),
    );
    d.render(Span::stopped(stop, 4096).changes(press));
    d.render(Span::stopped(stop, 1024).changes(release));
    let session = wait_for_takes(&mut d, 1, |d| {
        d.render(Span::stopped(stop, 1024));
    });
    let take = &takes(&session)[0];
    // Counted on from CLAP's fixed-point beat positions (2^-31 beat steps): close, not exact.
    let start_beats = take["anchor"]["start_beats"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (start_beats - 2.0).abs() < 1e-6,
        "the bar before beat 6: {take}"
    );
    assert_eq!(
        take["anchor"]["start_samples"],
        at_beat(2.0, rate),
        "{take}"
    );
    assert_eq!(take["bars"], 1.0, "{take}");

    c.render(Span::playing(0, 4096));
    let session = c.session();
    assert!(
        takes(&session).is_empty(),
        "a silent capture must not make a take: {session}"
    );
    let out = c.render(Span::playing(0, 4096).input(Input::Garbage));
    assert!(out.samples().all(f32::is_finite));
}
