//! Is run A better than run B on the same questions? The difference of their prefix-match
//! accuracies, overall and per sub-task, with a paired bootstrap 95% interval: every resample
//! draws question indices (within each sub-task, keeping its size, as the per-run bootstrap
//! does) and scores both runs on the same indices, so the interval reflects how the runs differ
//! question by question rather than two independent spreads.

use std::collections::BTreeMap;

use serde::Serialize;
use uqa_data::rng::Rng;

use super::aggregate::percentile;
use super::matching::prefix_match;
use super::predictions::{Prediction, classify};
use crate::error::{QaError, Result};
use crate::qa::Task;

/// Resamples of [`paired_difference`].
pub const PAIRED_RESAMPLES: usize = 2000;
/// The seed `uqa report` uses, so a report's intervals are reproducible.
pub const PAIRED_SEED: u64 = 0;

/// A difference of accuracies in points (A minus B) and its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    pub n: usize,
    pub diff: f64,
    pub ci95: (f64, f64),
}

impl Difference {
    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.ci95.0 > 0.0 || self.ci95.1 < 0.0
    }

    /// "A - B = +X.XX points, 95% CI [a, b]", with ": no significant difference" appended when
    /// the interval contains zero.
    pub fn verdict(&self, name_a: &str, name_b: &str) -> String {
        // Adding 0.0 turns -0.0 into 0.0, so an exact tie never prints as "-0.00".
        let (d, lo, hi) = (self.diff + 0.0, self.ci95.0 + 0.0, self.ci95.1 + 0.0);
        let mut s = format!("{name_a} - {name_b} = {d:+.2} points, 95% CI [{lo:.2}, {hi:.2}]");
        if !self.significant() {
            s.push_str(": no significant difference");
        }
        s
    }
}

/// A paired comparison of two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedDiff {
    pub overall: Difference,
    /// Sub-tasks with at least one question.
    pub tasks: BTreeMap<Task, Difference>,
    /// Question pairs left out because no sub-task could be resolved (they are not scored
    /// either).
    pub unknown_task: usize,
    pub resamples: usize,
    pub seed: u64,
}

impl PairedDiff {
    /// The overall verdict, see [`Difference::verdict`].
    pub fn verdict(&self, name_a: &str, name_b: &str) -> String {
        self.overall.verdict(name_a, name_b)
    }

    /// The verdict on one sub-task; `None` when it has no question.
    pub fn task_verdict(&self, task: Task, name_a: &str, name_b: &str) -> Option<String> {
        self.tasks.get(&task).map(|d| d.verdict(name_a, name_b))
    }
}

/// [`paired_difference_with`] with [`PAIRED_RESAMPLES`] resamples.
pub fn paired_difference(a: &[Prediction], b: &[Prediction], seed: u64) -> Result<PairedDiff> {
    paired_difference_with(a, b, PAIRED_RESAMPLES, seed)
}

/// Paired difference of prefix-match accuracy, A minus B, in points. The runs must answer the
/// same questions in the same order (question and gold answer equal row by row); anything else
/// is an error naming the first row that differs.
pub fn paired_difference_with(
    a: &[Prediction],
    b: &[Prediction],
    resamples: usize,
    seed: u64,
) -> Result<PairedDiff> {
    if a.len() != b.len() {
        return Err(QaError::Invalid(format!(
            "paired comparison: the runs answer {} and {} questions; they must answer the same ones",
            a.len(),
            b.len()
        )));
    }
    // Per sub-task, the per-question difference of credits: -1, 0 or +1.
    let mut by_task: BTreeMap<Task, Vec<f64>> = BTreeMap::new();
    let mut unknown_task = 0;
    for (i, (pa, pb)) in a.iter().zip(b).enumerate() {
        if pa.question != pb.question || pa.answer != pb.answer {
            return Err(QaError::Invalid(format!(
                "paired comparison: row {} differs (question {:?} / answer {:?} against \
                 question {:?} / answer {:?}); the runs must answer the same questions in the \
                 same order",
                i + 1,
                pa.question,
                pa.answer,
                pb.question,
                pb.answer
            )));
        }
        let Ok(s) = classify(pa) else {
            unknown_task += 1;
            continue;
        };
        let credit = |p: &Prediction| f64::from(u8::from(prefix_match(&p.prediction, &p.answer)));
        by_task
            .entry(s.task)
            .or_default()
            .push(credit(pa) - credit(pb));
    }

    let point = figures(&by_task);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); point.len()];
    let mut rng = Rng::new(seed);
    for _ in 0..resamples {
        let resampled: BTreeMap<Task, Vec<f64>> = by_task
            .iter()
            .map(|(t, d)| {
                let pick = (0..d.len())
                    .map(|_| d[rng.below(d.len() as u64) as usize])
                    .collect();
                (*t, pick)
            })
            .collect();
        for (k, (_, diff)) in figures(&resampled).into_iter().enumerate() {
            draws[k].push(diff);
        }
    }
    let mut diffs = point.into_iter().zip(draws).map(|((n, diff), mut d)| {
        d.sort_by(f64::total_cmp);
        let ci95 = if resamples > 0 {
            (percentile(&d, 0.025), percentile(&d, 0.975))
        } else {
            (diff, diff)
        };
        Difference { n, diff, ci95 }
    });
    let overall = diffs
        .next()
        .expect("figures starts with the overall difference");
    let tasks = by_task.keys().copied().zip(diffs).collect();
    Ok(PairedDiff {
        overall,
        tasks,
        unknown_task,
        resamples,
        seed,
    })
}

