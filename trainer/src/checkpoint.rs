//! Checkpoints: `OUT/checkpoints/step-00000123/` holding `model.safetensors` (parameters by
//! name), `optimizer.safetensors` (AdamW moments), `state.json` (step, epoch, sampler position,
//! config hash) and `config.toml`. A checkpoint is written under a temporary folder name, every
//! file fsynced, then renamed; the `latest` pointer is rewritten (atomically) last, so a crash
//! at any moment leaves the previous checkpoint loadable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use uqa_data::atomic::write_atomic;

use crate::error::{CandleContext, Result, TrainError};
use crate::optim::{AdamW, Params};
use crate::parallel::Replicas;

pub const LATEST: &str = "latest";

/// Where training stands; enough to resume exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Current epoch (0-based) and samples of it this rank has consumed.
    pub epoch: u64,
    pub sampler_position: usize,
    /// Hash of the resolved config, minus step limits: a checkpoint of another run is refused.
    pub config_hash: String,
    pub world_size: usize,
}

fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

/// Write a checkpoint and point `latest` at it; keep the newest `keep` checkpoints.
pub fn save(
    out: &Path,
    params: &Params,
    optimizer: &AdamW,
    state: &TrainState,
    config_toml: &str,
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(out);
    std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
    let name = format!("step-{:08}", state.step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp.{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;

    let weights: HashMap<String, Tensor> = params
        .names
        .iter()
        .zip(&params.vars)
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let model_path = tmp.join("model.safetensors");
    candle_core::safetensors::save(&weights, &model_path).ctx("writing model.safetensors")?;
    let opt_path = tmp.join("optimizer.safetensors");
    candle_core::safetensors::save(&optimizer.state_tensors(params)?, &opt_path)
        .ctx("writing optimizer.safetensors")?;
    fsync_file(&model_path)?;
    fsync_file(&opt_path)?;
    let state_json =
        serde_json::to_vec_pretty(state).map_err(|e| TrainError::Invalid(e.to_string()))?;
    write_atomic(tmp.join("state.json"), &state_json)?;
    write_atomic(tmp.join("config.toml"), config_toml.as_bytes())?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    if let Ok(d) = std::fs::File::open(&root) {
        let _ = d.sync_all();
    }
    write_atomic(root.join(LATEST), name.as_bytes())?;
    prune(&root, keep.max(1))?;
    Ok(final_dir)
}

/// Rank 0 writes the checkpoint; every rank waits until it is complete, so a rank that dies
/// right after can only ever resume from a whole checkpoint.
pub fn save_synced(
    replicas: &mut Replicas,
    out: &Path,
    params: &Params,
    optimizer: &AdamW,
    state: &TrainState,
    config_toml: &str,
    keep: usize,
) -> Result<Option<PathBuf>> {
    let path = if replicas.rank() == 0 {
        Some(save(out, params, optimizer, state, config_toml, keep)?)
    } else {
        None
    };
    replicas.barrier()?;
    Ok(path)
}

/// Remove all but the newest `keep` complete checkpoints (and stale temporary folders).
fn prune(root: &Path, keep: usize) -> Result<()> {
    let mut complete = Vec::new();
    for e in std::fs::read_dir(root)
        .map_err(|e| TrainError::io(root, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") {
            complete.push(name);
        } else if name.starts_with(".step-") && !name.ends_with(&format!(".{}", std::process::id()))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    complete.sort();
    let drop = complete.len().saturating_sub(keep);
    for name in &complete[..drop] {
        let _ = std::fs::remove_dir_all(root.join(name));
    }
    Ok(())
}

/// The checkpoint `latest` points at, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    let root = checkpoints_dir(out);
    let pointer = root.join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(|e| TrainError::io(&pointer, e))?;
    let dir = root.join(name.trim());
    if !dir.join("state.json").exists() {
        return Err(TrainError::Checkpoint {
            path: dir,
            reason: format!("named by {} but incomplete", pointer.display()),
        });
    }
    Ok(Some(dir))
}

/// Load a checkpoint into `params` and `optimizer`; refuses one whose config hash or parameter
/// set differs.
pub fn restore(
    dir: &Path,
    params: &Params,
    optimizer: &mut AdamW,
    config_hash: &str,
) -> Result<TrainState> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainState =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("state.json: {e}")))?;
    if state.config_hash != config_hash {
        return Err(bad(format!(
            "written by a run with another config (hash {} vs {config_hash}); use a new train.out",
            &state.config_hash[..12.min(state.config_hash.len())]
        )));
    }
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .map_err(|e| bad(format!("model.safetensors: {e}")))?;
    if weights.len() != params.len() {
        return Err(bad(format!(
            "{} tensors, the model has {} parameters",
            weights.len(),
            params.len()
        )));
    }
    for (name, var) in params.names.iter().zip(&params.vars) {
        let t = weights.get(name).ok_or_else(|| {
            bad(format!(
                "no tensor `{name}` (a checkpoint of another model?)"
            ))
        })?;
        if t.shape() != var.shape() {
            return Err(bad(format!(
                "`{name}` has shape {:?}, the model {:?} (another model or vocabulary?)",
                t.shape().dims(),
                var.shape().dims()
            )));
        }
        var.set(t).ctx("restoring a parameter")?;
    }
    let opt = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)
        .map_err(|e| bad(format!("optimizer.safetensors: {e}")))?;
    optimizer.load_state(params, &opt, state.step)?;
    Ok(state)
}
