//! The paper's contrastive alternative ("CL", Table 3): InfoNCE over the next item with in-batch
//! and sampled negatives and a temperature. For each labelled position i, with query `q_i`
//! (the output head applied to the hidden state) and candidate items `C` = the batch's labels
//! followed by the sampled negatives:
//! `loss_i = -log softmax_j(q_i . e_{C_j} / tau)[i]`, where column i is i's own label.
//! Candidates equal to i's label other than column i ("accidental hits": repeated items in the
//! batch, sampled positives) are masked out, as in sampled-softmax implementations; with
//! `in_batch = false` all other label columns are masked and only sampled negatives remain.
//!
//! Sampling is the caller's: `forward` takes the negative ids, so the model holds no RNG state
//! and a step is reproducible; [`uniform_negatives`] draws them uniformly from the real items.

use candle_core::{D, Module, Tensor};
use serde::{Deserialize, Serialize};
use uqa_data::batch::SequenceBatch;

use super::next_item::{ItemHead, LossSum, next_item_targets};
use crate::error::{CandleContext, ModelError, Result};

/// Options of the InfoNCE loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfoNceConfig {
    /// Softmax temperature tau.
    pub temperature: f64,
    /// Uniformly sampled negatives per step, shared by every position of the batch.
    pub sampled_negatives: usize,
    /// Use the other positions' labels as negatives.
    pub in_batch: bool,
}

impl Default for InfoNceConfig {
    fn default() -> Self {
        InfoNceConfig {
            temperature: 0.1,
            sampled_negatives: 1024,
            in_batch: true,
        }
    }
}

impl InfoNceConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ModelError::config(
                "objective.temperature",
                format!("must be finite and positive, got {}", self.temperature),
            ));
        }
        if self.sampled_negatives == 0 && !self.in_batch {
            return Err(ModelError::config(
                "objective.sampled_negatives",
                "must be positive when in_batch is false (no negatives at all)",
            ));
        }
        Ok(())
    }
}

/// `count` item ids drawn uniformly from `1..items` (0 is padding) with SplitMix64 from `seed`.
pub fn uniform_negatives(seed: u64, count: usize, items: u64) -> Vec<u32> {
    let mut state = seed;
    let span = items.saturating_sub(1).max(1);
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (1 + (z ^ (z >> 31)) % span) as u32
        })
        .collect()
}

/// The output head plus InfoNCE.
pub struct InfoNceLoss {
    head: ItemHead,
    cfg: InfoNceConfig,
}

impl InfoNceLoss {
    pub fn new(cfg: &InfoNceConfig, head: ItemHead) -> Result<Self> {
        cfg.validate()?;
        Ok(InfoNceLoss {
            head,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &InfoNceConfig {
        &self.cfg
    }

    /// Head output `[..., item_dim]`: the query vectors ranked against the item table.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head.project(hidden)
    }

    /// Summed InfoNCE of `hidden: [B, T, d]` against `item_table: [V, item_dim]`, with the
    /// given sampled `negatives` (item ids).
    pub fn forward(
        &self,
        hidden: &Tensor,
        item_table: &Tensor,
        batch: &SequenceBatch,
        negatives: &[u32],
    ) -> Result<LossSum> {
        let targets = next_item_targets(batch);
        let vocab = item_table.dim(0).ctx("item table shape")?;
        let out_of_range = |feature, ids: &[u32], at: &dyn Fn(usize) -> usize| {
            ids.iter()
                .position(|&id| id as usize >= vocab)
                .map(|i| ModelError::IdOutOfRange {
                    feature,
                    id: ids[i],
                    position: at(i),
                    vocab: vocab as u64,
                })
        };
        let label_pos = |i: usize| targets.positions[i] as usize + 1;
        if let Some(e) = out_of_range("item (label)", &targets.labels, &label_pos)
            .or_else(|| out_of_range("item (sampled negative, index)", negatives, &|i| i))
        {
            return Err(e);
        }
        let candidates: Vec<u32> = targets.labels.iter().chain(negatives).copied().collect();
        let n = targets.labels.len();
        let c = candidates.len();
        // allowed[i][j]: column j is a negative (or the positive) for row i.
        let allowed: Vec<u8> = (0..n * c)
            .map(|k| {
                let (i, j) = (k / c, k % c);
                let own = j == i;
                let other_label = j < n && !own;
                let hit = candidates[j] == targets.labels[i];
                u8::from(own || (!hit && (self.cfg.in_batch || !other_label)))
            })
            .collect();
        let dev = hidden.device();
        let run = || -> candle_core::Result<Tensor> {
            if n == 0 {
                return Tensor::zeros((), hidden.dtype(), dev);
            }
            let (b, t, d) = hidden.dims3()?;
            let pos = Tensor::from_vec(targets.positions.clone(), n, dev)?;
            let q = self
                .head
                .forward(&hidden.reshape((b * t, d))?.index_select(&pos, 0)?)?;
            let e = item_table.index_select(&Tensor::from_vec(candidates.clone(), c, dev)?, 0)?;
            let logits = (q.matmul(&e.t()?)? / self.cfg.temperature)?;
            let allowed = Tensor::from_vec(allowed.clone(), (n, c), dev)?;
            let blocked = Tensor::full(-1e9f32, (n, c), dev)?.to_dtype(logits.dtype())?;
            let logits = allowed.where_cond(&logits, &blocked)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            // The positive of row i sits in column i: the diagonal of the first n columns.
            let eye: Vec<u32> = (0..n as u32).collect();
            let picked = logp.gather(&Tensor::from_vec(eye, (n, 1), dev)?, 1)?;
            picked.sum_all()?.neg()
        };
        let sum = run().ctx("infonce loss")?;
        Ok(LossSum { sum, count: n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negatives_are_real_items_and_reproducible() {
        let a = uniform_negatives(3, 1000, 10);
        assert_eq!(a, uniform_negatives(3, 1000, 10));
        assert!(a.iter().all(|&x| (1..10).contains(&x)));
        assert_ne!(a, uniform_negatives(4, 1000, 10));
        assert!((1..10).all(|x| a.contains(&x)));
    }

    #[test]
    fn a_config_without_negatives_is_rejected() {
        let cfg = InfoNceConfig {
            sampled_negatives: 0,
            in_batch: false,
            ..InfoNceConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("objective.sampled_negatives"), "{err}");
    }
}
