//! The joint decoder: one decoding codeword per token of every level, refitted together by
//! least squares on frozen tokens, so the decoded frame `sum_q D_q[token_q]` is the best
//! additive estimate of the true log-magnitudes.
//!
//! The encoder's k-means codewords are fitted greedily, level by level, to residuals of a few
//! tens of thousands of frames: each is the mean of only ~30 training frames, and no level
//! knows what the later ones add. Fitting the decoder's codewords jointly on many more
//! frames (mixes and stems) removes both effects, and predicts the true floored dB rather
//! than the clamped shape the encoder codes. Level 0's decoder codeword belongs to the whole
//! token (gain step x shape), so it also learns how the spectrum's shape changes with level.
//! The tokens are untouched: token caches and models made with the tokenizer stay valid.
//!
//! The normal equations are block-structured: each level's diagonal block is diagonal (one
//! code per frame and level) and the off-diagonal blocks are code co-occurrence counts, so
//! block Gauss-Seidel over the levels solves them exactly with one GEMM per pair of levels.
//! A small ridge pulls codes seen in few frames towards their encoder codeword.

use crate::codec::Tokens;
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Accumulated normal equations of the joint least-squares fit.
pub struct JointFit {
    levels: usize,
    size: usize,
    bins: usize,
    /// Frames per code, `[levels][size]`.
    counts: Vec<f64>,
    /// For each level pair `p < q` (in [`pair_index`] order): frames with code `i` at level
    /// `p` and code `j` at level `q`, `[i][j]`.
    cooccurrence: Vec<Vec<u32>>,
    /// Per level, the summed target rows of each code, `[size][bins]`.
    sums: Vec<Vec<f64>>,
    /// Sum of the squared targets (for the reported fit error).
    target_energy: f64,
    frames: usize,
}

fn pair_index(levels: usize, p: usize, q: usize) -> usize {
    debug_assert!(p < q && q < levels);
    // Pairs (0,1), (0,2), .., (0,L-1), (1,2), ..
    p * levels - p * (p + 1) / 2 + (q - p - 1)
}

