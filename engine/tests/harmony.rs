//! engine::analysis::{context_features, harmony}: the features the model is conditioned on,
//! measured from synthetic audio whose pitch classes and beats are known, and the chords and
//! keys a producer types.

use std::f32::consts::TAU;

use stemgen::analysis::context_features::{beat_phase, measure, ContextFeature, FeatureFrames};
use stemgen::analysis::harmony::{
    apply_chords, apply_key, key_template, parse_chord, parse_key, ChordChart, HarmonyError,
};
use stemgen::analysis::{Key, Mode, ANALYSIS_RATE};

const FRAME_RATE: f64 = 50.0;

/// `seconds` of sines at the MIDI `notes`, plus a short click every `beat_s` seconds.
fn tones(notes: &[f32], seconds: f64, beat_s: Option<f64>) -> Vec<f32> {
    let n = (seconds * ANALYSIS_RATE as f64) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / ANALYSIS_RATE as f32;
            let tonal: f32 = notes
                .iter()
                .map(|&m| 0.1 * (TAU * 440.0 * 2f32.powf((m - 69.0) / 12.0) * t).sin())
                .sum();
            let click = beat_s.map_or(0.0, |b| {
                let since = (t as f64 % b) as f32;
                if since < 0.01 {
                    0.8 * (TAU * 3000.0 * t).sin() * (1.0 - since / 0.01)
                } else {
                    0.0
                }
            });
            tonal + click
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Mean of `feature`'s values over frames `from..to`.
fn mean_of(f: &FeatureFrames, feature: ContextFeature, from: usize, to: usize) -> Vec<f32> {
    let offset = f.offset(feature).unwrap();
    let mut sum = vec![0.0; feature.dims()];
    for n in from..to {
        for (s, v) in sum
            .iter_mut()
            .zip(&f.frame(n)[offset..offset + feature.dims()])
        {
            *s += v / (to - from) as f32;
        }
    }
    sum
}

#[test]
fn measured_features_name_the_chord_the_bass_note_and_the_beat() {
    // A minor triad (A3 C4 E4) over an F2 bass: the chroma peaks on A, C, E; the bass chroma
    // on F (the low band sees only the bass).
    let samples = tones(&[57.0, 60.0, 64.0, 41.0], 4.0, Some(0.5));
    let frames = 200;
    let f = measure(&samples, &ContextFeature::ALL, FRAME_RATE, frames);
    assert_eq!((f.frames, f.dims), (frames, 27));
    let chroma = mean_of(&f, ContextFeature::Chroma, 20, 180);
    let mut top: Vec<usize> = (0..12).collect();
    top.sort_by(|&a, &b| chroma[b].total_cmp(&chroma[a]));
    let mut three = top[..4].to_vec();
    three.sort();
    // A (9), C (0), E (4) and the bass F (5) are the four strongest pitch classes.
    assert_eq!(three, vec![0, 4, 5, 9], "{chroma:?}");
    let bass = mean_of(&f, ContextFeature::BassChroma, 20, 180);
    assert_eq!(argmax(&bass), 5, "{bass:?}");

    // Clicks every 0.5 s: the onset strength peaks near them, and the beat phase is near 0
    // (cos near 1) on the clicks and near one half (cos near -1) between them.
    let onset = f.offset(ContextFeature::Onset).unwrap();
    let phase = f.offset(ContextFeature::BeatPhase).unwrap();
    let at = |secs: f64| (secs * FRAME_RATE).round() as usize;
    let on_beat: f32 = (2..7)
        .map(|b| f.frame(at(b as f64 * 0.5))[phase + 1])
        .sum::<f32>()
        / 5.0;
    let off_beat: f32 = (2..7)
        .map(|b| f.frame(at(b as f64 * 0.5 + 0.25))[phase + 1])
        .sum::<f32>()
        / 5.0;
    assert!(on_beat > 0.7 && off_beat < -0.7, "{on_beat} {off_beat}");
    let peak = (at(1.0)..at(1.5)).max_by(|&a, &b| f.frame(a)[onset].total_cmp(&f.frame(b)[onset]));
    let peak_s = peak.unwrap() as f64 / FRAME_RATE;
    assert!(
        (peak_s - 1.0).abs() < 0.06 || (peak_s - 1.5).abs() < 0.06,
        "{peak_s}"
    );

    // Silence: every feature is zero (what a dropped feature set looks like).
    let silent = measure(&vec![0.0; 44_100], &ContextFeature::ALL, FRAME_RATE, 100);
    assert!(silent.values.iter().all(|&v| v == 0.0));
    // Beat phase without a grid.
    assert_eq!(beat_phase(&[1.0], 0.5), vec![0.0, 0.0]);
}

#[test]
fn chord_symbols_and_charts_parse_with_clear_errors() {
    let pcs = |s: &str| {
        let c = parse_chord(s).unwrap().unwrap();
        let set: Vec<usize> = (0..12).filter(|&i| c.pitch_classes[i]).collect();
        (set, c.root, c.bass)
    };
    assert_eq!(pcs("Am"), (vec![0, 4, 9], 9, 9));
    assert_eq!(pcs("G7"), (vec![2, 5, 7, 11], 7, 7));
    assert_eq!(pcs("Cmaj7"), (vec![0, 4, 7, 11], 0, 0));
    assert_eq!(pcs("F#m7b5"), (vec![0, 4, 6, 9], 6, 6));
    assert_eq!(pcs("Bb/D"), (vec![2, 5, 10], 10, 2));
    assert_eq!(pcs("Ebsus4"), (vec![3, 8, 10], 3, 3));
    // Slash bass outside the chord joins the pitch classes.
    assert_eq!(pcs("C/Bb"), (vec![0, 4, 7, 10], 0, 10));
    assert_eq!(parse_chord("N.C.").unwrap(), None);

    let chart = ChordChart::parse("| Am | F | C G7 |").unwrap();
    assert_eq!(chart.bars.len(), 3);
    assert_eq!(chart.bars[2].len(), 2);
    // 120 BPM in 4/4: 2 s bars; the chart repeats to the length; two chords share bar 3.
    let spans = chart.spans(120.0, 4, 9.0);
    let starts: Vec<f64> = spans.iter().map(|s| s.start).collect();
    assert_eq!(starts, vec![0.0, 2.0, 4.0, 5.0, 6.0, 8.0]);
    assert_eq!(spans[3].chord.as_ref().unwrap().symbol, "G7");
    assert_eq!(spans[4].chord.as_ref().unwrap().symbol, "Am");
    assert_eq!(spans[5].end, 9.0);

    let err = ChordChart::parse("Am | Hm7 | C").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("'Hm7'") && text.contains("bar 2") && text.contains("maj7"),
        "{text}"
    );
    assert!(matches!(
        ChordChart::parse("Am || C"),
        Err(HarmonyError::EmptyBar { bar: 2 })
    ));
    assert!(matches!(
        ChordChart::parse(" | "),
        Err(HarmonyError::EmptyChart)
    ));
    for bad in ["am", "X", "C#m/Q", "7"] {
        assert!(parse_chord(bad).is_err(), "{bad}");
    }

    let g_minor = Key {
        tonic: 7,
        mode: Mode::Minor,
    };
    assert_eq!(parse_key("G minor").unwrap(), g_minor);
    assert_eq!(parse_key("Gm").unwrap(), g_minor);
    assert_eq!(parse_key("Eb major").unwrap().tonic, 3);
    assert!(parse_key("G dorian")
        .unwrap_err()
        .to_string()
        .contains("G minor"));
}

