//! Chords heard in the context: the triad that sounds on each beat, read off the measured
//! chroma (ARCHITECTURE §3.8). A bass player listens for the chords' roots before choosing a
//! note; the generator gives a bass stem over a measured context the same bass-note target
//! it gives one over the producer's chords.
//!
//! Why a recogniser and not the measured bass chroma: the context of a bass stem has no
//! bass, so its low band holds the kick drum and the lowest notes of the voicings; with it
//! as the bass target, 16 held-out clips lost key score (0.44 -> 0.30). The chords' roots
//! come from the whole chroma.
//!
//! How: each beat (from the beat-phase feature; fixed half-second steps without beats) gets
//! its mean chroma, scored against the 24 major and minor triads by cosine, plus a small
//! bonus for the triad's root in the bass chroma. A Viterbi pass over the beats charges
//! [`CHANGE_PENALTY`] for each change of chord, so a passing note does not flip the chord
//! for one beat. Beats whose chroma is silent have no chord. Triads only: a seventh or an
//! added tone changes the cosine little and the root not at all, and the root is what the
//! bass prior uses. Measured on 24 held-out synthetic songs mixed without their bass,
//! every 0.1 s against the songs' chords: the root right 62% of the time.

use super::context_features::{ContextFeature, FeatureFrames};
use super::harmony::{Chord, TimedChord};

/// Score lost for changing chord from one beat to the next (cosine units). Root accuracy
/// (see the header) on 12 of the songs at 0 / 0.1 / 0.3: 50 / 57 / 56%; on all 24 at 0.1 /
/// 0.2: 61 / 62%.
pub const CHANGE_PENALTY: f32 = 0.15;
/// Weight of the bass chroma at the triad's root, added to the cosine. Root accuracy (with
/// seventh shapes as well, penalty 0.15) at 0 / 0.3 / 0.6: 57 / 60 / 50%; 0.15 ships (62%).
pub const BASS_ROOT_BONUS: f32 = 0.15;
/// Segment length without beats.
const FALLBACK_SEGMENT_S: f64 = 0.5;

const NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

/// Chord shapes (intervals above the root) and their suffixes: major and minor triads.
/// Seventh shapes were tried: on 24 held-out synthetic songs they raised root accuracy by
/// about 0.01, and a major seventh on the dominant (read from a melody's leading tone)
/// pushed a bass prior toward a note outside the key.
const SHAPES: [(&[u8], &str); 2] = [(&[0, 4, 7], ""), (&[0, 3, 7], "m")];
const N_CHORDS: usize = 12 * SHAPES.len();

/// Chord `k`: shape `k / 12` on root `k % 12`.
fn triad(k: usize) -> Chord {
    let root = (k % 12) as u8;
    let (intervals, suffix) = SHAPES[k / 12];
    let mut pitch_classes = [false; 12];
    for &step in intervals {
        pitch_classes[(root + step) as usize % 12] = true;
    }
    Chord {
        symbol: format!("{}{}", NAMES[root as usize], suffix),
        root,
        bass: root,
        pitch_classes,
    }
}

/// The chords of `features` (which need the chroma; bass chroma and beat phase are used
/// when present), as spans in seconds from frame 0 at `frame_rate` frames per second.
/// Consecutive beats with the same chord form one span.
pub fn recognize_chords(features: &FeatureFrames, frame_rate: f64) -> Vec<TimedChord> {
    let Some(chroma_at) = features.offset(ContextFeature::Chroma) else {
        return Vec::new();
    };
    let bass_at = features.offset(ContextFeature::BassChroma);
    let segments = beat_segments(features, frame_rate);
    let triads: Vec<Chord> = (0..N_CHORDS).map(triad).collect();
    // Each segment's score per triad; `None` for a silent segment.
    let scores: Vec<Option<[f32; N_CHORDS]>> = segments
        .iter()
        .map(|seg| {
            let mut chroma = [0.0f32; 12];
            let mut bass = [0.0f32; 12];
            for n in seg.clone() {
                let frame = features.frame(n);
                add_into(&mut chroma, &frame[chroma_at..chroma_at + 12]);
                if let Some(b) = bass_at {
                    add_into(&mut bass, &frame[b..b + 12]);
                }
            }
            let norm = chroma.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm <= 1e-6 {
                return None;
            }
            let bass_max = bass.iter().fold(0.0f32, |m, &v| m.max(v));
            let mut out = [0.0f32; N_CHORDS];
            for (score, chord) in out.iter_mut().zip(&triads) {
                let on: f32 = (0..12)
                    .filter(|&c| chord.pitch_classes[c])
                    .map(|c| chroma[c])
                    .sum();
                let size = chord.pitch_classes.iter().filter(|&&b| b).count() as f32;
                *score = on / (norm * size.sqrt());
                if bass_max > 1e-6 {
                    *score += BASS_ROOT_BONUS * bass[chord.root as usize] / bass_max;
                }
            }
            Some(out)
        })
        .collect();
    let path = viterbi(&scores);
    let mut out: Vec<TimedChord> = Vec::new();
    for (seg, k) in segments.iter().zip(path) {
        let start = seg.start as f64 / frame_rate;
        let end = seg.end as f64 / frame_rate;
        let chord = k.map(|k| triads[k].clone());
        match out.last_mut() {
            Some(last) if last.chord == chord => last.end = end,
            _ => out.push(TimedChord { start, end, chord }),
        }
    }
    out
}

fn add_into(sum: &mut [f32; 12], values: &[f32]) {
    for (s, v) in sum.iter_mut().zip(values) {
        *s += v;
    }
}

