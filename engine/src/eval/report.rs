//! Writes a [`SuiteReport`] as `report.json` (everything), `report.md` (tables a person
//! reads: populations as rows, metrics as columns) and SVG bar charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::plot::BarChart;
use super::sound::CategorySound;
use super::suite::{PopulationReport, Role, SuiteReport};

/// File names written by [`write_all`].
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const PLOT_NORMALISED: &str = "coherence_normalised.svg";
pub const PLOT_RAW: &str = "coherence_raw.svg";
pub const PLOT_DISTANCES: &str = "classical_distances.svg";
pub const PLOT_SOUND_CLICKS: &str = "sound_clicks.svg";
pub const PLOT_SOUND_BAND: &str = "sound_out_of_band.svg";

/// Short column titles of the coherence metrics, in [`super::suite::COHERENCE_METRICS`] order.
pub const METRIC_TITLES: [&str; 6] = [
    "onset on grid",
    "beat F1",
    "tempo agree",
    "key score",
    "beat chroma cos",
    "in-key share",
];

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ceiling => "ceiling",
        Role::Floor => "floor",
        Role::Model => "model",
        Role::Ablation => "ablation",
        Role::Reference => "reference",
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "n/a".into(),
    }
}

/// The Markdown report.
pub fn markdown(r: &SuiteReport) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# StemGen evaluation\n");
    let _ = writeln!(
        w,
        "- model: `{}` ({} levels x {} codes, d_model {}, {} layers), tokenizer `{}`",
        r.model_dir.display(),
        r.model.levels,
        r.model.codebook_size,
        r.model.d_model,
        r.model.n_layers,
        r.tokenizer
    );
    let _ = writeln!(
        w,
        "- clips: {} of {:.2} s ({} frames at {} Hz, {:.1} frames/s) from {} songs in `{}` ({} layout){}",
        r.clips.len(),
        r.window_seconds,
        r.window_frames,
        r.sample_rate,
        r.frame_rate,
        r.songs_available,
        r.songs_dir.display(),
        r.songs_layout,
        match &r.synthesized {
            Some(s) => format!(
                ", synthesized with seeds {}..{} ({:.0} s songs, {}{})",
                s.base_seed,
                s.base_seed + s.count as u64 - 1,
                s.song_seconds,
                s.soundfont,
                if s.rendered { "" } else { ", reused" }
            ),
            None => String::new(),
        }
    );
    let s = &r.settings;
    let _ = writeln!(
        w,
        "- sampler: preset `{}` (steps {:?}), temperature {}, top-p {}, plausibility {}, w_c {}, w_s {}, \
         w_r {}, lambda_context {}, lambda_category {}, guided levels {}; seed of clip i = {} + i{}",
        r.preset,
        s.steps,
        s.temperature,
        s.top_p,
        s.plausibility,
        s.w_confidence,
        s.w_position,
        s.w_random,
        s.lambda_context,
        s.lambda_category,
        s.guided_levels,
        r.seed,
        if r.quick { " (`--quick`)" } else { "" }
    );
    let _ = writeln!(
        w,
        "- time: {:.0} s in all (model load {:.1} s, songs {:.1} s, clips and codec round \
         trip {:.1} s, populations {:.1} s)\n",
        r.timings.total_s,
        r.timings.load_model_s,
        r.timings.songs_s,
        r.timings.clips_s,
        r.timings.populations_s
    );

    let failing: Vec<&str> = r
        .ceiling_above_floor
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(m, _)| m.as_str())
        .collect();
    if failing.is_empty() {
        let _ = writeln!(
            w,
            "Ceiling (real) above floor (shuffled) on every coherence metric.\n"
        );
    } else {
        let _ = writeln!(
            w,
            "**Ceiling not above floor on: {}** (on this test set these metrics do not \
             measure coherence; they are not normalised).\n",
            failing.join(", ")
        );
    }

    let header = |w: &mut String, first: &str| {
        let _ = write!(w, "| population | role | {first}");
        for t in METRIC_TITLES {
            let _ = write!(w, " {t} |");
        }
        let _ = writeln!(w);
        let _ = write!(w, "|---|---|{}", "---|".repeat(first.matches('|').count()));
        for _ in METRIC_TITLES {
            let _ = write!(w, "---:|");
        }
        let _ = writeln!(w);
    };

    let _ = writeln!(w, "## Coherence (mean over clips)\n");
    let _ = writeln!(
        w,
        "Each cell: mean over the clips where the metric is defined (in brackets when that is \
         fewer than all {}).\n",
        r.clips.len()
    );
    header(w, "time s |");
    for p in &r.populations {
        let _ = write!(
            w,
            "| {} | {} | {:.0} |",
            p.population.name,
            role_name(p.population.role),
            p.seconds
        );
        for m in &p.coherence {
            let cell = num(m.mean, 3);
            if m.defined < r.clips.len() {
                let _ = write!(w, " {cell} ({}) |", m.defined);
            } else {
                let _ = write!(w, " {cell} |");
            }
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(
        w,
        "\n## Coherence normalised: floor (shuffled) = 0, ceiling (real) = 1\n"
    );
    header(w, "mean | 90% interval | mean vs untokenized anchors |");
    for p in &r.populations {
        let interval = p
            .normalised_mean_interval
            .map(|[lo, hi]| format!("{lo:.2} .. {hi:.2}"))
            .unwrap_or_default();
        let _ = write!(
            w,
            "| {} | {} | {} | {interval} | {} |",
            p.population.name,
            role_name(p.population.role),
            num(p.normalised_mean, 2),
            num(p.normalised_raw_mean, 2)
        );
        for m in &p.coherence {
            let _ = write!(w, " {} |", num(m.normalised, 2));
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(
        w,
        "\n## Classical-feature distribution distances to the real (tokenized) targets\n"
    );
    let _ = writeln!(
        w,
        "Classical-feature metrics (librosa-style features, standardised by the real targets): \
         not VGGish FAD, not the paper's MIRDD. Lower is closer to the real stems.\n"
    );
    let _ = writeln!(
        w,
        "| population | classical Fréchet | classical KAD | MIRDD-classical (mean KL) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|");
    for p in &r.populations {
        let d = &p.classical_distances;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            p.population.name,
            num(d.classical_frechet, 3),
            num(d.classical_kad, 4),
            num(d.mirdd_classical, 3)
        );
    }

    let c = &r.codec;
    let _ = writeln!(
        w,
        "\n## Tokenizer round trip of the real targets\n\n`{}`: mel distance {:.3}, \
         log-spectral distance {:.2} dB, multi-resolution STFT distance {:.3} (means over \
         the clips).\n",
        c.tokenizer, c.mel_distance, c.log_spectral_distance_db, c.multi_resolution_stft_distance
    );

    sound_section(w, r);

    let _ = writeln!(w, "## Populations\n");
    for p in &r.populations {
        let _ = writeln!(
            w,
            "- `{}` ({}): {}",
            p.population.name,
            role_name(p.population.role),
            p.population.description
        );
    }

    let _ = writeln!(w, "\n## Clips\n");
    let _ = writeln!(
        w,
        "| # | song | target | crop start s | context stems | shuffled partner | seed |"
    );
    let _ = writeln!(w, "|---:|---|---|---:|---|---:|---:|");
    for clip in &r.clips {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} | {} | {} | {} |",
            clip.index,
            clip.song,
            clip.target,
            clip.crop_start_s,
            clip.context_stems.join(", "),
            clip.shuffled_partner,
            clip.generation_seed
        );
    }

    let _ = writeln!(w, "\n## Notes\n");
    for note in &r.notes {
        let _ = writeln!(w, "- {note}");
    }
    md
}

