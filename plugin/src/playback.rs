//! Playing the chosen take on the host timeline.
//!
//! A take is anchored where its context was captured: the quarter-note position of its first
//! sample (and its sample position as a fallback). Every block the audio thread asks "which
//! sample of the take belongs under the playhead now?", so playback follows loops, seeks and
//! start/stop with no state to get out of sync. Takes without an anchor (captured with no
//! timeline) play only when auditioned.
//!
//! Swapping takes never allocates or frees on the audio thread: new takes arrive as `Arc`s over
//! a wait-free queue and the replaced one goes back over a second queue, to be dropped by the
//! thread that sends the next one ([`TakeSender`]).

use std::sync::Arc;

use crate::capture::TransportFacts;

/// Where a take sits on the host timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// Quarter-note position of the first sample.
    pub start_beats: Option<f64>,
    /// Tempo the take was made at (converts beats to samples).
    pub tempo: Option<f64>,
    /// Timeline sample position of the first sample, at `sample_rate`.
    pub start_samples: Option<i64>,
    pub sample_rate: u32,
}

/// A take's audio, ready for the audio thread (already at the host's sample rate).
#[derive(Debug)]
pub struct TakeAudio {
    pub take_id: u64,
    pub sample_rate: u32,
    pub left: Vec<f32>,
    pub right: Vec<f32>,
    pub anchor: Anchor,
}

impl TakeAudio {
    pub fn len(&self) -> usize {
        self.left.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// Index of the take's sample under the playhead at the start of a block, if the timeline
    /// says where the playhead is. Prefers the beat position (exact under tempo-map-free hosts
    /// and immune to sample-position drift), else the sample position.
    pub fn timeline_offset(&self, facts: &TransportFacts) -> Option<f64> {
        let rate = self.sample_rate as f64;
        if let (Some(pos), Some(start), Some(tempo)) =
            (facts.pos_beats, self.anchor.start_beats, self.anchor.tempo)
        {
            if tempo > 0.0 {
                return Some((pos - start) * 60.0 / tempo * rate);
            }
        }
        match (facts.pos_samples, self.anchor.start_samples) {
            (Some(pos), Some(start)) if self.anchor.sample_rate > 0 => {
                let scale = rate / self.anchor.sample_rate as f64;
                Some((pos - start) as f64 * scale)
            }
            _ => None,
        }
    }
}

/// The audio thread's side: the playing take, the one fading out, the audition cursor, and
/// the queues.
pub struct TakePlayer {
    current: Option<Arc<TakeAudio>>,
    /// The take being replaced and how far its cross-fade has gone (samples).
    fading: Option<(Arc<TakeAudio>, usize)>,
    incoming: rtrb::Consumer<Option<Arc<TakeAudio>>>,
    retired: rtrb::Producer<Arc<TakeAudio>>,
    /// Sample index while auditioning (free-running from the start of the take, kept across
    /// a swap so two takes can be compared without a gap).
    audition: Option<usize>,
    /// Where in the current take the last block started (0..1; NaN when it was silent), for
    /// the editor's playhead.
    position: f64,
}

/// The other threads' side: sends takes to the audio thread and drops the ones it retired.
pub struct TakeSender {
    outgoing: rtrb::Producer<Option<Arc<TakeAudio>>>,
    retired: rtrb::Consumer<Arc<TakeAudio>>,
}

/// Room in the queues; far more than can be in flight, since every send first drops what the
/// audio thread retired.
const QUEUE: usize = 32;

/// Length of the equal-power cross-fade between the outgoing and the incoming take: a
/// preview replaced by its full take, or one take switched for another while playing.
pub const SWAP_FADE_SECONDS: f64 = 0.010;

pub fn take_channel() -> (TakeSender, TakePlayer) {
    let (outgoing, incoming) = rtrb::RingBuffer::new(QUEUE);
    let (retired_tx, retired_rx) = rtrb::RingBuffer::new(QUEUE);
    (
        TakeSender {
            outgoing,
            retired: retired_rx,
        },
        TakePlayer {
            current: None,
            fading: None,
            incoming,
            retired: retired_tx,
            audition: None,
            position: f64::NAN,
        },
    )
}

impl TakeSender {
    /// Sends a take (or `None` to stop playing). Returns false if the queue is full.
    pub fn send(&mut self, take: Option<Arc<TakeAudio>>) -> bool {
        self.collect_garbage();
        self.outgoing.push(take).is_ok()
    }

