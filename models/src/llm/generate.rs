//! Batched greedy decoding: one prefill over left-padded prompts, then one cached step per new
//! token. Rows that reach a stop token are finished (their later tokens are discarded; they
//! still ride along in the batch until every row is done or the budget is spent).

use candle_core::{D, Result, Tensor};

use super::causal_lm::{CausalLm, Mode};
use super::mask::TokenMask;

/// How long to generate and when to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// Ids that end a row (not included in its output).
    pub stop_tokens: Vec<u32>,
}

/// Greedy continuations of `x: [B, S, d]` (prompt embeddings, left-padded as `mask` says).
pub fn greedy(
    lm: &CausalLm,
    x: &Tensor,
    mask: &TokenMask,
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<u32>>> {
    let rows = x.dim(0)?;
    let mut out = vec![Vec::new(); rows];
    let mut done = vec![false; rows];
    let mut cache = lm.new_cache();
    let mut mask = mask.clone();
    let mut input = x.clone();
    for _ in 0..cfg.max_new_tokens {
        let h = lm.forward(&input, &mask, Some(&mut cache), Mode::Infer)?;
        let last = h.narrow(1, h.dim(1)? - 1, 1)?.squeeze(1)?;
        let next: Vec<u32> = lm.logits(&last)?.argmax(D::Minus1)?.to_vec1()?;
        for (r, &tok) in next.iter().enumerate() {
            if done[r] {
                continue;
            }
            if cfg.stop_tokens.contains(&tok) {
                done[r] = true;
            } else {
                out[r].push(tok);
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
        let ids = Tensor::new(next.as_slice(), x.device())?.unsqueeze(1)?;
        input = lm.embed_tokens(&ids)?;
        mask.extend(1);
    }
    Ok(out)
}
