//! Held-out quality of a tokenizer: every clip encoded and decoded, scored with the
//! distances of [`crate::analysis::distance`] (LSD, mel L1, SI-SDR).

use crate::analysis::distance::{
    compare, multi_resolution_stft_distance, multi_resolution_stft_distance_within, si_sdr,
    LSD_FLOOR_DB,
};
use crate::audio::Audio;
use crate::codec::{no_progress, Tokenizer};

/// Encodes and decodes every clip (mixed to mono at the tokenizer's rate) and returns the
/// frame-weighted means `(lsd_db, mel_l1)` over the clips.
pub fn evaluate(tokenizer: &dyn Tokenizer, clips: &[Audio]) -> anyhow::Result<(f64, f64)> {
    evaluate_levels(tokenizer, clips, tokenizer.num_levels())
}

/// [`evaluate`] decoding only the first `levels` RVQ levels.
pub fn evaluate_levels(
    tokenizer: &dyn Tokenizer,
    clips: &[Audio],
    levels: usize,
) -> anyhow::Result<(f64, f64)> {
    let sr = tokenizer.sample_rate();
    let (mut lsd, mut mel, mut weight) = (0.0, 0.0, 0.0);
    for clip in clips {
        let reference = clip.to_mono_at(sr)?;
        let tokens = tokenizer.encode(&reference, &mut no_progress())?;
        let decoded = tokenizer.decode(&tokens.truncated(levels), &mut no_progress())?;
        let (l, m) = compare(&reference.channels[0], &decoded.channels[0], sr);
        let w = reference.num_frames() as f64;
        lsd += l * w;
        mel += m * w;
        weight += w;
    }
    anyhow::ensure!(weight > 0.0, "nothing to evaluate: no audio");
    Ok((lsd / weight, mel / weight))
}

/// Held-out quality of a magnitude tokenizer at one number of levels: the full round trip
/// (tokens -> Griffin-Lim -> audio) and, separately, the error of the decoded log-magnitudes
/// themselves, so the share of the loss due to the tokens and due to phase reconstruction can
/// be told apart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelReport {
    pub levels: usize,
    pub lsd_db: f64,
    pub mel_l1: f64,
    /// LSD of the decoded magnitudes before phase reconstruction (the tokens' own error).
    pub token_lsd_db: f64,
    /// Scale-invariant SDR of the waveform; low for any magnitude codec, whose phase is
    /// re-estimated (ARCHITECTURE §6), so reported but not a quality target.
    pub si_sdr_db: f64,
}

/// [`LevelReport`] for every number of levels `1..=Q` (only `Q` with `full_grid_only`),
/// frame-weighted over `clips`.
pub fn evaluate_report(
    tokenizer: &super::MagnitudeTokenizer,
    clips: &[Audio],
    full_grid_only: bool,
) -> anyhow::Result<Vec<LevelReport>> {
    let sr = tokenizer.sample_rate();
    let floor = LSD_FLOOR_DB as f32;
    let bins = tokenizer.config().bins();
    let levels = tokenizer.num_levels();
    // Reports start at this many levels: 1, or Q alone with `full_grid_only`.
    let first = if full_grid_only { levels } else { 1 };
    let mut sums = vec![(0.0f64, 0.0f64, 0.0f64, 0.0f64); levels];
    let mut weight = 0.0;
    for clip in clips {
        let reference = clip.to_mono_at(sr)?;
        let x = &reference.channels[0];
        let tokens = tokenizer.encode(&reference, &mut no_progress())?;
        let target_db = tokenizer.analyse_db(x);
        let w = reference.num_frames() as f64;
        for (q, sum) in sums.iter_mut().enumerate().skip(first - 1) {
            let tokens = tokens.truncated(q + 1);
            let decoded_db = tokenizer.decode_db(&tokens)?;
            let frames = target_db.len() / bins;
            let token_lsd = target_db
                .chunks(bins)
                .zip(decoded_db.chunks(bins))
                .map(|(a, b)| {
                    let ms: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(&r, &e)| (r.max(floor) as f64 - e.max(floor) as f64).powi(2))
                        .sum::<f64>()
                        / bins as f64;
                    ms.sqrt()
                })
                .sum::<f64>()
                / frames.max(1) as f64;
            let decoded = tokenizer.decode(&tokens, &mut no_progress())?;
            let (l, m) = compare(x, &decoded.channels[0], sr);
            sum.0 += l * w;
            sum.1 += m * w;
            sum.2 += token_lsd * w;
            sum.3 += si_sdr(x, &decoded.channels[0]) * w;
        }
        weight += w;
    }
    anyhow::ensure!(weight > 0.0, "nothing to evaluate: no audio");
    Ok(sums
        .iter()
        .enumerate()
        .skip(first - 1)
        .map(|(q, s)| LevelReport {
            levels: q + 1,
            lsd_db: s.0 / weight,
            mel_l1: s.1 / weight,
            token_lsd_db: s.2 / weight,
            si_sdr_db: s.3 / weight,
        })
        .collect())
}

