//! Which pitches survive a tokenizer: plucked harmonic notes, one per semitone, encoded and
//! decoded with 1..Q levels, and the pitch of each decoded note compared with the one played.
//!
//! Why it exists: LSD and mel distances average over the whole spectrum and say nothing about
//! whether a bass line's notes come back as the same notes. A model can only follow the
//! harmony in pitches its tokens can carry, so this is the tokenizer's first musical test.

use anyhow::Result;

use super::{no_progress, Tokenizer};
use crate::analysis::pitch::{note_pitch, pluck};
use crate::audio::Audio;

/// Seconds per note; the pitch is read from `MEASURED` of it (after the attack).
const NOTE_SECONDS: f64 = 0.5;
const MEASURED: std::ops::Range<f64> = 0.05..0.40;

/// The outcome for one number of levels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LevelsResult {
    pub levels: usize,
    /// (played, heard) per note; heard is `None` for a silent note.
    pub notes: Vec<(u8, Option<u8>)>,
}

impl LevelsResult {
    /// Notes heard at exactly the pitch played, among those in `range`.
    pub fn exact(&self, range: std::ops::RangeInclusive<u8>) -> (usize, usize) {
        self.count(range, |played, heard| played == heard)
    }

    /// Notes heard with the right pitch class (octave errors allowed), among those in `range`.
    pub fn pitch_class(&self, range: std::ops::RangeInclusive<u8>) -> (usize, usize) {
        self.count(range, |played, heard| {
            (played as i32 - heard as i32) % 12 == 0
        })
    }

    fn count(
        &self,
        range: std::ops::RangeInclusive<u8>,
        right: impl Fn(u8, u8) -> bool,
    ) -> (usize, usize) {
        let within: Vec<_> = self
            .notes
            .iter()
            .filter(|(p, _)| range.contains(p))
            .collect();
        let hits = within
            .iter()
            .filter(|(p, h)| h.is_some_and(|h| right(*p, h)))
            .count();
        (hits, within.len())
    }
}

/// One plucked note per semitone of `notes` ([`pluck`]), back to back, at `sample_rate`.
pub fn plucked_notes(notes: std::ops::RangeInclusive<u8>, sample_rate: u32) -> Vec<f32> {
    notes
        .flat_map(|note| pluck(note, NOTE_SECONDS, sample_rate))
        .collect()
}

/// Plays `notes` through `tokenizer` and reads each decoded note's pitch, for each number of
/// levels in `levels`; then, where the tokenizer has one, through its phase reconstruction
/// alone (reported as 0 levels: exact magnitudes, no tokens).
pub fn pitch_check(
    tokenizer: &dyn Tokenizer,
    notes: std::ops::RangeInclusive<u8>,
    levels: &[usize],
) -> Result<Vec<LevelsResult>> {
    let rate = tokenizer.sample_rate();
    let played = Audio::new(rate, vec![plucked_notes(notes.clone(), rate)])?;
    let tokens = tokenizer.encode(&played, &mut no_progress())?;
    let mut results = Vec::new();
    for &q in levels {
        anyhow::ensure!(
            (1..=tokenizer.num_levels()).contains(&q),
            "{} has levels 1..={}, not {q}",
            tokenizer.name(),
            tokenizer.num_levels()
        );
        let decoded = tokenizer.decode(&tokens.truncated(q), &mut no_progress())?;
        results.push(LevelsResult {
            levels: q,
            notes: read_notes(&decoded.resampled(rate)?.channels[0], rate, notes.clone()),
        });
    }
    if let Some(decoded) = tokenizer.phase_only_roundtrip(&played) {
        results.push(LevelsResult {
            levels: 0,
            notes: read_notes(&decoded?.resampled(rate)?.channels[0], rate, notes),
        });
    }
    Ok(results)
}

/// The pitch of each note of [`plucked_notes`] in `heard` (searched within an octave around
/// the played range).
fn read_notes(
    heard: &[f32],
    rate: u32,
    notes: std::ops::RangeInclusive<u8>,
) -> Vec<(u8, Option<u8>)> {
    let search = (
        notes.start().saturating_sub(12),
        notes.end().saturating_add(12),
    );
    notes
        .enumerate()
        .map(|(i, note)| {
            let at = |s: f64| ((i as f64 * NOTE_SECONDS + s) * rate as f64) as usize;
            let span = at(MEASURED.start).min(heard.len())..at(MEASURED.end).min(heard.len());
            (note, note_pitch(&heard[span], rate, search.0, search.1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Progress, Tokens};

    /// A "tokenizer" that keeps the samples (one level of f32 bits), optionally shifting every
    /// pitch up by resampling time: the check must see the truth and a wrong pitch.
    struct Lossless {
        speed: f64,
    }

    impl Tokenizer for Lossless {
        fn name(&self) -> &str {
            "lossless"
        }
        fn sample_rate(&self) -> u32 {
            16_000
        }
        fn frame_rate(&self) -> f64 {
            16_000.0
        }
        fn num_levels(&self) -> usize {
            1
        }
        fn codebook_size(&self) -> usize {
            usize::MAX
        }
        fn encode(&self, audio: &Audio, _: Progress) -> Result<Tokens> {
            let codes: Vec<u32> = audio.channels[0].iter().map(|s| s.to_bits()).collect();
            Tokens::new(1, codes.len(), codes)
        }
        fn decode(&self, tokens: &Tokens, _: Progress) -> Result<Audio> {
            let x: Vec<f32> = tokens.codes.iter().map(|&c| f32::from_bits(c)).collect();
            let sped = (0..x.len())
                .map(|i| {
                    x.get((i as f64 * self.speed) as usize)
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect();
            Ok(Audio::new(16_000, vec![sped])?)
        }
    }

    #[test]
    fn a_lossless_tokenizer_keeps_every_pitch_and_a_shifted_one_keeps_none() {
        let exact = pitch_check(&Lossless { speed: 1.0 }, 28..=52, &[1]).unwrap();
        assert_eq!(exact.len(), 1, "no phase-only row for a codec without one");
        assert_eq!(exact[0].exact(28..=52), (25, 25));
        assert_eq!(exact[0].pitch_class(40..=52), (13, 13));
        // A whole tone up (and later notes start early): few notes right, none by luck of the
        // octave.
        let shifted = pitch_check(&Lossless { speed: 1.122_462 }, 28..=52, &[1]).unwrap();
        assert!(shifted[0].exact(28..=52).0 <= 3, "{:?}", shifted[0]);
        assert!(pitch_check(&Lossless { speed: 1.0 }, 28..=30, &[2]).is_err());
    }
}
