//! ChatML conversations as token ids, with the reference's loss mask.
//!
//! Each turn is `<|im_start|>{role}\n{content}<|im_end|>\n`, a system turn first. The pieces are
//! tokenized separately (role, `\n`, content), as the reference's preprocessing (Qwen's
//! `finetune.py`) does, so token boundaries never straddle a marker. Which tokens carry loss
//! (REFERENCE.md section 4):
//!
//! | turn | `<\|im_start\|>` | role `\n` | content | `<\|im_end\|>` `\n` |
//! |---|---|---|---|---|
//! | system, user | yes | no | no | yes |
//! | assistant | yes | no | yes | yes |
//!
//! A row's own leading system message is replaced by the configured system prompt, as the
//! reference does. Truncation keeps the first `max_len` tokens (default 512), as the reference
//! does; generation prompts are never truncated (callers shorten what they put in them).

pub use uqa_data::chat::{Turn, parse_chat, question_and_answer};
use uqa_data::tokenizer::TextTokenizer;

use crate::error::{ModelError, Result};

/// Qwen's default system prompt, the reference's.
pub const QWEN_SYSTEM_PROMPT: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// A conversation as model input: ids and, per id, whether it is a training target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedChat {
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
    /// Tokens of the system turn (soft prompts placed after the system prompt go here).
    pub system_len: usize,
}

/// How conversations become tokens for one tokenizer.
#[derive(Debug, Clone)]
pub struct ChatFormat {
    im_start: u32,
    im_end: u32,
    newline: Vec<u32>,
    system_prompt: Option<String>,
    max_len: usize,
}

impl ChatFormat {
    /// The ChatML format of `tokenizer`, which must know `<|im_start|>` and `<|im_end|>`.
    /// `system_prompt: None` writes no system turn.
    pub fn new(
        tokenizer: &TextTokenizer,
        system_prompt: Option<&str>,
        max_len: usize,
    ) -> Result<Self> {
        let special = |s: &str| {
            tokenizer.inner().token_to_id(s).ok_or_else(|| {
                ModelError::chat(format!(
                    "tokenizer ({}) has no `{s}` token: it cannot render ChatML",
                    tokenizer.info().source
                ))
            })
        };
        Ok(ChatFormat {
            im_start: special("<|im_start|>")?,
            im_end: special("<|im_end|>")?,
            newline: encode(tokenizer, "\n")?,
            system_prompt: system_prompt.map(str::to_string),
            max_len,
        })
    }

