//! Evaluation of the encoder alone: for every user, the query at the last history position
//! ranks the first held-out item. Two protocols, both reported:
//!
//! - **full**: against every item (padding id 0 excluded), as UQABench evaluates encoders;
//! - **sampled**: against `sampled_negatives` items drawn uniformly from those the user never
//!   clicked (the SASRec protocol, 100 negatives).
//!
//! Every rank scores a share of the users (data-parallel, like the training steps), so no rank
//! waits idle through the evaluation.
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
use crate::error::{CandleContext, Result, TrainError};
use crate::optim::with_f32;
use crate::parallel::Replicas;

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

/// The 0-based ranks of one user's held-out item: against every item, and against the sampled
/// negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserRanks {
    full: u32,
    sampled: u32,
}

/// Evaluate `model` on `ds` (history -> first held-out item), data-parallel: user `u` is scored
/// by rank `u % world`, and every rank gets the whole result. The per-user ranks are gathered
/// and summed in user order, and the negatives are drawn in that order on every rank, so the
/// metrics are the same bits on any number of ranks.
pub fn evaluate(
    model: &PretrainModel,
    ds: &Dataset,
    cfg: &EvalConfig,
    max_len: usize,
    seed: u64,
    replicas: &mut Replicas,
) -> Result<RankingMetrics> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    let users = match cfg.max_users {
        0 => ds.train.num_rows(),
        n => n.min(ds.train.num_rows()),
    };
    let table = model.item_table();
    let items = table.dim(0).ctx("item table")?;
    // Score matrices stay under ~256 MB.
    let batch = cfg.batch_size.min((64 << 20) / items.max(1)).max(1);
    let table_t = table.t().ctx("item table")?;
    let mut rng = Rng::new(seed ^ 0xE7A1);
    let mut mine: Vec<(u32, UserRanks)> = Vec::with_capacity(users.div_ceil(world));
    let rows: Vec<usize> = (0..users).collect();
    // Rounds of `batch` users shared by the ranks: together they hold one batch's activations
    // at a time, as one rank scoring alone would.
    for round in rows.chunks(batch) {
        // Every rank draws every user's negatives, in user order, and keeps its own users'.
        let mut own = Vec::with_capacity(batch.div_ceil(world));
        let mut negatives = Vec::with_capacity(batch.div_ceil(world));
        for &r in round {
            let target = ds.eval.row(r).ids(Feature::ItemId)[0] as usize;
            let seen: HashSet<i64> = ds
                .train
                .row(r)
                .ids(Feature::ItemId)
                .iter()
                .copied()
                .collect();
            let drawn = draw_negatives(&mut rng, items, target, &seen, cfg.sampled_negatives);
            if r % world == rank {
                own.push(r);
                negatives.push((target, drawn));
            }
        }
        if own.is_empty() {
            continue;
        }
        let b = collate(&ds.train, &own, max_len);
        let q = model.last_queries(&b)?;
        let scores: Tensor = q.matmul(&table_t).ctx("scoring items")?;
        with_f32(&scores, |s| {
            for (i, (&r, (target, drawn))) in own.iter().zip(&negatives).enumerate() {
                let row = &s[i * items..(i + 1) * items];
                let t = row[*target];
                // Full ranking: every real item scoring at least as high, other than the target.
                let full = row[1..].iter().filter(|&&x| x >= t).count() - 1;
                let sampled = drawn.iter().filter(|&&j| row[j] >= t).count();
                let ranks = UserRanks {
                    full: full as u32,
                    sampled: sampled as u32,
                };
                mine.push((r as u32, ranks));
            }
        })?;
    }
    let ranks = gather_ranks(replicas, &mine, users)?;
    let mut out = RankingMetrics {
        users,
        sampled_negatives: cfg.sampled_negatives,
        ..Default::default()
    };
    for r in &ranks {
        accumulate(&mut out.full, &cfg.ks, r.full as usize);
        accumulate(&mut out.sampled, &cfg.ks, r.sampled as usize);
    }
    for m in [&mut out.full, &mut out.sampled] {
        for v in m.values_mut() {
            v.hr /= users.max(1) as f64;
            v.ndcg /= users.max(1) as f64;
        }
    }
    Ok(out)
}

/// `n` items drawn uniformly from those the user never clicked (and not the target), at most
/// `100 n` tries.
fn draw_negatives(
    rng: &mut Rng,
    items: usize,
    target: usize,
    seen: &HashSet<i64>,
    n: usize,
) -> Vec<usize> {
    let mut drawn = Vec::with_capacity(n);
    let mut attempts = 0;
    while drawn.len() < n && attempts < n * 100 {
        attempts += 1;
        let j = 1 + rng.below(items as u64 - 1) as usize;
        if j == target || seen.contains(&(j as i64)) {
            continue;
        }
        drawn.push(j);
    }
    drawn
}

/// Every user's ranks, in user order, from each rank's `(user, ranks)` pairs.
fn gather_ranks(
    replicas: &mut Replicas,
    mine: &[(u32, UserRanks)],
    users: usize,
) -> Result<Vec<UserRanks>> {
    let mut send = Vec::with_capacity(mine.len() * 12);
    for (u, r) in mine {
        for v in [*u, r.full, r.sampled] {
            send.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut all: Vec<Option<UserRanks>> = vec![None; users];
    for part in replicas.gather_bytes(&send)? {
        for rec in part.chunks_exact(12) {
            let word = |i: usize| u32::from_le_bytes(rec[4 * i..4 * i + 4].try_into().unwrap());
            let ranks = UserRanks {
                full: word(1),
                sampled: word(2),
            };
            all[word(0) as usize] = Some(ranks);
        }
    }
    all.into_iter()
        .enumerate()
        .map(|(u, r)| {
            r.ok_or_else(|| TrainError::Invalid(format!("evaluation: no rank scored user {u}")))
        })
        .collect()
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
