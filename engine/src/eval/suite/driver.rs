//! [`run`]: loads the model, draws the clips, round-trips the real targets through the
//! tokenizer, produces and measures every population's stems, and assembles the report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::clips::{
    draw_clip, ensure_synth_songs, load_with_context, planned_song, synth_song_name, ClipAudio,
    ClipInfo, MIN_ACTIVE_SHARE, SYNTH_COUNT_PER_CLIP,
};
use super::normalisation::{
    coherence_means, normalised_mean, normalised_mean_interval, Anchors, COHERENCE_METRICS,
};
use super::populations::{
    derangement, standard_populations, HarmonySource, Population, Role, Source,
};
use super::results::{CodecReport, MetricSummary, PopulationReport, SuiteReport, SuiteTimings};
use super::SuiteOptions;
use crate::analysis::distance;
use crate::analysis::harmony::TimedChord;
use crate::analysis::sound::SoundQuality;
use crate::analysis::{Analysis, ANALYSIS_RATE};
use crate::audio::{Audio, SILENCE_DBFS};
use crate::codec::no_progress;
use crate::data::cache::song_seed;
use crate::data::datasets::list_dataset;
use crate::data::pair_features::song_chords;
use crate::data::pairs::{apply_shared_gain, PairConfig, Song};
use crate::data::Category;
use crate::eval::distribution::{ClassicalDistances, FEATURE_NAMES};
use crate::eval::metrics::Coherence;
use crate::eval::sound::{by_category, usual_band};
use crate::generate::{CategoryChoice, ContextSource, GenerateRequest, Generator, Length};
use crate::sample::SamplerSettings;

/// A clip's context prepared for measuring: samples at [`ANALYSIS_RATE`] and its analysis.
struct ContextFeatures {
    samples: Vec<f32>,
    analysis: Analysis,
}

fn at_analysis_rate(samples: &[f32], rate: u32) -> Result<Vec<f32>> {
    let mut a = Audio::mono(rate, samples.to_vec())?.to_mono_at(ANALYSIS_RATE)?;
    Ok(a.channels.swap_remove(0))
}

/// [`Coherence::measure`] with the context's analysis computed once per clip: the stem at
/// the analysis rate, cut or padded to the context.
fn measure(context: &ContextFeatures, stem: &[f32], rate: u32) -> Result<(Coherence, Analysis)> {
    let mut s = at_analysis_rate(stem, rate)?;
    s.resize(context.samples.len(), 0.0);
    let stem_a = Analysis::of_samples(&s, ANALYSIS_RATE);
    Ok((Coherence::from_analyses(&context.analysis, &stem_a), stem_a))
}

