//! Synthetic multi-stem songs: category table, seeded plans, rustysynth rendering, song
//! folders. Renders use the small TimGM6mb SoundFont (Debian `timgm6mb-soundfont`) and songs
//! of 2-4 bars so the whole file runs in seconds.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use stemgen::analysis::context_features::{measure, ContextFeature, FeatureFrames};
use stemgen::analysis::harmony::{apply_chords, TimedChord};
use stemgen::audio::{read_audio, rms_dbfs, Audio};
use stemgen::data::synth::{
    find_soundfont, find_soundfont_in, generate_songs, load_soundfont, plan_song, read_metadata,
    render_parts, render_song, song_frames, synth_settings, write_song, GenerateOptions, Mode,
    PlanOptions, RenderOptions, Role, SongPlan, Stem, DRUM_CHANNEL, TIMGM6MB,
};
use stemgen::data::Category;

#[test]
fn metadata_chords_are_the_plan_chords_and_sound_in_the_audio() {
    let sf = soundfont();
    let opts = GenerateOptions {
        plan: short(8, false),
        ..GenerateOptions::default()
    };
    let plan = plan_song(31, &opts.plan);
    let song = render_song(&sf, &plan, &opts.render).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = write_song(
        tmp.path(),
        &plan,
        &song,
        &opts.render,
        "TimGM6mb.sf2",
        stemgen::audio::WavFormat::Float32,
    )
    .unwrap();
    // The metadata's timing rule (a section's chords share it equally) gives the plan's times
    // and pitch classes exactly.
    let spans = meta.chord_spans().unwrap();
    assert_eq!(spans.len(), plan.chords.len());
    for (timed, planned) in spans.iter().zip(&plan.chords) {
        let start = planned.start_beat * plan.seconds_per_beat();
        let end = start + planned.beats * plan.seconds_per_beat();
        assert!((timed.start - start).abs() < 1e-9 && (timed.end - end).abs() < 1e-9);
        let chord = timed.chord.as_ref().unwrap();
        let mut tones = planned.chord.tones.clone();
        tones.sort();
        let pcs: Vec<u8> = (0..12)
            .filter(|&i| chord.pitch_classes[i as usize])
            .collect();
        assert_eq!(pcs, tones, "{}", chord.symbol);
    }
    // And the measured chroma of the pitched stems agrees with the templates in time: better
    // than with the same templates a chord later.
    let pitched: Vec<f32> = {
        let stems: Vec<&Stem> = song
            .stems
            .iter()
            .filter(|s| s.category.name() != "drums")
            .collect();
        let n = stems[0].audio.num_frames();
        (0..n)
            .map(|i| stems.iter().map(|s| s.audio.channels[0][i]).sum())
            .collect()
    };
    let mono = Audio::mono(32_000, pitched)
        .unwrap()
        .to_mono_at(22_050)
        .unwrap();
    let frames = (plan.duration_secs() * 50.0) as usize;
    let chroma = [ContextFeature::Chroma];
    let measured = measure(&mono.channels[0], &chroma, 50.0, frames);
    let template = |offset: f64| {
        let shifted: Vec<_> = spans
            .iter()
            .map(|s| TimedChord {
                start: s.start + offset,
                end: s.end + offset,
                chord: s.chord.clone(),
            })
            .collect();
        let mut t = FeatureFrames::zeros(&chroma, frames);
        apply_chords(&mut t, &shifted, 50.0);
        t
    };
    let agreement = |t: &FeatureFrames| -> f32 {
        (0..frames)
            .map(|n| {
                let (a, b) = (measured.frame(n), t.frame(n));
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                dot / (norm(a) * norm(b))
            })
            .sum::<f32>()
            / frames as f32
    };
    let chord_s = spans[0].end - spans[0].start;
    let (aligned, late) = (agreement(&template(0.0)), agreement(&template(chord_s)));
    assert!(
        aligned > late + 0.05 && aligned > 0.5,
        "{aligned} vs {late}"
    );
}

fn soundfont() -> Arc<rustysynth::SoundFont> {
    load_soundfont(Path::new(TIMGM6MB)).expect("apt-get install timgm6mb-soundfont")
}

fn short(bars: u32, humanize: bool) -> PlanOptions {
    PlanOptions {
        bars: Some(bars),
        humanize,
        ..PlanOptions::default()
    }
}

