//! Residual VQ encoding by beam search: for each frame, the codes (one per level) whose summed
//! codewords are closest to it, keeping the `beam` best partial sums after every level instead
//! of only the nearest (`beam` 1 is the greedy encoder). Wider beams code closer on average; a
//! frame can still end worse than greedy when the greedy path is pruned at a middle level.
//!
//! Why the products are taken once per frame and not once per path: a path's residual after
//! levels `0..q` is `x - sum_l C_l[code_l]`, so its products with level `q`'s codewords are
//! `x . C_q - sum_l C_l[code_l] . C_q`. One GEMM of the frames with every level's codebook,
//! and the codebooks' cross products (computed once per tokenizer, [`BeamSearch::new`]), give
//! every path's distances as sums of rows, without forming residuals. With the shipped
//! tokenizer (beam 8, four levels of 1024 codes after the first) that is 33 codebook-sized
//! GEMMs per frame down to 5: encoding, and so `data cache` and a generation's context, runs
//! several times faster. The codes are the residual search's up to float rounding (the two
//! sum the same products in a different order; see the tests).

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::kmeans::{dot, search_form};

/// Frames per GEMM (bounds the products held at once: rows x every level's codes).
const BLOCK: usize = 512;

/// One level's codebook as the search reads it.
struct Level {
    /// Codewords.
    k: usize,
    /// Squared norm of each codeword.
    norms: Vec<f32>,
    /// The codebook transposed (`d x k`), the right side of the frames' GEMM.
    transposed: Tensor,
}

/// The codebooks of a residual VQ prepared for [`BeamSearch::encode`].
pub struct BeamSearch {
    d: usize,
    levels: Vec<Level>,
    /// `cross[q][l]` for `l < q`: `C_l C_q^T` (`k_l x k_q`), level `l`'s codewords' products
    /// with level `q`'s.
    cross: Vec<Vec<Vec<f32>>>,
    /// Codewords of the largest level (the length of a path's residual products).
    kmax: usize,
}

impl BeamSearch {
    /// Prepares `codebooks` (each `k_q x d`, row-major).
    pub fn new(codebooks: &[&[f32]], d: usize) -> Result<Self> {
        ensure!(d > 0, "codewords of zero length");
        let mut levels = Vec::with_capacity(codebooks.len());
        let mut cross = Vec::with_capacity(codebooks.len());
        for (q, book) in codebooks.iter().enumerate() {
            ensure!(
                book.len().is_multiple_of(d),
                "level {q}: not a k x {d} codebook"
            );
            let (k, norms, transposed) = search_form(book, d)?;
            let with_earlier = codebooks[..q]
                .iter()
                .map(|earlier| {
                    let rows = Tensor::from_slice(earlier, (earlier.len() / d, d), &Device::Cpu)?;
                    Ok(rows.matmul(&transposed)?.flatten_all()?.to_vec1::<f32>()?)
                })
                .collect::<Result<Vec<_>>>()?;
            levels.push(Level {
                k,
                norms,
                transposed,
            });
            cross.push(with_earlier);
        }
        let kmax = levels.iter().map(|l| l.k).max().unwrap_or(0);
        Ok(BeamSearch {
            d,
            levels,
            cross,
            kmax,
        })
    }

    /// The codes of every row of `data` (`n x d`), level-major `[levels][n]`.
    pub fn encode(&self, data: &[f32], beam: usize) -> Result<Vec<Vec<u32>>> {
        let d = self.d;
        ensure!(data.len().is_multiple_of(d), "data is not n x {d}");
        let n = data.len() / d;
        let beam = beam.max(1);
        let mut out = vec![vec![0u32; n]; self.levels.len()];
        for r0 in (0..n).step_by(BLOCK) {
            let rows = BLOCK.min(n - r0);
            let block = &data[r0 * d..(r0 + rows) * d];
            let x = Tensor::from_slice(block, (rows, d), &Device::Cpu)?;
            let products = self
                .levels
                .iter()
                .map(|level| {
                    Ok(x.matmul(&level.transposed)?
                        .flatten_all()?
                        .to_vec1::<f32>()?)
                })
                .collect::<Result<Vec<_>>>()?;
            let codes: Vec<Vec<u32>> = (0..rows)
                .into_par_iter()
                .map(|i| {
                    let row: Vec<&[f32]> = self
                        .levels
                        .iter()
                        .zip(&products)
                        .map(|(level, p)| &p[i * level.k..(i + 1) * level.k])
                        .collect();
                    self.search(&block[i * d..(i + 1) * d], &row, beam)
                })
                .collect();
            for (i, frame_codes) in codes.iter().enumerate() {
                for (level, &c) in out.iter_mut().zip(frame_codes) {
                    level[r0 + i] = c;
                }
            }
        }
        Ok(out)
    }

