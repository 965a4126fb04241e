//! Checkpoints: `OUT/checkpoints/step-00000123/` holding `model.safetensors` (parameters by
//! name), `optimizer.safetensors` (AdamW moments; with ZeRO-1 one `optimizer-rank{R}.safetensors`
//! per rank instead), `state.json` (step, epoch, sampler position, config hash) and
//! `config.toml`. A checkpoint is written under a temporary folder name, every
//! file fsynced, then renamed; the `latest` pointer is rewritten (atomically) last, so a crash
//! at any moment leaves the previous checkpoint loadable.
//!
//! `state.json` also holds the SHA-256 of every tensor file. Resuming verifies them before any
//! weight is loaded: a damaged checkpoint (truncated, a flipped bit, a missing file) is named,
//! skipped, and the newest intact one is loaded instead; damaged weights are never loaded.
//! Nothing in a checkpoint names its folder, so a run folder moved or copied elsewhere resumes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use uqa_data::atomic::write_atomic;

use crate::config::TrainConfig;
use crate::engine::Optimization;
use crate::error::{CandleContext, Result, TrainError};
use crate::optim::{AdamW, Params};
use crate::parallel::Replicas;
pub use uqa_models::checkpoint::{LATEST, TrainState, latest, newest_intact};
use uqa_models::checkpoint::{StateFile, checkpoints_dir, sha256_file};

fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

/// The file holding `rank`'s optimiser state when it is sharded (ZeRO-1, `train.zero = 1`).
pub fn shard_file(rank: usize) -> String {
    format!("optimizer-rank{rank}.safetensors")
}

/// The optimiser's file in a checkpoint: the whole state, or this rank's shard.
fn optimizer_file(optimizer: &AdamW) -> String {
    match optimizer.shard() {
        Some(s) => shard_file(s.rank),
        None => "optimizer.safetensors".into(),
    }
}

/// Write the optimiser state (whole, or this rank's shard) into `dir`, fsynced.
fn write_optimizer(dir: &Path, params: &Params, optimizer: &AdamW) -> Result<()> {
    let file = optimizer_file(optimizer);
    let path = dir.join(&file);
    candle_core::safetensors::save(&optimizer.state_tensors(params)?, &path)
        .ctx(&format!("writing {file}"))?;
    fsync_file(&path)
}

/// A fresh temporary folder for checkpoint `name` (a stale one from a crash is removed).
fn fresh_dir(tmp: &Path) -> Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| TrainError::io(tmp, e))?;
    }
    std::fs::create_dir_all(tmp).map_err(|e| TrainError::io(tmp, e))
}

/// Write a checkpoint and point `latest` at it; keep the newest `keep` checkpoints. One writer:
/// a single process, or rank 0 of an unsharded run.
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
    let tmp = root.join(format!(".{name}.tmp.{}", std::process::id()));
    fresh_dir(&tmp)?;
    write_optimizer(&tmp, params, optimizer)?;
    finish(&root, &name, &tmp, params, state, config_toml, keep)
}

/// Fill `tmp` with the model, state and config, rename it into place, point `latest` at it
/// and prune old checkpoints.
fn finish(
    root: &Path,
    name: &str,
    tmp: &Path,
    params: &Params,
    state: &TrainState,
    config_toml: &str,
    keep: usize,
) -> Result<PathBuf> {
    let final_dir = root.join(name);
    let weights: HashMap<String, Tensor> = params
        .names
        .iter()
        .zip(&params.vars)
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let model_path = tmp.join("model.safetensors");
    candle_core::safetensors::save(&weights, &model_path).ctx("writing model.safetensors")?;
    fsync_file(&model_path)?;
    // Every tensor file of the folder: the model, and the optimiser state or every rank's shard.
    let mut sha256 = BTreeMap::new();
    for entry in std::fs::read_dir(tmp).map_err(|e| TrainError::io(tmp, e))? {
        let path = entry.map_err(|e| TrainError::io(tmp, e))?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".safetensors") {
            sha256.insert(name, sha256_file(&path)?);
        }
    }
    let file = StateFile {
        state: state.clone(),
        sha256,
    };
    let state_json =
        serde_json::to_vec_pretty(&file).map_err(|e| TrainError::Invalid(e.to_string()))?;
    write_atomic(tmp.join("state.json"), &state_json)?;
    write_atomic(tmp.join("config.toml"), config_toml.as_bytes())?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    write_atomic(root.join(LATEST), name.as_bytes())?;
    prune(root, keep.max(1))?;
    Ok(final_dir)
}

/// Where a run writes its checkpoints: the output folder, the resolved config saved in each,
/// how often (`train.checkpoint_every` steps, 0: only at epoch ends) and how many to keep.
pub struct Checkpointer {
    pub out: PathBuf,
    pub config_toml: String,
    pub every: u64,
    pub keep: usize,
}

impl Checkpointer {
    pub fn new(train: &TrainConfig, config_toml: &str) -> Self {
        Self {
            out: train.out.clone(),
            config_toml: config_toml.to_string(),
            every: train.checkpoint_every,
            keep: train.keep_checkpoints,
        }
    }

    /// Whether the step just completed is due a checkpoint.
    pub fn due(&self, step: u64) -> bool {
        self.every > 0 && step.is_multiple_of(self.every)
    }