    /// Drops the takes the audio thread has let go of.
    pub fn collect_garbage(&mut self) {
        while self.retired.pop().is_ok() {}
    }
}

/// Index of `take`'s sample at the start of a block: the audition cursor, else the timeline
/// while the host plays. `None`: the take is silent in this block.
fn block_start(take: &TakeAudio, audition: Option<usize>, facts: &TransportFacts) -> Option<i64> {
    if take.sample_rate as f64 != facts.sample_rate || take.is_empty() {
        return None; // being resampled for the new host rate
    }
    match audition {
        Some(cursor) => Some(cursor as i64),
        None if facts.playing => take.timeline_offset(facts).map(|o| o.round() as i64),
        None => None,
    }
}

/// `take`'s sample `idx` (left, right), silence outside it.
fn frame(take: &TakeAudio, idx: i64) -> (f32, f32) {
    if idx < 0 || idx as usize >= take.len() {
        return (0.0, 0.0);
    }
    (take.left[idx as usize], take.right[idx as usize])
}

impl TakePlayer {
    /// Picks up a newly sent take; the playing one fades out over [`SWAP_FADE_SECONDS`].
    /// Audio thread; never frees (retired takes are sent back; if that queue is short of room
    /// the swap waits for a later block).
    pub fn receive(&mut self) {
        while !self.incoming.is_empty() && self.retired.slots() >= 2 {
            let Ok(next) = self.incoming.pop() else { break };
            if let Some((old, _)) = self.fading.take() {
                // Cannot fail: slots were checked above and this thread is the only producer.
                let _ = self.retired.push(old);
            }
            if let Some(old) = std::mem::replace(&mut self.current, next) {
                self.fading = Some((old, 0));
            }
            if self.current.is_none() {
                self.audition = None;
            }
        }
    }

    pub fn current_id(&self) -> Option<u64> {
        self.current.as_ref().map(|t| t.take_id)
    }

    pub fn start_audition(&mut self) {
        self.audition = self.current.as_ref().map(|_| 0);
    }

    /// Auditions from `sample` of the current take.
    pub fn start_audition_at(&mut self, sample: usize) {
        self.audition = self.current.as_ref().map(|_| sample);
    }

    /// Auditions from `fraction` (0..1) of the current take (a click on its waveform).
    pub fn start_audition_from(&mut self, fraction: f64) {
        let len = self.current.as_ref().map_or(0, |t| t.len());
        self.start_audition_at((fraction.clamp(0.0, 1.0) * len as f64) as usize);
    }

    /// Where in the current take the last block started (0..1), if it played.
    pub fn position(&self) -> Option<f64> {
        Some(self.position).filter(|p| p.is_finite())
    }

    pub fn stop_audition(&mut self) {
        self.audition = None;
    }

    pub fn is_auditioning(&self) -> bool {
        self.audition.is_some()
    }