#[test]
fn chords_and_keys_become_the_features_they_stand_for() {
    let features = [
        ContextFeature::Chroma,
        ContextFeature::BassChroma,
        ContextFeature::Onset,
    ];
    let mut f = FeatureFrames::zeros(&features, 100);
    // Frame 99's onset must survive the chord templates.
    let onset = f.offset(ContextFeature::Onset).unwrap();
    f.values[99 * f.dims + onset] = 0.5;
    let chart = ChordChart::parse("C | Am/E").unwrap();
    apply_chords(&mut f, &chart.spans(120.0, 2, 2.0), FRAME_RATE);
    // 1 s bars: frames 0..50 C major, bass C; 50..100 A minor over E.
    assert_eq!(
        &f.frame(10)[..12],
        &[1., 0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 0.]
    );
    assert_eq!(argmax(&f.frame(10)[12..24]), 0);
    assert_eq!(
        &f.frame(60)[..12],
        &[1., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0.]
    );
    assert_eq!(argmax(&f.frame(60)[12..24]), 4);
    assert_eq!(f.frame(99)[onset], 0.5);

    // A key removes out-of-key pitch classes and fills silent frames with its template.
    let c_major = Key {
        tonic: 0,
        mode: Mode::Major,
    };
    let mut g = FeatureFrames::zeros(&features, 2);
    g.values[1] = 1.0; // C# in frame 0 (out of key)
    g.values[2] = 0.5; // D in frame 0 (in key)
    apply_key(&mut g, c_major);
    assert_eq!(g.frame(0)[1], 0.0);
    assert_eq!(g.frame(0)[2], 1.0, "rescaled to a maximum of 1");
    assert_eq!(&g.frame(1)[..12], &key_template(c_major));
    assert_eq!(key_template(c_major)[0], 1.0);
    assert_eq!(key_template(c_major)[2], 0.5);
    assert_eq!(key_template(c_major)[1], 0.0);
}
