//! `uqa report RUN...`: the paper's tables and plots for several runs side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqa_evaluator::report::tables::{Averaging, Rule, table2_markdown};
use uqa_evaluator::report::{Run, write_report};

use super::CliResult;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Runs: folders holding predictions.jsonl (and optionally run.json with `name` and
    /// `encoder_params`), or predictions .jsonl files.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder for report.md, report.json, the CSV tables and the plots (SVG and PNG).
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

pub fn run(a: ReportArgs) -> CliResult {
    let runs = a
        .runs
        .iter()
        .map(|p| Run::locate(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (report, written) = write_report(&runs, &a.out)?;
    let scored: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.name.clone(), r.scores.clone()))
        .collect();
    println!("Accuracy (%), prefix match (the reference's rule), micro averages:\n");
    print!(
        "{}",
        table2_markdown(&scored, Averaging::Micro, Rule::Prefix)
    );
    for r in &report.runs {
        let skipped: usize = r.scores.skipped.values().sum();
        if skipped > 0 {
            println!(
                "{}: {skipped} rows not scored: {:?}",
                r.name, r.scores.skipped
            );
        }
    }
    println!();
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
