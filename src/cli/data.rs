//! `uqa data ...`: dataset generation, import, statistics and validation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;
use uqa_data::build::{TokenizerChoice, build_synthetic, import_movielens, movielens_preprocess};
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::{CATALOG_FILE, Dataset, DatasetMeta, EVAL_FILE, TRAIN_FILE};
use uqa_data::reader::SequenceFile;
use uqa_data::schema::Vocab;
use uqa_data::stats::{FileStats, file_stats};
use uqa_data::synth::{SynthConfig, SynthSpec};
use uqa_data::validate::{validate, validate_catalog};

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate a synthetic Taobao-like dataset (Zipf popularity, category -> brand -> shop
    /// hierarchy, interest mixtures that drift, sessions, repeat clicks, timestamps).
    Synth(SynthArgs),
    /// Import real data into the reference layout.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print users, items, interactions, length percentiles and vocabulary sizes of a dataset
    /// folder or of one sequence file.
    Stats(StatsArgs),
    /// Check a sequence file completely: schema, nulls, equal lengths across columns, ids within
    /// their vocabularies, no empty sequence. Exits non-zero at the first problem, naming its
    /// row, position and column.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Size preset: tiny (tests, ~1 s), small (quickstart), taobao (the real dataset's scale:
    /// 184,520 users, ~1M items, ~31M interactions).
    #[arg(long, default_value = "small", value_parser = clap::builder::PossibleValuesParser::new(SynthConfig::PRESETS))]
    preset: String,
    /// A TOML spec with `[synth]` and optional `[preprocess]` tables, overriding the preset
    /// (print one to start from with --print-config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Random seed: the same seed gives the same dataset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (created; must be empty unless --force).
    #[arg(long, required_unless_present = "print_config")]
    out: Option<PathBuf>,
    /// `auto` (the real Qwen2 tokenizer.json when present in $UQA_TOKENIZER or the asset
    /// cache, else the built-in byte-level BPE trained on the catalog and question texts), `builtin`, or a path to a tokenizer.json.
    #[arg(long, default_value = "auto")]
    tokenizer: TokenizerChoice,
    /// Replace an existing output folder (only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Print the preset's full spec as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// MovieLens-100k or -1M as RecBole atomic files (`X.inter` + `X.item`), e.g. from
    /// scripts/fetch-assets.sh. Follows the SASRec protocol by default: users and items with at
    /// least 5 ratings, leave-one-out, histories up to 200.
    Movielens(MovielensArgs),
}

#[derive(Debug, Args)]
pub struct MovielensArgs {
    /// Folder holding the atomic files.
    dir: PathBuf,
    /// Output folder (created; must be empty unless --force).
    #[arg(long)]
    out: PathBuf,
    /// See `uqa data synth --help`.
    #[arg(long, default_value = "auto")]
    tokenizer: TokenizerChoice,
    /// Store only the last this many positions of each history (default: whole histories;
    /// training keeps the last `[data] max_len` of each, and evaluation excludes every rated
    /// item from the sampled negatives only when it sees the whole history).
    #[arg(long, value_parser = usize_in(1..))]
    max_len: Option<usize>,
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A dataset folder (with dataset.json) or one `.arrow` sequence file.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check: a sequence file or the item catalog (`item_catalog.arrow`).
    file: PathBuf,
    /// Vocabulary to check ids against: `file` (the file's own metadata, else dataset.json in
    /// its folder, else the reference sizes) or `reference` (REFERENCE.md section 2).
    #[arg(long, default_value = "file")]
    vocab: String,
}

pub fn run(cmd: DataCommand) -> CliResult {
    match cmd {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Import(ImportCommand::Movielens(a)) => movielens(a),
        DataCommand::Stats(a) => stats(a),
        DataCommand::Validate(a) => validate_file(a),
    }
}

