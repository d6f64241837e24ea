//! Distances between two sets of clips (e.g. real stems vs generated stems) on classical
//! features. These are *classical-feature* metrics: not comparable with VGGish FAD or the
//! paper's MIRDD, and named accordingly (`classical_frechet`, `classical_kad`,
//! `mirdd_classical`).

use crate::analysis::spectrum::median;
use crate::analysis::Analysis;

/// Names of the entries of [`classical_features`], in order.
pub const FEATURE_NAMES: [&str; 20] = [
    "log2_tempo",
    "onset_density",
    "onset_strength_mean",
    "onset_strength_std",
    "key_clarity",
    "rms_dbfs",
    "log2_spectral_centroid",
    "chroma_entropy",
    "chroma_c",
    "chroma_c#",
    "chroma_d",
    "chroma_d#",
    "chroma_e",
    "chroma_f",
    "chroma_f#",
    "chroma_g",
    "chroma_g#",
    "chroma_a",
    "chroma_a#",
    "chroma_b",
];

/// Additive smoothing per histogram bin before the KL divergence, so a bin empty on one side
/// gives a large but finite divergence.
pub const HISTOGRAM_SMOOTHING: f64 = 0.1;
/// A pitch class counts as used in a clip when its mean (max-normalised) chroma reaches this.
pub const PITCH_CLASS_THRESHOLD: f64 = 0.5;
/// Frames whose chroma energy is below this fraction of the clip's loudest frame get the
/// no-chord label.
pub const NO_CHORD_FLOOR: f64 = 1e-3;

/// One clip's classical feature vector (see [`FEATURE_NAMES`]): rhythm, level, brightness
/// and the mean chroma profile (normalised to sum 1).
pub fn classical_features(a: &Analysis) -> Vec<f64> {
    let n = a.onset_env.len().max(1) as f64;
    let mean = a.onset_env.iter().sum::<f64>() / n;
    let std = (a.onset_env.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let chroma = a.chroma.mean_frame();
    let total: f64 = chroma.iter().sum();
    let profile: Vec<f64> = if total > 0.0 {
        chroma.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / 12.0; 12]
    };
    let entropy = -profile
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|p| p * p.log2())
        .sum::<f64>();
    let mut f = vec![
        a.tempo_bpm.max(1.0).log2(),
        a.onset_density(),
        mean,
        std,
        a.key_clarity,
        a.rms_dbfs,
        a.spectral_centroid_hz.max(1.0).log2(),
        entropy,
    ];
    f.extend(profile);
    f
}

/// Per-feature mean and standard deviation of a reference set; features are divided by the
/// reference's spread so no unit (dB, BPM, Hz) dominates the distances.
#[derive(Debug, Clone)]
pub struct Standardiser {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardiser {
    /// Fits the reference set (a constant feature gets std 1, i.e. is only centred).
    pub fn fit(reference: &[Vec<f64>]) -> Standardiser {
        let d = reference.first().map_or(0, Vec::len);
        let n = reference.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for x in reference {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / n;
            }
        }
        let mut std = vec![0.0; d];
        for x in reference {
            for ((s, v), m) in std.iter_mut().zip(x).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let std = std
            .into_iter()
            .map(|v| if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 })
            .collect();
        Standardiser { mean, std }
    }

    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((v, m), s)| (v - m) / s)
            .collect()
    }
}

