//! The takes panel: each take's name, waveform, buttons (audition, in context, drag out,
//! reveal, copy path, delete) and the takes folder. Reached only from the editor.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use egui::RichText;

#[cfg(all(unix, not(target_os = "macos")))]
use crate::drag_out::{DragOut, DragOutcome};
use crate::shared::{Requests, Shared};
use crate::take_view::{self, WaveAction};
use crate::takes::{self, BarRegion, Take};

use super::{section, StemGenEditor, ERROR, OK, WARN};

impl StemGenEditor {
    pub(super) fn takes_section(&mut self, ui: &mut egui::Ui) {
        #[cfg(all(unix, not(target_os = "macos")))]
        self.poll_drag_out();
        let shared = self.shared.clone();
        let host = &shared.host;
        let takes: Vec<Take> = shared.params.session.read().takes.clone();
        let selected = shared.params.session.read().selected;
        section(ui, "3 · Takes", |ui| {
            if takes.is_empty() {
                ui.label(RichText::new("No takes yet: capture, then generate.").weak());
            }
            let playing_id = host.playing_take.load(Ordering::Relaxed);
            let auditioning = host.auditioning.load(Ordering::Relaxed);
            egui::ScrollArea::vertical()
                .id_salt("takes")
                .max_height(300.0)
                .show(ui, |ui| {
                    for take in takes.iter().rev() {
                        self.take_row(ui, take, selected, playing_id, auditioning);
                        ui.separator();
                    }
                });
            if let Some(take) = takes.iter().find(|t| Some(t.id) == selected) {
                if let (Some(host_tempo), Some(take_tempo)) = (host.tempo(), take.tempo) {
                    if (host_tempo - take_tempo).abs() > 0.05 {
                        ui.label(
                            RichText::new(format!(
                                "The host plays at {host_tempo:.1} BPM but this take was made at \
                                 {take_tempo:.1} BPM: it plays at its own speed and drifts from \
                                 the bars. Set the host back to {take_tempo:.1} BPM or capture \
                                 and generate again."
                            ))
                            .color(WARN),
                        );
                    }
                }
                if host.sample_rate.load(Ordering::Relaxed) != take.sample_rate {
                    ui.label(
                        RichText::new(format!(
                            "Made at {} Hz; playing a copy resampled for the host's rate.",
                            take.sample_rate
                        ))
                        .weak(),
                    );
                }
            }
            self.takes_folder(ui);
        });
    }

    fn take_row(
        &mut self,
        ui: &mut egui::Ui,
        take: &Take,
        selected: Option<u64>,
        playing_id: u64,
        auditioning: bool,
    ) {
        let shared = self.shared.clone();
        ui.horizontal(|ui| {
            let is_selected = selected == Some(take.id);
            if ui
                .radio(is_selected, "")
                .on_hover_text("Play this take on the timeline")
                .clicked()
            {
                shared.select_take(if is_selected { None } else { Some(take.id) });
            }
            let name = self
                .names
                .entry(take.id)
                .or_insert_with(|| take.name.clone());
            let edit = ui.add(egui::TextEdit::singleline(name).desired_width(150.0));
            if edit.lost_focus() && *name != take.name {
                rename_take(&shared, take.id, name.clone());
            }
            if is_selected && playing_id == take.id {
                ui.label(RichText::new("playing on the timeline").color(OK));
            }
        });
        let bars = match (take.bars, take.tempo) {
            (Some(b), Some(t)) => format!("{b:.0} bars @ {t:.1} BPM"),
            _ => format!("{:.1} s", take.seconds),
        };
        let from = take
            .start_bar
            .map_or(String::new(), |b| format!(" from bar {}", b + 1));
        ui.label(
            RichText::new(format!(
                "{} · seed {} · {} · {bars}{from} · made in {:.1} s{}",
                take.instrument,
                take.seed,
                take.preset,
                take.generation_seconds,
                take.preview_seconds
                    .map_or(String::new(), |p| format!(" (heard after {p:.1} s)"))
            ))
            .weak(),
        );
        if self.missing.contains(&take.id) {
            ui.label(RichText::new(format!("File missing: {}", take.path.display())).color(ERROR));
        }
        let peaks = shared.take_peaks(take);
        let playhead = Some(shared.host.take_position.load())
            .filter(|p| p.is_finite() && playing_id == take.id);
        let (region, mut in_context) = {
            let session = shared.params.session.read();
            (session.region, session.context_takes.contains(&take.id))
        };
        let drag = self.drags.entry(take.id).or_default();
        match take_view::take_waveform(ui, take, peaks.as_deref(), playhead, region, drag) {
            WaveAction::AuditionFrom(fraction) => {
                if playing_id != take.id {
                    shared.select_take(Some(take.id));
                }
                shared.requests.audition_from.store(fraction);
                Requests::send(&shared.requests.audition_at);
            }
            WaveAction::Select(region) => shared.select_region(Some(region)),
            WaveAction::None => {}
        }
        // Wrapped: at the editor's narrowest the row is wider than the takes panel.
        ui.horizontal_wrapped(|ui| {
            if ui
                .checkbox(&mut in_context, "In context")
                .on_hover_text("Mix this take into what the next generation hears (stem by stem)")
                .changed()
            {
                shared.set_in_context(take.id, in_context);
            }
            let is_playing = playing_id == take.id;
            if is_playing && auditioning {
                if ui.small_button("Stop").clicked() {
                    Requests::send(&shared.requests.stop_audition);
                }
            } else if ui
                .small_button("Audition")
                .on_hover_text("Selects the take and plays it from its start")
                .clicked()
            {
                if !is_playing {
                    shared.select_take(Some(take.id));
                }
                Requests::send(&shared.requests.audition);
            }
            #[cfg(all(unix, not(target_os = "macos")))]
            self.drag_out_handle(ui, take, region);
            if ui.small_button("Reveal").clicked() {
                if let Err(e) = reveal(&take.path) {
                    shared.set_message(e);
                }
            }
            if ui.small_button("Copy path").clicked() {
                ui.ctx().copy_text(take.path.display().to_string());
                shared.set_message(format!("Copied {}", take.path.display()));
            }
            if ui.small_button("Delete").clicked() {
                shared.delete_take(take.id);
                self.names.remove(&take.id);
                self.drags.remove(&take.id);
            }
        });
    }

