//! `uqa bench ...`: the benchmarks behind docs/BENCHMARKS.md. Each prints a readable summary
//! and one JSON object as its last line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;
use uqa_data::batch::collate;
use uqa_data::dataset::Dataset;
use uqa_data::reader::SequenceFile;
use uqa_data::sampler::{DistributedSampler, SamplerConfig, SamplerState};
use uqa_data::schema::Feature;

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

/// Peak resident set size of this process so far, in MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The machine's memory in bytes (MemTotal), if the kernel says.
fn mem_total_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()?;
    Some(kb * 1024.0)
}

/// Refuses a benchmark whose memory estimate (a lower bound) exceeds the machine's memory.
/// Each size flag has its own range, but several large ones together can still ask for more
/// than the machine has, and the allocation would end in the OOM killer's SIGKILL instead of an
/// error naming the flags.
pub fn check_fits(bytes: f64, flags: &str) -> Result<(), String> {
    match mem_total_bytes() {
        Some(total) if bytes > total => Err(format!(
            "{flags}: need at least {:.1} GB of memory, more than this machine's {:.1} GB",
            bytes / 1e9,
            total / 1e9
        )),
        _ => Ok(()),
    }
}

/// Current resident memory split into anonymous (heap) and file-backed (mapped files) MB.
pub fn rss_split_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn scan(a: ScanArgs) -> CliResult {
    let start = Instant::now();
    let file = SequenceFile::open(&a.file)?;
    let opened = start.elapsed().as_secs_f64();
    let (mut positions, mut values, mut checksum) = (0usize, 0usize, 0i64);
    for b in 0..file.num_batches() {
        for row in file.batch_rows(b) {
            positions += row.len();
            for f in Feature::ALL {
                let (ids, _) = row.bags(f);
                values += ids.len();
                checksum = ids
                    .iter()
                    .fold(checksum, |acc, &x| acc.wrapping_mul(31).wrapping_add(x));
            }
        }
        // Streaming: drop the batch's pages from our resident set once read.
        file.release_batch_pages(b);
    }
    let total = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&a.file)?.len();
    println!(
        "{}: {} rows, {positions} positions, {values} ids, {:.1} MB; open {opened:.2} s, open + scan {total:.2} s ({:.0} MB/s), peak RSS {:.0} MB",
        a.file.display(),
        file.num_rows(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / total,
        peak_rss_mb()
    );
    println!(
        "{}",
        json!({"bench": "scan", "rows": file.num_rows(), "positions": positions, "ids": values,
               "bytes": bytes, "open_s": opened, "total_s": total, "peak_rss_mb": peak_rss_mb(),
               "checksum": checksum})
    );
    Ok(ExitCode::SUCCESS)
}

fn sampler(a: SamplerArgs) -> CliResult {
    if a.rank >= a.world_size {
        return Err(format!(
            "--rank {}: must be below --world-size {}",
            a.rank, a.world_size
        )
        .into());
    }
    let ds = Dataset::open(&a.dir)?;
    // Whole batches only: a rank's shard smaller than one batch would never yield one.
    let rows = ds.train.num_rows();
    // More ranks than rows would pad every shard up to --world-size indices: a huge world
    // would allocate (and shuffle) that many before the first batch.
    if a.world_size > rows {
        return Err(format!(
            "--world-size {}: more ranks than the {rows} training rows of {}",
            a.world_size,
            a.dir.display()
        )
        .into());
    }
    let shard = rows.div_ceil(a.world_size);
    if shard < a.batch {
        return Err(format!(
            "{}: {rows} training rows give each of --world-size {} ranks {} rows, fewer than --batch {}",
            a.dir.display(),
            a.world_size,
            shard,
            a.batch
        )
        .into());
    }
    let (anon, mapped) = rss_split_mb();
    eprintln!(
        "after open: heap {anon:.0} MB, mapped {mapped:.0} MB, peak {:.0} MB",
        peak_rss_mb()
    );
    let file = &ds.train;
    file.advise_random();
    let sampler = DistributedSampler::new(
        file.num_rows(),
        a.rank,
        a.world_size,
        SamplerConfig::default(),
    );
    let start = Instant::now();
    let (mut n, mut positions, mut epoch) = (0usize, 0usize, 0u64);
    while n < a.batches {
        for rows in sampler.batches(SamplerState { epoch, position: 0 }, a.batch, true) {
            let batch = collate(file, &rows, a.max_len);
            if !a.keep_pages {
                file.release_pages();
            }
            positions += batch.lengths.iter().map(|&l| l as usize).sum::<usize>();
            n += 1;
            if n == a.batches {
                break;
            }
        }
        epoch += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let (anon, mapped) = rss_split_mb();
    eprintln!("after sampling: heap {anon:.0} MB, mapped {mapped:.0} MB");
    println!(
        "{} batches of {} x up to {} positions in {secs:.2} s: {:.1} batches/s, {:.0} positions/s, peak RSS {:.0} MB",
        n,
        a.batch,
        a.max_len,
        n as f64 / secs,
        positions as f64 / secs,
        peak_rss_mb()
    );
    println!(
        "{}",
        json!({"bench": "sampler", "keep_pages": a.keep_pages, "batches": n, "batch_size": a.batch, "max_len": a.max_len,
               "seconds": secs, "batches_per_s": n as f64 / secs,
               "positions_per_s": positions as f64 / secs, "peak_rss_mb": peak_rss_mb()})
    );
    Ok(ExitCode::SUCCESS)
}