/// The populations whose sound is compared: the model, its ablations (each changes one
/// suspect of a fault, e.g. guidance strength, so the table says which one makes clicks) and
/// the real targets, tokenized and not.
fn sound_populations(r: &SuiteReport) -> Vec<&PopulationReport> {
    r.populations
        .iter()
        .filter(|p| {
            matches!(p.population.role, Role::Model | Role::Ablation)
                || ["real", "real_raw"].contains(&p.population.name)
        })
        .collect()
}

/// The categories of the clips, in category order (every population has the same ones).
fn sound_categories(r: &SuiteReport) -> Vec<String> {
    r.populations
        .first()
        .map(|p| p.sound.iter().map(|s| s.category.clone()).collect())
        .unwrap_or_default()
}

fn sound_section(w: &mut String, r: &SuiteReport) {
    let _ = writeln!(
        w,
        "## Sound quality per target category\n\nGenerated stems (and the ablations' stems, when \
         run) next to the real stems of the same category, tokenized (`real`) and not (`real_raw`). Hot samples: at or above -1 \
         dBFS. Clicks: broadband transients above 4 kHz per second. Out of band: share of the \
         energy outside the category's usual band (bass: above 1 kHz; `-` for broadband \
         categories). Active: share of 20 ms stretches at or above -50 dBFS; silent: clips \
         sounding in under 5% of them. Tuning: mean distance in cents of each 0.4 s \
         stretch's strongest partial (40 Hz-1 kHz) from the 440 Hz semitone grid (pitched \
         categories; in tune: a few cents, uniform pitches: 25).\n"
    );
    let _ = writeln!(
        w,
        "| category | population | clips | max true peak dBFS | max hot-sample share | crest dB \
         | clicks/s | out of band | flatness | active | silent clips | tuning cents |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for category in sound_categories(r) {
        for p in sound_populations(r) {
            let Some(s) = p.sound.iter().find(|s| s.category == category) else {
                continue;
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.1} | {:.5} | {:.1} | {:.2} | {} | {:.3} | {:.2} | {} | {} |",
                category,
                p.population.name,
                s.clips,
                s.true_peak_dbfs_max,
                s.hot_sample_share_max,
                s.crest_db,
                s.clicks_per_second,
                num(s.out_of_band_share, 4),
                s.spectral_flatness,
                s.active_share,
                s.silent_clips,
                num(s.tuning_cents, 1)
            );
        }
    }
    let _ = writeln!(w);
}

