//! `uqa eval`: an aligned model answers the evaluation questions on any number of ranks.
//!
//! Questions are dealt to ranks round-robin (row `i` to rank `i mod W`: every row exactly once,
//! lengths balanced), each rank answers its share in batches (sorted by prompt length so rows
//! of a batch pad little; batched greedy decoding with the KV cache), and rank 0 gathers the
//! answers back into the questions' original order in `predictions.jsonl`, then scores them.
//! Rows that cannot be asked (malformed chat, a prompt beyond the context even without its text
//! history) are counted and listed in `eval.json` with their sub-task, never dropped silently.
//! `eval.json` and `run.json` record the questions file, so `uqa report` can add the prior and
//! history baselines of the same questions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uqa_comm::{Replicas, Runtime};
use uqa_data::atomic::write_atomic;
use uqa_data::batch::collate;
use uqa_models::aligned::{
    AlignModel, AlignedSpec, PromptConfig, QuestionSet, Render, encoder_config, load_aligned,
    load_questions,
};
use uqa_models::device::Device;
use uqa_models::llm::GenerateConfig;
use uqa_models::llm::chat::EncodedChat;

use crate::error::{EvalError, Result};
use uqabench::qa::Lang;
use uqabench::qa::ctr::answers;
use uqabench::report::{PREDICTIONS_FILE, RUN_FILE, RunInfo, SkippedRow};
use uqabench::score::ctr::{CtrMetrics, ctr_metrics, yes_probability};
use uqabench::score::predictions::Prediction;
use uqabench::score::{ScoreReport, score_file};

/// What `uqa eval` is asked to do.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The alignment run (its folder).
    pub run: PathBuf,
    /// Questions file; default: the run's `qa_dir/align_data_eval.arrow`.
    pub questions: Option<PathBuf>,
    /// Output folder; default: `RUN/eval`.
    pub out: Option<PathBuf>,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    /// Evaluate at most this many questions (0: all).
    pub limit: usize,
    /// The run's name in reports.
    pub name: Option<String>,
    pub collective_timeout: Duration,
    /// CTR mode: score P(yes) from the yes/no next-token logits instead of generating.
    pub ctr: bool,
}

/// What rank 0 ends with.
pub enum EvalOutcome {
    Generated {
        summary: EvalSummary,
        scores: Box<ScoreReport>,
        out: PathBuf,
    },
    Ctr {
        metrics: CtrMetrics,
        seconds: f64,
        out: PathBuf,
    },
}

/// Summary saved as `eval.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The questions file answered (absolute path; absent in files of older versions).
    #[serde(default)]
    pub questions_file: Option<String>,
    pub questions: usize,
    pub answered: usize,
    pub skipped: Vec<SkippedRow>,
    /// Text prompts whose oldest history lines were dropped to fit `data.max_text_len`.
    #[serde(default)]
    pub shortened_histories: usize,
    pub world_size: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    pub seconds: f64,
    pub questions_per_second: f64,
    pub generated_tokens: usize,
}

/// One rank's answers, as gathered.
#[derive(Serialize, Deserialize)]
struct Answer {
    index: usize,
    prediction: String,
    input_tokens: usize,
    generated: usize,
}

/// Evaluation in this process (one rank of the launch `runtime` describes, or alone). Returns
/// the scores on rank 0.
pub fn evaluate(job: &EvalJob, runtime: &Runtime) -> Result<Option<EvalOutcome>> {
    let mut replicas = Replicas::connect(runtime, job.collective_timeout)?;
    let device = uqa_models::device::open(runtime.device.cuda_ordinal())?;
    evaluate_with(job, &mut replicas, &device)
}

