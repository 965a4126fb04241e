//! `uqa quickstart` (uqa_pipeline::quickstart): the whole pipeline on embedded defaults, in
//! minutes on a laptop CPU, with this executable running each training and evaluation stage as
//! a user would (`uqa launch ... -- uqa pretrain ...`). Here: flags in, progress and the
//! summary out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqa_data::build::TokenizerChoice;
use uqa_launcher::args::MAX_NPROC_PER_NODE;
use uqa_pipeline::quickstart::{Progress, Quickstart, TRAINED};
use uqabench::qa::Task;
use uqabench::report::Report;
use uqabench::report::tables::counts_markdown;
use uqabench::report::tables::{Averaging, Rule, table2_markdown};

use super::CliResult;
use super::numbers::{MAX_NEW_TOKENS, usize_in};

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder for every artefact of the run (replaced if it exists).
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The dataset's tokenizer (see `uqa data synth --help`). The default, the built-in
    /// byte-level BPE trained on the catalog and question texts, keeps the quickstart's result
    /// independent of what is cached; `auto` takes the real Qwen2 tokenizer when cached.
    #[arg(long, default_value = "builtin")]
    tokenizer: TokenizerChoice,
    /// Ranks of the pre-training, alignment and evaluation stages (as `uqa launch
    /// --nproc-per-node`).
    #[arg(long, default_value_t = 2, value_parser = usize_in(1..=MAX_NPROC_PER_NODE as u64))]
    nproc: usize,
    /// Training questions per sub-task.
    #[arg(long, default_value_t = 2000, value_parser = usize_in(1..))]
    train_per_task: usize,
    /// Training windows per user (see `uqa qa-gen --help`).
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..))]
    train_windows: usize,
    /// Evaluation questions per sub-task.
    #[arg(long, default_value_t = 60, value_parser = usize_in(1..))]
    eval_per_task: usize,
    /// Tokens generated at most per answer.
    #[arg(long, default_value_t = 32, value_parser = usize_in(1..=MAX_NEW_TOKENS))]
    max_new_tokens: usize,
    /// Override a value of the pre-training config, e.g. `--pretrain-set train.epochs=2`.
    #[arg(long = "pretrain-set", value_name = "KEY=VALUE")]
    pretrain_set: Vec<String>,
    /// Override a value of the alignment config, e.g. `--align-set train.epochs=2`.
    #[arg(long = "align-set", value_name = "KEY=VALUE")]
    align_set: Vec<String>,
}

pub fn run(a: QuickstartArgs) -> CliResult {
    let quickstart = Quickstart {
        out: a.out,
        seed: a.seed,
        tokenizer: a.tokenizer,
        nproc: a.nproc,
        train_per_task: a.train_per_task,
        train_windows: a.train_windows,
        eval_per_task: a.eval_per_task,
        max_new_tokens: a.max_new_tokens,
        pretrain_set: a.pretrain_set,
        align_set: a.align_set,
    };
    let exe = std::env::current_exe()?;
    let mut shown: Result<(), String> = Ok(());
    let done = quickstart.run(&exe, |p| match p {
        Progress::Stage {
            index,
            what,
            elapsed,
        } => eprintln!("[{index}/6] {what} ({:.0} s)", elapsed.as_secs_f64()),
        Progress::Dataset { dir, meta } => {
            if let Err(e) = super::data::print_dataset(dir, meta, false) {
                shown = Err(e.to_string());
            }
        }
        Progress::Questions(qa) => {
            let per_task = |m: &std::collections::BTreeMap<String, usize>| {
                Task::ALL.map(|t| format!("{t} {}", m[t.name()])).join(", ")
            };
            println!("questions (train)   {}", per_task(&qa.train));
            println!("questions (eval)    {}", per_task(&qa.eval));
        }
    })?;
    shown?;
    print_summary(&done.report);
    println!();
    println!(
        "quickstart finished in {:.0} s. Artefacts:",
        done.elapsed.as_secs_f64()
    );
    println!("  configs      {}", done.configs.display());
    println!("  dataset      {}", done.data.display());
    println!("  questions    {}", done.questions.display());
    println!("  encoder      {}", done.encoder.display());
    for (name, run) in &done.aligned {
        println!("  aligned ({name}) {}", run.display());
        println!(
            "  predictions ({name}) {}",
            run.join("eval/predictions.jsonl").display()
        );
    }
    for w in &done.written {
        println!("  report       {}", w.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The table, the distinct answers and the verdicts: does the user embedding help, and by how
/// much more than chance (the prior) and than an encoder that learnt nothing.
fn print_summary(report: &Report) {
    let scored: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.name.clone(), r.scores.clone()))
        .collect();
    println!();
    println!("Accuracy (%), reference rule (prefix match), micro averages:");
    println!(
        "{}",
        table2_markdown(&scored, Averaging::Micro, Rule::Prefix)
    );
    let mut columns: Vec<String> = Task::ALL.iter().map(|t| t.name().to_string()).collect();
    columns.push("All".into());
    let rows: Vec<(String, Vec<usize>)> = report
        .runs
        .iter()
        .map(|r| {
            let n = columns
                .iter()
                .map(|c| r.distinct_predictions.get(c).copied().unwrap_or(0))
                .collect();
            (r.name.clone(), n)
        })
        .collect();
    println!("Distinct answers per sub-task (one per template means answers ignore the user):");
    println!("{}", counts_markdown(&columns, &rows));
    for n in &report.notes {
        println!("note: {n}");
    }
    println!("Verdicts (paired bootstrap over the same questions, 95% CI):");
    for c in &report.comparisons {
        println!("  {}", c.verdict);
    }
    if let Some(p) = report
        .comparisons
        .iter()
        .find(|c| c.a == TRAINED && c.b == "prior")
        .and_then(|c| c.paired.as_ref())
    {
        println!("  per sub-task, {TRAINED} - prior:");
        for (t, d) in &p.tasks {
            println!(
                "    {:<3} {:+6.2} points, 95% CI [{:.2}, {:.2}]{}",
                t.name(),
                d.diff,
                d.ci95.0,
                d.ci95.1,
                if d.significant() {
                    ""
                } else {
                    " (not significant)"
                }
            );
        }
    }
}
