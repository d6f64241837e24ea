//! Embedding rows gathered and summed over the levels, for the input combiner: candle's
//! `index_select` followed by a `sum` over the level axis computes an index division per value
//! and allocates both results, and its backward adds them again into zeroed copies.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Adds the rows `rows` (indices into `table`, rows of `width` values) to `out` one after
/// the other, in the order given.
pub fn add_level_sums(
    table: &[f32],
    width: usize,
    rows: impl Iterator<Item = usize>,
    out: &mut [f32],
) {
    for row in rows {
        add_row(&table[row * width..][..width], out);
    }
}

/// `out += row`, element by element.
pub fn add_row(row: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o += v;
    }
}

/// `sum_q table[q, ids[b, q, n]]` for `table` `[Q, rows, c]` and u32 `ids` `[B, Q, N]` ->
/// `[B, N, c]`, with a backward for the table (a scatter-add of the output gradient into the
/// rows each frame read). candle's `index_select` and `sum` write and then reduce a
/// `[B, Q, N, c]` tensor forward, and backward add it again into a zeroed copy.
pub struct EmbedSum;

impl CustomOp2 for EmbedSum {
    fn name(&self) -> &'static str {
        "embed-sum"
    }

    fn cpu_fwd(
        &self,
        table: &CpuStorage,
        table_l: &Layout,
        ids: &CpuStorage,
        ids_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let table = contiguous_f32(table, table_l, self.name())?;
        let (ids, (batch, levels, frames), (rows, c)) = self.check(ids, ids_l, table_l)?;
        let mut out = vec![0f32; batch * frames * c];
        out.par_chunks_mut(frames * c)
            .enumerate()
            .for_each(|(b, example)| {
                let ids = &ids[b * levels * frames..][..levels * frames];
                for (n, x) in example.chunks_exact_mut(c).enumerate() {
                    let level_rows = (0..levels).map(|q| q * rows + ids[q * frames + n] as usize);
                    add_level_sums(table, c, level_rows, x);
                }
            });
        Ok((CpuStorage::F32(out), (batch, frames, c).into()))
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (levels, rows, c) = table.dims3()?;
        let (batch, _, frames) = ids.dims3()?;
        let ids: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let grad: Vec<f32> = grad_res.flatten_all()?.to_vec1()?;
        let mut d_table = vec![0f32; levels * rows * c];
        // One task per level: each writes its own rows of the table.
        d_table
            .par_chunks_mut(rows * c)
            .enumerate()
            .for_each(|(q, level_rows)| {
                for b in 0..batch {
                    for n in 0..frames {
                        let row = ids[(b * levels + q) * frames + n] as usize;
                        let g = &grad[(b * frames + n) * c..][..c];
                        add_row(g, &mut level_rows[row * c..][..c]);
                    }
                }
            });
        let d_table = Tensor::from_vec(d_table, (levels, rows, c), table.device())?;
        Ok((Some(d_table), None))
    }
}

impl EmbedSum {
    /// The ids, (B, Q, N) and (rows, c), after checking that every id addresses a row.
    #[allow(clippy::type_complexity)]
    fn check<'a>(
        &self,
        ids: &'a CpuStorage,
        ids_l: &Layout,
        table_l: &Layout,
    ) -> Result<(&'a [u32], (usize, usize, usize), (usize, usize))> {
        let ids = match (ids, ids_l.contiguous_offsets()) {
            (CpuStorage::U32(ids), Some((start, end))) => &ids[start..end],
            _ => bail!("{}: ids must be contiguous u32", self.name()),
        };
        let (levels, rows, c) = table_l.shape().dims3()?;
        let dims = ids_l.shape().dims3()?;
        if dims.1 != levels {
            bail!(
                "{}: ids have {} levels, the table {levels}",
                self.name(),
                dims.1
            );
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= rows) {
            bail!("{}: id {bad} is past the table's {rows} rows", self.name());
        }
        Ok((ids, dims, (rows, c)))
    }
}
