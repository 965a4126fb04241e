//! Loading pretrained causal LMs: Hugging Face model directories (`config.json` + safetensors),
//! GGUF files (llama.cpp's format, dequantised to f32) and the tokenizer a GGUF file carries.
//!
//! Every loader checks the tensors it is about to use against the shapes [`LlmConfig`] implies
//! before building the model, so a wrong or truncated checkpoint fails with the file and tensor
//! named instead of a bare shape error from deep inside the forward pass.

mod expected;
mod gguf;
mod hf;
mod tokenizer;

pub use expected::expected_tensors;
pub use gguf::GgufFile;
pub use hf::{load_hf_dir, load_hf_weights};
pub use tokenizer::check_tokenizer;
