//! The SASRec paper's objective (Kang & McAuley 2018): at every labelled position, binary
//! cross-entropy of the next item against `negatives` items drawn uniformly from those the row
//! does not contain: `softplus(-q . e_next) + sum_j softplus(q . e_neg_j)`, with `q` the output
//! head's query and `e` rows of the tied item table.
//!
//! It trains for the 100-sampled-negatives evaluation protocol (the target against uniformly
//! drawn items), where the full-softmax cross-entropy trains for full ranking; reproducing the
//! paper's MovieLens-1M figure under its protocol needs its loss (docs/BENCHMARKS.md).

use std::collections::HashSet;

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};
use uqa_data::batch::SequenceBatch;
use uqa_data::rng::Rng;

use super::next_item::{ItemHead, LossSum, checked_targets};
use crate::error::{CandleContext, ModelError, Result};
use crate::grad_sink::{GradSink, gather_rows};

/// Options of the sampled binary cross-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampledBceConfig {
    /// Negatives per labelled position (the paper: 1).
    pub negatives: usize,
}

impl Default for SampledBceConfig {
    fn default() -> Self {
        SampledBceConfig { negatives: 1 }
    }
}

/// The output head plus the sampled binary cross-entropy.
pub struct SampledBceLoss {
    head: ItemHead,
    negatives: usize,
    sink: Option<GradSink>,
}

impl SampledBceLoss {
    pub fn new(cfg: &SampledBceConfig, head: ItemHead) -> Result<Self> {
        if cfg.negatives == 0 {
            return Err(ModelError::config(
                "objective.negatives",
                "must be positive",
            ));
        }
        Ok(SampledBceLoss {
            head,
            negatives: cfg.negatives,
            sink: None,
        })
    }

    /// Send the item table's gradient to `sink` instead of candle's `GradStore`.
    pub fn set_grad_sink(&mut self, sink: Option<GradSink>) {
        self.sink = sink;
    }

    /// Head output `[..., item_dim]`: the query vectors ranked against the item table.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head.project(hidden)
    }

    /// Summed loss of `hidden: [B, T, d]` (encoder output for `batch`) against the tied
    /// `item_table: [V, item_dim]`; `seed` draws the negatives.
    pub fn forward(
        &self,
        hidden: &Tensor,
        item_table: &Tensor,
        batch: &SequenceBatch,
        seed: u64,
    ) -> Result<LossSum> {
        let targets = checked_targets(batch, item_table)?;
        let vocab = item_table.dim(0).ctx("item table shape")?;
        let count = targets.labels.len();
        let negatives = self.draw_negatives(batch, &targets.positions, vocab as u64, seed);
        let run = || -> candle_core::Result<Tensor> {
            if count == 0 {
                return Tensor::zeros((), hidden.dtype(), hidden.device());
            }
            let (b, t, d) = hidden.dims3()?;
            let pos = Tensor::from_slice(&targets.positions, count, hidden.device())?;
            let q = self
                .head
                .forward(&hidden.reshape((b * t, d))?.index_select(&pos, 0)?)?;
            let k = q.dim(1)?;
            let sink = self.sink.as_ref();
            let next = gather_rows(item_table, &targets.labels, sink)?;
            let neg =
                gather_rows(item_table, &negatives, sink)?.reshape((count, self.negatives, k))?;
            let s_next = (&q * next)?.sum(1)?;
            let s_neg = neg.broadcast_mul(&q.unsqueeze(1)?)?.sum(2)?;
            softplus(&s_next.neg()?)?.sum_all()? + softplus(&s_neg)?.sum_all()?
        };
        let sum = run().ctx("sampled binary cross-entropy")?;
        Ok(LossSum { sum, count })
    }

    /// `negatives` ids per labelled position, uniform over `1..vocab` minus the ids of the
    /// position's row (as the paper's sampler, which skips the user's items).
    fn draw_negatives(
        &self,
        batch: &SequenceBatch,
        positions: &[u32],
        vocab: u64,
        seed: u64,
    ) -> Vec<u32> {
        let t = batch.seq_len.max(1);
        let items = batch.item_ids();
        let rows: Vec<HashSet<u32>> = (0..batch.batch_size)
            .map(|r| {
                items[r * t..r * t + batch.lengths[r] as usize]
                    .iter()
                    .copied()
                    .collect()
            })
            .collect();
        let mut rng = Rng::derive(seed, 0x5A_B0CE);
        let mut out = Vec::with_capacity(positions.len() * self.negatives);
        for &p in positions {
            let seen = &rows[p as usize / t];
            for _ in 0..self.negatives {
                // A row holding (nearly) every item gets a possibly seen one after 100 tries.
                let mut id = 1 + rng.below(vocab.saturating_sub(1).max(1)) as u32;
                for _ in 0..100 {
                    if !seen.contains(&id) {
                        break;
                    }
                    id = 1 + rng.below(vocab.saturating_sub(1).max(1)) as u32;
                }
                out.push(id);
            }
        }
        out
    }
}

