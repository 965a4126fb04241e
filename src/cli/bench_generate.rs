//! `uqa bench generate` (uqa_models::llm::generate_bench): greedy generation of a random Qwen2
//! beside `../shared/bench/generate.py`, in reference (batch 1, no cache) and batched (KV cache)
//! modes; one JSON line.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use uqa_data::bench::memory::{check_fits, peak_rss_mb};
use uqa_models::llm::generate_bench::{GenerateBench, MAX_POSITIONS};

use super::CliResult;
use super::numbers::usize_in;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// reference, batched or both.
    #[arg(long, default_value = "both")]
    mode: String,
    // The upper bounds are beyond any model we run (Qwen2-72B: hidden 8192, 80 layers, 64 heads,
    // intermediate 29568, vocab 152064) and keep a typo from asking for an impossible model.
    #[arg(long, default_value_t = 896, value_parser = usize_in(1..=65_536))]
    hidden: usize,
    #[arg(long, default_value_t = 24, value_parser = usize_in(1..=1024))]
    layers: usize,
    #[arg(long, default_value_t = 14, value_parser = usize_in(1..=1024))]
    heads: usize,
    #[arg(long, default_value_t = 2, value_parser = usize_in(1..=1024))]
    kv_heads: usize,
    #[arg(long, default_value_t = 4864, value_parser = usize_in(1..=1 << 20))]
    intermediate: usize,
    #[arg(long, default_value_t = 151_936, value_parser = usize_in(1..=1 << 24))]
    vocab: usize,
    /// Prompt tokens of the longest row (rows have 80-100% of it).
    #[arg(long, default_value_t = 120, value_parser = usize_in(1..MAX_POSITIONS as u64))]
    prompt_len: usize,
    #[arg(long, default_value_t = 16, value_parser = usize_in(1..MAX_POSITIONS as u64))]
    new_tokens: usize,
    /// Prompts per batch (batched mode).
    #[arg(long, default_value_t = 16, value_parser = usize_in(1..=4096))]
    batch: usize,
    /// Timed questions in reference mode.
    #[arg(long, default_value_t = 2, value_parser = usize_in(1..=10_000))]
    qas: usize,
    /// Timed batches in batched mode.
    #[arg(long, default_value_t = 1, value_parser = usize_in(1..=10_000))]
    batches: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The checks clap's per-flag ranges cannot make: how flags combine. Each error names the flags.
fn check_flags(a: &GenerateArgs, bench: &GenerateBench) -> Result<(), String> {
    if !["reference", "batched", "both"].contains(&a.mode.as_str()) {
        return Err(format!(
            "--mode {}: expected reference, batched or both",
            a.mode
        ));
    }
    if !a.hidden.is_multiple_of(a.heads) || !(a.hidden / a.heads).is_multiple_of(2) {
        return Err(format!(
            "--heads {} must divide --hidden {} into an even head dimension (RoPE)",
            a.heads, a.hidden
        ));
    }
    if !a.heads.is_multiple_of(a.kv_heads) {
        return Err(format!(
            "--kv-heads {} must divide --heads {}",
            a.kv_heads, a.heads
        ));
    }
    if 1 + a.prompt_len + a.new_tokens > MAX_POSITIONS {
        return Err(format!(
            "--prompt-len {} + --new-tokens {} + 1 soft vector exceed the model's {MAX_POSITIONS} positions",
            a.prompt_len, a.new_tokens
        ));
    }
    check_fits(
        bench.memory_lower_bound(),
        "--hidden, --layers, --intermediate, --vocab, --batch, --prompt-len and --new-tokens",
    )
}

pub fn run(a: GenerateArgs) -> CliResult {
    let bench = GenerateBench {
        hidden: a.hidden,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        intermediate: a.intermediate,
        vocab: a.vocab,
        prompt_len: a.prompt_len,
        new_tokens: a.new_tokens,
        batch: a.batch,
        qas: if a.mode == "batched" { 0 } else { a.qas },
        batches: if a.mode == "reference" { 0 } else { a.batches },
        seed: a.seed,
    };
    check_flags(&a, &bench)?;
    let r = bench.run(|line| eprintln!("{line}"))?;
    let mut result = json!({
        "bench": "generate", "threads": candle_core::utils::get_num_threads(),
        "layers": a.layers, "hidden": a.hidden, "params": r.params,
        "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
    });
    if let Some(t) = r.reference {
        let (n, dt) = (t.runs as f64, t.seconds);
        eprintln!(
            "reference: {:.2} s/QA, {:.3} QA/s, {:.2} tok/s",
            dt / n,
            n / dt,
            n * a.new_tokens as f64 / dt
        );
        result["reference"] = json!({"batch": 1, "kv_cache": false, "qas": t.runs,
            "s_per_qa": dt / n, "qas_per_s": n / dt,
            "tokens_per_s": n * a.new_tokens as f64 / dt});
    }
    if let Some(t) = r.batched {
        let dt = t.seconds;
        let qas = (t.runs * a.batch) as f64;
        eprintln!(
            "batched x{}: {:.2} s/batch, {:.3} QA/s, {:.2} tok/s",
            a.batch,
            dt / t.runs as f64,
            qas / dt,
            qas * a.new_tokens as f64 / dt
        );
        result["batched"] = json!({"batch": a.batch, "kv_cache": true, "batches": t.runs,
            "s_per_batch": dt / t.runs as f64, "qas_per_s": qas / dt,
            "tokens_per_s": qas * a.new_tokens as f64 / dt});
    }
    if let Some(m) = r.tokens_match {
        result["tokens_match"] = json!(m);
    }
    result["peak_rss_mb"] = json!(peak_rss_mb());
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}
