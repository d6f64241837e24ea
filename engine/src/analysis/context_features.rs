//! Frame-rate features of the context that the transformer is conditioned on (ARCHITECTURE
//! §3.8): what a musician listens for before playing along. Which pitch classes sound
//! (chroma), which one sits in the bass (bass chroma), where notes start (onset strength) and
//! where the beat is (beat phase).
//!
//! Why features beside the tokens: the tokens describe a magnitude spectrum in 1024-code
//! steps; a small model trained for a few CPU-hours does not learn pitch classes from them
//! (measured: generated stems were no more in the context's key than the shuffled floor).
//! Handing it the chroma makes "play in this harmony" a mapping it can learn.
//!
//! The features are computed on the analysis floor's grid (librosa's, 22050 Hz, hop 512,
//! the same chroma and onset code the evaluation checks against librosa) and sampled at the
//! tokenizer's frames by linear interpolation, so model and evaluation read the same music.
//! Silence gives zeros everywhere, which is also what "no features" looks like to the model.

use serde::{Deserialize, Serialize};

use super::chroma::{estimate_tuning, normalize_frames, raw_chroma, N_CHROMA};
use super::onset::{onset_strength, Aggregate};
use super::rhythm::beat_track;
use super::spectrum::{mel_db, power_spectrogram, Frames, HOP};
use super::stft::Stft;
use super::ANALYSIS_RATE;

/// Highest frequency that counts as bass for the bass chroma: about F#3, above the
/// fundamentals of nearly every bass line (E1-E3) and below most chord voicings (which sit
/// from about A3 up); the harmonics of a bass note repeat its root and fifth.
pub const BASS_MAX_HZ: f64 = 180.0;
/// FFT size of the bass chroma: 8192 samples at 22050 Hz resolve 2.7 Hz, a semitone at 41 Hz
/// (E1) is 2.4 Hz wide; the 2048-point chroma cannot tell low notes apart.
pub const BASS_N_FFT: usize = 8192;

/// One group of features, in the order a model's config lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextFeature {
    /// 12 tuning-corrected chroma bins (C first), each frame scaled to a maximum of 1
    /// (0 in frames [`CHROMA_GATE_DB`] below the clip's loudest).
    Chroma,
    /// 12 chroma bins of the band below [`BASS_MAX_HZ`], scaled and gated the same way.
    BassChroma,
    /// Onset strength (mean log-mel flux) divided by the clip's maximum.
    Onset,
    /// Position between the tracked beats as (sin, cos) of 2 pi x phase; (0, 0) without beats.
    BeatPhase,
}

impl ContextFeature {
    pub const ALL: [ContextFeature; 4] = [
        ContextFeature::Chroma,
        ContextFeature::BassChroma,
        ContextFeature::Onset,
        ContextFeature::BeatPhase,
    ];

    /// Values per frame.
    pub fn dims(self) -> usize {
        match self {
            ContextFeature::Chroma | ContextFeature::BassChroma => N_CHROMA,
            ContextFeature::Onset => 1,
            ContextFeature::BeatPhase => 2,
        }
    }

    /// Whether the group describes harmony (what chords and a key replace).
    pub fn is_harmony(self) -> bool {
        matches!(self, ContextFeature::Chroma | ContextFeature::BassChroma)
    }
}

/// Values per frame of a list of feature groups.
pub fn feature_dims(features: &[ContextFeature]) -> usize {
    features.iter().map(|f| f.dims()).sum()
}

/// Features of one clip on the tokenizer's frames: `values[n * dims + d]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureFrames {
    pub features: Vec<ContextFeature>,
    pub frames: usize,
    pub dims: usize,
    pub values: Vec<f32>,
}

impl FeatureFrames {
    /// All zeros: what a model sees when the features are dropped.
    pub fn zeros(features: &[ContextFeature], frames: usize) -> Self {
        let dims = feature_dims(features);
        FeatureFrames {
            features: features.to_vec(),
            frames,
            dims,
            values: vec![0.0; frames * dims],
        }
    }

    /// Frame `n`'s values.
    pub fn frame(&self, n: usize) -> &[f32] {
        &self.values[n * self.dims..(n + 1) * self.dims]
    }

    /// Offset of `feature` inside a frame, if this set has it.
    pub fn offset(&self, feature: ContextFeature) -> Option<usize> {
        let i = self.features.iter().position(|&f| f == feature)?;
        Some(feature_dims(&self.features[..i]))
    }

