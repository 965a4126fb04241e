//! Adapters: encoder hidden states `[B, T, d_enc]` in, soft-prompt tokens `[B, k, d_llm]` out.
//!
//! - [`MeanPool`] (the reference default): a linear map of every position, averaged over the
//!   valid positions: one soft token; optionally followed by the last `recent` states (`recent`
//!   more tokens), optionally pooled through nonlinear layers (`hidden`) into several tokens (`pooled`).
//! - [`QFormer`] (the paper's alternative): `k` learned queries cross-attending to the states:
//!   `k` soft tokens (16 by default).

mod mean_pool;
mod qformer;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use mean_pool::{MeanPool, MeanPoolShape};
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
        /// Soft tokens from the pooled history (1, the reference).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        pooled: usize,
        /// Width of the deep-sets pooling: a GELU layer on every state before the mean and one
        /// after it (0, the reference: the mean of a linear map). Nonlinear features averaged over
        /// the history can count what was clicked, where a linear mean of narrow states cannot.
        #[serde(default, skip_serializing_if = "is_zero")]
        hidden: usize,
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
        AdapterConfig::MeanPool {
            recent: 0,
            pooled: 1,
            hidden: 0,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
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
            AdapterConfig::MeanPool { recent, pooled, .. } => pooled + recent,
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
            AdapterConfig::MeanPool {
                recent,
                pooled,
                hidden,
            } => {
                if *pooled == 0 {
                    return Err(ModelError::config("adapter.pooled", "must be positive"));
                }
                let shape = MeanPoolShape {
                    pooled: *pooled,
                    recent: *recent,
                    hidden: *hidden,
                };
                Ok(Adapter::MeanPool(
                    MeanPool::new(d_enc, d_llm, shape, vb).ctx("building the mean-pool adapter")?,
                ))
            }
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
