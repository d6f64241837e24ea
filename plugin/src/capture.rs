//! Capturing the context from the track, tied to the host transport.
//!
//! The audio thread writes every block it hears into a [`CaptureRing`]: a pre-allocated mono
//! ring of atomics, so writing is wait-free and never allocates, and any other thread can copy a
//! range out of it at any time. A capture is then only a range of that ring plus the timeline
//! facts it was recorded at ([`CaptureInfo`]); the [`CaptureTracker`] (audio thread only) decides
//! where a bar-aligned capture starts and ends, or cuts "the last N seconds" out of the history.
//!
//! History rule: while the transport plays, every block goes into the ring; while it is stopped,
//! only blocks that are not silent do (someone playing live), so stopping the song does not
//! overwrite what was just heard with silence and "capture the last N seconds" still finds it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The longest capture: 16 bars of 4/4 at 60 BPM.
pub const MAX_CAPTURE_SECONDS: f64 = 64.0;
/// Extra history kept beyond the longest capture, so a finished capture stays intact while the
/// main thread copies it out even though the audio thread keeps writing.
const RING_MARGIN_SECONDS: f64 = 16.0;
/// A block whose peak is below this (about -80 dBFS) counts as silence for the history rule.
const SILENT_PEAK: f32 = 1e-4;
/// A jump of the playhead by more than this many samples away from where it should be is a
/// seek or a loop: a running bar capture then starts over at the next bar line.
const JUMP_TOLERANCE_SAMPLES: f64 = 64.0;

/// Mono history of the input, written by the audio thread, readable from any thread.
pub struct CaptureRing {
    samples: Box<[AtomicU32]>,
    /// Frames written since the ring was created (the write position is `written % capacity`).
    written: AtomicU64,
    sample_rate: u32,
}

impl CaptureRing {
    /// A ring holding [`MAX_CAPTURE_SECONDS`] plus a margin at `sample_rate` (allocates; call
    /// off the audio thread).
    pub fn new(sample_rate: u32) -> Self {
        let frames = ((MAX_CAPTURE_SECONDS + RING_MARGIN_SECONDS) * sample_rate as f64) as usize;
        Self::with_capacity(sample_rate, frames.max(1))
    }

    pub fn with_capacity(sample_rate: u32, frames: usize) -> Self {
        CaptureRing {
            samples: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            written: AtomicU64::new(0),
            sample_rate,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    /// Frames written so far (the index one past the newest frame).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Appends one frame. Audio thread only (single writer); wait-free.
    #[inline]
    pub fn push(&self, sample: f32) {
        let at = self.written.load(Ordering::Relaxed);
        let slot = (at % self.samples.len() as u64) as usize;
        self.samples[slot].store(sample.to_bits(), Ordering::Relaxed);
        self.written.store(at + 1, Ordering::Release);
    }

    /// Copies frames `start..start + len`, or `None` if part of that range is not written yet or
    /// has already been overwritten (checked again after the copy, so a racing writer is caught).
    pub fn copy_range(&self, start: u64, len: usize) -> Option<Vec<f32>> {
        let cap = self.samples.len() as u64;
        let end = start + len as u64;
        let intact = |written: u64| end <= written && written - start <= cap;
        if !intact(self.written()) {
            return None;
        }
        let out: Vec<f32> = (start..end)
            .map(|i| f32::from_bits(self.samples[(i % cap) as usize].load(Ordering::Relaxed)))
            .collect();
        intact(self.written()).then_some(out)
    }
}

/// What one finished capture is: a range of the ring and where it sat on the host timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureInfo {
    /// First frame in the ring.
    pub start_frame: u64,
    pub frames: u64,
    pub sample_rate: u32,
    /// Host tempo when it was captured.
    pub tempo: Option<f64>,
    pub time_sig: Option<(i32, i32)>,
    /// Bars captured (bar captures only).
    pub bars: Option<f64>,
    /// Timeline position of the first frame, in quarter notes.
    pub start_beats: Option<f64>,
    /// Timeline position of the first frame, in samples.
    pub start_samples: Option<i64>,
    /// Bar number (0-based) where it starts, if the host says.
    pub start_bar: Option<i32>,
}

impl CaptureInfo {
    pub fn seconds(&self) -> f64 {
        self.frames as f64 / self.sample_rate as f64
    }
}

/// What the transport says at the first sample of a block (a copy of the fields we use).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TransportFacts {
    pub playing: bool,
    pub sample_rate: f64,
    pub tempo: Option<f64>,
    pub time_sig: Option<(i32, i32)>,
    pub pos_beats: Option<f64>,
    pub pos_samples: Option<i64>,
    pub bar_start_beats: Option<f64>,
    pub bar_number: Option<i32>,
}