fn mean_cov(x: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let d = x[0].len();
    let n = x.len() as f64;
    let mut mean = vec![0.0; d];
    for v in x {
        for (m, a) in mean.iter_mut().zip(v) {
            *m += a / n;
        }
    }
    let mut cov = vec![0.0; d * d];
    for v in x {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (v[i] - mean[i]) * (v[j] - mean[j]) / (n - 1.0).max(1.0);
            }
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors (columns of the returned `d x d` matrix) of a symmetric
/// matrix by cyclic Jacobi rotations: exact enough for the small covariances here, with no
/// linear-algebra dependency.
fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// Fréchet distance between Gaussians fitted to two sets of vectors:
/// `|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`, with the trace of the square root taken
/// from the eigenvalues of `C1^(1/2) C2 C1^(1/2)` (symmetric, so no complex square roots).
/// Needs two vectors per set.
pub fn frechet_distance(a: &[Vec<f64>], b: &[Vec<f64>]) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 || a[0].len() != b[0].len() {
        return None;
    }
    let d = a[0].len();
    let (m1, c1) = mean_cov(a);
    let (m2, c2) = mean_cov(b);
    let (l1, v1) = symmetric_eigen(&c1, d);
    let mut sqrt_c1 = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            sqrt_c1[i * d + j] = (0..d)
                .map(|k| v1[i * d + k] * l1[k].max(0.0).sqrt() * v1[j * d + k])
                .sum();
        }
    }
    let m = matmul(&matmul(&sqrt_c1, &c2, d), &sqrt_c1, d);
    let (lm, _) = symmetric_eigen(&m, d);
    let tr_sqrt: f64 = lm.iter().map(|l| l.max(0.0).sqrt()).sum();
    let dmu: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum();
    let tr: f64 = (0..d).map(|i| c1[i * d + i] + c2[i * d + i]).sum();
    Some(dmu + tr - 2.0 * tr_sqrt)
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Median Euclidean distance between distinct vectors of a set: the kernel bandwidth of
/// [`kernel_audio_distance`], fixed from the reference set so scores of different candidate
/// sets are comparable.
pub fn median_pairwise_distance(x: &[Vec<f64>]) -> Option<f64> {
    let d: Vec<f64> = (0..x.len())
        .flat_map(|i| (i + 1..x.len()).map(move |j| (i, j)))
        .map(|(i, j)| sq_dist(&x[i], &x[j]).sqrt())
        .collect();
    median(&d)
}

/// Unbiased MMD^2 (Gretton et al. 2012) between two sets with the Gaussian kernel
/// `exp(-|x - y|^2 / (2 bandwidth^2))`: the kernel distance of KAD (Chung et al. 2025)
/// applied to classical features. Can be slightly negative for identical distributions.
pub fn kernel_audio_distance(a: &[Vec<f64>], b: &[Vec<f64>], bandwidth: f64) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 || bandwidth <= 0.0 {
        return None;
    }
    let k = |x: &[f64], y: &[f64]| (-sq_dist(x, y) / (2.0 * bandwidth * bandwidth)).exp();
    let within = |s: &[Vec<f64>]| {
        let mut t = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if i != j {
                    t += k(&s[i], &s[j]);
                }
            }
        }
        t / (s.len() * (s.len() - 1)) as f64
    };
    let mut cross = 0.0;
    for x in a {
        for y in b {
            cross += k(x, y);
        }
    }
    Some(within(a) + within(b) - 2.0 * cross / (a.len() * b.len()) as f64)
}

/// Fréchet and kernel distances of a candidate set from a reference set, on
/// [`classical_features`] standardised by the reference set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassicalDistances {
    /// [`frechet_distance`] ("classical Fréchet distance"; not FAD).
    pub classical_frechet: Option<f64>,
    /// [`kernel_audio_distance`] with the reference set's median pairwise distance as
    /// bandwidth ("classical KAD").
    pub classical_kad: Option<f64>,
    /// [`mirdd_classical`] mean KL divergence.
    pub mirdd_classical: Option<f64>,
}

impl ClassicalDistances {
    pub fn between(reference: &[Analysis], candidate: &[Analysis]) -> ClassicalDistances {
        let raw_ref: Vec<Vec<f64>> = reference.iter().map(classical_features).collect();
        let raw_cand: Vec<Vec<f64>> = candidate.iter().map(classical_features).collect();
        let st = Standardiser::fit(&raw_ref);
        let r: Vec<Vec<f64>> = raw_ref.iter().map(|x| st.apply(x)).collect();
        let c: Vec<Vec<f64>> = raw_cand.iter().map(|x| st.apply(x)).collect();
        let kad = median_pairwise_distance(&r).and_then(|bw| kernel_audio_distance(&r, &c, bw));
        let mirdd = mirdd_classical(reference, candidate);
        ClassicalDistances {
            classical_frechet: frechet_distance(&r, &c),
            classical_kad: kad,
            mirdd_classical: mirdd.map(|m| m.mean),
        }
    }
}

