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

/// Sets to -inf every token of `guided` that a conditional row finds implausible: a token
/// stays only if, under each row of `conditionals` (log-probabilities), its probability is at
/// least `alpha` times that row's most probable token's. Where the rows share no such token,
/// the first row's plausible tokens stay (the sampler passes the context row first).
///
/// Why: Eq. 3 with lambda_a = lambda_c = 3 weighs log p(Y) by -5, so a code the unconditional
/// row finds rarer than the conditional rows do is lifted by five times the gap, though no
/// row finds it likely; drawn at a frame whose neighbours are still masked, such a loud code
/// is an isolated click. Guidance then re-weights only the tokens the model believes in (the
/// adaptive plausibility constraint of contrastive decoding). `alpha` = 0 keeps every token.
pub(crate) fn keep_plausible(conditionals: &[&[f32]], alpha: f64, guided: &mut [f32]) {
    if alpha <= 0.0 || conditionals.is_empty() {
        return;
    }
    let floor = alpha.ln() as f32;
    let thresholds: Vec<f32> = conditionals
        .iter()
        .map(|row| fast_exp::max_of(row) + floor)
        .collect();
    let plausible_in = |rows: &[&[f32]], thresholds: &[f32], v: usize| {
        rows.iter().zip(thresholds).all(|(row, &t)| row[v] >= t)
    };
    let any_shared = (0..guided.len()).any(|v| plausible_in(conditionals, &thresholds, v));
    let (rows, thresholds) = if any_shared {
        (conditionals, thresholds.as_slice())
    } else {
        (&conditionals[..1], &thresholds[..1])
    };
    for (v, slot) in guided.iter_mut().enumerate() {
        if !plausible_in(rows, thresholds, v) {
            *slot = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keep_plausible;

    fn ln(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn kept(rows: &[Vec<f32>], alpha: f64) -> Vec<bool> {
        let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        // Guidance that favours the last token, which no row believes in.
        let mut guided = vec![0.0, 0.0, 0.0, 0.0, 5.0];
        keep_plausible(&rows, alpha, &mut guided);
        guided.iter().map(|v| v.is_finite()).collect()
    }

    #[test]
    fn guidance_reweights_only_tokens_every_condition_finds_plausible() {
        let context = ln(&[0.5, 0.3, 0.1, 0.09, 0.01]);
        let category = ln(&[0.21, 0.21, 0.4, 0.17, 0.01]);
        // alpha 0.1: context keeps tokens 0-3 (>= 0.05), category keeps 0-3 (>= 0.04).
        assert_eq!(
            kept(&[context.clone(), category.clone()], 0.1),
            [true, true, true, true, false]
        );
        // alpha 0.5: context keeps 0-1 (>= 0.25), category 0-2 (>= 0.2): both share 0 and 1.
        assert_eq!(
            kept(&[context.clone(), category.clone()], 0.5),
            [true, true, false, false, false]
        );
        // alpha 0 keeps everything, the guided favourite included.
        assert_eq!(kept(&[context.clone(), category], 0.0), [true; 5]);
        // Rows that share no plausible token: the first (context) row decides.
        let other = ln(&[0.01, 0.01, 0.01, 0.01, 0.96]);
        assert_eq!(
            kept(&[context, other], 0.5),
            [true, true, false, false, false]
        );
    }
}
