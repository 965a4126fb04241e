//! `uqa study`: the paper's tables as sweeps (uqa_pipeline::study).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use uqa_pipeline::study::{self, SlurmRun, Study, StudyEvent};
use uqa_pipeline::uqa_exe::UqaExe;

use uqa_launcher::args::MAX_NPROC_PER_NODE;

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Run every element of a study file (each point of its axes: data, questions,
    /// pre-training, alignment, evaluation): stage by stage on this machine (--local), or as
    /// dependent Slurm job arrays (--slurm). Stages elements share run once; a re-run skips
    /// finished stages and resumes interrupted ones from their checkpoints. The file is checked
    /// (axes, values, points, base configs, [slurm] options) before anything runs.
    Run(RunArgs),
    /// Report a study's finished elements in the paper's Table 2 layout, beside the prior and
    /// history baselines, with bootstrap CIs and paired verdicts; the layouts of Tables 3 to 6
    /// its axes call for (side information x objectives, adapters x strategies, sizes with a
    /// power-law fit, lengths), seeds aggregated, CIs on every cell (`study_tables.*`);
    /// unfinished elements are listed as missing (`elements.md`).
    Report(ReportArgs),
    /// Where each element of a study stands: each stage done, started (step, total steps, last
    /// loss, ETA) or not started, and whether it is evaluated.
    Status(StatusArgs),
    /// Run one stage of a study folder and mark it finished (what the jobs of
    /// `uqa study run --slurm` run; inside a Slurm allocation a training or evaluation stage runs
    /// on every task through srun).
    #[command(hide = true)]
    Stage(StageArgs),
}

#[derive(Debug, Args)]
pub struct StageArgs {
    /// The study folder.
    pub dir: PathBuf,
    /// The stage: its folder inside the study folder (data, qa, pretrain/KEY, align/KEY,
    /// align/KEY/eval).
    pub id: String,
    /// Ranks outside Slurm (as `uqa launch --nproc-per-node`).
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..=MAX_NPROC_PER_NODE as u64))]
    pub nproc: usize,
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
    /// Run on this machine, stage by stage.
    #[arg(long, conflicts_with = "slurm", required_unless_present = "slurm")]
    pub local: bool,
    /// Submit the unfinished stages to Slurm: one job for the data and questions, then one job
    /// array per stage, each alignment waiting for its own pre-training (aftercorr) and each
    /// evaluation for its alignment. sbatch options come from the study's [slurm] table and
    /// --sbatch; the job ids and state go to DIR/slurm/jobs.json.
    #[arg(long)]
    pub slurm: bool,
    /// An sbatch option for every job (--slurm), e.g. --sbatch=--time=24:00:00; repeatable.
    #[arg(
        long,
        value_name = "OPTION",
        allow_hyphen_values = true,
        requires = "slurm"
    )]
    pub sbatch: Vec<String>,
    /// The study folder (default: runs/studies/NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ranks of each training and evaluation stage (as `uqa launch --nproc-per-node`; --local:
    /// under Slurm the allocation's tasks are the ranks).
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..=MAX_NPROC_PER_NODE as u64), conflicts_with = "slurm")]
    pub nproc: usize,
    /// Print each stage (skipped when done, else its command; --slurm: each sbatch command)
    /// and run or submit nothing.
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
        StudyCommand::Stage(a) => stage(a),
    }
}

fn stage(a: StageArgs) -> CliResult {
    let exe = UqaExe {
        path: std::env::current_exe()?,
        nproc: a.nproc,
    };
    if study::run_stage(&a.dir, &a.id, &exe)? {
        println!("stage {} of {}: finished", a.id, a.dir.display());
    } else {
        println!(
            "stage {} of {}: done before, skipped",
            a.id,
            a.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn submit_study(study: &Study, dir: &std::path::Path, a: &RunArgs) -> CliResult {
    let run = SlurmRun {
        exe: std::env::current_exe()?,
        sbatch: a.sbatch.clone(),
        dry_run: a.dry_run,
    };
    let done = study::submit(study, dir, &run)?;
    if done.jobs.is_empty() {
        println!(
            "nothing to submit: all {} stages are done. Report: uqa study report {}",
            done.total,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for job in &done.jobs {
        let tasks: Vec<String> = job
            .tasks
            .iter()
            .map(|(i, id)| {
                if job.array {
                    format!("{i}={id}")
                } else {
                    id.clone()
                }
            })
            .collect();
        let after = job
            .dependency
            .as_deref()
            .map(|d| format!(", after {d}"))
            .unwrap_or_default();
        let what = if job.array { "job array" } else { "job" };
        if a.dry_run {
            println!("sbatch {} {}", job.sbatch.join(" "), job.script.display());
        }
        println!(
            "{what} {} ({}: {}{after})",
            job.job_id,
            job.stage,
            tasks.join(", ")
        );
    }
    if a.dry_run {
        println!(
            "dry run: {} jobs for {} of {} stages; nothing submitted",
            done.jobs.len(),
            done.total - done.done,
            done.total
        );
    } else {
        let ids: Vec<&str> = done.jobs.iter().map(|j| j.job_id.as_str()).collect();
        println!(
            "submitted {} jobs ({}) for {} of {} stages; state in {}. Watch: squeue, uqa study status {}; then uqa study report {}",
            done.jobs.len(),
            ids.join(" "),
            done.total - done.done,
            done.total,
            dir.join(study::slurm::JOBS).display(),
            dir.display(),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/studies").join(&study.file.study.name));
    println!(
        "study {}: {} elements -> {}",
        study.file.study.name,
        study.elements.len(),
        dir.display()
    );
    if a.slurm {
        return submit_study(&study, &dir, &a);
    }
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
    if !done.tables.is_empty() {
        println!(
            "\n{}",
            uqa_pipeline::study::report::tables_markdown(&done.tables)
        );
    }
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
