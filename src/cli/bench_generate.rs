//! `uqa bench generate`: greedy generation speed of the causal LM, the counterpart of
//! `../shared/bench/generate.py` with the same defaults (a random 0.5B-class Qwen2: hidden 896,
//! 24 layers, 14 / 2 heads; one soft vector + a ~120-token prompt; 16 new tokens, no stop).
//!
//! - `reference`: batch 1, no KV cache: every new token re-runs the whole sequence (the
//!   reference implementation's loop);
//! - `batched`: `--batch` prompts of different lengths, left-padded, one prefill then cached
//!   decode steps (what `uqa eval` does).

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use serde_json::json;
use uqa_data::rng::Rng;
use uqa_models::llm::{
    Architecture, CausalLm, GenerateConfig, LlmConfig, Mode, Padding, TokenMask, greedy,
};
use uqa_models::seeded_var_builder;

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

/// Positions of the model (Qwen2's): one soft vector, the prompt and the new tokens fit in them.
const MAX_POSITIONS: usize = 32_768;

/// The checks clap's per-flag ranges cannot make: how flags combine. Each error names the flags.
fn check_flags(a: &GenerateArgs) -> Result<(), String> {
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
    // f32 weights (built twice: the seeded map, then the copy the model runs on) and the KV
    // cache of a batch; f64 so that no product overflows.
    let (d, l) = (a.hidden as f64, a.layers as f64);
    let kv = (a.kv_heads * (a.hidden / a.heads)) as f64;
    let params =
        a.vocab as f64 * d + l * (2.0 * d * d + 2.0 * d * kv + 3.0 * d * a.intermediate as f64);
    let cache = 2.0 * l * a.batch as f64 * (1 + a.prompt_len + a.new_tokens) as f64 * kv;
    super::bench::check_fits(
        4.0 * (2.0 * params + cache),
        "--hidden, --layers, --intermediate, --vocab, --batch, --prompt-len and --new-tokens",
    )
}

