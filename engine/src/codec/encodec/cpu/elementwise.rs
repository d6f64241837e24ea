//! Elementwise and dense kernels on plain slices: ELU (with a branch-free `exp` for `x <= 0`
//! that vectorises), `y += a x`, and the LSTM's `x W^T + b`. Kept apart from the
//! convolutions, which call them per tile, because the codec's stages and its LSTM use them
//! on their own too. The whole-signal versions (`elu`, `add_assign`) live with `Signal` in
//! `buffers`, so these kernels know nothing of signals or pools.

use super::parallelism;

/// `x @ w^T + bias` for row-major `x` `[rows][cols]` and `w` `[outs][cols]`: `[rows][outs]`.
pub fn linear(x: &[f32], rows: usize, cols: usize, w: &[f32], bias: &[f32]) -> Vec<f32> {
    let outs = bias.len();
    let mut y: Vec<f32> = (0..rows).flat_map(|_| bias.iter().copied()).collect();
    unsafe {
        gemm::gemm(
            rows,
            outs,
            cols,
            y.as_mut_ptr(),
            1,
            outs as isize,
            true,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(rows * cols * outs),
        );
    }
    y
}

/// `exp(x)` for `x <= 0`, branch-free so that it vectorises: 2^n * p(r) with
/// `r = x - n ln2` in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative error < 2e-7,
/// far inside the codec's 1e-4 parity budget). Below -87 it returns 0 like `f32::exp` would
/// underflow to.
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds `x log2(e)` to an integer n held in the low mantissa bits,
    // so n and 2^n come from bit arithmetic: a float-to-int cast (`as i32`, which saturates)
    // would keep the whole loop scalar.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

#[inline(always)]
pub(super) fn elu_scalar(v: f32) -> f32 {
    let neg = exp_neg(v.min(0.0)) - 1.0;
    if v > 0.0 {
        v
    } else {
        neg
    }
}

#[inline(always)]
fn elu_into_generic(src: &[f32], dst: &mut [f32]) {
    for (o, v) in dst.iter_mut().zip(src) {
        *o = elu_scalar(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn elu_into_avx2(src: &[f32], dst: &mut [f32]) {
    elu_into_generic(src, dst)
}

/// `dst = elu(src)`, with AVX2 when the CPU has it (the build targets baseline x86-64).
pub fn elu_into(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // Safety: the features were just detected.
        return unsafe { elu_into_avx2(src, dst) };
    }
    elu_into_generic(src, dst)
}

#[inline(always)]
fn axpy_generic(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_generic(a, x, y)
}

/// `y += a x`, with AVX2 when the CPU has it.
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // Safety: the feature was just detected.
        return unsafe { axpy_avx2(a, x, y) };
    }
    axpy_generic(a, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_matches_exp_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max((exp_neg(x) as f64 - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp_neg(-1000.0) < 2e-38 && exp_neg(f32::NEG_INFINITY) < 2e-38);
        assert_eq!(exp_neg(0.0), 1.0);
    }
}
