//! The shape of a decoder-only causal LM, read from a Hugging Face `config.json` (or built for
//! the tiny default model). Two families are supported: Qwen2 (q/k/v biases) and Llama
//! (SmolLM2; no biases). Anything else is refused with the file and field named.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The model families this implementation reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen2,
    Llama,
}

impl Architecture {
    /// The Hugging Face class name (`architectures[0]` in `config.json`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2: yes; Llama: `attention_bias`, normally no).
    pub attention_bias: bool,
    /// Token ids that end a generation (EOS, and `<|im_end|>` for chat models).
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
}

/// The subset of a Hugging Face `config.json` we read.
#[derive(Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    32_768
}

impl LlmConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::config(path.display().to_string(), e.to_string()))?;
        Self::from_hf_json(&text).map_err(|e| match e {
            ModelError::Config { field, reason } => {
                ModelError::config(format!("{}: {field}", path.display()), reason)
            }
            other => other,
        })
    }

    /// Parses the text of a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::config("config.json", e.to_string()))?;
        let class = hf
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or_else(|| hf.model_type.clone())
            .unwrap_or_default();
        let architecture = match class.as_str() {
            "Qwen2ForCausalLM" | "qwen2" => Architecture::Qwen2,
            "LlamaForCausalLM" | "llama" => Architecture::Llama,
            other => {
                return Err(ModelError::config(
                    "architectures",
                    format!(
                        "unsupported architecture `{other}` (supported: Qwen2ForCausalLM, LlamaForCausalLM)"
                    ),
                ));
            }
        };
        if let Some(scaling) = hf.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(ModelError::config(
                "rope_scaling",
                format!("RoPE scaling {scaling} is not supported"),
            ));
        }
        if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(ModelError::config(
                "hidden_act",
                format!("activation `{act}` is not supported (silu only)"),
            ));
        }
        let stop_token_ids = match &hf.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        };
        let cfg = LlmConfig {
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            attention_bias: hf
                .attention_bias
                .unwrap_or(architecture == Architecture::Qwen2),
            stop_token_ids,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The tiny Qwen2-architecture model of the tests and the quickstart: 2 layers, width 128,
    /// 4 query / 2 key-value heads, tied embeddings, over `vocab_size` tokens.
    pub fn tiny(vocab_size: usize) -> Self {
        LlmConfig {
            architecture: Architecture::Qwen2,
            vocab_size,
            hidden_size: 128,
            intermediate_size: 384,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
            attention_bias: true,
            stop_token_ids: Vec::new(),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ModelError::config(field, "must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ModelError::config(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "{} key-value heads do not divide {} query heads",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ModelError::config(
                "hidden_size",
                "head dimension must be even for RoPE",
            ));
        }
        Ok(())
    }

    /// Parameters (embedding and output tables included, counted once when tied).
    pub fn param_count(&self) -> usize {
        let d = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim();
        let bias = if self.attention_bias { d + 2 * kv } else { 0 };
        let attn = d * d * 2 + d * kv * 2 + bias;
        let mlp = 3 * d * self.intermediate_size;
        let layer = attn + mlp + 2 * d;
        let tables = self.vocab_size * d * if self.tie_word_embeddings { 1 } else { 2 };
        self.num_hidden_layers * layer + d + tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN25_3B: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "hidden_size": 2048, "intermediate_size": 11008,
      "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 151936,
      "tie_word_embeddings": true, "max_position_embeddings": 32768, "hidden_act": "silu",
      "eos_token_id": 151645, "rope_scaling": null }"#;

    #[test]
    fn reads_qwen25_3b_and_counts_its_parameters() {
        let c = LlmConfig::from_hf_json(QWEN25_3B).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2);
        assert!(c.attention_bias && c.tie_word_embeddings);
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.stop_token_ids, vec![151645]);
        // Qwen2.5-3B: 3.09 B parameters (model card).
        let p = c.param_count() as f64 / 1e9;
        assert!((3.0..3.2).contains(&p), "{p}");
    }

    #[test]
    fn refuses_unsupported_architectures_and_scalings() {
        let gpt = QWEN25_3B.replace("Qwen2ForCausalLM", "GPT2LMHeadModel");
        let err = LlmConfig::from_hf_json(&gpt).unwrap_err().to_string();
        assert!(
            err.contains("architectures") && err.contains("GPT2LMHeadModel"),
            "{err}"
        );
        let scaled = QWEN25_3B.replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"yarn\"}",
        );
        let err = LlmConfig::from_hf_json(&scaled).unwrap_err().to_string();
        assert!(err.contains("rope_scaling"), "{err}");
        let bad = QWEN25_3B.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
        assert!(
            LlmConfig::from_hf_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("num_key_value_heads")
        );
    }

    #[test]
    fn llama_defaults_to_no_attention_bias() {
        let llama = QWEN25_3B.replace("Qwen2ForCausalLM", "LlamaForCausalLM");
        let c = LlmConfig::from_hf_json(&llama).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert!(!c.attention_bias);
    }
}
