//! CTR mode (ReLLa, REFERENCE.md section 7): each question asks whether the user will click an
//! item; the probability is the softmax of the "Yes" and "No" next-token logits. AUC, log loss
//! and accuracy are computed over **all** gathered scores at once: per-rank AUCs cannot be
//! averaged into the global AUC.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CtrMetrics {
    pub n: usize,
    pub positives: usize,
    /// Area under the ROC curve (Mann-Whitney, ties counted half); `None` if one class is absent.
    pub auc: Option<f64>,
    pub log_loss: f64,
    /// Share of samples where `p >= 0.5` agrees with the label.
    pub accuracy: f64,
}

/// Probability of "Yes" from the two logits (a two-way softmax, computed stably).
pub fn yes_probability(yes_logit: f64, no_logit: f64) -> f64 {
    1.0 / (1.0 + (no_logit - yes_logit).exp())
}

pub fn ctr_metrics(samples: &[(bool, f64)]) -> CtrMetrics {
    let n = samples.len();
    let positives = samples.iter().filter(|s| s.0).count();
    let negatives = n - positives;
    let eps = 1e-7;
    let log_loss = samples
        .iter()
        .map(|&(y, p)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / n.max(1) as f64;
    let accuracy =
        samples.iter().filter(|&&(y, p)| (p >= 0.5) == y).count() as f64 / n.max(1) as f64;
    let auc = (positives > 0 && negatives > 0).then(|| {
        // Rank-sum with average ranks for ties.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| samples[a].1.total_cmp(&samples[b].1));
        let mut rank_sum_pos = 0.0;
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j + 1 < n && samples[order[j + 1]].1 == samples[order[i]].1 {
                j += 1;
            }
            let avg_rank = (i + j) as f64 / 2.0 + 1.0;
            rank_sum_pos +=
                avg_rank * order[i..=j].iter().filter(|&&k| samples[k].0).count() as f64;
            i = j + 1;
        }
        let p = positives as f64;
        (rank_sum_pos - p * (p + 1.0) / 2.0) / (p * negatives as f64)
    });
    CtrMetrics {
        n,
        positives,
        auc,
        log_loss,
        accuracy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_pairwise_definition_with_ties() {
        let s = [
            (true, 0.9),
            (false, 0.8),
            (true, 0.8),
            (false, 0.1),
            (true, 0.3),
        ];
        // Pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=0.5 (0.8,0.1)=1 (0.3,0.8)=0 (0.3,0.1)=1.
        let m = ctr_metrics(&s);
        assert!((m.auc.unwrap() - 4.5 / 6.0).abs() < 1e-12);
        assert_eq!(m.positives, 3);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!(ctr_metrics(&[(true, 0.2)]).auc.is_none());
    }

    #[test]
    fn log_loss_and_yes_probability() {
        assert!((yes_probability(2.0, 2.0) - 0.5).abs() < 1e-12);
        assert!(yes_probability(1000.0, -1000.0) > 0.999_999);
        let m = ctr_metrics(&[(true, 0.5), (false, 0.5)]);
        assert!((m.log_loss - std::f64::consts::LN_2).abs() < 1e-12);
    }

    /// Averaging per-rank AUCs is not the global AUC: the reason scores are gathered first.
    #[test]
    fn per_shard_auc_average_differs_from_global() {
        let a = [(true, 0.9), (false, 0.8)];
        let b = [(true, 0.2), (false, 0.1)];
        let all: Vec<_> = a.iter().chain(&b).copied().collect();
        let mean_of_shards = (ctr_metrics(&a).auc.unwrap() + ctr_metrics(&b).auc.unwrap()) / 2.0;
        assert_eq!(mean_of_shards, 1.0);
        assert!((ctr_metrics(&all).auc.unwrap() - 0.75).abs() < 1e-12);
    }
}
