//! Question files (`align_data_{train,eval}.arrow`) as model inputs: each row's context sequence
//! stays in the memory-mapped file (collated per batch for the encoder); its chat JSON is
//! rendered to tokens once, up front.
//!
//! Text-prompt baselines (Text20/Text50, ReLLa) put the user's history into the user turn as
//! lines of `title, category, brand, shop`, oldest first, before the question.

use std::path::Path;

use uqa_data::catalog::ItemCatalog;
use uqa_data::reader::{SequenceFile, SequenceRow};
use uqa_data::schema::Feature;
use uqa_data::tokenizer::TextTokenizer;
use uqa_models::llm::chat::{ChatFormat, EncodedChat, Turn, parse_chat};

use crate::error::{Result, TrainError};

/// How the user's history enters the prompt when it is text.
#[derive(Debug, Clone)]
pub struct TextHistory<'a> {
    pub catalog: &'a ItemCatalog,
    pub last_k: usize,
    /// Item vectors `[items + 1][dim]` for retrieval (ReLLa); `None`: the last `last_k` clicks.
    pub item_vectors: Option<&'a [Vec<f32>]>,
}

/// The rows of a question file, tokenized.
pub struct QuestionSet {
    pub file: SequenceFile,
    /// File rows kept, in file order.
    pub rows: Vec<usize>,
    pub chats: Vec<EncodedChat>,
    /// Gold answers (prompt sets) and sub-task names.
    pub answers: Vec<String>,
    pub tasks: Vec<String>,
    pub questions: Vec<String>,
    /// Rows left out, with the reason (prompt sets only; a training set refuses bad rows).
    pub skipped: Vec<(usize, String)>,
}

/// What to render: the whole conversation with its loss mask, or the prompt to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Training,
    Prompt,
}

