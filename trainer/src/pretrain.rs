//! Stage 1: pre-training a user-sequence encoder with next-item prediction. The loop reads top
//! to bottom: build or resume, then for each step collate micro-batches, forward, backward,
//! accumulate, clip, step, log; evaluate and checkpoint at their intervals.
//!
//! The loss of a step is the sum of per-label losses divided by the step's label count over all
//! ranks, so micro-steps and ranks of different lengths weigh each label equally (torchtitan's
//! normalisation), and a data-parallel run equals one process with the same global batch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::VarMap;
use serde_json::json;
use uqa_data::batch::{SequenceBatch, collate};
use uqa_data::dataset::Dataset;
use uqa_data::sampler::SamplerState;
use uqa_models::{GradSink, PretrainModel, seeded_var_builder};

use crate::checkpoint::{self, Checkpointer, TrainState};
use crate::config::PretrainJob;
use crate::error::{CandleContext, Result, TrainError};
use crate::eval::{RankingMetrics, evaluate};
use crate::metrics::MetricsLog;
use crate::optim::{AdamW, Grads, Params, Shard};
use crate::parallel::Replicas;
use crate::plan::BatchPlan;
use crate::telemetry::{StepRecord, Telemetry};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct PretrainOutcome {
    pub steps: u64,
    pub last_loss: f64,
    pub eval: Option<RankingMetrics>,
    pub checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
}

/// Labels in a batch: every valid position but each row's last.
fn label_count(b: &SequenceBatch) -> usize {
    b.lengths
        .iter()
        .map(|&l| (l as usize).saturating_sub(1))
        .sum()
}

/// Run pre-training as one process, or as one rank of a launch (torchrun / Slurm variables),
/// serving Prometheus metrics (`[metrics]`) until it ends.
pub fn pretrain(job: &PretrainJob) -> Result<PretrainOutcome> {
    // The endpoint starts first: a busy port fails this rank before the rendezvous.
    let telemetry = Telemetry::start(&job.metrics, &uqa_comm::RankEnv::from_env()?)?;
    let timeout = Duration::from_secs(job.train.collective_timeout_s);
    let mut replicas = Replicas::from_env(job.train.bucket_mb, timeout)?;
    pretrain_observed(job, &mut replicas, &telemetry)
}

/// Pre-training on given replicas (in-process ranks in tests), without a metrics endpoint.
pub fn pretrain_with(job: &PretrainJob, replicas: &mut Replicas) -> Result<PretrainOutcome> {
    pretrain_observed(job, replicas, &Telemetry::disabled())
}

