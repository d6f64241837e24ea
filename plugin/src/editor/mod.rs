//! The editor (nice-plug-egui): capture, generate, takes and output, in one resizable window.
//! It never waits on the model or the audio thread: it reads atomics, sends request counters,
//! and hands long work to the workers. The takes panel is in `takes_panel.rs`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, RichText};
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug::prelude::*;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    create_egui_editor, EguiEditor, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier,
};
use stemgen::analysis::harmony::ChordChart;
use stemgen::analysis::Key;
use stemgen::data::categories::Category;

use crate::capture::CapturePhase;
#[cfg(all(unix, not(target_os = "macos")))]
use crate::drag_out::DragOut;
use crate::jobs::Stage;
use crate::params::{CaptureLength, ContextInput, Quality, StemGenParams};
use crate::shared::{describe_capture, Requests, Shared};
use crate::worker;

mod takes_panel;

const WARN: Color32 = Color32::from_rgb(230, 180, 60);
const ERROR: Color32 = Color32::from_rgb(235, 90, 80);
const OK: Color32 = Color32::from_rgb(120, 200, 120);
const ACCENT: Color32 = Color32::from_rgb(90, 160, 235);

pub fn create(shared: Arc<Shared>) -> Option<EguiEditor<StemGenEditor>> {
    let settings = EguiNiceSettings::new()
        .with_tile("StemGen")
        .with_resize_hint(
            ResizeHint::resizable().with_min_logical_size(LogicalSize::new(760.0, 560.0)),
        );
    create_egui_editor(
        EguiEditorState::from_size(LogicalSize::new(920.0, 680.0), 1.0),
        RepaintNotifier::new(),
        settings,
        StemGenEditor::new(shared),
    )
}

pub struct StemGenEditor {
    shared: Arc<Shared>,
    gui: Option<GuiContext>,
    model_dir_text: String,
    takes_root_text: String,
    names: HashMap<u64, String>,
    missing: HashSet<u64>,
    model_status: Option<(PathBuf, Result<(), String>)>,
    last_check: Option<Instant>,
    meters: (f32, f32),
    /// Where a drag on a take's waveform started (take id, 0..1).
    drags: HashMap<u64, Option<f64>>,
    /// A take being dragged out of the editor, and its file.
    #[cfg(all(unix, not(target_os = "macos")))]
    drag_out: Option<(DragOut, PathBuf)>,
}

impl StemGenEditor {
    fn new(shared: Arc<Shared>) -> Self {
        StemGenEditor {
            shared,
            gui: None,
            model_dir_text: String::new(),
            takes_root_text: String::new(),
            names: HashMap::new(),
            missing: HashSet::new(),
            model_status: None,
            last_check: None,
            meters: (0.0, 0.0),
            drags: HashMap::new(),
            #[cfg(all(unix, not(target_os = "macos")))]
            drag_out: None,
        }
    }

    /// Re-checks files (model folder, take files) at most twice a second.
    fn refresh_file_checks(&mut self) {
        if self
            .last_check
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let session = self.shared.params.session.read();
        let dir = worker::resolve_model_dir(session.model_dir.as_deref());
        let status = worker::check_model_dir(&dir);
        self.model_status = Some((dir, status));
        self.missing = session
            .takes
            .iter()
            .filter(|t| !t.path.is_file())
            .map(|t| t.id)
            .collect();
    }
}

impl NiceEguiApp for StemGenEditor {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        egui_ctx.set_theme(egui::Theme::Dark);
        egui_ctx.all_styles_mut(|s| {
            s.text_styles
                .insert(egui::TextStyle::Body, egui::FontId::proportional(14.0));
            s.text_styles
                .insert(egui::TextStyle::Button, egui::FontId::proportional(14.0));
        });
        self.gui = Some(gui);
        let session = self.shared.params.session.read();
        self.model_dir_text = session
            .model_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        self.takes_root_text = session
            .takes_root
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut nice_plug_egui::Frame) {
        ui.ctx().request_repaint_after(Duration::from_millis(33));
        // Captures are also collected here, in case the host is slow to call the main thread.
        self.shared.collect_captures();
        self.shared.take_sender.lock().collect_garbage();
        self.refresh_file_checks();
        let Some(gui) = self.gui.clone() else { return };
        let setter = gui.param_setter();

        egui::ScrollArea::vertical().show(ui, |ui| {
            self.header(ui);
            ui.separator();
            ui.columns(2, |cols| {
                self.capture_section(&mut cols[0], &setter);
                cols[0].add_space(8.0);
                self.generate_section(&mut cols[0], &setter);
                self.takes_section(&mut cols[1]);
                cols[1].add_space(8.0);
                self.output_section(&mut cols[1], &setter);
            });
        });
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }
}

