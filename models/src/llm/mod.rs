//! The LLM side of the soft-prompt pipeline: a Qwen2 / Llama causal LM that runs from
//! `inputs_embeds`, its padding masks and KV cache, and its configuration.

pub mod causal_lm;
pub mod config;
pub mod mask;

pub use causal_lm::{CausalLm, KvCache, Mode};
pub use config::{Architecture, LlmConfig};
pub use mask::{Padding, TokenMask};
