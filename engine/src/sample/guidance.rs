//! Multi-source classifier-free guidance (ARCHITECTURE §3.5, paper Eq. 3):
//!
//! log p~(Y | a, c) = lambda_a log p(Y | a) + lambda_c log p(Y | c)
//!                    + (1 - lambda_a - lambda_c) log p(Y)
//!
//! with a = context and c = category. The three terms come from one batched forward: row
//! "context" = real context + NULL category, row "category" = NULL context + real category,
//! row "unconditional" = NULL context + NULL category.

use crate::model::kernels::fast_exp;

/// The coefficients of the three log-probabilities in Eq. 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceWeights {
    /// lambda_a, on log p(Y | context).
    pub context: f64,
    /// lambda_c, on log p(Y | category).
    pub category: f64,
    /// 1 - lambda_a - lambda_c, on log p(Y).
    pub unconditional: f64,
}

impl GuidanceWeights {
    pub fn new(lambda_context: f64, lambda_category: f64) -> Self {
        GuidanceWeights {
            context: lambda_context,
            category: lambda_category,
            unconditional: 1.0 - lambda_context - lambda_category,
        }
    }

    /// The weights in batch-row order: context, category, unconditional.
    pub(crate) fn in_row_order(&self) -> [f64; 3] {
        [self.context, self.category, self.unconditional]
    }
}

/// Numerically stable log-softmax of one row of logits (exponentials in f32, the log of the
/// sum in f64).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = fast_exp::max_of(logits);
    let mut out = logits.to_vec();
    let sum = fast_exp::exp_in_place(&mut out, max, 1.0) as f64;
    let log_z = max as f64 + sum.ln();
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = (x as f64 - log_z) as f32;
    }
    out
}

/// The guided (unnormalised) log-probabilities of Eq. 3 from the three conditionals'
/// log-probabilities (e.g. [`log_softmax`] of each row's logits), all of the same length.
///
/// Terms whose weight is exactly 0 are skipped rather than multiplied, so that
/// lambda_a = 1, lambda_c = 0 returns log p(Y | a) bit for bit (and likewise for the other
/// two), and a row the sampler did not compute is never read. The sum is taken in f64.
///
/// Panics if the slices differ in length (a programming error, not an input error).
pub fn guided_log_probs(
    context: &[f32],
    category: &[f32],
    unconditional: &[f32],
    weights: GuidanceWeights,
) -> Vec<f32> {
    assert!(
        context.len() == category.len() && category.len() == unconditional.len(),
        "guidance rows differ in length"
    );
    let mut out = vec![0.0; context.len()];
    let rows = [context, category, unconditional];
    let terms: Vec<(f64, &[f32])> = weights
        .in_row_order()
        .into_iter()
        .zip(rows)
        .filter(|(w, _)| *w != 0.0)
        .collect();
    combine(&terms, &mut out);
    out
}

/// out[v] = sum over terms of weight * row[v], accumulated in f64.
pub(crate) fn combine(terms: &[(f64, &[f32])], out: &mut [f32]) {
    for (v, slot) in out.iter_mut().enumerate() {
        let sum: f64 = terms.iter().map(|(w, row)| w * row[v] as f64).sum();
        *slot = sum as f32;
    }
}
