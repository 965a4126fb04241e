//! Reading a run's checkpoints (`OUT/checkpoints/step-00000123/`, written by `uqa_trainer`'s
//! checkpointer): the layout, the state beside the weights, and the newest intact checkpoint.
//! Training resumes from it and evaluation loads weights from it, so both verify alike: every
//! tensor file must match the SHA-256 `state.json` records; damaged checkpoints are named,
//! skipped, and never loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The file in `checkpoints/` naming the newest checkpoint folder.
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

/// `state.json`: the train state and the SHA-256 of each tensor file beside it (absent in
/// checkpoints of earlier versions, which are then loaded unverified).
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    #[serde(flatten)]
    pub state: TrainState,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

/// Hex SHA-256 of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).map_err(|e| ModelError::model_file(path, e.to_string()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| ModelError::model_file(path, e.to_string()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `OUT/checkpoints`.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest intact checkpoint of `out` and its state: `latest` first, then the others from
/// the newest down; each damaged one is reported on stderr and skipped. `None` when `out` has
/// no checkpoint; an error when it has some but none is intact.
pub fn newest_intact(out: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    let candidates = candidates(out)?;
    if candidates.is_empty() {
        return Ok(None);
    }
    let mut damaged = Vec::new();
    for dir in candidates {
        match verify(&dir) {
            Ok(state) => {
                if !damaged.is_empty() {
                    eprintln!("using {}, the newest intact checkpoint", dir.display());
                }
                return Ok(Some((dir, state)));
            }
            Err(reason) => {
                eprintln!(
                    "warning: checkpoint {} is damaged ({reason}); trying an older one",
                    dir.display()
                );
                damaged.push(format!("{} ({reason})", dir.display()));
            }
        }
    }
    Err(ModelError::Checkpoint {
        path: checkpoints_dir(out),
        reason: format!(
            "no intact checkpoint: {}; remove the folder to start over",
            damaged.join(", ")
        ),
    })
}

/// The checkpoints of `out` in the order to try them: the one `latest` names, then every
/// other complete-looking `step-*` folder from the newest down.
fn candidates(out: &Path) -> Result<Vec<PathBuf>> {
    let root = checkpoints_dir(out);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| ModelError::model_file(&root, e.to_string()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort_by(|a, b| b.cmp(a));
    if let Ok(latest) = std::fs::read_to_string(root.join(LATEST))
        && let Some(i) = names.iter().position(|n| n == latest.trim())
    {
        let named = names.remove(i);
        names.insert(0, named);
    }
    Ok(names.into_iter().map(|n| root.join(n)).collect())
}

/// The state of checkpoint `dir` if every file it lists is present with its recorded SHA-256,
/// or why not. Reads every tensor file once; loads nothing.
fn verify(dir: &Path) -> std::result::Result<TrainState, String> {
    let bytes = std::fs::read(dir.join("state.json")).map_err(|e| format!("state.json: {e}"))?;
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| format!("state.json: {e}"))?;
    if !dir.join("model.safetensors").exists() {
        return Err("model.safetensors is missing".into());
    }
    for (name, expected) in &file.sha256 {
        let actual = sha256_file(&dir.join(name)).map_err(|e| e.to_string())?;
        if &actual != expected {
            return Err(format!(
                "{name}: SHA-256 {} differs from the recorded {}",
                &actual[..12],
                &expected[..12.min(expected.len())]
            ));
        }
    }
    Ok(file.state)
}

/// The checkpoint to load from a finished (or running) run: its newest intact one, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(newest_intact(out)?.map(|(dir, _)| dir))
}
