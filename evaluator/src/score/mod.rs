//! Scoring generated answers (REFERENCE.md section 5): matching rules, micro and macro
//! aggregates with bootstrap intervals, and the CTR mode.

pub mod aggregate;
pub mod ctr;
pub mod matching;
pub mod predictions;

use std::collections::BTreeMap;
use std::path::Path;

pub use aggregate::{Accuracy, ScoreReport, score};
pub use predictions::{Prediction, SkipReason, classify, read_predictions};

use crate::error::Result;

/// Read and score a predictions file (1,000 bootstrap resamples, fixed seed).
pub fn score_file(path: &Path) -> Result<ScoreReport> {
    let rows = read_predictions(path)?;
    let mut skipped: BTreeMap<SkipReason, usize> = BTreeMap::new();
    let mut scorable = Vec::with_capacity(rows.len());
    for r in &rows {
        match classify(r) {
            Ok(s) => scorable.push(s),
            Err(reason) => *skipped.entry(reason).or_default() += 1,
        }
    }
    Ok(score(&scorable, skipped, 1000, 0))
}
