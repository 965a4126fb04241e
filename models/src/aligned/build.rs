//! Builds the soft-prompt model an alignment job names: the LLM from its source, the frozen
//! encoder from its pre-training run, the adapter; and, by strategy, which of their variables
//! train. Trainable variables live in one `VarMap` under `adapter.`, `llm.` (full) or `lora.`
//! names, so checkpoints hold exactly what was trained.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;
use uqa_data::dataset::Dataset;
use uqa_data::tokenizer::TextTokenizer;

use super::spec::{AlignedSpec, LlmSource, PromptConfig, Strategy};
use crate::adapter::Adapter;
use crate::checkpoint;
use crate::error::{CandleContext, ModelError, Result};
use crate::llm::{CausalLm, ChatFormat, GgufFile, LlmConfig, check_tokenizer};
use crate::soft_prompt::{SoftPromptModel, UserPrompt};
use crate::{PretrainConfig, PretrainModel, seeded_var_builder};

/// The assembled model and what goes with it.
pub struct AlignModel {
    pub model: SoftPromptModel,
    /// Every trainable variable (empty for a frozen evaluation-only build).
    pub trainable: VarMap,
    pub tokenizer: TextTokenizer,
    pub chat: ChatFormat,
    pub stop_tokens: Vec<u32>,
}

/// An LLM's weights, shape and tokenizer before the strategy decides what trains.
pub struct LlmParts {
    pub config: LlmConfig,
    pub weights: HashMap<String, Tensor>,
    pub tokenizer: TextTokenizer,
}

/// Loads the LLM named by `source` onto `dev`: `tiny`, a Hugging Face folder, or a `.gguf` file.
pub fn load_llm(llm: &LlmSource, dataset: &Dataset, dev: &Device) -> Result<LlmParts> {
    let (source, seed) = (llm.source.as_str(), llm.seed);
    if source == "tiny" {
        let tokenizer = TextTokenizer::from_file(&dataset.tokenizer_path())?;
        // Rounded up to a multiple of 64, as Qwen pads its 151,665 tokens to 151,936.
        let vocab = (tokenizer.vocab_size() as usize).div_ceil(64) * 64;
        let config = llm.tiny.config(vocab)?;
        let map = VarMap::new();
        CausalLm::new(&config, seeded_var_builder(&map, seed, DType::F32, dev))
            .ctx("initialising the tiny LLM")?;
        let weights = map
            .data()
            .lock()
            .expect("var map lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        return Ok(LlmParts {
            config,
            weights,
            tokenizer,
        });
    }
    let path = PathBuf::from(source);
    if path.extension().is_some_and(|e| e == "gguf") {
        return load_gguf(&path, dev);
    }
    load_hf_dir(&path, dev)
}

fn load_hf_dir(dir: &Path, dev: &Device) -> Result<LlmParts> {
    let (config, weights) = crate::llm::load_hf_weights(dir, dev)?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    Ok(LlmParts {
        config,
        weights,
        tokenizer,
    })
}

/// A GGUF file, dequantised; its tokenizer comes from the file's metadata.
fn load_gguf(path: &Path, dev: &Device) -> Result<LlmParts> {
    let file = GgufFile::open(path)?;
    let (config, weights) = file.load_weights(dev)?;
    let tokenizer = TextTokenizer::from_tokenizer(file.tokenizer()?, &path.display().to_string())?;
    Ok(LlmParts {
        config,
        weights,
        tokenizer,
    })
}

/// The sections of a pre-training run's saved config (`RUN/config.toml`) that build its model.
#[derive(Deserialize)]
struct PretrainRun {
    model: PretrainConfig,
    #[serde(default)]
    train: PretrainSeed,
}

#[derive(Default, Deserialize)]
struct PretrainSeed {
    #[serde(default)]
    seed: u64,
}

impl PretrainRun {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::model_file(path, e.to_string()))?;
        toml::from_str(&text).map_err(|e| ModelError::model_file(path, e.to_string()))
    }
}

/// The model config of a pre-training run (its folder), as saved in its `config.toml`.
pub fn encoder_config(run: &Path) -> Result<PretrainConfig> {
    Ok(PretrainRun::load(&run.join("config.toml"))?.model)
}

/// The frozen encoder of a pre-training run on `dev` (`untrained`: its initial weights), which
/// must read sequences of `max_len` positions (the alignment's `data.max_len`).
fn load_encoder(
    run: &Path,
    untrained: bool,
    dataset: &Dataset,
    max_len: usize,
    dev: &Device,
) -> Result<PretrainModel> {
    let config = run.join("config.toml");
    let job = PretrainRun::load(&config)?;
    if let Some(positions) = job.model.encoder.max_positions()
        && max_len > positions
    {
        return Err(ModelError::Invalid(format!(
            "data.max_len = {max_len} exceeds the encoder's model.encoder.max_len = {positions} \
             ({}): lower data.max_len",
            config.display()
        )));
    }
    if untrained {
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, job.train.seed, DType::F32, dev);
        return PretrainModel::new(&job.model, &dataset.meta.vocab, vb);
    }
    let dir = checkpoint::latest(run)?.ok_or_else(|| ModelError::Checkpoint {
        path: run.to_path_buf(),
        reason: "no checkpoint: run `uqa pretrain` first (or set prompt.untrained = true)".into(),
    })?;
    let file = dir.join("model.safetensors");
    let weights =
        candle_core::safetensors::load(&file, dev).map_err(|e| ModelError::Checkpoint {
            path: file.clone(),
            reason: e.to_string(),
        })?;
    PretrainModel::new(
        &job.model,
        &dataset.meta.vocab,
        VarBuilder::from_tensors(weights, DType::F32, dev),
    )
    .map_err(|e| ModelError::Checkpoint {
        path: file,
        reason: format!("{e} (was the encoder trained on another dataset or vocabulary?)"),
    })
}

