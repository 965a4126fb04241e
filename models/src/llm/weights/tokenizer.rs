//! The tokenizer a GGUF file carries, rebuilt as a `tokenizers::Tokenizer`, and the check that a
//! tokenizer fits a model.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported, which covers Qwen2 and
//! SmolLM2. The pre-tokenizer is chosen by `tokenizer.ggml.pre` as llama.cpp does
//! (`llama-vocab.cpp`), written the way the models' own `tokenizer.json` files write it so the
//! ids match Hugging Face. Every token is in the BPE vocabulary at its GGUF id; control (type 3)
//! and user-defined (type 4) tokens are also added tokens, so they are matched whole in text
//! (control ones as special). No BOS is added: callers render chat markers themselves.

use serde_json::{Value as Json, json};
use tokenizers::Tokenizer;

use super::gguf::GgufFile;
use crate::error::{ModelError, Result};
use crate::llm::config::LlmConfig;
use candle_core::quantized::gguf_file::Value;

/// Qwen2's split pattern (its `tokenizer.json`; llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's split pattern (llama.cpp `llama-bpe`): like Qwen2's but numbers in runs of three.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
           "use_regex": use_regex})
}

fn split(pattern: &str) -> Json {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
           "invert": false})
}

/// Builds the tokenizer of `gguf` from its `tokenizer.ggml.*` metadata.
pub(crate) fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let path = gguf.path();
    let err = |key: &str, reason: String| {
        ModelError::config(format!("{}: {key}", path.display()), reason)
    };
    let model = gguf.meta_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(err(
            "tokenizer.ggml.model",
            format!("tokenizer `{model}` is not supported (byte-level BPE `gpt2` only)"),
        ));
    }
    let pre = match gguf.metadata("tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.as_str(),
        _ => "default",
    };
    let (normalizer, pre_tokenizer, ignore_merges) = match pre {
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence",
                   "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]}),
            false,
        ),
        "llama-bpe" | "llama3" => (
            Json::Null,
            json!({"type": "Sequence",
                   "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]}),
            true,
        ),
        // SmolLM's tokenizer.json: single digits, then GPT-2's byte-level split.
        "smollm" | "starcoder" => (
            Json::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            false,
        ),
        "default" | "gpt2" => (Json::Null, byte_level(true), false),
        other => {
            return Err(err(
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer `{other}` is not supported (qwen2, llama-bpe, smollm, gpt2)"
                ),
            ));
        }
    };
    let tokens = gguf.tokens()?;
    let types: Vec<u64> = match gguf.metadata("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x as u64),
                Value::U32(x) => Ok(*x as u64),
                other => Err(err(
                    "tokenizer.ggml.token_type",
                    format!("holds a non-integer: {other:?}"),
                )),
            })
            .collect::<Result<_>>()?,
        _ => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(err(
            "tokenizer.ggml.token_type",
            format!("{} types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let merges: Vec<Json> = match gguf.metadata("tokenizer.ggml.merges") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => {
                    s.split_once(' ')
                        .map(|(a, b)| json!([a, b]))
                        .ok_or_else(|| {
                            err("tokenizer.ggml.merges", format!("merge `{s}` is not `a b`"))
                        })
                }
                _ => Err(err("tokenizer.ggml.merges", "holds a non-string".into())),
            })
            .collect::<Result<_>>()?,
        _ => return Err(err("tokenizer.ggml.merges", "missing".into())),
    };
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.contains_key(*tok) {
            continue;
        }
        vocab.insert(tok.to_string(), json!(id));
        if *ty == 3 || *ty == 4 {
            added.push(
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": *ty == 3}),
            );
        }
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level(true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                  "vocab": vocab, "merges": merges},
    });
    spec.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| ModelError::model_file(path, format!("building the tokenizer: {e}")))
}

/// Checks that every id `tokenizer` can produce has a row in the model's embedding table. The
/// tokenizer may know fewer ids than the model (Qwen pads its table to 151,936), never more.
pub fn check_tokenizer(tokenizer: &Tokenizer, cfg: &LlmConfig) -> Result<()> {
    let highest = tokenizer
        .get_vocab(true)
        .into_iter()
        .max_by_key(|(_, id)| *id);
    if let Some((token, id)) = highest
        && id as usize >= cfg.vocab_size
    {
        return Err(ModelError::TokenizerMismatch {
            tokenizer: format!("highest id {id}, `{token}`"),
            tokenizer_vocab: id as usize + 1,
            model_vocab: cfg.vocab_size,
        });
    }
    Ok(())
}
