//! `uqa bench step` (uqa_trainer::bench_step): one pre-training step of the Trm++ encoder
//! beside `../shared/bench/encoder_step.py`, same defaults, same FLOP formula, one JSON line.
//! Threads: `OMP_NUM_THREADS` (or `RAYON_NUM_THREADS`), as for every command.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use uqa_comm::{DeviceRequest, Runtime};
use uqa_data::bench::memory::{check_fits, peak_rss_mb};
use uqa_models::InputVariant;
use uqa_trainer::bench_step::StepBench;

use super::CliResult;
use super::numbers::{fraction, non_negative, u64_in, usize_in};

/// Largest vocabulary of any id column: ids are drawn and stored as u32.
const MAX_VOCAB: u64 = u32::MAX as u64;

// Upper bounds on sizes are far beyond any encoder we benchmark and keep a typo from asking for
// an impossible model; vocabularies start at 2 because ids are drawn from 1..size (0 pads).
#[derive(Debug, Args)]
pub struct StepArgs {
    #[arg(long, default_value_t = 4, value_parser = usize_in(1..=1024))]
    layers: usize,
    #[arg(long, default_value_t = 512, value_parser = usize_in(1..=65_536))]
    dim: usize,
    #[arg(long, default_value_t = 4, value_parser = usize_in(1..=1024))]
    heads: usize,
    #[arg(long, default_value_t = 128, value_parser = usize_in(2..=65_536))]
    seq: usize,
    #[arg(long, default_value_t = 8, value_parser = usize_in(1..=65_536))]
    batch: usize,
    /// Item vocabulary size.
    #[arg(long, default_value_t = 100_000, value_parser = u64_in(2..=MAX_VOCAB))]
    items: u64,
    #[arg(long, default_value_t = 9_330, value_parser = u64_in(2..=MAX_VOCAB))]
    cates: u64,
    #[arg(long, default_value_t = 149_750, value_parser = u64_in(2..=MAX_VOCAB))]
    brands: u64,
    /// Also the seller vocabulary size, as in encoder_step.py.
    #[arg(long, default_value_t = 268_446, value_parser = u64_in(2..=MAX_VOCAB))]
    shops: u64,
    /// BPE tokens per text bag.
    #[arg(long, default_value_t = 8, value_parser = usize_in(1..=1024))]
    bag_len: usize,
    /// full, no-text or no-side.
    #[arg(long, default_value = "full")]
    side: String,
    /// Item rows per chunk of the chunked cross-entropy.
    #[arg(long, default_value_t = 2048, value_parser = usize_in(1..))]
    ce_chunk: usize,
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    dropout: f32,
    #[arg(long, default_value_t = 4e-4, value_parser = non_negative)]
    lr: f64,
    /// Clip by this global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    clip: f64,
    /// Timed steps.
    #[arg(long, default_value_t = 10, value_parser = usize_in(1..=10_000))]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2, value_parser = usize_in(0..=10_000))]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute each block's activations in backward (`activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
    /// auto, cpu or cuda (cuda:LOCAL_RANK; a build with `--features cuda`).
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

pub fn run(a: StepArgs) -> CliResult {
    let variant = match a.side.as_str() {
        "full" => InputVariant::Full,
        "no-text" => InputVariant::NoText,
        "no-side" => InputVariant::NoSide,
        other => return Err(format!("--side {other}: expected full, no-text or no-side").into()),
    };
    let kind = Runtime::from_env(a.device)?.device;
    let device = uqa_models::device::open(kind.cuda_ordinal())?;
    let bench = StepBench {
        layers: a.layers,
        dim: a.dim,
        heads: a.heads,
        seq: a.seq,
        batch: a.batch,
        items: a.items,
        cates: a.cates,
        brands: a.brands,
        shops: a.shops,
        bag_len: a.bag_len,
        variant,
        ce_chunk: a.ce_chunk,
        dropout: a.dropout,
        lr: a.lr,
        clip: a.clip,
        steps: a.steps,
        warmup: a.warmup,
        seed: a.seed,
        activation_checkpointing: a.activation_checkpointing,
        device,
    };
    if !bench.heads_fit() {
        return Err(format!(
            "--heads {} must divide --dim {} into an even head dimension (RoPE)",
            a.heads, a.dim
        )
        .into());
    }
    check_fits(
        bench.memory_lower_bound(),
        "--items, --cates, --brands, --shops, --dim, --layers, --heads, --batch, --seq and --bag-len",
    )?;
    let report = bench.run(|t| {
        eprintln!(
            "step {:3} {} loss {:.4} total {:.3}s fwd {:.3}s bwd {:.3}s opt {:.3}s",
            t.step,
            if t.timed { "timed" } else { "warm " },
            t.loss,
            t.total(),
            t.forward,
            t.backward,
            t.optimizer
        );
    })?;
    eprintln!(
        "params: {:.2} M total, {:.2} M without embedding tables; {:.1} GFLOP/step; ce chunked ({})",
        report.params_total as f64 / 1e6,
        report.params_dense as f64 / 1e6,
        report.flops_per_step / 1e9,
        a.ce_chunk
    );
    let step_s = report.median(|t| t.total());
    let flops = report.flops_per_step;
    let timed: Vec<f64> = report
        .steps
        .iter()
        .filter(|t| t.timed)
        .map(|t| (t.total() * 1e4).round() / 1e4)
        .collect();
    let (first, last) = (&report.steps[0], &report.steps[report.steps.len() - 1]);
    let threads = candle_core::utils::get_num_threads();
    let res = json!({
        "bench": "encoder_step", "impl": "uqa", "threads": threads, "device": kind.to_string(),
        "layers": a.layers, "dim": a.dim, "heads": a.heads, "seq": a.seq, "batch": a.batch,
        "items": a.items, "side": a.side, "ce": "chunked", "ce_chunk": a.ce_chunk,
        "adamw": "uqa", "activation_checkpointing": a.activation_checkpointing,
        "params_total": report.params_total, "params_dense": report.params_dense,
        "flops_per_step": flops, "steps": a.steps, "warmup": a.warmup,
        "step_s_median": step_s, "fwd_s_median": report.median(|t| t.forward),
        "bwd_s_median": report.median(|t| t.backward),
        "opt_s_median": report.median(|t| t.optimizer),
        "step_s_all": timed,
        "seq_per_s": a.batch as f64 / step_s, "pos_per_s": (a.batch * a.seq) as f64 / step_s,
        "gflops_per_s": flops / step_s / 1e9, "peak_rss_mb": peak_rss_mb(),
        "loss_first": first.loss, "loss_last": last.loss,
    });
    eprintln!(
        "median step {step_s:.3}s  {:.2} seq/s  {:.0} pos/s  {:.1} GFLOP/s  peak RSS {:.0} MB",
        res["seq_per_s"].as_f64().unwrap_or(0.0),
        res["pos_per_s"].as_f64().unwrap_or(0.0),
        res["gflops_per_s"].as_f64().unwrap_or(0.0),
        res["peak_rss_mb"].as_f64().unwrap_or(0.0),
    );
    println!("{res}");
    Ok(ExitCode::SUCCESS)
}
