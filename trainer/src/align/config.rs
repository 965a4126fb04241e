//! The alignment job config (`uqa align --config FILE`): strict TOML like pre-training's, with
//! the same `[optim]`, `[train]` and `[metrics]` sections. What is frozen is named here (the
//! encoder's pre-training run, the LLM's source), so a checkpoint holds only what was trained.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uqa_models::adapter::AdapterConfig;
use uqa_models::llm::{LlmConfig, LoraConfig};
use uqa_models::soft_prompt::Placement;

use crate::config::{OptimConfig, RuntimeConfig, TrainConfig, load_toml, sha256_hex};
use crate::error::{Result, TrainError};
use crate::observe::MetricsConfig;

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
    super::TRAIN_QUESTIONS.into()
}

fn default_eval_file() -> String {
    super::EVAL_QUESTIONS.into()
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
            .map_err(|e| TrainError::Invalid(format!("llm.tiny: {e}")))?;
        Ok(c)
    }
}

fn default_llm() -> String {
    "tiny".into()
}

fn default_system_prompt() -> String {
    uqa_models::llm::QWEN_SYSTEM_PROMPT.into()
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

/// The whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignJob {
    pub data: AlignData,
    #[serde(default)]
    pub llm: LlmSource,
    pub prompt: PromptConfig,
    pub strategy: Strategy,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_default")]
    pub runtime: RuntimeConfig,
}

impl AlignJob {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let job: AlignJob = load_toml(path, overrides)?;
        job.validate(path)?;
        Ok(job)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, reason: &str| Err(TrainError::config(path, key, reason));
        self.train.validate(path)?;
        self.runtime.device(path)?;
        if self.data.max_len == 0 {
            return bad("data.max_len", "must be positive");
        }
        if self.data.max_text_len < 8 {
            return bad("data.max_text_len", "must be at least 8 tokens");
        }
        match &self.prompt {
            PromptConfig::Text { last_k: 0, .. } => {
                return bad("prompt.last_k", "must be positive");
            }
            PromptConfig::Text { .. } if self.strategy == Strategy::Adapter => {
                return bad(
                    "strategy.kind",
                    "a text prompt has no adapter to train: use `full` or `lora`",
                );
            }
            _ => {}
        }
        match &self.strategy {
            Strategy::Full { llm_lr } if !(*llm_lr > 0.0 && llm_lr.is_finite()) => {
                return bad("strategy.llm_lr", "must be positive");
            }
            Strategy::Lora { lora } if lora.rank == 0 => {
                return bad("strategy.rank", "must be positive");
            }
            _ => {}
        }
        self.optim
            .adamw
            .validate()
            .map_err(|r| TrainError::config(path, "optim", r))?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of the resolved config minus what may change on resume.
    pub fn hash(&self) -> String {
        let mut c = self.clone();
        c.train = c.train.without_run_limits();
        c.metrics = MetricsConfig::default();
        c.runtime = RuntimeConfig::default();
        sha256_hex(&c.to_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
[data]
dataset = "data"
qa_dir = "qa"

[prompt]
kind = "soft"
encoder = "runs/pretrain"

[strategy]
kind = "full"

[optim]
lr = 1e-4
betas = [0.9, 0.98]
clip_norm = 1.5

[train]
epochs = 3
batch_size = 32
out = "out"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("align.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn defaults_follow_the_reference() {
        let (_d, p) = write(JOB);
        let job = AlignJob::load(&p, &[]).unwrap();
        assert_eq!(job.strategy, Strategy::Full { llm_lr: 1e-6 });
        assert_eq!(job.data.max_text_len, 512);
        assert_eq!(job.llm.source, "tiny");
        let PromptConfig::Soft {
            adapter,
            placement,
            untrained,
            ..
        } = &job.prompt
        else {
            panic!("soft prompt expected");
        };
        assert_eq!(
            (adapter, placement, untrained),
            (
                &AdapterConfig::MeanPool { recent: 0 },
                &Placement::Start,
                &false
            )
        );
        let (_d2, p2) = write(&job.to_toml());
        assert_eq!(AlignJob::load(&p2, &[]).unwrap(), job);
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_d, p) = write(JOB);
        let err = AlignJob::load(&p, &["strategy.kind=\"magic\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
        let text = JOB.replace(
            "kind = \"soft\"\nencoder = \"runs/pretrain\"",
            "kind = \"text\"\nlast_k = 20",
        );
        let (_d, p) = write(&text.replace("kind = \"full\"", "kind = \"adapter\""));
        let err = AlignJob::load(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("strategy.kind"), "{err}");
        let err = AlignJob::load(&p, &["prompt.last_k=0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prompt.last_k"), "{err}");
    }
}