/// Builds everything `job` names on `dev`, with fresh trainable variables (seeded by `seed`).
pub fn build(job: &AlignedSpec, seed: u64, dataset: &Dataset, dev: &Device) -> Result<AlignModel> {
    let parts = load_llm(&job.llm, dataset, dev)?;
    check_tokenizer(parts.tokenizer.inner(), &parts.config)?;
    let trainable = VarMap::new();
    let tvb = seeded_var_builder(&trainable, seed, DType::F32, dev);
    let llm_ctx = format!("LLM weights of {}", job.llm.source);
    let lm = match &job.strategy {
        Strategy::Full { .. } => {
            {
                let mut data = trainable.data().lock().expect("var map lock");
                for (name, t) in &parts.weights {
                    let var = candle_core::Var::from_tensor(t)
                        .map_err(|e| ModelError::Invalid(e.to_string()))?;
                    data.insert(format!("llm.{name}"), var);
                }
            }
            CausalLm::new(&parts.config, tvb.pp("llm")).ctx(&llm_ctx)?
        }
        Strategy::Adapter => CausalLm::new(
            &parts.config,
            VarBuilder::from_tensors(parts.weights.clone(), DType::F32, dev),
        )
        .ctx(&llm_ctx)?,
        Strategy::Lora { lora } => CausalLm::with_lora(
            &parts.config,
            VarBuilder::from_tensors(parts.weights.clone(), DType::F32, dev),
            Some((*lora, tvb.pp("lora"))),
        )
        .ctx(&llm_ctx)?,
    };
    let user = match &job.prompt {
        PromptConfig::Soft {
            encoder,
            untrained,
            adapter,
            placement,
        } => {
            let enc = load_encoder(encoder, *untrained, dataset, job.data.max_len, dev)?;
            let width = enc.config().encoder.width();
            let adapter =
                Adapter::new(adapter, width, parts.config.hidden_size, tvb.pp("adapter"))?;
            Some(UserPrompt {
                encoder: enc,
                adapter,
                placement: *placement,
            })
        }
        PromptConfig::Text { .. } => None,
    };
    let system = Some(job.llm.system_prompt.as_str()).filter(|s| !s.is_empty());
    let chat = ChatFormat::new(&parts.tokenizer, system, job.data.max_text_len)?;
    let mut stop_tokens = parts.config.stop_token_ids.clone();
    for s in ["<|im_end|>", "<|endoftext|>"] {
        if let Some(id) = parts.tokenizer.inner().token_to_id(s) {
            stop_tokens.push(id);
        }
    }
    stop_tokens.sort_unstable();
    stop_tokens.dedup();
    Ok(AlignModel {
        model: SoftPromptModel { lm, user },
        trainable,
        tokenizer: parts.tokenizer,
        chat,
        stop_tokens,
    })
}

/// An alignment run's model for evaluation on `dev`: the job saved in `run/config.toml` rebuilt
/// (frozen parts from their sources) and the trained variables restored from its latest
/// checkpoint.
pub fn load_aligned(run: &Path, dev: &Device) -> Result<(AlignedSpec, AlignModel, Dataset)> {
    let job = AlignedSpec::from_run(run)?;
    let dataset = Dataset::open(&job.data.dataset)?;
    // Every trainable variable is overwritten from the checkpoint below: the seed is moot.
    let m = build(&job, 0, &dataset, dev)?;
    let dir = checkpoint::latest(run)?.ok_or_else(|| ModelError::Checkpoint {
        path: run.to_path_buf(),
        reason: "no checkpoint: run `uqa align` first".into(),
    })?;
    let file = dir.join("model.safetensors");
    let bad = |reason: String| ModelError::Checkpoint {
        path: file.clone(),
        reason,
    };
    let weights = candle_core::safetensors::load(&file, dev).map_err(|e| bad(e.to_string()))?;
    let data = m.trainable.data().lock().expect("var map lock");
    if weights.len() != data.len() {
        return Err(bad(format!(
            "{} tensors, the model trains {} (another adapter, strategy or LLM?)",
            weights.len(),
            data.len()
        )));
    }
    // In name order, so the first mismatch reported is the same on every run.
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let t = weights.get(name).ok_or_else(|| {
            bad(format!(
                "no tensor `{name}` (another adapter, strategy or LLM?)"
            ))
        })?;
        if t.shape() != var.shape() {
            return Err(bad(format!(
                "`{name}` has shape {:?}, the model {:?} (another LLM or encoder?)",
                t.shape().dims(),
                var.shape().dims()
            )));
        }
        var.set(t).map_err(|e| bad(e.to_string()))?;
    }
    drop(data);
    Ok((job, m, dataset))
}