    /// [`save_synced`] with this run's folder, config and retention.
    pub fn save(
        &self,
        replicas: &mut Replicas,
        opt: &Optimization,
        state: &TrainState,
    ) -> Result<Option<PathBuf>> {
        save_synced(
            replicas,
            &self.out,
            &opt.params,
            &opt.optimizer,
            state,
            &self.config_toml,
            self.keep,
        )
    }
}

/// Resume from the newest intact checkpoint in `out` (parameters and optimiser state
/// restored; see [`newest_intact`]), or start at step 0. A checkpoint of another config or
/// world size is refused, not skipped: that is a mistake in the command, not damage.
/// Returns the state and the checkpoint resumed from.
pub fn resume_or_start(
    out: &Path,
    params: &Params,
    optimizer: &mut AdamW,
    config_hash: &str,
    world_size: usize,
) -> Result<(TrainState, Option<PathBuf>)> {
    let Some((dir, state)) = newest_intact(out)? else {
        let fresh = TrainState {
            step: 0,
            epoch: 0,
            sampler_position: 0,
            config_hash: config_hash.to_string(),
            world_size,
        };
        return Ok((fresh, None));
    };
    // The config first: its error names the likelier mistake (e.g. `train.zero`).
    let s = restore(&dir, params, optimizer, config_hash)?;
    if state.world_size != world_size {
        return Err(TrainError::Checkpoint {
            path: dir,
            reason: format!(
                "written by {} ranks, this run has {world_size}: the sampler positions differ",
                state.world_size
            ),
        });
    }
    Ok((s, Some(dir)))
}

/// Write a checkpoint from every rank and return once it is complete, so a rank that dies
/// right after can only ever resume from a whole checkpoint.
///
/// Unsharded, rank 0 writes everything. With ZeRO-1 each rank's moments exist only on that
/// rank, so all ranks write into one temporary folder that every rank can name (no process
/// id in it): rank 0 creates it, each rank writes its `optimizer-rank{R}.safetensors`, and
/// only after a barrier does rank 0 add the model, state and config, rename the folder and
/// move `latest`: the rename still publishes every shard at once.
pub fn save_synced(
    replicas: &mut Replicas,
    out: &Path,
    params: &Params,
    optimizer: &AdamW,
    state: &TrainState,
    config_toml: &str,
    keep: usize,
) -> Result<Option<PathBuf>> {
    let lead = replicas.rank() == 0;
    let Some(shard) = optimizer.shard() else {
        let path = if lead {
            Some(save(out, params, optimizer, state, config_toml, keep)?)
        } else {
            None
        };
        replicas.barrier()?;
        return Ok(path);
    };
    let root = checkpoints_dir(out);
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!(".{name}.tmp.shards"));
    if lead {
        std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        fresh_dir(&tmp)?;
    }
    replicas.barrier()?;
    write_optimizer(&tmp, params, optimizer)?;
    replicas.barrier()?;
    let path = if lead {
        for r in 0..shard.world {
            let p = tmp.join(shard_file(r));
            if !p.exists() {
                return Err(TrainError::Checkpoint {
                    path: p,
                    reason: format!("rank {r} did not write its optimizer shard"),
                });
            }
        }
        Some(finish(
            &root,
            &name,
            &tmp,
            params,
            state,
            config_toml,
            keep,
        )?)
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
            // Stale: prune runs after this checkpoint's rename, while other ranks wait, so no
            // rank is writing into a `.tmp.shards` folder now.
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
    let state = serde_json::from_slice::<StateFile>(&bytes)
        .map_err(|e| bad(format!("state.json: {e}")))?
        .state;
    if state.config_hash != config_hash {
        // `train.zero` is part of the hash; name it when that is the likely difference.
        let written_sharded = dir.join(shard_file(0)).exists();
        let hint = if written_sharded != optimizer.shard().is_some() {
            format!(
                " (it was written with train.zero = {}, this run has {})",
                u8::from(written_sharded),
                u8::from(!written_sharded)
            )
        } else {
            String::new()
        };
        return Err(bad(format!(
            "written by a run with another config (hash {} vs {config_hash}){hint}; use a new train.out",
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
        // Read on the host, restored onto the parameter's own device.
        var.set(&t.to_device(var.device()).ctx("restoring a parameter")?)
            .ctx("restoring a parameter")?;
    }
    let file = optimizer_file(optimizer);
    let path = dir.join(&file);
    if let Some(shard) = optimizer.shard()
        && state.world_size != shard.world
    {
        return Err(TrainError::Checkpoint {
            path,
            reason: format!(
                "ZeRO-1 shards written by {} ranks, this run has {}: the optimiser state is partitioned by world size",
                state.world_size, shard.world
            ),
        });
    }
    // Every rank checks every shard, not just its own: then all ranks stop with the same
    // error naming the missing file, instead of the others failing later in a collective
    // with "rank R closed the connection".
    if let Some(shard) = optimizer.shard() {
        for r in 0..shard.world {
            let p = dir.join(shard_file(r));
            if !p.exists() {
                return Err(TrainError::Checkpoint {
                    path: p,
                    reason: format!("missing: rank {r}'s optimiser shard (train.zero = 1)"),
                });
            }
        }
    }
    if !path.exists() {
        return Err(TrainError::Checkpoint {
            path,
            reason: "missing".into(),
        });
    }
    let opt = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
        TrainError::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    optimizer
        .load_state(params, &opt, state.step)
        .map_err(|e| TrainError::Checkpoint {
            path,
            reason: e.to_string(),
        })?;
    Ok(state)
}
