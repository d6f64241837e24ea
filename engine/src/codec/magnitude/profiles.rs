//! What each code does to a stem's sound (`codec::CodeProfiles`), read off the codewords:
//! - its chroma: the codeword's mean dB in the bins of each pitch class, weighted by the
//!   chroma filterbank of the analysis (rows scaled to sum 1), so a code's profile is
//!   directly comparable with a chroma vector. Decoded dB are the codewords' sum, so a
//!   stem's profile is the sum of its levels' profiles (before the refinement filter and the
//!   postnet, which only correct it);
//! - a level-0 code's brightness: its shape's power share above `BRIGHTNESS_EDGE_HZ`. The
//!   level-0 shapes are a stem's coarse spectral envelope (16 in the shipped tokenizer, one of
//!   them a bass's: 0.7% of its power above 1 kHz, the others 8-41%).
//!
//! The sampler's harmony prior (`sample::harmony_prior`) weighs codes by both.

use super::MagnitudeTokenizer;
use crate::analysis::chroma::{chroma_filterbank, N_CHROMA};
use crate::codec::BRIGHTNESS_EDGE_HZ;

impl MagnitudeTokenizer {
    /// `[levels][codes x 12]`: level 0's codes by their shape (the gain adds the same dB to
    /// every bin), the other levels by their codeword.
    pub(super) fn compute_pitch_class_profiles(&self) -> Vec<Vec<f32>> {
        let c = self.config();
        let bins = c.bins();
        let mut bank = chroma_filterbank(c.sample_rate, c.n_fft, 0.0);
        for row in bank.chunks_mut(bins) {
            let sum: f64 = row.iter().sum();
            row.iter_mut()
                .for_each(|w| *w /= sum.max(f64::MIN_POSITIVE));
        }
        // Codewords live in the emphasised space; the profile is of plain dB.
        let weights = c.bin_weights();
        let profile = |codeword: &[f32]| -> [f32; N_CHROMA] {
            let mut out = [0.0f32; N_CHROMA];
            for (o, row) in out.iter_mut().zip(bank.chunks(bins)) {
                let sum: f64 = row
                    .iter()
                    .zip(codeword)
                    .zip(&weights)
                    .map(|((b, &v), &w)| b * (v / w) as f64)
                    .sum();
                *o = sum as f32;
            }
            out
        };
        let shapes = c.level0_shapes();
        (0..c.levels)
            .map(|q| {
                let book = &self.codebooks()[q];
                let rows: Vec<[f32; N_CHROMA]> = book.chunks(bins).map(profile).collect();
                let codes = if q == 0 { c.codebook_size } else { rows.len() };
                (0..codes)
                    .flat_map(|code| rows[if q == 0 { code % shapes } else { code }])
                    .collect()
            })
            .collect()
    }
}

impl MagnitudeTokenizer {
    /// Per level-0 code (`gain x shapes + shape`): dB of its shape's power share above
    /// [`BRIGHTNESS_EDGE_HZ`] over the dullest shape's. The gain adds the same dB to every
    /// bin, so it does not change the share.
    pub(super) fn compute_level0_brightness_db(&self) -> Vec<f32> {
        let c = self.config();
        let bins = c.bins();
        let weights = c.bin_weights();
        let hz_per_bin = c.sample_rate as f64 / c.n_fft as f64;
        let shares: Vec<f64> = self.codebooks()[0]
            .chunks(bins)
            .map(|codeword| {
                let (mut above, mut all) = (0.0f64, 0.0f64);
                for (k, (&v, &w)) in codeword.iter().zip(&weights).enumerate() {
                    let power = 10f64.powf((v / w) as f64 / 10.0);
                    all += power;
                    if k as f64 * hz_per_bin > BRIGHTNESS_EDGE_HZ {
                        above += power;
                    }
                }
                (above / all.max(f64::MIN_POSITIVE)).max(1e-12)
            })
            .collect();
        let dullest = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let shapes = shares.len();
        (0..c.codebook_size)
            .map(|code| (10.0 * (shares[code % shapes] / dullest).log10()) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MagnitudeConfig, MagnitudeTokenizer};

    #[test]
    fn a_codeword_loud_around_a_440_hz_partial_has_its_profile_peak_at_a() {
        let config = MagnitudeConfig {
            levels: 2,
            codebook_size: 128,
            gain_bits: 6,
            ..MagnitudeConfig::default()
        };
        let bins = config.bins();
        let shapes = config.level0_shapes();
        let mut level0 = vec![0.0f32; shapes * bins];
        level0[bins..2 * bins].fill(-20.0); // shape 1: 20 dB quieter everywhere
        let mut level1 = vec![0.0f32; config.codebook_size * bins];
        // Code 3: +12 dB on the bins of 440 Hz and 880 Hz (15.6 Hz per bin).
        for hz in [440.0, 880.0] {
            let k = (hz * config.n_fft as f64 / config.sample_rate as f64).round() as usize;
            level1[3 * bins + k] = 12.0;
        }
        let tok =
            MagnitudeTokenizer::from_parts(config, vec![level0, level1], None, None, None).unwrap();
        let p = tok.compute_pitch_class_profiles();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].len(), 128 * 12);
        assert_eq!(p[1].len(), 128 * 12);
        let code3 = &p[1][3 * 12..4 * 12];
        let peak = (0..12)
            .max_by(|&a, &b| code3[a].total_cmp(&code3[b]))
            .unwrap();
        assert_eq!(peak, 9, "A is pitch class 9: {code3:?}");
        assert!(code3[9] > 3.0 * code3[3].abs().max(1e-3), "{code3:?}");
        // Level 0: code = gain x shapes + shape; shape 1 is uniform, a flat profile.
        let shape1 = &p[0][(5 * shapes + 1) * 12..][..12];
        assert!(
            shape1.iter().all(|&v| (v + 20.0).abs() < 1e-3),
            "{shape1:?}"
        );
        assert!(p[1][..12].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_shape_with_more_power_above_1_khz_is_brighter_at_every_gain() {
        let config = MagnitudeConfig {
            levels: 1,
            codebook_size: 256,
            gain_bits: 6,
            ..MagnitudeConfig::default()
        };
        let bins = config.bins();
        let shapes = config.level0_shapes();
        let edge = (1000.0 * config.n_fft as f64 / config.sample_rate as f64) as usize;
        // Shape 0: -60 dB above 1 kHz; shape 1: -30 dB there; shape 2 flat; all 0 dB below.
        let mut level0 = vec![0.0f32; shapes * bins];
        for (shape, db) in [(0, -60.0), (1, -30.0)] {
            level0[shape * bins + edge + 1..(shape + 1) * bins].fill(db);
        }
        let tok = MagnitudeTokenizer::from_parts(config, vec![level0], None, None, None).unwrap();
        let b = tok.compute_level0_brightness_db();
        assert_eq!(b.len(), 256);
        assert!((b[0]).abs() < 1e-6, "shape 0 is the dullest: {}", b[0]);
        assert!(b[1] > 25.0 && b[1] < 31.0, "about 30 dB brighter: {}", b[1]);
        assert!(b[2] > b[1], "flat is brighter still");
        assert_eq!(b[5 * shapes + 1], b[1], "the gain does not change it");
    }
}
