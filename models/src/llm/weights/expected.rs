//! The tensors a [`CausalLm`](crate::llm::CausalLm) reads, by Hugging Face name, with their
//! shapes: the one list both loaders check a checkpoint against.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{ModelError, Result};
use crate::llm::config::LlmConfig;

/// `(name, shape)` of every parameter the model of `cfg` loads, in checkpoint order.
pub fn expected_tensors(cfg: &LlmConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            push(format!("{p}.self_attn.{proj}.weight"), vec![rows, d]);
            if cfg.attention_bias {
                push(format!("{p}.self_attn.{proj}.bias"), vec![rows]);
            }
        }
        push(format!("{p}.self_attn.o_proj.weight"), vec![d, q]);
        push(format!("{p}.mlp.gate_proj.weight"), vec![f, d]);
        push(format!("{p}.mlp.up_proj.weight"), vec![f, d]);
        push(format!("{p}.mlp.down_proj.weight"), vec![d, f]);
        push(format!("{p}.input_layernorm.weight"), vec![d]);
        push(format!("{p}.post_attention_layernorm.weight"), vec![d]);
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, d]));
    }
    out
}

/// Checks that every expected tensor is present with its shape. `found` maps a Hugging Face
/// name to its shape and the file holding it; `source` names the checkpoint for missing tensors
/// and `display` turns a Hugging Face name back into the file's own name.
pub(crate) fn check_tensors(
    cfg: &LlmConfig,
    found: &HashMap<String, (Vec<usize>, std::path::PathBuf)>,
    source: &Path,
    display: impl Fn(&str) -> String,
) -> Result<()> {
    for (name, shape) in expected_tensors(cfg) {
        match found.get(&name) {
            None => {
                return Err(ModelError::tensor(
                    source,
                    display(&name),
                    "missing from the checkpoint",
                ));
            }
            Some((got, file)) if *got != shape => {
                return Err(ModelError::tensor(
                    file,
                    display(&name),
                    format!("shape {got:?}, but the config implies {shape:?}"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
