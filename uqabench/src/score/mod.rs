//! Scoring generated answers (REFERENCE.md section 5): matching rules, micro and macro
//! aggregates with bootstrap intervals, paired comparisons of two runs, and the CTR mode.

pub mod aggregate;
pub mod ctr;
pub mod matching;
pub mod paired;
pub mod predictions;

use std::collections::BTreeMap;
use std::path::Path;

pub use aggregate::{Accuracy, ScoreReport, score};
pub use paired::{
    Difference, PAIRED_RESAMPLES, PAIRED_SEED, PairedDiff, paired_difference,
    paired_difference_with,
};
pub use predictions::{Prediction, SkipReason, classify, read_predictions};

use crate::error::Result;

/// Read and score a predictions file (1,000 bootstrap resamples, fixed seed).
pub fn score_file(path: &Path) -> Result<ScoreReport> {
    Ok(score_predictions(&read_predictions(path)?))
}

/// Score predictions (1,000 bootstrap resamples, fixed seed); rows whose sub-task cannot be
/// resolved are counted as skipped.
pub fn score_predictions(rows: &[Prediction]) -> ScoreReport {
    let mut skipped: BTreeMap<SkipReason, usize> = BTreeMap::new();
    let mut scorable = Vec::with_capacity(rows.len());
    for r in rows {
        match classify(r) {
            Ok(s) => scorable.push(s),
            Err(reason) => *skipped.entry(reason).or_default() += 1,
        }
    }
    score(&scorable, skipped, 1000, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_gold_answers_are_scored_correct_as_the_reference_does() {
        let row = |prediction: &str, answer: &str| Prediction {
            question: "q".into(),
            prediction: prediction.into(),
            answer: answer.into(),
            task: Some("SI".into()),
            input_tokens: None,
        };
        let r = score_predictions(&[row("anything", ""), row("", ""), row("x", "y")]);
        assert_eq!(r.scored, 3);
        assert!(r.skipped.is_empty());
        let si = r.tasks[&crate::qa::Task::SI];
        assert!((si.prefix - 200.0 / 3.0).abs() < 1e-9, "{}", si.prefix);
        assert_eq!(si.normalized, si.prefix);
    }
}
