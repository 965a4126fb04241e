//! Stage 2: aligning a frozen encoder to an LLM through soft prompts (or fine-tuning on text
//! prompts, the baselines). The loop mirrors pre-training's, top to bottom: build or resume,
//! then per step collate questions, forward, backward, all-reduce, clip, step, log, checkpoint.
//!
//! The loss of a step is the sum over target tokens divided by the step's target count over
//! all ranks (as in pre-training), so any world size equals one process with the same global
//! batch.

pub mod config;
pub mod model;
pub mod questions;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use uqa_data::batch::collate;
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::Dataset;
use uqa_data::sampler::SamplerState;
use uqa_models::llm::chat::EncodedChat;

pub use config::{AlignJob, LlmSource, PromptConfig, Strategy};
pub use model::{AlignModel, build, load_aligned};
pub use questions::{QuestionSet, Render, TextHistory};

use crate::checkpoint::{self, Checkpointer};
use crate::error::{CandleContext, Result, TrainError};
use crate::metrics::MetricsLog;
use crate::optim::{AdamW, Grads, Params, Shard};
use crate::parallel::Replicas;
use crate::plan::BatchPlan;
use crate::telemetry::{StepRecord, Telemetry};

/// The training questions file inside a `uqa qa-gen` folder.
pub const TRAIN_QUESTIONS: &str = "align_data_train.arrow";
/// The evaluation questions file.
pub const EVAL_QUESTIONS: &str = "align_data_eval.arrow";

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct AlignOutcome {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub trainable_parameters: usize,
    pub checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
}

/// Alignment as one process or one rank of a launch, serving Prometheus metrics.
pub fn align(job: &AlignJob) -> Result<AlignOutcome> {
    let telemetry = Telemetry::start(&job.metrics, &uqa_comm::RankEnv::from_env()?)?;
    let timeout = Duration::from_secs(job.train.collective_timeout_s);
    let mut replicas = Replicas::from_env(job.train.bucket_mb, timeout)?;
    align_observed(job, &mut replicas, &telemetry)
}

/// Alignment on given replicas (in-process ranks in tests), without a metrics endpoint.
pub fn align_with(job: &AlignJob, replicas: &mut Replicas) -> Result<AlignOutcome> {
    align_observed(job, replicas, &Telemetry::disabled())
}

/// The text-history settings of a job with a text prompt (`None` for soft prompts).
pub fn text_history<'a>(
    job: &AlignJob,
    catalog: &'a ItemCatalog,
    vectors: Option<&'a [Vec<f32>]>,
) -> Option<TextHistory<'a>> {
    match &job.prompt {
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
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)
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
    job: &AlignJob,
    m: &AlignModel,
    dataset: &Dataset,
    file: &Path,
    render: Render,
    limit: usize,
) -> Result<QuestionSet> {
    let catalog = dataset.catalog()?;
    let vectors = match &job.prompt {
        PromptConfig::Text {
            retrieval: true, ..
        } => Some(title_vectors(m, &catalog)?),
        _ => None,
    };
    let history = text_history(job, &catalog, vectors.as_deref());
    QuestionSet::load(file, &m.tokenizer, &m.chat, render, history.as_ref(), limit)
}

fn target_count(chat: &EncodedChat) -> usize {
    chat.targets.iter().filter(|t| **t).count()
}

