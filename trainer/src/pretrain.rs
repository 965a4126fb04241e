//! Stage 1: pre-training a user-sequence encoder with next-item prediction, as a [`Stage`] of
//! the one training loop (`engine`): a micro-batch is a collated slice of training sequences,
//! its labels every valid position but each row's last, its loss the objective's sum; rank 0
//! evaluates at the epochs `eval.every_epochs` names, at the last one, and where `max_steps`
//! stops the run.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use uqa_comm::Runtime;
use uqa_data::batch::{SequenceBatch, collate};
use uqa_data::dataset::Dataset;
use uqa_models::{GradSink, PretrainModel, seeded_var_builder};

use crate::checkpoint::TrainState;
use crate::config::PretrainJob;
use crate::engine::{self, EpochEnd, Rate, Run, Stage, Units};
use crate::error::{Result, TrainError};
use crate::eval::{RankingMetrics, evaluate};
use crate::observe::{EvalReport, Observers, Telemetry};
use crate::optim::Params;
use crate::parallel::Replicas;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct PretrainOutcome {
    pub steps: u64,
    pub last_loss: f64,
    pub eval: Option<RankingMetrics>,
    pub checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
}

/// Run pre-training as one process, or as one rank of a launch (torchrun / Slurm variables),
/// serving Prometheus metrics (`[metrics]`) until it ends.
pub fn pretrain(job: &PretrainJob) -> Result<PretrainOutcome> {
    let (runtime, telemetry, mut replicas) =
        engine::launch(&job.runtime, &job.metrics, &job.train)?;
    pretrain_observed(job, &runtime, &mut replicas, &telemetry)
}

/// Pre-training on given replicas (in-process ranks in tests), without a metrics endpoint.
pub fn pretrain_with(job: &PretrainJob, replicas: &mut Replicas) -> Result<PretrainOutcome> {
    pretrain_observed(job, &Runtime::single(), replicas, &Telemetry::disabled())
}

/// Pre-training on given replicas, reporting to `telemetry`.
pub fn pretrain_observed(
    job: &PretrainJob,
    runtime: &Runtime,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<PretrainOutcome> {
    let device = uqa_models::device::open(runtime.device.cuda_ordinal())?;
    let mut stage = PretrainStage::new(job, replicas.rank(), &device)?;
    let run = Run {
        name: "pre-trained",
        train: &job.train,
        optim: &job.optim,
        config_hash: job.hash(),
        config_toml: job.to_toml(),
        runtime,
        paths: vec![
            ("data.dir", job.data.dir.clone()),
            ("train.out", job.train.out.clone()),
        ],
    };
    let trained = engine::train(&mut stage, &run, replicas, telemetry)?;
    Ok(PretrainOutcome {
        steps: trained.steps,
        last_loss: trained.last_loss,
        eval: stage.last_eval,
        checkpoint: trained.checkpoint,
        resumed_from: trained.resumed_from,
    })
}

/// The encoder, its data and what evaluation found last.
pub struct PretrainStage<'a> {
    job: &'a PretrainJob,
    ds: Dataset,
    model: PretrainModel,
    params: Params,
    /// Embedding-table gradients go straight into one buffer per table (models::grad_sink).
    sink: GradSink,
    pub last_eval: Option<RankingMetrics>,
}

impl<'a> PretrainStage<'a> {
    /// The model on `device` with the run's seeded initial weights (the same on every rank and
    /// every device: they are drawn on the host).
    pub fn new(job: &'a PretrainJob, rank: usize, device: &Device) -> Result<Self> {
        let ds = Dataset::open(&job.data.dir)?;
        ds.train.advise_random();
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, job.train.seed, DType::F32, device);
        let mut model = PretrainModel::new(&job.model, &ds.meta.vocab, vb)?;
        let sink = GradSink::new();
        model.set_grad_sink(Some(sink.clone()));
        if rank == 0 {
            let counts = job.model.param_count(&ds.meta.vocab);
            eprintln!(
                "model: {} dense parameters (paper convention, embedding tables excluded) + {} in embedding tables",
                counts.dense, counts.embeddings
            );
        }
        Ok(Self {
            job,
            ds,
            model,
            params: Params::from_varmap(&varmap),
            sink,
            last_eval: None,
        })
    }

    /// Evaluate the encoder on every rank (each scores a share of the users) and report it.
    fn evaluate(
        &mut self,
        at: &TrainState,
        label: &str,
        observers: &mut Observers,
        replicas: &mut Replicas,
    ) -> Result<()> {
        let job = self.job;
        let m = evaluate(
            &self.model,
            &self.ds,
            &job.eval,
            job.data.max_len,
            job.train.seed,
            replicas,
        )?;
        observers.eval(&EvalReport {
            step: at.step,
            epoch: at.epoch,
            label,
            metrics: &m,
        })?;
        self.last_eval = Some(m);
        Ok(())
    }
}

/// How pre-training names its units: sequences, their positions, and the labels among them.
pub const SEQUENCE_UNITS: Units = Units {
    samples: "sequences",
    inputs: "positions",
    labels: "labels",
    rate: Rate::Inputs("pos/s"),
};

/// Valid positions in a batch.
pub fn position_count(b: &SequenceBatch) -> usize {
    b.lengths.iter().map(|&l| l as usize).sum()
}

/// Labels in a batch: every valid position but each row's last.
pub fn label_count(b: &SequenceBatch) -> usize {
    b.lengths
        .iter()
        .map(|&l| (l as usize).saturating_sub(1))
        .sum()
}

impl Stage for PretrainStage<'_> {
    type Batch = SequenceBatch;

    const UNITS: Units = SEQUENCE_UNITS;

    fn params(&self) -> &Params {
        &self.params
    }

    fn rows(&self) -> usize {
        self.ds.train.num_rows()
    }

    fn collate(&self, rows: &[usize]) -> Result<SequenceBatch> {
        let batch = collate(&self.ds.train, rows, self.job.data.max_len);
        self.ds.train.release_pages();
        Ok(batch)
    }

    fn labels(&self, b: &SequenceBatch) -> usize {
        label_count(b)
    }

    fn samples(&self, b: &SequenceBatch) -> usize {
        b.batch_size
    }

    fn inputs(&self, b: &SequenceBatch) -> usize {
        position_count(b)
    }

    fn loss(&self, b: &SequenceBatch, step: u64) -> Result<Tensor> {
        let seed = self.job.train.seed ^ (step << 16) ^ b.rows[0] as u64;
        let ls = self.model.loss(b, true, seed)?;
        if ls.count != label_count(b) {
            return Err(TrainError::Invalid(format!(
                "the objective counted {} labels, the batch has {}",
                ls.count,
                label_count(b)
            )));
        }
        Ok(ls.sum)
    }

    fn grad_sink(&self) -> Option<&GradSink> {
        Some(&self.sink)
    }

    fn after_epoch(
        &mut self,
        at: &TrainState,
        end: EpochEnd,
        obs: &mut Observers,
        replicas: &mut Replicas,
    ) -> Result<()> {
        match end {
            EpochEnd::Complete { last } => {
                let every = self.job.eval.every_epochs;
                if last || (every > 0 && at.epoch.is_multiple_of(every)) {
                    self.evaluate(at, &format!("epoch {}", at.epoch), obs, replicas)?;
                }
            }
            EpochEnd::Stopped => self.evaluate(at, "final", obs, replicas)?,
        }
        Ok(())
    }
}
