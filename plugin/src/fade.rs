//! Short equal-power fades for the switches ("Mute stem", "Stem only"): a switch that cut
//! its signal within one sample would click. The fade position moves linearly over
//! [`FADE_MS`] and the gain is sin(pi/2 x), so a signal fading out while another fades in
//! keeps its power. Allocation-free, advanced once per sample on the audio thread.

/// Length of one fade.
pub const FADE_MS: f32 = 10.0;

#[derive(Debug, Clone, Copy)]
pub struct Fade {
    /// 0 = silent, 1 = full.
    position: f32,
    step: f32,
}

impl Fade {
    /// A fade that starts settled at `on`.
    pub fn new(on: bool, sample_rate: f32) -> Self {
        let mut fade = Fade {
            position: if on { 1.0 } else { 0.0 },
            step: 0.0,
        };
        fade.set_sample_rate(sample_rate);
        fade
    }

    pub fn set_sample_rate(&mut self, sample_rate: f32) {
        self.step = 1000.0 / (FADE_MS * sample_rate.max(1.0));
    }

    /// The gain of the next sample, moving towards `on`.
    pub fn next(&mut self, on: bool) -> f32 {
        self.position = if on {
            (self.position + self.step).min(1.0)
        } else {
            (self.position - self.step).max(0.0)
        };
        self.gain()
    }

    /// The current gain, sin(pi/2 x).
    pub fn gain(&self) -> f32 {
        // Exactly 1 and 0 when settled, so a take plays bit-exact at unity gain.
        match self.position {
            p if p >= 1.0 => 1.0,
            p if p <= 0.0 => 0.0,
            p => (std::f32::consts::FRAC_PI_2 * p).sin(),
        }
    }

    /// Settled at silence and staying there.
    pub fn is_off(&self, on: bool) -> bool {
        !on && self.position == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fades_take_ten_milliseconds_with_constant_power_and_small_steps() {
        let rate = 48_000.0;
        let mut out = Fade::new(true, rate);
        let mut inn = Fade::new(false, rate);
        let samples = (FADE_MS / 1000.0 * rate) as usize;
        let mut largest_step = 0.0f32;
        let mut previous = 1.0;
        for _ in 0..samples {
            let (a, b) = (out.next(false), inn.next(true));
            assert!(
                (a * a + b * b - 1.0).abs() < 1e-3,
                "power {}",
                a * a + b * b
            );
            largest_step = largest_step.max((a - previous).abs());
            previous = a;
        }
        assert!(out.gain() < 1e-3 && inn.gain() > 0.999);
        assert!(out.is_off(false) || out.gain() < 1e-3);
        // No step larger than the steepest part of the sine over one sample.
        assert!(largest_step < 2.0 / samples as f32, "{largest_step}");
    }
}
