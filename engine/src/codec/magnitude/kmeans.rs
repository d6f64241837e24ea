//! Seeded k-means for the residual codebooks: random distinct data points as the initial
//! centroids, Lloyd iterations, empty clusters re-seeded with the worst-fitted points.
//! Nearest-centroid search is one matrix product per block of rows (candle's GEMM, which
//! uses every core); centroid sums are accumulated in a fixed order, so a seed gives the same
//! codebook on every run.

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rayon::prelude::*;

/// Rows handled per matrix product.
const BLOCK: usize = 2048;

/// A codebook (`k x d`) as the searches use it: `k`, each codeword's squared norm, and the
/// codebook transposed (`d x k`), so distances are `|x|^2 - 2 x.c + |c|^2` from one GEMM.
fn search_form(codebook: &[f32], d: usize) -> Result<(usize, Vec<f32>, Tensor)> {
    let k = codebook.len() / d;
    anyhow::ensure!(k > 0, "empty codebook");
    let c_norm = codebook.chunks(d).map(|c| dot(c, c)).collect();
    let ct = Tensor::from_slice(codebook, (k, d), &Device::Cpu)?
        .t()?
        .contiguous()?;
    Ok((k, c_norm, ct))
}

/// For each row of `data` (`n x d`), the index of the nearest row of `codebook` (`k x d`) and
/// the squared distance to it.
pub fn nearest(data: &[f32], d: usize, codebook: &[f32]) -> Result<Vec<(u32, f32)>> {
    let n = data.len() / d;
    let (k, c_norm, ct) = search_form(codebook, d)?;
    let mut out = Vec::with_capacity(n);
    for r0 in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - r0);
        let block = &data[r0 * d..(r0 + rows) * d];
        let x = Tensor::from_slice(block, (rows, d), &Device::Cpu)?;
        let dots: Vec<f32> = x.matmul(&ct)?.flatten_all()?.to_vec1()?;
        let part: Vec<(u32, f32)> = dots
            .par_chunks(k)
            .zip(block.par_chunks(d))
            .map(|(row, xv)| {
                let mut best = (0u32, f32::INFINITY);
                for (j, (&dp, &cn)) in row.iter().zip(&c_norm).enumerate() {
                    let v = cn - 2.0 * dp;
                    if v < best.1 {
                        best = (j as u32, v);
                    }
                }
                (best.0, (best.1 + dot(xv, xv)).max(0.0))
            })
            .collect();
        out.extend(part);
    }
    Ok(out)
}

/// Dot product with eight accumulators (vectorises without fast-math).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Trains `k` centroids of dimension `d` on `data` (`n x d`) with `iters` Lloyd iterations.
/// With fewer distinct points than `k`, the spare centroids repeat data points (never
/// chosen by [`nearest`], which prefers the lowest index on ties).
pub fn kmeans(
    data: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    rng: &mut StdRng,
) -> Result<Vec<f32>> {
    let n = data.len() / d;
    anyhow::ensure!(
        n > 0 && k > 0,
        "k-means needs data and at least one centroid"
    );
    let init: Vec<usize> = if n >= k {
        rand::seq::index::sample(rng, n, k).into_vec()
    } else {
        (0..k).map(|i| i % n).collect()
    };
    let mut centroids: Vec<f32> = init
        .iter()
        .flat_map(|&i| data[i * d..(i + 1) * d].iter().copied())
        .collect();
    for _ in 0..iters {
        let assign = nearest(data, d, &centroids)?;
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0usize; k];
        for (i, &(c, _)) in assign.iter().enumerate() {
            let c = c as usize;
            counts[c] += 1;
            for (s, &x) in sums[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&data[i * d..(i + 1) * d])
            {
                *s += x as f64;
            }
        }
        // Empty clusters take the points that are currently fitted worst.
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        let mut worst: Vec<usize> = Vec::new();
        if !empty.is_empty() && n >= k {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| assign[b].1.total_cmp(&assign[a].1).then(a.cmp(&b)));
            worst = order.into_iter().take(empty.len()).collect();
        }
        for c in 0..k {
            let dst = &mut centroids[c * d..(c + 1) * d];
            if counts[c] > 0 {
                let inv = 1.0 / counts[c] as f64;
                for (v, &s) in dst.iter_mut().zip(&sums[c * d..(c + 1) * d]) {
                    *v = (s * inv) as f32;
                }
            }
        }
        for (&c, &p) in empty.iter().zip(&worst) {
            centroids[c * d..(c + 1) * d].copy_from_slice(&data[p * d..(p + 1) * d]);
        }
    }
    Ok(centroids)
}