fn section(ui: &mut egui::Ui, title: &str, body: impl FnOnce(&mut egui::Ui)) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.label(RichText::new(title).strong().size(16.0).color(ACCENT));
        ui.add_space(4.0);
        body(ui);
    });
}

fn set_param<P: Param>(setter: &ParamSetter, param: &P, value: P::Plain) {
    setter.begin_set_parameter(param);
    setter.set_parameter(param, value);
    setter.end_set_parameter(param);
}

fn choice<P: Param>(
    ui: &mut egui::Ui,
    setter: &ParamSetter,
    param: &P,
    value: P::Plain,
    label: &str,
) where
    P::Plain: PartialEq + Copy,
{
    if ui
        .selectable_label(param.modulated_plain_value() == value, label)
        .clicked()
    {
        set_param(setter, param, value);
    }
}

/// The chords field and the key choice (stored in the session, so the project keeps them).
/// A chart that does not parse is shown in red with the reason; generation refuses it too.
fn harmony_fields(ui: &mut egui::Ui, session: &crate::takes::SessionStore) {
    ui.horizontal(|ui| {
        ui.label("Chords:");
        let mut chords = session.read().chords.clone();
        let edit = egui::TextEdit::singleline(&mut chords)
            .hint_text("from the context, or e.g. Am | F | C | G7")
            .desired_width(220.0);
        if ui
            .add(edit)
            .on_hover_text("Chords per bar from the first captured bar, repeated")
            .changed()
        {
            session.write().chords = chords.clone();
        }
        if !chords.trim().is_empty() {
            if let Err(e) = ChordChart::parse(&chords) {
                ui.colored_label(Color32::LIGHT_RED, "?")
                    .on_hover_text(e.to_string());
            }
        }
    });
    ui.horizontal(|ui| {
        ui.label("Key:");
        let current = session.read().key.clone();
        let shown = if current.is_empty() {
            "from the context".to_string()
        } else {
            current.clone()
        };
        egui::ComboBox::from_id_salt("key")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                if ui
                    .selectable_label(current.is_empty(), "from the context")
                    .clicked()
                {
                    session.write().key.clear();
                }
                for i in 0..24 {
                    let name = Key::from_index(i).to_string();
                    if ui.selectable_label(current == name, &name).clicked() {
                        session.write().key = name;
                    }
                }
            });
    });
}

fn checkbox(ui: &mut egui::Ui, setter: &ParamSetter, param: &BoolParam, label: &str) {
    let mut on = param.value();
    if ui.checkbox(&mut on, label).changed() {
        set_param(setter, param, on);
    }
}

impl StemGenEditor {
    fn params(&self) -> &StemGenParams {
        &self.shared.params
    }