/// (n, mean difference in points): overall first, then each sub-task present, in order.
fn figures(by_task: &BTreeMap<Task, Vec<f64>>) -> Vec<(usize, f64)> {
    let mean = |n: usize, sum: f64| if n == 0 { 0.0 } else { 100.0 * sum / n as f64 };
    let n: usize = by_task.values().map(Vec::len).sum();
    let sum: f64 = by_task.values().flatten().sum();
    let mut out = vec![(n, mean(n, sum))];
    out.extend(
        by_task
            .values()
            .map(|d| (d.len(), mean(d.len(), d.iter().sum()))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rows: &[(Task, bool)]) -> Vec<Prediction> {
        rows.iter()
            .enumerate()
            .map(|(i, (task, correct))| Prediction {
                question: format!("q{i}"),
                prediction: if *correct {
                    format!("a{i}!")
                } else {
                    "no".into()
                },
                answer: format!("a{i}"),
                task: Some(task.name().into()),
                input_tokens: None,
            })
            .collect()
    }

    #[test]
    fn identical_runs_differ_by_exactly_nothing() {
        let rows: Vec<(Task, bool)> = (0..50).map(|i| (Task::ALL[i % 7], i % 3 == 0)).collect();
        let a = run(&rows);
        let d = paired_difference(&a, &a, 7).unwrap();
        assert_eq!(d.overall.diff, 0.0);
        assert_eq!(d.overall.ci95, (0.0, 0.0));
        assert_eq!(d.tasks.len(), 7);
        assert_eq!(
            d.verdict("A", "B"),
            "A - B = +0.00 points, 95% CI [0.00, 0.00]: no significant difference"
        );
    }

    #[test]
    fn all_right_against_all_wrong_is_a_hundred_points_without_spread() {
        let rows: Vec<(Task, bool)> = (0..30).map(|i| (Task::ALL[i % 3], true)).collect();
        let a = run(&rows);
        let b = run(&rows.iter().map(|(t, _)| (*t, false)).collect::<Vec<_>>());
        let d = paired_difference(&a, &b, 0).unwrap();
        assert_eq!((d.overall.diff, d.overall.ci95), (100.0, (100.0, 100.0)));
        assert_eq!(d.tasks[&Task::MF].n, 10);
        assert_eq!(
            d.verdict("model", "prior"),
            "model - prior = +100.00 points, 95% CI [100.00, 100.00]"
        );
        assert_eq!(
            paired_difference(&b, &a, 0)
                .unwrap()
                .verdict("prior", "model"),
            "prior - model = -100.00 points, 95% CI [-100.00, -100.00]"
        );
    }

    #[test]
    fn mixed_case_matches_the_hand_computed_estimate_and_its_interval_brackets_it() {
        // 40 DF questions: A right on 30, B on 20, the 20 nested in the 30 (differences +1 x10,
        // 0 x30): +25 points. 40 IP questions: A right on 10, B on 14, B's covering A's
        // (differences -1 x4, 0 x36): -10 points. Overall (10 - 4) / 80 = +7.5 points.
        let mut a_rows = Vec::new();
        let mut b_rows = Vec::new();
        for i in 0..40 {
            a_rows.push((Task::DF, i < 30));
            b_rows.push((Task::DF, i < 20));
        }
        for i in 0..40 {
            a_rows.push((Task::IP, i < 10));
            b_rows.push((Task::IP, i < 14));
        }
        let d = paired_difference(&run(&a_rows), &run(&b_rows), 3).unwrap();
        assert!((d.overall.diff - 7.5).abs() < 1e-12, "{}", d.overall.diff);
        assert!((d.tasks[&Task::DF].diff - 25.0).abs() < 1e-12);
        assert!((d.tasks[&Task::IP].diff + 10.0).abs() < 1e-12);
        for x in [&d.overall, &d.tasks[&Task::DF], &d.tasks[&Task::IP]] {
            assert!(x.ci95.0 < x.diff && x.diff < x.ci95.1, "{x:?}");
        }
        // DF: 10 of 40 questions at +1, the standard error is 100 * sqrt(.25 * .75 / 40) = 6.8
        // points: the interval is about +-13 around +25, clear of zero.
        assert!(d.tasks[&Task::DF].significant());
        let (lo, hi) = d.tasks[&Task::DF].ci95;
        assert!((hi - lo - 26.8).abs() < 6.0, "{lo} {hi}");
        // The same seed gives the same interval.
        assert_eq!(
            d,
            paired_difference(&run(&a_rows), &run(&b_rows), 3).unwrap()
        );
    }

    #[test]
    fn runs_over_other_questions_are_refused_naming_the_row() {
        let a = run(&[(Task::DF, true), (Task::MF, true)]);
        let mut b = a.clone();
        b[1].answer = "other".into();
        let err = paired_difference(&a, &b, 0).unwrap_err().to_string();
        assert!(err.contains("row 2 differs"), "{err}");
        let err = paired_difference(&a, &a[..1], 0).unwrap_err().to_string();
        assert!(err.contains("2 and 1 questions"), "{err}");
    }
}