    /// One frame `x`'s codes, given its products with every level's codewords.
    fn search(&self, x: &[f32], products: &[&[f32]], beam: usize) -> Vec<u32> {
        // Live paths: (squared error, codes so far).
        let mut paths: Vec<(f32, Vec<u32>)> = vec![(dot(x, x), Vec::new())];
        let mut residual_products = vec![0.0f32; self.kmax];
        for (q, level) in self.levels.iter().enumerate() {
            let k = level.k;
            let next_width = beam.min(paths.len() * k);
            // (error, path, code) of every extension, the best `next_width` kept in order.
            let mut best: Vec<(f32, usize, usize)> = Vec::with_capacity(next_width + 1);
            for (p, (err, codes)) in paths.iter().enumerate() {
                let rp = &mut residual_products[..k];
                rp.copy_from_slice(products[q]);
                for (cross, &c) in self.cross[q].iter().zip(codes) {
                    let c = c as usize;
                    for (v, &w) in rp.iter_mut().zip(&cross[c * k..(c + 1) * k]) {
                        *v -= w;
                    }
                }
                for (j, (&dp, &cn)) in rp.iter().zip(&level.norms).enumerate() {
                    let e = err - 2.0 * dp + cn;
                    if best.len() < next_width || e < best[best.len() - 1].0 {
                        let at = best.partition_point(|b| b.0 <= e);
                        best.insert(at, (e, p, j));
                        best.truncate(next_width);
                    }
                }
            }
            paths = best
                .iter()
                .map(|&(e, p, j)| {
                    let mut codes = paths[p].1.clone();
                    codes.push(j as u32);
                    (e.max(0.0), codes)
                })
                .collect();
        }
        paths.swap_remove(0).1
    }
}

/// [`BeamSearch::encode`] with codebooks prepared for this call only.
pub fn beam_encode(
    data: &[f32],
    d: usize,
    codebooks: &[&[f32]],
    beam: usize,
) -> Result<Vec<Vec<u32>>> {
    BeamSearch::new(codebooks, d)?.encode(data, beam)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::magnitude::kmeans::nearest;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Squared error of each row against its codes' summed codewords.
    fn errors(data: &[f32], d: usize, books: &[&[f32]], codes: &[Vec<u32>]) -> Vec<f32> {
        data.chunks(d)
            .enumerate()
            .map(|(row, x)| {
                let mut r = x.to_vec();
                for (book, level) in books.iter().zip(codes) {
                    let c = level[row] as usize;
                    for (v, &w) in r.iter_mut().zip(&book[c * d..(c + 1) * d]) {
                        *v -= w;
                    }
                }
                dot(&r, &r)
            })
            .collect()
    }

    #[test]
    fn beam_search_is_greedy_at_width_one_better_wider_and_exhaustive_at_full_width() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, d) = (300, 12);
        let data: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let books: Vec<Vec<f32>> = [8usize, 16, 16]
            .iter()
            .map(|&k| (0..k * d).map(|_| rng.gen_range(-0.7..0.7)).collect())
            .collect();
        let refs: Vec<&[f32]> = books.iter().map(|b| b.as_slice()).collect();

        // Greedy: nearest codeword of each level's residual.
        let mut residual = data.clone();
        let mut greedy = Vec::new();
        for book in &refs {
            let assign = nearest(&residual, d, book).unwrap();
            for (row, &(c, _)) in residual.chunks_mut(d).zip(&assign) {
                let c = c as usize;
                for (v, &w) in row.iter_mut().zip(&book[c * d..(c + 1) * d]) {
                    *v -= w;
                }
            }
            greedy.push(assign.iter().map(|a| a.0).collect::<Vec<u32>>());
        }
        assert_eq!(beam_encode(&data, d, &refs, 1).unwrap(), greedy);

        let greedy_err = errors(&data, d, &refs, &greedy);
        let beam = beam_encode(&data, d, &refs, 6).unwrap();
        let beam_err = errors(&data, d, &refs, &beam);
        // Not row by row: the greedy path can be pruned at a middle level and end worse.
        let (sb, sg): (f32, f32) = (beam_err.iter().sum(), greedy_err.iter().sum());
        assert!(sb < sg * 0.99, "beam {sb} vs greedy {sg}");

        // A beam as wide as every path is the exhaustive search.
        let full = beam_encode(&data, d, &refs, 8 * 16 * 16).unwrap();
        let full_err = errors(&data, d, &refs, &full);
        for (row, &e) in full_err.iter().enumerate() {
            let mut best = f32::INFINITY;
            for a in 0..8u32 {
                for b in 0..16u32 {
                    for c in 0..16u32 {
                        let codes = [vec![a], vec![b], vec![c]];
                        let one = errors(&data[row * d..(row + 1) * d], d, &refs, &codes)[0];
                        best = best.min(one);
                    }
                }
            }
            assert!(
                (e - best).abs() <= 1e-4 * best.max(1.0),
                "row {row}: {e} vs {best}"
            );
        }
    }
}