/// Bar charts of the sound section: clicks per second and out-of-band share per category.
fn sound_charts(r: &SuiteReport) -> Vec<(&'static str, BarChart)> {
    let groups = sound_categories(r);
    let pops = sound_populations(r);
    let series: Vec<String> = pops.iter().map(|p| p.population.name.to_string()).collect();
    let values = |f: &dyn Fn(&CategorySound) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        groups
            .iter()
            .map(|g| {
                pops.iter()
                    .map(|p| p.sound.iter().find(|s| &s.category == g).and_then(f))
                    .collect()
            })
            .collect()
    };
    let clicks = BarChart {
        title: "Clicks per second by target category".into(),
        y_label: "clicks / s".into(),
        groups: groups.clone(),
        series: series.clone(),
        values: values(&|s| Some(s.clicks_per_second)),
        reference_lines: vec![],
        y_range: (0.0, 1.0),
    };
    let band_values = values(&|s| s.out_of_band_share);
    let band = BarChart {
        title: "Energy outside the category's usual band".into(),
        y_label: "share".into(),
        groups,
        series,
        values: band_values,
        reference_lines: vec![],
        y_range: (0.0, 0.1),
    };
    vec![(PLOT_SOUND_CLICKS, clicks), (PLOT_SOUND_BAND, band)]
}

/// The bar charts: normalised and raw coherence per population, and the classical distances
/// (each scaled by its largest value, since their units differ).
pub fn charts(r: &SuiteReport) -> Vec<(&'static str, BarChart)> {
    let groups: Vec<String> = r
        .populations
        .iter()
        .map(|p| p.population.name.to_string())
        .collect();
    let series: Vec<String> = METRIC_TITLES.iter().map(|s| s.to_string()).collect();
    let normalised = BarChart {
        title: "Coherence, normalised: floor (shuffled) = 0, ceiling (real) = 1".into(),
        y_label: "normalised".into(),
        groups: groups.clone(),
        series: series.clone(),
        values: r
            .populations
            .iter()
            .map(|p| p.coherence.iter().map(|m| m.normalised).collect())
            .collect(),
        reference_lines: vec![(0.0, "floor".into()), (1.0, "ceiling".into())],
        y_range: (0.0, 1.0),
    };
    let raw = BarChart {
        title: format!("Coherence, mean over {} clips", r.clips.len()),
        y_label: "mean".into(),
        groups: groups.clone(),
        series,
        values: r
            .populations
            .iter()
            .map(|p| p.coherence.iter().map(|m| m.mean).collect())
            .collect(),
        reference_lines: vec![],
        y_range: (0.0, 1.0),
    };
    let get = |k: usize, p: &super::suite::PopulationReport| {
        let d = &p.classical_distances;
        [d.classical_frechet, d.classical_kad, d.mirdd_classical][k]
    };
    let max: Vec<f64> = (0..3)
        .map(|k| {
            r.populations
                .iter()
                .filter_map(|p| get(k, p))
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max)
        })
        .collect();
    let distances = BarChart {
        title: "Classical-feature distances to the real targets (each / its largest)".into(),
        y_label: "relative".into(),
        groups,
        series: vec![
            "classical Frechet".into(),
            "classical KAD".into(),
            "MIRDD-classical".into(),
        ],
        values: r
            .populations
            .iter()
            .map(|p| {
                (0..3)
                    .map(|k| get(k, p).map(|v| if max[k] > 0.0 { v / max[k] } else { 0.0 }))
                    .collect()
            })
            .collect(),
        reference_lines: vec![],
        y_range: (0.0, 1.0),
    };
    let mut all = vec![
        (PLOT_NORMALISED, normalised),
        (PLOT_RAW, raw),
        (PLOT_DISTANCES, distances),
    ];
    all.extend(sound_charts(r));
    all
}

/// Writes report.json, report.md and the SVG charts into `out_dir` (created if needed) and
/// returns their paths.
pub fn write_all(r: &SuiteReport, out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create the report folder", out_dir.display()))?;
    let mut written = Vec::new();
    let json = out_dir.join(REPORT_JSON);
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("{}: cannot write", json.display()))?;
    written.push(json);
    let md = out_dir.join(REPORT_MD);
    std::fs::write(&md, markdown(r)).with_context(|| format!("{}: cannot write", md.display()))?;
    written.push(md);
    for (name, chart) in charts(r) {
        let path = out_dir.join(name);
        chart.save_svg(&path)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::suite::COHERENCE_METRICS;

    #[test]
    fn titles_cover_every_metric() {
        assert_eq!(METRIC_TITLES.len(), COHERENCE_METRICS.len());
    }
}
