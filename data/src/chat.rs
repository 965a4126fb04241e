//! The reference's chat JSON, as the `text` column of the `align_*` files holds it:
//! `[{"role": ..., "content": ...}, ...]`, the last turn the assistant's answer. Rendering it as
//! model input (ChatML, loss mask) is the LLM's business (`uqa_models::llm::chat`); reading it
//! is shared by training, evaluation and the model-free baselines.

use serde::Deserialize;

use crate::error::{DataError, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// The question (the last user turn; empty when there is none, which still asks a question) and
/// the gold answer (the last turn's content, possibly empty) of parsed chat turns.
pub fn question_and_answer(turns: &[Turn]) -> (String, String) {
    let question = turns
        .iter()
        .rev()
        .find(|t| t.role == "user")
        .map(|t| t.content.clone())
        .unwrap_or_default();
    let answer = turns.last().map(|t| t.content.clone()).unwrap_or_default();
    (question, answer)
}

/// Parses the reference's chat JSON (`[{"role": ..., "content": ...}, ...]`); the last turn must
/// be the assistant's (its content is the answer).
pub fn parse_chat(text: &str) -> Result<Vec<Turn>> {
    let turns: Vec<Turn> = serde_json::from_str(text)
        .map_err(|e| DataError::chat(format!("chat JSON does not parse: {e}")))?;
    match turns.last() {
        Some(t) if t.role == "assistant" => Ok(turns),
        Some(t) => Err(DataError::chat(format!(
            "the last turn is `{}`, not an assistant turn",
            t.role
        ))),
        None => Err(DataError::chat("the conversation has no turns")),
    }
}
