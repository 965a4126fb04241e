//! One optimiser step, the same for every stage and for `uqa bench step`: forward and backward
//! over this rank's micro-batches, gradients summed over ranks, then the step's own checks and
//! schedule (a non-finite loss or gradient stops the run, the learning rate follows the
//! schedule, gradients are clipped by the global norm) and the AdamW update.
//!
//! Each rank divides its summed loss by the label count of the *global* batch before backward,
//! so the gradients summed over ranks are the mean over every label of the step, exactly what
//! one process computes for the same global batch with any world size or accumulation.

use std::time::Instant;

use candle_core::DType;

use super::stage::Stage;
use crate::config::OptimConfig;
use crate::error::{CandleContext, Result, TrainError};
use crate::optim::{AdamW, Grads, Params, Shard, clip_factor};
use crate::parallel::{DataParallel, Replicas, SyncStats};

/// The parameters and what updates them: the optimiser, its settings and the gradient buffers.
pub struct Optimization {
    pub params: Params,
    pub optimizer: AdamW,
    pub grads: Grads,
    pub config: OptimConfig,
}

impl Optimization {
    /// AdamW over `params` (its state sharded when `shard` is given, ZeRO-1), each parameter's
    /// learning rate scaled by `lr_scale(name)`.
    pub fn new(
        params: Params,
        config: OptimConfig,
        shard: Option<Shard>,
        lr_scale: impl Fn(&str) -> f64,
    ) -> Self {
        let optimizer =
            AdamW::with_shard(config.adamw, &params, shard).with_lr_scales(&params, lr_scale);
        let grads = Grads::released(&params);
        Self {
            params,
            optimizer,
            grads,
            config,
        }
    }
}

/// A step's gradients, summed over ranks, and the values reduced with them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accumulated {
    /// Mean loss over every label of the global batch.
    pub loss: f64,
    /// Labels of the global batch.
    pub labels: f64,
    /// This rank's rows and input positions, and the global batch's.
    pub samples: usize,
    pub inputs: usize,
    pub global_samples: f64,
    pub global_inputs: f64,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
    pub allreduce: SyncStats,
}

/// What one optimiser step reports to the observers. Loss, learning rate, gradient norm and the
/// `global_` counts are the run's (equal on every rank); the rest are this rank's.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepReport {
    /// Steps completed, this one included, and the run's total.
    pub step: u64,
    pub total_steps: u64,
    /// The epoch this step belongs to (0-based) and the run's epochs.
    pub epoch: u64,
    pub epochs: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    pub labels: f64,
    pub samples: usize,
    pub inputs: usize,
    pub global_samples: f64,
    pub global_inputs: f64,
    pub world_size: usize,
    /// Wall time of the whole step and of its phases.
    pub seconds: f64,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
    pub optimizer_seconds: f64,
    pub allreduce: SyncStats,
    /// ZeRO-1: updated parameters sent from their owners.
    pub param_broadcast: SyncStats,
}

/// Forward and backward over this rank's `batches` (the micro-batches of one step), then the
/// gradients and the loss summed over ranks. Leaves the summed gradients in `grads`.
pub fn accumulate<S: Stage>(
    stage: &S,
    batches: &[S::Batch],
    step: u64,
    grads: &mut Grads,
    replicas: &mut Replicas,
) -> Result<Accumulated> {
    let params = stage.params();
    let mut totals = [batches.iter().map(|b| stage.labels(b)).sum::<usize>() as f64];
    replicas.sum(&mut totals)?;
    let labels = totals[0].max(1.0);
    let (mut loss_sum, mut forward_seconds, mut backward_seconds) = (0.0, 0.0, 0.0);
    for batch in batches {
        let t0 = Instant::now();
        let sum = stage.loss(batch, step)?;
        loss_sum += sum
            .to_dtype(DType::F64)
            .and_then(|t| t.to_scalar::<f64>())
            .ctx("loss value")?;
        let loss = (&sum / labels).ctx("normalising the loss")?;
        let t1 = Instant::now();
        grads.add(params, loss.backward().ctx("backward")?, stage.grad_sink())?;
        forward_seconds += (t1 - t0).as_secs_f64();
        backward_seconds += t1.elapsed().as_secs_f64();
    }
    // A rank whose share of the batch was empty still all-reduces and steps like the others.
    grads.fill_missing(params);
    let allreduce = replicas.sum_grads(grads)?;
    let samples = batches.iter().map(|b| stage.samples(b)).sum::<usize>();
    let inputs = batches.iter().map(|b| stage.inputs(b)).sum::<usize>();
    let mut reduced = [loss_sum, samples as f64, inputs as f64];
    replicas.sum(&mut reduced)?;
    Ok(Accumulated {
        loss: reduced[0] / labels,
        labels,
        samples,
        inputs,
        global_samples: reduced[1],
        global_inputs: reduced[2],
        forward_seconds,
        backward_seconds,
        allreduce,
    })
}

/// One optimiser step over this rank's `batches`: [`accumulate`], then [`update`].
pub fn train_step<S: Stage>(
    stage: &S,
    batches: &[S::Batch],
    opt: &mut Optimization,
    replicas: &mut Replicas,
    step: u64,
    total_steps: u64,
) -> Result<StepReport> {
    let started = Instant::now();
    let acc = accumulate(stage, batches, step, &mut opt.grads, replicas)?;
    let t = Instant::now();
    let (grad_norm, lr, param_broadcast) = update(opt, replicas, acc.loss, step, total_steps)?;
    Ok(StepReport {
        step: step + 1,
        total_steps,
        loss: acc.loss,
        lr,
        grad_norm,
        labels: acc.labels,
        samples: acc.samples,
        inputs: acc.inputs,
        global_samples: acc.global_samples,
        global_inputs: acc.global_inputs,
        world_size: replicas.world_size(),
        seconds: started.elapsed().as_secs_f64(),
        forward_seconds: acc.forward_seconds,
        backward_seconds: acc.backward_seconds,
        optimizer_seconds: t.elapsed().as_secs_f64(),
        allreduce: acc.allreduce,
        param_broadcast,
        ..StepReport::default()
    })
}

/// The end of a step, once the gradients are summed: refuse a non-finite loss or gradient
/// (naming the step), take the learning rate from the schedule, clip by the global norm,
/// update the parameters (sharded or not) and release the gradients. Returns the gradient
/// norm, the learning rate and the ZeRO-1 parameter broadcast.
pub fn update(
    opt: &mut Optimization,
    replicas: &mut Replicas,
    loss: f64,
    step: u64,
    total_steps: u64,
) -> Result<(f64, f64, SyncStats)> {
    // One pass over the gradients: their norm (in f64, where squares of finite f32 cannot
    // overflow) is finite exactly when every gradient is.
    let norm = opt.grads.norm();
    if !loss.is_finite() || !norm.is_finite() {
        return Err(TrainError::NonFiniteLoss {
            step: step + 1,
            value: loss,
            grad_norm: norm,
        });
    }
    let lr = opt
        .config
        .schedule
        .lr(opt.config.adamw.lr, step, total_steps);
    let scale = clip_factor(norm, opt.config.clip_norm);
    let broadcast =
        replicas.step_optimizer(&mut opt.optimizer, &opt.params, &opt.grads, lr, scale)?;
    opt.grads.release();
    Ok((norm, lr, broadcast))
}
