//! What each code does to a stem's chroma: its codeword's mean dB in the bins of each pitch
//! class, weighted by the chroma filterbank of the analysis (rows scaled to sum 1), so a
//! code's profile is directly comparable with a chroma vector. The sampler's harmony prior
//! (`sample::harmony_prior`) weighs codes by it. Decoded dB are the codewords' sum, so a
//! stem's profile is the sum of its levels' profiles (before the refinement filter and the
//! postnet, which only correct it).

use super::MagnitudeTokenizer;
use crate::analysis::chroma::{chroma_filterbank, N_CHROMA};

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
}
