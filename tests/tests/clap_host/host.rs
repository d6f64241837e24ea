//! The host: one StemGen instance ([`Plugin`]) with its parameters, activation, rendering
//! on an audio thread, main-thread callbacks and state, as a DAW drives it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clack_extensions::audio_ports::{AudioPortFlags, AudioPortInfoBuffer, PluginAudioPorts};
use clack_extensions::gui::{
    GuiApiType, GuiConfiguration, GuiSize, HostGui, HostGuiImpl, PluginGui, Window,
};
use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::ParamValueEvent;
use clack_host::events::Pckn;
use clack_host::prelude::*;
use serde_json::Value;

use crate::fixture::env;
use crate::render::{process_span, Span, Stereo};
use crate::state::session_of;
use crate::LOAD_TIMEOUT;

/// What the plugin's threads may call on the host: only the main-thread callback request
/// matters here (the plugin uses it to hand finished captures and take loads to the main thread).
#[derive(Default)]
pub(crate) struct HostShared {
    callback_requested: AtomicBool,
}

impl SharedHandler<'_> for HostShared {
    fn request_restart(&self) {}

    fn request_process(&self) {}

    fn request_callback(&self) {
        self.callback_requested.store(true, Ordering::Release);
    }
}

pub(crate) struct TestHost;

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder.register::<HostGui>();
    }
}

/// The window side of an embedded editor (the screenshot): the test's window takes whatever
/// size the editor asks for.
impl HostGuiImpl for HostShared {
    fn resize_hints_changed(&self) {}

    fn request_resize(&self, _new_size: GuiSize) -> Result<(), HostError> {
        Ok(())
    }

    fn request_show(&self) -> Result<(), HostError> {
        Ok(())
    }

    fn request_hide(&self) -> Result<(), HostError> {
        Ok(())
    }

    fn closed(&self, _was_destroyed: bool) {}
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub(crate) id: ClapId,
    pub(crate) max: f64,
}

/// One StemGen instance and the host state around it. Lives on the thread that made it (the
/// "main thread"); `render` runs `process` on a separate audio thread.
pub(crate) struct Plugin {
    instance: PluginInstance<TestHost>,
    /// Present while active; moved to the audio thread for each render. Processing is started
    /// once per activation, as DAWs do (starting it resets the plugin's capture).
    audio: Option<PluginAudioProcessor<TestHost>>,
    params: HashMap<String, Param>,
    pub(crate) rate: f64,
    max_block: usize,
    steady_time: u64,
}

impl Plugin {
    pub(crate) fn new() -> Self {
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

    pub(crate) fn param(&self, name: &str) -> Param {
        *self
            .params
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name:?} in {:?}", self.params.keys()))
    }

    /// Checks a parameter's current CLAP value as the host reads it (nice-plug keeps normalized
    /// `f32` values, so stepped values come back within `f32` precision).
    pub(crate) fn assert_value(&mut self, name: &str, expected: f64) {
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
    pub(crate) fn activate(&mut self, rate: f64, max_block: usize) {
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
    pub(crate) fn render(&mut self, span: Span) -> Stereo {
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

    pub(crate) fn save_state(&mut self) -> Vec<u8> {
        let handle = self.instance.plugin_handle();
        let state: PluginState = handle.get_extension().expect("no state extension");
        let mut bytes = Vec::new();
        state.save(&handle, &mut bytes).expect("state save failed");
        bytes
    }

    pub(crate) fn load_state(&mut self, bytes: &[u8]) {
        let handle = self.instance.plugin_handle();
        let state: PluginState = handle.get_extension().expect("no state extension");
        state
            .load(&handle, &mut &bytes[..])
            .expect("state load failed");
        self.service_main_thread();
    }

    /// The plugin's `Session` (takes, selection) as the saved state holds it.
    pub(crate) fn session(&mut self) -> Value {
        session_of(&self.save_state())
    }

    /// Polls `step` (which may render and inspect) until it gives a value; panics after
    /// `timeout` naming `what` and showing the last session. Sleeps between polls so the
    /// plugin's worker threads get the CPU.
    pub(crate) fn wait_for<T>(
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
    pub(crate) fn wait_until_take_plays(&mut self, anchor: i64) -> Stereo {
        let what = format!(
            "take playing at timeline sample {anchor} ({} Hz)",
            self.rate
        );
        self.wait_for(&what, LOAD_TIMEOUT, |p| {
            let out = p.render(Span::playing(anchor - 1000, 8000));
            (out.peak() > 0.0).then_some(out)
        })
    }

    /// Opens the editor embedded in the X11 window `parent`, as a Linux host does.
    pub(crate) fn open_editor(&mut self, parent: u32) {
        let handle = self.instance.plugin_handle();
        let gui: PluginGui = handle.get_extension().expect("no gui extension");
        let config = GuiConfiguration {
            api_type: GuiApiType::X11,
            is_floating: false,
        };
        assert!(
            gui.is_api_supported(&handle, config),
            "no embedded X11 editor"
        );
        gui.create(&handle, config)
            .expect("the editor cannot be created");
        // SAFETY: `parent` is a live window of the test's own X connection.
        unsafe { gui.set_parent(&handle, Window::from_x11_handle(parent.into())) }
            .expect("the editor cannot be embedded");
        gui.show(&handle).expect("the editor cannot be shown");
        self.service_main_thread();
    }

    /// Closes the editor opened by [`Plugin::open_editor`].
    pub(crate) fn close_editor(&mut self) {
        let handle = self.instance.plugin_handle();
        let gui: PluginGui = handle.get_extension().expect("no gui extension");
        let _ = gui.hide(&handle);
        gui.destroy(&handle);
    }

    pub(crate) fn check_audio_ports(&mut self) {
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
