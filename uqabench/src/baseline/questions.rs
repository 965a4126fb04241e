//! A question file (`align_data_{train,eval}.arrow`) read the way `uqa eval` reads it: the
//! question is the last user turn, the gold answer the final assistant turn, the task the `task`
//! column (or the reference's recognition of the wording). Rows are kept in file order so that
//! baseline predictions line up with a model's.

use std::path::{Path, PathBuf};

use uqa_data::chat::{parse_chat, question_and_answer};
use uqa_data::reader::SequenceFile;
use uqa_data::schema::Feature;

use crate::error::{QaError, Result};
use crate::qa::Task;
use crate::report::SkippedRow;

/// One question of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaRow {
    /// Row index in the file.
    pub row: usize,
    pub question: String,
    pub answer: String,
    /// The `task` column as written (`None` when absent or empty).
    pub task_name: Option<String>,
    /// The resolved sub-task: the column, else the reference's recognition of the wording.
    pub task: Option<Task>,
    /// The context sequence's items, oldest first (empty unless asked for).
    pub context: Vec<u32>,
}

/// The usable rows of a question file and the rows that could not be read as a question.
#[derive(Debug, Clone)]
pub struct QaFile {
    pub path: PathBuf,
    pub rows: Vec<QaRow>,
    /// Rows that are not questions, e.g. a chat JSON that does not parse; `uqa eval` skips the
    /// same rows.
    pub skipped: Vec<SkippedRow>,
}

/// Reads `path`; `with_context` also copies each row's item sequence.
pub fn read_questions(path: &Path, with_context: bool) -> Result<QaFile> {
    let file = SequenceFile::open(path)?;
    if !file.has_text() {
        return Err(QaError::Invalid(format!(
            "{}: no `text` column: not a question file (write one with `uqa qa-gen`)",
            path.display()
        )));
    }
    let mut out = QaFile {
        path: path.to_path_buf(),
        rows: Vec::with_capacity(file.num_rows()),
        skipped: Vec::new(),
    };
    for row in file.rows() {
        let r = row.index;
        let task_name = row.task().filter(|t| !t.is_empty()).map(str::to_string);
        let skip = |reason: String| SkippedRow {
            row: r,
            reason,
            task: task_name.clone(),
        };
        let Some(text) = row.text() else {
            out.skipped.push(skip("empty `text`".into()));
            continue;
        };
        let turns = match parse_chat(text) {
            Ok(t) => t,
            Err(e) => {
                out.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        // As `uqa eval`: a row without a user turn still asks an (empty) question.
        let (question, answer) = question_and_answer(&turns);
        let task = match &task_name {
            Some(name) => Task::parse(name),
            None => Task::recognise(&question),
        };
        let context = if with_context {
            row.ids(Feature::ItemId).iter().map(|&i| i as u32).collect()
        } else {
            Vec::new()
        };
        out.rows.push(QaRow {
            row: r,
            question,
            answer,
            task_name,
            task,
            context,
        });
    }
    Ok(out)
}