    /// Frames `range` as a new set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> FeatureFrames {
        FeatureFrames {
            features: self.features.clone(),
            frames: range.len(),
            dims: self.dims,
            values: self.values[range.start * self.dims..range.end * self.dims].to_vec(),
        }
    }

    /// Overwrites `feature`'s values of every frame with `per_frame(n)` (which must have
    /// `feature.dims()` values); does nothing when the set lacks the feature.
    pub fn replace(&mut self, feature: ContextFeature, per_frame: impl Fn(usize) -> Vec<f32>) {
        let Some(offset) = self.offset(feature) else {
            return;
        };
        for n in 0..self.frames {
            let v = per_frame(n);
            debug_assert_eq!(v.len(), feature.dims());
            let start = n * self.dims + offset;
            self.values[start..start + v.len()].copy_from_slice(&v);
        }
    }
}

/// Measures `features` of mono `samples` at [`ANALYSIS_RATE`] and samples them at `frames`
/// frames of `frame_rate` per second (frame n at n / frame_rate seconds).
pub fn measure(
    samples: &[f32],
    features: &[ContextFeature],
    frame_rate: f64,
    frames: usize,
) -> FeatureFrames {
    if samples.is_empty() || frames == 0 {
        return FeatureFrames::zeros(features, frames);
    }
    measure_from(
        samples,
        &power_spectrogram(samples),
        features,
        frame_rate,
        frames,
    )
}

/// [`measure`] with the power spectrogram of `samples` ([`power_spectrogram`]) already
/// taken, for a caller that reads more from it (the generator's tuning).
pub fn measure_from(
    samples: &[f32],
    power: &Frames,
    features: &[ContextFeature],
    frame_rate: f64,
    frames: usize,
) -> FeatureFrames {
    let mut out = FeatureFrames::zeros(features, frames);
    if samples.is_empty() || frames == 0 {
        return out;
    }
    let analysis_rate = ANALYSIS_RATE as f64 / HOP as f64;
    let needs = |f: ContextFeature| features.contains(&f);
    let chroma = needs(ContextFeature::Chroma).then(|| {
        let tuning = estimate_tuning(power, ANALYSIS_RATE);
        gated_normalize(&raw_chroma(power, ANALYSIS_RATE, tuning))
    });
    let bass = needs(ContextFeature::BassChroma).then(|| bass_chroma(samples));
    let (onset, beats) = if needs(ContextFeature::Onset) || needs(ContextFeature::BeatPhase) {
        let mel = mel_db(power, ANALYSIS_RATE);
        let mean = onset_strength(&mel, Aggregate::Mean);
        let (_, beats) = beat_track(
            &onset_strength(&mel, Aggregate::Median),
            ANALYSIS_RATE,
            None,
        );
        (scaled_to_max(mean), beats)
    } else {
        (Vec::new(), Vec::new())
    };
    let beat_times: Vec<f64> = beats.iter().map(|&b| b as f64 / analysis_rate).collect();
    if let Some(c) = &chroma {
        out.replace(ContextFeature::Chroma, |n| {
            interpolate_rows(c, n as f64 / frame_rate * analysis_rate)
        });
    }
    if let Some(c) = &bass {
        let bass_rate = ANALYSIS_RATE as f64 / HOP as f64;
        out.replace(ContextFeature::BassChroma, |n| {
            interpolate_rows(c, n as f64 / frame_rate * bass_rate)
        });
    }
    out.replace(ContextFeature::Onset, |n| {
        vec![interpolate(&onset, n as f64 / frame_rate * analysis_rate) as f32]
    });
    out.replace(ContextFeature::BeatPhase, |n| {
        beat_phase(&beat_times, n as f64 / frame_rate)
    });
    out
}

