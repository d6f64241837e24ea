//! Residual vector quantizer: each level encodes the residual left by the previous ones.

use super::weights::Checkpoint;
use anyhow::Result;
use candle_core::{DType, Tensor};

pub struct ResidualVq {
    /// One `[K, D]` codebook per level.
    codebooks: Vec<Tensor>,
    /// `|e_k|^2` per level, `[1, K]`, precomputed for the distance expansion.
    norms: Vec<Tensor>,
}

impl ResidualVq {
    pub fn load(ck: &Checkpoint, levels: usize, size: usize, dim: usize) -> Result<Self> {
        let codebooks = (0..levels)
            .map(|q| {
                ck.get(
                    &format!("quantizer.layers.{q}.codebook.embed"),
                    &[size, dim],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = codebooks
            .iter()
            .map(|e| Ok(e.sqr()?.sum(1)?.unsqueeze(0)?))
            .collect::<Result<_>>()?;
        Ok(ResidualVq { codebooks, norms })
    }

    pub fn levels(&self) -> usize {
        self.codebooks.len()
    }

    /// `latent`: `[T, D]` -> codes `[levels][T]` (nearest code by Euclidean distance).
    pub fn encode(&self, latent: &Tensor, levels: usize) -> Result<Vec<Vec<u32>>> {
        let mut residual = latent.clone();
        let mut codes = Vec::with_capacity(levels);
        for (book, norm) in self.codebooks.iter().zip(&self.norms).take(levels) {
            // |x - e|^2 = |x|^2 - 2 x.e + |e|^2, summed in the reference's order so that
            // rounding (and so the winner of a near tie) matches it.
            let x2 = residual.sqr()?.sum_keepdim(1)?;
            let dist = x2
                .broadcast_sub(&(residual.matmul(&book.t()?)? * 2.0)?)?
                .broadcast_add(norm)?;
            let ids = dist.argmin(1)?;
            residual = (residual - book.embedding(&ids)?)?;
            codes.push(ids.to_dtype(DType::U32)?.to_vec1()?);
        }
        Ok(codes)
    }

    /// Codes `[levels][T]` -> latent `[T, D]` (sum of the chosen code vectors).
    pub fn decode(&self, codes: &[Vec<u32>]) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for (book, ids) in self.codebooks.iter().zip(codes) {
            let ids = Tensor::new(ids.as_slice(), book.device())?;
            let v = book.embedding(&ids)?;
            sum = Some(match sum {
                Some(s) => (s + v)?,
                None => v,
            });
        }
        sum.ok_or_else(|| anyhow::anyhow!("no token levels to decode"))
    }
}
