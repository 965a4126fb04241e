//! The pre-training job config: strict TOML (unknown keys are errors naming the key), command
//! line overrides (`--set optim.lr=1e-3`), and the resolved form saved beside every output.
//! Each component owns its section: `[data]`, `[model]` (the models crate's `PretrainConfig`),
//! `[optim]`, `[train]`, `[eval]`, `[metrics]` (the Prometheus endpoint, `telemetry`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uqa_comm::DeviceRequest;
use uqa_models::PretrainConfig;

use crate::error::{Result, TrainError};
use crate::observe::MetricsConfig;
use crate::optim::{AdamWConfig, Schedule};

/// The `[runtime]` section: the device (`auto`, `cpu`, `cuda`); `--device` sets it too. Not
/// part of the config hash: a run may resume on another device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default = "auto")]
    pub device: String,
}

fn auto() -> String {
    "auto".into()
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { device: auto() }
    }
}

impl RuntimeConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The device asked for; an unknown name is an error naming `runtime.device` and the file.
    pub fn device(&self, path: &Path) -> Result<DeviceRequest> {
        self.request()
            .map_err(|e| TrainError::config(path, "runtime.device", e.to_string()))
    }

    /// The device asked for, for a job already validated against its file.
    pub fn request(&self) -> Result<DeviceRequest> {
        self.device.parse().map_err(TrainError::Invalid)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset folder (a relative path is relative to the working directory, like every path
    /// on the command line).
    pub dir: PathBuf,
    /// Positions kept per sequence (the last ones).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_max_len() -> usize {
    512
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    #[serde(flatten)]
    pub adamw: AdamWConfig,
    #[serde(default)]
    pub schedule: Schedule,
    /// Clip gradients to this global L2 norm; 0 turns clipping off (the reference's default).
    #[serde(default)]
    pub clip_norm: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: u64,
    /// Sequences per optimiser step, over all ranks and micro-steps.
    pub batch_size: usize,
    /// Micro-steps per optimiser step (gradient accumulation).
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default)]
    pub seed: u64,
    /// Output folder: resolved config, metrics.jsonl, checkpoints/.
    pub out: PathBuf,
    /// Checkpoint every this many steps (0: at the end of each epoch only).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are removed after a newer one is complete).
    #[serde(default = "two")]
    pub keep_checkpoints: usize,
    /// Log a metrics line every this many steps.
    #[serde(default = "ten")]
    pub log_every: u64,
    /// Stop after this many optimiser steps (0: run all epochs); for tests and benchmarks.
    #[serde(default)]
    pub max_steps: u64,
    /// Gradient all-reduce bucket size cap, in MB (PyTorch DDP's default: 25).
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: f64,
    /// Deadline of every collective, in seconds: a silent rank fails the run after this long.
    #[serde(default = "default_collective_timeout")]
    pub collective_timeout_s: u64,
    /// ZeRO stage: 0 (off) or 1 (AdamW state sharded over ranks, PyTorch's
    /// `ZeroRedundancyOptimizer`). Part of the config hash, so a checkpoint is only resumed
    /// with the setting it was written with. Not serialised when 0: hashes of existing runs
    /// stay the same.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zero: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

fn default_bucket_mb() -> f64 {
    25.0
}
fn default_collective_timeout() -> u64 {
    300
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn ten() -> u64 {
    10
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many epochs (0: only at the end).
    #[serde(default = "one_u64")]
    pub every_epochs: u64,
    #[serde(default = "default_ks")]
    pub ks: Vec<usize>,
    /// Negatives per user for the sampled protocol (SASRec: 100).
    #[serde(default = "hundred")]
    pub sampled_negatives: usize,
    /// Evaluate at most this many users (0: all).
    #[serde(default)]
    pub max_users: usize,
    /// Users per scoring batch.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

fn one_u64() -> u64 {
    1
}
fn hundred() -> usize {
    100
}
fn default_ks() -> Vec<usize> {
    vec![1, 5, 10, 20, 50, 100]
}
fn default_eval_batch() -> usize {
    256
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            ks: default_ks(),
            sampled_negatives: 100,
            max_users: 0,
            batch_size: default_eval_batch(),
        }
    }
}

/// The whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainJob {
    pub data: DataConfig,
    pub model: PretrainConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// Where each rank serves Prometheus metrics; absent: loopback, default port.
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_default")]
    pub runtime: RuntimeConfig,
}

