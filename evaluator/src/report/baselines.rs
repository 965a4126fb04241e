//! The report's baseline rows: the prior (and, when the dataset is found, the history
//! baseline) over the questions the runs answered. The questions folder is `--qa`, or else the
//! one the runs record (`run.json` / `eval.json`); when none is known the report says so.

use std::path::{Path, PathBuf};

use super::Run;
use crate::baseline::{BaselineKind, BaselineRun, baseline_predictions};
use crate::error::Result;

/// The questions folder for the baselines, and notes for the report.
pub fn questions_folder(runs: &[Run], explicit: Option<&Path>) -> (Option<PathBuf>, Vec<String>) {
    if let Some(dir) = explicit {
        return (Some(dir.to_path_buf()), Vec::new());
    }
    let mut folders: Vec<PathBuf> = Vec::new();
    for r in runs {
        if let Some(dir) = r.questions.as_deref().and_then(Path::parent)
            && !folders.iter().any(|f| f == dir)
        {
            folders.push(dir.to_path_buf());
        }
    }
    let mut notes = Vec::new();
    match folders.len() {
        0 => notes.push(
            "No questions folder: no run records its questions file (run.json `questions`, \
             eval.json `questions_file`) and --qa was not given, so this report has no prior \
             or history baseline row."
                .to_string(),
        ),
        1 => {}
        _ => notes.push(format!(
            "The runs answered questions from {} folders ({}); the baselines answer those of \
             the first.",
            folders.len(),
            folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    (folders.into_iter().next(), notes)
}

/// Computes the baselines for `qa_dir`, leaving out the kinds `present` already has (a run of
/// that name was given). Failures become notes, except the prior's when the folder was named
/// explicitly and the history's when the dataset was: then the user asked for them.
pub fn compute(
    qa_dir: &Path,
    data: Option<&Path>,
    explicit_qa: bool,
    present: &[String],
) -> Result<(Vec<BaselineRun>, Vec<String>)> {
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    for kind in [BaselineKind::Prior, BaselineKind::History] {
        if present.iter().any(|n| n == kind.name()) {
            continue;
        }
        match baseline_predictions(kind, qa_dir, data) {
            Ok(run) => runs.push(run),
            Err(e) => {
                let asked = match kind {
                    BaselineKind::Prior => explicit_qa,
                    BaselineKind::History => data.is_some(),
                };
                if asked {
                    return Err(e);
                }
                notes.push(format!("No {} baseline row: {e}", kind.name()));
            }
        }
    }
    Ok((runs, notes))
}
