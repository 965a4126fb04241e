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
use crate::error::{QaError, Result};

pub const TRAIN_FILE: &str = "align_data_train.arrow";
pub const EVAL_FILE: &str = "align_data_eval.arrow";
pub const VALID_FILE: &str = "align_data_valid.arrow";
pub const META_FILE: &str = "qa.json";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QaGenConfig {
    pub lang: Lang,
    pub seed: u64,
    /// Questions per task in the training file (fewer if the data cannot support them).
    pub train_per_task: usize,
    /// Questions per task in the evaluation file.
    pub eval_per_task: usize,
    /// Training windows per user: window `w` (1-based) ends the context `w` pseudo-futures
    /// before the end of the training history, and its pseudo-future is the tenth that follows.
    /// More windows give more, and more varied, training questions from the same users; none of
    /// them sees the held-out tail.
    #[serde(default = "one")]
    pub train_windows: usize,
    /// Validation questions per task (0: no validation file). When positive, a tenth of the
    /// users (drawn with the seed) give their training-window questions to
    /// `align_data_valid.arrow` instead of the training file: held-out questions of the
    /// training kind, to choose learning rates and recipes on, never the evaluation questions.
    #[serde(default)]
    pub valid_per_task: usize,
}

fn one() -> usize {
    1
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
    /// Questions per task in the validation file (empty without one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub valid: BTreeMap<String, usize>,
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
    if config.train_windows == 0 {
        return Err(QaError::Invalid(
            "train_windows (--train-windows) must be at least 1".into(),
        ));
    }
    let ds = Dataset::open(data_dir)?;
    let catalog = ds.catalog()?;
    let users = ds.train.num_rows();
    let mut candidates: [BTreeMap<Task, Vec<Row>>; 3] = Default::default();
    for u in 0..users {
        let validation_user = config.valid_per_task > 0
            && Rng::derive(config.seed, 0x7A11_D000 ^ u as u64).below(10) == 0;
        let history = ds.train.row(u).ids(Feature::ItemId);
        let tail = ds.eval.row(u).ids(Feature::ItemId);
        let history: Vec<u32> = history.iter().map(|&i| i as u32).collect();
        let tail: Vec<u32> = tail.iter().map(|&i| i as u32).collect();
        let step = pseudo_future_len(history.len());
        // (split, window, context, future): the training windows, then the evaluation one.
        let mut windows = Vec::new();
        for w in 1..=config.train_windows {
            let Some(cut) = history.len().checked_sub(w * step).filter(|&c| c > 0) else {
                break;
            };
            windows.push((0, w - 1, &history[..cut], &history[cut..cut + step]));
        }
        windows.push((1, 0, &history[..], &tail[..]));
        for (split, window, context, future) in windows {
            let context_len = context.len();
            if context.is_empty() {
                continue;
            }
            for task in Task::ALL {
                // Window 0 keeps the stream of the single-window layout, so that files made
                // with one window stay as they were.
                let mut rng = Rng::derive(
                    config.seed,
                    ((window as u64) << 40) | ((u as u64) << 8) | (split as u64) << 4 | task as u64,
                );
                if let Some(qa) = draw(task, &catalog, context, future, &mut rng) {
                    let split = if split == 0 && validation_user {
                        2
                    } else {
                        split
                    };
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
        // Absolute, so baselines find the catalog from any working directory.
        dataset: std::path::absolute(data_dir)
            .unwrap_or_else(|_| data_dir.to_path_buf())
            .display()
            .to_string(),
        train: BTreeMap::new(),
        eval: BTreeMap::new(),
        train_available: BTreeMap::new(),
        eval_available: BTreeMap::new(),
        valid: BTreeMap::new(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| QaError::io(out_dir, e))?;
    let [train, eval, valid] = candidates;
    let mut splits = vec![
        (train, config.train_per_task, TRAIN_FILE),
        (eval, config.eval_per_task, EVAL_FILE),
    ];
    if config.valid_per_task > 0 {
        splits.push((valid, config.valid_per_task, VALID_FILE));
    }
    for (split, (rows, per_task, file)) in splits.into_iter().enumerate() {
        let available: BTreeMap<String, usize> = Task::ALL
            .iter()
            .map(|t| (t.name().to_string(), rows.get(t).map_or(0, Vec::len)))
            .collect();
        let n = available.values().copied().min().unwrap_or(0).min(per_task);
        if n == 0 {
            return Err(QaError::Invalid(format!(
                "{}: some task has no usable user for the {} split (available per task: {available:?}); \
                 the dataset is too small or its sequences too short",
                data_dir.display(),
                ["train", "eval", "valid"][split]
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
        match split {
            0 => {
                report.train = counts;
                report.train_available = available;
            }
            1 => {
                report.eval = counts;
                report.eval_available = available;
            }
            _ => report.valid = counts,
        }
    }
    let json = serde_json::to_vec_pretty(&report).map_err(|e| QaError::Invalid(e.to_string()))?;
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