/// The loop itself.
pub fn align_observed(
    job: &AlignJob,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<AlignOutcome> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    replicas.check_same("config hash", &job.hash())?;
    let out = &job.train.out;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let ds = Dataset::open(&job.data.dataset)?;
    let lead = rank == 0;

    let m = build(job, &ds)?;
    let questions = load_questions(
        job,
        &m,
        &ds,
        &job.data.qa_dir.join(&job.data.train_file),
        Render::Training,
        job.data.max_questions,
    )?;
    if questions.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no training questions",
            job.data.qa_dir.join(&job.data.train_file).display()
        )));
    }
    let BatchPlan {
        sampler,
        per_rank,
        micro,
        total_steps,
    } = BatchPlan::new(questions.len(), rank, world, &job.train)?;
    let params = Params::from_varmap(&m.trainable);
    if params.is_empty() {
        return Err(TrainError::Invalid("nothing to train".into()));
    }
    let llm_scale = match job.strategy {
        Strategy::Full { llm_lr } => llm_lr / job.optim.adamw.lr,
        _ => 1.0,
    };
    let shard = (job.train.zero == 1).then(|| Shard::new(&params, rank, world));
    let mut optimizer =
        AdamW::with_shard(job.optim.adamw, &params, shard).with_lr_scales(&params, |name| {
            if name.starts_with("llm.") {
                llm_scale
            } else {
                1.0
            }
        });
    let state_bytes = replicas.gather_counts(optimizer.state_bytes() as u64)?;
    telemetry.record_optimizer_state(optimizer.state_bytes());
    if lead {
        eprintln!(
            "align: {} questions, LLM {} ({} parameters), {} trainable parameters ({:?})",
            questions.len(),
            job.llm.source,
            m.model.lm.config().param_count(),
            params.numel(),
            job.strategy
        );
        eprintln!(
            "{}",
            crate::optim::zero::describe(job.train.zero, &state_bytes)
        );
    }

    let hash = job.hash();
    let (mut state, resumed_from) =
        checkpoint::resume_or_start(out, &params, &mut optimizer, &hash, world)?;
    replicas.broadcast_params(&params)?;
    let config_toml = job.to_toml();
    let checkpointer = Checkpointer {
        out: out.clone(),
        config_toml: config_toml.clone(),
        keep: job.train.keep_checkpoints,
    };
    let mut log = MetricsLog::for_run(lead, out, &config_toml)?;

    let soft = m.model.user.is_some();
    let mut grads = Grads::released(&params);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut last_checkpoint = None;
    let started = Instant::now();

    'epochs: while state.epoch < job.train.epochs {
        let position = SamplerState {
            epoch: state.epoch,
            position: state.sampler_position,
        };
        for rows in sampler.batches(position, per_rank, false) {
            if state.step >= total_steps {
                break 'epochs;
            }
            let t0 = Instant::now();
            let micro_batches: Vec<&[usize]> = rows.chunks(micro).collect();
            let local_targets: usize = rows
                .iter()
                .map(|&i| target_count(&questions.chats[i]))
                .sum();
            let mut totals = [local_targets as f64];
            replicas.sum(&mut totals)?;
            let labels = totals[0].max(1.0);
            let mut loss_sum = 0.0;
            let mut tokens = 0usize;
            for mb in &micro_batches {
                let chats: Vec<EncodedChat> =
                    mb.iter().map(|&i| questions.chats[i].clone()).collect();
                tokens += chats.iter().map(|c| m.model.input_tokens(c)).sum::<usize>();
                let seq = soft.then(|| {
                    let file_rows: Vec<usize> = mb.iter().map(|&i| questions.rows[i]).collect();
                    collate(&questions.file, &file_rows, job.data.max_len)
                });
                let ls = m.model.loss(seq.as_ref(), &chats)?;
                loss_sum += ls
                    .sum
                    .to_dtype(DType::F64)
                    .and_then(|t| t.to_scalar::<f64>())
                    .ctx("loss value")?;
                let loss = (&ls.sum / labels).ctx("normalising the loss")?;
                grads.add(&params, loss.backward().ctx("backward")?, None)?;
            }
            grads.fill_missing(&params);
            let sync = replicas.sum_grads(&mut grads)?;
            let mut reduced = [loss_sum, tokens as f64];
            replicas.sum(&mut reduced)?;
            let loss = reduced[0] / labels;
            let (norm, lr, bcast) = replicas.finish_step(
                &mut optimizer,
                &params,
                &mut grads,
                &job.optim,
                loss,
                state.step,
                total_steps,
            )?;
            state.step += 1;
            state.sampler_position += rows.len();
            if first_loss.is_nan() {
                first_loss = loss;
            }
            last_loss = loss;

            let step_s = t0.elapsed().as_secs_f64();
            let questions_per_s = (rows.len() * world) as f64 / step_s;
            telemetry.record_step(&StepRecord {
                step: state.step,
                epoch: state.epoch,
                loss,
                lr,
                grad_norm: norm,
                seconds: step_s,
                samples: rows.len(),
                positions: tokens,
                allreduce: sync,
            });
            if state.step % job.train.log_every == 0 || state.step == total_steps || state.step == 1
            {
                log.record(&json!({
                    "step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr,
                    "grad_norm": norm, "step_seconds": step_s, "target_tokens": labels,
                    "world_size": world, "questions_per_second": questions_per_s,
                    "input_tokens_per_second": reduced[1] / step_s,
                    "allreduce_seconds": sync.seconds, "allreduce_bytes": sync.bytes,
                    "param_broadcast_seconds": bcast.seconds, "param_broadcast_bytes": bcast.bytes,
                    "optimizer_state_bytes": state_bytes,
                    "elapsed_seconds": started.elapsed().as_secs_f64(),
                }))?;
            }
            log.progress(
                &format!(
                    "epoch {}/{} step {}/{} loss {loss:.4} lr {lr:.2e} |g| {norm:.3} {questions_per_s:.1} q/s",
                    state.epoch + 1,
                    job.train.epochs,
                    state.step,
                    total_steps
                ),
                false,
            );
            if job.train.checkpoint_every > 0 && state.step % job.train.checkpoint_every == 0 {
                last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
            }
        }
        state.epoch += 1;
        state.sampler_position = 0;
        last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
    }
    if state.step >= total_steps && state.sampler_position > 0 {
        last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
    }
    log.progress(
        &format!(
            "aligned: {} steps, loss {first_loss:.4} -> {last_loss:.4}, {:.1} s",
            state.step,
            started.elapsed().as_secs_f64()
        ),
        true,
    );
    replicas.barrier()?;
    Ok(AlignOutcome {
        steps: state.step,
        first_loss,
        last_loss,
        trainable_parameters: params.numel(),
        checkpoint: last_checkpoint,
        resumed_from,
    })
}
