//! A vectorised `exp` for the softmaxes of inference (attention rows, the sampler's
//! per-frame distributions over the codebook). libm's scalar `expf` was about a tenth of a
//! guided iteration's time; this one runs 4-8 lanes at a time and is accurate to a few ulp
//! (relative error below 3e-7 on the range that matters, [-87, 88]).

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that n * ln 2 is subtracted without rounding error for |n| <= 128.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer
/// (a branch-free round that vectorises on plain SSE2).
const ROUND: f32 = 12_582_912.0;

/// e^x for x clamped to [-87.3, 88.3] (below: a tiny positive number instead of 0, which a
/// softmax cannot tell apart).
#[inline(always)]
fn exp_one(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the shifted value's bits (ROUND and `shifted` share their
    // exponent and its unit is 1): `n as i32` saturates, which does not vectorise.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO; // |r| <= ln2 / 2
                                         // Taylor series of e^r to degree 7 (truncation error < 2e-8 on |r| <= 0.347).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits((n_int.wrapping_add(127) << 23) as u32)
}

#[inline(always)]
fn exp_in_place_body(xs: &mut [f32], shift: f32, scale: f32) -> f32 {
    // Eight partial sums so the reduction vectorises too; a 16-wide block adds its two halves
    // in turn, so the sums (and so every softmax) are the same at either vector width.
    let mut sums = [0.0f32; 8];
    let mut blocks = xs.chunks_exact_mut(16);
    for block in &mut blocks {
        for x in block.iter_mut() {
            *x = exp_one((*x - shift) * scale);
        }
        for half in block.chunks_exact(8) {
            for (s, x) in sums.iter_mut().zip(half) {
                *s += *x;
            }
        }
    }
    let mut chunks = blocks.into_remainder().chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (x, s) in chunk.iter_mut().zip(sums.iter_mut()) {
            *x = exp_one((*x - shift) * scale);
            *s += *x;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_one((*x - shift) * scale);
        tail += *x;
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_in_place_avx512(xs: &mut [f32], shift: f32, scale: f32) -> f32 {
    exp_in_place_body(xs, shift, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(xs: &mut [f32], shift: f32, scale: f32) -> f32 {
    exp_in_place_body(xs, shift, scale)
}

/// Replaces every `x` by e^((x - shift) * scale) and returns their sum. With `shift` the
/// maximum this is the numerator of a softmax at temperature 1 / `scale`. The same values on
/// every instruction set (the polynomial has no fused multiply-adds).
pub fn exp_in_place(xs: &mut [f32], shift: f32, scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // Safety: the CPU has the features the function was compiled for.
            return unsafe { exp_in_place_avx512(xs, shift, scale) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // Safety: as above.
            return unsafe { exp_in_place_avx2(xs, shift, scale) };
        }
    }
    exp_in_place_body(xs, shift, scale)
}

/// The largest value (negative infinity for an empty slice), from 16 running maxima so that
/// it vectorises (the maximum does not depend on the order).
pub fn max_of(xs: &[f32]) -> f32 {
    let mut maxima = [f32::NEG_INFINITY; 16];
    let mut blocks = xs.chunks_exact(16);
    for block in &mut blocks {
        for (m, &x) in maxima.iter_mut().zip(block) {
            *m = m.max(x);
        }
    }
    let rest = blocks.remainder().iter().copied();
    maxima
        .into_iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row in place.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = max_of(row);
    let inv = 1.0 / exp_in_place(row, max, 1.0);
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libm_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * 175.0 / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys, 0.0, 1.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = (x as f64).exp();
            worst = worst.max(((y as f64 - exact) / exact).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        // The scalar path (odd lengths use it for the tail) agrees with the vector one.
        let mut tail = [xs[7], xs[100_000], xs[200_000]];
        exp_in_place(&mut tail, 0.0, 1.0);
        assert_eq!(tail, [ys[7], ys[100_000], ys[200_000]]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row: Vec<f32> = (0..2051)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 12.0)
            .collect();
        let original = row.clone();
        softmax_in_place(&mut row);
        let sum: f64 = row.iter().map(|&p| p as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        let max = max_of(&original) as f64;
        let z: f64 = original.iter().map(|&x| (x as f64 - max).exp()).sum();
        for (&p, &x) in row.iter().zip(&original) {
            let exact = (x as f64 - max).exp() / z;
            assert!(
                (p as f64 - exact).abs() <= 1e-6 * exact.max(1e-3),
                "{p} vs {exact}"
            );
        }
    }
}