/// The loop itself, reporting each step and evaluation to `telemetry`.
pub fn pretrain_observed(
    job: &PretrainJob,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<PretrainOutcome> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    replicas.check_same("config hash", &job.hash())?;
    let out = &job.train.out;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let ds = Dataset::open(&job.data.dir)?;
    let plan = BatchPlan::new(ds.train.num_rows(), rank, world, &job.train)?;
    ds.train.advise_random();

    // Same seed, same initial weights.
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, job.train.seed, DType::F32, &device);
    let mut model = PretrainModel::new(&job.model, &ds.meta.vocab, vb)?;
    // Embedding-table gradients go straight into one buffer per table (models::grad_sink).
    let sink = GradSink::new();
    model.set_grad_sink(Some(sink.clone()));
    let params = Params::from_varmap(&varmap);
    let counts = job.model.param_count(&ds.meta.vocab);
    let lead = rank == 0;
    if lead {
        eprintln!(
            "model: {} dense parameters (paper convention, embedding tables excluded) + {} in embedding tables",
            counts.dense, counts.embeddings
        );
    }

    let shard = (job.train.zero == 1).then(|| Shard::new(&params, rank, world));
    let mut optimizer = AdamW::with_shard(job.optim.adamw, &params, shard);
    let state_bytes = replicas.gather_counts(optimizer.state_bytes() as u64)?;
    telemetry.record_optimizer_state(optimizer.state_bytes());
    if lead {
        eprintln!(
            "{}",
            crate::optim::zero::describe(job.train.zero, &state_bytes)
        );
    }
    let hash = job.hash();
    let (mut state, resumed_from) =
        checkpoint::resume_or_start(out, &params, &mut optimizer, &hash, world)?;
    if let (Some(dir), true) = (&resumed_from, lead) {
        eprintln!(
            "resumed from {} (step {}, epoch {})",
            dir.display(),
            state.step,
            state.epoch
        );
    }
    // Identical start on every rank, as DDP does (the seeded initialisation already agrees;
    // this also covers weights restored from a checkpoint).
    replicas.broadcast_params(&params)?;
    let config_toml = job.to_toml();
    let checkpointer = Checkpointer {
        out: out.clone(),
        config_toml: config_toml.clone(),
        keep: job.train.keep_checkpoints,
    };
    let mut log = MetricsLog::for_run(lead, out, &config_toml)?;

    let BatchPlan {
        sampler,
        per_rank,
        micro,
        total_steps,
    } = plan;
    let mut grads = Grads::released(&params);
    let mut last_loss = f64::NAN;
    let mut last_eval = None;
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
            let batches: Vec<SequenceBatch> = rows
                .chunks(micro)
                .map(|r| collate(&ds.train, r, job.data.max_len))
                .collect();
            ds.train.release_pages();
            let mut totals = [batches.iter().map(label_count).sum::<usize>() as f64];
            replicas.sum(&mut totals)?;
            let labels = totals[0] as usize;
            let mut loss_sum = 0.0;
            for b in &batches {
                let seed = job.train.seed ^ (state.step << 16) ^ b.rows[0] as u64;
                let ls = model.loss(b, true, seed)?;
                if ls.count != label_count(b) {
                    return Err(TrainError::Invalid(format!(
                        "the objective counted {} labels, the batch has {}",
                        ls.count,
                        label_count(b)
                    )));
                }
                loss_sum += ls.sum.to_scalar::<f32>().ctx("loss value")? as f64;
                let loss = (&ls.sum / labels.max(1) as f64).ctx("normalising the loss")?;
                grads.add(&params, loss.backward().ctx("backward")?, Some(&sink))?;
            }
            grads.fill_missing(&params);
            let sync = replicas.sum_grads(&mut grads)?;
            let positions: usize = batches
                .iter()
                .map(|b| b.lengths.iter().map(|&l| l as usize).sum::<usize>())
                .sum();
            let mut reduced = [loss_sum, positions as f64];
            replicas.sum(&mut reduced)?;
            let loss = reduced[0] / labels.max(1) as f64;
            let global_positions = reduced[1];
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
            last_loss = loss;

            let step_s = t0.elapsed().as_secs_f64();
            telemetry.record_step(&StepRecord {
                step: state.step,
                epoch: state.epoch,
                loss,
                lr,
                grad_norm: norm,
                seconds: step_s,
                samples: rows.len(),
                positions,
                allreduce: sync,
            });
            if state.step % job.train.log_every == 0 || state.step == total_steps {
                log.record(&json!({
                    "step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr,
                    "grad_norm": norm, "step_seconds": step_s, "labels": labels, "world_size": world,
                    "allreduce_seconds": sync.seconds, "allreduce_bytes": sync.bytes,
                    "positions_per_second": global_positions / step_s,
                    "param_broadcast_seconds": bcast.seconds, "param_broadcast_bytes": bcast.bytes,
                    "optimizer_state_bytes": state_bytes,
                    "elapsed_seconds": started.elapsed().as_secs_f64(),
                }))?;
            }
            log.progress(
                &format!(
                    "epoch {}/{} step {}/{} loss {loss:.4} lr {lr:.2e} |g| {norm:.3} {:.0} pos/s",
                    state.epoch + 1,
                    job.train.epochs,
                    state.step,
                    total_steps,
                    global_positions / step_s
                ),
                false,
            );
            if job.train.checkpoint_every > 0 && state.step % job.train.checkpoint_every == 0 {
                last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
            }
        }
        // Epoch complete (unless max_steps cut it short: then the loop above broke out).
        state.epoch += 1;
        state.sampler_position = 0;
        let eval_now = job.eval.every_epochs > 0 && state.epoch % job.eval.every_epochs == 0;
        if (eval_now || state.epoch == job.train.epochs) && lead {
            let label = format!("epoch {}", state.epoch);
            last_eval = Some(evaluate_and_record(
                &model, &ds, job, &state, &mut log, telemetry, &label,
            )?);
        }
        last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
    }
    // Stopped by train.max_steps inside an epoch: evaluate and checkpoint where it stands.
    if state.step >= total_steps && state.sampler_position > 0 {
        if lead {
            last_eval = Some(evaluate_and_record(
                &model, &ds, job, &state, &mut log, telemetry, "final",
            )?);
        }
        last_checkpoint = checkpointer.save(replicas, &params, &optimizer, &state)?;
    }
    replicas.barrier()?;
    Ok(PretrainOutcome {
        steps: state.step,
        last_loss,
        eval: last_eval,
        checkpoint: last_checkpoint,
        resumed_from,
    })
}

/// Evaluate the encoder (rank 0) and report it to the log, the terminal and Prometheus.
fn evaluate_and_record(
    model: &PretrainModel,
    ds: &Dataset,
    job: &PretrainJob,
    state: &TrainState,
    log: &mut MetricsLog,
    telemetry: &Telemetry,
    label: &str,
) -> Result<RankingMetrics> {
    let m = evaluate(model, ds, &job.eval, job.data.max_len, job.train.seed)?;
    log.progress(&format!("{label} eval: {}", m.summary()), true);
    log.record(&json!({"step": state.step, "epoch": state.epoch, "eval": m}))?;
    telemetry.record_eval(state.epoch, &m);
    Ok(m)
}
