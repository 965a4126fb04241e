//! The report's baseline rows: the prior (and, when the dataset is found, the history
//! baseline) over the questions the runs answered: the questions file the runs record
//! (`run.json` / `eval.json`), whose folder holds the training questions the prior learns
//! from; or `--qa`'s evaluation file. When none is known the report says so.

use std::path::{Path, PathBuf};

use super::Run;
use crate::baseline::{BaselineKind, BaselineRun, baseline_predictions};
use crate::error::Result;

/// The questions the baselines answer: a questions folder (`uqa qa-gen` output) and, when the
/// runs recorded one, the file of it they answered (default: its evaluation file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineQuestions {
    pub qa_dir: PathBuf,
    pub file: Option<PathBuf>,
}

/// The questions for the baselines, and notes for the report.
pub fn questions_for(
    runs: &[Run],
    explicit: Option<&Path>,
) -> (Option<BaselineQuestions>, Vec<String>) {
    if let Some(dir) = explicit {
        let q = BaselineQuestions {
            qa_dir: dir.to_path_buf(),
            file: None,
        };
        return (Some(q), Vec::new());
    }
    let mut files: Vec<&Path> = Vec::new();
    for r in runs {
        if let Some(f) = r.questions.as_deref()
            && !files.contains(&f)
        {
            files.push(f);
        }
    }
    let mut notes = Vec::new();
    match files.len() {
        0 => notes.push(
            "No questions folder: no run records its questions file (run.json `questions`, \
             eval.json `questions_file`) and --qa was not given, so this report has no prior \
             or history baseline row."
                .to_string(),
        ),
        1 => {}
        _ => notes.push(format!(
            "The runs answered {} questions files ({}); the baselines answer the first.",
            files.len(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let first = files.first().and_then(|f| {
        Some(BaselineQuestions {
            qa_dir: f.parent()?.to_path_buf(),
            file: Some(f.to_path_buf()),
        })
    });
    (first, notes)
}

/// Computes the baselines for `questions`, leaving out the kinds `present` already has (a run
/// of that name was given). Failures become notes, except the prior's when the folder was named
/// explicitly and the history's when the dataset was: then the user asked for them.
pub fn compute(
    questions: &BaselineQuestions,
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
        match baseline_predictions(kind, &questions.qa_dir, questions.file.as_deref(), data) {
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
