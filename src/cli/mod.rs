//! Command-line definition: one subcommand per pipeline stage. Each subcommand's module turns
//! its parsed flags into library calls.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod align;
mod baseline;
mod bench;
mod bench_generate;
mod bench_step;
mod data;
mod eval;
mod numbers;
mod pretrain;
mod qa_gen;
mod quickstart;
mod report;
mod study;

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// uqa: distributed training and evaluation of user-embedding-prompted LLMs (UQABench).
///
/// The pipeline, one subcommand per stage: `uqa data` builds reference-format datasets
/// (synthetic Taobao-like data or MovieLens), `uqa pretrain` pre-trains a user-sequence
/// encoder, `uqa qa-gen` writes the seven sub-tasks' questions, `uqa align` aligns the encoder
/// to an LLM through soft prompts, `uqa eval` answers and scores, `uqa baseline` and
/// `uqa report` add the model-free rows and lay out the paper's tables. `uqa quickstart` runs
/// all of it on embedded defaults; `uqa launch` starts ranks like torchrun.
#[derive(Debug, Parser)]
#[command(name = "uqa", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline end to end on embedded defaults, in minutes on 2 cores: synthetic data,
    /// questions, Trm++ pre-training, alignment of a tiny LLM to the trained and to the
    /// untrained encoder, evaluation, prior and history baselines, and Table 2 with paired
    /// bootstrap verdicts (all on 2 ranks).
    Quickstart(quickstart::QuickstartArgs),
    /// Build, inspect and check datasets in the reference Arrow layout.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Pre-train a user-sequence encoder (Trm++, SASRec, HSTU, GRU4Rec, Mamba4Rec) with
    /// next-item prediction or InfoNCE; evaluates HR@K / NDCG@K and writes checkpoints.
    Pretrain(pretrain::PretrainArgs),
    /// Generate question/answer files for the seven sub-tasks (DF, MF, IP, AP, LI, SI, IT) from
    /// a dataset's histories and held-out tails, balanced per sub-task.
    QaGen(qa_gen::QaGenArgs),
    /// Align a frozen encoder to an LLM through soft prompts (adapter, full or LoRA
    /// fine-tuning), or fine-tune a text-prompt baseline (Text20/50, ReLLa).
    Align(align::AlignArgs),
    /// Answer the evaluation questions with an aligned model on any number of ranks (batched
    /// greedy decoding), gather the answers in order and score them.
    Eval(eval::EvalArgs),
    /// Answer the evaluation questions without a model: `prior` (the most frequent training
    /// answer of each question's template) or `history` (fixed rules over the context
    /// sequence); writes a run folder for `uqa report`.
    Baseline(baseline::BaselineArgs),
    /// Score predictions (prefix match as the headline, plus normalized and list-aware partial
    /// credit; micro and macro averages; bootstrap 95% intervals) and write the paper's Table 2
    /// and Table 7 as Markdown, CSV and JSON, with plots as SVG and PNG, for several runs side
    /// by side, with prior and history baseline rows, distinct answers per sub-task and paired
    /// bootstrap verdicts.
    Report(report::ReportArgs),
    /// Studies: the paper's tables as sweeps over encoders, sizes, lengths, side information,
    /// objectives, adapters, strategies and prompts (`uqa study run`, `uqa study report`).
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// Launch ranks like torchrun: same flags (--nproc-per-node, --nnodes, --node-rank,
    /// --master-addr, --master-port, --standalone, --max-restarts) and the same environment
    /// (RANK, LOCAL_RANK, WORLD_SIZE, ...); rank-prefixed output, gang teardown, restarts.
    /// Also installed as the `uqa-launch` binary.
    Launch(uqa_launcher::Args),
    /// Benchmarks recorded in docs/BENCHMARKS.md (each ends with one JSON line).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a),
        Command::Data(cmd) => data::run(cmd),
        Command::Pretrain(a) => pretrain::run(a),
        Command::QaGen(a) => qa_gen::run(a),
        Command::Align(a) => align::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Baseline(a) => baseline::run(a),
        Command::Report(a) => report::run(a),
        Command::Launch(a) => Ok(uqa_launcher::run(a)),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Study(cmd) => study::run(cmd),
    }
}

/// `--device X` as the config override it stands for (`runtime.device="X"`), after the others.
fn with_device(mut overrides: Vec<String>, device: Option<String>) -> Vec<String> {
    if let Some(d) = device {
        overrides.push(format!("runtime.device=\"{d}\""));
    }
    overrides
}