/// Frame ranges from one beat to the next (the beat phase wraps from near 1 to near 0),
/// covering every frame; half-second steps when the features have no beats.
fn beat_segments(features: &FeatureFrames, frame_rate: f64) -> Vec<std::ops::Range<usize>> {
    let n = features.frames;
    let mut starts = vec![0];
    if let Some(at) = features.offset(ContextFeature::BeatPhase) {
        let phase = |i: usize| {
            let f = features.frame(i);
            (f[at] != 0.0 || f[at + 1] != 0.0)
                .then(|| f[at].atan2(f[at + 1]).rem_euclid(std::f32::consts::TAU))
        };
        for i in 1..n {
            if let (Some(a), Some(b)) = (phase(i - 1), phase(i)) {
                if a - b > std::f32::consts::PI {
                    starts.push(i);
                }
            }
        }
    }
    if starts.len() < 2 {
        let step = ((FALLBACK_SEGMENT_S * frame_rate).round() as usize).max(1);
        starts = (0..n).step_by(step).collect();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| s..starts.get(i + 1).copied().unwrap_or(n))
        .filter(|r| !r.is_empty())
        .collect()
}

/// The best triad per segment: the path maximising the summed scores minus
/// [`CHANGE_PENALTY`] per change. A silent segment (`None`) has no chord and ends the
/// path; the next sounding segment starts a new one.
fn viterbi(scores: &[Option<[f32; N_CHORDS]>]) -> Vec<Option<usize>> {
    let mut out = vec![None; scores.len()];
    let mut i = 0;
    while i < scores.len() {
        if scores[i].is_none() {
            i += 1;
            continue;
        }
        let end = (i..scores.len())
            .find(|&j| scores[j].is_none())
            .unwrap_or(scores.len());
        let mut total = scores[i].unwrap();
        let mut back: Vec<[usize; N_CHORDS]> = Vec::with_capacity(end - i);
        for s in &scores[i + 1..end] {
            let s = s.as_ref().unwrap();
            let (best_k, best) = argmax(&total);
            let mut next = [0.0f32; N_CHORDS];
            let mut from = [0usize; N_CHORDS];
            for k in 0..N_CHORDS {
                let (prev, value) = if total[k] >= best - CHANGE_PENALTY {
                    (k, total[k])
                } else {
                    (best_k, best - CHANGE_PENALTY)
                };
                next[k] = value + s[k];
                from[k] = prev;
            }
            back.push(from);
            total = next;
        }
        let mut k = argmax(&total).0;
        out[end - 1] = Some(k);
        for (j, from) in back.iter().enumerate().rev() {
            k = from[k];
            out[i + j] = Some(k);
        }
        i = end;
    }
    out
}

fn argmax(values: &[f32; N_CHORDS]) -> (usize, f32) {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bk, bv), (k, &v)| {
            if v > bv {
                (k, v)
            } else {
                (bk, bv)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Features at 10 frames/s with beats every 5 frames and the given chroma per frame.
    fn frames_of(chroma: &[[f32; 12]]) -> FeatureFrames {
        let features = vec![ContextFeature::Chroma, ContextFeature::BeatPhase];
        let mut f = FeatureFrames::zeros(&features, chroma.len());
        f.replace(ContextFeature::Chroma, |n| chroma[n].to_vec());
        f.replace(ContextFeature::BeatPhase, |n| {
            let phase = std::f32::consts::TAU * (n % 5) as f32 / 5.0;
            vec![phase.sin(), phase.cos()]
        });
        f
    }

    fn pcs(classes: &[usize]) -> [f32; 12] {
        let mut v = [0.0; 12];
        classes.iter().for_each(|&c| v[c] = 1.0);
        v
    }

    #[test]
    fn a_progression_is_read_beat_by_beat_and_merged() {
        // C major for two beats, A minor for two, then silence for one.
        let mut chroma = vec![pcs(&[0, 4, 7]); 10];
        chroma.extend(vec![pcs(&[9, 0, 4]); 10]);
        chroma.extend(vec![[0.0; 12]; 5]);
        let spans = recognize_chords(&frames_of(&chroma), 10.0);
        let names: Vec<_> = spans
            .iter()
            .map(|s| s.chord.as_ref().map(|c| c.symbol.clone()))
            .collect();
        assert_eq!(
            names,
            vec![Some("C".to_string()), Some("Am".to_string()), None]
        );
        assert_eq!((spans[1].start, spans[1].end), (1.0, 2.0));
    }

    #[test]
    fn a_passing_note_on_one_beat_does_not_change_the_chord() {
        // G major; on the middle beat the chroma leans to B minor (B and F# louder), but
        // not enough to pay two changes.
        let mut chroma = vec![pcs(&[7, 11, 2]); 10];
        let mut passing = pcs(&[7, 11, 2]);
        passing[6] = 0.6;
        passing[7] = 0.5;
        chroma.extend(vec![passing; 5]);
        chroma.extend(vec![pcs(&[7, 11, 2]); 10]);
        let spans = recognize_chords(&frames_of(&chroma), 10.0);
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(spans[0].chord.as_ref().unwrap().symbol, "G");
        assert_eq!(spans[0].chord.as_ref().unwrap().bass, 7);
    }

    #[test]
    fn without_chroma_or_beats_it_still_answers() {
        let no_chroma = FeatureFrames::zeros(&[ContextFeature::Onset], 20);
        assert!(recognize_chords(&no_chroma, 10.0).is_empty());
        // No beat phase: half-second segments.
        let mut f = FeatureFrames::zeros(&[ContextFeature::Chroma], 20);
        f.replace(ContextFeature::Chroma, |_| pcs(&[2, 5, 9]).to_vec());
        let spans = recognize_chords(&f, 10.0);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].chord.as_ref().unwrap().symbol, "Dm");
        assert_eq!(spans[0].end, 2.0);
    }
}