/// Range below the reference's loudest bin that [`RoundTripReport::mrstft_audible`] keeps:
/// a stem's content 80 dB under its peak is inaudible in a mix at any sane listening level.
pub const AUDIBLE_RANGE_DB: f64 = 80.0;

/// A tokenizer's round trip on one group of clips (the mixes, or one category's isolated
/// stems) with one decoder: what the decoder does to what a user hears, and what it costs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundTripReport {
    pub group: String,
    pub decoder: String,
    pub clips: usize,
    pub seconds_of_audio: f64,
    pub lsd_db: f64,
    pub mel_l1: f64,
    /// Multi-resolution STFT distance (phase-sensitive through its spectral convergence).
    pub mrstft: f64,
    /// The same with magnitudes floored [`AUDIBLE_RANGE_DB`] below the reference's peak: the
    /// audible part (see [`multi_resolution_stft_distance_within`]).
    pub mrstft_audible: f64,
    /// Decode time over audio time (encoding not counted).
    pub decode_rtf: f64,
}

/// [`RoundTripReport`] of every group and decoder, length-weighted over the group's clips
/// (mixed to mono at the tokenizer's rate). Clips are encoded once, by the first decoder's
/// tokenizer: the decoders must share one token definition (a tokenizer with other decoder
/// settings), which is what makes them comparable.
pub fn evaluate_round_trip(
    decoders: &[(String, &dyn Tokenizer)],
    groups: &[(String, Vec<Audio>)],
) -> anyhow::Result<Vec<RoundTripReport>> {
    let Some((_, encoder)) = decoders.first() else {
        anyhow::bail!("no decoder to evaluate");
    };
    let sr = encoder.sample_rate();
    let mut reports = Vec::new();
    for (name, clips) in groups {
        // Per decoder: lsd, mel, mrstft, audible mrstft, decode seconds.
        let mut sums = vec![[0.0f64; 5]; decoders.len()];
        let mut weight = 0.0;
        for clip in clips {
            let reference = clip.to_mono_at(sr)?;
            let x = &reference.channels[0];
            let tokens = encoder.encode(&reference, &mut no_progress())?;
            let w = x.len() as f64;
            for ((_, decoder), sum) in decoders.iter().zip(&mut sums) {
                let t = std::time::Instant::now();
                let decoded = decoder.decode(&tokens, &mut no_progress())?;
                sum[4] += t.elapsed().as_secs_f64();
                let y = &decoded.channels[0];
                let (l, m) = compare(x, y, sr);
                sum[0] += l * w;
                sum[1] += m * w;
                sum[2] += multi_resolution_stft_distance(x, y) * w;
                sum[3] += multi_resolution_stft_distance_within(x, y, AUDIBLE_RANGE_DB) * w;
            }
            weight += w;
        }
        anyhow::ensure!(weight > 0.0, "{name}: nothing to evaluate: no audio");
        let seconds = weight / sr as f64;
        for ((label, _), sum) in decoders.iter().zip(&sums) {
            reports.push(RoundTripReport {
                group: name.clone(),
                decoder: label.clone(),
                clips: clips.len(),
                seconds_of_audio: seconds,
                lsd_db: sum[0] / weight,
                mel_l1: sum[1] / weight,
                mrstft: sum[2] / weight,
                mrstft_audible: sum[3] / weight,
                decode_rtf: sum[4] / seconds,
            });
        }
    }
    Ok(reports)
}
