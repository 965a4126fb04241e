//! The alignment job config (`uqa align --config FILE`): strict TOML like pre-training's, with
//! the same `[optim]`, `[train]` and `[metrics]` sections. What is frozen is named here (the
//! encoder's pre-training run, the LLM's source), so a checkpoint holds only what was trained.

use std::path::Path;

use serde::{Deserialize, Serialize};
pub use uqa_models::aligned::{
    AlignData, AlignedSpec, LlmSource, PromptConfig, Strategy, TinyShape,
};

use uqa_models::loss::AnswerLoss;

use crate::config::{OptimConfig, RuntimeConfig, TrainConfig, load_toml, sha256_hex};
use crate::error::{Result, TrainError};
use crate::observe::MetricsConfig;

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
    /// Terms beside the answers' cross-entropy (token-level unlikelihood). Not serialised when
    /// default: hashes of existing runs stay the same.
    #[serde(default, skip_serializing_if = "AnswerLoss::is_default")]
    pub loss: AnswerLoss,
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
        let w = self.loss.unlikelihood;
        if !(w >= 0.0 && w.is_finite()) {
            return bad("loss.unlikelihood", "must be a finite weight of at least 0");
        }
        self.optim
            .adamw
            .validate()
            .map_err(|r| TrainError::config(path, "optim", r))?;
        Ok(())
    }

    /// The sections that describe the model (what `uqa eval` reads back from the run).
    pub fn spec(&self) -> AlignedSpec {
        AlignedSpec {
            data: self.data.clone(),
            llm: self.llm.clone(),
            prompt: self.prompt.clone(),
            strategy: self.strategy.clone(),
        }
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
    use std::path::PathBuf;
    use uqa_models::adapter::AdapterConfig;
    use uqa_models::soft_prompt::Placement;

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
            (&AdapterConfig::default(), &Placement::Start, &false)
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

    #[test]
    fn the_unlikelihood_weight_is_checked_and_left_out_of_default_configs() {
        let (_d, p) = write(JOB);
        let job = AlignJob::load(&p, &[]).unwrap();
        assert!(job.loss.is_default());
        // Runs written before the `[loss]` section existed keep their config hash.
        assert!(!job.to_toml().contains("[loss]"));
        let weighted = AlignJob::load(&p, &["loss.unlikelihood=0.5".into()]).unwrap();
        assert_eq!(weighted.loss.unlikelihood, 0.5);
        assert_ne!(weighted.hash(), job.hash());
        let (_d2, p2) = write(&weighted.to_toml());
        assert_eq!(AlignJob::load(&p2, &[]).unwrap(), weighted);
        for bad in ["loss.unlikelihood=-1.0", "loss.unlikelihood=nan"] {
            let err = AlignJob::load(&p, &[bad.into()]).unwrap_err().to_string();
            assert!(err.contains("loss.unlikelihood"), "{bad}: {err}");
        }
        let err = AlignJob::load(&p, &["loss.weight=1.0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight"), "{err}");
    }
}
