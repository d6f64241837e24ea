//! The memory the kernels work in: planar signals (with their whole-signal ELU and sum) and
//! their padded views, the pool that recycles layer outputs between layers and passes, and
//! the per-thread scratch buffers and shared output pointer of the tiled kernels. Kept apart
//! from the arithmetic so that every kernel file shares one notion of a buffer and its reuse
//! rules.

use super::elementwise::{elu_into, elu_scalar};
use rayon::prelude::*;
use std::cell::RefCell;

/// Layer outputs recycled between the layers of a pass and, through [`BufferPool::retain`],
/// between passes. At 32 kHz a layer's output is tens of MB; a fresh allocation of that size
/// is mapped from the OS and page-faulted in on first write, which cost about a tenth of the
/// codec's time. Buffers come back with stale contents: every kernel that takes one writes
/// all of its elements.
#[derive(Default)]
pub struct BufferPool {
    free: RefCell<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A pool holding buffers kept from an earlier pass.
    pub fn with_buffers(free: Vec<Vec<f32>>) -> Self {
        BufferPool {
            free: RefCell::new(free),
        }
    }

    /// The largest free buffers that fit in `max_bytes` together, to keep for the next pass
    /// (a pass holds at most three large buffers at once).
    pub fn retain(self, max_bytes: usize) -> Vec<Vec<f32>> {
        let mut free = self.free.into_inner();
        free.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        let mut budget = max_bytes;
        free.into_iter()
            .take(3)
            .filter(|b| {
                let bytes = b.capacity() * std::mem::size_of::<f32>();
                let fits = bytes <= budget;
                if fits {
                    budget -= bytes;
                }
                fits
            })
            .collect()
    }

    /// A buffer of `len` elements whose contents the caller overwrites: the smallest free
    /// one that is large enough, or a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.borrow_mut();
        let fitting = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buf = match fitting {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        sized(&mut buf, len);
        buf
    }

    /// Returns a buffer for later layers.
    pub fn give(&self, buf: Vec<f32>) {
        self.free.borrow_mut().push(buf);
    }
}

/// `buf` resized to `len` elements, contents unspecified (the caller overwrites them all).
pub(super) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.truncate(len);
    buf.resize(len, 0.0);
    buf
}

/// Per-thread working buffers of the tiled kernels, kept between tiles and calls: allocating
/// them per tile made the allocator hand pages back to the OS and fault them in again.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) input: Vec<f32>,
    pub(super) columns: Vec<f32>,
    pub(super) hidden: Vec<f32>,
    pub(super) activated: Vec<f32>,
    pub(super) output: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's scratch buffers, or with fresh ones if they are in use (a
/// thread waiting inside a parallel GEMM may pick up another tile).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// A planar signal: `channels` rows of `len` samples.
#[derive(Debug, Clone)]
pub struct Signal {
    pub channels: usize,
    pub len: usize,
    pub data: Vec<f32>,
}

impl Signal {
    pub fn new(channels: usize, len: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), channels * len);
        Signal {
            channels,
            len,
            data,
        }
    }

    /// Row `c`, for building inputs and reading outputs.
    pub fn row(&self, c: usize) -> &[f32] {
        &self.data[c * self.len..(c + 1) * self.len]
    }
}

/// ELU (alpha = 1), in parallel chunks.
pub fn elu(x: &Signal, pool: &BufferPool) -> Signal {
    let mut data = pool.take(x.data.len());
    data.par_chunks_mut(1 << 14)
        .zip(x.data.par_chunks(1 << 14))
        .for_each(|(o, i)| elu_into(i, o));
    Signal::new(x.channels, x.len, data)
}

