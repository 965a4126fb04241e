//! The pre-training objective (REFERENCE.md section 3, "SL"): an output head `Linear(d, k)`,
//! logits tied to the input item table (`h . item_table^T`), and full-softmax cross-entropy
//! against the next item at every valid position except each sequence's last.
//!
//! The loss is returned as a sum and a count of labels rather than a mean: a data-parallel
//! trainer all-reduces the count and divides by the global number of labels (variable-length
//! histories would otherwise weight short and long sequences differently across ranks).

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use uqa_data::batch::SequenceBatch;

use super::chunked::{DEFAULT_CHUNK, chunked_cross_entropy_sum};
use crate::error::{CandleContext, ModelError, Result};
use crate::grad_sink::GradSink;
use crate::layers::torch_linear;

/// Options of the next-item loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NextItemConfig {
    /// Item-table rows per chunk of the log-sum-exp.
    pub chunk: usize,
}

impl Default for NextItemConfig {
    fn default() -> Self {
        NextItemConfig {
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// A summed loss and the number of terms in it.
#[derive(Debug, Clone)]
pub struct LossSum {
    /// Scalar tensor: the sum of the per-label losses.
    pub sum: Tensor,
    /// Number of labels summed.
    pub count: usize,
}

impl LossSum {
    /// `sum / count` for a single process (0 when there are no labels).
    pub fn mean(&self) -> Result<Tensor> {
        (&self.sum / self.count.max(1) as f64).ctx("normalising the loss")
    }
}

/// Flat positions (`b * T + t`) that carry a label, and the labels (the next item ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextItemTargets {
    pub positions: Vec<u32>,
    pub labels: Vec<u32>,
}

/// Label = the next item, for `t < length - 1`; padding and each last valid position get none.
pub fn next_item_targets(batch: &SequenceBatch) -> NextItemTargets {
    let t_len = batch.seq_len;
    let items = batch.item_ids();
    let mut out = NextItemTargets::default();
    for (b, &len) in batch.lengths.iter().enumerate() {
        for t in 0..(len as usize)
            .saturating_sub(1)
            .min(t_len.saturating_sub(1))
        {
            let p = b * t_len + t;
            if let Some(&next) = items.get(p + 1) {
                out.positions.push(p as u32);
                out.labels.push(next);
            }
        }
    }
    out
}

/// [`next_item_targets`], refusing labels outside `item_table` (naming the position).
pub(crate) fn checked_targets(
    batch: &SequenceBatch,
    item_table: &Tensor,
) -> Result<NextItemTargets> {
    let targets = next_item_targets(batch);
    let vocab = item_table.dim(0).ctx("item table shape")?;
    if let Some(i) = targets.labels.iter().position(|&l| l as usize >= vocab) {
        return Err(ModelError::IdOutOfRange {
            feature: "item (label)",
            id: targets.labels[i],
            position: targets.positions[i] as usize + 1,
            vocab: vocab as u64,
        });
    }
    Ok(targets)
}

/// The output head every objective shares, whose output (the query) is ranked against the tied
/// item table: `Linear(width, item_dim)` with bias and PyTorch's default initialisation (the
/// reference), or none (the SASRec authors' code ranks the encoder output itself).
pub struct ItemHead(Option<Linear>);

impl ItemHead {
    /// The linear head; weights `weight`, `bias` under `vb`.
    pub fn linear(width: usize, item_dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        torch_linear(width, item_dim, vb)
            .map(|l| ItemHead(Some(l)))
            .ctx("creating the output head")
    }

    /// No head: the encoder output is the query, so its width must be the item table's.
    pub fn identity() -> Self {
        ItemHead(None)
    }

    /// Head output `[..., item_dim]`: the query vectors ranked against the item table.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        self.forward(hidden).ctx("output head")
    }
}

impl Module for ItemHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.0 {
            Some(linear) => linear.forward(x),
            None => Ok(x.clone()),
        }
    }
}

/// The output head plus the chunked tied cross-entropy.
pub struct NextItemLoss {
    head: ItemHead,
    chunk: usize,
    sink: Option<GradSink>,
}

impl NextItemLoss {
    pub fn new(cfg: &NextItemConfig, head: ItemHead) -> Result<Self> {
        if cfg.chunk == 0 {
            return Err(ModelError::config("objective.chunk", "must be positive"));
        }
        Ok(NextItemLoss {
            head,
            chunk: cfg.chunk,
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

    /// Summed next-item loss of `hidden: [B, T, d]` (encoder output for `batch`) against the
    /// tied `item_table: [V, item_dim]`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        item_table: &Tensor,
        batch: &SequenceBatch,
    ) -> Result<LossSum> {
        let targets = checked_targets(batch, item_table)?;
        let count = targets.labels.len();
        let dev = hidden.device();
        let run = || -> candle_core::Result<Tensor> {
            if count == 0 {
                return Tensor::zeros((), hidden.dtype(), dev);
            }
            let (b, t, d) = hidden.dims3()?;
            let pos = Tensor::from_vec(targets.positions.clone(), count, dev)?;
            let labels = Tensor::from_vec(targets.labels.clone(), count, dev)?;
            // Only labelled rows go through the head and the loss: padding costs nothing.
            let h = hidden.reshape((b * t, d))?.index_select(&pos, 0)?;
            let q = self.head.forward(&h)?;
            chunked_cross_entropy_sum(&q, item_table, &labels, self.chunk, self.sink.as_ref())
        };
        let sum = run().ctx("next-item loss")?;
        Ok(LossSum { sum, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_next_items_without_padding_or_last_positions() {
        let batch = SequenceBatch {
            batch_size: 3,
            seq_len: 4,
            lengths: vec![4, 2, 1],
            ids: [
                vec![5, 6, 7, 8, 9, 10, 0, 0, 11, 0, 0, 0],
                vec![0; 12],
                vec![0; 12],
                vec![0; 12],
                vec![0; 12],
            ],
            ..Default::default()
        };
        let t = next_item_targets(&batch);
        assert_eq!(t.positions, vec![0, 1, 2, 4]);
        assert_eq!(t.labels, vec![6, 7, 8, 10]);
    }
}