impl TransportFacts {
    /// Quarter notes per bar (4/4 when the host does not say).
    pub fn beats_per_bar(&self) -> f64 {
        match self.time_sig {
            Some((num, den)) if num > 0 && den > 0 => num as f64 * 4.0 / den as f64,
            _ => 4.0,
        }
    }

    fn samples_per_beat(&self) -> Option<f64> {
        self.tempo
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(|t| 60.0 / t * self.sample_rate)
    }
}

/// What the capture is doing, as shown in the editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CapturePhase {
    Idle = 0,
    /// Armed; starts at the next bar line once the transport plays.
    WaitingForBar = 1,
    Recording = 2,
}

impl CapturePhase {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => CapturePhase::WaitingForBar,
            2 => CapturePhase::Recording,
            _ => CapturePhase::Idle,
        }
    }
}

/// The audio thread's capture state machine. No allocation anywhere in it.
#[derive(Debug, Default)]
pub struct CaptureTracker {
    armed_bars: Option<f64>,
    recording: Option<Recording>,
    /// Timeline position just after the newest history frame, while it is contiguous.
    history_end: Option<(Option<i64>, Option<f64>)>,
}

#[derive(Debug, Clone, Copy)]
struct Recording {
    info: CaptureInfo,
    /// Where the playhead should be at the next block, to notice seeks and loops.
    expected_pos_samples: f64,
}

impl CaptureTracker {
    pub fn phase(&self) -> CapturePhase {
        if self.recording.is_some() {
            CapturePhase::Recording
        } else if self.armed_bars.is_some() {
            CapturePhase::WaitingForBar
        } else {
            CapturePhase::Idle
        }
    }

    /// Progress of a running capture, 0..1.
    pub fn progress(&self, ring: &CaptureRing) -> f32 {
        self.recording.map_or(0.0, |r| {
            let done = ring.written().saturating_sub(r.info.start_frame) as f64;
            (done / r.info.frames.max(1) as f64).min(1.0) as f32
        })
    }

    /// Arms a capture of `bars` bars from the next bar line (replaces a running one).
    pub fn arm(&mut self, bars: f64) {
        self.armed_bars = Some(bars.max(0.25));
        self.recording = None;
    }

    pub fn disarm(&mut self) {
        self.armed_bars = None;
        self.recording = None;
    }

    /// The last `seconds` of history as a capture, tagged with the timeline position it ended
    /// at when that is known. `None` when there is no history yet.
    pub fn last_seconds(
        &self,
        ring: &CaptureRing,
        seconds: f64,
        facts: &TransportFacts,
    ) -> Option<CaptureInfo> {
        let written = ring.written();
        let wanted = (seconds.max(0.0) * ring.sample_rate() as f64) as u64;
        let frames = wanted.min(written).min(ring.capacity() as u64);
        if frames == 0 {
            return None;
        }
        let (end_samples, end_beats) = self.history_end.unwrap_or((None, None));
        let spb = facts.samples_per_beat();
        Some(CaptureInfo {
            start_frame: written - frames,
            frames,
            sample_rate: ring.sample_rate(),
            tempo: facts.tempo,
            time_sig: facts.time_sig,
            bars: spb.map(|spb| frames as f64 / spb / facts.beats_per_bar()),
            start_beats: end_beats.zip(spb).map(|(b, spb)| b - frames as f64 / spb),
            start_samples: end_samples.map(|s| s - frames as i64),
            start_bar: None,
        })
    }