/// `log(1 + exp(x))` without overflow: `max(x, 0) + log(1 + exp(-|x|))`.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;
    use crate::loss::next_item_targets;
    use candle_nn::VarBuilder;

    fn batch(rows: &[&[u32]]) -> SequenceBatch {
        let t = rows.iter().map(|r| r.len()).max().unwrap();
        let mut ids = vec![0u32; rows.len() * t];
        for (r, row) in rows.iter().enumerate() {
            ids[r * t..r * t + row.len()].copy_from_slice(row);
        }
        SequenceBatch {
            batch_size: rows.len(),
            seq_len: t,
            lengths: rows.iter().map(|r| r.len() as u32).collect(),
            rows: (0..rows.len()).collect(),
            ids: [ids, vec![], vec![], vec![], vec![]],
            ..Default::default()
        }
    }

    #[test]
    fn negatives_avoid_the_rows_items_and_repeat_per_seed() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let loss = SampledBceLoss::new(
            &SampledBceConfig { negatives: 3 },
            ItemHead::linear(4, 2, vb).unwrap(),
        )
        .unwrap();
        let b = batch(&[&[1, 2, 3, 4], &[5, 6]]);
        let positions = next_item_targets(&b).positions;
        let neg = loss.draw_negatives(&b, &positions, 9, 7);
        assert_eq!(neg.len(), 4 * 3);
        for (i, &p) in positions.iter().enumerate() {
            let row: &[u32] = if p < 4 { &[1, 2, 3, 4] } else { &[5, 6] };
            for &n in &neg[i * 3..i * 3 + 3] {
                assert!(
                    (1..9).contains(&n) && !row.contains(&n),
                    "{n} for row {row:?}"
                );
            }
        }
        assert_eq!(neg, loss.draw_negatives(&b, &positions, 9, 7));
        assert_ne!(neg, loss.draw_negatives(&b, &positions, 9, 8));
    }

    #[test]
    fn the_loss_is_the_hand_computed_binary_cross_entropy() {
        let vm = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let loss = SampledBceLoss::new(
            &SampledBceConfig::default(),
            ItemHead::linear(3, 2, vb).unwrap(),
        )
        .unwrap();
        let table = Tensor::new(
            &[
                [0.0f64, 0.0],
                [0.5, -1.0],
                [2.0, 0.3],
                [-0.7, 0.2],
                [1.1, 1.5],
            ],
            &dev,
        )
        .unwrap();
        let b = batch(&[&[1, 2, 3]]);
        let hidden = Tensor::new(
            &[[[0.3f64, -0.2, 0.9], [1.0, 0.4, -0.5], [0.0, 0.0, 0.0]]],
            &dev,
        )
        .unwrap();
        let got = loss.forward(&hidden, &table, &b, 3).unwrap();
        assert_eq!(got.count, 2);
        let targets = next_item_targets(&b);
        let neg = loss.draw_negatives(&b, &targets.positions, 5, 3);
        assert_eq!(neg, vec![4, 4]); // the only item outside the row
        let q: Vec<Vec<f64>> = loss
            .project(&hidden.squeeze(0).unwrap())
            .unwrap()
            .to_vec2()
            .unwrap();
        let rows: Vec<Vec<f64>> = table.to_vec2().unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let want: f64 = (0..2)
            .map(|p| sp(-dot(&q[p], &rows[p + 2])) + sp(dot(&q[p], &rows[4])))
            .sum();
        let value = got.sum.to_scalar::<f64>().unwrap();
        assert!((value - want).abs() < 1e-12, "{value} vs {want}");
    }
}
