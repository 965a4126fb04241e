//! `uqa baseline prior|history`: answer the evaluation questions without a model and write a
//! run folder that `uqa report` reads like any model's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqabench::baseline::{BaselineKind, baseline_predictions, write_baseline_run};
use uqabench::report::tables::{Averaging, Rule, table2_markdown};
use uqabench::score::score_predictions;

use super::CliResult;

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// prior: the most frequent training answer of each question's template and attribute;
    /// history: fixed rules over the context sequence (docs/TASKS.md).
    kind: BaselineKind,
    /// The questions folder (`uqa qa-gen` output: align_data_train.arrow, align_data_eval.arrow,
    /// qa.json).
    #[arg(long)]
    qa: PathBuf,
    /// The questions file to answer (default: the folder's align_data_eval.arrow), e.g. the
    /// validation file of `uqa qa-gen --valid-per-task`.
    #[arg(long)]
    questions: Option<PathBuf>,
    /// The dataset folder (history only; default: the one qa.json records).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output run folder: predictions.jsonl, run.json, baseline.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: BaselineArgs) -> CliResult {
    let run = baseline_predictions(a.kind, &a.qa, a.questions.as_deref(), a.data.as_deref())?;
    write_baseline_run(&run, &a.out)?;
    let scores = score_predictions(&run.predictions);
    println!(
        "{}",
        table2_markdown(
            &[(a.kind.name().to_string(), scores)],
            Averaging::Micro,
            Rule::Prefix
        )
    );
    println!(
        "{} questions answered ({} rows skipped); answers by {:?}",
        run.summary.answered,
        run.summary.skipped.len(),
        run.summary.answers_by
    );
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
