//! `uqa study report DIR`: the study's finished elements in the paper's Table 2 layout (every
//! element a row, beside the prior and history baselines of the same questions, with bootstrap
//! CIs and paired verdicts; uqabench's report); the layouts of Tables 3 to 6 the study's axes
//! call for, seeds aggregated, Table 5 with its power-law fit (`study_tables.*`); and the
//! elements not finished yet, listed as missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use uqabench::report::layouts::{self, ElementRun, Layout};
use uqabench::report::plots::{scaling_png, scaling_svg};
use uqabench::report::{Report, ReportOptions, Run, write_report_with};
use uqabench::score::read_predictions;

use super::plan::STAGE_MARKER;
use super::spec::Study;
use crate::{PipelineError, Result};

/// The file listing every element and where it stands, beside the report's tables.
pub const ELEMENTS_FILE: &str = "elements.md";
/// Tables 3 to 6 (`.md`, `.csv`, `.json`).
pub const TABLES_FILE: &str = "study_tables";
/// Bootstrap draws of the layouts' intervals, and their seed (fixed: a report is reproducible).
const RESAMPLES: usize = 1000;
const BOOTSTRAP_SEED: u64 = 20_240_501;

#[derive(Debug)]
pub struct StudyReport {
    pub report: Report,
    /// Tables 3 to 6, as far as the study's axes and finished elements fill them.
    pub tables: Vec<Layout>,
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
    let mut finished = Vec::new();
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
            let run = Run::locate(&eval)?;
            finished.push(ElementRun {
                name: e.name.clone(),
                values: e.values.clone(),
                seed: e.seed,
                encoder_params: run.info.encoder_params,
                rows: read_predictions(&run.predictions)?,
            });
            runs.push(run);
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
    let tables = layouts::layouts(&finished, RESAMPLES, BOOTSTRAP_SEED)?;
    if !tables.is_empty() {
        written.extend(write_tables(&tables, out)?);
    }
    Ok(StudyReport {
        report,
        tables,
        written,
        missing,
    })
}

/// `study_tables.{md,csv,json}`, and Table 5's accuracy against size as SVG and PNG.
fn write_tables(tables: &[Layout], out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut put = |name: String, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        uqa_data::atomic::write_atomic(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    put(
        format!("{TABLES_FILE}.md"),
        layouts::markdown(tables).as_bytes(),
    )?;
    put(
        format!("{TABLES_FILE}.csv"),
        layouts::csv(tables).as_bytes(),
    )?;
    let json = serde_json::to_vec_pretty(tables).unwrap_or_default();
    put(format!("{TABLES_FILE}.json"), &json)?;
    for t in tables.iter().filter(|t| t.row_axis == "sizes") {
        let points: Vec<(String, f64, f64)> = t
            .cells
            .iter()
            .filter_map(|c| {
                let label = if c.group.is_empty() {
                    c.row.clone()
                } else {
                    format!("{} / {}", c.group, c.row)
                };
                c.encoder_params.map(|p| (label, p, c.accuracy))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let title = "Table 5: overall accuracy against encoder parameters";
        put(
            "table5_scaling.svg".into(),
            scaling_svg(title, &points)?.as_bytes(),
        )?;
        put("table5_scaling.png".into(), &scaling_png(title, &points)?)?;
    }
    Ok(written)
}

/// The layouts as Markdown (what `study_tables.md` holds).
pub fn tables_markdown(tables: &[Layout]) -> String {
    layouts::markdown(tables)
}
