//! `uqa study report DIR`: the study's finished elements in the paper's Table 2 layout (every
//! element a row, beside the prior and history baselines of the same questions, with bootstrap
//! CIs and paired verdicts; uqabench's report), and the elements not finished yet, listed as
//! missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use uqabench::report::{Report, ReportOptions, Run, write_report_with};

use super::local::STAGE_MARKER;
use super::spec::Study;
use crate::{PipelineError, Result};

/// The file listing every element and where it stands, beside the report's tables.
pub const ELEMENTS_FILE: &str = "elements.md";

#[derive(Debug)]
pub struct StudyReport {
    pub report: Report,
    /// The report's files, `elements.md` included.
    pub written: Vec<PathBuf>,
    /// Elements whose evaluation has not finished.
    pub missing: Vec<String>,
}

/// Reports the study run in `dir` into `out` (default `DIR/report`); `compare` adds paired
/// verdicts between elements by name (every element is compared with the prior).
pub fn report(dir: &Path, out: &Path, compare: &[(String, String)]) -> Result<StudyReport> {
    let study = Study::recorded(dir)?;
    let mut runs = Vec::new();
    let mut missing = Vec::new();
    let mut listing = String::from(
        "# Elements\n\n| element | pre-training | alignment | evaluation |\n|---|---|---|---|\n",
    );
    for e in &study.elements {
        let done = |p: &Path| p.join(STAGE_MARKER).exists();
        let state = |p: &Path| if done(p) { "done" } else { "missing" };
        let eval = e.eval_dir(dir);
        let _ = writeln!(
            listing,
            "| {} | {} ({}) | {} ({}) | {} |",
            e.name,
            e.pretrain.key,
            state(&e.pretrain_dir(dir)),
            e.align.key,
            state(&e.align_dir(dir)),
            state(&eval)
        );
        if done(&eval) {
            runs.push(Run::locate(&eval)?);
        } else {
            missing.push(e.name.clone());
        }
    }
    if runs.is_empty() {
        return Err(PipelineError::Study {
            path: dir.to_path_buf(),
            reason: format!(
                "no element has finished its evaluation yet ({} elements; `uqa study run` first)",
                study.elements.len()
            ),
        });
    }
    let options = ReportOptions {
        compare: compare.to_vec(),
        ..ReportOptions::default()
    };
    let (report, mut written) = write_report_with(&runs, &options, out)?;
    if !missing.is_empty() {
        let _ = writeln!(
            listing,
            "\nMissing from the tables ({}): {}.",
            missing.len(),
            missing.join(", ")
        );
    }
    let path = out.join(ELEMENTS_FILE);
    uqa_data::atomic::write_atomic(&path, listing.as_bytes())?;
    written.push(path);
    Ok(StudyReport {
        report,
        written,
        missing,
    })
}