fn max_abs_diff(a: &Audio, b: &Audio) -> f32 {
    assert_eq!(a.num_channels(), b.num_channels());
    assert_eq!(a.num_frames(), b.num_frames());
    a.channels
        .iter()
        .flatten()
        .zip(b.channels.iter().flatten())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

// ---------------------------------------------------------------- categories

#[test]
fn category_table_ids_names_and_gm_ranges() {
    assert_eq!(Category::all().count(), Category::COUNT);
    for (i, c) in Category::all().enumerate() {
        assert_eq!(c.id() as usize, i);
        assert_eq!(Category::from_id(c.id()), Some(c));
        assert_eq!(Category::from_name(c.name()).unwrap(), c);
        assert_eq!(Category::from_name(c.slakh_label()).unwrap(), c);
        assert_eq!(c.name(), c.name().to_ascii_lowercase());
        // serde uses the CLI name.
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            format!("\"{}\"", c.name())
        );
    }
    assert_eq!(Category::from_id(Category::COUNT as u32), None);
    // Stable ids the model's embeddings depend on.
    assert_eq!(Category::Piano.id(), 0);
    assert_eq!(Category::Bass.id(), 4);
    assert_eq!(Category::Drums.id(), 16);
    // Every GM program belongs to exactly the family whose range contains it.
    for p in 0u8..=127 {
        let c = Category::from_gm_program(p);
        assert!(c.gm_programs().unwrap().contains(&p), "program {p} -> {c}");
        let owners = Category::all()
            .filter(|c| c.gm_programs().is_some_and(|r| r.contains(&p)))
            .count();
        assert_eq!(owners, 1, "program {p}");
    }
    assert_eq!(Category::from_gm_program(33), Category::Bass);
    assert_eq!(Category::from_gm_program(48), Category::Ensemble);
    assert_eq!(Category::Drums.gm_programs(), None);
}

#[test]
fn category_lookup_forgives_case_and_lists_valid_names() {
    assert_eq!(
        Category::from_name("Synth Lead").unwrap(),
        Category::SynthLead
    );
    assert_eq!(
        Category::from_name(" synth_pad ").unwrap(),
        Category::SynthPad
    );
    assert_eq!(
        Category::from_name("Strings (continued)").unwrap(),
        Category::Ensemble
    );
    assert_eq!("DRUMS".parse::<Category>().unwrap(), Category::Drums);
    let err = Category::from_name("kazoo").unwrap_err().to_string();
    assert!(err.contains("'kazoo'"), "{err}");
    for name in ["bass", "drums", "piano", "guitar", "synth-lead", "vocals"] {
        assert!(err.contains(name), "{err} should list {name}");
    }
}

// ---------------------------------------------------------------- plans

#[test]
fn same_seed_same_plan_different_seeds_differ() {
    let opts = PlanOptions::default();
    assert_eq!(plan_song(42, &opts), plan_song(42, &opts));
    let plans: Vec<SongPlan> = (0..8).map(|s| plan_song(s, &opts)).collect();
    for i in 0..plans.len() {
        for j in i + 1..plans.len() {
            assert_ne!(plans[i], plans[j], "seeds {i} and {j}");
        }
    }
    // Not just the seed field: the music differs.
    let tempos: HashSet<u64> = plans.iter().map(|p| p.tempo_bpm as u64).collect();
    assert!(tempos.len() >= 4, "tempos {tempos:?}");
}