    fn header(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading(RichText::new("StemGen").strong());
            ui.label("generates a stem that fits the music on this track");
        });
        match &self.model_status {
            Some((dir, Ok(()))) => {
                ui.label(
                    RichText::new(format!("Model: {}  ·  runs on the CPU", dir.display()))
                        .color(OK),
                );
            }
            Some((_, Err(problem))) => {
                ui.label(RichText::new(problem).color(ERROR));
            }
            None => {}
        }
        ui.horizontal(|ui| {
            ui.label("Model folder:");
            ui.add(
                egui::TextEdit::singleline(&mut self.model_dir_text)
                    .hint_text("default (see above)")
                    .desired_width(360.0),
            );
            if ui.button("Use").clicked() {
                let text = self.model_dir_text.trim();
                self.params().session.write().model_dir =
                    (!text.is_empty()).then(|| PathBuf::from(text));
                self.last_check = None;
            }
            if ui.button("Default").clicked() {
                self.model_dir_text.clear();
                self.params().session.write().model_dir = None;
                self.last_check = None;
            }
        });
        if let Some(msg) = self.shared.message.lock().clone() {
            // Wrapped, so a long message never widens the editor past its window.
            ui.horizontal(|ui| {
                if ui.small_button("×").clicked() {
                    *self.shared.message.lock() = None;
                }
                ui.add(egui::Label::new(RichText::new(&msg).color(WARN)).wrap());
            });
        }
    }

    fn capture_section(&mut self, ui: &mut egui::Ui, setter: &ParamSetter) {
        let shared = self.shared.clone();
        let p = &shared.params;
        section(ui, "1 · Capture the context", |ui| {
            ui.horizontal(|ui| {
                ui.label("From:");
                choice(
                    ui,
                    setter,
                    &p.context_input,
                    ContextInput::Main,
                    "Main input",
                );
                choice(
                    ui,
                    setter,
                    &p.context_input,
                    ContextInput::Sidechain,
                    "Sidechain",
                );
            });
            ui.horizontal(|ui| {
                ui.label("Length:");
                choice(
                    ui,
                    setter,
                    &p.capture_length,
                    CaptureLength::Bars4,
                    "4 bars",
                );
                choice(
                    ui,
                    setter,
                    &p.capture_length,
                    CaptureLength::Bars8,
                    "8 bars",
                );
                choice(
                    ui,
                    setter,
                    &p.capture_length,
                    CaptureLength::Bars16,
                    "16 bars",
                );
                choice(
                    ui,
                    setter,
                    &p.capture_length,
                    CaptureLength::Custom,
                    "Custom",
                );
                if p.capture_length.value() == CaptureLength::Custom {
                    ui.add(ParamSlider::for_param(&p.custom_bars, setter).with_width(90.0));
                }
            });
            let host = &shared.host;
            let playing = host.playing.load(Ordering::Relaxed);
            let transport = match host.tempo() {
                Some(t) => {
                    let (n, d) = (
                        host.time_sig_num.load(Ordering::Relaxed),
                        host.time_sig_den.load(Ordering::Relaxed),
                    );
                    let sig = if n > 0 {
                        format!(" {n}/{d}")
                    } else {
                        String::new()
                    };
                    format!("{t:.1} BPM{sig}")
                }
                None => "no tempo from the host".into(),
            };
            ui.label(format!(
                "Host: {transport}, {}, {} Hz",
                if playing { "playing" } else { "stopped" },
                host.sample_rate.load(Ordering::Relaxed)
            ));
            let phase = host.capture_phase();
            ui.horizontal(|ui| match phase {
                CapturePhase::Idle => {
                    if ui
                        .button(format!("Capture {} bars", p.capture_bars()))
                        .on_hover_text("Records from the next bar line while the song plays")
                        .clicked()
                    {
                        Requests::send(&shared.requests.arm_capture);
                    }
                    if ui
                        .add_enabled(!playing, egui::Button::new("Take the last bars heard"))
                        .on_hover_text("With the transport stopped: the last bars that played")
                        .clicked()
                    {
                        Requests::send(&shared.requests.capture_last);
                    }
                }
                CapturePhase::WaitingForBar | CapturePhase::Recording => {
                    if ui.button("Cancel capture").clicked() {
                        Requests::send(&shared.requests.cancel_capture);
                    }
                }
            });
            match phase {
                CapturePhase::WaitingForBar => {
                    ui.label(
                        RichText::new(if playing {
                            "Armed: starts at the next bar line…"
                        } else {
                            "Armed: press play in the host; capture starts at the next bar line."
                        })
                        .color(WARN),
                    );
                }
                CapturePhase::Recording => {
                    ui.add(
                        egui::ProgressBar::new(host.capture_progress.load() as f32)
                            .text("Recording"),
                    );
                }
                CapturePhase::Idle => {}
            }
            let capture = shared.last_capture.lock().clone();
            match capture {
                Some(c) => {
                    ui.label(format!("Captured: {}", describe_capture(&c.info)));
                    waveform(ui, &c.samples, c.info.bars, 70.0);
                }
                None => {
                    ui.label(RichText::new("Nothing captured yet.").weak());
                }
            }
        });
    }

    fn generate_section(&mut self, ui: &mut egui::Ui, setter: &ParamSetter) {
        let shared = self.shared.clone();
        let p = &shared.params;
        section(ui, "2 · Generate", |ui| {
            let current = p.instrument.value() as u32;
            let name = |id: u32| Category::from_id(id).map_or("?", |c| c.name());
            ui.horizontal(|ui| {
                ui.label("Instrument:");
                egui::ComboBox::from_id_salt("instrument")
                    .selected_text(name(current))
                    .show_ui(ui, |ui| {
                        for c in Category::all() {
                            if ui.selectable_label(c.id() == current, c.name()).clicked() {
                                set_param(setter, &p.instrument, c.id() as i32);
                            }
                        }
                    });
            });
            ui.horizontal(|ui| {
                ui.label("Follow the context:");
                ui.add(ParamSlider::for_param(&p.cfg_context, setter));
            });
            ui.horizontal(|ui| {
                ui.label("Sound like the instrument:");
                ui.add(ParamSlider::for_param(&p.cfg_instrument, setter));
            });
            harmony_fields(ui, &p.session);
            ui.horizontal(|ui| {
                ui.label("Quality:");
                choice(ui, setter, &p.quality, Quality::Draft, "Draft");
                choice(ui, setter, &p.quality, Quality::Normal, "Normal");
                choice(ui, setter, &p.quality, Quality::Paper, "Paper (slow)");
            });
            ui.horizontal(|ui| {
                ui.label("Seed:");
                let mut seed = p.session.read().seed;
                if ui.add(egui::DragValue::new(&mut seed)).changed() {
                    p.session.write().seed = seed;
                }
                if ui
                    .button("New variation")
                    .on_hover_text("A new random seed")
                    .clicked()
                {
                    p.session.write().seed = random_seed();
                }
            });
            checkbox(
                ui,
                setter,
                &p.auto_generate,
                "Generate as soon as a capture finishes",
            );

            let job = shared.job.lock().clone();
            let running = job.as_ref().is_some_and(|j| !j.is_finished());
            let (region, heard) = {
                let session = shared.params.session.read();
                let region = session
                    .region
                    .and_then(|r| session.take(r.take).map(|t| (r.label(t), t.name.clone())));
                let heard: Vec<(u64, String)> = session
                    .context_takes
                    .iter()
                    .filter_map(|id| session.take(*id).map(|t| (*id, t.name.clone())))
                    .collect();
                (region, heard)
            };
            if region.is_none() && !heard.is_empty() {
                ui.horizontal_wrapped(|ui| {
                    ui.label("Hears the capture plus");
                    for (id, name) in &heard {
                        if ui
                            .small_button(format!("{name} ✕"))
                            .on_hover_text("Take it out of the context")
                            .clicked()
                        {
                            shared.set_in_context(*id, false);
                        }
                    }
                });
            }
            ui.horizontal(|ui| {
                let label = match &region {
                    Some((bars, name)) => format!("Re-generate {bars} of {name}"),
                    None => "Generate".to_string(),
                };
                let can = !running && (region.is_some() || shared.last_capture.lock().is_some());
                if ui
                    .add_enabled(can, egui::Button::new(RichText::new(label).strong()))
                    .clicked()
                {
                    shared.start_generation();
                }
                if region.is_some()
                    && ui
                        .small_button("Clear selection")
                        .on_hover_text("Generate whole takes from the capture again")
                        .clicked()
                {
                    shared.select_region(None);
                }
                if ui
                    .add_enabled(running, egui::Button::new("Cancel"))
                    .clicked()
                {
                    shared.cancel_generation();
                }
            });
            if let Some(job) = job {
                let stage = job.stage();
                let preview = job.preview_seconds.load();
                let text = match stage {
                    Stage::Done => format!("Done in {:.1} s (CPU)", job.elapsed()),
                    _ if preview.is_finite() => format!(
                        "preview playing (after {preview:.1} s) · {} · {:.1} s",
                        stage.label(),
                        job.elapsed()
                    ),
                    _ => format!("{} · {:.1} s", stage.label(), job.elapsed()),
                };
                ui.add(egui::ProgressBar::new(job.progress()).text(text));
            }
        });
    }

    fn output_section(&mut self, ui: &mut egui::Ui, setter: &ParamSetter) {
        let shared = self.shared.clone();
        let p = &shared.params;
        let host = &shared.host;
        // Peak meters with a 20 dB/s fall.
        let decay = 0.1f32.powf(1.0 / 30.0);
        let input = host.input_peak.load() as f32;
        let stem = host.stem_peak.load() as f32;
        host.input_peak.store(0.0);
        host.stem_peak.store(0.0);
        self.meters = (
            (self.meters.0 * decay).max(input),
            (self.meters.1 * decay).max(stem),
        );
        section(ui, "4 · Output", |ui| {
            ui.horizontal(|ui| {
                ui.label("Stem level:");
                ui.add(ParamSlider::for_param(&p.stem_gain, setter));
            });
            ui.horizontal(|ui| {
                ui.label("Input level:");
                ui.add(ParamSlider::for_param(&p.thru_gain, setter));
            });
            ui.horizontal(|ui| {
                checkbox(ui, setter, &p.solo, "Stem only");
                checkbox(ui, setter, &p.mute, "Mute stem");
            });
            meter(ui, "Context in", self.meters.0);
            meter(ui, "Stem out", self.meters.1);
        });
    }
}

