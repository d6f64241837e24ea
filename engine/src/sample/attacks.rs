//! Attacks drawn together with their notes: a rule between neighbouring level-0 frames for
//! instruments whose notes sound past their attack (`SamplerSettings::hold_notes`, off in
//! every preset).
//!
//! Why: level 0 holds each frame's loudness (its gain step) and coarse shape, and at the
//! `normal` preset's 12 iterations some 40 frames of a window are drawn at once, each from
//! its own distribution, none knowing what the others drew. Generated level 0 flickers: on 8
//! held-out piano clips (two seeds each, run 4's model) consecutive frames differ by 1.55
//! gain steps on average against 0.36 in the real stems tokenized, and 2.35 frames per
//! second stand 3 steps or more above both neighbours (real: 0.04). A real note's attack is
//! followed by its body: in those real stems no frame after a rise of 6 steps is more than 2
//! steps below the attack in the next frame, or 4 in the two after.
//!
//! What it does: after an iteration has chosen the frames it keeps, they are settled in time
//! order; a drawn code that would break the rule with its decided neighbours (as the attack,
//! as a frame after an attack, or as the frame before one) is drawn again from the same
//! distribution, restricted to the codes that keep it, with the same uniform. Other frames'
//! draws, the ranking and the random stream are untouched, so stems without such a
//! conflict come out exactly as without the rule. When no code the model allows keeps it,
//! the first draw stands. It does not apply to drums, percussion and effects, whose hits
//! have no note, and needs a tokenizer with a level-0 gain (`ModelConfig::gain_steps`).
//!
//! Why it is off: it removes the flicker (on the 8 clips: 2.35 -> 0.12 spikes per second,
//! mean change 1.55 -> 1.30 steps) but not the piano's clicks (0.39 -> 0.36 per second; real
//! 0.04), which are loud staccato frames after near-silence, the model's own style, not
//! flicker (model card, Sound). On 96 clips (`stemgen eval --hold-notes true`, seeds 0 / 1)
//! coherence moved -0.045 (90% -0.102 .. +0.002) and +0.012 (-0.033 .. +0.056), tempo
//! agreement 0.31 -> 0.25 on seed 0; piano clicks 0.37 -> 0.31 and 0.49 -> 0.47 per second.

/// A frame is an attack when its gain is at least this many steps above the frame before
/// it (4.3 dB with the shipped tokenizer's 1.43 dB steps). With 6 the rule left the flicker
/// (2.35 -> 1.89 spikes per second on the clips above).
pub const ATTACK_RISE_STEPS: i32 = 3;

/// The most the 1st, 2nd and 3rd frame after an attack may lie below it, gain steps. The
/// real piano stems above break it after 0.05 attacks per second, the generated ones after
/// 2.9.
pub const NOTE_FLOOR_STEPS: [i32; 3] = [2, 4, 6];

/// The rule for one window's level 0.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttackRule {
    shapes_per_gain: u32,
    mask_id: u32,
}

impl AttackRule {
    /// `shapes_per_gain`: level-0 codes per gain step (`token = gain * shapes + shape`).
    pub(super) fn new(shapes_per_gain: usize, mask_id: u32) -> AttackRule {
        AttackRule {
            shapes_per_gain: shapes_per_gain.max(1) as u32,
            mask_id,
        }
    }

    fn gain(&self, code: u32) -> i32 {
        (code / self.shapes_per_gain) as i32
    }

    /// Whether code `code` at frame `n` of `row` (level 0 of the window, MASK where not yet
    /// decided) keeps every attack among its decided neighbours with its note. Only the
    /// conditions that involve frame `n` are checked, so a conflict elsewhere (in frames
    /// kept from an edit's previous take) never rules out every code.
    pub(super) fn allows(&self, row: &[u32], n: usize, code: u32) -> bool {
        let n = n as isize;
        let gain_at = |k: isize| -> Option<i32> {
            if k == n {
                Some(self.gain(code))
            } else if k < 0 || k as usize >= row.len() || row[k as usize] == self.mask_id {
                None
            } else {
                Some(self.gain(row[k as usize]))
            }
        };
        let last_follower = NOTE_FLOOR_STEPS.len() as isize;
        for attack in (n - last_follower)..=(n + 1) {
            let (Some(before), Some(peak)) = (gain_at(attack - 1), gain_at(attack)) else {
                continue;
            };
            if peak - before < ATTACK_RISE_STEPS {
                continue;
            }
            let involves_n = attack - 1 == n || attack == n;
            for (j, floor) in NOTE_FLOOR_STEPS.iter().enumerate() {
                let follower = attack + 1 + j as isize;
                if !(involves_n || follower == n) {
                    continue;
                }
                if gain_at(follower).is_some_and(|g| g < peak - floor) {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: u32 = 1024;

    /// Level-0 codes of shape 0 at these gain steps (16 shapes per gain); `None` = MASK.
    fn row(gains: &[Option<u32>]) -> Vec<u32> {
        gains.iter().map(|g| g.map_or(MASK, |g| g * 16)).collect()
    }

    #[test]
    fn an_attack_needs_its_note_whichever_frame_is_drawn_last() {
        let rule = AttackRule::new(16, MASK);
        // Frame 2 is an attack (10 -> 20); frame 3 is being drawn.
        let r = row(&[Some(10), Some(10), Some(20), None, None]);
        assert!(rule.allows(&r, 3, 18 * 16 + 5), "2 steps below is a note");
        assert!(!rule.allows(&r, 3, 17 * 16), "3 steps below is not");
        // Frame 2 is being drawn, its followers are decided and quiet: no attack there.
        let r = row(&[Some(10), Some(10), None, Some(11), Some(11)]);
        assert!(!rule.allows(&r, 2, 20 * 16));
        assert!(
            rule.allows(&r, 2, 12 * 16),
            "a rise of 2 steps is no attack"
        );
        assert!(rule.allows(&r, 2, 13 * 16 + 9), "an attack with its note");
        // Frame 1 is being drawn before a decided attack at 2 whose note is missing.
        let r = row(&[Some(10), None, Some(20), Some(16), None]);
        assert!(!rule.allows(&r, 1, 10 * 16));
        assert!(
            rule.allows(&r, 1, 18 * 16),
            "a frame that makes 2 no attack"
        );
    }

    #[test]
    fn the_floor_widens_over_three_frames_and_undecided_frames_bind_nothing() {
        let rule = AttackRule::new(16, MASK);
        let r = row(&[Some(0), Some(30), None, None, None, None]);
        assert!(rule.allows(&r, 3, 26 * 16) && !rule.allows(&r, 3, 25 * 16));
        assert!(rule.allows(&r, 4, 24 * 16) && !rule.allows(&r, 4, 23 * 16));
        assert!(
            rule.allows(&r, 5, 0),
            "four frames on, the note may have ended"
        );
        // The frame before the attack undecided: no attack yet.
        let r = row(&[None, Some(30), None]);
        assert!(rule.allows(&r, 2, 0));
        // A conflict not involving the frame drawn does not rule it out.
        let r = row(&[Some(0), Some(30), Some(0), None, None, None]);
        assert!(rule.allows(&r, 5, 0));
    }
}
