//! `uqa pretrain`: stage 1, pre-training a user-sequence encoder.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqa_trainer::{PretrainJob, pretrain};

use super::{CliResult, with_device};

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Experiment config (TOML: [data], [model], [optim], [train], [eval], [runtime]); see configs/.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value, e.g. `--set optim.lr=1e-3 --set train.epochs=1`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Device: auto (cuda:LOCAL_RANK when the build has CUDA and a GPU is visible), cpu or
    /// cuda; the same as `--set runtime.device=...`.
    #[arg(long)]
    device: Option<String>,
}

pub fn run(a: PretrainArgs) -> CliResult {
    let job = PretrainJob::load(&a.config, &with_device(a.overrides, a.device))?;
    let outcome = pretrain(&job)?;
    println!(
        "pre-training finished: {} steps, last loss {:.4}",
        outcome.steps, outcome.last_loss
    );
    if let Some(m) = &outcome.eval {
        println!("encoder evaluation: {}", m.summary());
    }
    if let Some(c) = &outcome.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    println!("metrics: {}", job.train.out.join("metrics.jsonl").display());
    Ok(ExitCode::SUCCESS)
}
