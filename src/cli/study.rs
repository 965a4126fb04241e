//! `uqa study`: the paper's tables as sweeps (uqa_pipeline::study).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use uqa_pipeline::study::{self, Study, StudyEvent};
use uqa_pipeline::uqa_exe::UqaExe;

use uqa_launcher::args::MAX_NPROC_PER_NODE;

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Run every element of a study file (each point of its axes: data, questions,
    /// pre-training, alignment, evaluation), stage by stage on this machine. Stages elements
    /// share run once; a re-run skips finished stages and resumes interrupted ones from their
    /// checkpoints. The file is checked (axes, values, points, base configs) before anything runs.
    Run(RunArgs),
    /// Report a study's finished elements in the paper's Table 2 layout, beside the prior and
    /// history baselines, with bootstrap CIs and paired verdicts; unfinished elements are
    /// listed as missing (`elements.md`).
    Report(ReportArgs),
    /// Where each element of a study stands: each stage done, started (step, total steps, last
    /// loss, ETA) or not started, and whether it is evaluated.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The study folder `uqa study run` wrote.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The study file (TOML: [study], [base], [axes.AXIS.VALUE], optional [[points]]).
    pub study: PathBuf,
    /// Run on this machine (the only mode today).
    #[arg(long)]
    pub local: bool,
    /// The study folder (default: runs/studies/NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ranks of each training and evaluation stage (as `uqa launch --nproc-per-node`).
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..=MAX_NPROC_PER_NODE as u64))]
    pub nproc: usize,
    /// Print each stage (skipped when done, else its command) and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The study folder `uqa study run` wrote.
    pub dir: PathBuf,
    /// Where the report goes (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also compare two elements by name, "A,B" (split at the first comma); repeatable.
    #[arg(long, value_parser = super::report::parse_pair)]
    pub compare: Vec<(String, String)>,
}

pub fn run(cmd: StudyCommand) -> CliResult {
    match cmd {
        StudyCommand::Run(a) => run_study(a),
        StudyCommand::Report(a) => report(a),
        StudyCommand::Status(a) => status(a),
    }
}

fn status(a: StatusArgs) -> CliResult {
    let elements = study::status(&a.dir)?;
    println!("| element | pre-training | alignment | evaluation |");
    println!("|---|---|---|---|");
    for e in &elements {
        println!(
            "| {} | {}: {} | {}: {} | {} |",
            e.name,
            e.pretrain.0,
            e.pretrain.1,
            e.align.0,
            e.align.1,
            if e.evaluated { "done" } else { "-" }
        );
    }
    let done = elements.iter().filter(|e| e.evaluated).count();
    println!(
        "
{done} of {} elements evaluated",
        elements.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_study(a: RunArgs) -> CliResult {
    let study = Study::load(&a.study)?;
    let dir = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs/studies").join(&study.file.study.name));
    println!(
        "study {}: {} elements -> {}",
        study.file.study.name,
        study.elements.len(),
        dir.display()
    );
    let exe = UqaExe {
        path: std::env::current_exe()?,
        nproc: a.nproc,
    };
    let ran = study::run_local(&study, &dir, &exe, a.dry_run, |event| match event {
        StudyEvent::Done {
            index,
            total,
            what,
            dir,
        } => println!(
            "[{index}/{total}] {what}: done, skipped ({})",
            dir.display()
        ),
        StudyEvent::Running {
            index,
            total,
            what,
            command,
            ..
        } => println!("[{index}/{total}] {what}: uqa {}", command.join(" ")),
    })?;
    if a.dry_run {
        println!("dry run: {ran} stages to run");
    } else {
        println!(
            "study {} finished ({ran} stages run). Report: uqa study report {}",
            study.file.study.name,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(a: ReportArgs) -> CliResult {
    let out = a.out.unwrap_or_else(|| a.dir.join("report"));
    let done = study::report(&a.dir, &out, &a.compare)?;
    super::report::print_tables(&done.report);
    if !done.missing.is_empty() {
        println!(
            "\nmissing ({} elements not finished): {}",
            done.missing.len(),
            done.missing.join(", ")
        );
    }
    for w in &done.written {
        println!("wrote {}", w.display());
    }
    Ok(ExitCode::SUCCESS)
}
