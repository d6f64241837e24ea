//! Grouped bar charts of the evaluation report, drawn by `plotters` into SVG. SVG needs no
//! font files (the viewer draws the text) and plotters' SVG back end alone is pure Rust with
//! no system libraries, so charts cost the build little and look the same everywhere.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Series colours (Tableau 10), distinguishable in print and for most colour-blind readers.
pub const SERIES_COLOURS: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

const DARK_GREY: RGBColor = RGBColor(110, 110, 110);
const GRID_GREY: RGBColor = RGBColor(215, 215, 215);

/// A grouped bar chart: one group of bars per entry of `groups`, one bar (and legend colour)
/// per entry of `series`; `values[group][series]`, `None` drawn as a small cross (undefined).
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
    /// Dashed horizontal lines with a label at the right end (e.g. floor 0 and ceiling 1).
    pub reference_lines: Vec<(f64, String)>,
    /// The y range always includes this one (data outside widens it).
    pub y_range: (f64, f64),
}

/// Chart size, pixels.
const WIDTH: u32 = 1200;
const PLOT_HEIGHT: u32 = 380;
/// Height of one legend row and of the margin that holds the group labels.
const LEGEND_ROW: u32 = 26;
const LABEL_AREA: u32 = 56;
const LEGEND_PER_ROW: usize = 4;

/// Splits a label at `_`, `-` and spaces into lines of at most `max_chars` characters.
fn wrap(label: &str, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split(['_', ' ', '-']).filter(|w| !w.is_empty()) {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= max_chars => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

impl BarChart {
    /// The y range drawn: `y_range` widened to every finite value and reference line.
    pub fn value_range(&self) -> (f64, f64) {
        let (mut lo, mut hi) = self.y_range;
        let finite = self.values.iter().flatten().flatten().copied();
        let lines = self.reference_lines.iter().map(|(v, _)| *v);
        for v in finite.chain(lines).filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi - lo < 1e-9 {
            hi = lo + 1.0;
        }
        let pad = 0.04 * (hi - lo);
        (lo - pad, hi + pad)
    }

    /// The chart as an SVG document.
    pub fn render_svg(&self) -> Result<String> {
        let legend_rows = self.series.len().div_ceil(LEGEND_PER_ROW) as u32;
        let height = 60 + PLOT_HEIGHT + LABEL_AREA + 20 + legend_rows * LEGEND_ROW;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing a chart: {e}"))?;
            root.present()
                .map_err(|e| anyhow!("drawing a chart: {e}"))?;
        }
        Ok(svg)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_vertically(60 + PLOT_HEIGHT + LABEL_AREA + 10);
        let n_groups = self.groups.len().max(1);
        let n_series = self.series.len().max(1);
        let (lo, hi) = self.value_range();
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, ("sans-serif", 22))
            .margin_right(90)
            .margin_left(10)
            .x_label_area_size(LABEL_AREA)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n_groups as f64, lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(8)
            .y_desc(self.y_label.as_str())
            .light_line_style(WHITE)
            .bold_line_style(GRID_GREY)
            .label_style(("sans-serif", 13))
            .draw()?;
        // The zero line, solid, when zero is in range.
        if lo < 0.0 && hi > 0.0 {
            chart.draw_series(LineSeries::new(
                [(0.0, 0.0), (n_groups as f64, 0.0)],
                BLACK.stroke_width(1),
            ))?;
        }
        let base = 0.0f64.clamp(lo, hi);
        let bar_w = 0.8 / n_series as f64;
        for s in 0..self.series.len() {
            let colour = SERIES_COLOURS[s % SERIES_COLOURS.len()];
            let bars = self.values.iter().enumerate().filter_map(|(g, row)| {
                let v = row.get(s).copied().flatten().filter(|v| v.is_finite())?;
                let x0 = g as f64 + 0.1 + s as f64 * bar_w;
                Some(Rectangle::new(
                    [(x0, base), (x0 + bar_w * 0.92, v)],
                    colour.filled(),
                ))
            });
            chart.draw_series(bars)?;
            // Undefined for this population: a small cross on the zero line.
            let crosses = self.values.iter().enumerate().filter_map(|(g, row)| {
                let undefined = row.get(s).is_some_and(|v| !v.is_some_and(f64::is_finite));
                let x = g as f64 + 0.1 + (s as f64 + 0.46) * bar_w;
                undefined.then(|| Cross::new((x, base), 4, colour.stroke_width(2)))
            });
            chart.draw_series(crosses)?;
        }
        for (v, label) in &self.reference_lines {
            chart.draw_series(DashedLineSeries::new(
                [(0.0, *v), (n_groups as f64, *v)],
                8,
                6,
                DARK_GREY.stroke_width(2),
            ))?;
            let (x, y) = chart.backend_coord(&(n_groups as f64, *v));
            plot_area.draw(&Text::new(
                label.as_str(),
                (x + 6, y - 7),
                ("sans-serif", 13).into_font().color(&DARK_GREY),
            ))?;
        }
        // Group labels under the axis, wrapped at underscores.
        let group_px = chart.backend_coord(&(1.0, lo)).0 - chart.backend_coord(&(0.0, lo)).0;
        let max_chars = ((group_px - 4) / 7).max(3) as usize;
        for (g, name) in self.groups.iter().enumerate() {
            let (cx, y0) = chart.backend_coord(&(g as f64 + 0.5, lo));
            for (l, line) in wrap(name, max_chars).iter().take(3).enumerate() {
                let style = ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top));
                plot_area.draw(&Text::new(
                    line.as_str(),
                    (cx, y0 + 8 + 14 * l as i32),
                    style,
                ))?;
            }
        }
        // Legend: coloured boxes with the series names, a few per row.
        for (s, name) in self.series.iter().enumerate() {
            let (row, col) = ((s / LEGEND_PER_ROW) as i32, (s % LEGEND_PER_ROW) as i32);
            let (x, y) = (80 + col * 270, 4 + row * LEGEND_ROW as i32);
            let colour = SERIES_COLOURS[s % SERIES_COLOURS.len()];
            legend_area.draw(&Rectangle::new([(x, y), (x + 22, y + 14)], colour.filled()))?;
            legend_area.draw(&Text::new(name.as_str(), (x + 30, y), ("sans-serif", 15)))?;
        }
        Ok(())
    }

    /// Writes the chart as an SVG file.
    pub fn save_svg(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.render_svg()?)
            .with_context(|| format!("{}: cannot write the chart", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_wrap_at_underscores() {
        assert_eq!(
            wrap("category_guidance_only", 10),
            vec!["category", "guidance", "only"]
        );
        assert_eq!(wrap("no_guidance", 20), vec!["no guidance"]);
    }

    #[test]
    fn range_covers_values_and_reference_lines() {
        let chart = BarChart {
            title: "t".into(),
            y_label: "y".into(),
            groups: vec!["a".into()],
            series: vec!["s".into()],
            values: vec![vec![Some(-0.5)]],
            reference_lines: vec![(1.5, "ceiling".into())],
            y_range: (0.0, 1.0),
        };
        let (lo, hi) = chart.value_range();
        assert!(lo < -0.5 && hi > 1.5, "{lo} {hi}");
    }
}