/// `a += b`, in parallel chunks.
pub fn add_assign(a: &mut Signal, b: &Signal) {
    a.data
        .par_chunks_mut(1 << 14)
        .zip(b.data.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

/// A signal seen with `left`/`right` samples of padding, reflected (as `F.pad(..., "reflect")`,
/// with transformers' zero-extension guard for short inputs) or zeros, without copying it:
/// tiled kernels gather their windows through it, so the full-rate
/// signals (82 MB at 64 channels x 10 s) are not copied once more per convolution.
#[derive(Clone, Copy)]
pub struct Padded<'a> {
    pub x: &'a Signal,
    pub left: usize,
    pub right: usize,
    pub reflect: bool,
}

impl Padded<'_> {
    /// Length with the padding.
    pub fn len(&self) -> usize {
        self.left + self.x.len + self.right
    }

    /// The sample of `x` at padded position `j`, or `None` for a zero.
    fn source(&self, j: usize) -> Option<usize> {
        let len = self.x.len as isize;
        let extra = if self.reflect && self.x.len <= self.left.max(self.right) {
            (self.left.max(self.right) - self.x.len + 1) as isize
        } else {
            0
        };
        let n = len + extra;
        let i = j as isize - self.left as isize;
        let s = if (0..n).contains(&i) {
            i
        } else if !self.reflect {
            return None;
        } else if i < 0 {
            -i
        } else {
            2 * (n - 1) - i
        };
        (0..len).contains(&s).then_some(s as usize)
    }

    /// Padded columns `start..start + len` of every row, through ELU when `elu_first`.
    pub fn gather(&self, start: usize, len: usize, elu_first: bool) -> Vec<f32> {
        let mut buf = Vec::new();
        self.gather_into(start, len, len, elu_first, &mut buf);
        buf
    }

    /// [`Padded::gather`] into `buf` as rows `row_stride >= len` apart (resized; the first
    /// `len` elements of every row written).
    pub(super) fn gather_into(
        &self,
        start: usize,
        len: usize,
        row_stride: usize,
        elu_first: bool,
        buf: &mut Vec<f32>,
    ) {
        let x = self.x;
        let buf = sized(buf, x.channels * row_stride);
        // Columns `lo..hi` map straight onto `x` (no padding involved).
        let end = start + len;
        let lo = self.left.clamp(start, end);
        let hi = (self.left + x.len).clamp(lo, end);
        for (c, dst) in buf.chunks_exact_mut(row_stride).enumerate() {
            let row = x.row(c);
            if hi > lo {
                let (src, out) = (
                    &row[lo - self.left..hi - self.left],
                    &mut dst[lo - start..hi - start],
                );
                if elu_first {
                    elu_into(src, out);
                } else {
                    out.copy_from_slice(src);
                }
            }
            for j in (start..lo).chain(hi..end) {
                let v = self.source(j).map_or(0.0, |i| row[i]);
                dst[j - start] = if elu_first { elu_scalar(v) } else { v };
            }
        }
    }
}

/// A raw output pointer shared by tiles that write disjoint columns.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    pub(super) fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Output columns per tile: small enough that a tile's input and output stay in L2 cache.
pub(super) fn tile_len(channels: usize) -> usize {
    ((1usize << 18) / channels.max(1)).clamp(256, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Padding as transformers does it: zero-extend a too-short input, pad (reflect or zeros),
    /// cut the extension off again.
    fn padded_reference(row: &[f32], left: usize, right: usize, reflect: bool) -> Vec<f32> {
        if !reflect {
            return [vec![0.0; left], row.to_vec(), vec![0.0; right]].concat();
        }
        let extra = (left.max(right) + 1).saturating_sub(row.len());
        let ext = [row.to_vec(), vec![0.0; extra]].concat();
        let n = ext.len();
        let mut out: Vec<f32> = (1..=left).rev().map(|i| ext[i]).collect();
        out.extend(&ext);
        out.extend((1..=right).map(|i| ext[n - 1 - i]));
        out.truncate(out.len() - extra);
        out
    }

    #[test]
    fn padded_view_gathers_what_padding_makes() {
        let x = Signal::new(2, 9, (0..18).map(|i| i as f32 - 6.0).collect());
        let short = Signal::new(1, 2, vec![1.5, -2.0]);
        for (x, left, right) in [(&x, 3, 4), (&x, 0, 2), (&x, 6, 0), (&short, 3, 5)] {
            for reflect in [true, false] {
                let full: Vec<Vec<f32>> = (0..x.channels)
                    .map(|c| padded_reference(x.row(c), left, right, reflect))
                    .collect();
                let view = Padded {
                    x,
                    left,
                    right,
                    reflect,
                };
                let n = full[0].len();
                assert_eq!(view.len(), n);
                for (start, len) in [(0, n), (1, 4), (n - 3, 3), (2, 1), (0, 1), (n - 1, 1)] {
                    for elu_first in [false, true] {
                        let got = view.gather(start, len, elu_first);
                        for c in 0..x.channels {
                            for j in 0..len {
                                let v = full[c][start + j];
                                let want = if elu_first { elu_scalar(v) } else { v };
                                assert_eq!(got[c * len + j], want, "l{left} r{right} {reflect}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn buffer_pool_reuses_the_smallest_fit_and_keeps_the_largest() {
        let pool = BufferPool::default();
        for len in [10, 1000, 100, 5000, 50] {
            pool.give(vec![1.0; len]);
        }
        let buf = pool.take(80);
        assert_eq!((buf.len(), buf.capacity()), (80, 100));
        let bigger = pool.take(20_000);
        assert_eq!(bigger.len(), 20_000);
        // Of the three largest free ones (5000, 1000, 50), those that fit in the budget together.
        let kept = pool.retain(4 * 5100);
        let sizes: Vec<usize> = kept.iter().map(Vec::capacity).collect();
        assert_eq!(sizes, vec![5000, 50]);
    }
}