/// Evaluation on given replicas, the model on `device`.
pub fn evaluate_with(
    job: &EvalJob,
    replicas: &mut Replicas,
    device: &Device,
) -> Result<Option<EvalOutcome>> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    if job.batch_size == 0 {
        return Err(EvalError::Invalid("--batch-size must be positive".into()));
    }
    let (align, m, dataset) = load_aligned(&job.run, device)?;
    let file = job
        .questions
        .clone()
        .unwrap_or_else(|| align.data.qa_dir.join(&align.data.eval_file));
    let started = Instant::now();
    let set = load_questions(
        &align.prompt,
        &m,
        &dataset,
        &file,
        Render::Prompt,
        job.limit,
    )?;
    if set.is_empty() {
        let first = set
            .skipped
            .first()
            .map_or("the file is empty".into(), |(row, reason)| {
                format!("row {row}: {reason}")
            });
        return Err(EvalError::Invalid(format!(
            "{}: no question can be asked ({} skipped; first: {first})",
            file.display(),
            set.skipped.len()
        )));
    }
    let soft = matches!(align.prompt, PromptConfig::Soft { .. });
    if job.ctr {
        return ctr(job, replicas, &align, &m, &set, &file, soft, started);
    }
    let generate = GenerateConfig {
        max_new_tokens: job.max_new_tokens,
        stop_tokens: m.stop_tokens.clone(),
    };

    // This rank's share, longest prompts first (similar lengths share a batch).
    let mut mine: Vec<usize> = (rank..set.len()).step_by(world).collect();
    mine.sort_by_key(|&i| std::cmp::Reverse(set.chats[i].ids.len()));
    let mut answers = Vec::with_capacity(mine.len());
    for batch in mine.chunks(job.batch_size) {
        let chats: Vec<EncodedChat> = batch.iter().map(|&i| set.chats[i].clone()).collect();
        let seq = soft.then(|| {
            let rows: Vec<usize> = batch.iter().map(|&i| set.rows[i]).collect();
            collate(&set.file, &rows, align.data.max_len)
        });
        let outputs = m
            .model
            .generate(seq.as_ref(), &chats, &generate)
            .map_err(|e| {
                EvalError::Invalid(format!("{}: generation failed: {e}", file.display()))
            })?;
        for ((&i, chat), ids) in batch.iter().zip(&chats).zip(outputs) {
            let prediction = m
                .tokenizer
                .inner()
                .decode(&ids, true)
                .map_err(|e| EvalError::Invalid(format!("decoding an answer: {e}")))?;
            answers.push(Answer {
                index: i,
                prediction,
                input_tokens: m.model.input_tokens(chat),
                generated: ids.len(),
            });
        }
        let done = answers.len();
        if rank == 0 && (done == mine.len() || (done / job.batch_size).is_multiple_of(10)) {
            eprintln!(
                "eval: rank 0 answered {done}/{} of its questions ({:.1} q/s)",
                mine.len(),
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let payload = serde_json::to_vec(&answers).map_err(|e| EvalError::Invalid(e.to_string()))?;
    let gathered = replicas.gather_bytes(&payload)?;
    let seconds = started.elapsed().as_secs_f64();
    if rank != 0 {
        return Ok(None);
    }

    let mut slots: Vec<Option<Answer>> = (0..set.len()).map(|_| None).collect();
    for (r, bytes) in gathered.iter().enumerate() {
        let part: Vec<Answer> = serde_json::from_slice(bytes)
            .map_err(|e| EvalError::Invalid(format!("answers of rank {r}: {e}")))?;
        for a in part {
            let i = a.index;
            if i >= slots.len() || slots[i].is_some() {
                return Err(EvalError::Invalid(format!(
                    "rank {r} returned question {i} twice or out of range"
                )));
            }
            slots[i] = Some(a);
        }
    }
    let out = job.out.clone().unwrap_or_else(|| job.run.join("eval"));
    std::fs::create_dir_all(&out).map_err(|e| EvalError::io(&out, e))?;
    let mut lines = String::new();
    let mut generated = 0;
    for (i, slot) in slots.into_iter().enumerate() {
        let a = slot.ok_or_else(|| EvalError::Invalid(format!("question {i} was not answered")))?;
        generated += a.generated;
        let p = Prediction {
            question: set.questions[i].clone(),
            prediction: a.prediction,
            answer: set.answers[i].clone(),
            task: Some(set.tasks[i].clone()).filter(|t| !t.is_empty()),
            input_tokens: Some(a.input_tokens as u64),
        };
        lines.push_str(&serde_json::to_string(&p).map_err(|e| EvalError::Invalid(e.to_string()))?);
        lines.push('\n');
    }
    let predictions = out.join(PREDICTIONS_FILE);
    write_atomic(&predictions, lines.as_bytes())?;
    let questions_file = std::path::absolute(&file)
        .unwrap_or_else(|_| file.clone())
        .display()
        .to_string();
    let info = RunInfo {
        name: Some(job.name.clone().unwrap_or_else(|| {
            job.run
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        })),
        encoder_params: encoder_params(&align.prompt),
        questions: Some(questions_file.clone()),
    };
    write_atomic(
        out.join(RUN_FILE),
        &serde_json::to_vec_pretty(&info).map_err(|e| EvalError::Invalid(e.to_string()))?,
    )?;
    let summary = EvalSummary {
        questions_file: Some(questions_file),
        questions: set.len() + set.skipped.len(),
        answered: set.len(),
        shortened_histories: set.shortened,
        skipped: set
            .skipped
            .iter()
            .map(|(row, reason)| SkippedRow {
                row: *row,
                reason: reason.clone(),
                task: set
                    .file
                    .row(*row)
                    .task()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            })
            .collect(),
        world_size: world,
        batch_size: job.batch_size,
        max_new_tokens: job.max_new_tokens,
        seconds,
        questions_per_second: set.len() as f64 / seconds,
        generated_tokens: generated,
    };
    write_atomic(
        out.join("eval.json"),
        &serde_json::to_vec_pretty(&summary).map_err(|e| EvalError::Invalid(e.to_string()))?,
    )?;
    let scores = score_file(&predictions)?;
    Ok(Some(EvalOutcome::Generated {
        summary,
        scores: Box::new(scores),
        out,
    }))
}

/// One rank's CTR scores, as gathered.
#[derive(Serialize, Deserialize)]
struct Scored {
    index: usize,
    clicked: bool,
    probability: f64,
}

/// The CTR mode: P(yes) = softmax over the yes/no next-token logits after each prompt; AUC, log
/// loss and accuracy over all ranks' scores together (per-rank AUCs cannot be averaged).
#[allow(clippy::too_many_arguments)]
fn ctr(
    job: &EvalJob,
    replicas: &mut Replicas,
    align: &AlignedSpec,
    m: &AlignModel,
    set: &QuestionSet,
    file: &Path,
    soft: bool,
    started: Instant,
) -> Result<Option<EvalOutcome>> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    // The two answers of the file, and which one is "yes".
    let mut distinct: Vec<&str> = set.answers.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let yes_words = [answers(Lang::Zh).0, answers(Lang::En).0];
    let no_words = [answers(Lang::Zh).1, answers(Lang::En).1];
    let (Some(yes), Some(no)) = (
        distinct.iter().find(|a| yes_words.contains(a)),
        distinct.iter().find(|a| no_words.contains(a)),
    ) else {
        return Err(EvalError::Invalid(format!(
            "{}: CTR mode needs yes/no answers ({:?} or {:?}); the file has {:?}",
            file.display(),
            answers(Lang::Zh),
            answers(Lang::En),
            &distinct[..distinct.len().min(5)]
        )));
    };
    if distinct.len() != 2 {
        return Err(EvalError::Invalid(format!(
            "{}: CTR mode needs exactly two answers, the file has {}",
            file.display(),
            distinct.len()
        )));
    }
    let first_token = |word: &str| -> Result<u32> {
        m.tokenizer
            .inner()
            .encode(word, false)
            .ok()
            .and_then(|e| e.get_ids().first().copied())
            .ok_or_else(|| EvalError::Invalid(format!("the tokenizer cannot encode {word:?}")))
    };
    let (yes_id, no_id) = (first_token(yes)?, first_token(no)?);
    if yes_id == no_id {
        return Err(EvalError::Invalid(format!(
            "{yes:?} and {no:?} start with the same token: their logits cannot be compared"
        )));
    }
    let mine: Vec<usize> = (rank..set.len()).step_by(world).collect();
    let mut scored = Vec::with_capacity(mine.len());
    for batch in mine.chunks(job.batch_size) {
        let chats: Vec<EncodedChat> = batch.iter().map(|&i| set.chats[i].clone()).collect();
        let seq = soft.then(|| {
            let rows: Vec<usize> = batch.iter().map(|&i| set.rows[i]).collect();
            collate(&set.file, &rows, align.data.max_len)
        });
        let logits = m
            .model
            .last_logits(seq.as_ref(), &chats)
            .and_then(|l| {
                l.to_vec2::<f32>()
                    .map_err(|e| uqa_models::ModelError::Candle {
                        context: "reading logits".into(),
                        source: e,
                    })
            })
            .map_err(|e| EvalError::Invalid(format!("{}: {e}", file.display())))?;
        for (&i, row) in batch.iter().zip(logits) {
            scored.push(Scored {
                index: i,
                clicked: set.answers[i] == *yes,
                probability: yes_probability(
                    row[yes_id as usize] as f64,
                    row[no_id as usize] as f64,
                ),
            });
        }
    }
    let payload = serde_json::to_vec(&scored).map_err(|e| EvalError::Invalid(e.to_string()))?;
    let gathered = replicas.gather_bytes(&payload)?;
    if rank != 0 {
        return Ok(None);
    }
    let mut all: Vec<Option<Scored>> = (0..set.len()).map(|_| None).collect();
    for (r, bytes) in gathered.iter().enumerate() {
        let part: Vec<Scored> = serde_json::from_slice(bytes)
            .map_err(|e| EvalError::Invalid(format!("scores of rank {r}: {e}")))?;
        for s in part {
            let i = s.index;
            if i >= all.len() || all[i].is_some() {
                return Err(EvalError::Invalid(format!(
                    "rank {r} returned question {i} twice or out of range"
                )));
            }
            all[i] = Some(s);
        }
    }
    let all: Vec<Scored> = all
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| EvalError::Invalid(format!("question {i} was not scored"))))
        .collect::<Result<_>>()?;
    let metrics = ctr_metrics(
        &all.iter()
            .map(|s| (s.clicked, s.probability))
            .collect::<Vec<_>>(),
    );
    let seconds = started.elapsed().as_secs_f64();
    let out = job.out.clone().unwrap_or_else(|| job.run.join("eval"));
    std::fs::create_dir_all(&out).map_err(|e| EvalError::io(&out, e))?;
    let mut lines = String::new();
    for (i, s) in all.iter().enumerate() {
        let row = serde_json::json!({
            "question": set.questions[i], "answer": set.answers[i],
            "clicked": s.clicked, "probability": s.probability,
        });
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    write_atomic(out.join("ctr_predictions.jsonl"), lines.as_bytes())?;
    let summary = serde_json::json!({
        "metrics": metrics, "world_size": world, "seconds": seconds,
        "skipped": set.skipped.len(), "questions": set.len(),
    });
    write_atomic(
        out.join("ctr.json"),
        &serde_json::to_vec_pretty(&summary).map_err(|e| EvalError::Invalid(e.to_string()))?,
    )?;
    Ok(Some(EvalOutcome::Ctr {
        metrics,
        seconds,
        out,
    }))
}

/// Dense encoder parameters (the paper's convention) of a soft-prompt run, for scaling plots.
fn encoder_params(prompt: &PromptConfig) -> Option<f64> {
    let PromptConfig::Soft { encoder, .. } = prompt else {
        return None;
    };
    let model = encoder_config(encoder).ok()?;
    Some(model.encoder.param_count() as f64)
}

/// Where `uqa eval` writes by default.
pub fn default_out(run: &Path) -> PathBuf {
    run.join("eval")
}
