//! One take drawn in the editor: its waveform over the context's (faint, behind), bar lines
//! with the host timeline's bar numbers, the bars selected for re-generation and the playhead.
//! A click auditions from the bar under the pointer; a drag across bars selects them.

use egui::{Color32, Rect, Stroke};

use crate::peaks::{Peaks, TakePeaks};
use crate::takes::{BarRegion, Take};

const TAKE_COLOUR: Color32 = Color32::from_rgb(0x4f, 0xc3, 0xf7);
const CONTEXT_COLOUR: Color32 = Color32::from_gray(70);
const SELECTION: Color32 = Color32::from_rgba_premultiplied(0x40, 0x30, 0x00, 0x40);
const PLAYHEAD: Color32 = Color32::from_rgb(0xff, 0xd5, 0x4f);

/// What the producer did on a take's waveform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveAction {
    None,
    /// Audition from this point of the take (0..1): the start of the clicked bar.
    AuditionFrom(f64),
    /// Bars selected by a drag.
    Select(BarRegion),
}

/// The bars of `take` as a fraction of its length each (`None`: no tempo, so no bars).
fn bar_fraction(take: &Take) -> Option<f64> {
    let bars = take.bars.filter(|b| *b >= 1.0)?;
    let region = BarRegion {
        take: take.id,
        first: 0,
        count: 1,
    };
    let bar = region.seconds(take)?;
    let fraction = (bar.end - bar.start) / take.seconds;
    (fraction > 0.0 && bars <= 256.0).then_some(fraction)
}

/// Draws `take` and returns what a click or drag on it asked for. `drag_from` is the editor's
/// memory of where a drag on this take started (0..1).
pub fn take_waveform(
    ui: &mut egui::Ui,
    take: &Take,
    peaks: Option<&TakePeaks>,
    playhead: Option<f64>,
    selected: Option<BarRegion>,
    drag_from: &mut Option<f64>,
) -> WaveAction {
    let (rect, response) = ui.allocate_exact_size(
        egui::vec2(ui.available_width(), 54.0),
        egui::Sense::click_and_drag(),
    );
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 3.0, Color32::from_gray(20));
    let x_of = |f: f64| rect.left() + rect.width() * f.clamp(0.0, 1.0) as f32;
    let f_of = |x: f32| ((x - rect.left()) / rect.width().max(1.0)).clamp(0.0, 1.0) as f64;
    let bar = bar_fraction(take);
    let bar_of = |f: f64| bar.map(|b| (f / b).floor().max(0.0) as u32);

    // The selection: the stored one, or the bars under a drag in progress.
    let pointer = response.interact_pointer_pos().map(|p| f_of(p.x));
    let shown = match (*drag_from, pointer, bar) {
        (Some(from), Some(to), Some(_)) => region_between(take, from, to, &bar_of),
        _ => selected.filter(|r| r.take == take.id),
    };
    if let (Some(region), Some(b)) = (shown, bar) {
        let span = Rect::from_x_y_ranges(
            x_of(region.first as f64 * b)..=x_of((region.first + region.count) as f64 * b),
            rect.y_range(),
        );
        painter.rect_filled(span, 0.0, SELECTION);
    }
    if let Some(context) = peaks.and_then(|p| p.context.as_ref()) {
        draw_peaks(&painter, rect, context, CONTEXT_COLOUR);
    }
    if let Some(p) = peaks {
        draw_peaks(&painter, rect, &p.take, TAKE_COLOUR);
    }
    if let Some(b) = bar {
        let bars = (1.0 / b).ceil() as u32;
        let every = bars.div_ceil(16).max(1);
        for i in 0..bars {
            let x = x_of(i as f64 * b);
            if i > 0 {
                painter.line_segment(
                    [egui::pos2(x, rect.top()), egui::pos2(x, rect.bottom())],
                    Stroke::new(1.0, Color32::from_gray(90)),
                );
            }
            if i % every == 0 {
                let number = take.start_bar.unwrap_or(0) as i64 + i as i64 + 1;
                painter.text(
                    egui::pos2(x + 3.0, rect.top() + 1.0),
                    egui::Align2::LEFT_TOP,
                    number.to_string(),
                    egui::FontId::proportional(10.0),
                    Color32::from_gray(150),
                );
            }
        }
    }
    if let Some(p) = playhead {
        let x = x_of(p);
        painter.line_segment(
            [egui::pos2(x, rect.top()), egui::pos2(x, rect.bottom())],
            Stroke::new(2.0, PLAYHEAD),
        );
    }

    if response.drag_started() {
        *drag_from = pointer;
    }
    if response.drag_stopped() {
        let from = drag_from.take();
        if let (Some(from), Some(to)) = (from, pointer.or(from)) {
            if let Some(region) = region_between(take, from, to, &bar_of) {
                return WaveAction::Select(region);
            }
        }
    }
    if response.clicked() {
        if let Some(f) = pointer {
            let start = match (bar, bar_of(f)) {
                (Some(b), Some(i)) => i as f64 * b,
                _ => f,
            };
            return WaveAction::AuditionFrom(start);
        }
    }
    WaveAction::None
}

/// The bars from the one under `from` to the one under `to` (either order).
fn region_between(
    take: &Take,
    from: f64,
    to: f64,
    bar_of: &dyn Fn(f64) -> Option<u32>,
) -> Option<BarRegion> {
    let (a, b) = (bar_of(from.min(to))?, bar_of(from.max(to).min(0.999_999))?);
    Some(BarRegion {
        take: take.id,
        first: a,
        count: b - a + 1,
    })
}

fn draw_peaks(painter: &egui::Painter, rect: Rect, peaks: &Peaks, colour: Color32) {
    if peaks.is_empty() {
        return;
    }
    let mid = rect.center().y;
    let half = rect.height() * 0.45;
    let scale = half / peaks.peak();
    let columns = rect.width().max(1.0) as usize;
    let n = peaks.min.len();
    for x in 0..columns {
        // Every overview column under this pixel column.
        let (a, b) = (
            x * n / columns,
            ((x + 1) * n / columns).max(x * n / columns + 1),
        );
        let lo = peaks.min[a..b.min(n)].iter().fold(0.0f32, |m, &v| m.min(v));
        let hi = peaks.max[a..b.min(n)].iter().fold(0.0f32, |m, &v| m.max(v));
        let px = rect.left() + x as f32 + 0.5;
        painter.line_segment(
            [
                egui::pos2(px, mid - hi * scale),
                egui::pos2(px, mid - lo * scale),
            ],
            Stroke::new(1.0, colour),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_of_a_take_and_a_drag_across_them() {
        let take = Take {
            bars: Some(4.0),
            seconds: 8.0,
            tempo: Some(120.0),
            time_sig: Some((4, 4)),
            ..crate::takes::tests::take(3)
        };
        let b = bar_fraction(&take).unwrap();
        assert!((b - 0.25).abs() < 1e-9);
        let bar_of = |f: f64| Some((f / b).floor() as u32);
        // From inside bar 3 back to inside bar 2 (1-based): bars 2-3.
        let region = region_between(&take, 0.6, 0.3, &bar_of).unwrap();
        assert_eq!((region.first, region.count, region.take), (1, 2, 3));
        // A drag to the very end stays in the last bar.
        let region = region_between(&take, 0.8, 1.0, &bar_of).unwrap();
        assert_eq!((region.first, region.count), (3, 1));
        let no_tempo = Take {
            tempo: None,
            ..take
        };
        assert!(bar_fraction(&no_tempo).is_none());
    }
}
