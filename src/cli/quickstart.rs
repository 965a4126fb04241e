//! `uqa quickstart`: the whole pipeline on embedded defaults, in minutes on a laptop CPU:
//! synthetic data -> questions -> Trm++ pre-training on 2 ranks -> alignment to the tiny LLM on
//! 2 ranks (the trained encoder, and the untrained one as the baseline) -> evaluation on 2 ranks
//! -> report with the prior and history baselines and paired bootstrap verdicts. Every stage runs through the same commands a user would type (`uqa launch ... --
//! uqa pretrain ...`), with the configs of `configs/quickstart/` (embedded, written beside the
//! outputs).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Args;
use uqa_data::build::{TokenizerChoice, build_synthetic};
use uqa_data::synth::SynthSpec;
use uqa_evaluator::qa::{Lang, QaGenConfig, Task, generate};
use uqa_evaluator::report::tables::counts_markdown;
use uqa_evaluator::report::tables::{Averaging, Rule, table2_markdown};
use uqa_evaluator::report::{Report, Run, write_report};
use uqa_launcher::args::MAX_NPROC_PER_NODE;

use super::CliResult;
use super::numbers::{MAX_NEW_TOKENS, usize_in};

const DATA_TOML: &str = include_str!("../../configs/quickstart/data.toml");
const PRETRAIN_TOML: &str = include_str!("../../configs/quickstart/pretrain_trmpp.toml");
const ALIGN_TOML: &str = include_str!("../../configs/quickstart/align_trmpp.toml");
const TRAINED: &str = "Trm++ (trained)";
const UNTRAINED: &str = "Trm++ (untrained)";

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

fn overrides(sets: &[String]) -> impl Iterator<Item = String> + '_ {
    sets.iter().flat_map(|s| ["--set".to_string(), s.clone()])
}

/// Runs `uqa ARGS...` (this executable) on `nproc` ranks through `uqa launch`, or directly.
fn stage(nproc: usize, args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    if nproc > 1 {
        cmd.args([
            "launch",
            "--standalone",
            "--nproc-per-node",
            &nproc.to_string(),
            "--",
        ]);
        cmd.arg(&exe);
    }
    let status = cmd
        .args(args)
        .status()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    if !status.success() {
        return Err(format!("stage `uqa {}` failed ({status})", args.join(" ")).into());
    }
    Ok(())
}

fn set(key: &str, path: &Path) -> [String; 2] {
    ["--set".into(), format!("{key}=\"{}\"", path.display())]
}

fn write_config(dir: &Path, name: &str, text: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let p = dir.join(name);
    uqa_data::atomic::write_atomic(&p, text.as_bytes())?;
    Ok(p)
}

