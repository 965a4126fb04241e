//! `uqa qa-gen`: question/answer files for alignment and evaluation, in the reference layout
//! (the user's context sequence in the ten feature columns, chat JSON in `text`) plus a `task`
//! column.
//!
//! Windows: evaluation questions read the whole training history as context and the held-out
//! tail as the future. Training questions never see the held-out tail: each history is split
//! again, chronologically, into a context and a pseudo-future (the last tenth, at least one
//! click), so alignment cannot learn the answers of the evaluation questions.
//!
//! Balance: each user offers at most one question per task and split; every task then gets the
//! same number of questions (the smallest availability, capped by the requested count), drawn
//! at random with the seed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::Dataset;
use uqa_data::rng::Rng;
use uqa_data::schema::{Columns, Feature};
use uqa_data::writer::SequenceWriter;

use super::rules::{QaPair, draw};
use super::task::Task;
use super::templates::Lang;
use crate::error::{EvalError, Result};

pub const TRAIN_FILE: &str = "align_data_train.arrow";
pub const EVAL_FILE: &str = "align_data_eval.arrow";
pub const META_FILE: &str = "qa.json";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QaGenConfig {
    pub lang: Lang,
    pub seed: u64,
    /// Questions per task in the training file (fewer if the data cannot support them).
    pub train_per_task: usize,
    /// Questions per task in the evaluation file.
    pub eval_per_task: usize,
}

/// What was generated, saved as `qa.json` beside the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaGenReport {
    pub config: QaGenConfig,
    pub dataset: String,
    /// Questions per task, per split.
    pub train: BTreeMap<String, usize>,
    pub eval: BTreeMap<String, usize>,
    /// Users that could offer a question, per task and split (before balancing).
    pub train_available: BTreeMap<String, usize>,
    pub eval_available: BTreeMap<String, usize>,
}

/// One generated row: whose sequence, how much of it, and the QA.
struct Row {
    user_row: usize,
    context_len: usize,
    qa: QaPair,
}

/// The pseudo-future length for training questions: a tenth of the history, at least one.
fn pseudo_future_len(n: usize) -> usize {
    ((n as f64 * 0.1).round() as usize).clamp(1, n.saturating_sub(1).max(1))
}

pub fn generate(data_dir: &Path, out_dir: &Path, config: QaGenConfig) -> Result<QaGenReport> {
    let ds = Dataset::open(data_dir)?;
    let catalog = ds.catalog()?;
    let users = ds.train.num_rows();
    let mut candidates: [BTreeMap<Task, Vec<Row>>; 2] = Default::default();
    for u in 0..users {
        let history = ds.train.row(u).ids(Feature::ItemId);
        let tail = ds.eval.row(u).ids(Feature::ItemId);
        let history: Vec<u32> = history.iter().map(|&i| i as u32).collect();
        let tail: Vec<u32> = tail.iter().map(|&i| i as u32).collect();
        let cut = history.len() - pseudo_future_len(history.len());
        let windows = [
            (&history[..cut], &history[cut..], cut),
            (&history[..], &tail[..], history.len()),
        ];
        for (split, (context, future, context_len)) in windows.into_iter().enumerate() {
            if context.is_empty() {
                continue;
            }
            for task in Task::ALL {
                let mut rng = Rng::derive(
                    config.seed,
                    ((u as u64) << 8) | (split as u64) << 4 | task as u64,
                );
                if let Some(qa) = draw(task, &catalog, context, future, &mut rng) {
                    candidates[split].entry(task).or_default().push(Row {
                        user_row: u,
                        context_len,
                        qa,
                    });
                }
            }
        }
    }

    let mut report = QaGenReport {
        config,
        dataset: data_dir.display().to_string(),
        train: BTreeMap::new(),
        eval: BTreeMap::new(),
        train_available: BTreeMap::new(),
        eval_available: BTreeMap::new(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| EvalError::io(out_dir, e))?;
    let [train, eval] = candidates;
    for (split, (rows, per_task, file)) in [
        (train, config.train_per_task, TRAIN_FILE),
        (eval, config.eval_per_task, EVAL_FILE),
    ]
    .into_iter()
    .enumerate()
    {
        let available: BTreeMap<String, usize> = Task::ALL
            .iter()
            .map(|t| (t.name().to_string(), rows.get(t).map_or(0, Vec::len)))
            .collect();
        let n = available.values().copied().min().unwrap_or(0).min(per_task);
        if n == 0 {
            return Err(EvalError::Invalid(format!(
                "{}: some task has no usable user for the {} split (available per task: {available:?}); \
                 the dataset is too small or its sequences too short",
                data_dir.display(),
                if split == 0 { "train" } else { "eval" }
            )));
        }
        let mut chosen: Vec<Row> = Vec::with_capacity(n * Task::ALL.len());
        let mut counts = BTreeMap::new();
        for (task, mut list) in rows {
            Rng::derive(config.seed, 0xBA1A_0000 + split as u64 * 16 + task as u64)
                .shuffle(&mut list);
            list.truncate(n);
            counts.insert(task.name().to_string(), list.len());
            chosen.extend(list);
        }
        // File order: by user, then task, so that readers stream through the sequences.
        chosen.sort_by_key(|r| (r.user_row, r.qa.question.task()));
        write_rows(&out_dir.join(file), &ds, &catalog, &chosen, config.lang)?;
        if split == 0 {
            report.train = counts;
            report.train_available = available;
        } else {
            report.eval = counts;
            report.eval_available = available;
        }
    }
    let json = serde_json::to_vec_pretty(&report).map_err(|e| EvalError::Invalid(e.to_string()))?;
    uqa_data::atomic::write_atomic(out_dir.join(META_FILE), &json)?;
    Ok(report)
}

/// The chat JSON of one QA: a user turn and an assistant turn.
pub fn chat_json(question: &str, answer: &str) -> String {
    serde_json::json!([
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ])
    .to_string()
}

fn write_rows(
    path: &Path,
    ds: &Dataset,
    catalog: &ItemCatalog,
    rows: &[Row],
    lang: Lang,
) -> Result<()> {
    let columns = Columns {
        user_id: true,
        timestamps: true,
        text: true,
        task: true,
    };
    let mut writer = SequenceWriter::create(path, columns, &ds.meta.vocab, ds.meta.id_base)?;
    let mut builder = writer.builder();
    for chunk in rows.chunks(2048) {
        for r in chunk {
            let seq = ds.train.row(r.user_row);
            let items = &seq.ids(Feature::ItemId)[..r.context_len];
            let times = seq.timestamps().unwrap_or_default();
            builder.begin_row(seq.user_id().unwrap_or(r.user_row as i64 + 1));
            for (k, &item) in items.iter().enumerate() {
                builder.push_position(
                    &catalog.position(item as u32, times.get(k).copied().unwrap_or(0)),
                );
            }
            let text = chat_json(&r.qa.question.render(lang), &r.qa.answer);
            builder.end_row(Some(&text), Some(r.qa.question.task().name()));
        }
        writer.write(&mut builder)?;
    }
    writer.finish()?;
    Ok(())
}
