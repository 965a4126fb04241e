//! What a training stage supplies to the one loop: its parameters, its rows, how rows become a
//! micro-batch, how many labels a micro-batch holds, and its summed loss; plus an epoch hook
//! (pre-training evaluates there). Pre-training and alignment implement it, and so does the
//! step benchmark.

use candle_core::Tensor;
use uqa_models::GradSink;

use crate::checkpoint::TrainState;
use crate::error::Result;
use crate::observe::Observers;
use crate::optim::Params;
use crate::parallel::Replicas;

/// How a stage names its units in logs: pre-training counts sequences, positions and labels;
/// alignment counts questions, input tokens and target tokens.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// A training row (`sequences`, `questions`).
    pub samples: &'static str,
    /// An input position the model reads (`positions`, `input_tokens`).
    pub inputs: &'static str,
    /// A supervised position the loss averages over (`labels`, `target_tokens`).
    pub labels: &'static str,
    /// The throughput shown on the progress line.
    pub rate: Rate,
}

/// Which throughput the progress line shows, with its short unit.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    Samples(&'static str),
    Inputs(&'static str),
}

/// Why the loop calls [`Stage::after_epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    /// An epoch finished; `last` when it was the run's last one.
    Complete { last: bool },
    /// `train.max_steps` stopped the run inside an epoch.
    Stopped,
}

pub trait Stage {
    /// One micro-batch, collated once and read by `labels`, `inputs` and `loss`.
    type Batch;

    const UNITS: Units;

    /// The trainable parameters, in the order checkpoints and collectives use.
    fn params(&self) -> &Params;

    /// Training rows the sampler draws from.
    fn rows(&self) -> usize;

    fn collate(&self, rows: &[usize]) -> Result<Self::Batch>;

    /// Supervised positions in `batch`: the step's loss is the sum of per-label losses over
    /// every rank's batches divided by their total label count.
    fn labels(&self, batch: &Self::Batch) -> usize;

    /// Training rows in `batch`.
    fn samples(&self, batch: &Self::Batch) -> usize;

    /// Input positions in `batch`, for throughput.
    fn inputs(&self, batch: &Self::Batch) -> usize;

    /// The sum of per-label losses of `batch` (a scalar). `step` seeds dropout and sampling.
    fn loss(&self, batch: &Self::Batch, step: u64) -> Result<Tensor>;

    /// Where embedding tables send their gradients instead of the autograd store.
    fn grad_sink(&self) -> Option<&GradSink> {
        None
    }

    /// The learning-rate multiplier of parameter `name` (e.g. the LLM's in full fine-tuning).
    fn lr_scale(&self, _name: &str) -> f64 {
        1.0
    }

    /// Called on every rank after each epoch and when the run stops inside one, before the
    /// checkpoint is written.
    fn after_epoch(
        &mut self,
        _at: &TrainState,
        _end: EpochEnd,
        _observers: &mut Observers,
        _replicas: &mut Replicas,
    ) -> Result<()> {
        Ok(())
    }
}
