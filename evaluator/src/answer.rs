//! `uqa eval`: an aligned model answers the evaluation questions on any number of ranks.
//!
//! Questions are dealt to ranks round-robin (row `i` to rank `i mod W`: every row exactly once,
//! lengths balanced), each rank answers its share in batches (sorted by prompt length so rows
//! of a batch pad little; batched greedy decoding with the KV cache), and rank 0 gathers the
//! answers back into the questions' original order in `predictions.jsonl`, then scores them.
//! Rows that cannot be asked (malformed chat, empty answer, a prompt beyond the context) are
//! counted and listed in `eval.json`, never dropped silently.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uqa_data::atomic::write_atomic;
use uqa_data::batch::collate;
use uqa_models::llm::GenerateConfig;
use uqa_models::llm::chat::EncodedChat;
use uqa_trainer::align::{EVAL_QUESTIONS, PromptConfig, Render, load_aligned, load_questions};
use uqa_trainer::parallel::Replicas;

use crate::error::{EvalError, Result};
use crate::report::{PREDICTIONS_FILE, RUN_FILE, RunInfo};
use crate::score::predictions::Prediction;
use crate::score::{ScoreReport, score_file};

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
}

/// Summary saved as `eval.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSummary {
    pub questions: usize,
    pub answered: usize,
    pub skipped: Vec<SkippedRow>,
    pub world_size: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    pub seconds: f64,
    pub questions_per_second: f64,
    pub generated_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedRow {
    pub row: usize,
    pub reason: String,
}

/// One rank's answers, as gathered.
#[derive(Serialize, Deserialize)]
struct Answer {
    index: usize,
    prediction: String,
    input_tokens: usize,
    generated: usize,
}

/// Evaluation in this process (one rank of a launch, or alone). Returns the scores on rank 0.
pub fn evaluate(job: &EvalJob) -> Result<Option<(EvalSummary, ScoreReport, PathBuf)>> {
    let mut replicas = Replicas::from_env(25.0, job.collective_timeout)?;
    evaluate_with(job, &mut replicas)
}

pub fn evaluate_with(
    job: &EvalJob,
    replicas: &mut Replicas,
) -> Result<Option<(EvalSummary, ScoreReport, PathBuf)>> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    if job.batch_size == 0 {
        return Err(EvalError::Invalid("--batch-size must be positive".into()));
    }
    let (align, m, dataset) = load_aligned(&job.run)?;
    let file = job
        .questions
        .clone()
        .unwrap_or_else(|| align.data.qa_dir.join(EVAL_QUESTIONS));
    let started = Instant::now();
    let set = load_questions(&align, &m, &dataset, &file, Render::Prompt, job.limit)?;
    let soft = matches!(align.prompt, PromptConfig::Soft { .. });
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
    let info = RunInfo {
        name: Some(job.name.clone().unwrap_or_else(|| {
            job.run
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        })),
        encoder_params: encoder_params(&align.prompt),
    };
    write_atomic(
        out.join(RUN_FILE),
        &serde_json::to_vec_pretty(&info).map_err(|e| EvalError::Invalid(e.to_string()))?,
    )?;
    let summary = EvalSummary {
        questions: set.len() + set.skipped.len(),
        answered: set.len(),
        skipped: set
            .skipped
            .iter()
            .map(|(row, reason)| SkippedRow {
                row: *row,
                reason: reason.clone(),
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
    Ok(Some((summary, scores, out)))
}

/// Dense encoder parameters (the paper's convention) of a soft-prompt run, for scaling plots.
fn encoder_params(prompt: &PromptConfig) -> Option<f64> {
    let PromptConfig::Soft { encoder, .. } = prompt else {
        return None;
    };
    let job = uqa_trainer::PretrainJob::load(&encoder.join("config.toml"), &[]).ok()?;
    Some(job.model.encoder.param_count() as f64)
}

/// Where `uqa eval` writes by default.
pub fn default_out(run: &Path) -> PathBuf {
    run.join("eval")
}
