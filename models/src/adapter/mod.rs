//! Adapters: encoder hidden states `[B, T, d_enc]` in, soft-prompt tokens `[B, k, d_llm]` out.
//!
//! - [`MeanPool`] (the reference default): a linear map of every position, averaged over the
//!   valid positions: one soft token; optionally followed by the last `recent` states (`recent`
//!   more tokens).
//! - [`QFormer`] (the paper's alternative): `k` learned queries cross-attending to the states:
//!   `k` soft tokens (16 by default).

mod mean_pool;
mod qformer;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use mean_pool::MeanPool;
pub use qformer::QFormer;

use crate::error::{CandleContext, ModelError, Result};

/// Which adapter, and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdapterConfig {
    MeanPool {
        /// Also emit the last `recent` states as soft tokens (0, the reference: the mean only).
        #[serde(default, skip_serializing_if = "is_zero")]
        recent: usize,
    },
    QFormer {
        #[serde(default = "default_queries")]
        queries: usize,
        #[serde(default = "default_heads")]
        heads: usize,
    },
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig::MeanPool { recent: 0 }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_queries() -> usize {
    16
}

fn default_heads() -> usize {
    8
}

impl AdapterConfig {
    /// Soft tokens per user.
    pub fn soft_tokens(&self) -> usize {
        match self {
            AdapterConfig::MeanPool { recent } => 1 + recent,
            AdapterConfig::QFormer { queries, .. } => *queries,
        }
    }
}

/// A built adapter.
pub enum Adapter {
    MeanPool(MeanPool),
    QFormer(QFormer),
}

impl Adapter {
    /// Soft tokens per user.
    pub fn tokens(&self) -> usize {
        match self {
            Adapter::MeanPool(a) => a.tokens(),
            Adapter::QFormer(q) => q.queries(),
        }
    }

    /// Builds the adapter from `d_enc`-wide states to `d_llm`-wide soft tokens.
    pub fn new(
        cfg: &AdapterConfig,
        d_enc: usize,
        d_llm: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        match cfg {
            AdapterConfig::MeanPool { recent } => Ok(Adapter::MeanPool(
                MeanPool::new(d_enc, d_llm, *recent, vb).ctx("building the mean-pool adapter")?,
            )),
            AdapterConfig::QFormer { queries, heads } => {
                if *queries == 0 || *heads == 0 || !d_llm.is_multiple_of(*heads) {
                    return Err(ModelError::config(
                        "adapter.heads",
                        format!(
                            "{heads} heads and {queries} queries for an LLM width of {d_llm}: heads must divide the width, both positive"
                        ),
                    ));
                }
                Ok(Adapter::QFormer(
                    QFormer::new(d_enc, d_llm, *queries, *heads, vb)
                        .ctx("building the Q-Former adapter")?,
                ))
            }
        }
    }

    /// `states: [B, T, d_enc]`, `mask: [B, T]` (1 valid, 0 padding, states' dtype) ->
    /// `[B, k, d_llm]`.
    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Adapter::MeanPool(a) => a.forward(states, mask).ctx("mean-pool adapter"),
            Adapter::QFormer(a) => a.forward(states, mask).ctx("Q-Former adapter"),
        }
    }
}
