//! Just enough music theory for the song generator: keys, diatonic chords, progressions and
//! voicings.

use serde::{Deserialize, Serialize};

/// Major or (natural) minor. In minor, the dominant (degree V) may be raised to a major
/// chord (harmonic minor), decided once per song.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Major,
    Minor,
}

const MAJOR_STEPS: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR_STEPS: [u8; 7] = [0, 2, 3, 5, 7, 8, 10];

/// Pitch-class names, flats where they are the common spelling.
pub const PITCH_NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

/// A key: tonic pitch class (0 = C) and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub tonic: u8,
    pub mode: Mode,
    /// Minor only: the V chord uses the raised leading tone.
    pub harmonic_dominant: bool,
}

impl Key {
    fn steps(&self) -> &'static [u8; 7] {
        match self.mode {
            Mode::Major => &MAJOR_STEPS,
            Mode::Minor => &MINOR_STEPS,
        }
    }

    /// Pitch class of scale degree `degree` (0-based; any integer, wraps by octave).
    pub fn degree_pc(&self, degree: i32) -> u8 {
        let d = degree.rem_euclid(7) as usize;
        (self.tonic + self.steps()[d]) % 12
    }

    /// MIDI key of scale step `step` counted from the tonic at MIDI octave `base_key`
    /// (e.g. `base_key = 60 + tonic`). Negative steps go down.
    pub fn step_to_midi(&self, base_key: i32, step: i32) -> i32 {
        let oct = step.div_euclid(7);
        let d = step.rem_euclid(7) as usize;
        base_key + 12 * oct + self.steps()[d] as i32
    }

    /// The diatonic chord on `degree` (triad, or seventh chord with `seventh`).
    pub fn chord(&self, degree: u8, seventh: bool) -> Chord {
        let mut tones: Vec<u8> = [0, 2, 4]
            .iter()
            .map(|o| self.degree_pc(degree as i32 + o))
            .collect();
        if seventh {
            tones.push(self.degree_pc(degree as i32 + 6));
        }
        if self.mode == Mode::Minor && self.harmonic_dominant && degree == 4 {
            tones[1] = (tones[1] + 1) % 12; // minor v -> major V
        }
        Chord {
            degree,
            root: tones[0],
            tones,
        }
    }
}

/// A chord as pitch classes, root first, then third, fifth (and seventh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chord {
    /// Scale degree, 0-based (0 = I / i).
    pub degree: u8,
    /// Root pitch class.
    pub root: u8,
    pub tones: Vec<u8>,
}

impl Chord {
    /// A lead-sheet symbol such as `Am`, `F`, `Bdim`, `G7`, `Cmaj7`, `Dm7`.
    pub fn symbol(&self) -> String {
        let iv = |i: usize| (self.tones[i] + 12 - self.root) % 12;
        let (third, fifth) = (iv(1), iv(2));
        let triad = match (third, fifth) {
            (4, 7) => "",
            (3, 7) => "m",
            (3, 6) => "dim",
            (4, 8) => "aug",
            _ => "?",
        };
        let mut s = format!("{}{}", PITCH_NAMES[self.root as usize], triad);
        if self.tones.len() > 3 {
            let seventh = iv(3);
            s = match (triad, seventh) {
                ("", 11) => format!("{}maj7", PITCH_NAMES[self.root as usize]),
                ("dim", 10) => format!("{}m7b5", PITCH_NAMES[self.root as usize]),
                _ => format!("{s}7"),
            };
        }
        s
    }
}

/// Four-chord diatonic progressions (scale degrees, 0-based) that sound idiomatic in major.
pub const MAJOR_PROGRESSIONS: &[[u8; 4]] = &[
    [0, 4, 5, 3], // I V vi IV
    [0, 5, 3, 4], // I vi IV V
    [5, 3, 0, 4], // vi IV I V
    [0, 3, 4, 3], // I IV V IV
    [0, 3, 0, 4], // I IV I V
    [1, 4, 0, 0], // ii V I I
    [0, 2, 3, 4], // I iii IV V
    [3, 0, 4, 5], // IV I V vi
    [0, 3, 5, 4], // I IV vi V
];

/// Four-chord diatonic progressions for (natural/harmonic) minor.
pub const MINOR_PROGRESSIONS: &[[u8; 4]] = &[
    [0, 5, 2, 6], // i VI III VII
    [0, 3, 4, 0], // i iv v i
    [0, 6, 5, 6], // i VII VI VII
    [0, 3, 6, 2], // i iv VII III
    [0, 5, 3, 4], // i VI iv v
    [5, 6, 0, 0], // VI VII i i
    [0, 2, 6, 3], // i III VII iv
    [3, 0, 4, 0], // iv i v i
];

/// The MIDI key of pitch class `pc` closest to `target`.
pub fn nearest_key(pc: u8, target: i32) -> i32 {
    let base = target - (target - pc as i32).rem_euclid(12);
    if target - base > 6 {
        base + 12
    } else {
        base
    }
}

/// A close-position voicing of `tones` inside `[low, high]`, chosen (over inversions and
/// octaves) to move least from `previous` (smooth voice leading), or to sit nearest the
/// middle of the range when there is no previous chord.
pub fn voice_close(tones: &[u8], previous: &[i32], low: i32, high: i32) -> Vec<i32> {
    let mut best: Option<(i64, Vec<i32>)> = None;
    let n = tones.len();
    for inversion in 0..n {
        for octave in (low / 12 - 1)..=(high / 12 + 1) {
            let mut notes = Vec::with_capacity(n);
            let mut last = octave * 12 + tones[inversion] as i32;
            notes.push(last);
            for k in 1..n {
                let pc = tones[(inversion + k) % n] as i32;
                let mut key = last - last.rem_euclid(12) + pc;
                while key <= last {
                    key += 12;
                }
                notes.push(key);
                last = key;
            }
            if notes[0] < low || *notes.last().unwrap() > high {
                continue;
            }
            let cost: i64 = if previous.is_empty() {
                let centre = (low + high) / 2;
                let mean = notes.iter().sum::<i32>() / n as i32;
                ((mean - centre).abs()) as i64
            } else {
                notes
                    .iter()
                    .map(|&k| previous.iter().map(|&p| (k - p).abs()).min().unwrap() as i64)
                    .sum()
            };
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, notes));
            }
        }
    }
    best.map(|(_, v)| v).unwrap_or_else(|| {
        // Range too narrow for the whole chord: stack what fits from the bottom.
        tones
            .iter()
            .map(|&pc| nearest_key(pc, low + 6).clamp(low, high))
            .collect()
    })
}
