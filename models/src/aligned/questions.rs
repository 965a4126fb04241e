//! Question files (`align_data_{train,eval}.arrow`) as model inputs: each row's context sequence
//! stays in the memory-mapped file (collated per batch for the encoder); its chat JSON is
//! rendered to tokens once, up front.
//!
//! Text-prompt baselines (Text20/Text50, ReLLa) put the user's history into the user turn as
//! lines of `title, category, brand, shop`, oldest first, before the question. When the chat
//! would exceed `data.max_text_len` tokens, the oldest lines are dropped until it fits: the
//! question, the answer (training) and the generation prefix stay whole, so Text-K is scored on
//! every question rather than on the short prompts only. The reference truncates the tokenized
//! chat at 512 tokens; dropping history first keeps that limit without cutting the answer.

use std::path::Path;

use candle_core::Tensor;
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::Dataset;
use uqa_data::reader::{SequenceFile, SequenceRow};
use uqa_data::schema::Feature;
use uqa_data::tokenizer::TextTokenizer;

use super::build::AlignModel;
use super::spec::PromptConfig;
use crate::error::CandleContext;
use crate::error::{ModelError, Result};
use crate::llm::chat::{ChatFormat, EncodedChat, Turn, parse_chat, question_and_answer};

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
    /// Rows whose text history lost its oldest lines to fit the token limit.
    pub shortened: usize,
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
            return Err(ModelError::Invalid(format!(
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
            shortened: 0,
            file,
        };
        for r in 0..n {
            let row = set.file.row(r);
            match render_row(&row, tokenizer, chat, render, history) {
                Ok((encoded, question, answer, dropped)) => {
                    set.shortened += usize::from(dropped > 0);
                    set.rows.push(r);
                    set.chats.push(encoded);
                    set.questions.push(question);
                    set.answers.push(answer);
                    set.tasks.push(row.task().unwrap_or("").to_string());
                }
                Err(reason) if render == Render::Prompt => set.skipped.push((r, reason)),
                Err(reason) => {
                    return Err(ModelError::Invalid(format!(
                        "{} row {r}: {reason}",
                        path.display()
                    )));
                }
            }
        }
        set.check_coverage(path, tokenizer, render)?;
        Ok(set)
    }

    /// Texts the tokenizer cannot spell (`<unk>` in their ids) are refused for training: a model
    /// cannot learn an answer it sees as `<unk>`, nor tell apart questions that all read
    /// `<unk> <unk>`. For evaluation they are a loud warning with counts per sub-task. Byte-level
    /// tokenizers (Qwen2's, the built-in one) have no unknown token and always pass.
    fn check_coverage(&self, path: &Path, tokenizer: &TextTokenizer, render: Render) -> Result<()> {
        let Some(unk) = tokenizer.inner().token_to_id("<unk>") else {
            return Ok(());
        };
        let mut per_task: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut first = None;
        for (i, chat) in self.chats.iter().enumerate() {
            if chat.ids.contains(&unk) {
                *per_task.entry(self.tasks[i].as_str()).or_default() += 1;
                first.get_or_insert(self.rows[i]);
            }
        }
        let Some(first) = first else {
            return Ok(());
        };
        let total: usize = per_task.values().sum();
        let msg = format!(
            "{}: {total} of {} rows hold text the tokenizer ({}) cannot encode (`<unk>`), first at \
             row {first}; per sub-task: {per_task:?}. Rebuild the dataset with a tokenizer that \
             covers the questions (`--tokenizer builtin` trains a byte-level one on them)",
            path.display(),
            self.chats.len(),
            tokenizer.info().source,
        );
        match render {
            Render::Training => Err(ModelError::Invalid(msg)),
            Render::Prompt => {
                eprintln!("warning: {msg}");
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One row's chat, question, gold answer and how many history lines were dropped to fit.
type Rendered = (EncodedChat, String, String, usize);

fn render_row(
    row: &SequenceRow,
    tokenizer: &TextTokenizer,
    chat: &ChatFormat,
    render: Render,
    history: Option<&TextHistory>,
) -> std::result::Result<Rendered, String> {
    let text = row.text().ok_or("empty `text`")?;
    let mut turns: Vec<Turn> = parse_chat(text).map_err(|e| e.to_string())?;
    // An empty gold answer is kept: the reference scores it (every prediction starts with "").
    let (question, answer) = question_and_answer(&turns);
    let encode = |turns: &[Turn]| match render {
        Render::Training => chat.render_training(tokenizer, turns),
        Render::Prompt => chat.render_prompt(tokenizer, turns).map(|(e, _)| e),
    };
    let user = turns.iter().position(|t| t.role == "user");
    let (Some(h), Some(user)) = (history, user) else {
        return finish(chat, tokenizer, render, &turns, encode(&turns))
            .map(|e| (e, question, answer, 0));
    };
    let lines = history_lines(row, h);
    let original = turns[user].content.clone();
    let mut first = 0;
    loop {
        turns[user].content = format!("{}\n{original}", lines[first..].join("\n"));
        let encoded = encode(&turns).map_err(|e| e.to_string())?;
        if encoded.ids.len() <= chat.max_len() || first == lines.len() {
            return finish(chat, tokenizer, render, &turns, Ok(encoded))
                .map(|e| (e, question, answer, first));
        }
        // Drop the oldest lines worth the excess (each line's tokens and its newline); if the
        // joined text tokenizes longer than the parts, the next round drops more.
        let excess = encoded.ids.len() - chat.max_len();
        let mut freed = 0;
        while first < lines.len() && freed < excess {
            freed += tokenizer
                .inner()
                .encode(lines[first].as_str(), false)
                .map_or(1, |e| e.len())
                + 1;
            first += 1;
        }
    }
}

/// The final encoding of a rendered chat: training chats are truncated to the limit (as the
/// reference does), prompts beyond it are refused with the reason.
fn finish(
    chat: &ChatFormat,
    tokenizer: &TextTokenizer,
    render: Render,
    turns: &[Turn],
    rendered: crate::Result<EncodedChat>,
) -> std::result::Result<EncodedChat, String> {
    let rendered = rendered.map_err(|e| e.to_string())?;
    if rendered.ids.len() <= chat.max_len() {
        return Ok(rendered);
    }
    match render {
        Render::Training => chat.encode_training(tokenizer, turns),
        Render::Prompt => chat.encode_prompt(tokenizer, turns).map(|(e, _)| e),
    }
    .map_err(|e| e.to_string())
}

/// The history block of a text prompt: one line per click, oldest first.
fn history_lines(row: &SequenceRow, h: &TextHistory) -> Vec<String> {
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
        .collect()
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

/// The text-history settings of a job with a text prompt (`None` for soft prompts).
pub fn text_history<'a>(
    prompt: &PromptConfig,
    catalog: &'a ItemCatalog,
    vectors: Option<&'a [Vec<f32>]>,
) -> Option<TextHistory<'a>> {
    match prompt {
        PromptConfig::Text { last_k, .. } => Some(TextHistory {
            catalog,
            last_k: *last_k,
            item_vectors: vectors,
        }),
        PromptConfig::Soft { .. } => None,
    }
}

/// Item vectors for ReLLa's retrieval: the mean LLM input embedding of each item's title.
pub fn title_vectors(m: &AlignModel, catalog: &ItemCatalog) -> Result<Vec<Vec<f32>>> {
    let lm = &m.model.lm;
    let d = lm.config().hidden_size;
    let mut out = Vec::with_capacity(catalog.items.len());
    for item in 0..catalog.items.len() {
        let title = catalog.titles.text(item);
        let ids: Vec<u32> = m
            .tokenizer
            .inner()
            .encode(title, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default();
        if ids.is_empty() {
            out.push(vec![0.0; d]);
            continue;
        }
        let t = Tensor::new(ids.as_slice(), lm.device())
            .and_then(|t| t.unsqueeze(0))
            .and_then(|t| lm.embed_tokens(&t))
            .and_then(|e| e.squeeze(0)?.mean(0)?.to_vec1::<f32>())
            .ctx("title embedding")?;
        out.push(t);
    }
    Ok(out)
}

/// Loads a question file for this job (text history included when the prompt is text).
pub fn load_questions(
    prompt: &PromptConfig,
    m: &AlignModel,
    dataset: &Dataset,
    file: &Path,
    render: Render,
    limit: usize,
) -> Result<QuestionSet> {
    let catalog = dataset.catalog()?;
    let vectors = match prompt {
        PromptConfig::Text {
            retrieval: true, ..
        } => Some(title_vectors(m, &catalog)?),
        _ => None,
    };
    let history = text_history(prompt, &catalog, vectors.as_deref());
    QuestionSet::load(file, &m.tokenizer, &m.chat, render, history.as_ref(), limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uqa_data::schema::{Columns, Vocab};
    use uqa_data::writer::{Position, SequenceWriter};

    /// A writer of question files (every column) over `entities` ids per entity feature.
    fn question_writer(path: &Path, entities: u64) -> SequenceWriter {
        let vocab = Vocab {
            items: entities,
            cates: entities,
            brands: entities,
            shops: entities,
            sellers: entities,
            tokens: 20,
        };
        let columns = Columns {
            user_id: true,
            timestamps: true,
            text: true,
            task: true,
        };
        SequenceWriter::create(path, columns, &vocab, 1).unwrap()
    }

    /// A question file whose rows carry the given chat texts over a one-click context.
    fn question_file(dir: &Path, texts: &[&str]) -> std::path::PathBuf {
        let path = dir.join("q.arrow");
        let mut w = question_writer(&path, 5);
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

    /// A one-row question file over `clicks` clicks of item 1, and a catalog naming it.
    fn text_history_fixture(
        dir: &Path,
        clicks: usize,
        chat: &str,
    ) -> (std::path::PathBuf, ItemCatalog) {
        let path = dir.join("h.arrow");
        let mut w = question_writer(&path, 2);
        let mut b = w.builder();
        b.begin_row(1);
        for t in 0..clicks {
            b.push_position(&Position {
                ids: [1, 1, 1, 1, 1],
                bags: [&[2], &[], &[], &[], &[]],
                timestamp: t as i64,
            });
        }
        b.end_row(Some(chat), Some("SI"));
        w.write(&mut b).unwrap();
        w.finish().unwrap();
        let mut c = ItemCatalog::with_padding();
        c.titles.push("red running shoes".into(), &[]);
        c.cates.push("shoes".into(), &[]);
        c.brands.push("Kavora".into(), &[]);
        c.shops.push("Kavora store".into(), &[]);
        c.sellers.push("Kavora".into(), &[]);
        c.items.push(uqa_data::catalog::ItemAttrs {
            cate: 1,
            brand: 1,
            shop: 1,
            seller: 1,
        });
        (path, c)
    }

    #[test]
    fn long_text_histories_lose_their_oldest_lines_and_keep_the_question() {
        let dir = tempfile::tempdir().unwrap();
        let chat = r#"[{"role":"user","content":"which shop next"},{"role":"assistant","content":"Kavora store"}]"#;
        let (path, catalog) = text_history_fixture(dir.path(), 30, chat);
        let line = "red running shoes, shoes, Kavora, Kavora store";
        let tok = TextTokenizer::builtin([line, "which shop next", "Kavora store"]).unwrap();
        let history = TextHistory {
            catalog: &catalog,
            last_k: 30,
            item_vectors: None,
        };
        let roomy = ChatFormat::new(&tok, None, 4096).unwrap();
        let full =
            QuestionSet::load(&path, &tok, &roomy, Render::Prompt, Some(&history), 0).unwrap();
        assert_eq!(full.shortened, 0);
        let full_len = full.chats[0].ids.len();
        // Room for about a third of the history.
        let per_line = tok.inner().encode(line, false).unwrap().len() + 1;
        let limit = full_len - 20 * per_line;
        for render in [Render::Prompt, Render::Training] {
            let tight = ChatFormat::new(&tok, None, limit).unwrap();
            let set = QuestionSet::load(&path, &tok, &tight, render, Some(&history), 0).unwrap();
            assert_eq!((set.len(), set.skipped.len(), set.shortened), (1, 0, 1));
            let ids = &set.chats[0].ids;
            assert!(ids.len() <= limit, "{} > {limit}", ids.len());
            let text = tok.inner().decode(ids, false).unwrap();
            let kept = text.matches(line).count();
            assert!((5..30).contains(&kept), "{kept} lines kept: {text}");
            let tail = match render {
                Render::Prompt => "which shop next<|im_end|>\n<|im_start|>assistant\n",
                Render::Training => {
                    "which shop next<|im_end|>\n<|im_start|>assistant\nKavora store<|im_end|>\n"
                }
            };
            assert!(text.ends_with(tail), "{text}");
        }
        // Without the history the prompt still does not fit: skipped with the reason.
        let tiny = ChatFormat::new(&tok, None, 4).unwrap();
        let set = QuestionSet::load(&path, &tok, &tiny, Render::Prompt, Some(&history), 0).unwrap();
        assert!(set.is_empty() && set.skipped[0].1.contains("context limit of 4"));
    }

    /// A word-level tokenizer over `words` with an `<unk>` (like the built-in vocabulary of
    /// earlier versions): text outside it encodes as `<unk>`.
    fn word_level(words: &[&str]) -> TextTokenizer {
        let mut vocab = serde_json::Map::new();
        for (i, w) in ["<unk>", "<|im_start|>", "<|im_end|>"]
            .iter()
            .chain(words)
            .enumerate()
        {
            vocab.insert(w.to_string(), i.into());
        }
        let added: Vec<serde_json::Value> = [(1, "<|im_start|>"), (2, "<|im_end|>")]
            .iter()
            .map(|(id, s)| {
                serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let doc = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
        TextTokenizer::from_file(&p).unwrap()
    }

    #[test]
    fn text_the_tokenizer_cannot_encode_fails_training_and_warns_for_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let known =
            r#"[{"role":"user","content":"which shop"},{"role":"assistant","content":"red"}]"#;
        let unknown =
            r#"[{"role":"user","content":"which shop"},{"role":"assistant","content":"112"}]"#;
        let path = question_file(dir.path(), &[known, unknown, unknown]);
        let tok = word_level(&["user", "assistant", "which", "shop", "red", "\n"]);
        let chat = ChatFormat::new(&tok, None, 64).unwrap();
        let err = QuestionSet::load(&path, &tok, &chat, Render::Training, None, 0)
            .err()
            .expect("unencodable answers fail training")
            .to_string();
        assert!(
            err.contains("q.arrow") && err.contains("2 of 3 rows") && err.contains("row 1"),
            "{err}"
        );
        let set = QuestionSet::load(&path, &tok, &chat, Render::Prompt, None, 0).unwrap();
        assert_eq!(set.len(), 3);
        // The byte-level built-in tokenizer spells everything.
        let tok = TextTokenizer::builtin(["which shop red"]).unwrap();
        let chat = ChatFormat::new(&tok, None, 64).unwrap();
        assert!(QuestionSet::load(&path, &tok, &chat, Render::Training, None, 0).is_ok());
    }

    #[test]
    fn empty_gold_answers_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let empty = r#"[{"role":"user","content":"which shop"},{"role":"assistant","content":""}]"#;
        let path = question_file(dir.path(), &[empty]);
        let tok = TextTokenizer::builtin(["which shop red"]).unwrap();
        let chat = ChatFormat::new(&tok, None, 64).unwrap();
        for render in [Render::Prompt, Render::Training] {
            let set = QuestionSet::load(&path, &tok, &chat, render, None, 0).unwrap();
            assert_eq!((set.len(), set.answers[0].as_str()), (1, ""));
        }
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