pub fn run(a: QuickstartArgs) -> CliResult {
    let start = Instant::now();
    let out = &a.out;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs)?;
    let data_toml = write_config(&configs, "data.toml", DATA_TOML)?;
    let pretrain_toml = write_config(&configs, "pretrain_trmpp.toml", PRETRAIN_TOML)?;
    let align_toml = write_config(&configs, "align_trmpp.toml", ALIGN_TOML)?;
    let elapsed = |start: &Instant| format!("{:.0} s", start.elapsed().as_secs_f64());

    let data_dir = out.join("data");
    eprintln!(
        "[1/6] synthetic data (configs/quickstart/data.toml, seed {}) -> {}",
        a.seed,
        data_dir.display()
    );
    let spec = SynthSpec::from_toml_file(&data_toml)?;
    let corpus = uqa_evaluator::qa::corpus::tokenizer_corpus();
    let meta = build_synthetic(
        &data_dir,
        &spec,
        "quickstart",
        a.seed,
        &a.tokenizer,
        &corpus,
        true,
    )?;
    super::data::print_dataset(&data_dir, &meta, false)?;

    let qa_dir = out.join("qa");
    eprintln!(
        "[2/6] questions for the seven sub-tasks -> {} ({})",
        qa_dir.display(),
        elapsed(&start)
    );
    let report = generate(
        &data_dir,
        &qa_dir,
        QaGenConfig {
            lang: Lang::Zh,
            seed: a.seed,
            train_per_task: a.train_per_task,
            eval_per_task: a.eval_per_task,
            train_windows: a.train_windows,
            valid_per_task: 0,
        },
    )?;
    let per_task = |m: &std::collections::BTreeMap<String, usize>| {
        Task::ALL.map(|t| format!("{t} {}", m[t.name()])).join(", ")
    };
    println!("questions (train)   {}", per_task(&report.train));
    println!("questions (eval)    {}", per_task(&report.eval));

    let encoder = out.join("encoder");
    eprintln!(
        "[3/6] pre-training Trm++ on {} ranks -> {} ({})",
        a.nproc,
        encoder.display(),
        elapsed(&start)
    );
    let mut args: Vec<String> = vec![
        "pretrain".into(),
        "--config".into(),
        pretrain_toml.display().to_string(),
    ];
    args.extend(set("data.dir", &data_dir));
    args.extend(set("train.out", &encoder));
    args.extend(["--set".into(), format!("train.seed={}", a.seed)]);
    args.extend(overrides(&a.pretrain_set));
    stage(a.nproc, &args)?;

    // The trained encoder's prompt and the untrained encoder's (same initial weights, no
    // pre-training): the comparison the quickstart exists to show.
    let variants = [("trained", false), ("untrained", true)];
    let names = [TRAINED, UNTRAINED];
    let mut runs = Vec::new();
    for (i, (name, untrained)) in variants.iter().enumerate() {
        let run = out.join(format!("align_{name}"));
        eprintln!(
            "[4/6] alignment ({}/2: {name} Trm++) on {} ranks -> {} ({})",
            i + 1,
            a.nproc,
            run.display(),
            elapsed(&start)
        );
        let mut args: Vec<String> = vec![
            "align".into(),
            "--config".into(),
            align_toml.display().to_string(),
        ];
        args.extend(set("data.dataset", &data_dir));
        args.extend(set("data.qa_dir", &qa_dir));
        args.extend(set("prompt.encoder", &encoder));
        args.extend(set("train.out", &run));
        args.extend(["--set".into(), format!("prompt.untrained={untrained}")]);
        args.extend(["--set".into(), format!("train.seed={}", a.seed)]);
        args.extend(overrides(&a.align_set));
        stage(a.nproc, &args)?;
        runs.push((name.to_string(), run));
    }
    for (i, (name, run)) in runs.iter().enumerate() {
        eprintln!(
            "[5/6] evaluation ({}/2: {name}) on {} ranks -> {} ({})",
            i + 1,
            a.nproc,
            run.join("eval").display(),
            elapsed(&start)
        );
        stage(
            a.nproc,
            &[
                "eval".into(),
                "--run".into(),
                run.display().to_string(),
                "--name".into(),
                names[i].to_string(),
                "--max-new-tokens".into(),
                a.max_new_tokens.to_string(),
            ],
        )?;
    }

    let report_dir = out.join("report");
    eprintln!(
        "[6/6] report -> {} ({})",
        report_dir.display(),
        elapsed(&start)
    );
    let located = runs
        .iter()
        .map(|(_, run)| Run::locate(&run.join("eval")))
        .collect::<Result<Vec<_>, _>>()?;
    // The report adds the prior and history baselines of the same questions by itself.
    let (report, written) = write_report(&located, &report_dir)?;
    print_summary(&report);
    println!();
    println!("quickstart finished in {}. Artefacts:", elapsed(&start));
    println!("  configs      {}", configs.display());
    println!("  dataset      {}", data_dir.display());
    println!("  questions    {}", qa_dir.display());
    println!("  encoder      {}", encoder.display());
    for (name, run) in &runs {
        println!("  aligned ({name}) {}", run.display());
        println!(
            "  predictions ({name}) {}",
            run.join("eval/predictions.jsonl").display()
        );
    }
    for w in written {
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