#[test]
fn plans_over_many_seeds_stay_in_range() {
    let opts = PlanOptions::default();
    let (mut metres, mut modes, mut tempos) = (HashSet::new(), HashSet::new(), Vec::new());
    let mut roles = HashSet::new();
    let mut programs = HashSet::new();
    for seed in 0..300u64 {
        let plan = plan_song(seed.wrapping_mul(0x5851_F42D_4C95_7F2D), &opts);
        let ctx = format!("seed {seed}");
        assert!((70.0..=170.0).contains(&plan.tempo_bpm), "{ctx}");
        assert_eq!(plan.tempo_bpm.fract(), 0.0, "{ctx}");
        assert!([3, 4].contains(&plan.beats_per_bar), "{ctx}");
        assert_eq!(plan.time_signature().1, 4);
        tempos.push(plan.tempo_bpm);
        metres.insert(plan.beats_per_bar);
        modes.insert(format!("{:?}", plan.mode));
        // About a minute, a whole number of bars.
        let bar = plan.duration_secs() / plan.bars as f64;
        assert!(
            (plan.duration_secs() - 60.0).abs() <= bar / 2.0 + 1e-9,
            "{ctx}"
        );

        // Sections tile the song; chords tile the beats.
        let mut next = 0;
        for s in &plan.sections {
            assert_eq!(s.start_bar, next, "{ctx}");
            assert!(s.bars > 0);
            next += s.bars;
        }
        assert_eq!(next, plan.bars, "{ctx}");
        let mut beat = 0.0;
        for c in &plan.chords {
            assert!((c.start_beat - beat).abs() < 1e-9, "{ctx}");
            beat += c.beats;
            // Diatonic: every chord tone is in the key's scale (or the raised leading tone
            // of a harmonic-minor V).
            let scale = scale_of(plan.key_tonic, plan.mode);
            let leading = (plan.key_tonic + 11) % 12;
            for t in &c.chord.tones {
                assert!(
                    scale.contains(t) || (plan.mode == Mode::Minor && *t == leading),
                    "{ctx}: {} not diatonic in {}",
                    c.chord.symbol(),
                    plan.key_name()
                );
            }
        }
        assert!((beat - (plan.bars * plan.beats_per_bar) as f64).abs() < 1e-9);

        // Parts: 3+, drums or bass, unique categories and channels, programs from the
        // category's range, sane notes.
        assert!(plan.parts.len() >= 3, "{ctx}");
        assert!(
            plan.parts
                .iter()
                .any(|p| matches!(p.role, Role::Drums | Role::Bass)),
            "{ctx}"
        );
        let cats: HashSet<_> = plan.parts.iter().map(|p| p.category).collect();
        let chans: HashSet<_> = plan.parts.iter().map(|p| p.channel).collect();
        assert_eq!(cats.len(), plan.parts.len(), "{ctx}");
        assert_eq!(chans.len(), plan.parts.len(), "{ctx}");
        for p in &plan.parts {
            roles.insert(p.role);
            programs.insert(p.program);
            if p.role == Role::Drums {
                assert_eq!((p.channel, p.category), (DRUM_CHANNEL, Category::Drums));
            } else {
                assert_ne!(p.channel, DRUM_CHANNEL);
                assert!(
                    p.category.gm_programs().unwrap().contains(&p.program),
                    "{ctx}"
                );
            }
            assert!(!p.notes.is_empty(), "{ctx}");
            for w in p.notes.windows(2) {
                assert!(w[0].start_s <= w[1].start_s, "{ctx}: notes unsorted");
            }
            for n in &p.notes {
                assert!(n.start_s >= 0.0 && n.start_s < plan.duration_secs() + 0.05);
                assert!(n.dur_s > 0.0 && (1..=127).contains(&n.velocity), "{ctx}");
            }
            if p.role == Role::Lead {
                let scale = scale_of(plan.key_tonic, plan.mode);
                assert!(
                    p.notes.iter().all(|n| scale.contains(&(n.key % 12))),
                    "{ctx}"
                );
            }
        }
    }
    assert_eq!(metres.len(), 2, "both 4/4 and 3/4 occur");
    assert_eq!(modes.len(), 2, "both modes occur");
    let (lo, hi) = tempos
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), &t| (a.min(t), b.max(t)));
    assert!(lo < 80.0 && hi > 160.0, "tempos span {lo}..{hi}");
    assert_eq!(roles.len(), Role::ALL.len(), "every role occurs: {roles:?}");
    assert!(
        programs.len() > 60,
        "timbres vary: {} programs",
        programs.len()
    );
}

fn scale_of(tonic: u8, mode: Mode) -> Vec<u8> {
    let steps: [u8; 7] = match mode {
        Mode::Major => [0, 2, 4, 5, 7, 9, 11],
        Mode::Minor => [0, 2, 3, 5, 7, 8, 10],
    };
    steps.iter().map(|s| (tonic + s) % 12).collect()
}