    /// Handles one block: writes the history (see the module docs) and advances a bar capture.
    /// `mono` is the context input mixed to mono. Returns a capture that finished in this block.
    pub fn process_block(
        &mut self,
        ring: &CaptureRing,
        mono: &[f32],
        facts: &TransportFacts,
    ) -> Option<CaptureInfo> {
        let len = mono.len();
        if len == 0 {
            return None;
        }
        let block_start_frame = ring.written();
        let peak = mono.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let keep = facts.playing || peak >= SILENT_PEAK;

        if let Some(rec) = self.recording {
            let jumped = match facts.pos_samples {
                Some(pos) => (pos as f64 - rec.expected_pos_samples).abs() > JUMP_TOLERANCE_SAMPLES,
                None => false,
            };
            if !facts.playing || jumped {
                // A stop, a seek or a loop inside the capture: start over at the next bar.
                self.recording = None;
                self.armed_bars = rec.info.bars;
            }
        }

        if keep {
            for &s in mono {
                ring.push(if s.is_finite() { s } else { 0.0 });
            }
            self.history_end = if facts.playing {
                let spb = facts.samples_per_beat();
                Some((
                    facts.pos_samples.map(|p| p + len as i64),
                    facts
                        .pos_beats
                        .zip(spb)
                        .map(|(b, spb)| b + len as f64 / spb),
                ))
            } else {
                None
            };
        }

        if let (Some(bars), None, true) = (self.armed_bars, self.recording, facts.playing) {
            self.start_at_bar_line(bars, facts, block_start_frame, len);
        }

        let rec = self.recording.as_mut()?;
        rec.expected_pos_samples += len as f64;
        if ring.written() >= rec.info.start_frame + rec.info.frames {
            let info = rec.info;
            self.recording = None;
            self.armed_bars = None;
            return Some(info);
        }
        None
    }

