//! Channel mixing, levels and loudness normalisation.

/// Below this RMS level a clip counts as silence (quieter than any musical stem at sane gain).
pub const SILENCE_DBFS: f32 = -60.0;

const MIN_DB: f32 = -200.0;

fn to_db(x: f64) -> f32 {
    if x <= 0.0 {
        MIN_DB
    } else {
        (20.0 * x.log10()) as f32
    }
}

/// RMS level over all channels in dBFS (a full-scale sine reads -3 dBFS).
pub fn rms_dbfs(channels: &[Vec<f32>]) -> f32 {
    let (sum, n) = channels
        .iter()
        .flatten()
        .fold((0.0f64, 0usize), |(s, n), &x| {
            (s + (x as f64) * (x as f64), n + 1)
        });
    if n == 0 {
        return MIN_DB;
    }
    to_db((sum / n as f64).sqrt())
}

/// Sample peak over all channels in dBFS.
pub fn peak_dbfs(channels: &[Vec<f32>]) -> f32 {
    to_db(
        channels
            .iter()
            .flatten()
            .fold(0.0f32, |m, x| m.max(x.abs())) as f64,
    )
}

fn apply_gain_db(channels: &mut [Vec<f32>], gain_db: f32) {
    let g = 10f32.powf(gain_db / 20.0);
    channels.iter_mut().flatten().for_each(|x| *x *= g);
}

/// Scales to the target RMS level, but never so far that the peak exceeds `max_peak_dbfs`.
/// Silence is left untouched (its gain would be unbounded). Returns the gain applied in dB.
pub fn normalize_rms(channels: &mut [Vec<f32>], target_dbfs: f32, max_peak_dbfs: f32) -> f32 {
    let rms = rms_dbfs(channels);
    if rms <= SILENCE_DBFS {
        return 0.0;
    }
    let gain = (target_dbfs - rms).min(max_peak_dbfs - peak_dbfs(channels));
    apply_gain_db(channels, gain);
    gain
}

/// Scales so the sample peak sits at `target_dbfs`. Silence is left untouched.
pub fn normalize_peak(channels: &mut [Vec<f32>], target_dbfs: f32) -> f32 {
    let peak = peak_dbfs(channels);
    if peak <= SILENCE_DBFS {
        return 0.0;
    }
    let gain = target_dbfs - peak;
    apply_gain_db(channels, gain);
    gain
}

/// Oversampling of the true-peak meter (ITU-R BS.1770-4 asks for at least 4x at 48 kHz).
const TRUE_PEAK_OVERSAMPLING: usize = 4;
/// Half-length of the interpolation filter, input samples on each side.
const TRUE_PEAK_HALF_TAPS: usize = 16;

/// True peak over all channels in dBFS: the sample peak of the signal 4x oversampled by a
/// Hann-windowed sinc, so inter-sample peaks that a DAC or a lossy encoder would reconstruct
/// (and clip) count. Never below the sample peak; reads at most ~0.1 dB high near a quarter of
/// the rate, which errs on the safe side for a ceiling.
pub fn true_peak_dbfs(channels: &[Vec<f32>]) -> f32 {
    let os = TRUE_PEAK_OVERSAMPLING;
    let half = TRUE_PEAK_HALF_TAPS as isize;
    // Filter of each fractional phase p/os: taps for input offsets -half+1..=half.
    let phases: Vec<Vec<f32>> = (1..os)
        .map(|p| {
            let frac = p as f64 / os as f64;
            let taps: Vec<f64> = (-half + 1..=half)
                .map(|k| {
                    let x = k as f64 - frac;
                    let sinc = if x.abs() < 1e-12 {
                        1.0
                    } else {
                        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                    };
                    let w = 0.5 + 0.5 * (std::f64::consts::PI * x / half as f64).cos();
                    sinc * w
                })
                .collect();
            // Unit gain at DC, so a constant reads as itself.
            let sum: f64 = taps.iter().sum();
            taps.iter().map(|&t| (t / sum) as f32).collect()
        })
        .collect();
    let mut peak = 0.0f32;
    for ch in channels {
        let n = ch.len() as isize;
        for (i, &v) in ch.iter().enumerate() {
            peak = peak.max(v.abs());
            let i = i as isize;
            for taps in &phases {
                let mut acc = 0.0f32;
                for (t, &h) in taps.iter().enumerate() {
                    let j = i + t as isize - half + 1;
                    if (0..n).contains(&j) {
                        acc += ch[j as usize] * h;
                    }
                }
                peak = peak.max(acc.abs());
            }
        }
    }
    to_db(peak as f64)
}

/// The output stage of a generated stem: one static gain, applied only when the true peak
/// exceeds `ceiling_dbfs`, that brings it to the ceiling. A static gain cannot pump or
/// distort (a limiter or clipper would), and a stem that does not reach the ceiling keeps the
/// level relation to its context that training taught. Returns the gain applied in dB (0 or
/// negative).
pub fn limit_true_peak(channels: &mut [Vec<f32>], ceiling_dbfs: f32) -> f32 {
    let peak = true_peak_dbfs(channels);
    if peak <= ceiling_dbfs {
        return 0.0;
    }
    // A hair below the ceiling, so rounding in a later conversion cannot cross it.
    let gain = ceiling_dbfs - peak - 0.01;
    apply_gain_db(channels, gain);
    gain
}

/// Down- or up-mixes planar audio to `n` channels.
///
/// To mono: the average of all channels (keeps a centred source at its level). From mono:
/// copies. Otherwise channel `i` takes source channel `i % src` (stereo to 4 repeats L/R) and
/// when reducing, each target channel averages the sources that fold onto it.
pub fn mix_channels(channels: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    let src = channels.len();
    let frames = channels.first().map_or(0, Vec::len);
    if n == src {
        return channels.to_vec();
    }
    if n > src {
        return (0..n).map(|i| channels[i % src].clone()).collect();
    }
    (0..n)
        .map(|i| {
            let sources: Vec<&Vec<f32>> = channels.iter().skip(i).step_by(n).collect();
            let scale = 1.0 / sources.len() as f32;
            (0..frames)
                .map(|f| sources.iter().map(|c| c[f]).sum::<f32>() * scale)
                .collect()
        })
        .collect()
}
