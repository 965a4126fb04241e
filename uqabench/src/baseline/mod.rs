//! Baselines that answer the evaluation questions without a model: `prior` (the most frequent
//! training answer of the question's template) and `history` (fixed rules over the context
//! sequence). Each writes a run folder as `uqa eval` does (`predictions.jsonl`, `run.json`) plus
//! `baseline.json`, so `uqa report` reads it like any model; the report also computes them
//! itself when it knows the questions folder.

pub mod history;
pub mod prior;
pub mod questions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uqa_data::atomic::write_atomic;
use uqa_data::dataset::{Dataset, METADATA_FILE};

use crate::error::{QaError, Result};
use crate::qa::generate::{EVAL_FILE, META_FILE, TRAIN_FILE};
use crate::qa::templates::Question;
use crate::report::SkippedRow;
use crate::report::{PREDICTIONS_FILE, RUN_FILE, RunInfo};
use crate::score::Prediction;
use history::history_answer;
use prior::Prior;
use questions::{QaFile, read_questions};

/// Summary of a baseline run, saved as `baseline.json`.
pub const SUMMARY_FILE: &str = "baseline.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineKind {
    Prior,
    History,
}

impl BaselineKind {
    pub fn name(self) -> &'static str {
        match self {
            BaselineKind::Prior => "prior",
            BaselineKind::History => "history",
        }
    }
}

impl std::str::FromStr for BaselineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "prior" => Ok(BaselineKind::Prior),
            "history" => Ok(BaselineKind::History),
            other => Err(format!(
                "unknown baseline {other:?} (expected prior or history)"
            )),
        }
    }
}

/// How a baseline answered, saved as `baseline.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSummary {
    pub kind: BaselineKind,
    /// The evaluation questions file answered.
    pub questions: String,
    /// The training questions file (prior) or the dataset folder (history) it learnt from.
    pub source: String,
    pub answered: usize,
    /// Rows of the questions file that are not questions (e.g. a chat JSON that does not
    /// parse), with the reason; `uqa eval` skips the same rows.
    pub skipped: Vec<SkippedRow>,
    /// How many answers came from each rule: prior `key`, `task`, `nothing`; history `rule`,
    /// `too_short` (the context cannot support the question: empty answer), `unknown_wording`
    /// (not a `qa-gen` template: empty answer).
    pub answers_by: BTreeMap<String, usize>,
}

/// A baseline's answers to every question of a file, in file order.
#[derive(Debug, Clone)]
pub struct BaselineRun {
    pub predictions: Vec<Prediction>,
    pub summary: BaselineSummary,
}