#[test]
fn unhumanized_notes_sit_on_the_sixteenth_grid_and_humanized_ones_near_it() {
    for seed in 0..20 {
        let exact = plan_song(seed, &short(8, false));
        let human = plan_song(seed, &short(8, true));
        let sixteenth = exact.seconds_per_beat() / 4.0;
        let off_grid = |t: f64| {
            let x = t / sixteenth;
            (x - x.round()).abs() * sixteenth
        };
        let mut moved = 0;
        for (pe, ph) in exact.parts.iter().zip(&human.parts) {
            assert_eq!(pe.notes.len(), ph.notes.len(), "humanising keeps the notes");
            if pe.role == Role::Guitar {
                continue; // strums spread the strings over ~50 ms on purpose
            }
            for n in &pe.notes {
                assert!(
                    off_grid(n.start_s) < 1e-6,
                    "seed {seed} {:?} at {}",
                    pe.role,
                    n.start_s
                );
            }
            for n in &ph.notes {
                assert!(off_grid(n.start_s) < 0.03, "seed {seed} {:?}", pe.role);
            }
            moved += pe
                .notes
                .iter()
                .zip(&ph.notes)
                .filter(|(a, b)| a != b)
                .count();
        }
        assert!(moved > 0, "seed {seed}: humanising changed nothing");
    }
}

// ---------------------------------------------------------------- rendering

#[test]
fn rendering_is_deterministic_and_seeds_sound_different() {
    let sf = soundfont();
    let ro = RenderOptions::default();
    let a = render_song(&sf, &plan_song(7, &short(2, true)), &ro).unwrap();
    let b = render_song(&sf, &plan_song(7, &short(2, true)), &ro).unwrap();
    assert_eq!(a.stems.len(), b.stems.len());
    for (x, y) in a.stems.iter().zip(&b.stems) {
        assert_eq!(x.audio, y.audio, "{} differs between runs", x.category);
    }
    let c = render_song(&sf, &plan_song(8, &short(2, true)), &ro).unwrap();
    let (ma, mc) = (a.mix(), c.mix());
    assert!(ma.channels != mc.channels);
}

#[test]
fn stems_are_audible_and_sum_to_the_one_synth_mix() {
    assert!(!synth_settings(32_000).enable_reverb_and_chorus);
    let sf = soundfont();
    let ro = RenderOptions::default();
    for seed in [3u64, 11] {
        let plan = plan_song(seed, &short(3, true));
        let song = render_song(&sf, &plan, &ro).unwrap();
        let frames = song_frames(&plan, &ro);
        for stem in &song.stems {
            assert_eq!(stem.audio.sample_rate, 32_000);
            assert_eq!(stem.audio.num_channels(), 2);
            assert_eq!(stem.audio.num_frames(), frames);
            let level = rms_dbfs(&stem.audio.channels);
            assert!(
                level > -50.0,
                "seed {seed}: {} stem at {level} dBFS",
                stem.category
            );
        }
        // The same parts through ONE synthesizer on 16 channels: what a GM player would
        // output for the whole song. It must equal the sum of the separately rendered stems.
        let all: Vec<_> = plan.parts.iter().collect();
        let together = render_parts(&sf, &all, frames, &ro).unwrap();
        let mix = song.mix();
        let peak = mix
            .channels
            .iter()
            .flatten()
            .fold(0.0f32, |m, s| m.max(s.abs()));
        let diff = max_abs_diff(&mix, &together);
        assert!(peak > 0.05, "seed {seed}: mix peak {peak}");
        assert!(
            diff < 1e-4 * peak.max(1.0),
            "seed {seed}: stems sum off by {diff}"
        );
    }
}

#[test]
fn mono_is_the_average_of_stereo_and_bad_rates_are_refused() {
    let sf = soundfont();
    let plan = plan_song(5, &short(2, true));
    let stereo = RenderOptions::default();
    let mono = RenderOptions {
        stereo: false,
        ..RenderOptions::default()
    };
    let part = &plan.parts[0];
    let frames = song_frames(&plan, &stereo);
    let s = render_parts(&sf, &[part], frames, &stereo).unwrap();
    let m = render_parts(&sf, &[part], frames, &mono).unwrap();
    assert_eq!(m.num_channels(), 1);
    assert!(max_abs_diff(&m, &s.with_channels(1)) < 1e-6);
    let low = RenderOptions {
        sample_rate: 8_000,
        ..RenderOptions::default()
    };
    let err = render_song(&sf, &plan, &low).unwrap_err().to_string();
    assert!(err.contains("8000") && err.contains("16-192 kHz"), "{err}");
}

