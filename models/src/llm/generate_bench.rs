//! `uqa bench generate`: greedy generation speed of the causal LM, the counterpart of
//! `../shared/bench/generate.py` with the same defaults (a random 0.5B-class Qwen2: hidden 896,
//! 24 layers, 14 / 2 heads; one soft vector + a ~120-token prompt; 16 new tokens, no stop).
//!
//! - reference: batch 1, no KV cache: every new token re-runs the whole sequence (the reference
//!   implementation's loop);
//! - batched: `batch` prompts of different lengths, left-padded, one prefill then cached decode
//!   steps (what `uqa eval` does).

use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use uqa_data::rng::Rng;

use super::config::{Architecture, LlmConfig};
use super::generate::{GenerateConfig, greedy};
use super::mask::{Padding, TokenMask, pad_rows};
use super::{CausalLm, Mode};
use crate::init::seeded_var_builder;

/// Positions of the model (Qwen2's): one soft vector, the prompt and the new tokens fit in them.
pub const MAX_POSITIONS: usize = 32_768;

/// The model's shape and the workload.
#[derive(Debug, Clone)]
pub struct GenerateBench {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    /// Prompt tokens of the longest row (rows have 80-100% of it).
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Prompts per batch (batched mode).
    pub batch: usize,
    /// Timed questions in reference mode (0: not run).
    pub qas: usize,
    /// Timed batches in batched mode (0: not run).
    pub batches: usize,
    pub seed: u64,
}

/// Seconds and counts of one mode.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub runs: usize,
    pub seconds: f64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct GenerateReport {
    pub params: usize,
    pub build_seconds: f64,
    pub reference: Option<Timing>,
    pub batched: Option<Timing>,
    /// Whether the batched first row's tokens equal the reference's (both modes run).
    pub tokens_match: Option<bool>,
}

impl GenerateBench {
    pub fn config(&self) -> LlmConfig {
        LlmConfig {
            architecture: Architecture::Qwen2,
            vocab_size: self.vocab,
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            max_position_embeddings: MAX_POSITIONS,
            tie_word_embeddings: true,
            attention_bias: true,
            stop_token_ids: vec![],
        }
    }

    /// A lower bound on the bytes of a run: f32 weights (built twice: the seeded map, then the
    /// copy the model runs on) and the KV cache of a batch; f64 so that no product overflows.
    pub fn memory_lower_bound(&self) -> f64 {
        let (d, l) = (self.hidden as f64, self.layers as f64);
        let kv = (self.kv_heads * (self.hidden / self.heads.max(1))) as f64;
        let params = self.vocab as f64 * d
            + l * (2.0 * d * d + 2.0 * d * kv + 3.0 * d * self.intermediate as f64);
        let cache =
            2.0 * l * self.batch as f64 * (1 + self.prompt_len + self.new_tokens) as f64 * kv;
        4.0 * (2.0 * params + cache)
    }

    /// Each prompt: one soft vector then token embeddings, `[1 + n, hidden]`.
    fn prompts(&self, lm: &CausalLm) -> Result<Vec<Tensor>> {
        let mut rng = Rng::new(self.seed.wrapping_add(1));
        let lo = self.prompt_len * 4 / 5;
        (0..self.batch)
            .map(|r| {
                let n = if r == 0 {
                    self.prompt_len
                } else {
                    lo + rng.below((self.prompt_len - lo + 1) as u64) as usize
                };
                let soft: Vec<f32> = (0..self.hidden)
                    .map(|_| (rng.normal() * 0.02) as f32)
                    .collect();
                let soft = Tensor::from_vec(soft, (1, self.hidden), &Device::Cpu)?;
                let ids: Vec<u32> = (0..n)
                    .map(|_| rng.below(self.vocab as u64) as u32)
                    .collect();
                let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
                Tensor::cat(&[&soft, &lm.embed_tokens(&ids)?.squeeze(0)?], 0)
            })
            .collect()
    }

    /// Builds the model and times the modes with a non-zero count (after a small warm-up, as
    /// generate.py does); `log` sees a line per phase.
    pub fn run(&self, mut log: impl FnMut(String)) -> Result<GenerateReport> {
        let cfg = self.config();
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let t0 = Instant::now();
        let map = VarMap::new();
        CausalLm::new(
            &cfg,
            seeded_var_builder(&map, self.seed, DType::F32, &Device::Cpu),
        )?;
        let weights = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("var map lock".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        drop(map);
        let lm = CausalLm::new(
            &cfg,
            VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
        )?;
        let rows = self.prompts(&lm)?;
        let build_seconds = t0.elapsed().as_secs_f64();
        log(format!(
            "model {:.1} M params built in {build_seconds:.1} s; threads {}; prompt {}+1 soft, {} new tokens",
            cfg.param_count() as f64 / 1e6,
            candle_core::utils::get_num_threads(),
            self.prompt_len,
            self.new_tokens
        ));
        let (x, m) = pad_rows(&rows[..2.min(rows.len())], Padding::Left)?;
        let warm = GenerateConfig {
            max_new_tokens: 2,
            stop_tokens: vec![],
        };
        greedy(&lm, &x, &m, &warm)?;

        let mut report = GenerateReport {
            params: cfg.param_count(),
            build_seconds,
            reference: None,
            batched: None,
            tokens_match: None,
        };
        let mut ref_ids = None;
        if self.qas > 0 {
            let t = Instant::now();
            for _ in 0..self.qas {
                ref_ids = Some(reference(&lm, &rows[0], self.new_tokens)?);
            }
            report.reference = Some(Timing {
                runs: self.qas,
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        if self.batches > 0 {
            let (x, m) = pad_rows(&rows, Padding::Left)?;
            let decode = GenerateConfig {
                max_new_tokens: self.new_tokens,
                stop_tokens: vec![],
            };
            let t = Instant::now();
            let mut ids = Vec::new();
            for _ in 0..self.batches {
                ids = greedy(&lm, &x, &m, &decode)?;
            }
            report.batched = Some(Timing {
                runs: self.batches,
                seconds: t.elapsed().as_secs_f64(),
            });
            report.tokens_match = ref_ids.as_ref().map(|r| ids.first() == Some(r));
        }
        Ok(report)
    }
}

/// Batch 1, no cache: a full forward over the growing sequence for every new token.
fn reference(lm: &CausalLm, row: &Tensor, new_tokens: usize) -> Result<Vec<u32>> {
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