    fn start_at_bar_line(
        &mut self,
        bars: f64,
        facts: &TransportFacts,
        block_start_frame: u64,
        len: usize,
    ) {
        let beats_per_bar = facts.beats_per_bar();
        let (spb, tempo_known) = match facts.samples_per_beat() {
            Some(spb) => (spb, true),
            // No tempo from the host: capture at 120 BPM from the first block.
            None => (0.5 * facts.sample_rate, false),
        };
        let (offset, start_beats, bar_number) = match (facts.pos_beats, tempo_known) {
            (Some(pos), true) => {
                let bar_start = facts
                    .bar_start_beats
                    .unwrap_or((pos / beats_per_bar).floor() * beats_per_bar);
                let eps = 0.5 / spb; // half a sample, in beats
                let (next_bar, bar_number) = if pos - bar_start <= eps {
                    (bar_start, facts.bar_number)
                } else {
                    (bar_start + beats_per_bar, facts.bar_number.map(|b| b + 1))
                };
                ((next_bar - pos).max(0.0) * spb, Some(next_bar), bar_number)
            }
            _ => (0.0, None, None),
        };
        let offset_frames = offset.round() as usize;
        if offset_frames >= len {
            return; // the bar line is in a later block
        }
        let frames = (bars * beats_per_bar * spb).round().max(1.0) as u64;
        self.recording = Some(Recording {
            info: CaptureInfo {
                start_frame: block_start_frame + offset_frames as u64,
                frames,
                sample_rate: facts.sample_rate as u32,
                tempo: facts.tempo.filter(|_| tempo_known),
                time_sig: facts.time_sig,
                bars: Some(bars),
                start_beats,
                start_samples: facts.pos_samples.map(|p| p + offset_frames as i64),
                start_bar: bar_number,
            },
            expected_pos_samples: facts.pos_samples.unwrap_or(0) as f64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(playing: bool, pos_samples: i64, rate: f64, tempo: f64) -> TransportFacts {
        let spb = 60.0 / tempo * rate;
        TransportFacts {
            playing,
            sample_rate: rate,
            tempo: Some(tempo),
            time_sig: Some((4, 4)),
            pos_beats: Some(pos_samples as f64 / spb),
            pos_samples: Some(pos_samples),
            bar_start_beats: None,
            bar_number: None,
        }
    }

    /// Runs blocks of `block` frames from timeline sample `from`, the input being the frame's
    /// timeline index (so the captured range can be read back exactly).
    fn run(
        tracker: &mut CaptureTracker,
        ring: &CaptureRing,
        from: i64,
        blocks: usize,
        block: usize,
        rate: f64,
    ) -> Option<CaptureInfo> {
        let mut done = None;
        for b in 0..blocks {
            let pos = from + (b * block) as i64;
            let input: Vec<f32> = (0..block).map(|i| (pos + i as i64) as f32).collect();
            if let Some(info) = tracker.process_block(ring, &input, &facts(true, pos, rate, 120.0))
            {
                done = Some(info);
            }
        }
        done
    }

    #[test]
    fn bar_capture_starts_on_the_next_bar_line_and_lasts_n_bars() {
        // 120 BPM at 8 kHz: a beat is 4000 samples, a 4/4 bar 16000.
        let rate = 8000.0;
        let ring = CaptureRing::with_capacity(8000, 200_000);
        let mut tracker = CaptureTracker::default();
        tracker.arm(2.0);
        // The playhead starts mid-bar at sample 5000 and runs in odd 333-frame blocks.
        let info = run(&mut tracker, &ring, 5000, 200, 333, rate).expect("capture finished");
        assert_eq!(info.frames, 32_000);
        assert_eq!(info.start_samples, Some(16_000));
        assert_eq!(info.start_beats, Some(4.0));
        let audio = ring
            .copy_range(info.start_frame, info.frames as usize)
            .unwrap();
        assert_eq!(audio[0], 16_000.0, "first captured frame is the bar line");
        assert_eq!(*audio.last().unwrap(), 47_999.0);
        assert_eq!(tracker.phase(), CapturePhase::Idle);
    }

    #[test]
    fn a_jump_during_capture_restarts_it_at_the_next_bar() {
        let rate = 8000.0;
        let ring = CaptureRing::with_capacity(8000, 200_000);
        let mut tracker = CaptureTracker::default();
        tracker.arm(1.0);
        assert!(run(&mut tracker, &ring, 0, 10, 512, rate).is_none());
        assert_eq!(tracker.phase(), CapturePhase::Recording);
        // Loop back to sample 3000 (mid-bar): the capture waits for the bar at 16000.
        let info = run(&mut tracker, &ring, 3000, 60, 512, rate).unwrap();
        assert_eq!(info.start_samples, Some(16_000));
        let audio = ring
            .copy_range(info.start_frame, info.frames as usize)
            .unwrap();
        assert_eq!(audio[0], 16_000.0);
    }

    #[test]
    fn last_seconds_survive_a_stop_and_silence() {
        let rate = 8000.0;
        let ring = CaptureRing::with_capacity(8000, 100_000);
        let mut tracker = CaptureTracker::default();
        run(&mut tracker, &ring, 0, 40, 400, rate); // 16000 frames played
                                                    // Stopped with silence coming in: the history is not overwritten.
        let stopped = facts(false, 16_000, rate, 120.0);
        for _ in 0..20 {
            tracker.process_block(&ring, &[0.0; 400], &stopped);
        }
        let info = tracker.last_seconds(&ring, 1.0, &stopped).unwrap();
        assert_eq!(info.frames, 8000);
        assert_eq!(info.start_samples, Some(8000));
        assert_eq!(info.start_beats, Some(2.0));
        let audio = ring.copy_range(info.start_frame, 8000).unwrap();
        assert_eq!(audio[0], 8000.0);
        assert_eq!(audio[7999], 15_999.0);
    }

    #[test]
    fn overwritten_ranges_are_refused() {
        let ring = CaptureRing::with_capacity(100, 10);
        for i in 0..25 {
            ring.push(i as f32);
        }
        assert!(ring.copy_range(5, 5).is_none(), "overwritten");
        assert!(ring.copy_range(20, 10).is_none(), "not written yet");
        assert_eq!(ring.copy_range(15, 10).unwrap()[0], 15.0);
    }

    #[test]
    fn non_finite_input_is_stored_as_silence() {
        let ring = CaptureRing::with_capacity(100, 10);
        let mut tracker = CaptureTracker::default();
        let f = facts(true, 0, 100.0, 120.0);
        tracker.process_block(&ring, &[f32::NAN, f32::INFINITY, 0.5], &f);
        assert_eq!(ring.copy_range(0, 3).unwrap(), vec![0.0, 0.0, 0.5]);
    }
}