/// Onsets (seconds) of a percussive signal: rises of the 0.5 ms energy envelope above both
/// an absolute floor and 8x the preceding 10 ms, at least 40 ms apart.
fn onsets(audio: &Audio) -> Vec<f64> {
    let x: Vec<f32> = audio.with_channels(1).channels.remove(0);
    let hop = (audio.sample_rate / 2000) as usize;
    let env: Vec<f32> = x
        .chunks(hop)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let peak = env.iter().cloned().fold(0.0f32, f32::max);
    let mut out = Vec::new();
    let mut last = -1.0;
    for i in 0..env.len() {
        let past = &env[i.saturating_sub(20)..i];
        let before = past.iter().sum::<f32>() / past.len().max(1) as f32;
        let t = (i * hop) as f64 / audio.sample_rate as f64;
        if env[i] > 1e-3 * peak && env[i] > 8.0 * before && t - last > 0.04 {
            out.push(t);
            last = t;
        }
    }
    out
}

#[test]
fn kick_onsets_land_on_the_tempo_grid() {
    let sf = soundfont();
    let ro = RenderOptions::default();
    let mut checked = HashSet::new();
    for seed in 0..200u64 {
        let exact = plan_song(seed, &short(4, false));
        let Some(drums) = exact.parts.iter().find(|p| p.role == Role::Drums) else {
            continue;
        };
        if !checked.insert(exact.beats_per_bar) {
            continue; // one song per metre
        }
        // The kick alone, from both the exact and the humanised plan of the same seed.
        let human = plan_song(seed, &short(4, true));
        let human_drums = human.parts.iter().find(|p| p.role == Role::Drums).unwrap();
        let spb = 60.0 / exact.tempo_bpm; // from the tempo, not from the notes
        for (part, tol) in [(drums, 0.004), (human_drums, 0.020)] {
            let mut kick = part.clone();
            kick.notes.retain(|n| n.key == 36);
            let frames = song_frames(&exact, &ro);
            let audio = render_parts(&sf, &[&kick], frames, &ro).unwrap();
            let found = onsets(&audio);
            assert_eq!(
                found.len(),
                kick.notes.len(),
                "seed {seed}: {} onsets for {} kicks: {found:?}",
                found.len(),
                kick.notes.len()
            );
            // Every bar's downbeat has a kick.
            for bar in 0..exact.bars {
                let t = (bar * exact.beats_per_bar) as f64 * spb;
                assert!(
                    found.iter().any(|&o| (o - t).abs() <= tol),
                    "seed {seed}: no kick within {tol} s of bar {bar} at {t:.3} s: {found:?}"
                );
            }
            // And every kick is on the 16th-note grid of the tempo.
            for &o in &found {
                let x = o / (spb / 4.0);
                let err = (x - x.round()).abs() * spb / 4.0;
                assert!(
                    err <= tol,
                    "seed {seed}: kick at {o:.4} s is {err:.4} s off the grid"
                );
            }
        }
    }
    assert_eq!(checked.len(), 2, "found drum songs in 4/4 and 3/4");
}

#[test]
fn render_speed() {
    let sf = soundfont();
    // A full default-length song (about a minute): the size the training data uses.
    let plan = plan_song(21, &PlanOptions::default());
    let ro = RenderOptions::default();
    let t = std::time::Instant::now();
    let song = render_song(&sf, &plan, &ro).unwrap();
    let wall = t.elapsed().as_secs_f64();
    let secs = song.stems[0].audio.duration_secs();
    for s in &song.stems {
        println!(
            "{:<22} {:>4} notes  {:>6.1}x real time",
            s.category.name(),
            plan.parts[s.part_index].notes.len(),
            s.realtime_factor()
        );
    }
    println!(
        "{} stems of {secs:.1} s in {wall:.3} s wall: {:.1}x real time per song",
        song.stems.len(),
        secs / wall
    );
    let mix = song.mix();
    let peak = mix
        .channels
        .iter()
        .flatten()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    println!(
        "mix peak {peak:.3}, mix rms {:.1} dBFS",
        rms_dbfs(&mix.channels)
    );
    // Loose bound (shared 2-core machine): far below this would make data generation
    // impractical.
    for s in &song.stems {
        assert!(
            s.realtime_factor() > 10.0,
            "{}: {:.1}x",
            s.category,
            s.realtime_factor()
        );
    }
}

