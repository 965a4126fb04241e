//! Scores over a set of judged predictions: per sub-task, per group and overall, each as a
//! micro-average (pooled over samples, the reference's convention) and a macro-average (mean of
//! the parts), for the three matching rules; stratified bootstrap 95% intervals for the headline
//! (prefix) figures; average input tokens (Table 7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uqa_data::rng::Rng;

use super::matching::{normalized_match, partial_credit, prefix_match};
use super::predictions::{Scorable, SkipReason};
use crate::qa::{Group, Task};

/// Accuracies in percent under each rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub n: usize,
    pub prefix: f64,
    pub normalized: f64,
    pub partial: f64,
    /// Bootstrap 95% interval of `prefix`.
    pub prefix_ci95: (f64, f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    pub scored: usize,
    pub skipped: BTreeMap<SkipReason, usize>,
    pub tasks: BTreeMap<Task, Accuracy>,
    /// Pooled over the group's samples.
    pub groups_micro: BTreeMap<Group, Accuracy>,
    /// Mean of the group's task accuracies.
    pub groups_macro: BTreeMap<Group, Accuracy>,
    pub overall_micro: Accuracy,
    /// Mean of the seven task accuracies.
    pub overall_macro: Accuracy,
    pub avg_input_tokens: Option<f64>,
    pub bootstrap_resamples: usize,
}

/// Per-sample credits under the three rules.
#[derive(Debug, Clone, Copy)]
struct Credit {
    prefix: f64,
    normalized: f64,
    partial: f64,
}

fn judge(s: &Scorable) -> Credit {
    Credit {
        prefix: f64::from(u8::from(prefix_match(&s.prediction, &s.answer))),
        normalized: f64::from(u8::from(normalized_match(&s.prediction, &s.answer))),
        partial: partial_credit(&s.prediction, &s.answer, s.task),
    }
}

/// The three accuracies of pooled samples, in percent.
fn pooled<'a>(credits: impl Iterator<Item = &'a Credit>) -> (usize, [f64; 3]) {
    let mut n = 0;
    let mut sum = [0.0; 3];
    for c in credits {
        n += 1;
        sum[0] += c.prefix;
        sum[1] += c.normalized;
        sum[2] += c.partial;
    }
    let pct = |x: f64| if n == 0 { 0.0 } else { 100.0 * x / n as f64 };
    (n, sum.map(pct))
}

fn mean(values: &[[f64; 3]]) -> [f64; 3] {
    let k = values.len().max(1) as f64;
    let mut m = [0.0; 3];
    for v in values {
        for i in 0..3 {
            m[i] += v[i] / k;
        }
    }
    m
}

