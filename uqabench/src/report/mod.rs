//! `uqa report RUN...`: score each run's `predictions.jsonl` and write the paper's tables
//! (Markdown, CSV, JSON) and plots (SVG and PNG) for all runs side by side, with the prior and
//! history baselines of the same questions (`baselines`), how many distinct answers each run
//! gives, what could not be scored per sub-task, and paired verdicts between runs (`compare`).

pub mod baselines;
pub mod compare;
pub mod layouts;
pub mod plots;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uqa_data::atomic::write_atomic;

use crate::baseline::{BaselineKind, BaselineRun};
use crate::error::{QaError, Result};
use crate::qa::Task;
use crate::score::{Prediction, ScoreReport, SkipReason, read_predictions, score_predictions};
use compare::Comparison;
use tables::{Averaging, Rule};

/// A question file row that was not answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRow {
    pub row: usize,
    pub reason: String,
    /// The row's `task` column, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

pub const PREDICTIONS_FILE: &str = "predictions.jsonl";
pub const RUN_FILE: &str = "run.json";
/// `uqa eval`'s summary beside the predictions (questions file, rows not asked).
pub const EVAL_SUMMARY_FILE: &str = "eval.json";

/// Optional `run.json` beside a run's predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    #[serde(default)]
    pub name: Option<String>,
    /// Encoder parameters without embedding tables (the paper's convention), for scaling plots.
    #[serde(default)]
    pub encoder_params: Option<f64>,
    /// The questions file the run answered (its folder holds the baselines' training file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<String>,
}

/// What the report reads of `eval.json`; other fields are ignored, missing ones default.
#[derive(Debug, Clone, Default, Deserialize)]
struct EvalRecord {
    #[serde(default)]
    questions_file: Option<String>,
    #[serde(default)]
    skipped: Vec<SkippedRow>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| QaError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| QaError::BadLine {
        path: path.to_path_buf(),
        line: e.line(),
        reason: e.to_string(),
    })
}

/// A run: a folder holding `predictions.jsonl` (and maybe `run.json`, `eval.json`), or a
/// `.jsonl` file.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub predictions: PathBuf,
    pub info: RunInfo,
    /// The questions file the run answered, when `run.json` or `eval.json` records it.
    pub questions: Option<PathBuf>,
    /// Question rows `uqa eval` could not ask (from `eval.json`), with their sub-task.
    pub not_asked: Vec<SkippedRow>,
    /// Set for a `uqa baseline` run folder (it holds `baseline.json`).
    pub baseline: Option<BaselineKind>,
}

/// What the report reads of `baseline.json`.
#[derive(Debug, Clone, Deserialize)]
struct BaselineRecord {
    kind: BaselineKind,
    #[serde(default)]
    skipped: Vec<SkippedRow>,
}

impl Run {
    pub fn locate(path: &Path) -> Result<Self> {
        let (predictions, dir) = if path.is_dir() {
            (path.join(PREDICTIONS_FILE), Some(path))
        } else {
            (path.to_path_buf(), None)
        };
        if !predictions.exists() {
            return Err(QaError::Invalid(format!(
                "{}: no predictions file",
                predictions.display()
            )));
        }
        let existing = |name: &str| dir.map(|d| d.join(name)).filter(|p| p.exists());
        let info: RunInfo = match existing(RUN_FILE) {
            Some(p) => read_json(&p)?,
            None => RunInfo::default(),
        };
        let mut eval: EvalRecord = match existing(EVAL_SUMMARY_FILE) {
            Some(p) => read_json(&p)?,
            None => EvalRecord::default(),
        };
        let baseline: Option<BaselineRecord> = match existing(crate::baseline::SUMMARY_FILE) {
            Some(p) => Some(read_json(&p)?),
            None => None,
        };
        if let Some(b) = &baseline {
            eval.skipped.extend(b.skipped.iter().cloned());
        }
        let fallback = path
            .file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            name: info.name.clone().unwrap_or(fallback),
            predictions,
            questions: info
                .questions
                .clone()
                .or(eval.questions_file)
                .map(PathBuf::from),
            not_asked: eval.skipped,
            baseline: baseline.map(|b| b.kind),
            info,
        })
    }
}

/// What `uqa report` adds to the runs it is given.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The questions folder whose prior and history baselines join the report; `None`: the
    /// folder the runs record.
    pub qa: Option<PathBuf>,
    /// The dataset of the history baseline; `None`: the one `qa.json` records.
    pub data: Option<PathBuf>,
    /// Extra pairs of run names to compare (A, B).
    pub compare: Vec<(String, String)>,
}

/// Everything `uqa report` computed, saved as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The questions file the baseline rows answer (`None`: no baseline row, see `notes`).
    pub questions: Option<String>,
    /// What a reader must know: a missing questions folder, a baseline that could not run.
    pub notes: Vec<String>,
    /// The runs given, in order, then the baselines.
    pub runs: Vec<RunScores>,
    /// Paired differences: each model against the prior, models against each other.
    pub comparisons: Vec<Comparison>,
}

