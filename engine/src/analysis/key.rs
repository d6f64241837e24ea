//! Musical keys: Krumhansl-Schmuckler estimation from chroma, and mir_eval 0.8's
//! `key.weighted_score` for comparing two keys.

use std::fmt;

/// Pitch-class names as mir_eval writes them (sharps).
pub const PITCH_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];
/// Krumhansl-Kessler major-key profile (Krumhansl 1990), index 0 = tonic.
pub const MAJOR_PROFILE: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
/// Krumhansl-Kessler minor-key profile, index 0 = tonic.
pub const MINOR_PROFILE: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];
/// Scale degrees (semitones above the tonic) of the major scale.
pub const MAJOR_SCALE: [usize; 7] = [0, 2, 4, 5, 7, 9, 11];
/// Scale degrees of the natural minor scale.
pub const MINOR_SCALE: [usize; 7] = [0, 2, 3, 5, 7, 8, 10];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Major,
    Minor,
}

/// A key: tonic pitch class (0 = C) and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub tonic: usize,
    pub mode: Mode,
}

impl Key {
    /// Index in 0..24: majors C..B, then minors C..B (the order of [`key_scores`]).
    pub fn index(&self) -> usize {
        self.tonic + if self.mode == Mode::Minor { 12 } else { 0 }
    }

    pub fn from_index(i: usize) -> Key {
        Key {
            tonic: i % 12,
            mode: if i < 12 { Mode::Major } else { Mode::Minor },
        }
    }

    /// Parses mir_eval's form, e.g. `"C# major"`, `"Eb minor"`.
    pub fn parse(s: &str) -> Option<Key> {
        let (name, mode) = s.trim().split_once(' ')?;
        let mode = match mode.trim() {
            "major" => Mode::Major,
            "minor" => Mode::Minor,
            _ => return None,
        };
        let mut chars = name.chars();
        let letter = chars.next()?.to_ascii_uppercase();
        let base = PITCH_NAMES
            .iter()
            .position(|n| n.starts_with(letter) && n.len() == 1)?;
        let tonic = match chars.as_str() {
            "" => base,
            "#" => (base + 1) % 12,
            "b" => (base + 11) % 12,
            _ => return None,
        };
        Some(Key { tonic, mode })
    }

    /// The pitch classes of the key's scale (major or natural minor).
    pub fn scale(&self) -> [usize; 7] {
        let degrees = match self.mode {
            Mode::Major => MAJOR_SCALE,
            Mode::Minor => MINOR_SCALE,
        };
        degrees.map(|d| (self.tonic + d) % 12)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Major => "major",
            Mode::Minor => "minor",
        };
        write!(f, "{} {mode}", PITCH_NAMES[self.tonic])
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    let d = (saa * sbb).sqrt();
    if d > 0.0 {
        sab / d
    } else {
        0.0
    }
}

/// Pearson correlation of a 12-bin pitch-class distribution with each of the 24 key
/// profiles (index as [`Key::index`]). A flat distribution correlates 0 with every key.
pub fn key_scores(pitch_classes: &[f64]) -> [f64; 24] {
    assert_eq!(pitch_classes.len(), 12, "key_scores needs 12 pitch classes");
    let mut out = [0.0; 24];
    for (i, o) in out.iter_mut().enumerate() {
        let k = Key::from_index(i);
        let profile = if k.mode == Mode::Major {
            &MAJOR_PROFILE
        } else {
            &MINOR_PROFILE
        };
        let rotated: Vec<f64> = (0..12)
            .map(|pc| profile[(pc + 12 - k.tonic) % 12])
            .collect();
        *o = pearson(pitch_classes, &rotated);
    }
    out
}

/// Krumhansl-Schmuckler key of a pitch-class distribution (usually mean chroma): the
/// best-correlated of the 24 profiles (ties: the first in [`Key::index`] order), with its
/// correlation, a rough key clarity.
pub fn estimate_key(pitch_classes: &[f64]) -> (Key, f64) {
    let scores = key_scores(pitch_classes);
    let best = (0..24).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
    (Key::from_index(best), scores[best])
}

/// mir_eval's `key.weighted_score(reference, estimate)`: 1 for the same key, 0.5 for the
/// estimate a fifth above in the same mode, 0.3 for the relative major/minor, 0.2 for the
/// parallel key, else 0. Not symmetric: a fifth *below* scores 0.
pub fn weighted_score(reference: Key, estimate: Key) -> f64 {
    let up = (estimate.tonic + 12 - reference.tonic) % 12;
    if reference == estimate {
        1.0
    } else if reference.mode == estimate.mode && up == 7 {
        0.5
    } else if matches!(
        (reference.mode, estimate.mode, up),
        (Mode::Major, Mode::Minor, 9) | (Mode::Minor, Mode::Major, 3)
    ) {
        // Relative minor / relative major.
        0.3
    } else if reference.mode != estimate.mode && up == 0 {
        0.2
    } else {
        0.0
    }
}
