//! `uqa report RUN...`: the paper's tables and plots for several runs side by side, with the
//! prior and history baselines and paired verdicts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uqabench::report::tables::{Averaging, Rule, table2_markdown};
use uqabench::report::{Report, ReportOptions, Run, write_report_with};

use super::CliResult;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Runs: folders holding predictions.jsonl (and optionally run.json with `name`,
    /// `encoder_params` and `questions`, and eval.json), or predictions .jsonl files.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder for report.md, report.json, the CSV tables and the plots (SVG and PNG).
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Questions folder (`uqa qa-gen` output) whose prior and history baselines join the
    /// report (default: the folder the runs record in run.json / eval.json).
    #[arg(long)]
    qa: Option<PathBuf>,
    /// Dataset folder of the history baseline (default: the one qa.json records).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also compare two runs by name, "A,B" (split at the first comma); repeatable. Every
    /// model is compared with the prior, and models with each other when there are 2 or 3.
    #[arg(long, value_parser = parse_pair)]
    compare: Vec<(String, String)>,
}

pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once(',')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("{s:?}: expected two run names separated by a comma, \"A,B\""))
}

pub fn run(a: ReportArgs) -> CliResult {
    let runs = a
        .runs
        .iter()
        .map(|p| Run::locate(p))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ReportOptions {
        qa: a.qa,
        data: a.data,
        compare: a.compare,
    };
    let (report, written) = write_report_with(&runs, &options, &a.out)?;
    print_tables(&report);
    println!();
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Table 2 (prefix rule, micro), rows not scored, notes and verdicts, on stdout.
pub fn print_tables(report: &Report) {
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
        let skipped: usize = r.not_scored.values().sum();
        if skipped > 0 {
            println!(
                "{}: {skipped} rows not scored, per sub-task: {:?}",
                r.name, r.not_scored
            );
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    if !report.comparisons.is_empty() {
        println!();
        for c in &report.comparisons {
            println!("{}", c.verdict);
        }
    }
}