/// A model's run, or a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Model,
    Prior,
    History,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunScores {
    pub name: String,
    pub kind: RunKind,
    pub predictions: String,
    pub encoder_params: Option<f64>,
    pub scores: ScoreReport,
    /// Distinct predictions per sub-task and over all (`All`): a model that gives one answer
    /// per template scores like the prior.
    pub distinct_predictions: BTreeMap<String, usize>,
    /// Distinct gold answers of the same questions, for scale.
    pub distinct_answers: BTreeMap<String, usize>,
    /// Questions not scored per sub-task (`unknown` when the sub-task is unknown): rows the
    /// run could not ask plus rows whose sub-task could not be resolved.
    pub not_scored: BTreeMap<String, usize>,
}

/// Column of the distinct and not-scored tables holding the totals and unknown tasks.
const ALL: &str = "All";
const UNKNOWN: &str = "unknown";

fn task_of(p: &Prediction) -> Option<Task> {
    crate::score::classify(p).ok().map(|s| s.task)
}

fn distinct(rows: &[Prediction], field: fn(&Prediction) -> &str) -> BTreeMap<String, usize> {
    let mut sets: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        let task = task_of(r).map_or(UNKNOWN.to_string(), |t| t.name().to_string());
        sets.entry(task).or_default().insert(field(r));
        sets.entry(ALL.into()).or_default().insert(field(r));
    }
    sets.into_iter().map(|(k, v)| (k, v.len())).collect()
}

fn not_scored(skipped: &[SkippedRow], scores: &ScoreReport) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for s in skipped {
        let task = s
            .task
            .as_deref()
            .and_then(Task::parse)
            .map_or(UNKNOWN.to_string(), |t| t.name().to_string());
        *out.entry(task).or_default() += 1;
    }
    if let Some(&n) = scores.skipped.get(&SkipReason::UnknownTask) {
        *out.entry(UNKNOWN.into()).or_default() += n;
    }
    out
}

/// A run's predictions with everything the report derives from them.
struct Entry {
    rows: Vec<Prediction>,
    scores: RunScores,
}

fn entry(
    name: &str,
    kind: RunKind,
    source: String,
    encoder_params: Option<f64>,
    rows: Vec<Prediction>,
    skipped: &[SkippedRow],
) -> Entry {
    let scores = score_predictions(&rows);
    Entry {
        scores: RunScores {
            name: name.to_string(),
            kind,
            predictions: source,
            encoder_params,
            distinct_predictions: distinct(&rows, |p| &p.prediction),
            distinct_answers: distinct(&rows, |p| &p.answer),
            not_scored: not_scored(skipped, &scores),
            scores,
        },
        rows,
    }
}

fn kind_of(baseline: Option<BaselineKind>) -> RunKind {
    match baseline {
        None => RunKind::Model,
        Some(BaselineKind::Prior) => RunKind::Prior,
        Some(BaselineKind::History) => RunKind::History,
    }
}

fn baseline_entry(run: BaselineRun) -> Entry {
    let kind = kind_of(Some(run.summary.kind));
    let source = format!("computed from {}", run.summary.questions);
    entry(
        run.summary.kind.name(),
        kind,
        source,
        None,
        run.predictions,
        &run.summary.skipped,
    )
}

/// [`write_report_with`] with the baselines of the questions folder the runs record.
pub fn write_report(runs: &[Run], out: &Path) -> Result<(Report, Vec<PathBuf>)> {
    write_report_with(runs, &ReportOptions::default(), out)
}