/// Residual VQ encoding by beam search: for each row of `data` (`n x d`), the codes (one per
/// codebook, level-major `[levels][n]`) whose summed codewords are closest to the row, keeping
/// the `beam` best partial sums after every level instead of only the nearest (`beam` 1 is
/// the greedy encoder). Wider beams code closer on average; a row can still end worse than
/// greedy when the greedy path is pruned at a middle level.
pub fn beam_encode(
    data: &[f32],
    d: usize,
    codebooks: &[&[f32]],
    beam: usize,
) -> Result<Vec<Vec<u32>>> {
    let n = data.len() / d;
    let beam = beam.max(1);
    // Per row, its live paths: (squared error, codes so far); residuals `[n][paths][d]`.
    let mut paths: Vec<Vec<(f32, Vec<u32>)>> = data
        .chunks(d)
        .map(|x| vec![(dot(x, x), Vec::new())])
        .collect();
    let mut residual: Vec<f32> = data.to_vec();
    let mut width = 1;
    for codebook in codebooks {
        let (k, c_norm, ct) = search_form(codebook, d)?;
        let next_width = beam.min(width * k);
        let mut next_residual = vec![0.0f32; n * next_width * d];
        let rows_per_block = (BLOCK / width).max(1);
        for r0 in (0..n).step_by(rows_per_block) {
            let rows = rows_per_block.min(n - r0);
            let block = &residual[r0 * width * d..(r0 + rows) * width * d];
            let x = Tensor::from_slice(block, (rows * width, d), &Device::Cpu)?;
            let dots: Vec<f32> = x.matmul(&ct)?.flatten_all()?.to_vec1()?;
            let chosen: Vec<Vec<(f32, usize, usize)>> = dots
                .par_chunks(width * k)
                .zip(&paths[r0..r0 + rows])
                .map(|(row_dots, live)| {
                    // (error, path, code) of every extension, best `next_width` kept.
                    let mut best: Vec<(f32, usize, usize)> = Vec::with_capacity(next_width + 1);
                    for (p, (err, _)) in live.iter().enumerate() {
                        for (j, (&dp, &cn)) in
                            row_dots[p * k..(p + 1) * k].iter().zip(&c_norm).enumerate()
                        {
                            let e = err - 2.0 * dp + cn;
                            if best.len() < next_width || e < best[best.len() - 1].0 {
                                let at = best.partition_point(|b| b.0 <= e);
                                best.insert(at, (e, p, j));
                                best.truncate(next_width);
                            }
                        }
                    }
                    best
                })
                .collect();
            for (i, picks) in chosen.into_iter().enumerate() {
                let row = r0 + i;
                let live = std::mem::take(&mut paths[row]);
                let mut next = Vec::with_capacity(picks.len());
                for (slot, &(e, p, j)) in picks.iter().enumerate() {
                    let src = &residual[(row * width + p) * d..(row * width + p + 1) * d];
                    let cw = &codebook[j * d..(j + 1) * d];
                    let dst = &mut next_residual
                        [(row * next_width + slot) * d..(row * next_width + slot + 1) * d];
                    for ((o, &r), &c) in dst.iter_mut().zip(src).zip(cw) {
                        *o = r - c;
                    }
                    let mut codes = live[p].1.clone();
                    codes.push(j as u32);
                    next.push((e.max(0.0), codes));
                }
                paths[row] = next;
            }
        }
        residual = next_residual;
        width = next_width;
    }
    let levels = codebooks.len();
    let mut out = vec![vec![0u32; n]; levels];
    for (row, live) in paths.iter().enumerate() {
        for (q, &c) in live[0].1.iter().enumerate() {
            out[q][row] = c;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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
