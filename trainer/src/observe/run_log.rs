//! The run's JSONL log (`OUT/metrics.jsonl`): one object per logged step and per evaluation,
//! appended (a resumed run continues its log), beside the resolved config (`OUT/config.toml`).
//! Rank 0 writes it; values arrive already reduced across ranks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::{EvalReport, Observer};
use crate::engine::{StepReport, Units};
use crate::error::{Result, TrainError};

pub struct RunLog {
    path: PathBuf,
    file: File,
    units: Units,
    log_every: u64,
    /// Each rank's optimiser state bytes (one entry per rank), logged with every step.
    optimizer_state_bytes: Vec<u64>,
    started: Instant,
}

impl RunLog {
    /// Save the resolved config in `out` and open (append to) `out/metrics.jsonl`; steps are
    /// logged every `log_every` steps, plus the first and the last.
    pub fn create(
        out: &Path,
        config_toml: &str,
        units: Units,
        log_every: u64,
        optimizer_state_bytes: Vec<u64>,
    ) -> Result<Self> {
        uqa_data::atomic::write_atomic(out.join("config.toml"), config_toml.as_bytes())?;
        let path = out.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self {
            path,
            file,
            units,
            log_every: log_every.max(1),
            optimizer_state_bytes,
            started: Instant::now(),
        })
    }

    pub fn record(&mut self, value: &Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::io(&self.path, e))
    }
}

impl Observer for RunLog {
    fn step(&mut self, r: &StepReport) -> Result<()> {
        if !r.step.is_multiple_of(self.log_every) && r.step != r.total_steps && r.step != 1 {
            return Ok(());
        }
        let u = self.units;
        let per_second = |n: f64| n / r.seconds.max(1e-9);
        let mut line = json!({
            "step": r.step, "epoch": r.epoch, "loss": r.loss, "lr": r.lr,
            "grad_norm": r.grad_norm, "step_seconds": r.seconds, "world_size": r.world_size,
            "forward_seconds": r.forward_seconds, "backward_seconds": r.backward_seconds,
            "optimizer_seconds": r.optimizer_seconds,
            "allreduce_seconds": r.allreduce.seconds, "allreduce_bytes": r.allreduce.bytes,
            "param_broadcast_seconds": r.param_broadcast.seconds,
            "param_broadcast_bytes": r.param_broadcast.bytes,
            "optimizer_state_bytes": self.optimizer_state_bytes,
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
        });
        line[u.labels] = json!(r.labels);
        line[format!("{}_per_second", u.samples)] = json!(per_second(r.global_samples));
        line[format!("{}_per_second", u.inputs)] = json!(per_second(r.global_inputs));
        self.record(&line)
    }

    fn eval(&mut self, r: &EvalReport) -> Result<()> {
        self.record(&json!({"step": r.step, "epoch": r.epoch, "eval": r.metrics}))
    }
}
