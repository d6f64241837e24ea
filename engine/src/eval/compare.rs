//! `stemgen eval-compare`: two models' `stemgen eval` reports on the same clips, compared
//! clip by clip. Each report's interval says how far its own mean could move with other
//! clips; when two models were measured on the same clips, most of that movement is shared,
//! so the paired difference is far tighter than the two intervals suggest. Both models are
//! put on the untokenized anchors (`real_raw` = 1, `shuffled_raw` = 0), the one scale that
//! does not depend on either model's tokenizer.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::metrics::Coherence;
use super::suite::{
    bootstrap_normalised_means, coherence_means, interval_90, normalised_mean, Anchors,
    COHERENCE_METRICS,
};

/// The generated population, and the anchors both models are scored against.
const MODEL: &str = "generated";
const FLOOR: &str = "shuffled_raw";
const CEILING: &str = "real_raw";

/// What a comparison needs from one `report.json`.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub path: PathBuf,
    pub model_dir: String,
    /// Per clip: song, target stem, crop start and context stems; equal for the same clips.
    pub clip_keys: Vec<String>,
    pub generated: Vec<Coherence>,
    pub floor: Vec<Coherence>,
    pub ceiling: Vec<Coherence>,
}

impl EvalRun {
    /// Reads a `stemgen eval` report (`report.json`, or the folder holding it).
    pub fn read(path: &Path) -> Result<EvalRun> {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{}: cannot read the eval report", file.display()))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON eval report", file.display()))?;
        let clips = report["clips"].as_array().with_context(|| {
            format!(
                "{}: no clip list (not a `stemgen eval` report)",
                file.display()
            )
        })?;
        let clip_keys = clips
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} {}",
                    c["song"], c["target"], c["crop_start_s"], c["context_stems"]
                )
            })
            .collect();
        let population = |name: &str| -> Result<Vec<Coherence>> {
            let pop = report["populations"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .with_context(|| format!("{}: no `{name}` population", file.display()))?;
            serde_json::from_value(pop["per_clip"].clone())
                .with_context(|| format!("{}: `{name}` has no per-clip coherence", file.display()))
        };
        Ok(EvalRun {
            model_dir: report["model_dir"].as_str().unwrap_or("?").to_string(),
            clip_keys,
            generated: population(MODEL)?,
            floor: population(FLOOR)?,
            ceiling: population(CEILING)?,
            path: file,
        })
    }
}

/// One metric's mean for both models (over the clips where it is defined).
#[derive(Debug, Clone)]
pub struct MetricPair {
    pub metric: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

/// B against A on the same clips.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub clips: usize,
    /// Normalised means on the untokenized anchors (the reports' "vs untokenized" column).
    pub mean_a: f64,
    pub mean_b: f64,
    /// `mean_b - mean_a` and its 90% paired bootstrap interval.
    pub difference: f64,
    pub interval: [f64; 2],
    /// Share of resamples where B is not above A: a one-sided bootstrap p-value.
    pub share_not_above: f64,
    pub metrics: Vec<MetricPair>,
}

/// Compares B with A clip by clip. The reports must cover the same clips with the same
/// anchors; otherwise the difference would mix models with test sets.
pub fn compare(a: &EvalRun, b: &EvalRun, seed: u64) -> Result<Comparison> {
    ensure!(
        a.clip_keys.len() == b.clip_keys.len(),
        "{} has {} clips and {} has {}: compare reports of the same clips (same --songs, --clips and --seed)",
        a.path.display(),
        a.clip_keys.len(),
        b.path.display(),
        b.clip_keys.len()
    );
    if let Some(i) = (0..a.clip_keys.len()).find(|&i| a.clip_keys[i] != b.clip_keys[i]) {
        bail!(
            "clip {i} differs between {} ({}) and {} ({}): compare reports of the same clips (same --songs, --clips and --seed)",
            a.path.display(),
            a.clip_keys[i],
            b.path.display(),
            b.clip_keys[i]
        );
    }
    ensure!(
        a.floor == b.floor && a.ceiling == b.ceiling,
        "{} and {} measured different untokenized anchors on the same clips: the songs differ",
        a.path.display(),
        b.path.display()
    );
    let point = normalised_means(a, b)?;
    let resampled =
        bootstrap_normalised_means(&[&a.generated, &b.generated], &a.floor, &a.ceiling, seed)
            .context("too few clips with defined metrics to bootstrap")?;
    let differences: Vec<f64> = resampled.iter().map(|m| m[1] - m[0]).collect();
    let not_above = differences.iter().filter(|&&d| d <= 0.0).count();
    let (means_a, means_b) = (coherence_means(&a.generated), coherence_means(&b.generated));
    let metrics = COHERENCE_METRICS
        .iter()
        .enumerate()
        .map(|(k, &metric)| MetricPair {
            metric,
            a: means_a[k].0,
            b: means_b[k].0,
        })
        .collect();
    Ok(Comparison {
        clips: a.clip_keys.len(),
        mean_a: point.0,
        mean_b: point.1,
        difference: point.1 - point.0,
        share_not_above: not_above as f64 / differences.len() as f64,
        interval: interval_90(differences),
        metrics,
    })
}

/// Both models' normalised means on all the clips (no resampling).
fn normalised_means(a: &EvalRun, b: &EvalRun) -> Result<(f64, f64)> {
    let anchors = Anchors::new(&a.floor, &a.ceiling);
    let mean = |run: &EvalRun| {
        let generated = coherence_means(&run.generated);
        normalised_mean((0..COHERENCE_METRICS.len()).map(|k| anchors.normalise(k, generated[k].0)))
    };
    match (mean(a), mean(b)) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => bail!("no coherence metric separates the untokenized anchors on these clips"),
    }
}
