//! The LLM side of the soft-prompt pipeline: a Qwen2 / Llama causal LM that runs from
//! `inputs_embeds`, its padding masks and KV cache, and its configuration.

pub mod causal_lm;
pub mod chat;
pub mod config;
mod frozen_layer;
pub mod generate;
pub mod generate_bench;
pub mod mask;
pub mod weights;

pub use causal_lm::{CausalLm, KvCache, LoraConfig, Mode};
pub use chat::{ChatFormat, EncodedChat, QWEN_SYSTEM_PROMPT, Turn, parse_chat};
pub use config::{Architecture, LlmConfig};
pub use generate::{GenerateConfig, greedy};
pub use mask::{Padding, TokenMask, pad_rows};
pub use weights::{GgufFile, check_tokenizer, expected_tensors, load_hf_dir, load_hf_weights};
