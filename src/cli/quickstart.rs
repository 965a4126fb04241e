//! `uqa quickstart`: the main job on embedded defaults. Today: generate the `small` synthetic
//! dataset, print its statistics, and generate the question files of the seven sub-tasks; it
//! grows with each pipeline stage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use uqa_data::build::{TokenizerChoice, build_synthetic};
use uqa_data::synth::SynthSpec;
use uqa_evaluator::qa::{Lang, QaGenConfig, Task, generate};

use super::CliResult;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder for every artefact of the run (replaced if it exists).
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// See `uqa data synth --help`.
    #[arg(long, default_value = "auto")]
    tokenizer: TokenizerChoice,
}

pub fn run(a: QuickstartArgs) -> CliResult {
    let start = Instant::now();
    let data_dir = a.out.join("data");
    let spec = SynthSpec::preset("small").ok_or("the small preset exists")?;
    eprintln!(
        "[1/1] synthetic data (preset small, seed {}) -> {}",
        a.seed,
        data_dir.display()
    );
    let meta = build_synthetic(&data_dir, &spec, "small", a.seed, &a.tokenizer, true)?;
    super::data::print_dataset(&data_dir, &meta, false)?;

    let qa_dir = a.out.join("qa");
    eprintln!(
        "[2/2] questions for the seven sub-tasks -> {}",
        qa_dir.display()
    );
    let config = QaGenConfig {
        lang: Lang::Zh,
        seed: a.seed,
        train_per_task: 7_500,
        eval_per_task: 1_000,
    };
    let report = generate(&data_dir, &qa_dir, config)?;
    let per_task = |m: &std::collections::BTreeMap<String, usize>| {
        Task::ALL.map(|t| format!("{t} {}", m[t.name()])).join(", ")
    };
    println!("questions (train)   {}", per_task(&report.train));
    println!("questions (eval)    {}", per_task(&report.eval));
    println!();
    println!(
        "quickstart finished in {:.1} s. Artefacts:",
        start.elapsed().as_secs_f64()
    );
    println!("  dataset     {}", data_dir.display());
    println!(
        "  metadata    {}",
        data_dir.join(uqa_data::dataset::METADATA_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
