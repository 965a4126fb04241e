//! Hugging Face model directories: `config.json` plus `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (or, without an index, every `*.safetensors` file). The
//! shards are memory-mapped; tensors are converted to f32 as the model takes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::expected::check_tensors;
use crate::error::{CandleContext, ModelError, Result};
use crate::llm::causal_lm::CausalLm;
use crate::llm::config::LlmConfig;

/// Loads the causal LM of a Hugging Face model directory in f32 on `device`.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<CausalLm> {
    let (cfg, weights) = load_hf_weights(dir, device)?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, device);
    CausalLm::new(&cfg, vb).ctx(&format!("loading the causal LM from {}", dir.display()))
}

/// The configuration and f32 weights (by Hugging Face name) of a model directory, checked
/// against each other; callers that train the LLM turn them into variables.
pub fn load_hf_weights(
    dir: &Path,
    device: &Device,
) -> Result<(LlmConfig, HashMap<String, Tensor>)> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(ModelError::model_file(
            &config,
            "missing: a Hugging Face model directory needs config.json",
        ));
    }
    let cfg = LlmConfig::from_hf_file(&config)?;
    let files = safetensors_files(dir)?;
    let mut found = HashMap::new();
    for file in &files {
        // SAFETY: the file is mapped read-only; like every mmap loader we assume nobody
        // truncates it while the model is alive.
        let st = unsafe { MmapedSafetensors::new(file) }
            .map_err(|e| ModelError::model_file(file, format!("not a safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            found.insert(name, (view.shape().to_vec(), file.clone()));
        }
    }
    check_tensors(&cfg, &found, dir, str::to_string)?;
    let mut weights = HashMap::new();
    for file in &files {
        // SAFETY: as above.
        let st = unsafe { MmapedSafetensors::new(file) }
            .map_err(|e| ModelError::model_file(file, format!("not a safetensors file: {e}")))?;
        for (name, _) in st.tensors() {
            let t = st
                .load(&name, device)
                .and_then(|t| t.to_dtype(DType::F32))
                .ctx(&format!("{}: tensor `{name}`", file.display()))?;
            weights.insert(name, t);
        }
    }
    Ok((cfg, weights))
}

/// The weight files of `dir`, in a stable order.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::model_file(&index, e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::model_file(&index, format!("does not parse: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::model_file(&index, "no `weight_map` object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in map.values() {
            let shard = shard.as_str().ok_or_else(|| {
                ModelError::model_file(&index, "a `weight_map` value is not a string")
            })?;
            let path = dir.join(shard);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files.sort();
        for f in &files {
            if !f.is_file() {
                return Err(ModelError::model_file(
                    f,
                    format!("missing (listed in {})", index.display()),
                ));
            }
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::model_file(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::model_file(
            &single,
            "missing: no model.safetensors, model.safetensors.index.json or *.safetensors",
        ));
    }
    Ok(files)
}
