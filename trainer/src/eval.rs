//! Evaluation of the encoder alone: for every user, the query at the last history position
//! ranks the first held-out item. Two protocols, both reported:
//!
//! - **full**: against every item (padding id 0 excluded), as UQABench evaluates encoders;
//! - **sampled**: against `sampled_negatives` items drawn uniformly from those the user never
//!   clicked (the SASRec protocol, 100 negatives).
//!
//! HR@K = share of users whose item ranks in the top K; NDCG@K = mean of 1 / log2(rank + 2)
//! over those users (rank 0-based). Ties count against the held-out item (pessimistic).

use std::collections::{BTreeMap, HashSet};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use uqa_data::batch::collate;
use uqa_data::dataset::Dataset;
use uqa_data::rng::Rng;
use uqa_data::schema::Feature;
use uqa_models::PretrainModel;

use crate::config::EvalConfig;
use crate::error::{CandleContext, Result};
use crate::optim::with_f32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HitNdcg {
    pub hr: f64,
    pub ndcg: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    pub users: usize,
    pub full: BTreeMap<usize, HitNdcg>,
    pub sampled: BTreeMap<usize, HitNdcg>,
    pub sampled_negatives: usize,
}

impl RankingMetrics {
    /// One line for logs: HR/NDCG at 10 under both protocols when 10 is a cut-off.
    pub fn summary(&self) -> String {
        let at = |m: &BTreeMap<usize, HitNdcg>| {
            m.iter()
                .map(|(k, v)| format!("HR@{k} {:.4} NDCG@{k} {:.4}", v.hr, v.ndcg))
                .collect::<Vec<_>>()
        };
        let pick = |v: Vec<String>| {
            v.into_iter()
                .filter(|s| s.contains("@10 "))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} users; full: {}; sampled ({}): {}",
            self.users,
            pick(at(&self.full)),
            self.sampled_negatives,
            pick(at(&self.sampled))
        )
    }
}

fn accumulate(into: &mut BTreeMap<usize, HitNdcg>, ks: &[usize], rank: usize) {
    for &k in ks {
        let e = into.entry(k).or_default();
        if rank < k {
            e.hr += 1.0;
            e.ndcg += 1.0 / ((rank + 2) as f64).log2();
        }
    }
}

/// Evaluate `model` on `ds` (history -> first held-out item).
pub fn evaluate(
    model: &PretrainModel,
    ds: &Dataset,
    cfg: &EvalConfig,
    max_len: usize,
    seed: u64,
) -> Result<RankingMetrics> {
    let users = match cfg.max_users {
        0 => ds.train.num_rows(),
        n => n.min(ds.train.num_rows()),
    };
    let table = model.item_table();
    let items = table.dim(0).ctx("item table")?;
    // Score matrices stay under ~256 MB.
    let batch = cfg.batch_size.min((64 << 20) / items.max(1)).max(1);
    let table_t = table.t().ctx("item table")?;
    let mut out = RankingMetrics {
        users,
        sampled_negatives: cfg.sampled_negatives,
        ..Default::default()
    };
    let mut rng = Rng::new(seed ^ 0xE7A1);
    let rows: Vec<usize> = (0..users).collect();
    for chunk in rows.chunks(batch) {
        let b = collate(&ds.train, chunk, max_len);
        let q = model.last_queries(&b)?;
        let scores: Tensor = q.matmul(&table_t).ctx("scoring items")?;
        with_f32(&scores, |s| {
            for (i, &r) in chunk.iter().enumerate() {
                let row = &s[i * items..(i + 1) * items];
                let target = ds.eval.row(r).ids(Feature::ItemId)[0] as usize;
                let t = row[target];
                // Full ranking: every real item scoring at least as high, other than the target.
                let rank = row[1..].iter().filter(|&&x| x >= t).count() - 1;
                accumulate(&mut out.full, &cfg.ks, rank);
                let seen: HashSet<i64> = ds
                    .train
                    .row(r)
                    .ids(Feature::ItemId)
                    .iter()
                    .copied()
                    .collect();
                let mut rank = 0;
                let mut drawn = 0;
                let mut attempts = 0;
                while drawn < cfg.sampled_negatives && attempts < cfg.sampled_negatives * 100 {
                    attempts += 1;
                    let j = 1 + rng.below(items as u64 - 1) as usize;
                    if j == target || seen.contains(&(j as i64)) {
                        continue;
                    }
                    drawn += 1;
                    rank += usize::from(row[j] >= t);
                }
                accumulate(&mut out.sampled, &cfg.ks, rank);
            }
        })?;
    }
    for m in [&mut out.full, &mut out.sampled] {
        for v in m.values_mut() {
            v.hr /= users.max(1) as f64;
            v.ndcg /= users.max(1) as f64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_and_ndcg_by_rank() {
        let mut m = BTreeMap::new();
        accumulate(&mut m, &[1, 10], 0);
        accumulate(&mut m, &[1, 10], 3);
        accumulate(&mut m, &[1, 10], 10);
        assert_eq!(m[&1].hr, 1.0);
        assert_eq!(m[&10].hr, 2.0);
        assert!((m[&10].ndcg - (1.0 + 1.0 / 5f64.log2())).abs() < 1e-12);
    }
}