impl QuestionSet {
    /// Reads and tokenizes `path` (at most `limit` rows when non-zero). Training sets fail on
    /// the first bad row, naming the file and row; prompt sets skip and count bad rows.
    pub fn load(
        path: &Path,
        tokenizer: &TextTokenizer,
        chat: &ChatFormat,
        render: Render,
        history: Option<&TextHistory>,
        limit: usize,
    ) -> Result<Self> {
        let file = SequenceFile::open(path)?;
        if !file.has_text() {
            return Err(TrainError::Invalid(format!(
                "{}: no `text` column: not a question file (write one with `uqa qa-gen`)",
                path.display()
            )));
        }
        let n = if limit == 0 {
            file.num_rows()
        } else {
            limit.min(file.num_rows())
        };
        let mut set = QuestionSet {
            rows: Vec::with_capacity(n),
            chats: Vec::with_capacity(n),
            answers: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            questions: Vec::with_capacity(n),
            skipped: Vec::new(),
            file,
        };
        for r in 0..n {
            let row = set.file.row(r);
            match render_row(&row, tokenizer, chat, render, history) {
                Ok((encoded, question, answer)) => {
                    set.rows.push(r);
                    set.chats.push(encoded);
                    set.questions.push(question);
                    set.answers.push(answer);
                    set.tasks.push(row.task().unwrap_or("").to_string());
                }
                Err(reason) if render == Render::Prompt => set.skipped.push((r, reason)),
                Err(reason) => {
                    return Err(TrainError::Invalid(format!(
                        "{} row {r}: {reason}",
                        path.display()
                    )));
                }
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn render_row(
    row: &SequenceRow,
    tokenizer: &TextTokenizer,
    chat: &ChatFormat,
    render: Render,
    history: Option<&TextHistory>,
) -> std::result::Result<(EncodedChat, String, String), String> {
    let text = row.text().ok_or("empty `text`")?;
    let mut turns: Vec<Turn> = parse_chat(text).map_err(|e| e.to_string())?;
    let answer = turns.last().map(|t| t.content.clone()).unwrap_or_default();
    if answer.trim().is_empty() {
        return Err("empty answer".into());
    }
    let question = turns
        .iter()
        .rev()
        .find(|t| t.role == "user")
        .map(|t| t.content.clone())
        .unwrap_or_default();
    if let Some(h) = history {
        let lines = history_lines(row, h);
        if let Some(user) = turns.iter_mut().find(|t| t.role == "user") {
            user.content = format!("{lines}\n{}", user.content);
        }
    }
    let encoded = match render {
        Render::Training => chat.encode_training(tokenizer, &turns),
        Render::Prompt => chat.encode_prompt(tokenizer, &turns).map(|(e, _)| e),
    }
    .map_err(|e| e.to_string())?;
    Ok((encoded, question, answer))
}

/// The history block of a text prompt: one line per click, oldest first.
fn history_lines(row: &SequenceRow, h: &TextHistory) -> String {
    let items = row.ids(Feature::ItemId);
    let picked: Vec<usize> = match h.item_vectors {
        None => (items.len().saturating_sub(h.last_k)..items.len()).collect(),
        Some(vectors) => retrieve(items, vectors, h.last_k),
    };
    let c = h.catalog;
    picked
        .into_iter()
        .map(|p| {
            let item = items[p] as u32;
            let a = c.attrs(item);
            format!(
                "{}, {}, {}, {}",
                c.titles.text(item as usize),
                c.cates.text(a.cate as usize),
                c.brands.text(a.brand as usize),
                c.shops.text(a.shop as usize)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// ReLLa's semantic selection: the `k` positions whose items are most similar (cosine) to the
/// user's recent interest (the mean vector of the last five clicks), returned in time order.
fn retrieve(items: &[i64], vectors: &[Vec<f32>], k: usize) -> Vec<usize> {
    if items.len() <= k {
        return (0..items.len()).collect();
    }
    let dim = vectors.first().map_or(0, Vec::len);
    let mut query = vec![0f32; dim];
    let recent = &items[items.len().saturating_sub(5)..];
    for &it in recent {
        for (q, v) in query.iter_mut().zip(&vectors[it as usize]) {
            *q += v;
        }
    }
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let qn = norm(&query);
    let mut scored: Vec<(f32, usize)> = items
        .iter()
        .enumerate()
        .map(|(p, &it)| {
            let v = &vectors[it as usize];
            let dot: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
            (dot / (norm(v) * qn), p)
        })
        .collect();
    // Most similar first; ties to the more recent click.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut picked: Vec<usize> = scored.into_iter().take(k).map(|(_, p)| p).collect();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use uqa_data::schema::{Columns, Vocab};
    use uqa_data::writer::{Position, SequenceWriter};

    /// A question file whose rows carry the given chat texts over a one-click context.
    fn question_file(dir: &Path, texts: &[&str]) -> std::path::PathBuf {
        let path = dir.join("q.arrow");
        let vocab = Vocab {
            items: 5,
            cates: 5,
            brands: 5,
            shops: 5,
            sellers: 5,
            tokens: 20,
        };
        let columns = Columns {
            user_id: true,
            timestamps: true,
            text: true,
            task: true,
        };
        let mut w = SequenceWriter::create(&path, columns, &vocab, 1).unwrap();
        let mut b = w.builder();
        for (r, t) in texts.iter().enumerate() {
            b.begin_row(r as i64 + 1);
            b.push_position(&Position {
                ids: [1, 1, 1, 1, 1],
                bags: [&[2], &[], &[], &[], &[]],
                timestamp: 0,
            });
            b.end_row(Some(t), Some("SI"));
        }
        w.write(&mut b).unwrap();
        w.finish().unwrap();
        path
    }

    #[test]
    fn bad_chats_fail_training_naming_file_and_row_and_are_counted_skips_for_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let good =
            r#"[{"role":"user","content":"which shop"},{"role":"assistant","content":"red"}]"#;
        let no_answer = r#"[{"role":"user","content":"which shop"}]"#;
        let path = question_file(dir.path(), &[good, "[{not json", no_answer, good]);
        let tok = TextTokenizer::builtin(["which shop red"]).unwrap();
        let chat = ChatFormat::new(&tok, None, 64).unwrap();
        let err = QuestionSet::load(&path, &tok, &chat, Render::Training, None, 0)
            .err()
            .expect("a malformed row fails training")
            .to_string();
        assert!(
            err.contains("q.arrow row 1") && err.contains("does not parse"),
            "{err}"
        );
        let set = QuestionSet::load(&path, &tok, &chat, Render::Prompt, None, 0).unwrap();
        assert_eq!(set.rows, vec![0, 3]);
        assert_eq!(set.skipped.len(), 2);
        assert!(
            set.skipped[1].1.contains("not an assistant turn"),
            "{:?}",
            set.skipped
        );
    }

    #[test]
    fn retrieval_keeps_the_most_similar_in_time_order() {
        // Items 1 and 2 point one way, 3 the other; the recent clicks are items 1 and 2, and
        // item 1 lies closest to their mean.
        let vectors = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
        ];
        let items = [3i64, 3, 1, 2, 1, 2, 1];
        assert_eq!(retrieve(&items, &vectors, 3), vec![2, 4, 6]);
        assert_eq!(retrieve(&items, &vectors, 5), vec![2, 3, 4, 5, 6]);
        assert_eq!(retrieve(&items[..2], &vectors, 3), vec![0, 1]);
    }
}
