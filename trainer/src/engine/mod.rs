//! The one training loop. Pre-training and alignment are [`Stage`]s; this module owns what they
//! share: the batch plan, the optimiser, resuming, the step, observers and checkpoints.

pub mod stage;
pub mod step;

pub use stage::{EpochEnd, Rate, Stage, Units};
pub use step::{Accumulated, Optimization, StepReport, accumulate, train_step, update};

use std::path::PathBuf;
use std::time::Duration;

use uqa_comm::Runtime;

use uqa_data::sampler::SamplerState;

use crate::checkpoint::{self, Checkpointer, TrainState};
use crate::config::{OptimConfig, RuntimeConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::observe::{Finished, MetricsConfig, Observers, Progress, RunLog, Telemetry};
use crate::optim::{Shard, zero};
use crate::parallel::{DataParallel, Replicas};
use crate::plan::BatchPlan;

/// One run of a stage: its settings, and the resolved config it saves and is identified by.
pub struct Run<'a> {
    /// How the end of the run is announced (`pre-trained`, `aligned`).
    pub name: &'static str,
    pub train: &'a TrainConfig,
    pub optim: &'a OptimConfig,
    pub config_hash: String,
    pub config_toml: String,
    /// Where this process runs (backend and device; the world size is the replicas').
    pub runtime: &'a Runtime,
    /// The job's paths by field (`data.dir`), saved absolute in `resolved.toml`.
    pub paths: Vec<(&'static str, PathBuf)>,
}

/// This process's runtime (rank, backend, device: resolved once, printed by rank 0), its
/// Prometheus endpoint and its replicas. The endpoint starts before the rendezvous, so a busy
/// port fails this rank before the others wait for it.
pub fn launch(
    settings: &RuntimeConfig,
    metrics: &MetricsConfig,
    train: &TrainConfig,
) -> Result<(Runtime, Telemetry, Replicas)> {
    let runtime = Runtime::from_env(settings.request()?)?;
    if runtime.env.rank == 0 {
        eprintln!("runtime: {}", runtime.describe());
    }
    let telemetry = Telemetry::start(metrics, &runtime.env)?;
    let timeout = Duration::from_secs(train.collective_timeout_s);
    let replicas = Replicas::connect(&runtime, timeout)?.with_bucket_mb(train.bucket_mb);
    Ok((runtime, telemetry, replicas))
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Trained {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
}

/// Train `stage` to the end of `run` on these replicas, resuming from the run's latest intact
/// checkpoint, reporting every step to the run log, the progress line and `telemetry`.
pub fn train<S: Stage>(
    stage: &mut S,
    run: &Run,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<Trained> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    replicas.check_same("config hash", &run.config_hash)?;
    let out = &run.train.out;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let plan = BatchPlan::new(stage.rows(), rank, world, run.train)?;
    if rank == 0 {
        write_resolved(run, &plan, world)?;
    }
    let (mut opt, state_bytes) = optimization(stage, run, replicas, telemetry)?;
    let (mut state, resumed_from) = resume(run, &mut opt, replicas)?;
    let checkpointer = Checkpointer::new(run.train, &run.config_toml);
    let mut observers = observers::<S>(rank, run, state_bytes, telemetry)?;

    let (mut first_loss, mut last_loss, mut saved) = (f64::NAN, f64::NAN, None);
    'epochs: while state.epoch < run.train.epochs {
        let from = SamplerState {
            epoch: state.epoch,
            position: state.sampler_position,
        };
        for rows in plan.sampler.batches(from, plan.per_rank, false) {
            if state.step >= plan.total_steps {
                break 'epochs;
            }
            let batches: Vec<S::Batch> = rows
                .chunks(plan.micro)
                .map(|r| stage.collate(r))
                .collect::<Result<_>>()?;
            let mut report = train_step(
                stage,
                &batches,
                &mut opt,
                replicas,
                state.step,
                plan.total_steps,
            )?;
            (report.epoch, report.epochs) = (state.epoch, run.train.epochs);
            state.step += 1;
            state.sampler_position += rows.len();
            if first_loss.is_nan() {
                first_loss = report.loss;
            }
            last_loss = report.loss;
            observers.step(&report)?;
            if checkpointer.due(state.step) {
                saved = checkpointer.save(replicas, &opt, &state)?;
            }
        }
        state.epoch += 1;
        state.sampler_position = 0;
        let last = state.epoch == run.train.epochs;
        stage.after_epoch(
            &state,
            EpochEnd::Complete { last },
            &mut observers,
            replicas,
        )?;
        saved = checkpointer.save(replicas, &opt, &state)?;
    }
    // Stopped by train.max_steps inside an epoch: evaluate and checkpoint where it stands.
    if state.step >= plan.total_steps && state.sampler_position > 0 {
        stage.after_epoch(&state, EpochEnd::Stopped, &mut observers, replicas)?;
        saved = checkpointer.save(replicas, &opt, &state)?;
    }
    let steps = state.step;
    observers.finish(&Finished {
        stage: run.name,
        steps,
        first_loss,
        last_loss,
    })?;
    replicas.barrier()?;
    Ok(Trained {
        steps,
        first_loss,
        last_loss,
        checkpoint: saved,
        resumed_from,
    })
}

/// `OUT/resolved.toml`: what this run resolved at start (world size, backend, device, the
/// batch split, step counts, absolute paths) above the job's config.
fn write_resolved(run: &Run, plan: &BatchPlan, world: usize) -> Result<()> {
    let t = run.train;
    let mut paths = toml::Table::new();
    for (field, path) in &run.paths {
        let abs = std::path::absolute(path).map_err(|e| TrainError::io(path, e))?;
        paths.insert(field.to_string(), abs.display().to_string().into());
    }
    let mut resolved = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| resolved.insert(k.into(), v);
    put("world_size", (world as i64).into());
    put("backend", run.runtime.backend.to_string().into());
    put("device", run.runtime.device.to_string().into());
    put("global_batch", (t.batch_size as i64).into());
    put("per_rank_batch", (plan.per_rank as i64).into());
    put("micro_batch", (plan.micro as i64).into());
    put("grad_accum", (t.grad_accum as i64).into());
    put("steps_per_epoch", (plan.steps_per_epoch as i64).into());
    put("total_steps", (plan.total_steps as i64).into());
    let mut doc = toml::Table::new();
    doc.insert("resolved".into(), resolved.into());
    doc.insert("paths".into(), paths.into());
    let text = format!(
        "# Resolved at start by rank 0; the job itself is config.toml.\n{}",
        toml::to_string(&doc).map_err(|e| TrainError::Invalid(e.to_string()))?
    );
    uqa_data::atomic::write_atomic(t.out.join("resolved.toml"), text.as_bytes())?;
    Ok(())
}

/// The run's latest intact checkpoint restored into `opt` (or a fresh start), then rank 0's
/// parameters copied to every rank, as DDP does (this also covers the seeded initialisation).
fn resume(
    run: &Run,
    opt: &mut Optimization,
    replicas: &mut Replicas,
) -> Result<(TrainState, Option<PathBuf>)> {
    let world = replicas.world_size();
    let (state, resumed_from) = checkpoint::resume_or_start(
        &run.train.out,
        &opt.params,
        &mut opt.optimizer,
        &run.config_hash,
        world,
    )?;
    if let (Some(dir), 0) = (&resumed_from, replicas.rank()) {
        eprintln!(
            "resumed from {} (step {}, epoch {})",
            dir.display(),
            state.step,
            state.epoch
        );
    }
    replicas.broadcast_params(&opt.params)?;
    Ok((state, resumed_from))
}

/// Rank 0 keeps the run log and the progress line; every rank feeds its Prometheus endpoint.
fn observers<'a, S: Stage>(
    rank: usize,
    run: &Run,
    state_bytes: Vec<u64>,
    telemetry: &'a Telemetry,
) -> Result<Observers<'a>> {
    let mut observers = Observers::default();
    if rank == 0 {
        let (out, every) = (&run.train.out, run.train.log_every);
        observers.push(RunLog::create(
            out,
            &run.config_toml,
            S::UNITS,
            every,
            state_bytes,
        )?);
        observers.push(Progress::new(S::UNITS, every));
    }
    observers.push(telemetry);
    Ok(observers)
}

/// The optimiser of a run (its state sharded with `train.zero = 1`), and each rank's state
/// bytes, reported once.
fn optimization<S: Stage>(
    stage: &S,
    run: &Run,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<(Optimization, Vec<u64>)> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    let params = stage.params().clone();
    if params.is_empty() {
        return Err(TrainError::Invalid("nothing to train".into()));
    }
    let shard = (run.train.zero == 1).then(|| Shard::new(&params, rank, world));
    let opt = Optimization::new(params, run.optim.clone(), shard, |n| stage.lr_scale(n));
    let bytes = opt.optimizer.state_bytes();
    telemetry.record_optimizer_state(bytes);
    let state_bytes = replicas.gather_counts(bytes as u64)?;
    if rank == 0 {
        eprintln!("{}", zero::describe(run.train.zero, &state_bytes));
    }
    Ok((opt, state_bytes))
}
