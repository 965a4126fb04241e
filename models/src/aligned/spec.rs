//! What an alignment run's model is, as its config names it: the question data, the LLM's
//! source, the user prompt (soft tokens from a frozen encoder, or text) and what trains. The
//! trainer's alignment job adds the optimiser and the run's settings to these sections; the
//! evaluator reads only these back from the run (`config.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapter::AdapterConfig;
use crate::error::{ModelError, Result};
use crate::llm::{LlmConfig, LoraConfig};
use crate::soft_prompt::Placement;

/// The training questions file inside a `uqa qa-gen` folder.
pub const TRAIN_QUESTIONS: &str = "align_data_train.arrow";
/// The evaluation questions file.
pub const EVAL_QUESTIONS: &str = "align_data_eval.arrow";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignData {
    /// The dataset folder (tokenizer, item catalog, vocabulary sizes).
    pub dataset: PathBuf,
    /// The question folder written by `uqa qa-gen` (`align_data_train.arrow`, ...).
    pub qa_dir: PathBuf,
    /// Context positions fed to the encoder (the last ones).
    #[serde(default = "default_seq_len")]
    pub max_len: usize,
    /// Chat tokens kept per question (the reference truncates at 512).
    #[serde(default = "default_text_len")]
    pub max_text_len: usize,
    /// Train on at most this many questions (0: all); for tests and the quickstart.
    #[serde(default)]
    pub max_questions: usize,
    /// The training and evaluation files inside `qa_dir` (the CTR mode's are
    /// `ctr_data_train.arrow` and `ctr_data_eval.arrow`).
    #[serde(default = "default_train_file")]
    pub train_file: String,
    #[serde(default = "default_eval_file")]
    pub eval_file: String,
}

fn default_train_file() -> String {
    TRAIN_QUESTIONS.into()
}

fn default_eval_file() -> String {
    EVAL_QUESTIONS.into()
}

fn default_seq_len() -> usize {
    512
}

fn default_text_len() -> usize {
    512
}

/// Which LLM, and how it is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSource {
    /// `tiny` (the built-in Qwen2-architecture test model, initialised from `seed` over the
    /// dataset's tokenizer), a Hugging Face model folder (config.json, *.safetensors,
    /// tokenizer.json), or a `.gguf` file.
    #[serde(default = "default_llm")]
    pub source: String,
    #[serde(default)]
    pub seed: u64,
    /// The system turn written before each question (`""`: none).
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// The shape of the `tiny` LLM (ignored for other sources).
    #[serde(default)]
    pub tiny: TinyShape,
}

/// Shape of the built-in `tiny` LLM (Qwen2 architecture, tied embeddings, vocabulary from the
/// dataset's tokenizer). The defaults are the 2-layer, 128-wide test model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyShape {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

impl Default for TinyShape {
    fn default() -> Self {
        let c = LlmConfig::tiny(64);
        TinyShape {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
        }
    }
}

impl TinyShape {
    /// The LLM config of this shape over `vocab` token ids; sizes that do not fit together are
    /// refused naming `llm.tiny`.
    pub fn config(&self, vocab: usize) -> Result<LlmConfig> {
        let mut c = LlmConfig::tiny(vocab);
        c.num_hidden_layers = self.layers;
        c.hidden_size = self.hidden;
        c.intermediate_size = self.intermediate;
        c.num_attention_heads = self.heads;
        c.num_key_value_heads = self.kv_heads;
        c.validate()
            .map_err(|e| ModelError::config("llm.tiny", e.to_string()))?;
        Ok(c)
    }
}

fn default_llm() -> String {
    "tiny".into()
}

fn default_system_prompt() -> String {
    crate::llm::QWEN_SYSTEM_PROMPT.into()
}

impl Default for LlmSource {
    fn default() -> Self {
        LlmSource {
            source: default_llm(),
            seed: 0,
            system_prompt: default_system_prompt(),
            tiny: TinyShape::default(),
        }
    }
}

/// What produces the user part of the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptConfig {
    /// Soft tokens from a frozen encoder through an adapter (the paper's method).
    Soft {
        /// The pre-training run (its folder: config.toml and checkpoints/).
        encoder: PathBuf,
        /// Use the encoder's initial weights instead of its trained ones (the untrained
        /// baseline the quickstart compares against).
        #[serde(default)]
        untrained: bool,
        #[serde(default)]
        adapter: AdapterConfig,
        #[serde(default)]
        placement: Placement,
    },
    /// The last `last_k` interactions as text lines (Text20, Text50); with `retrieval`, the
    /// `last_k` interactions most similar to the recent ones instead (ReLLa), kept in time order.
    Text {
        last_k: usize,
        #[serde(default)]
        retrieval: bool,
    },
}

/// What trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Only the adapter (the reference default); the LLM is frozen.
    Adapter,
    /// Adapter and LLM; the LLM at its own learning rate (reference: 1e-6).
    Full {
        #[serde(default = "default_llm_lr")]
        llm_lr: f64,
    },
    /// Adapter and rank-r LoRA branches on the LLM's q and v projections.
    Lora {
        #[serde(default, flatten)]
        lora: LoraConfig,
    },
}

fn default_llm_lr() -> f64 {
    1e-6
}

/// The model-describing sections of an alignment run's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignedSpec {
    pub data: AlignData,
    #[serde(default)]
    pub llm: LlmSource,
    pub prompt: PromptConfig,
    pub strategy: Strategy,
}

impl AlignedSpec {
    /// Reads these sections of an alignment run's saved config (`RUN/config.toml`), ignoring the
    /// training sections.
    pub fn from_run(run: &Path) -> Result<Self> {
        let path = run.join("config.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::model_file(&path, e.to_string()))?;
        toml::from_str(&text).map_err(|e| ModelError::model_file(&path, e.to_string()))
    }
}
