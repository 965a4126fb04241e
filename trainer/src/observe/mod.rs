//! What a run reports, and to whom: the loop hands each [`StepReport`] (and each evaluation) to
//! its [`Observers`], which fan it out to the JSONL log and the progress line (rank 0) and to
//! the Prometheus endpoint (every rank).

pub mod progress;
pub mod prometheus;
pub mod run_log;

pub use progress::Progress;
pub use prometheus::{MetricsConfig, Telemetry};
pub use run_log::RunLog;

use crate::engine::StepReport;
use crate::error::Result;
use crate::eval::RankingMetrics;

/// An evaluation during training (pre-training's ranking metrics, on rank 0).
pub struct EvalReport<'a> {
    pub step: u64,
    pub epoch: u64,
    /// `epoch N` or `final`.
    pub label: &'a str,
    pub metrics: &'a RankingMetrics,
}

/// The end of a run.
pub struct Finished {
    /// `pre-trained`, `aligned`.
    pub stage: &'static str,
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
}

pub trait Observer {
    fn step(&mut self, report: &StepReport) -> Result<()>;

    fn eval(&mut self, _report: &EvalReport) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _report: &Finished) -> Result<()> {
        Ok(())
    }
}

/// The observers of one run, called in order.
#[derive(Default)]
pub struct Observers<'a> {
    list: Vec<Box<dyn Observer + 'a>>,
}

impl<'a> Observers<'a> {
    pub fn push(&mut self, o: impl Observer + 'a) {
        self.list.push(Box::new(o));
    }

    pub fn step(&mut self, r: &StepReport) -> Result<()> {
        self.list.iter_mut().try_for_each(|o| o.step(r))
    }

    pub fn eval(&mut self, r: &EvalReport) -> Result<()> {
        self.list.iter_mut().try_for_each(|o| o.eval(r))
    }

    pub fn finish(&mut self, r: &Finished) -> Result<()> {
        self.list.iter_mut().try_for_each(|o| o.finish(r))
    }
}