fn synth(a: SynthArgs) -> CliResult {
    let spec = match &a.config {
        Some(path) => SynthSpec::from_toml_file(path)?,
        None => SynthSpec::preset(&a.preset).ok_or("unknown preset")?,
    };
    if a.print_config {
        print!("{}", toml::to_string(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = a.out.as_deref().ok_or("--out is required")?;
    let start = Instant::now();
    let preset = if a.config.is_some() {
        "custom"
    } else {
        &a.preset
    };
    let corpus = uqabench::qa::corpus::tokenizer_corpus();
    let meta = build_synthetic(out, &spec, preset, a.seed, &a.tokenizer, &corpus, a.force)?;
    eprintln!(
        "generated {} in {:.1} s (preset {preset}, seed {}, tokenizer {})",
        out.display(),
        start.elapsed().as_secs_f64(),
        a.seed,
        meta.tokenizer.kind
    );
    print_dataset(out, &meta, false)?;
    Ok(ExitCode::SUCCESS)
}

fn movielens(a: MovielensArgs) -> CliResult {
    let start = Instant::now();
    let defaults = movielens_preprocess();
    let config = uqa_data::preprocess::PreprocessConfig {
        max_len: a.max_len.unwrap_or(defaults.max_len),
        ..defaults
    };
    let corpus = uqabench::qa::corpus::tokenizer_corpus();
    let meta = import_movielens(&a.dir, &a.out, &config, &a.tokenizer, &corpus, a.force)?;
    eprintln!(
        "imported {} into {} in {:.1} s",
        a.dir.display(),
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    print_dataset(&a.out, &meta, false)?;
    Ok(ExitCode::SUCCESS)
}

fn stats(a: StatsArgs) -> CliResult {
    if a.path.is_dir() {
        let ds = Dataset::open(&a.path)?;
        print_dataset(&a.path, &ds.meta, a.json)?;
    } else {
        let file = SequenceFile::open(&a.path)?;
        let s = file_stats(&file);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&file_json(&s))?);
        } else {
            println!("{}", a.path.display());
            print_file_stats("", &s);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate_file(a: ValidateArgs) -> CliResult {
    // A file that cannot be read as Arrow at all gets the sequence reader's diagnosis.
    if ItemCatalog::is_catalog_file(&a.file).unwrap_or(false) {
        return validate_catalog_file(a);
    }
    let file = SequenceFile::open(&a.file)?;
    let vocab = match a.vocab.as_str() {
        "reference" => Some(Vocab::REFERENCE),
        "file" => file.vocab().or_else(|| sibling_vocab(&a.file)),
        other => {
            return Err(format!("--vocab: expected `file` or `reference`, got {other:?}").into());
        }
    };
    let report = validate(&file, vocab)?;
    println!(
        "{}: ok: {} rows, {} positions; ids checked against items {}, cates {}, brands {}, shops {}, sellers {}, tokens {} (entity ids from {})",
        a.file.display(),
        report.rows,
        report.positions,
        report.vocab.items,
        report.vocab.cates,
        report.vocab.brands,
        report.vocab.shops,
        report.vocab.sellers,
        report.vocab.tokens,
        report.id_base
    );
    Ok(ExitCode::SUCCESS)
}

/// `uqa data validate` on an item catalog (`item_catalog.arrow`).
fn validate_catalog_file(a: ValidateArgs) -> CliResult {
    let vocab = match a.vocab.as_str() {
        "reference" => Some(Vocab::REFERENCE),
        "file" => sibling_vocab(&a.file),
        other => {
            return Err(format!("--vocab: expected `file` or `reference`, got {other:?}").into());
        }
    };
    let report = validate_catalog(&a.file, vocab)?;
    let [cates, brands, shops, sellers] = report.entities;
    println!(
        "{}: ok: item catalog of {} items; {cates} cates, {brands} brands, {shops} shops, {sellers} sellers{}",
        a.file.display(),
        report.items,
        if vocab.is_some() {
            "; entity ids within the vocabulary"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The vocabulary of the dataset folder a file sits in, if any.
fn sibling_vocab(file: &Path) -> Option<Vocab> {
    let dir = file.parent()?;
    uqa_data::dataset::read_meta(dir).ok().map(|m| m.vocab)
}

fn file_json(s: &FileStats) -> serde_json::Value {
    json!({
        "rows": s.rows,
        "positions": s.positions,
        "mean_len": s.mean_len,
        "max_len": s.max_len,
        "length_percentiles": s.length_percentiles.iter().map(|(p, v)| (format!("p{p}"), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "distinct_ids": {"items": s.distinct_ids[0], "cates": s.distinct_ids[1], "brands": s.distinct_ids[2], "shops": s.distinct_ids[3], "sellers": s.distinct_ids[4]},
        "mean_bag_tokens": {"title": s.mean_bag[0], "cate": s.mean_bag[1], "shop": s.mean_bag[2], "brand": s.mean_bag[3], "seller": s.mean_bag[4]},
        "file_bytes": s.file_bytes,
    })
}

fn print_file_stats(indent: &str, s: &FileStats) {
    let pct: Vec<String> = s
        .length_percentiles
        .iter()
        .map(|(p, v)| format!("p{p} {v}"))
        .collect();
    println!("{indent}rows (users)        {}", s.rows);
    println!("{indent}interactions        {}", s.positions);
    println!(
        "{indent}length              mean {:.1}, max {}, {}",
        s.mean_len,
        s.max_len,
        pct.join(", ")
    );
    println!(
        "{indent}distinct ids        items {}, cates {}, brands {}, shops {}, sellers {}",
        s.distinct_ids[0],
        s.distinct_ids[1],
        s.distinct_ids[2],
        s.distinct_ids[3],
        s.distinct_ids[4]
    );
    println!(
        "{indent}tokens per position title {:.1}, cate {:.1}, shop {:.1}, brand {:.1}, seller {:.1}",
        s.mean_bag[0], s.mean_bag[1], s.mean_bag[2], s.mean_bag[3], s.mean_bag[4]
    );
    println!(
        "{indent}file size           {:.1} MB",
        s.file_bytes as f64 / 1e6
    );
}

pub fn print_dataset(
    dir: &Path,
    meta: &DatasetMeta,
    as_json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let ds = Dataset::open(dir)?;
    let train = file_stats(&ds.train);
    let eval = file_stats(&ds.eval);
    let catalog_bytes = std::fs::metadata(dir.join(CATALOG_FILE)).map_or(0, |m| m.len());
    if as_json {
        let v = json!({
            "dir": dir.display().to_string(),
            "meta": meta,
            "train": file_json(&train),
            "eval": file_json(&eval),
            "catalog_bytes": catalog_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let c = &meta.counts;
    let v = &meta.vocab;
    println!("dataset {}", dir.display());
    println!(
        "  source              {}",
        serde_json::to_string(&meta.source)?
    );
    println!(
        "  tokenizer           {} ({} ids, sha256 {}...)",
        meta.tokenizer.kind,
        meta.tokenizer.vocab_size,
        &meta.tokenizer.sha256[..12]
    );
    println!("  users               {} (of {} raw)", c.users, c.raw_users);
    println!("  items               {} (of {} raw)", c.items, c.raw_items);
    let kept = match meta.preprocess.max_len {
        usize::MAX => "whole histories kept".to_string(),
        n => format!("{} dropped by max_len {n}", c.truncated_interactions),
    };
    println!(
        "  interactions        {} train + {} held out = {} (of {} raw; {kept})",
        c.train_interactions,
        c.eval_interactions,
        c.train_interactions + c.eval_interactions,
        c.raw_interactions,
    );
    println!(
        "  vocab sizes         items {}, cates {}, brands {}, shops {}, sellers {}, tokens {} (entity ids 1..size-1, 0 = padding)",
        v.items, v.cates, v.brands, v.shops, v.sellers, v.tokens
    );
    println!("  {TRAIN_FILE}");
    print_file_stats("    ", &train);
    println!("  {EVAL_FILE}");
    print_file_stats("    ", &eval);
    println!("  {CATALOG_FILE}  {:.1} MB", catalog_bytes as f64 / 1e6);
    Ok(())
}