/// Every headline figure of one (possibly resampled) set of per-task credits, in a fixed
/// order: 7 tasks, 3 groups micro, 3 groups macro, overall micro, overall macro.
fn figures(by_task: &BTreeMap<Task, Vec<Credit>>) -> Vec<(usize, [f64; 3])> {
    let mut out = Vec::new();
    let task_acc: BTreeMap<Task, (usize, [f64; 3])> = Task::ALL
        .iter()
        .map(|t| {
            (
                *t,
                pooled(by_task.get(t).map_or(&[][..], Vec::as_slice).iter()),
            )
        })
        .collect();
    out.extend(task_acc.values().copied());
    let groups = [
        Group::SequenceUnderstanding,
        Group::ActionPrediction,
        Group::InterestPerception,
    ];
    for g in groups {
        let samples = Task::ALL
            .iter()
            .filter(|t| t.group() == g)
            .flat_map(|t| by_task.get(t).map_or(&[][..], Vec::as_slice).iter());
        out.push(pooled(samples));
    }
    for g in groups {
        let parts: Vec<[f64; 3]> = Task::ALL
            .iter()
            .filter(|t| t.group() == g && task_acc[t].0 > 0)
            .map(|t| task_acc[t].1)
            .collect();
        let n = Task::ALL
            .iter()
            .filter(|t| t.group() == g)
            .map(|t| task_acc[t].0)
            .sum();
        out.push((n, mean(&parts)));
    }
    out.push(pooled(by_task.values().flatten()));
    let parts: Vec<[f64; 3]> = task_acc.values().filter(|a| a.0 > 0).map(|a| a.1).collect();
    out.push((task_acc.values().map(|a| a.0).sum(), mean(&parts)));
    out
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Score rows; `skipped` counts the rows that could not be scored, by reason.
pub fn score(
    rows: &[Scorable],
    skipped: BTreeMap<SkipReason, usize>,
    resamples: usize,
    seed: u64,
) -> ScoreReport {
    let mut by_task: BTreeMap<Task, Vec<Credit>> = BTreeMap::new();
    for r in rows {
        by_task.entry(r.task).or_default().push(judge(r));
    }
    let point = figures(&by_task);

    // Stratified bootstrap: resample within each task, keeping its size.
    let mut rng = Rng::new(seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); point.len()];
    for _ in 0..resamples {
        let resampled: BTreeMap<Task, Vec<Credit>> = by_task
            .iter()
            .map(|(t, cs)| {
                let pick = (0..cs.len())
                    .map(|_| cs[rng.below(cs.len() as u64) as usize])
                    .collect();
                (*t, pick)
            })
            .collect();
        for (k, (_, acc)) in figures(&resampled).into_iter().enumerate() {
            draws[k].push(acc[0]);
        }
    }
    let mut accs = point.iter().zip(draws).map(|((n, a), mut d)| {
        d.sort_by(f64::total_cmp);
        Accuracy {
            n: *n,
            prefix: a[0],
            normalized: a[1],
            partial: a[2],
            prefix_ci95: if resamples > 0 {
                (percentile(&d, 0.025), percentile(&d, 0.975))
            } else {
                (a[0], a[0])
            },
        }
    });
    let tasks: BTreeMap<Task, Accuracy> = Task::ALL
        .iter()
        .map(|t| (*t, accs.next().unwrap_or_default()))
        .filter(|(_, a)| a.n > 0)
        .collect();
    let groups = [
        Group::SequenceUnderstanding,
        Group::ActionPrediction,
        Group::InterestPerception,
    ];
    let groups_micro = groups
        .iter()
        .map(|g| (*g, accs.next().unwrap_or_default()))
        .collect();
    let groups_macro = groups
        .iter()
        .map(|g| (*g, accs.next().unwrap_or_default()))
        .collect();
    let overall_micro = accs.next().unwrap_or_default();
    let overall_macro = accs.next().unwrap_or_default();
    let tokens: Vec<u64> = rows.iter().filter_map(|r| r.input_tokens).collect();
    ScoreReport {
        scored: rows.len(),
        skipped,
        tasks,
        groups_micro,
        groups_macro,
        overall_micro,
        overall_macro,
        avg_input_tokens: (!tokens.is_empty())
            .then(|| tokens.iter().sum::<u64>() as f64 / tokens.len() as f64),
        bootstrap_resamples: resamples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: Task, correct: bool) -> Scorable {
        Scorable {
            task,
            prediction: if correct {
                "gold answer".into()
            } else {
                "wrong".into()
            },
            answer: "gold answer".into(),
            input_tokens: Some(100),
        }
    }

    #[test]
    fn micro_pools_samples_and_macro_averages_tasks() {
        // DF: 1 of 1 correct; MF: 0 of 3 correct.
        let rows = vec![
            row(Task::DF, true),
            row(Task::MF, false),
            row(Task::MF, false),
            row(Task::MF, false),
        ];
        let r = score(&rows, BTreeMap::new(), 0, 0);
        assert_eq!(r.tasks[&Task::DF].prefix, 100.0);
        assert_eq!(r.tasks[&Task::MF].prefix, 0.0);
        assert_eq!(r.overall_micro.prefix, 25.0);
        assert_eq!(r.overall_macro.prefix, 50.0);
        assert_eq!(r.groups_micro[&Group::SequenceUnderstanding].prefix, 25.0);
        assert_eq!(r.groups_macro[&Group::SequenceUnderstanding].prefix, 50.0);
        assert_eq!(r.groups_micro[&Group::ActionPrediction].n, 0);
        assert_eq!(r.avg_input_tokens, Some(100.0));
        assert!(!r.tasks.contains_key(&Task::IP));
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_narrows_with_n() {
        let make =
            |n: usize| -> Vec<Scorable> { (0..n).map(|i| row(Task::IP, i % 2 == 0)).collect() };
        let small = score(&make(40), BTreeMap::new(), 500, 1);
        let large = score(&make(4000), BTreeMap::new(), 500, 1);
        for r in [&small, &large] {
            let (lo, hi) = r.overall_micro.prefix_ci95;
            assert!(lo < 50.0 && 50.0 < hi, "{lo} {hi}");
        }
        let width = |r: &ScoreReport| r.overall_micro.prefix_ci95.1 - r.overall_micro.prefix_ci95.0;
        assert!(width(&large) < width(&small) / 5.0);
        // Binomial standard error at n = 4000 is 0.79 points: the 95% interval is about +-1.55.
        assert!((width(&large) - 3.1).abs() < 0.8, "{}", width(&large));
    }
}