fn meter(ui: &mut egui::Ui, label: &str, peak: f32) {
    let db = 20.0 * peak.max(1e-6).log10();
    let fill = ((db + 60.0) / 66.0).clamp(0.0, 1.0);
    ui.horizontal(|ui| {
        ui.label(format!("{label:<10}"));
        let color = if db > -0.5 { ERROR } else { OK };
        // The reading beside the bar, not on it: drawn over the bar it sat on the fill's end.
        ui.add(
            egui::ProgressBar::new(fill)
                .desired_width(220.0)
                .fill(color),
        );
        ui.add_sized(
            [64.0, 16.0],
            egui::Label::new(if peak > 0.0 {
                format!("{db:.1} dB")
            } else {
                "-inf dB".into()
            }),
        );
    });
}

/// Min/max waveform with bar lines.
fn waveform(ui: &mut egui::Ui, samples: &[f32], bars: Option<f64>, height: f32) {
    let (rect, _) = ui.allocate_exact_size(
        egui::vec2(ui.available_width(), height),
        egui::Sense::hover(),
    );
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 4.0, Color32::from_gray(24));
    if samples.is_empty() {
        return;
    }
    let columns = rect.width().max(1.0) as usize;
    let per = samples.len().div_ceil(columns).max(1);
    let mid = rect.center().y;
    let half = rect.height() * 0.45;
    let peak = samples.iter().fold(1e-6f32, |m, s| m.max(s.abs()));
    for (x, chunk) in samples.chunks(per).enumerate() {
        let (lo, hi) = chunk
            .iter()
            .fold((0.0f32, 0.0f32), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        let px = rect.left() + x as f32;
        painter.line_segment(
            [
                egui::pos2(px, mid - hi / peak * half),
                egui::pos2(px, mid - lo / peak * half),
            ],
            egui::Stroke::new(1.0, ACCENT),
        );
    }
    if let Some(bars) = bars.filter(|b| *b >= 1.0 && *b <= 64.0) {
        for b in 1..bars as usize {
            let x = rect.left() + rect.width() * b as f32 / bars as f32;
            painter.line_segment(
                [egui::pos2(x, rect.top()), egui::pos2(x, rect.bottom())],
                egui::Stroke::new(1.0, Color32::from_gray(70)),
            );
        }
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // SplitMix64 finaliser: spreads the clock's low bits over the whole seed.
    let mut z = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1_000_000
}
