//! `uqa pretrain`: stage 1, pre-training a user-sequence encoder.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqa_trainer::{PretrainJob, pretrain};

use super::CliResult;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Experiment config (TOML: [data], [model], [optim], [train], [eval]); see configs/.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value, e.g. `--set optim.lr=1e-3 --set train.epochs=1`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(a: PretrainArgs) -> CliResult {
    let job = PretrainJob::load(&a.config, &a.overrides)?;
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