    pub fn im_end(&self) -> u32 {
        self.im_end
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// `<|im_start|>{role}\n{content}<|im_end|>\n` and its target flags; `content_loss` says
    /// whether the content is a target.
    fn turn(
        &self,
        tok: &TextTokenizer,
        role: &str,
        content: &str,
        content_loss: bool,
        out: &mut EncodedChat,
    ) -> Result<()> {
        let mut push = |ids: &[u32], target: bool| {
            out.ids.extend_from_slice(ids);
            out.targets.extend(std::iter::repeat_n(target, ids.len()));
        };
        push(&[self.im_start], true);
        push(&encode(tok, role)?, false);
        push(&self.newline, false);
        push(&encode(tok, content)?, content_loss);
        push(&[self.im_end], true);
        push(&self.newline, true);
        Ok(())
    }

    fn system(&self, tok: &TextTokenizer, out: &mut EncodedChat) -> Result<()> {
        if let Some(sys) = &self.system_prompt {
            self.turn(tok, "system", sys, false, out)?;
        }
        out.system_len = out.ids.len();
        Ok(())
    }

    /// The whole conversation with its loss mask, truncated to `max_len` tokens (the
    /// reference keeps the first 512).
    pub fn encode_training(&self, tok: &TextTokenizer, turns: &[Turn]) -> Result<EncodedChat> {
        let mut out = self.render_training(tok, turns)?;
        out.ids.truncate(self.max_len);
        out.targets.truncate(self.max_len);
        out.system_len = out.system_len.min(out.ids.len());
        Ok(out)
    }

    /// [`Self::encode_training`] before truncation, to measure what a conversation needs.
    pub fn render_training(&self, tok: &TextTokenizer, turns: &[Turn]) -> Result<EncodedChat> {
        let mut out = EncodedChat::default();
        self.system(tok, &mut out)?;
        for t in without_system(turns) {
            self.turn(tok, &t.role, &t.content, t.role == "assistant", &mut out)?;
        }
        Ok(out)
    }

    /// The generation prompt: every turn but the final assistant one, then
    /// `<|im_start|>assistant\n`. Returns the prompt and the expected answer. Prompts longer
    /// than `max_len` are an error (truncating would cut the question).
    pub fn encode_prompt(
        &self,
        tok: &TextTokenizer,
        turns: &[Turn],
    ) -> Result<(EncodedChat, String)> {
        let (out, answer) = self.render_prompt(tok, turns)?;
        if out.ids.len() > self.max_len {
            return Err(ModelError::chat(format!(
                "the prompt has {} tokens, more than the context limit of {}",
                out.ids.len(),
                self.max_len
            )));
        }
        Ok((out, answer))
    }

    /// [`Self::encode_prompt`] without the length check, to measure what a prompt needs.
    pub fn render_prompt(
        &self,
        tok: &TextTokenizer,
        turns: &[Turn],
    ) -> Result<(EncodedChat, String)> {
        let (answer, context) = turns
            .split_last()
            .filter(|(last, _)| last.role == "assistant")
            .ok_or_else(|| ModelError::chat("no final assistant turn"))?;
        let mut out = EncodedChat::default();
        self.system(tok, &mut out)?;
        for t in without_system(context) {
            self.turn(tok, &t.role, &t.content, false, &mut out)?;
        }
        out.ids.push(self.im_start);
        out.ids.extend(encode(tok, "assistant")?);
        out.ids.extend_from_slice(&self.newline);
        out.targets = vec![false; out.ids.len()];
        Ok((out, answer.content.clone()))
    }
}

/// The turns after a leading system turn. The reference replaces a row's own system message
/// with its configured one (REFERENCE.md section 2), so the configured prompt (or none) is the
/// only system turn.
fn without_system(turns: &[Turn]) -> &[Turn] {
    match turns.first() {
        Some(t) if t.role == "system" => &turns[1..],
        _ => turns,
    }
}

fn encode(tok: &TextTokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .inner()
        .encode(text, false)
        .map_err(|e| ModelError::chat(format!("tokenizing {text:?}: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Qwen2 tokenizer, or None (a recorded skip) when it has not been fetched. A file
    /// that is there but does not load fails `test`: a broken asset is not a missing one.
    fn qwen(test: &str) -> Option<TextTokenizer> {
        let Some(path) = uqa_data::tokenizer::default_tokenizer_path() else {
            uqa_testkit::skip(
                uqa_testkit::Category::Tokenizer,
                test,
                "no Qwen2 tokenizer.json; run scripts/fetch-assets.sh tokenizer",
            );
            return None;
        };
        match TextTokenizer::from_file(&path) {
            Ok(tok) => Some(tok),
            Err(e) => panic!("{} does not load: {e}", path.display()),
        }
    }

    #[test]
    fn reference_loss_mask_token_by_token_with_the_qwen2_tokenizer() {
        let Some(tok) = qwen("reference_loss_mask_token_by_token_with_the_qwen2_tokenizer") else {
            return;
        };
        let fmt = ChatFormat::new(&tok, Some("Be brief."), 512).unwrap();
        let turns = parse_chat(
            r#"[{"role":"user","content":"Which brand?"},{"role":"assistant","content":"Kavora"}]"#,
        )
        .unwrap();
        let enc = fmt.encode_training(&tok, &turns).unwrap();
        let text = tok.inner().decode(&enc.ids, false).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhich brand?<|im_end|>\n<|im_start|>assistant\nKavora<|im_end|>\n"
        );
        let piece = |i: usize| tok.inner().decode(&enc.ids[i..i + 1], false).unwrap();
        let labelled: Vec<String> = (0..enc.ids.len())
            .filter(|&i| enc.targets[i])
            .map(piece)
            .collect();
        // Markers of every turn, and the answer; never role names, the system prompt or the question.
        let answer_pieces: Vec<String> = tok
            .inner()
            .encode("Kavora", false)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&id| tok.inner().decode(&[id], false).unwrap())
            .collect();
        let mut expected: Vec<String> = Vec::new();
        for turn in 0..3 {
            expected.push("<|im_start|>".into());
            if turn == 2 {
                expected.extend(answer_pieces.clone());
            }
            expected.push("<|im_end|>".into());
            expected.push("\n".into());
        }
        assert_eq!(labelled, expected);
        assert_eq!(
            tok.inner()
                .decode(&enc.ids[..enc.system_len], false)
                .unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
        );

        let (prompt, answer) = fmt.encode_prompt(&tok, &turns).unwrap();
        assert_eq!(answer, "Kavora");
        assert!(
            tok.inner()
                .decode(&prompt.ids, false)
                .unwrap()
                .ends_with("Which brand?<|im_end|>\n<|im_start|>assistant\n")
        );
        assert_eq!(prompt.ids[..], enc.ids[..prompt.ids.len()]);
    }

    #[test]
    fn a_rows_system_message_is_replaced_by_the_configured_one() {
        let tok = TextTokenizer::builtin(["Be brief Be long Which brand Kavora"]).unwrap();
        let turns = parse_chat(
            r#"[{"role":"system","content":"Be long"},{"role":"user","content":"Which brand"},{"role":"assistant","content":"Kavora"}]"#,
        )
        .unwrap();
        let plain = &turns[1..];
        let configured = ChatFormat::new(&tok, Some("Be brief"), 512).unwrap();
        let none = ChatFormat::new(&tok, None, 512).unwrap();
        for fmt in [&configured, &none] {
            // Exactly what the conversation without its system message gives: one system turn
            // (the configured one, or none), never the row's and never two.
            let with = fmt.encode_training(&tok, &turns).unwrap();
            assert_eq!(with, fmt.encode_training(&tok, plain).unwrap());
            let (prompt, answer) = fmt.encode_prompt(&tok, &turns).unwrap();
            assert_eq!(prompt, fmt.encode_prompt(&tok, plain).unwrap().0);
            assert_eq!(answer, "Kavora");
            let starts = with.ids.iter().filter(|&&i| i == fmt.im_start).count();
            assert_eq!(starts, if fmt.system_prompt.is_some() { 3 } else { 2 });
        }
        let text = tok
            .inner()
            .decode(
                &configured.encode_training(&tok, &turns).unwrap().ids,
                false,
            )
            .unwrap();
        assert!(
            text.contains("Be brief") && !text.contains("Be long"),
            "{text}"
        );
        assert_eq!(none.encode_training(&tok, &turns).unwrap().system_len, 0);
    }

    #[test]
    fn truncation_and_bad_chats() {
        let tok = TextTokenizer::builtin(["red shoes Kavora Which brand"]).unwrap();
        let fmt = ChatFormat::new(&tok, None, 6).unwrap();
        let turns = parse_chat(
            r#"[{"role":"user","content":"Which brand"},{"role":"assistant","content":"Kavora"}]"#,
        )
        .unwrap();
        let enc = fmt.encode_training(&tok, &turns).unwrap();
        assert_eq!((enc.ids.len(), enc.targets.len()), (6, 6));
        let err = fmt.encode_prompt(&tok, &turns).unwrap_err().to_string();
        assert!(err.contains("context limit of 6"), "{err}");
        assert!(
            parse_chat("[{")
                .unwrap_err()
                .to_string()
                .contains("does not parse")
        );
        let no_answer = r#"[{"role":"user","content":"hi"}]"#;
        assert!(
            parse_chat(no_answer)
                .unwrap_err()
                .to_string()
                .contains("not an assistant")
        );
    }
}
