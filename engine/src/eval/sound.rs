//! Sound quality per instrument category: the measures of [`crate::analysis::sound`] for every
//! clip of a population, summarised per target category, so generated stems are compared
//! with the real stems of the same category (a click rate that is normal for drums is a
//! fault in a bass line).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::sound::SoundQuality;
use crate::data::Category;

/// The band a category's notes and their useful harmonics live in, Hz: energy above it is
/// hiss, noise or clicks. It starts at 0 Hz: the measure's 43 Hz bins cannot tell a low
/// fundamental from rumble. `None` for categories that are broadband by nature (drums,
/// percussion, effects, voices).
pub fn usual_band(category: Category) -> Option<(f64, f64)> {
    use Category::*;
    let top = match category {
        Bass => 1_000.0,
        Piano | Organ | Guitar => 6_000.0,
        ChromaticPercussion | Strings | Ensemble | Brass | Reed | Pipe | SynthLead | SynthPad => {
            8_000.0
        }
        SynthEffects | Ethnic | Percussive | SoundEffects | Drums | Vocals => return None,
    };
    Some((0.0, top))
}

/// One population's sound measures for one target category, means over its clips (and the
/// worst clip where a single bad clip matters).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CategorySound {
    pub category: String,
    pub clips: usize,
    pub true_peak_dbfs_max: f32,
    pub hot_sample_share_max: f64,
    pub hot_sample_share: f64,
    pub crest_db: f64,
    pub clicks_per_second: f64,
    pub out_of_band_share: Option<f64>,
    pub spectral_flatness: f64,
    pub active_share: f64,
    /// Mean distance of the strongest partial from the semitone grid, cents (pitched
    /// categories only: the others are not measured).
    pub tuning_cents: Option<f64>,
    /// Clips with less than [`SILENT_ACTIVE_SHARE`] of their stretches sounding.
    pub silent_clips: usize,
}

/// A clip whose stem sounds in less than this share of its 20 ms stretches counts as silent.
pub const SILENT_ACTIVE_SHARE: f64 = 0.05;

/// Summaries of `per_clip` (one measure per clip) grouped by `categories` (the clips' target
/// categories, same order), in category order.
pub fn by_category(per_clip: &[SoundQuality], categories: &[Category]) -> Vec<CategorySound> {
    let mut groups: BTreeMap<Category, Vec<&SoundQuality>> = BTreeMap::new();
    for (q, &c) in per_clip.iter().zip(categories) {
        groups.entry(c).or_default().push(q);
    }
    groups
        .into_iter()
        .map(|(category, qs)| {
            let n = qs.len() as f64;
            let mean = |f: &dyn Fn(&SoundQuality) -> f64| qs.iter().map(|q| f(q)).sum::<f64>() / n;
            let bands: Vec<f64> = qs.iter().filter_map(|q| q.out_of_band_share).collect();
            let tunings: Vec<f64> = qs.iter().filter_map(|q| q.tuning_cents).collect();
            CategorySound {
                category: category.name().to_string(),
                clips: qs.len(),
                true_peak_dbfs_max: qs
                    .iter()
                    .map(|q| q.true_peak_dbfs)
                    .fold(f32::NEG_INFINITY, f32::max),
                hot_sample_share_max: qs.iter().map(|q| q.hot_sample_share).fold(0.0, f64::max),
                hot_sample_share: mean(&|q| q.hot_sample_share),
                crest_db: mean(&|q| q.crest_db as f64),
                clicks_per_second: mean(&|q| q.clicks_per_second),
                out_of_band_share: (!bands.is_empty())
                    .then(|| bands.iter().sum::<f64>() / bands.len() as f64),
                spectral_flatness: mean(&|q| q.spectral_flatness),
                active_share: mean(&|q| q.active_share),
                tuning_cents: (!tunings.is_empty())
                    .then(|| tunings.iter().sum::<f64>() / tunings.len() as f64),
                silent_clips: qs
                    .iter()
                    .filter(|q| q.active_share < SILENT_ACTIVE_SHARE)
                    .count(),
            }
        })
        .collect()
}
