//! `predictions.jsonl`: one generated answer per line, as `uqa eval` writes it on rank 0 in the
//! questions' original order.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{QaError, Result};
use crate::qa::Task;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub question: String,
    pub prediction: String,
    pub answer: String,
    /// Sub-task name; when absent it is recognised from the question's (Chinese) wording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// LLM input tokens of the question (Table 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
}

/// Why a row was not scored; every skip is counted and reported, never silent. An empty gold
/// answer is no reason: the reference scores it (every prediction starts with "").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    UnknownTask,
}

/// A row ready to be judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorable {
    pub task: Task,
    pub prediction: String,
    pub answer: String,
    pub input_tokens: Option<u64>,
}

/// Resolve a row's task and check it can be scored.
pub fn classify(p: &Prediction) -> Result<Scorable, SkipReason> {
    let task = match &p.task {
        Some(name) => Task::parse(name),
        None => Task::recognise(&p.question),
    }
    .ok_or(SkipReason::UnknownTask)?;
    Ok(Scorable {
        task,
        prediction: p.prediction.clone(),
        answer: p.answer.clone(),
        input_tokens: p.input_tokens,
    })
}

/// Read a predictions file; a line that is not a prediction object is an error naming the line.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let file = std::fs::File::open(path).map_err(|e| QaError::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| QaError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Prediction = serde_json::from_str(&line).map_err(|e| QaError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        rows.push(row);
    }
    Ok(rows)
}
