//! `uqa qa-gen`: alignment and evaluation question files for the seven sub-tasks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqabench::qa::{CtrConfig, Lang, QaGenConfig, Task, generate, generate_ctr};

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Args)]
pub struct QaGenArgs {
    /// Dataset folder (from `uqa data synth` or `uqa data import`).
    #[arg(long)]
    data: PathBuf,
    /// Output folder for align_data_train.arrow, align_data_eval.arrow and qa.json (default:
    /// the dataset folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Question language: zh (the reference's; templates contain its recognition fragments) or
    /// en.
    #[arg(long, default_value = "zh")]
    lang: Lang,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training questions per sub-task (the reference has about 7,500).
    #[arg(long, default_value_t = 7_500, value_parser = usize_in(1..))]
    train_per_task: usize,
    /// Evaluation questions per sub-task (the reference has about 1,000).
    #[arg(long, default_value_t = 1_000, value_parser = usize_in(1..))]
    eval_per_task: usize,
    /// Also write CTR questions (ctr_data_{train,eval}.arrow: will the user click this item
    /// next? yes/no, balanced) for this many users per split; 0: none.
    #[arg(long, default_value_t = 0)]
    ctr_users: usize,
    /// Training windows per user (each ends one pseudo-future earlier; none sees the held-out
    /// tail): more and more varied training questions from the same users.
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..))]
    train_windows: usize,
    /// Validation questions per sub-task (0: none): a tenth of the users give their training
    /// questions to align_data_valid.arrow instead, to tune recipes on without touching the
    /// evaluation questions.
    #[arg(long, default_value_t = 0)]
    valid_per_task: usize,
}

pub fn run(a: QaGenArgs) -> CliResult {
    let out = a.out.clone().unwrap_or_else(|| a.data.clone());
    let config = QaGenConfig {
        lang: a.lang,
        seed: a.seed,
        train_per_task: a.train_per_task,
        eval_per_task: a.eval_per_task,
        train_windows: a.train_windows,
        valid_per_task: a.valid_per_task,
    };
    let report = generate(&a.data, &out, config)?;
    println!(
        "questions per sub-task (train / eval), balanced; written to {}",
        out.display()
    );
    for task in Task::ALL.map(|t| t.name()) {
        println!(
            "  {task}  {:>6} / {:>5}   (candidates: {} / {})",
            report.train[task],
            report.eval[task],
            report.train_available[task],
            report.eval_available[task]
        );
    }
    if !report.valid.is_empty() {
        let per_task = Task::ALL.map(|t| format!("{t} {}", report.valid[t.name()]));
        println!(
            "  validation (align_data_valid.arrow): {}",
            per_task.join(", ")
        );
    }
    if a.ctr_users > 0 {
        let (train, eval) = generate_ctr(
            &a.data,
            &out,
            CtrConfig {
                lang: a.lang,
                seed: a.seed,
                train_users: a.ctr_users,
                eval_users: a.ctr_users,
            },
        )?;
        println!("  CTR  {train:>6} / {eval:>5}   (half clicked next, half never clicked)");
    }
    Ok(ExitCode::SUCCESS)
}
