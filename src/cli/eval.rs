//! `uqa eval`: stage 3, an aligned model answers the evaluation questions (on any number of
//! ranks) and the answers are scored.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use uqa_comm::{DeviceRequest, Runtime};
use uqa_evaluator::answer::{EvalJob, EvalOutcome, evaluate};
use uqabench::report::tables::{Averaging, Rule, table2_markdown};

use super::CliResult;
use super::numbers::{MAX_NEW_TOKENS, u64_in, usize_in};

/// A week, in seconds.
const MAX_COLLECTIVE_TIMEOUT_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The alignment run to evaluate (the folder `uqa align` wrote).
    #[arg(long)]
    run: PathBuf,
    /// Questions file (default: the run's qa_dir/align_data_eval.arrow).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Output folder (default: RUN/eval): predictions.jsonl, eval.json, run.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Questions decoded together per rank.
    #[arg(long, default_value_t = 16, value_parser = usize_in(1..))]
    batch_size: usize,
    /// Tokens generated at most per answer (the reference generates a single one).
    #[arg(long, default_value_t = 64, value_parser = usize_in(1..=MAX_NEW_TOKENS))]
    max_new_tokens: usize,
    /// Evaluate the first N questions only (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Name of the run in reports (default: the run folder's name).
    #[arg(long)]
    name: Option<String>,
    /// CTR mode (ReLLa): score P(yes) from the yes/no next-token logits of each question (for
    /// files from `uqa qa-gen --ctr-users`) and report AUC, log loss and accuracy.
    #[arg(long)]
    ctr: bool,
    /// Device: auto (cuda:LOCAL_RANK when the build has CUDA and a GPU is visible), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Deadline of the final gather, in seconds (at most a week: deadlines are instants, and
    /// one too far ahead overflows the clock).
    #[arg(long, default_value_t = 1800, value_parser = u64_in(1..=MAX_COLLECTIVE_TIMEOUT_S))]
    collective_timeout_s: u64,
}

pub fn run(a: EvalArgs) -> CliResult {
    let job = EvalJob {
        run: a.run,
        questions: a.questions,
        out: a.out,
        batch_size: a.batch_size,
        max_new_tokens: a.max_new_tokens,
        limit: a.limit,
        name: a.name,
        collective_timeout: Duration::from_secs(a.collective_timeout_s),
        ctr: a.ctr,
    };
    let runtime = Runtime::from_env(a.device)?;
    match evaluate(&job, &runtime)? {
        None => {}
        Some(EvalOutcome::Ctr {
            metrics,
            seconds,
            out,
        }) => {
            println!(
                "CTR over {} questions ({} clicked) in {seconds:.1} s: AUC {} log loss {:.4} accuracy {:.4}",
                metrics.n,
                metrics.positives,
                metrics.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
                metrics.log_loss,
                metrics.accuracy
            );
            println!("scores: {}", out.join("ctr_predictions.jsonl").display());
        }
        Some(EvalOutcome::Generated {
            summary,
            scores,
            out,
        }) => {
            let name = out.display().to_string();
            println!(
                "{}",
                table2_markdown(&[(name, *scores)], Averaging::Micro, Rule::Prefix)
            );
            println!(
                "{} questions answered ({} skipped) on {} rank(s) in {:.1} s: {:.2} questions/s",
                summary.answered,
                summary.skipped.len(),
                summary.world_size,
                summary.seconds,
                summary.questions_per_second
            );
            if summary.shortened_histories > 0 {
                println!(
                    "{} text prompts lost their oldest history lines to fit the token limit",
                    summary.shortened_histories
                );
            }
            println!("predictions: {}", out.join("predictions.jsonl").display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
