//! The learned part of the magnitude decoder: per frequency bin, a linear filter over the
//! decoded log-magnitudes of neighbouring frames and bins and over the coarser partial
//! decodes, fitted by least squares on training songs with the tokens frozen.
//!
//! Codewords are chosen frame by frame, so a steady note is rebuilt from a different mix of
//! codewords in every frame; a filter across frames averages that quantisation noise away
//! where the music is steady, and the partial decodes let it weigh each level by how much
//! it can be trusted in that bin. It is the smallest decoder trained on frozen tokens that
//! ARCHITECTURE §4 asks for, and it fits in closed form in seconds.

use anyhow::{ensure, Result};
use rayon::prelude::*;

/// The filter's inputs around one bin; `radius` frames each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub radius: usize,
    pub levels: usize,
}

impl Layout {
    /// Temporal taps, two spectral neighbours, the `levels - 1` partial decodes, a bias.
    pub fn features(&self) -> usize {
        (2 * self.radius + 1) + 2 + (self.levels - 1) + 1
    }
}

/// Decoded log-magnitudes of one clip: the full decode and the partial decodes with
/// `1..levels` levels, each `[frames][bins]`, floored.
pub struct Decodes<'a> {
    pub full: &'a [f32],
    pub partial: &'a [Vec<f32>],
    pub frames: usize,
    pub bins: usize,
}

impl Decodes<'_> {
    fn at(&self, v: &[f32], t: isize, k: isize) -> f32 {
        let t = t.clamp(0, self.frames as isize - 1) as usize;
        let k = k.clamp(0, self.bins as isize - 1) as usize;
        v[t * self.bins + k]
    }

    /// The features of bin `k` at frame `t` into `out` (`layout.features()` long).
    fn features(&self, layout: Layout, t: usize, k: usize, out: &mut [f32]) {
        let (t, k, r) = (t as isize, k as isize, layout.radius as isize);
        let mut i = 0;
        for o in -r..=r {
            out[i] = self.at(self.full, t + o, k);
            i += 1;
        }
        out[i] = self.at(self.full, t, k - 1);
        out[i + 1] = self.at(self.full, t, k + 1);
        i += 2;
        for p in self.partial {
            out[i] = self.at(p, t, k);
            i += 1;
        }
        out[i] = 1.0;
    }
}

/// Normal equations per bin, summed over training clips.
pub struct Fit {
    layout: Layout,
    bins: usize,
    /// Per bin: `A = sum x x^T` (`nf x nf`) then `b = sum x y` (`nf`).
    sums: Vec<Vec<f64>>,
}

impl Fit {
    pub fn new(layout: Layout, bins: usize) -> Self {
        let nf = layout.features();
        Fit {
            layout,
            bins,
            sums: vec![vec![0.0; nf * nf + nf]; bins],
        }
    }

    /// Adds one clip: its decodes and the true log-magnitudes `[frames][bins]`.
    pub fn add(&mut self, decodes: &Decodes, truth: &[f32]) {
        let (layout, nf) = (self.layout, self.layout.features());
        self.sums.par_iter_mut().enumerate().for_each(|(k, s)| {
            let mut x = vec![0.0f32; nf];
            let (a, b) = s.split_at_mut(nf * nf);
            for t in 0..decodes.frames {
                decodes.features(layout, t, k, &mut x);
                let y = truth[t * decodes.bins + k] as f64;
                for i in 0..nf {
                    let xi = x[i] as f64;
                    b[i] += xi * y;
                    for j in 0..nf {
                        a[i * nf + j] += xi * x[j] as f64;
                    }
                }
            }
        });
    }

    /// Solves every bin's least-squares problem (with a tiny ridge for bins that never vary):
    /// weights `[bins][features]`.
    pub fn solve(&self) -> Result<Vec<f32>> {
        let nf = self.layout.features();
        let mut weights = Vec::with_capacity(self.bins * nf);
        for s in &self.sums {
            let (a, b) = s.split_at(nf * nf);
            let mut m = a.to_vec();
            let mut r = b.to_vec();
            let mean_diag = (0..nf).map(|i| m[i * nf + i]).sum::<f64>() / nf as f64;
            for i in 0..nf {
                m[i * nf + i] += 1e-9 * mean_diag + 1e-12;
            }
            let w = solve_dense(&mut m, &mut r, nf)?;
            weights.extend(w.iter().map(|&v| v as f32));
        }
        Ok(weights)
    }
}