fn prediction(r: &questions::QaRow, answer: String) -> Prediction {
    Prediction {
        question: r.question.clone(),
        prediction: answer,
        answer: r.answer.clone(),
        task: r.task_name.clone(),
        input_tokens: None,
    }
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The questions a baseline answers: `questions`, or else `qa_dir`'s evaluation file.
fn questions_to_answer(qa_dir: &Path, questions: Option<&Path>) -> PathBuf {
    questions.map_or_else(|| qa_dir.join(EVAL_FILE), Path::to_path_buf)
}

/// The prior's answers to `questions` (default: `qa_dir`'s evaluation file), learnt from
/// `qa_dir`'s training questions.
pub fn prior_predictions(qa_dir: &Path, questions: Option<&Path>) -> Result<BaselineRun> {
    let train_path = qa_dir.join(TRAIN_FILE);
    let train = read_questions(&train_path, false)?;
    if train.rows.is_empty() {
        return Err(QaError::Invalid(format!(
            "{}: no training question to learn the prior from",
            train_path.display()
        )));
    }
    let prior = Prior::fit(&train.rows);
    let eval = read_questions(&questions_to_answer(qa_dir, questions), false)?;
    let mut answers_by = BTreeMap::new();
    let predictions = eval
        .rows
        .iter()
        .map(|r| {
            let (answer, source) = prior.answer(&r.question, r.task);
            *answers_by
                .entry(format!("{source:?}").to_lowercase())
                .or_default() += 1;
            prediction(r, answer)
        })
        .collect();
    Ok(finish(
        BaselineKind::Prior,
        eval,
        absolute(&train_path),
        predictions,
        answers_by,
    ))
}

/// The history rules' answers to `questions` (default: `qa_dir`'s evaluation file). The item
/// catalog comes from `data_dir`, or else from the dataset recorded in `qa.json`
/// ([`dataset_of`]).
pub fn history_predictions(
    qa_dir: &Path,
    questions: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<BaselineRun> {
    let data_dir = match data_dir {
        Some(d) => d.to_path_buf(),
        None => dataset_of(qa_dir)?,
    };
    let catalog = Dataset::open(&data_dir)?.catalog()?;
    let eval = read_questions(&questions_to_answer(qa_dir, questions), true)?;
    let mut answers_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut predictions = Vec::with_capacity(eval.rows.len());
    for r in &eval.rows {
        if let Some(&bad) = r
            .context
            .iter()
            .find(|&&i| i as usize >= catalog.items.len())
        {
            return Err(QaError::Invalid(format!(
                "{} row {}: item {bad} is not in the catalog of {} ({} items): the questions \
                 belong to another dataset",
                eval.path.display(),
                r.row,
                data_dir.display(),
                catalog.num_items()
            )));
        }
        let (answer, how) = match Question::parse(&r.question) {
            None => (String::new(), "unknown_wording"),
            Some((q, _)) => match history_answer(&catalog, &r.context, &q) {
                Some(a) => (a, "rule"),
                None => (String::new(), "too_short"),
            },
        };
        *answers_by.entry(how.to_string()).or_default() += 1;
        predictions.push(prediction(r, answer));
    }
    Ok(finish(
        BaselineKind::History,
        eval,
        absolute(&data_dir),
        predictions,
        answers_by,
    ))
}

fn finish(
    kind: BaselineKind,
    eval: QaFile,
    source: String,
    predictions: Vec<Prediction>,
    answers_by: BTreeMap<String, usize>,
) -> BaselineRun {
    BaselineRun {
        summary: BaselineSummary {
            kind,
            questions: absolute(&eval.path),
            source,
            answered: predictions.len(),
            skipped: eval.skipped,
            answers_by,
        },
        predictions,
    }
}

/// Either baseline by kind.
pub fn baseline_predictions(
    kind: BaselineKind,
    qa_dir: &Path,
    questions: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<BaselineRun> {
    match kind {
        BaselineKind::Prior => prior_predictions(qa_dir, questions),
        BaselineKind::History => history_predictions(qa_dir, questions, data_dir),
    }
}

/// The dataset folder of a questions folder: the one `qa.json` records (as written, else
/// relative to the questions folder), or the questions folder itself when it is a dataset
/// (`qa-gen` writes into the dataset folder by default).
pub fn dataset_of(qa_dir: &Path) -> Result<PathBuf> {
    let meta = qa_dir.join(META_FILE);
    let mut tried = Vec::new();
    if meta.exists() {
        let bytes = std::fs::read(&meta).map_err(|e| QaError::io(&meta, e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| QaError::BadLine {
                path: meta.clone(),
                line: e.line(),
                reason: e.to_string(),
            })?;
        if let Some(d) = v.get("dataset").and_then(|d| d.as_str()) {
            let recorded = PathBuf::from(d);
            for candidate in [recorded.clone(), qa_dir.join(&recorded)] {
                if candidate.join(METADATA_FILE).exists() {
                    return Ok(candidate);
                }
                tried.push(candidate);
            }
        }
    }
    if qa_dir.join(METADATA_FILE).exists() {
        return Ok(qa_dir.to_path_buf());
    }
    tried.push(qa_dir.to_path_buf());
    Err(QaError::Invalid(format!(
        "{}: cannot find the dataset of these questions (no {METADATA_FILE} in {}); pass it \
         explicitly (--data DIR)",
        meta.display(),
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn to_json<T: Serialize>(value: &T, pretty: bool) -> Result<String> {
    if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| QaError::Invalid(e.to_string()))
}

/// Writes `run` as a run folder: `predictions.jsonl`, `run.json` (named after the baseline,
/// recording the questions file) and `baseline.json`.
pub fn write_baseline_run(run: &BaselineRun, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| QaError::io(out, e))?;
    let mut lines = String::new();
    for p in &run.predictions {
        lines.push_str(&to_json(p, false)?);
        lines.push('\n');
    }
    write_atomic(out.join(PREDICTIONS_FILE), lines.as_bytes())?;
    let info = RunInfo {
        name: Some(run.summary.kind.name().to_string()),
        encoder_params: None,
        questions: Some(run.summary.questions.clone()),
    };
    write_atomic(out.join(RUN_FILE), to_json(&info, true)?.as_bytes())?;
    write_atomic(
        out.join(SUMMARY_FILE),
        to_json(&run.summary, true)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qa::generate::chat_json;
    use crate::qa::templates::{Attr, Lang};
    use crate::report::Run;
    use uqa_data::schema::{Columns, Vocab};
    use uqa_data::writer::{Position, SequenceWriter};

    /// A question file: one row per (chat text, task), each over a one-click context.
    fn write_questions(path: &Path, rows: &[(String, &str)]) {
        let vocab = Vocab {
            items: 3,
            cates: 3,
            brands: 3,
            shops: 3,
            sellers: 3,
            tokens: 10,
        };
        let columns = Columns {
            user_id: true,
            timestamps: true,
            text: true,
            task: true,
        };
        let mut w = SequenceWriter::create(path, columns, &vocab, 1).unwrap();
        let mut b = w.builder();
        for (r, (text, task)) in rows.iter().enumerate() {
            b.begin_row(r as i64 + 1);
            b.push_position(&Position {
                ids: [1, 1, 1, 1, 1],
                bags: [&[2], &[], &[], &[], &[]],
                timestamp: 0,
            });
            b.end_row(Some(text), Some(task));
        }
        w.write(&mut b).unwrap();
        w.finish().unwrap();
    }

    fn qa(q: &Question, answer: &str) -> (String, &'static str) {
        (chat_json(&q.render(Lang::Zh), answer), q.task().name())
    }

    #[test]
    fn prior_run_folder_on_a_hand_made_question_set() {
        let dir = tempfile::tempdir().unwrap();
        let brand = Question::NextAttr { attr: Attr::Brand };
        let count = |v: &str| Question::CountValue {
            attr: Attr::Shop,
            value: v.into(),
        };
        write_questions(
            &dir.path().join(TRAIN_FILE),
            &[
                qa(&brand, "b2"),
                qa(&brand, "b1"),
                qa(&brand, "b2"),
                qa(&count("s1"), "4"),
                qa(&count("s2"), "3"),
                qa(&count("s3"), "3"),
            ],
        );
        let cate = Question::NextAttr {
            attr: Attr::Category,
        };
        write_questions(
            &dir.path().join(EVAL_FILE),
            &[
                qa(&brand, "b1"),
                ("[{not json".into(), "AP"),
                qa(&count("s9"), "3"),
                qa(&cate, "c1"),
                qa(&Question::NextTitle, "t1"),
            ],
        );
        let run = prior_predictions(dir.path(), None).unwrap();
        let answers: Vec<&str> = run
            .predictions
            .iter()
            .map(|p| p.prediction.as_str())
            .collect();
        // Brand: b2 (2 of 3); count: "3" (2 of 3) whatever the shop; category: unseen, the
        // most frequent AP answer (b2); IP: nothing of its task in training.
        assert_eq!(answers, ["b2", "3", "b2", ""]);
        assert_eq!(run.summary.skipped.len(), 1);
        assert_eq!(run.summary.skipped[0].row, 1);
        assert_eq!(run.summary.skipped[0].task.as_deref(), Some("AP"));
        let by = |k: &str| run.summary.answers_by.get(k).copied();
        assert_eq!(
            (by("key"), by("task"), by("nothing")),
            (Some(2), Some(1), Some(1))
        );

        let out = dir.path().join("prior_run");
        write_baseline_run(&run, &out).unwrap();
        let located = Run::locate(&out).unwrap();
        assert_eq!(located.name, "prior");
        assert_eq!(
            located.questions.as_deref().and_then(Path::parent),
            Some(std::path::absolute(dir.path()).unwrap().as_path())
        );
        let read = crate::score::read_predictions(&located.predictions).unwrap();
        assert_eq!(read, run.predictions);
        // One of four right: the count.
        let scores = crate::score::score_predictions(&read);
        assert_eq!(scores.overall_micro.prefix, 25.0);
        assert!(dataset_of(dir.path()).is_err());
    }
}
