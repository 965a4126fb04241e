//! Token-level unlikelihood training (Welleck et al. 2020, "Neural Text Generation with
//! Unlikelihood Training"). At each target position, every token already written earlier in the
//! same target span that is not the target itself (a *negative candidate*) is pushed down by
//! `-log(1 - p(c))`, added to the cross-entropy with a weight.
//!
//! Why: cross-entropy alone lets a small LM trained on lists that often repeat an entity (the
//! "last k clicks" answers) repeat one in lists that never do (the top-k interests): greedy
//! decoding then writes `A; B; B`. Candidates exclude the target, so a repeat the data asks for
//! is never penalised; only repeats the data contradicts are.

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Guards `log(1 - p)` when a candidate's probability rounds to 1.
const EPS: f64 = 1e-6;

/// How answer tokens are trained, beyond cross-entropy (the `[loss]` section of an align job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerLoss {
    /// Weight of the token-level unlikelihood term (0: cross-entropy only, the reference).
    #[serde(default)]
    pub unlikelihood: f64,
}

impl AnswerLoss {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Negative candidates of the labelled positions: pairs `(row, token)`, where `row` indexes the
/// labelled positions in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    pub rows: Vec<u32>,
    pub tokens: Vec<u32>,
}

impl Candidates {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the candidates of labelled position `row` with target `target`, given the distinct
    /// tokens written before it in its span (`earlier`, in first-seen order).
    pub fn push(&mut self, row: usize, target: u32, earlier: &[u32]) {
        for &c in earlier.iter().filter(|&&c| c != target) {
            self.rows.push(row as u32);
            self.tokens.push(c);
        }
    }
}

/// Tracks the distinct tokens of the current target span (a run of consecutive target tokens:
/// an answer with its closing tokens).
#[derive(Debug, Default)]
pub struct SpanTokens {
    seen: Vec<u32>,
}

impl SpanTokens {
    /// The tokens before this one in its span; a non-target token ends the span.
    pub fn earlier(&self) -> &[u32] {
        &self.seen
    }

    /// Records token `id`; `target == false` ends the span.
    pub fn step(&mut self, id: u32, target: bool) {
        if !target {
            self.seen.clear();
        } else if !self.seen.contains(&id) {
            self.seen.push(id);
        }
    }
}

/// `sum over candidates of -log(1 - p(c | h_row))`, with `p = softmax(h @ W^T)`, for
/// `h: [N, d]` (the labelled positions' hidden states) and the output table `W: [V, d]`.
/// Only the rows that have candidates get logits (`[R, V]`). Differentiable with respect to both
/// `h` and `W` through ordinary candle ops. Returns a scalar; no candidates give 0.
pub fn unlikelihood_sum(h: &Tensor, table: &Tensor, cands: &Candidates) -> Result<Tensor> {
    if cands.is_empty() {
        return Tensor::zeros((), h.dtype(), h.device());
    }
    // The rows with candidates, in order, and each pair's index into them.
    let mut rows: Vec<u32> = Vec::new();
    let mut local = Vec::with_capacity(cands.len());
    for &r in &cands.rows {
        if rows.last() != Some(&r) {
            rows.push(r);
        }
        local.push(rows.len() - 1);
    }
    let vocab = table.dim(0)?;
    let flat: Vec<u32> = local
        .iter()
        .zip(&cands.tokens)
        .map(|(&l, &t)| (l * vocab) as u32 + t)
        .collect();
    let dev = h.device();
    let hs = h.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?;
    let logits = hs.matmul(&table.t()?)?;
    // The max only shifts the log-sum-exp; its gradient cancels, so it need not be tracked.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_probs = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let lp = log_probs
        .flatten_all()?
        .index_select(&Tensor::new(flat.as_slice(), dev)?, 0)?;
    lp.exp()?.affine(-1.0, 1.0 + EPS)?.log()?.sum_all()?.neg()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn span_candidates(ids: &[u32], targets: &[bool]) -> Candidates {
        let mut span = SpanTokens::default();
        let mut c = Candidates::default();
        let mut row = 0;
        for (&id, &t) in ids.iter().zip(targets) {
            if t {
                c.push(row, id, span.earlier());
                row += 1;
            }
            span.step(id, t);
        }
        c
    }

    #[test]
    fn candidates_are_earlier_tokens_of_the_span_other_than_the_target() {
        // Span 1: 7 8 7 9 (targets), then a prompt token ends it; span 2: 8 8.
        let ids = [7, 8, 7, 9, 3, 8, 8];
        let targets = [true, true, true, true, false, true, true];
        let c = span_candidates(&ids, &targets);
        // row 0 (7): none; row 1 (8): 7; row 2 (7): 8; row 3 (9): 7, 8; row 4 (8): none
        // (the span restarted); row 5 (8): none (8 is the target, a repeat the data asks for).
        assert_eq!(c.rows, vec![1, 2, 3, 3]);
        assert_eq!(c.tokens, vec![7, 8, 7, 8]);
    }

    #[test]
    fn the_sum_matches_a_hand_computation_and_its_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let h = Var::from_vec(
            vec![0.3f64, -0.2, 0.5, 0.1, 0.4, -0.6, 0.2, 0.7, -0.1],
            (3, 3),
            &dev,
        )
        .unwrap();
        let w = Var::from_vec(
            vec![
                0.2f64, 0.1, -0.3, 0.5, -0.4, 0.6, -0.2, 0.3, 0.1, 0.4, 0.4, -0.5,
            ],
            (4, 3),
            &dev,
        )
        .unwrap();
        let cands = Candidates {
            rows: vec![0, 2, 2],
            tokens: vec![1, 0, 3],
        };
        let value = |h: &Tensor, w: &Tensor| -> f64 {
            let logits = h.matmul(&w.t().unwrap()).unwrap().to_vec2::<f64>().unwrap();
            cands
                .rows
                .iter()
                .zip(&cands.tokens)
                .map(|(&r, &t)| {
                    let row = &logits[r as usize];
                    let z: f64 = row.iter().map(|x| x.exp()).sum();
                    -(1.0 - row[t as usize].exp() / z + EPS).ln()
                })
                .sum()
        };
        let got = unlikelihood_sum(h.as_tensor(), w.as_tensor(), &cands).unwrap();
        let want = value(h.as_tensor(), w.as_tensor());
        assert!((got.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);

        let grads = got.backward().unwrap();
        for var in [&h, &w] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let g = g.to_vec1::<f64>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for (i, &gi) in g.iter().enumerate() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::from_vec(v, var.as_tensor().shape(), &dev).unwrap();
                    if std::ptr::eq(var, &h) {
                        value(&t, w.as_tensor())
                    } else {
                        value(h.as_tensor(), &t)
                    }
                };
                let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
                assert!((fd - gi).abs() < 1e-7, "element {i}: {fd} vs {gi}");
            }
        }
        // Row 1 has no candidate: its state gets no gradient.
        let gh = grads.get(h.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        assert!(gh[1].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn no_candidates_cost_nothing() {
        let h = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((5, 3), DType::F32, &Device::Cpu).unwrap();
        let s = unlikelihood_sum(&h, &w, &Candidates::default()).unwrap();
        assert_eq!(s.to_scalar::<f32>().unwrap(), 0.0);
    }
}
