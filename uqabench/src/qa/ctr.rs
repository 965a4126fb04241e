//! CTR questions (ReLLa, REFERENCE.md section 7): "will the user click this item next?", answered
//! yes or no. Each chosen user gives two rows over the same context: the item actually clicked
//! next (yes) and an item the user never clicked, drawn uniformly (no); labels are balanced.
//! Windows follow the sub-task files: training rows see the history split into context and
//! pseudo-future, evaluation rows the whole history and the held-out tail.
//!
//! Files: `ctr_data_train.arrow` and `ctr_data_eval.arrow` in the reference layout, task `CTR`.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::Dataset;
use uqa_data::rng::Rng;
use uqa_data::schema::{Columns, Feature};
use uqa_data::writer::SequenceWriter;

use super::generate::chat_json;
use super::templates::Lang;
use crate::error::{QaError, Result};

pub const CTR_TRAIN_FILE: &str = "ctr_data_train.arrow";
pub const CTR_EVAL_FILE: &str = "ctr_data_eval.arrow";
pub const CTR_TASK: &str = "CTR";

/// The two answers in a language: (yes, no).
pub fn answers(lang: Lang) -> (&'static str, &'static str) {
    match lang {
        Lang::Zh => ("是", "否"),
        Lang::En => ("Yes", "No"),
    }
}

pub(crate) fn question(lang: Lang, title: &str) -> String {
    match lang {
        Lang::Zh => format!("用户下一次会点击商品「{title}」吗？请回答是或否。"),
        Lang::En => format!("Will the user click the item \"{title}\" next? Answer Yes or No."),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CtrConfig {
    pub lang: Lang,
    pub seed: u64,
    /// Users per split (each gives a positive and a negative row).
    pub train_users: usize,
    pub eval_users: usize,
}

struct Row {
    user_row: usize,
    context_len: usize,
    item: u32,
    clicked: bool,
}

/// Writes the two CTR files; returns the rows per split.
pub fn generate_ctr(data_dir: &Path, out_dir: &Path, config: CtrConfig) -> Result<(usize, usize)> {
    let ds = Dataset::open(data_dir)?;
    let catalog = ds.catalog()?;
    let items = catalog.num_items() as u64;
    std::fs::create_dir_all(out_dir).map_err(|e| QaError::io(out_dir, e))?;
    let mut counts = [0; 2];
    for (split, (file, users_wanted)) in [
        (CTR_TRAIN_FILE, config.train_users),
        (CTR_EVAL_FILE, config.eval_users),
    ]
    .into_iter()
    .enumerate()
    {
        let mut users: Vec<usize> = (0..ds.train.num_rows()).collect();
        Rng::derive(config.seed, 0xC7A0 + split as u64).shuffle(&mut users);
        let mut rows = Vec::new();
        for u in users {
            // Saturating: `--ctr-users` may be as large as usize allows (more users than exist).
            if rows.len() >= users_wanted.saturating_mul(2) {
                break;
            }
            let history: Vec<u32> = ds
                .train
                .row(u)
                .ids(Feature::ItemId)
                .iter()
                .map(|&i| i as u32)
                .collect();
            let tail: Vec<u32> = ds
                .eval
                .row(u)
                .ids(Feature::ItemId)
                .iter()
                .map(|&i| i as u32)
                .collect();
            let (context_len, next) = if split == 0 {
                let cut = history.len()
                    - ((history.len() as f64 * 0.1).round() as usize)
                        .clamp(1, history.len().saturating_sub(1).max(1));
                (cut, history.get(cut).copied())
            } else {
                (history.len(), tail.first().copied())
            };
            let Some(next) = next.filter(|_| context_len > 0) else {
                continue;
            };
            let seen: HashSet<u32> = history.iter().chain(&tail).copied().collect();
            let mut rng = Rng::derive(config.seed, ((u as u64) << 4) | split as u64);
            // A never-clicked item; a catalogue the user has entirely clicked gives no row.
            let negative = (0..64)
                .map(|_| 1 + rng.below(items) as u32)
                .find(|i| !seen.contains(i));
            let Some(negative) = negative else { continue };
            rows.push(Row {
                user_row: u,
                context_len,
                item: next,
                clicked: true,
            });
            rows.push(Row {
                user_row: u,
                context_len,
                item: negative,
                clicked: false,
            });
        }
        if rows.is_empty() {
            return Err(QaError::Invalid(format!(
                "{}: no user can give a CTR question",
                data_dir.display()
            )));
        }
        rows.sort_by_key(|r| (r.user_row, !r.clicked));
        write(&out_dir.join(file), &ds, &catalog, &rows, config.lang)?;
        counts[split] = rows.len();
    }
    Ok((counts[0], counts[1]))
}

fn write(path: &Path, ds: &Dataset, catalog: &ItemCatalog, rows: &[Row], lang: Lang) -> Result<()> {
    let columns = Columns {
        user_id: true,
        timestamps: true,
        text: true,
        task: true,
    };
    let (yes, no) = answers(lang);
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
            let q = question(lang, catalog.titles.text(r.item as usize));
            let text = chat_json(&q, if r.clicked { yes } else { no });
            builder.end_row(Some(&text), Some(CTR_TASK));
        }
        writer.write(&mut builder)?;
    }
    writer.finish()?;
    Ok(())
}