    /// "Drag out" (X11): the take, or the bars selected on it, as a WAV file for the
    /// arrangement or a file manager. The file is written before the drag starts.
    #[cfg(all(unix, not(target_os = "macos")))]
    fn drag_out_handle(&mut self, ui: &mut egui::Ui, take: &Take, region: Option<BarRegion>) {
        let handle = ui
            .add(
                egui::Button::new("Drag out")
                    .small()
                    .sense(egui::Sense::click_and_drag()),
            )
            .on_hover_text(
                "Drag into the arrangement or a file manager: the take, or the bars selected \
                 on its waveform, as a WAV file",
            );
        if handle.drag_started() {
            // A previous drag has ended by now (its button was released); this joins it.
            self.drag_out = None;
            let started = takes::drag_file(take, region)
                .and_then(|file| DragOut::start(std::slice::from_ref(&file)).map(|d| (d, file)));
            match started {
                Ok(drag) => self.drag_out = Some(drag),
                Err(e) => self.shared.set_message(format!("{e:#}")),
            }
        }
    }

    /// Says how the last drag out ended, once it has.
    #[cfg(all(unix, not(target_os = "macos")))]
    fn poll_drag_out(&mut self) {
        if !self.drag_out.as_ref().is_some_and(|(d, _)| d.is_finished()) {
            return;
        }
        let Some((drag, file)) = self.drag_out.take() else {
            return;
        };
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        // A drop shows in the window it landed in; only a failure is worth a message.
        match drag.finish() {
            Ok(DragOutcome::Refused) => self
                .shared
                .set_message(format!("The window did not take {name}")),
            Ok(DragOutcome::Dropped { .. } | DragOutcome::NoTarget | DragOutcome::Cancelled) => {}
            Err(e) => self.shared.set_message(format!("Drag out: {e:#}")),
        }
    }

    fn takes_folder(&mut self, ui: &mut egui::Ui) {
        let dir = self.shared.params.session.write().takes_dir();
        // One left-aligned row that truncates (full path on hover): in the section's justified
        // layout a plain label was stretched letter by letter across the panel.
        ui.horizontal(|ui| {
            let text = format!("Takes are saved in {}", dir.display());
            ui.add(
                egui::Label::new(RichText::new(&text).weak())
                    .wrap_mode(egui::TextWrapMode::Truncate),
            )
            .on_hover_text(text);
        });
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.takes_root_text)
                    .hint_text(takes::default_takes_root().display().to_string())
                    .desired_width(260.0),
            );
            if ui.button("Use folder").clicked() {
                let text = self.takes_root_text.trim();
                self.shared.params.session.write().takes_root =
                    (!text.is_empty()).then(|| PathBuf::from(text));
            }
            if ui.button("Open").clicked() {
                let _ = std::fs::create_dir_all(&dir);
                if let Err(e) = open_in_file_manager(&dir) {
                    self.shared.set_message(e);
                }
            }
        });
    }
}

fn rename_take(shared: &Shared, id: u64, name: String) {
    let take = {
        let mut session = shared.params.session.write();
        let Some(take) = session.takes.iter_mut().find(|t| t.id == id) else {
            return;
        };
        take.name = name;
        take.clone()
    };
    if take.path.is_file() {
        let metadata = takes::read_generation_metadata(&take);
        if let Err(e) = takes::write_sidecar(&take, &metadata) {
            shared.set_message(format!("{e:#}"));
        }
    }
}

/// Shows `file` selected in the platform's file manager (its folder on Linux).
fn reveal(file: &Path) -> Result<(), String> {
    if !file.exists() {
        return Err(format!("{}: the file is missing", file.display()));
    }
    let mut command = if cfg!(target_os = "macos") {
        let mut c = std::process::Command::new("open");
        c.arg("-R").arg(file);
        c
    } else if cfg!(target_os = "windows") {
        let mut c = std::process::Command::new("explorer");
        c.arg(format!("/select,{}", file.display()));
        c
    } else {
        return open_in_file_manager(file.parent().unwrap_or(file));
    };
    command
        .spawn()
        .map(reap)
        .map_err(|e| format!("cannot open the file manager: {e}"))
}

fn open_in_file_manager(folder: &Path) -> Result<(), String> {
    #[cfg(target_os = "macos")]
    let program = "open";
    #[cfg(target_os = "windows")]
    let program = "explorer";
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let program = "xdg-open";
    std::process::Command::new(program)
        .arg(folder)
        .spawn()
        .map(reap)
        .map_err(|e| format!("cannot run {program} to open {}: {e}", folder.display()))
}

/// Waits for a helper process on a thread of its own, so it does not linger as a zombie.
fn reap(mut child: std::process::Child) {
    std::thread::spawn(move || child.wait());
}