/// Gaussian elimination with partial pivoting on `m` (`n x n`, row-major) and `r`.
fn solve_dense(m: &mut [f64], r: &mut [f64], n: usize) -> Result<Vec<f64>> {
    for i in 0..n {
        let p = (i..n)
            .max_by(|&x, &y| m[x * n + i].abs().total_cmp(&m[y * n + i].abs()))
            .unwrap_or(i);
        ensure!(m[p * n + i].abs() > 0.0, "singular refinement system");
        if p != i {
            for j in 0..n {
                m.swap(i * n + j, p * n + j);
            }
            r.swap(i, p);
        }
        for j in i + 1..n {
            let f = m[j * n + i] / m[i * n + i];
            for l in i..n {
                m[j * n + l] -= f * m[i * n + l];
            }
            r[j] -= f * r[i];
        }
    }
    let mut w = vec![0.0f64; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|l| m[i * n + l] * w[l]).sum();
        w[i] = (r[i] - s) / m[i * n + i];
    }
    ensure!(
        w.iter().all(|v| v.is_finite()),
        "refinement weights are not finite"
    );
    Ok(w)
}

/// Applies fitted `weights` (`[bins][features]`) to a clip's decodes; the result is floored at
/// `floor_db`.
pub fn apply(layout: Layout, weights: &[f32], decodes: &Decodes, floor_db: f32) -> Vec<f32> {
    let (nf, bins) = (layout.features(), decodes.bins);
    let mut out = vec![0.0f32; decodes.frames * bins];
    out.par_chunks_mut(bins).enumerate().for_each(|(t, row)| {
        let mut x = vec![0.0f32; nf];
        for (k, o) in row.iter_mut().enumerate() {
            decodes.features(layout, t, k, &mut x);
            let w = &weights[k * nf..(k + 1) * nf];
            let y: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
            *o = y.max(floor_db);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_linear_filter() {
        // Truth = 0.5 * full(t) + 0.25 * full(t-1) + 0.25 * full(t+1) - 3 on random decodes.
        let (frames, bins) = (200, 6);
        let layout = Layout {
            radius: 1,
            levels: 2,
        };
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 40.0 - 60.0
        };
        let full: Vec<f32> = (0..frames * bins).map(|_| rnd()).collect();
        let partial = vec![(0..frames * bins).map(|_| rnd()).collect::<Vec<f32>>()];
        let at = |t: isize, k: usize| full[t.clamp(0, frames as isize - 1) as usize * bins + k];
        let truth: Vec<f32> = (0..frames * bins)
            .map(|i| {
                let (t, k) = ((i / bins) as isize, i % bins);
                0.5 * at(t, k) + 0.25 * at(t - 1, k) + 0.25 * at(t + 1, k) - 3.0
            })
            .collect();
        let d = Decodes {
            full: &full,
            partial: &partial,
            frames,
            bins,
        };
        let mut fit = Fit::new(layout, bins);
        fit.add(&d, &truth);
        let w = fit.solve().unwrap();
        let nf = layout.features();
        // Features: t-1, t, t+1, k-1, k+1, partial, bias.
        let want = [0.25, 0.5, 0.25, 0.0, 0.0, 0.0, -3.0];
        // The edge bins' clamped spectral neighbours duplicate the centre feature, so only the
        // inner bins have unique weights; the outputs are checked on every bin below.
        for k in 1..bins - 1 {
            // The bias trades off against the weights of features near -40 dB, so it is
            // checked through the outputs only.
            for (got, want) in w[k * nf..(k + 1) * nf - 1].iter().zip(want) {
                // f32 features of -60 dB and the tiny ridge leave about 1e-3 of slack.
                assert!((got - want).abs() < 1e-2, "bin {k}: {got} vs {want}");
            }
        }
        let out = apply(layout, &w, &d, -100.0);
        let err = out
            .iter()
            .zip(&truth)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.05, "max error {err} dB");
    }
}