    /// Adds the take to `out` (left, right) scaled by `gain`: auditioning plays from the cursor,
    /// otherwise the timeline decides; a replaced take cross-fades into it. Returns the peak it
    /// added.
    pub fn render(
        &mut self,
        facts: &TransportFacts,
        gains: &[f32],
        left: &mut [f32],
        right: &mut [f32],
    ) -> f32 {
        let n = left.len().min(right.len()).min(gains.len());
        let audition = self.audition;
        if let (Some(cursor), Some(take)) = (audition, self.current.as_ref()) {
            if cursor >= take.len() {
                self.audition = None;
            } else {
                self.audition = Some(cursor + n);
            }
        }
        let audition = audition.filter(|_| self.audition.is_some());
        let fade_len = ((SWAP_FADE_SECONDS * facts.sample_rate) as usize).max(1);
        let incoming = self
            .current
            .as_deref()
            .and_then(|t| block_start(t, audition, facts).map(|s| (t, s)));
        let outgoing = self
            .fading
            .as_ref()
            .and_then(|(t, done)| block_start(t, audition, facts).map(|s| (&**t, s, *done)));
        self.position = match incoming {
            Some((t, s)) if s >= 0 && (s as usize) < t.len() => s as f64 / t.len() as f64,
            _ => f64::NAN,
        };
        let mut peak = 0.0f32;
        if incoming.is_some() || outgoing.is_some() {
            for i in 0..n {
                let (mut l, mut r) = incoming.map_or((0.0, 0.0), |(t, s)| frame(t, s + i as i64));
                if let Some((t, s, done)) = outgoing {
                    let x = ((done + i) as f32 / fade_len as f32).min(1.0);
                    let (fade_in, fade_out) = (x * std::f32::consts::FRAC_PI_2).sin_cos();
                    let (ol, or) = frame(t, s + i as i64);
                    l = l * fade_in + ol * fade_out;
                    r = r * fade_in + or * fade_out;
                }
                let (l, r) = (l * gains[i], r * gains[i]);
                left[i] += l;
                right[i] += r;
                peak = peak.max(l.abs()).max(r.abs());
            }
        }
        if let Some((_, done)) = self.fading.as_mut() {
            *done += n;
            if *done >= fade_len && self.retired.slots() > 0 {
                if let Some((old, _)) = self.fading.take() {
                    let _ = self.retired.push(old);
                }
            }
        }
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(anchor: Anchor) -> Arc<TakeAudio> {
        let n = 48_000;
        Arc::new(TakeAudio {
            take_id: 7,
            sample_rate: 48_000,
            left: (0..n).map(|i| i as f32).collect(),
            right: (0..n).map(|i| -(i as f32)).collect(),
            anchor,
        })
    }

    fn at(pos_samples: i64, tempo: f64, playing: bool) -> TransportFacts {
        TransportFacts {
            playing,
            sample_rate: 48_000.0,
            tempo: Some(tempo),
            time_sig: Some((4, 4)),
            pos_beats: Some(pos_samples as f64 / (60.0 / tempo * 48_000.0)),
            pos_samples: Some(pos_samples),
            bar_start_beats: None,
            bar_number: None,
        }
    }

    #[test]
    fn plays_the_sample_under_the_playhead_after_seeks_and_loops() {
        // Anchored at beat 8 (= sample 192000 at 120 BPM).
        let anchor = Anchor {
            start_beats: Some(8.0),
            tempo: Some(120.0),
            start_samples: Some(192_000),
            sample_rate: 48_000,
        };
        let (mut tx, mut player) = take_channel();
        assert!(tx.send(Some(take(anchor))));
        player.receive();
        assert_eq!(player.current_id(), Some(7));
        for pos in [192_000i64, 200_123, 192_000 + 47_990, 100_000, 192_000 + 10] {
            let (mut l, mut r) = (vec![0.0; 16], vec![0.0; 16]);
            player.render(&at(pos, 120.0, true), &[1.0; 16], &mut l, &mut r);
            for i in 0..16 {
                let idx = pos + i as i64 - 192_000;
                let expect = if (0..48_000).contains(&idx) {
                    idx as f32
                } else {
                    0.0
                };
                assert_eq!(l[i], expect, "pos {pos} + {i}");
                assert_eq!(r[i], -expect);
            }
        }
        // Stopped: silent.
        let (mut l, mut r) = (vec![0.0; 8], vec![0.0; 8]);
        player.render(&at(192_100, 120.0, false), &[1.0; 8], &mut l, &mut r);
        assert!(l.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn sample_position_is_the_fallback_anchor() {
        let anchor = Anchor {
            start_beats: None,
            tempo: None,
            start_samples: Some(1000),
            sample_rate: 48_000,
        };
        let t = take(anchor);
        let mut facts = at(1500, 120.0, true);
        facts.pos_beats = None;
        assert_eq!(t.timeline_offset(&facts), Some(500.0));
    }

    #[test]
    fn swapping_sends_the_old_take_back_and_audition_runs_from_the_start() {
        let (mut tx, mut player) = take_channel();
        let first = take(Anchor::default());
        let weak = Arc::downgrade(&first);
        tx.send(Some(first));
        player.receive();
        tx.send(None);
        player.receive();
        assert!(player.current_id().is_none());
        // It fades out first, then goes back.
        let (mut l, mut r) = (vec![0.0; 480], vec![0.0; 480]);
        player.render(&at(0, 120.0, false), &[1.0; 480], &mut l, &mut r);
        assert!(weak.upgrade().is_some(), "the audio thread never frees");
        tx.collect_garbage();
        assert!(weak.upgrade().is_none(), "freed by the sender's thread");

        tx.send(Some(take(Anchor::default())));
        player.receive();
        player.start_audition();
        let (mut l, mut r) = (vec![0.0; 4], vec![0.0; 4]);
        player.render(&at(0, 120.0, false), &[0.5; 4], &mut l, &mut r);
        assert_eq!(l, vec![0.0, 0.5, 1.0, 1.5]);
        player.render(&at(0, 120.0, false), &[1.0; 4], &mut l, &mut r);
        assert_eq!(l[0], 4.0 + 0.0);
    }

    #[test]
    fn a_take_at_another_rate_stays_silent() {
        let (mut tx, mut player) = take_channel();
        tx.send(Some(take(Anchor {
            start_samples: Some(0),
            sample_rate: 48_000,
            ..Anchor::default()
        })));
        player.receive();
        let mut facts = at(10, 120.0, true);
        facts.sample_rate = 44_100.0;
        let (mut l, mut r) = (vec![0.0; 4], vec![0.0; 4]);
        assert_eq!(player.render(&facts, &[1.0; 4], &mut l, &mut r), 0.0);
    }

    #[test]
    fn a_swap_cross_fades_without_a_step() {
        // Two constant takes (1.0 and -1.0) on the timeline; the swap happens mid-play.
        let flat = |id: u64, v: f32| {
            Arc::new(TakeAudio {
                take_id: id,
                sample_rate: 48_000,
                left: vec![v; 48_000],
                right: vec![v; 48_000],
                anchor: Anchor {
                    start_samples: Some(0),
                    sample_rate: 48_000,
                    ..Anchor::default()
                },
            })
        };
        let (mut tx, mut player) = take_channel();
        tx.send(Some(flat(1, 1.0)));
        player.receive();
        let mut out = Vec::new();
        let mut pos = 0i64;
        for block in 0..20 {
            if block == 5 {
                tx.send(Some(flat(2, -1.0)));
                player.receive();
            }
            let mut facts = at(pos, 120.0, true);
            facts.pos_beats = None;
            let (mut l, mut r) = (vec![0.0; 64], vec![0.0; 64]);
            player.render(&facts, &[1.0; 64], &mut l, &mut r);
            out.extend(l);
            pos += 64;
        }
        assert_eq!(out[0], 1.0);
        assert_eq!(*out.last().unwrap(), -1.0);
        let max_step = out
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        // Over 480 samples the equal-power curve never steps more than about pi/480 * 1.42.
        assert!(max_step < 0.01, "step {max_step}");
        assert_eq!(player.current_id(), Some(2));
    }

    #[test]
    fn auditioning_continues_at_the_same_sample_after_a_swap() {
        let (mut tx, mut player) = take_channel();
        tx.send(Some(take(Anchor::default())));
        player.receive();
        player.start_audition_at(1000);
        let (mut l, mut r) = (vec![0.0; 4], vec![0.0; 4]);
        player.render(&at(0, 120.0, false), &[1.0; 4], &mut l, &mut r);
        assert_eq!(l[0], 1000.0);
        tx.send(Some(take(Anchor::default())));
        player.receive();
        assert!(player.is_auditioning());
        let (mut l, mut r) = (vec![0.0; 4], vec![0.0; 4]);
        player.render(&at(0, 120.0, false), &[1.0; 4], &mut l, &mut r);
        // Same signal in both takes, so the cross-fade (equal power) keeps it within sqrt(2).
        assert!(l[0] >= 1004.0 && l[0] <= 1004.0 * 1.4143, "{}", l[0]);
    }
}