/// Score the runs, add the baselines and comparisons, and write tables and plots into `out`.
/// Returns what was computed and the files written.
pub fn write_report_with(
    runs: &[Run],
    options: &ReportOptions,
    out: &Path,
) -> Result<(Report, Vec<PathBuf>)> {
    let mut entries: Vec<Entry> = Vec::new();
    for r in runs {
        let rows = read_predictions(&r.predictions)?;
        entries.push(entry(
            &r.name,
            kind_of(r.baseline),
            r.predictions.display().to_string(),
            r.info.encoder_params,
            rows,
            &r.not_asked,
        ));
    }
    let (questions, mut notes) = baselines::questions_for(runs, options.qa.as_deref());
    if let Some(questions) = &questions {
        // A baseline given as a run folder is not computed again.
        let present: Vec<String> = runs
            .iter()
            .filter_map(|r| r.baseline.map(|b| b.name().to_string()))
            .collect();
        let (computed, more) = baselines::compute(
            questions,
            options.data.as_deref(),
            options.qa.is_some(),
            &present,
        )?;
        notes.extend(more);
        entries.extend(computed.into_iter().map(baseline_entry));
    }
    let names: Vec<String> = entries.iter().map(|e| e.scores.name.clone()).collect();
    let is_model: Vec<bool> = entries
        .iter()
        .map(|e| e.scores.kind == RunKind::Model)
        .collect();
    let comparisons: Vec<Comparison> = compare::pairs(&names, &is_model, &options.compare)?
        .into_iter()
        .map(|(a, b)| compare::compare(&names[a], &entries[a].rows, &names[b], &entries[b].rows))
        .collect();

    let scored: Vec<(String, ScoreReport)> = entries
        .iter()
        .map(|e| (e.scores.name.clone(), e.scores.scores.clone()))
        .collect();
    std::fs::create_dir_all(out).map_err(|e| QaError::io(out, e))?;
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
    let answered = questions.as_ref().map(|q| {
        q.file
            .clone()
            .unwrap_or_else(|| q.qa_dir.join(crate::qa::generate::EVAL_FILE))
    });
    match &answered {
        Some(file) => md.push_str(&format!(
            "Baselines answer the questions of `{}`: `prior` gives each question the most \
             frequent training answer of its template, `history` applies fixed rules to the \
             context sequence (DF, MF and LI are defined on the context, so it scores 100 \
             there by construction; docs/TASKS.md).\n\n",
            file.display()
        )),
        None => md.push_str("No baseline rows (see the notes).\n\n"),
    }
    for n in &notes {
        md.push_str(&format!("> Note: {n}\n\n"));
    }
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
    md.push_str("\n## Bootstrap 95% intervals of the headline (All, micro)\n\n| model | All | 95% CI | scored | not scored |\n|---|---|---|---|---|\n");
    for e in &entries {
        let s = &e.scores.scores;
        md.push_str(&format!(
            "| {} | {:.2} | [{:.2}, {:.2}] | {} | {} |\n",
            e.scores.name,
            s.overall_micro.prefix,
            s.overall_micro.prefix_ci95.0,
            s.overall_micro.prefix_ci95.1,
            s.scored,
            e.scores.not_scored.values().sum::<usize>()
        ));
    }
    let task_columns: Vec<String> = Task::ALL.iter().map(|t| t.name().to_string()).collect();
    md.push_str(
        "\n## Questions not scored, per sub-task\n\nRows the run could not ask (eval.json: a \
         malformed chat, a prompt beyond the context) and rows whose sub-task is unknown.\n\n",
    );
    let mut columns = task_columns.clone();
    columns.push(UNKNOWN.into());
    let counts = |m: &BTreeMap<String, usize>, cols: &[String]| -> Vec<usize> {
        cols.iter()
            .map(|c| m.get(c).copied().unwrap_or(0))
            .collect()
    };
    let rows: Vec<(String, Vec<usize>)> = entries
        .iter()
        .map(|e| {
            (
                e.scores.name.clone(),
                counts(&e.scores.not_scored, &columns),
            )
        })
        .collect();
    md.push_str(&tables::counts_markdown(&columns, &rows));
    md.push_str(
        "\n## Distinct predictions per sub-task\n\nHow many different answers each run gave; \
         the last row counts the distinct gold answers of the first run's questions.\n\n",
    );
    let mut columns = task_columns;
    columns.push(ALL.into());
    let mut rows: Vec<(String, Vec<usize>)> = entries
        .iter()
        .map(|e| {
            let c = counts(&e.scores.distinct_predictions, &columns);
            (e.scores.name.clone(), c)
        })
        .collect();
    if let Some(first) = entries.first() {
        rows.push((
            "(gold answers)".into(),
            counts(&first.scores.distinct_answers, &columns),
        ));
    }
    md.push_str(&tables::counts_markdown(&columns, &rows));
    md.push_str("\n## Paired differences (prefix match, points; paired bootstrap 95% CI)\n\n");
    if comparisons.is_empty() {
        md.push_str(
            "No pair to compare: verdicts compare each model with the prior and 2 or 3 models \
             with each other; name other pairs with `--compare A,B`.\n",
        );
    } else {
        md.push_str(&compare::markdown(&comparisons));
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
        plots::bars_svg(tasks_title, &labels, &series)?.as_bytes(),
    )?;
    // PNG beside the SVG: it embeds anywhere (slides, chat, issue trackers) that SVG does not.
    put(
        "tasks.png",
        &plots::bars_png(tasks_title, &labels, &series)?,
    )?;
    let points: Vec<(String, f64, f64)> = entries
        .iter()
        .filter_map(|e| {
            let s = &e.scores;
            s.encoder_params
                .map(|p| (s.name.clone(), p, s.scores.overall_micro.prefix))
        })
        .collect();
    if points.len() >= 2 {
        let title = "Accuracy against encoder size";
        put(
            "scaling.svg",
            plots::scaling_svg(title, &points)?.as_bytes(),
        )?;
        put("scaling.png", &plots::scaling_png(title, &points)?)?;
    }

    let report = Report {
        questions: answered.map(|f| f.display().to_string()),
        notes,
        runs: entries.into_iter().map(|e| e.scores).collect(),
        comparisons,
    };
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| QaError::Invalid(e.to_string()))?;
    put("report.json", json.as_bytes())?;
    Ok((report, written))
}