/// Chroma of the band below [`BASS_MAX_HZ`] with a [`BASS_N_FFT`]-point STFT (hop 512, the
/// analysis grid), tuned like the full chroma, each frame scaled to a maximum of 1.
fn bass_chroma(samples: &[f32]) -> Frames {
    let stft = Stft::new(BASS_N_FFT, HOP);
    let (spec, frames) = stft.forward(samples);
    let bins = stft.bins();
    let max_bin = (BASS_MAX_HZ * BASS_N_FFT as f64 / ANALYSIS_RATE as f64).ceil() as usize;
    // The filterbank weights octaves around C5 (a Gaussian two octaves wide), which would
    // favour a bass note's upper harmonics over its fundamental; undo it inside the band.
    // Bins below 30 Hz (rumble, DC) are left out.
    let flat: Vec<f64> = (0..bins)
        .map(|k| {
            let hz = k as f64 * ANALYSIS_RATE as f64 / BASS_N_FFT as f64;
            if hz < 30.0 {
                return 0.0;
            }
            let octave = (hz / 27.5).log2();
            1.0 / (-0.5 * ((octave - 5.0) / 2.0).powi(2)).exp()
        })
        .collect();
    let mut power = Frames::zeros(frames, bins);
    for t in 0..frames {
        let row = power.frame_mut(t);
        for (k, p) in row.iter_mut().enumerate().take(max_bin.min(bins)) {
            *p = spec[t * bins + k].norm_sqr() as f64 * flat[k];
        }
    }
    let fb = super::chroma::chroma_filterbank(ANALYSIS_RATE, BASS_N_FFT, 0.0);
    let mut raw = Frames::zeros(frames, N_CHROMA);
    for t in 0..frames {
        let p = power.frame(t);
        for (c, o) in raw.frame_mut(t).iter_mut().enumerate() {
            *o = fb[c * bins..c * bins + max_bin.min(bins)]
                .iter()
                .zip(p)
                .map(|(w, v)| w * v)
                .sum();
        }
    }
    gated_normalize(&raw)
}

/// Frames more than this far (dB, power) below the clip's loudest chroma frame count as
/// silent: their chroma is noise scaled up by the per-frame normalisation.
pub const CHROMA_GATE_DB: f64 = 60.0;

/// Each frame scaled to a maximum of 1 ([`normalize_frames`]), frames below
/// [`CHROMA_GATE_DB`] under the loudest one set to zero.
fn gated_normalize(raw: &Frames) -> Frames {
    let peak = |t: usize| raw.frame(t).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let loudest = (0..raw.frames).map(peak).fold(0.0, f64::max);
    let floor = loudest * 10f64.powf(-CHROMA_GATE_DB / 10.0);
    let mut out = normalize_frames(raw);
    for t in 0..raw.frames {
        if peak(t) < floor || loudest <= 0.0 {
            out.frame_mut(t).fill(0.0);
        }
    }
    out
}

/// `values / max(values)`, zeros when the maximum is not positive.
fn scaled_to_max(values: Vec<f64>) -> Vec<f64> {
    let max = values.iter().cloned().fold(0.0, f64::max);
    if max > 0.0 {
        values.into_iter().map(|v| v / max).collect()
    } else {
        vec![0.0; values.len()]
    }
}

/// Linear interpolation of `values` at fractional index `x` (clamped to the ends).
fn interpolate(values: &[f64], x: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let x = x.clamp(0.0, (values.len() - 1) as f64);
    let i = x.floor() as usize;
    let j = (i + 1).min(values.len() - 1);
    let w = x - i as f64;
    values[i] * (1.0 - w) + values[j] * w
}

/// Row `x` (fractional) of `frames`, interpolated between neighbours.
fn interpolate_rows(frames: &Frames, x: f64) -> Vec<f32> {
    if frames.frames == 0 {
        return vec![0.0; frames.rows];
    }
    let x = x.clamp(0.0, (frames.frames - 1) as f64);
    let i = x.floor() as usize;
    let j = (i + 1).min(frames.frames - 1);
    let w = x - i as f64;
    frames
        .frame(i)
        .iter()
        .zip(frames.frame(j))
        .map(|(a, b)| (a * (1.0 - w) + b * w) as f32)
        .collect()
}

/// (sin, cos) of 2 pi x the position of `time` between beats; before the first and after
/// the last beat the median beat period continues the grid. Fewer than two beats: (0, 0).
pub fn beat_phase(beat_times: &[f64], time: f64) -> Vec<f32> {
    if beat_times.len() < 2 {
        return vec![0.0, 0.0];
    }
    let mut periods: Vec<f64> = beat_times.windows(2).map(|w| w[1] - w[0]).collect();
    periods.sort_by(f64::total_cmp);
    let period = periods[periods.len() / 2].max(1e-3);
    let (first, last) = (beat_times[0], beat_times[beat_times.len() - 1]);
    let phase = if time < first {
        ((time - first) / period).rem_euclid(1.0)
    } else if time >= last {
        ((time - last) / period).rem_euclid(1.0)
    } else {
        let i = beat_times.partition_point(|&b| b <= time) - 1;
        (time - beat_times[i]) / (beat_times[i + 1] - beat_times[i])
    };
    let angle = std::f64::consts::TAU * phase;
    vec![angle.sin() as f32, angle.cos() as f32]
}