impl JointFit {
    /// An empty fit for `levels` levels of `size` codes each and `bins` values per frame.
    pub fn new(levels: usize, size: usize, bins: usize) -> Self {
        let pairs = levels * levels.saturating_sub(1) / 2;
        JointFit {
            levels,
            size,
            bins,
            counts: vec![0.0; levels * size],
            cooccurrence: vec![vec![0; size * size]; pairs],
            sums: vec![vec![0.0; size * bins]; levels],
            target_energy: 0.0,
            frames: 0,
        }
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Adds one clip: its tokens (every level) and its true log-magnitudes `[frames][bins]`.
    pub fn add(&mut self, tokens: &Tokens, truth: &[f32]) -> Result<()> {
        ensure!(
            tokens.levels == self.levels,
            "joint fit: tokens have {} levels, expected {}",
            tokens.levels,
            self.levels
        );
        ensure!(
            truth.len() == tokens.frames * self.bins,
            "joint fit: {} target values for {} frames x {} bins",
            truth.len(),
            tokens.frames,
            self.bins
        );
        let (size, bins) = (self.size, self.bins);
        for q in 0..self.levels {
            if let Some(&c) = tokens.level(q).iter().find(|&&c| c as usize >= size) {
                anyhow::bail!("joint fit: code {c} at level {q} is out of range (< {size})");
            }
        }
        for t in 0..tokens.frames {
            for q in 0..self.levels {
                let cq = tokens.level(q)[t] as usize;
                self.counts[q * size + cq] += 1.0;
                for p in 0..q {
                    let cp = tokens.level(p)[t] as usize;
                    self.cooccurrence[pair_index(self.levels, p, q)][cp * size + cq] += 1;
                }
            }
        }
        self.sums.par_iter_mut().enumerate().for_each(|(q, sums)| {
            for (t, &c) in tokens.level(q).iter().enumerate() {
                let row = &mut sums[c as usize * bins..(c as usize + 1) * bins];
                for (s, &y) in row.iter_mut().zip(&truth[t * bins..(t + 1) * bins]) {
                    *s += y as f64;
                }
            }
        });
        self.target_energy += truth.iter().map(|&y| (y as f64).powi(2)).sum::<f64>();
        self.frames += tokens.frames;
        Ok(())
    }

    /// Solves for the decoder codewords, `[levels][size * bins]`, starting from (and, with
    /// weight `ridge` frames, pulled towards) `init`, with `sweeps` Gauss-Seidel sweeps.
    /// Returns the codewords and the RMS fit error in dB per value before and after.
    pub fn solve(&self, init: &[Vec<f32>], ridge: f64, sweeps: usize) -> Result<Solved> {
        let (levels, size, bins) = (self.levels, self.size, self.bins);
        ensure!(self.frames > 0, "joint fit: no frames were added");
        ensure!(ridge > 0.0, "joint fit: the ridge must be positive");
        ensure!(
            init.len() == levels && init.iter().all(|w| w.len() == size * bins),
            "joint fit: the initial codewords must be {levels} x {size} x {bins}"
        );
        let dev = Device::Cpu;
        let co: Vec<Tensor> = self
            .cooccurrence
            .iter()
            .map(|c| {
                let v: Vec<f32> = c.iter().map(|&n| n as f32).collect();
                Tensor::from_vec(v, (size, size), &dev)
            })
            .collect::<candle_core::Result<_>>()?;
        let co_t: Vec<Tensor> = co
            .iter()
            .map(|c| c.t()?.contiguous())
            .collect::<candle_core::Result<_>>()?;
        // `block(q, p)`: rows are level q's codes, columns level p's.
        let block = |q: usize, p: usize| -> &Tensor {
            if p > q {
                &co[pair_index(levels, q, p)]
            } else {
                &co_t[pair_index(levels, p, q)]
            }
        };
        let mut w: Vec<Tensor> = init
            .iter()
            .map(|v| Tensor::from_slice(v, (size, bins), &dev))
            .collect::<candle_core::Result<_>>()?;
        let before = self.rms_error(&w, &block)?;
        for _ in 0..sweeps {
            for q in 0..levels {
                let mut cross = Tensor::zeros((size, bins), candle_core::DType::F32, &dev)?;
                for (p, wp) in w.iter().enumerate() {
                    if p != q {
                        cross = (cross + block(q, p).matmul(wp)?)?;
                    }
                }
                let cross: Vec<f32> = cross.flatten_all()?.to_vec1()?;
                let mut next = vec![0.0f32; size * bins];
                next.par_chunks_mut(bins).enumerate().for_each(|(c, row)| {
                    let n = self.counts[q * size + c];
                    let denom = n + ridge;
                    for (k, out) in row.iter_mut().enumerate() {
                        let i = c * bins + k;
                        let rhs = self.sums[q][i] + ridge * init[q][i] as f64 - cross[i] as f64;
                        *out = (rhs / denom) as f32;
                    }
                });
                w[q] = Tensor::from_vec(next, (size, bins), &dev)?;
            }
        }
        let after = self.rms_error(&w, &block)?;
        let codewords = w
            .iter()
            .map(|t| t.flatten_all()?.to_vec1())
            .collect::<candle_core::Result<Vec<Vec<f32>>>>()?;
        ensure!(
            codewords.iter().flatten().all(|v| v.is_finite()),
            "joint fit: the codewords are not finite"
        );
        Ok(Solved {
            codewords,
            error: FitError {
                frames: self.frames,
                rms_before_db: before,
                rms_after_db: after,
            },
        })
    }

    /// RMS of `target - sum_q W_q[token_q]` over the added frames and bins, from the normal
    /// equations: `sum y^2 - 2 sum_q <W_q, S_q> + sum_q <n_q W_q, W_q> + 2 sum_{p<q} <W_p,
    /// C_pq W_q>`.
    fn rms_error<'a>(
        &self,
        w: &[Tensor],
        block: &dyn Fn(usize, usize) -> &'a Tensor,
    ) -> Result<f64> {
        let (size, bins) = (self.size, self.bins);
        let mut total = self.target_energy;
        for (q, wq) in w.iter().enumerate() {
            let v: Vec<f32> = wq.flatten_all()?.to_vec1()?;
            for c in 0..size {
                let n = self.counts[q * size + c];
                for k in 0..bins {
                    let x = v[c * bins + k] as f64;
                    total += n * x * x - 2.0 * x * self.sums[q][c * bins + k];
                }
            }
            for (p, wp) in w.iter().enumerate().skip(q + 1) {
                let cross = (wq * block(q, p).matmul(wp)?)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                total += 2.0 * cross as f64;
            }
        }
        Ok((total.max(0.0) / (self.frames * bins) as f64).sqrt())
    }
}

