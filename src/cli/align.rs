//! `uqa align`: stage 2, aligning a frozen encoder to an LLM (or fine-tuning a text baseline).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqa_trainer::{AlignJob, align};

use super::{CliResult, with_device};

#[derive(Debug, Args)]
pub struct AlignArgs {
    /// Alignment config (TOML: [data], [llm], [prompt], [strategy], [optim], [train],
    /// [runtime]); see configs/quickstart/align_trmpp.toml and configs/tests/tiny_align.toml.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value, e.g. `--set strategy.kind="lora" --set train.epochs=1`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Device: auto (cuda:LOCAL_RANK when the build has CUDA and a GPU is visible), cpu or
    /// cuda; the same as `--set runtime.device=...`.
    #[arg(long)]
    device: Option<String>,
}

pub fn run(a: AlignArgs) -> CliResult {
    let job = AlignJob::load(&a.config, &with_device(a.overrides, a.device))?;
    let outcome = align(&job)?;
    println!(
        "alignment finished: {} steps, loss {:.4} -> {:.4}, {} trainable parameters",
        outcome.steps, outcome.first_loss, outcome.last_loss, outcome.trainable_parameters
    );
    if let Some(c) = &outcome.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    println!("metrics: {}", job.train.out.join("metrics.jsonl").display());
    Ok(ExitCode::SUCCESS)
}
