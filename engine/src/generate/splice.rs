//! Region edits in audio: outside the edited region the new take is the previous take's own
//! audio, sample for sample; at the region's edges the two cross-fade over
//! [`EDIT_CROSSFADE_S`] with an equal-power curve, so the seams neither click nor dip.
//!
//! Why not the re-decoded tokens: the tokens outside the region are kept exactly, but decoding
//! them again (phase reconstruction over the whole take) gives audio that differs from what the
//! producer already heard and placed; a region edit must change only the region.

use std::ops::Range;

use crate::audio::Audio;

/// Length of each seam's cross-fade.
pub const EDIT_CROSSFADE_S: f64 = 0.02;

/// Replaces `new` outside `region` (seconds) by `previous`, cross-fading at the edges.
/// Both have the same rate, channels and length (the caller shapes `previous`).
pub fn splice_region(previous: &Audio, new: &mut Audio, region: &Range<f64>) {
    let rate = new.sample_rate as f64;
    let len = new.num_frames();
    let half = (EDIT_CROSSFADE_S * rate / 2.0).round() as isize;
    let at = |s: f64| (s * rate).round() as isize;
    let (a, b) = (at(region.start), at(region.end));
    // Weight of the new take at frame i: 0 outside, 1 inside, equal-power ramps at the edges.
    let weight = |i: isize| -> f32 {
        let ramp = |x: isize, edge: isize| -> f32 {
            let t = ((x - (edge - half)) as f32 / (2 * half).max(1) as f32).clamp(0.0, 1.0);
            (std::f32::consts::FRAC_PI_2 * t).sin()
        };
        if i < a - half || i >= b + half {
            0.0
        } else if i < a + half {
            ramp(i, a)
        } else if i < b - half {
            1.0
        } else {
            ramp(b - (i - b), b)
        }
    };
    for (out, prev) in new.channels.iter_mut().zip(&previous.channels) {
        for (i, (o, &p)) in out.iter_mut().zip(prev.iter()).enumerate().take(len) {
            let w = weight(i as isize);
            if w == 0.0 {
                *o = p;
            } else if w < 1.0 {
                let keep = (1.0 - w * w).max(0.0).sqrt();
                *o = *o * w + p * keep;
            }
        }
    }
}
