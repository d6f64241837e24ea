//! What a generation listens to. Stem by stem, as in the method's iterative composition: the
//! captured context plus the takes the producer added to it, each mixed at its own level where
//! it sits on the timeline. The mono mix the engine received is written beside the take
//! ([`takes::context_path`]), so the take's bars can be re-generated against the same context
//! after the project reopens, and a producer can hear what a take listened to.

use anyhow::{ensure, Context, Result};
use stemgen::audio::{read_audio, write_wav, Audio, WavFormat};

use crate::capture::CaptureInfo;
use crate::playback::Anchor;
use crate::takes::{self, Take};

/// Where `anchor`'s first sample falls, in samples at `info.sample_rate` from the capture's
/// first sample: by beats when both know them (tempo changes between them aside), else by
/// timeline samples, else at the capture's start.
pub fn offset_in_capture(anchor: &Anchor, info: &CaptureInfo) -> i64 {
    let rate = info.sample_rate as f64;
    if let (Some(take_beats), Some(capture_beats), Some(tempo)) =
        (anchor.start_beats, info.start_beats, info.tempo)
    {
        if tempo > 0.0 {
            return ((take_beats - capture_beats) * 60.0 / tempo * rate).round() as i64;
        }
    }
    match (anchor.start_samples, info.start_samples) {
        (Some(take), Some(capture)) if anchor.sample_rate > 0 => {
            (take as f64 * rate / anchor.sample_rate as f64).round() as i64 - capture
        }
        _ => 0,
    }
}

/// `capture` (mono at `info.sample_rate`) with `takes` mixed in: each take's file read,
/// resampled to the capture's rate, folded to mono and added where it sits on the timeline.
pub fn mix_takes(capture: &[f32], info: &CaptureInfo, takes: &[Take]) -> Result<Vec<f32>> {
    let mut mixed = capture.to_vec();
    for take in takes {
        let audio = read_audio(&take.path)
            .with_context(|| format!("{}: cannot read the take to add it", take.path.display()))?;
        let mono = audio.to_mono_at(info.sample_rate)?.channels.swap_remove(0);
        let offset = offset_in_capture(&take.anchor, info);
        for (i, out) in mixed.iter_mut().enumerate() {
            let idx = i as i64 - offset;
            if idx >= 0 && (idx as usize) < mono.len() {
                *out += mono[idx as usize];
            }
        }
    }
    Ok(mixed)
}

/// Writes the context a take was generated from beside it (32-bit float, mono).
pub fn write_context(take: &Take, context: &Audio) -> Result<()> {
    let path = takes::context_path(take);
    write_wav(&path, context, WavFormat::Float32)
        .with_context(|| format!("{}: cannot write the take's context", path.display()))
}

/// The context `take` was generated from.
pub fn read_context(take: &Take) -> Result<Audio> {
    let path = takes::context_path(take);
    ensure!(
        path.is_file(),
        "{}: the context of {} is missing, so its bars cannot be re-generated (moved or \
         deleted?)",
        path.display(),
        take.name
    );
    read_audio(&path).with_context(|| format!("{}: cannot read the take's context", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(start_beats: f64) -> CaptureInfo {
        CaptureInfo {
            start_frame: 0,
            frames: 0,
            sample_rate: 16_000,
            tempo: Some(120.0),
            time_sig: Some((4, 4)),
            bars: None,
            start_beats: Some(start_beats),
            start_samples: Some(0),
            start_bar: None,
        }
    }

    #[test]
    fn a_take_lands_where_it_sits_on_the_timeline() {
        let anchor = Anchor {
            start_beats: Some(6.0),
            tempo: Some(120.0),
            start_samples: None,
            sample_rate: 48_000,
        };
        // Two beats at 120 BPM = 1 s after a capture from beat 4.
        assert_eq!(offset_in_capture(&anchor, &info(4.0)), 16_000);
        let by_samples = Anchor {
            start_beats: None,
            tempo: None,
            start_samples: Some(96_000),
            sample_rate: 48_000,
        };
        assert_eq!(offset_in_capture(&by_samples, &info(0.0)), 32_000);
    }

    #[test]
    fn takes_are_mixed_in_at_their_level_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("take.wav");
        // 1 s of stereo at twice the capture's rate: 0.5 on the left, 0.25 on the right.
        let audio = Audio::new(32_000, vec![vec![0.5; 32_000], vec![0.25; 32_000]]).unwrap();
        write_wav(&path, &audio, WavFormat::Float32).unwrap();
        let take = Take {
            path,
            anchor: Anchor {
                start_beats: Some(5.0),
                tempo: Some(120.0),
                start_samples: None,
                sample_rate: 32_000,
            },
            ..crate::takes::tests::take(1)
        };
        let mut capture_info = info(4.0);
        capture_info.frames = 48_000;
        let mixed = mix_takes(&vec![0.1; 48_000], &capture_info, &[take]).unwrap();
        // Beat 5 is 0.5 s (8000 samples) into the capture; the take lasts 1 s.
        assert_eq!(mixed[7_999], 0.1);
        assert!(
            (mixed[16_000] - (0.1 + 0.375)).abs() < 1e-3,
            "{}",
            mixed[16_000]
        );
        assert_eq!(mixed[30_000], 0.1);
    }
}