impl PretrainJob {
    /// Read `path`, apply `overrides` (`a.b.c=value`, value parsed as TOML, else a string),
    /// and validate.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let job: PretrainJob = load_toml(path, overrides)?;
        job.validate(path)?;
        Ok(job)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, reason: &str| Err(TrainError::config(path, key, reason));
        self.train.validate(path)?;
        if self.data.max_len < 2 {
            return bad(
                "data.max_len",
                "must be at least 2 (an input and its next item)",
            );
        }
        if self.eval.ks.is_empty() || self.eval.ks.contains(&0) {
            return bad("eval.ks", "must be a non-empty list of positive cut-offs");
        }
        self.optim
            .adamw
            .validate()
            .map_err(|r| TrainError::config(path, "optim", r))?;
        self.model.validate()?;
        self.runtime.device(path)?;
        if let Some(positions) = self.model.encoder.max_positions()
            && self.data.max_len > positions
        {
            return Err(TrainError::config(
                path,
                "data.max_len",
                format!(
                    "{} exceeds model.encoder.max_len = {positions}, the positions the encoder has",
                    self.data.max_len
                ),
            ));
        }
        Ok(())
    }

    /// The config as TOML, as saved beside outputs and hashed into checkpoints.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of the resolved config, minus what may change on resume without changing the
    /// run (`train.max_steps`, `train.epochs`, timeouts, the `[metrics]` endpoint).
    pub fn hash(&self) -> String {
        let mut c = self.clone();
        c.train = c.train.without_run_limits();
        // The default endpoint is not serialised: hashes equal those from before `[metrics]`.
        c.metrics = MetricsConfig::default();
        c.runtime = RuntimeConfig::default();
        sha256_hex(&c.to_toml())
    }
}

/// Hex SHA-256 of a resolved config, the identity checkpoints carry.
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TrainConfig {
    /// The settings that may change on resume without changing the run (step limits,
    /// timeouts, and the output folder: a run folder moved or copied elsewhere resumes) reset,
    /// for config hashes.
    pub fn without_run_limits(&self) -> TrainConfig {
        TrainConfig {
            max_steps: 0,
            epochs: 0,
            collective_timeout_s: 0,
            out: PathBuf::new(),
            ..self.clone()
        }
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, reason: &str| Err(TrainError::config(path, key, reason));
        if self.batch_size == 0 {
            return bad("train.batch_size", "must be positive");
        }
        if self.grad_accum == 0 || !self.batch_size.is_multiple_of(self.grad_accum) {
            return bad(
                "train.grad_accum",
                "must be positive and divide train.batch_size",
            );
        }
        if self.bucket_mb.is_nan() || self.bucket_mb <= 0.0 {
            return bad("train.bucket_mb", "must be positive");
        }
        if self.zero > 1 {
            return bad(
                "train.zero",
                "must be 0 (off) or 1 (sharded optimiser state, ZeRO-1)",
            );
        }
        Ok(())
    }
}

/// Read a strict TOML job file, apply `overrides` (`a.b.c=value`, value parsed as TOML, else a
/// string) and deserialise it; errors name the file and the key.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut value: toml::Table = toml::from_str(&text)
        .map_err(|e| TrainError::config(path, "?", e.message().to_string()))?;
    for o in overrides {
        apply_override(&mut value, o).map_err(|reason| TrainError::config(path, o, reason))?;
    }
    T::deserialize(toml::Value::Table(value))
        .map_err(|e| TrainError::config(path, &error_key(&e.to_string()), e.to_string()))
}

/// Pull the key out of serde's "unknown field `x`" / "missing field `x`" messages.
fn error_key(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map_or_else(|| "?".to_string(), str::to_string)
}

fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE, e.g. optim.lr=1e-3".to_string())?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut cur = table;
    for k in parents {
        cur = cur
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` is not a table"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
[data]
dir = "data"
max_len = 50

[model.encoder]
kind = "sasrec"
width = 32
layers = 1
heads = 2
max_len = 50

[optim]
lr = 1e-3

[train]
epochs = 2
batch_size = 8
out = "out"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn loads_applies_overrides_and_round_trips() {
        let (_d, p) = write(JOB);
        let job = PretrainJob::load(&p, &["optim.lr=0.01".into(), "train.seed=7".into()]).unwrap();
        assert_eq!(job.optim.adamw.lr, 0.01);
        assert_eq!(job.train.seed, 7);
        assert_eq!(job.eval.sampled_negatives, 100);
        let (_d2, p2) = write(&job.to_toml());
        assert_eq!(PretrainJob::load(&p2, &[]).unwrap(), job);
        let mut other = job.clone();
        other.train.max_steps = 5;
        assert_eq!(other.hash(), job.hash());
        other.metrics.base_port = Some(9600);
        other.metrics.enabled = false;
        assert_eq!(other.hash(), job.hash());
        other.optim.adamw.lr = 0.5;
        assert_ne!(other.hash(), job.hash());
        // train.zero: absent means 0 and leaves the TOML (and so old hashes) unchanged; 1
        // changes the hash, so a sharded checkpoint is never resumed unsharded.
        assert!(!job.to_toml().contains("zero"));
        let sharded = PretrainJob::load(&p, &["train.zero=1".into()]).unwrap();
        assert_eq!(sharded.train.zero, 1);
        assert_ne!(sharded.hash(), job.hash());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let (_d, p) = write(&JOB.replace("epochs = 2", "epochs = 2\nepochz = 3"));
        let err = PretrainJob::load(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("job.toml") && err.contains("epochz"), "{err}");
        let (_d, p) = write(JOB);
        let err = PretrainJob::load(&p, &["train.grad_accum=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.grad_accum"), "{err}");
        let err = PretrainJob::load(&p, &["train.zero=2".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.zero"), "{err}");
        let err = PretrainJob::load(&p, &["model.encoder.kind=\"transformer\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("transformer"), "{err}");
    }
}
