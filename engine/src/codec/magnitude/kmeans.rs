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
pub(super) fn search_form(codebook: &[f32], d: usize) -> Result<(usize, Vec<f32>, Tensor)> {
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