/// Histogram names of [`mirdd_classical`], in order.
pub const HISTOGRAMS: [&str; 5] = [
    "key",
    "unique_pitch_classes",
    "onset_density",
    "tempo",
    "chord",
];

/// Pitch classes whose mean normalised chroma reaches [`PITCH_CLASS_THRESHOLD`].
pub fn unique_pitch_classes(a: &Analysis) -> usize {
    a.chroma
        .mean_frame()
        .iter()
        .filter(|&&v| v >= PITCH_CLASS_THRESHOLD)
        .count()
}

/// Frame-wise triad labels: 0..12 major triads on C..B, 12..24 minor, 24 no chord. Each
/// frame gets the binary triad template closest in cosine to its chroma.
pub fn chord_labels(a: &Analysis) -> Vec<usize> {
    let energy: Vec<f64> = (0..a.raw_chroma.frames)
        .map(|t| a.raw_chroma.frame(t).iter().sum())
        .collect();
    let loudest = energy.iter().copied().fold(0.0, f64::max);
    (0..a.chroma.frames)
        .map(|t| {
            if loudest <= 0.0 || energy[t] < NO_CHORD_FLOOR * loudest {
                return 24;
            }
            let c = a.chroma.frame(t);
            let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
            (0..24)
                .map(|i| {
                    let third = if i < 12 { 4 } else { 3 };
                    let root = i % 12;
                    let s = c[root] + c[(root + third) % 12] + c[(root + 7) % 12];
                    (i, s / (norm * 3f64.sqrt()).max(f64::MIN_POSITIVE))
                })
                .fold(
                    (24, f64::NEG_INFINITY),
                    |b, x| if x.1 > b.1 { x } else { b },
                )
                .0
        })
        .collect()
}

fn histograms(clips: &[Analysis]) -> [Vec<f64>; 5] {
    let mut key = vec![0.0; 24];
    let mut pcs = vec![0.0; 13];
    let mut density = vec![0.0; 11];
    let mut tempo = vec![0.0; 21];
    let mut chord = vec![0.0; 25];
    for a in clips {
        key[a.key.index()] += 1.0;
        pcs[unique_pitch_classes(a)] += 1.0;
        density[(a.onset_density().floor() as usize).min(10)] += 1.0;
        tempo[(((a.tempo_bpm - 40.0) / 10.0).floor().max(0.0) as usize).min(20)] += 1.0;
        // Each clip weighs the same whatever its length.
        let labels = chord_labels(a);
        for &l in &labels {
            chord[l] += 1.0 / labels.len().max(1) as f64;
        }
    }
    [key, pcs, density, tempo, chord]
}

fn smoothed(h: &[f64]) -> Vec<f64> {
    let total: f64 = h.iter().sum::<f64>() + HISTOGRAM_SMOOTHING * h.len() as f64;
    h.iter()
        .map(|v| (v + HISTOGRAM_SMOOTHING) / total)
        .collect()
}

/// KL(p || q) in nats of two histograms after [`HISTOGRAM_SMOOTHING`].
pub fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (p, q) = (smoothed(p), smoothed(q));
    p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum()
}

/// "MIRDD-classical": KL divergences (reference || candidate) of histograms over the clips
/// of key (24), unique pitch classes (0-12), onset density (1/s bins, 10+), tempo (10 BPM
/// bins from 40, 240+) and triad labels (24 + no chord), and their mean.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MirddClassical {
    pub per_histogram: Vec<(String, f64)>,
    pub mean: f64,
}

/// [`MirddClassical`] of a candidate set against a reference set; `None` if either is empty.
pub fn mirdd_classical(reference: &[Analysis], candidate: &[Analysis]) -> Option<MirddClassical> {
    if reference.is_empty() || candidate.is_empty() {
        return None;
    }
    let (hr, hc) = (histograms(reference), histograms(candidate));
    let per_histogram: Vec<(String, f64)> = HISTOGRAMS
        .iter()
        .zip(hr.iter().zip(&hc))
        .map(|(name, (p, q))| (name.to_string(), kl_divergence(p, q)))
        .collect();
    let mean = per_histogram.iter().map(|(_, v)| v).sum::<f64>() / per_histogram.len() as f64;
    Some(MirddClassical {
        per_histogram,
        mean,
    })
}