/// The result of [`JointFit::solve`].
pub struct Solved {
    /// `[levels][size * bins]`.
    pub codewords: Vec<Vec<f32>>,
    pub error: FitError,
}

/// RMS error (dB per value) of the fit on its own frames, with the initial and the fitted
/// codewords.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FitError {
    pub frames: usize,
    pub rms_before_db: f64,
    pub rms_after_db: f64,
}

/// Decodes a full token grid with joint decoder codewords: `[frames][bins]`, floored.
pub fn decode(
    codewords: &[Vec<f32>],
    tokens: &Tokens,
    bins: usize,
    floor_db: f32,
) -> Result<Vec<f32>> {
    ensure!(
        tokens.levels == codewords.len(),
        "joint decoder: tokens have {} levels, the decoder {}",
        tokens.levels,
        codewords.len()
    );
    let size = codewords[0].len() / bins;
    for q in 0..tokens.levels {
        if let Some((t, &c)) = tokens
            .level(q)
            .iter()
            .enumerate()
            .find(|(_, &c)| c as usize >= size)
        {
            anyhow::bail!("code {c} at level {q}, frame {t} is out of range (< {size})");
        }
    }
    let mut out = vec![0.0f32; tokens.frames * bins];
    out.par_chunks_mut(bins).enumerate().for_each(|(t, row)| {
        for (q, cb) in codewords.iter().enumerate() {
            let c = tokens.level(q)[t] as usize;
            for (o, &v) in row.iter_mut().zip(&cb[c * bins..(c + 1) * bins]) {
                *o += v;
            }
        }
        row.iter_mut().for_each(|o| *o = o.max(floor_db));
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_indices_are_dense() {
        let mut seen = Vec::new();
        for q in 0..4 {
            for p in 0..q {
                seen.push(pair_index(4, p, q));
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn recovers_known_additive_codewords() {
        // Targets that are exactly additive in three levels of 5 codes: the fit, started from
        // zeros, must reproduce every target (the split between levels is not unique, the sum
        // is) and report a near-zero error.
        let (levels, size, bins, frames) = (3, 5, 4, 400);
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        let truth_cw: Vec<Vec<f32>> = (0..levels)
            .map(|_| {
                (0..size * bins)
                    .map(|_| (rnd() % 4000) as f32 / 100.0 - 20.0)
                    .collect()
            })
            .collect();
        let codes: Vec<u32> = (0..levels * frames).map(|_| rnd() % size as u32).collect();
        let tokens = Tokens::new(levels, frames, codes).unwrap();
        let truth = decode(&truth_cw, &tokens, bins, -1e9).unwrap();
        let mut fit = JointFit::new(levels, size, bins);
        fit.add(&tokens, &truth).unwrap();
        let init = vec![vec![0.0f32; size * bins]; levels];
        let solved = fit.solve(&init, 1e-6, 200).unwrap();
        let got = decode(&solved.codewords, &tokens, bins, -1e9).unwrap();
        let err = got
            .iter()
            .zip(&truth)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-2, "max error {err}");
        assert!(
            solved.error.rms_before_db > 5.0,
            "{}",
            solved.error.rms_before_db
        );
        assert!(
            solved.error.rms_after_db < 1e-2,
            "{}",
            solved.error.rms_after_db
        );
    }

    #[test]
    fn unseen_codes_keep_their_initial_codewords() {
        let tokens = Tokens::new(2, 3, vec![0, 0, 1, 2, 2, 2]).unwrap();
        let truth = vec![1.0f32; 3 * 2];
        let mut fit = JointFit::new(2, 4, 2);
        fit.add(&tokens, &truth).unwrap();
        let init: Vec<Vec<f32>> = (0..2).map(|q| vec![q as f32 + 5.0; 8]).collect();
        let solved = fit.solve(&init, 1.0, 20).unwrap();
        // Level 0 code 3 and level 1 codes 0, 1, 3 never occur.
        assert_eq!(&solved.codewords[0][6..8], &[5.0, 5.0]);
        assert_eq!(&solved.codewords[1][0..4], &[6.0; 4]);
        assert_eq!(&solved.codewords[1][6..8], &[6.0, 6.0]);
        assert!(fit
            .add(&Tokens::new(2, 1, vec![0, 9]).unwrap(), &[0.0, 0.0])
            .is_err());
    }
}