/// Runs the whole evaluation (see the module notes); `progress` gets one line per step.
pub fn run(options: &SuiteOptions, progress: &mut dyn FnMut(&str)) -> Result<SuiteReport> {
    let started = Instant::now();
    ensure!(
        options.clips >= 2,
        "--clips {} must be at least 2 (the shuffled floor pairs each clip with another)",
        options.clips
    );
    let mut timings = SuiteTimings::default();

    progress(&format!("eval: loading {}", options.model_dir.display()));
    let t = Instant::now();
    let generator = Generator::load(&options.model_dir)?;
    timings.load_model_s = t.elapsed().as_secs_f64();
    let tok = generator.tokenizer();
    let rate = tok.sample_rate();
    let window_frames = generator.config().max_frames;
    let crop_len = window_frames * tok.hop_length();
    let window_seconds = crop_len as f64 / rate as f64;

    // Test set.
    let t = Instant::now();
    let (songs_dir, synthesized) = match &options.songs {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = options.out_dir.join("songs");
            let count = options.clips * SYNTH_COUNT_PER_CLIP;
            let info = ensure_synth_songs(&dir, count, options.soundfont.as_deref(), progress)?;
            (dir, Some(info))
        }
    };
    let (layout, mut sources) = list_dataset(&songs_dir)?;
    if let Some(info) = &synthesized {
        // Only this run's songs, whatever else a previous run left in the folder.
        let wanted: Vec<String> = (0..info.count).map(synth_song_name).collect();
        sources.retain(|s| wanted.contains(&s.id));
        ensure!(
            sources.len() == info.count,
            "{}: expected {} synthesized songs, found {}",
            songs_dir.display(),
            info.count,
            sources.len()
        );
    }
    timings.songs_s = t.elapsed().as_secs_f64();

    // Clips, grouped by planned song so each song is read once.
    let t = Instant::now();
    let n = options.clips;
    let s = sources.len();
    let mut by_song: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        by_song.entry(planned_song(i, n, s)).or_default().push(i);
    }
    let mut usage: BTreeMap<u32, usize> = BTreeMap::new();
    let mut drawn: Vec<Option<(usize, ClipInfo, ClipAudio)>> = (0..n).map(|_| None).collect();
    let mut pending: Vec<usize> = Vec::new();
    let mut take =
        |song_index: usize, song: &Song, i: usize, usage: &mut BTreeMap<u32, usize>| -> bool {
            let mut rng = StdRng::seed_from_u64(song_seed(options.seed, i));
            let Some((start, t, audio)) = draw_clip(song, crop_len, rate, usage, &mut rng) else {
                return false;
            };
            let mut audio = audio;
            let gain_db = apply_shared_gain(
                &mut audio.context,
                &mut audio.target,
                &PairConfig::default(),
            );
            let category = song.stems[t].category;
            *usage.entry(category.id()).or_default() += 1;
            let info = ClipInfo {
                index: i,
                song: song.id.clone(),
                song_dir: song.dir.clone(),
                target: category.name().to_string(),
                target_id: category.id(),
                context_stems: song
                    .stems
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != t)
                    .map(|(_, st)| st.category.name().to_string())
                    .collect(),
                crop_start_s: start as f64 / rate as f64,
                seconds: window_seconds,
                gain_db,
                shuffled_partner: 0,
                generation_seed: options.seed.wrapping_add(i as u64),
            };
            drawn[i] = Some((song_index, info, audio));
            true
        };
    let mut single_stem: BTreeSet<usize> = BTreeSet::new();
    for (&k, clips) in &by_song {
        let Some(song) = load_with_context(&sources[k], rate)? else {
            single_stem.insert(k);
            pending.extend(clips);
            continue;
        };
        for &i in clips {
            if !take(k, &song, i, &mut usage) {
                pending.push(i);
            }
        }
    }
    // Clips whose song had no active crop: the next songs in order.
    for i in pending {
        let first = planned_song(i, n, s);
        let mut placed = false;
        for step in 1..s {
            let k = (first + step) % s;
            if single_stem.contains(&k) {
                continue;
            }
            let Some(song) = load_with_context(&sources[k], rate)? else {
                single_stem.insert(k);
                continue;
            };
            if take(k, &song, i, &mut usage) {
                placed = true;
                break;
            }
        }
        if !placed && single_stem.len() == s {
            bail!(
                "{}: every song has a single stem (e.g. {}); eval needs a target and at least \
                 one other stem for its context",
                songs_dir.display(),
                sources[0].id
            );
        }
        if !placed {
            bail!(
                "{}: no song has a {window_seconds:.1} s crop where a stem and the mix of the \
                 others are both active (above {SILENCE_DBFS} dBFS in {:.0}% of the time)",
                songs_dir.display(),
                MIN_ACTIVE_SHARE * 100.0
            );
        }
    }
    if !single_stem.is_empty() {
        const NAMED: usize = 6;
        let names: Vec<&str> = single_stem
            .iter()
            .map(|&k| sources[k].id.as_str())
            .collect();
        let more = match names.len().saturating_sub(NAMED) {
            0 => String::new(),
            rest => format!(" and {rest} more"),
        };
        progress(&format!(
            "eval: {} songs with a single stem skipped (no context to draw): {}{more}",
            names.len(),
            names[..names.len().min(NAMED)].join(", ")
        ));
    }
    let drawn: Vec<(usize, ClipInfo, ClipAudio)> = drawn.into_iter().flatten().collect();
    let song_of: Vec<usize> = drawn.iter().map(|(k, _, _)| *k).collect();
    let partner = derangement(&song_of, options.seed ^ 0x5348_5546)?;
    let (mut clips, audio): (Vec<ClipInfo>, Vec<ClipAudio>) =
        drawn.into_iter().map(|(_, c, a)| (c, a)).unzip();
    for (c, &p) in clips.iter_mut().zip(&partner) {
        c.shuffled_partner = p;
    }
    for c in &clips {
        progress(&format!(
            "eval: clip {:>2}: {} {} at {:.1} s (context: {})",
            c.index,
            c.song,
            c.target,
            c.crop_start_s,
            c.context_stems.join("+")
        ));
    }
    let contexts: Vec<ContextFeatures> = audio
        .par_iter()
        .map(|a| -> Result<ContextFeatures> {
            let samples = at_analysis_rate(&a.context, rate)?;
            let analysis = Analysis::of_samples(&samples, ANALYSIS_RATE);
            Ok(ContextFeatures { samples, analysis })
        })
        .collect::<Result<_>>()?;

    // Codec round trip of the real targets (shared by `real` and `shuffled`).
    progress("eval: tokenizer round trip of the real targets");
    let round_trip: Vec<Vec<f32>> = audio
        .iter()
        .map(|a| -> Result<Vec<f32>> {
            let input = Audio::mono(rate, a.target.clone())?;
            let tokens = tok.encode(&input, &mut no_progress())?;
            let mut back = tok
                .decode(&tokens, &mut no_progress())?
                .to_mono_at(rate)?
                .channels
                .swap_remove(0);
            back.resize(crop_len, 0.0);
            Ok(back)
        })
        .collect::<Result<_>>()
        .context("cannot round-trip a target through the tokenizer")?;
    let codec = {
        let m = |f: &dyn Fn(&[f32], &[f32]) -> f64| {
            audio
                .iter()
                .zip(&round_trip)
                .map(|(a, b)| f(&a.target, b))
                .sum::<f64>()
                / n as f64
        };
        CodecReport {
            tokenizer: tok.name().to_string(),
            mel_distance: m(&|a, b| distance::mel_l1(a, b, rate)),
            log_spectral_distance_db: m(&|a, b| distance::log_spectral_distance(a, b)),
            multi_resolution_stft_distance: m(&|a, b| {
                distance::multi_resolution_stft_distance(a, b)
            }),
        }
    };
    timings.clips_s = t.elapsed().as_secs_f64();

    // Populations.
    let t_pop = Instant::now();
    let mut base = generator.settings(options.preset);
    options.sampler.apply(&mut base);
    anyhow::ensure!(
        !options.harmony || !generator.config().context_features.is_empty(),
        "the harmony populations need a model with context features"
    );
    let populations = standard_populations(options.ablations, options.harmony);
    let cancel = AtomicBool::new(false);
    struct Measured {
        population: Population,
        settings: Option<SamplerSettings>,
        per_clip: Vec<Coherence>,
        analyses: Vec<Analysis>,
        sound: Vec<SoundQuality>,
        seconds: f64,
    }
    let categories: Vec<Category> = clips
        .iter()
        .map(|c| Category::from_id(c.target_id).expect("clip targets are known categories"))
        .collect();
    let mut measured: Vec<Measured> = Vec::new();
    for population in &populations {
        let t = Instant::now();
        let mut settings_used = None;
        let stems: Vec<Vec<f32>> = match &population.source {
            Source::Real | Source::Shuffled => (0..n)
                .map(|i| {
                    let j = if population.source == Source::Real {
                        i
                    } else {
                        partner[i]
                    };
                    if population.codec_round_trip {
                        round_trip[j].clone()
                    } else {
                        audio[j].target.clone()
                    }
                })
                .collect(),
            Source::Generated {
                lambda_context,
                lambda_category,
                w_position,
                harmony,
            } => {
                let mut settings = base.clone();
                settings.lambda_context = *lambda_context;
                settings.lambda_category = *lambda_category;
                settings.w_position = *w_position;
                settings_used = Some(settings.clone());
                let mut out = Vec::with_capacity(n);
                for (c, a) in clips.iter().zip(&audio) {
                    let g = Instant::now();
                    let mut request = GenerateRequest::new(
                        ContextSource::Audio(Audio::mono(rate, a.context.clone())?),
                        CategoryChoice::Id(c.target_id),
                        settings.clone().with_seed(c.generation_seed),
                    );
                    request.length = Some(Length::Seconds(window_seconds));
                    request.output_rate = rate;
                    request.output_channels = 1;
                    match harmony {
                        HarmonySource::Measured => {}
                        HarmonySource::Off => request.harmony.no_features = true,
                        HarmonySource::TrueChords => {
                            request.harmony.timed_chords = clip_chords(c)?;
                        }
                    }
                    let stem = generator
                        .generate(&request, &mut |_| {}, &cancel)
                        .with_context(|| {
                            format!("cannot generate {} for clip {}", c.target, c.index)
                        })?;
                    let mut samples = stem.audio.channels.into_iter().next().unwrap_or_default();
                    samples.resize(crop_len, 0.0);
                    out.push(samples);
                    progress(&format!(
                        "eval: {} clip {}/{n} ({}) in {:.1} s",
                        population.name,
                        c.index + 1,
                        c.target,
                        g.elapsed().as_secs_f64()
                    ));
                }
                out
            }
        };
        let results: Vec<(Coherence, Analysis)> = contexts
            .par_iter()
            .zip(&stems)
            .map(|(ctx, stem)| measure(ctx, stem, rate))
            .collect::<Result<_>>()?;
        let (per_clip, analyses): (Vec<Coherence>, Vec<Analysis>) = results.into_iter().unzip();
        let sound: Vec<SoundQuality> = stems
            .par_iter()
            .zip(&categories)
            .map(|(stem, &c)| {
                SoundQuality::measure(
                    &Audio::mono(rate, stem.clone())?,
                    usual_band(c),
                    c.is_pitched(),
                )
            })
            .collect::<Result<_, _>>()?;
        let seconds = t.elapsed().as_secs_f64();
        progress(&format!(
            "eval: {} measured ({:.1} s)",
            population.name, seconds
        ));
        measured.push(Measured {
            population: population.clone(),
            settings: settings_used,
            per_clip,
            analyses,
            sound,
            seconds,
        });
    }
    timings.populations_s = t_pop.elapsed().as_secs_f64();

    // Summaries, normalisation and distances.
    let means = |m: &Measured| coherence_means(&m.per_clip);
    let by_role = |role: Role| {
        measured
            .iter()
            .find(|m| m.population.role == role)
            .expect("the anchors are always measured")
    };
    let (ceiling_clips, floor_clips) = (
        &by_role(Role::Ceiling).per_clip,
        &by_role(Role::Floor).per_clip,
    );
    let named = |name: &str| {
        measured
            .iter()
            .find(|m| m.population.name == name)
            .expect("the untokenized anchors are always measured")
    };
    let anchors = Anchors::new(floor_clips, ceiling_clips);
    let anchors_raw = Anchors::new(&named("shuffled_raw").per_clip, &named("real_raw").per_clip);
    let reference: Vec<Analysis> = by_role(Role::Ceiling).analyses.clone();
    let reports: Vec<PopulationReport> = measured
        .iter()
        .map(|m| {
            let coherence: Vec<MetricSummary> = means(m)
                .into_iter()
                .enumerate()
                .map(|(k, (mean, defined))| MetricSummary {
                    metric: COHERENCE_METRICS[k],
                    mean,
                    defined,
                    normalised: anchors.normalise(k, mean),
                    normalised_raw: anchors_raw.normalise(k, mean),
                })
                .collect();
            PopulationReport {
                population: m.population.clone(),
                settings: m.settings.clone(),
                normalised_mean: normalised_mean(coherence.iter().map(|c| c.normalised)),
                normalised_mean_interval: normalised_mean_interval(
                    &m.per_clip,
                    floor_clips,
                    ceiling_clips,
                    options.seed,
                ),
                normalised_raw_mean: normalised_mean(coherence.iter().map(|c| c.normalised_raw)),
                coherence,
                per_clip: m.per_clip.clone(),
                classical_distances: ClassicalDistances::between(&reference, &m.analyses),
                sound: by_category(&m.sound, &categories),
                seconds: m.seconds,
            }
        })
        .collect();
    let ceiling_above_floor = COHERENCE_METRICS
        .iter()
        .zip(anchors.separating)
        .map(|(name, above)| (name.to_string(), above))
        .collect();
    timings.total_s = started.elapsed().as_secs_f64();

    let mut settings = base;
    settings.seed = options.seed;
    let mut notes = vec![
        "Coherence: context (original crop) vs stem, every metric of engine::eval::metrics; \
         means over the clips where the metric is defined."
            .to_string(),
        "Anchors: `real` (ceiling) and `shuffled` (floor) targets went through the model's \
         tokenizer (encode + decode), like generated stems; `real_raw` / `shuffled_raw` did \
         not. Normalised = (mean - floor) / (ceiling - floor) with the tokenized anchors, only \
         for metrics whose ceiling is above the floor. The 90% interval of the normalised mean \
         is a bootstrap over the clips (floor and ceiling resampled with them). The mean \
         against the untokenized anchors compares models whose tokenizers differ."
            .to_string(),
        "Distribution distances are classical-feature metrics (Fréchet distance, KAD and a \
         MIRDD-like mean KL on librosa-style features) against the real tokenized targets: \
         not VGGish FAD and not the paper's MIRDD. `shuffled` holds the same stems as `real` \
         in another order, so its distances are those of `real`."
            .to_string(),
    ];
    if n < 2 * FEATURE_NAMES.len() {
        notes.push(format!(
            "{n} clips for {} features: the Fréchet distance's covariances are rank-deficient \
             and dominated by noise; read KAD and MIRDD-classical, or use more clips.",
            FEATURE_NAMES.len()
        ));
    }
    Ok(SuiteReport {
        format: "stemgen-eval",
        version: 1,
        model_dir: options.model_dir.clone(),
        model: generator.config().clone(),
        tokenizer: tok.name().to_string(),
        sample_rate: rate,
        frame_rate: tok.frame_rate(),
        window_frames,
        window_seconds,
        songs_dir,
        songs_layout: layout.name().to_string(),
        songs_available: s,
        synthesized,
        preset: options.preset.name().to_string(),
        quick: options.quick,
        seed: options.seed,
        settings,
        metrics: COHERENCE_METRICS.to_vec(),
        ceiling_above_floor,
        populations: reports,
        codec,
        clips,
        timings,
        notes,
    })
}

/// The chords of `clip`'s song during the clip, in seconds from the clip's start.
fn clip_chords(clip: &ClipInfo) -> Result<Vec<TimedChord>> {
    let spans = song_chords(&clip.song_dir)?.with_context(|| {
        format!(
            "{}: the song's chords are not known (true_chords needs songs made by `data synth`)",
            clip.song_dir.display()
        )
    })?;
    Ok(spans
        .into_iter()
        .map(|s| TimedChord {
            start: s.start - clip.crop_start_s,
            end: s.end - clip.crop_start_s,
            chord: s.chord,
        })
        .filter(|s| s.end > 0.0 && s.start < clip.seconds)
        .collect())
}
