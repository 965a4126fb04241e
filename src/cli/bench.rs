//! `uqa bench ...`: the benchmarks behind docs/BENCHMARKS.md. Each prints a readable summary
//! and one JSON object as its last line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use uqa_data::bench::sampler::{SamplerBench, SamplerBenchError};
use uqa_data::dataset::Dataset;

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Open a sequence file (memory-mapped) and read every id of every feature of every row.
    Scan(ScanArgs),
    /// Distributed sampler + collation of padded batches from a dataset's training file.
    Sampler(SamplerArgs),
    /// Greedy generation of a random Qwen2 (reference loop without cache, and batched with the
    /// KV cache), side by side with ../shared/bench/generate.py.
    Generate(super::bench_generate::GenerateArgs),
    /// One Trm++ pre-training step (forward, chunked loss, backward, AdamW), side by side with
    /// ../shared/bench/encoder_step.py.
    Step(super::bench_step::StepArgs),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The `.arrow` sequence file.
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SamplerArgs {
    /// A dataset folder.
    dir: PathBuf,
    /// Rows per batch (at most a rank's share of the training file).
    #[arg(long, default_value_t = 256, value_parser = usize_in(1..))]
    batch: usize,
    /// Positions kept per sequence (the last ones).
    #[arg(long, default_value_t = 512, value_parser = usize_in(1..))]
    max_len: usize,
    /// Batches to time (a million at most: a timing needs far fewer, and a larger count reads
    /// like a typo that would run for days).
    #[arg(long, default_value_t = 200, value_parser = usize_in(1..=1_000_000))]
    batches: usize,
    /// This rank, below --world-size.
    #[arg(long, default_value_t = 0)]
    rank: usize,
    /// Ranks the training file is sharded over (at most its rows).
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..))]
    world_size: usize,
    /// Keep mapped pages resident between batches (faster; resident memory grows toward the
    /// file size, though the pages stay reclaimable page cache).
    #[arg(long)]
    keep_pages: bool,
}

pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Scan(a) => scan(a),
        BenchCommand::Sampler(a) => sampler(a),
        BenchCommand::Generate(a) => super::bench_generate::run(a),
        BenchCommand::Step(a) => super::bench_step::run(a),
    }
}

fn scan(a: ScanArgs) -> CliResult {
    let r = uqa_data::bench::scan::scan(&a.file)?;
    let mb = r.bytes as f64 / 1e6;
    println!(
        "{}: {} rows, {} positions, {} ids, {mb:.1} MB; open {:.2} s, open + scan {:.2} s ({:.0} MB/s), peak RSS {:.0} MB",
        a.file.display(),
        r.rows,
        r.positions,
        r.ids,
        r.open_s,
        r.total_s,
        mb / r.total_s,
        r.peak_rss_mb
    );
    println!(
        "{}",
        json!({"bench": "scan", "rows": r.rows, "positions": r.positions, "ids": r.ids,
               "bytes": r.bytes, "open_s": r.open_s, "total_s": r.total_s,
               "peak_rss_mb": r.peak_rss_mb, "checksum": r.checksum})
    );
    Ok(ExitCode::SUCCESS)
}

fn sampler(a: SamplerArgs) -> CliResult {
    let bench = SamplerBench {
        batch: a.batch,
        max_len: a.max_len,
        batches: a.batches,
        rank: a.rank,
        world_size: a.world_size,
        keep_pages: a.keep_pages,
    };
    // The rank is checked before the dataset is opened: it needs no rows.
    if let Err(e) = bench.check(usize::MAX) {
        return Err(flag_error(e, &a.dir).into());
    }
    let ds = Dataset::open(&a.dir)?;
    let r = bench.run(&ds).map_err(|e| flag_error(e, &a.dir))?;
    let (anon, mapped) = r.opened_mb;
    eprintln!("after open: heap {anon:.0} MB, mapped {mapped:.0} MB");
    let (anon, mapped) = r.sampled_mb;
    eprintln!("after sampling: heap {anon:.0} MB, mapped {mapped:.0} MB");
    let secs = r.seconds;
    println!(
        "{} batches of {} x up to {} positions in {secs:.2} s: {:.1} batches/s, {:.0} positions/s, peak RSS {:.0} MB",
        r.batches,
        a.batch,
        a.max_len,
        r.batches as f64 / secs,
        r.positions as f64 / secs,
        r.peak_rss_mb
    );
    println!(
        "{}",
        json!({"bench": "sampler", "keep_pages": a.keep_pages, "batches": r.batches,
               "batch_size": a.batch, "max_len": a.max_len, "seconds": secs,
               "batches_per_s": r.batches as f64 / secs,
               "positions_per_s": r.positions as f64 / secs, "peak_rss_mb": r.peak_rss_mb})
    );
    Ok(ExitCode::SUCCESS)
}

/// The sampler's refusal, in the flags' names.
fn flag_error(e: SamplerBenchError, dir: &Path) -> String {
    match e {
        SamplerBenchError::Rank { rank, world_size } => {
            format!("--rank {rank}: must be below --world-size {world_size}")
        }
        SamplerBenchError::WorldExceedsRows { world_size, rows } => format!(
            "--world-size {world_size}: more ranks than the {rows} training rows of {}",
            dir.display()
        ),
        SamplerBenchError::ShardBelowBatch {
            rows,
            world_size,
            shard,
            batch,
        } => format!(
            "{}: {rows} training rows give each of --world-size {world_size} ranks {shard} rows, fewer than --batch {batch}",
            dir.display()
        ),
    }
}
