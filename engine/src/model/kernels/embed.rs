//! Embedding rows gathered and summed in place, for the input combiner's target channel in
//! inference: candle's `index_select` followed by a `sum` over the level axis computes an
//! index division per value and allocates both results.

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