/// Each prompt: one soft vector then token embeddings, `[1 + n, hidden]`.
fn prompts(a: &GenerateArgs, lm: &CausalLm) -> candle_core::Result<Vec<Tensor>> {
    let mut rng = Rng::new(a.seed.wrapping_add(1));
    let lo = a.prompt_len * 4 / 5;
    (0..a.batch)
        .map(|r| {
            let n = if r == 0 {
                a.prompt_len
            } else {
                lo + rng.below((a.prompt_len - lo + 1) as u64) as usize
            };
            let soft: Vec<f32> = (0..a.hidden)
                .map(|_| (rng.normal() * 0.02) as f32)
                .collect();
            let soft = Tensor::from_vec(soft, (1, a.hidden), &Device::Cpu)?;
            let ids: Vec<u32> = (0..n).map(|_| rng.below(a.vocab as u64) as u32).collect();
            let emb = lm.embed_tokens(&Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
            Tensor::cat(&[&soft, &emb.squeeze(0)?], 0)
        })
        .collect()
}

/// Batch 1, no cache: a full forward over the growing sequence for every new token.
fn reference(lm: &CausalLm, row: &Tensor, new_tokens: usize) -> candle_core::Result<Vec<u32>> {
    let mut x = row.unsqueeze(0)?;
    let mut out = Vec::with_capacity(new_tokens);
    for _ in 0..new_tokens {
        let s = x.dim(1)?;
        let h = lm.forward(&x, &TokenMask::full(1, s), None, Mode::Infer)?;
        let next = lm.logits(&h.i((.., s - 1))?)?.argmax(1)?.to_vec1::<u32>()?[0];
        out.push(next);
        let e = lm.embed_tokens(&Tensor::new(&[[next]], &Device::Cpu)?)?;
        x = Tensor::cat(&[&x, &e], 1)?;
    }
    Ok(out)
}

fn left_padded(rows: &[Tensor]) -> candle_core::Result<(Tensor, TokenMask)> {
    let lengths: Vec<usize> = rows.iter().map(|r| r.dim(0)).collect::<Result<_, _>>()?;
    let max = lengths.iter().copied().max().unwrap_or(0);
    let d = rows[0].dim(1)?;
    let padded = rows
        .iter()
        .zip(&lengths)
        .map(|(r, &n)| {
            if n == max {
                Ok(r.clone())
            } else {
                Tensor::cat(
                    &[&Tensor::zeros((max - n, d), DType::F32, &Device::Cpu)?, r],
                    0,
                )
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((
        Tensor::stack(&padded, 0)?,
        TokenMask::from_lengths(&lengths, Padding::Left),
    ))
}

pub fn run(a: GenerateArgs) -> CliResult {
    check_flags(&a)?;
    let cfg = LlmConfig {
        architecture: Architecture::Qwen2,
        vocab_size: a.vocab,
        hidden_size: a.hidden,
        intermediate_size: a.intermediate,
        num_hidden_layers: a.layers,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        max_position_embeddings: MAX_POSITIONS,
        tie_word_embeddings: true,
        attention_bias: true,
        stop_token_ids: vec![],
    };
    cfg.validate()?;
    let t0 = Instant::now();
    let map = VarMap::new();
    CausalLm::new(
        &cfg,
        seeded_var_builder(&map, a.seed, DType::F32, &Device::Cpu),
    )?;
    let weights = map
        .data()
        .lock()
        .map_err(|_| "var map lock")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    drop(map);
    let lm = CausalLm::new(
        &cfg,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )?;
    let rows = prompts(&a, &lm)?;
    let threads = candle_core::utils::get_num_threads();
    eprintln!(
        "model {:.1} M params built in {:.1} s; threads {threads}; prompt {}+1 soft, {} new tokens",
        cfg.param_count() as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        a.prompt_len,
        a.new_tokens
    );
    // Warm-up (small), as generate.py does.
    let (x, m) = left_padded(&rows[..2.min(rows.len())])?;
    greedy(
        &lm,
        &x,
        &m,
        &GenerateConfig {
            max_new_tokens: 2,
            stop_tokens: vec![],
        },
    )?;

    let mut result = json!({
        "bench": "generate", "threads": threads, "layers": a.layers, "hidden": a.hidden,
        "params": cfg.param_count(), "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
    });
    let mut ref_ids = None;
    if a.mode != "batched" {
        let t = Instant::now();
        for _ in 0..a.qas {
            ref_ids = Some(reference(&lm, &rows[0], a.new_tokens)?);
        }
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "reference: {:.2} s/QA, {:.3} QA/s, {:.2} tok/s",
            dt / a.qas as f64,
            a.qas as f64 / dt,
            (a.qas * a.new_tokens) as f64 / dt
        );
        result["reference"] = json!({"batch": 1, "kv_cache": false, "qas": a.qas,
            "s_per_qa": dt / a.qas as f64, "qas_per_s": a.qas as f64 / dt,
            "tokens_per_s": (a.qas * a.new_tokens) as f64 / dt});
    }
    if a.mode != "reference" {
        let (x, m) = left_padded(&rows)?;
        let decode = GenerateConfig {
            max_new_tokens: a.new_tokens,
            stop_tokens: vec![],
        };
        let t = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..a.batches {
            ids = greedy(&lm, &x, &m, &decode)?;
        }
        let dt = t.elapsed().as_secs_f64();
        let qas = (a.batches * a.batch) as f64;
        eprintln!(
            "batched x{}: {:.2} s/batch, {:.3} QA/s, {:.2} tok/s",
            a.batch,
            dt / a.batches as f64,
            qas / dt,
            qas * a.new_tokens as f64 / dt
        );
        result["batched"] = json!({"batch": a.batch, "kv_cache": true, "batches": a.batches,
            "s_per_batch": dt / a.batches as f64, "qas_per_s": qas / dt,
            "tokens_per_s": qas * a.new_tokens as f64 / dt});
        if let Some(r) = &ref_ids {
            result["tokens_match"] = json!(ids.first() == Some(r));
        }
    }
    result["peak_rss_mb"] = json!(super::bench::peak_rss_mb());
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}
