//! The convolution's description, [`Taps`]: weights, bias and geometry, borrowed from a
//! layer. A file of its own so that the drivers in `conv` (which give it its methods) and the
//! kernels in `direct` (which read its fields) both depend on it and not on each other.

/// A convolution's weights and geometry, applied to an input buffer as one GEMM (im2col) or
/// one GEMM per tap.
#[derive(Clone, Copy)]
pub struct Taps<'a> {
    /// `[C_out][C_in][K]`.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
}
