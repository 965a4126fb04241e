//! `uqa report RUN...`: score each run's `predictions.jsonl` and write the paper's tables
//! (Markdown, CSV, JSON) and plots (SVG and PNG) for all runs side by side.

pub mod plots;
pub mod raster;
pub mod tables;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uqa_data::atomic::write_atomic;

use crate::error::{EvalError, Result};
use crate::qa::Task;
use crate::score::{ScoreReport, score_file};
use tables::{Averaging, Rule};

pub const PREDICTIONS_FILE: &str = "predictions.jsonl";
pub const RUN_FILE: &str = "run.json";

/// Optional `run.json` beside a run's predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    #[serde(default)]
    pub name: Option<String>,
    /// Encoder parameters without embedding tables (the paper's convention), for scaling plots.
    #[serde(default)]
    pub encoder_params: Option<f64>,
}

/// A run: a folder holding `predictions.jsonl` (and maybe `run.json`), or a `.jsonl` file.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub predictions: PathBuf,
    pub info: RunInfo,
}

impl Run {
    pub fn locate(path: &Path) -> Result<Self> {
        let (predictions, info_path) = if path.is_dir() {
            (path.join(PREDICTIONS_FILE), Some(path.join(RUN_FILE)))
        } else {
            (path.to_path_buf(), None)
        };
        if !predictions.exists() {
            return Err(EvalError::Invalid(format!(
                "{}: no predictions file",
                predictions.display()
            )));
        }
        let info: RunInfo = match info_path.filter(|p| p.exists()) {
            Some(p) => {
                let bytes = std::fs::read(&p).map_err(|e| EvalError::io(&p, e))?;
                serde_json::from_slice(&bytes).map_err(|e| EvalError::BadLine {
                    path: p.clone(),
                    line: e.line(),
                    reason: e.to_string(),
                })?
            }
            None => RunInfo::default(),
        };
        let fallback = path
            .file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            name: info.name.clone().unwrap_or(fallback),
            predictions,
            info,
        })
    }
}

/// Everything `uqa report` computed, saved as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runs: Vec<RunScores>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunScores {
    pub name: String,
    pub predictions: String,
    pub encoder_params: Option<f64>,
    pub scores: ScoreReport,
}

/// Score the runs and write tables and plots into `out`. Returns what was written.
pub fn write_report(runs: &[Run], out: &Path) -> Result<(Report, Vec<PathBuf>)> {
    let mut scored: Vec<(String, ScoreReport)> = Vec::new();
    for r in runs {
        scored.push((r.name.clone(), score_file(&r.predictions)?));
    }
    std::fs::create_dir_all(out).map_err(|e| EvalError::io(out, e))?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(name);
        write_atomic(&p, bytes)?;
        written.push(p);
        Ok(())
    };

    let mut md = String::from("# UQABench results\n\n");
    md.push_str(
        "Accuracy (%). Headline: the reference's rule (prediction starts with the gold answer), ",
    );
    md.push_str(
        "micro-averaged over samples for the group (SU, Act, Int) and overall (All) columns.\n\n",
    );
    md.push_str("## Table 2: prefix match, micro averages\n\n");
    md.push_str(&tables::table2_markdown(
        &scored,
        Averaging::Micro,
        Rule::Prefix,
    ));
    md.push_str("\n## Table 2: prefix match, macro averages (mean of sub-tasks)\n\n");
    md.push_str(&tables::table2_markdown(
        &scored,
        Averaging::Macro,
        Rule::Prefix,
    ));
    md.push_str("\n## Normalized match (case, width, spacing, separators forgiven), micro\n\n");
    md.push_str(&tables::table2_markdown(
        &scored,
        Averaging::Micro,
        Rule::Normalized,
    ));
    md.push_str("\n## List-aware partial credit, micro\n\n");
    md.push_str(&tables::table2_markdown(
        &scored,
        Averaging::Micro,
        Rule::Partial,
    ));
    md.push_str("\n## Bootstrap 95% intervals of the headline (All, micro)\n\n| model | All | 95% CI | scored | skipped |\n|---|---|---|---|---|\n");
    for (name, s) in &scored {
        let skipped: usize = s.skipped.values().sum();
        md.push_str(&format!(
            "| {name} | {:.2} | [{:.2}, {:.2}] | {} | {skipped} {:?} |\n",
            s.overall_micro.prefix,
            s.overall_micro.prefix_ci95.0,
            s.overall_micro.prefix_ci95.1,
            s.scored,
            s.skipped
        ));
    }
    md.push_str("\n## Table 7: average LLM input tokens per question\n\n");
    md.push_str(&tables::table7_markdown(&scored));
    put("report.md", md.as_bytes())?;
    put(
        "table2_micro.csv",
        tables::table2_csv(&scored, Averaging::Micro, Rule::Prefix).as_bytes(),
    )?;
    put(
        "table2_macro.csv",
        tables::table2_csv(&scored, Averaging::Macro, Rule::Prefix).as_bytes(),
    )?;
    put(
        "table2_normalized_micro.csv",
        tables::table2_csv(&scored, Averaging::Micro, Rule::Normalized).as_bytes(),
    )?;
    put(
        "table2_partial_micro.csv",
        tables::table2_csv(&scored, Averaging::Micro, Rule::Partial).as_bytes(),
    )?;
    put("table7.csv", tables::table7_csv(&scored).as_bytes())?;

    let labels: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
    let series: Vec<(String, Vec<Option<f64>>)> = scored
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                Task::ALL
                    .iter()
                    .map(|t| s.tasks.get(t).map(|a| a.prefix))
                    .collect(),
            )
        })
        .collect();
    let tasks_title = "Accuracy per sub-task (prefix match)";
    put(
        "tasks.svg",
        plots::bars_svg(tasks_title, &labels, &series).as_bytes(),
    )?;
    // PNG beside the SVG: it embeds anywhere (slides, chat, issue trackers) that SVG does not.
    put(
        "tasks.png",
        &plots::bars_png(tasks_title, &labels, &series)?,
    )?;
    let points: Vec<(String, f64, f64)> = runs
        .iter()
        .zip(&scored)
        .filter_map(|(r, (n, s))| {
            r.info
                .encoder_params
                .map(|p| (n.clone(), p, s.overall_micro.prefix))
        })
        .collect();
    if points.len() >= 2 {
        let title = "Accuracy against encoder size";
        put("scaling.svg", plots::scaling_svg(title, &points).as_bytes())?;
        put("scaling.png", &plots::scaling_png(title, &points)?)?;
    }

    let report = Report {
        runs: runs
            .iter()
            .zip(scored)
            .map(|(r, (name, scores))| RunScores {
                name,
                predictions: r.predictions.display().to_string(),
                encoder_params: r.info.encoder_params,
                scores,
            })
            .collect(),
    };
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| EvalError::Invalid(e.to_string()))?;
    put("report.json", json.as_bytes())?;
    Ok((report, written))
}