// ---------------------------------------------------------------- files

#[test]
fn song_folders_round_trip_metadata_and_audio() {
    let sf = soundfont();
    let tmp = tempfile::tempdir().unwrap();
    let opts = GenerateOptions {
        plan: short(2, true),
        ..GenerateOptions::default()
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let dirs = generate_songs(tmp.path(), &sf, "TimGM6mb.sf2", 100, 2, &opts, &|_| {
        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(done.into_inner(), 2);
    assert_eq!(dirs.len(), 2);
    for (i, dir) in dirs.iter().enumerate() {
        let meta = read_metadata(dir).unwrap();
        let plan = plan_song(100 + i as u64, &opts.plan);
        assert_eq!(meta.seed, 100 + i as u64);
        assert_eq!(meta.tempo_bpm, plan.tempo_bpm);
        assert_eq!(meta.time_signature, [plan.beats_per_bar, 4]);
        assert_eq!(meta.bars, 2);
        assert_eq!(meta.mode, plan.mode);
        assert_eq!(meta.stems.len(), plan.parts.len());
        // Exactly the stem WAVs and the metadata, nothing else (no mix file).
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut expected: Vec<String> = meta.stems.iter().map(|s| s.file.clone()).collect();
        expected.push("metadata.json".into());
        expected.sort();
        assert_eq!(files, expected);
        for (s, p) in meta.stems.iter().zip(&plan.parts) {
            assert_eq!(s.file, format!("{}.wav", p.category.name()));
            assert_eq!(
                Category::from_name(&s.category).unwrap().id(),
                s.category_id
            );
            assert_eq!((s.program, s.note_count), (p.program, p.notes.len()));
            let audio = read_audio(&dir.join(&s.file)).unwrap();
            assert_eq!((audio.sample_rate, audio.num_channels()), (32_000, 2));
            assert_eq!(audio.num_frames(), song_frames(&plan, &opts.render));
            assert!(!audio.is_silent(-60.0), "{} is silent", s.file);
        }
    }

    // write_song on its own returns what read_metadata reads back.
    let plan = plan_song(9, &short(2, true));
    let song = render_song(&sf, &plan, &opts.render).unwrap();
    let dir = tmp.path().join("one");
    let written = write_song(
        &dir,
        &plan,
        &song,
        &opts.render,
        "TimGM6mb.sf2",
        stemgen::audio::WavFormat::Float32,
    )
    .unwrap();
    assert_eq!(read_metadata(&dir).unwrap(), written);
    assert!(written.gain > 0.0 && written.gain <= 1.0);
    let drums_or_bass = written
        .stems
        .iter()
        .any(|s| s.file == "drums.wav" || s.file == "bass.wav");
    assert!(drums_or_bass);
}

#[test]
fn missing_or_sf3_soundfonts_say_what_to_install() {
    let err = find_soundfont_in(&["/nonexistent/TimGM6mb.sf2", "/nonexistent/FluidR3_GM.sf2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("apt-get install timgm6mb-soundfont"), "{err}");
    assert!(err.contains("/nonexistent/FluidR3_GM.sf2"), "{err}");
    let err = load_soundfont(Path::new("/nonexistent/x.sf2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("apt-get install timgm6mb-soundfont"), "{err}");
    let err = find_soundfont(Some(Path::new("/nonexistent/x.sf2")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("timgm6mb-soundfont"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let sf3 = tmp.path().join("MuseScore_General.sf3");
    std::fs::write(&sf3, b"RIFF....sfbk").unwrap();
    let err = load_soundfont(&sf3).unwrap_err().to_string();
    assert!(err.contains(".sf3") && err.contains(".sf2"), "{err}");
    let junk = tmp.path().join("junk.sf2");
    std::fs::write(&junk, b"not a soundfont").unwrap();
    let err = load_soundfont(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.sf2") && err.contains("SoundFont"),
        "{err}"
    );
    // The installed one is found (this machine has timgm6mb-soundfont).
    assert!(find_soundfont(None).is_ok());
}
