//! The GPU checks: what only a CUDA device can verify. scripts/gpu-check.sh runs this binary
//! (from scripts/gpu-bundle.sh) on a GPU machine with `UQA_REQUIRE=gpu`, where a skip fails.
//!
//! - every encoder's pre-training loss and parameter gradients on cuda:0 against the CPU's;
//! - the LLM's logits on cuda:0 against the CPU's;
//! - a tiny pre-training run (`uqa pretrain --device cuda`) against the same run on the CPU;
//! - alignment and evaluation of the tiny LLM on cuda:0.
//!
//! Without a CUDA device (a CPU build, or the `cuda` build on a machine without a GPU) every
//! test records a `gpu` skip saying why, and passes.
//!
//! The bundle runs away from the checkout that built it, so the `uqa` executable and the
//! repository (its test configs) come from `UQA_EXE` and `UQA_REPO` when set.

#[path = "../models/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;
use uqa_models::llm::{CausalLm, LlmConfig, Mode, Padding, TokenMask};
use uqa_models::{PretrainConfig, PretrainModel, seeded_var_builder};
use uqa_testkit::{Category, skip};

/// cuda:0, or `None` after recording why there is none.
fn cuda(test: &str) -> Option<Device> {
    match uqa_models::device::open(Some(0)) {
        Ok(d) => Some(d),
        Err(e) => {
            skip(Category::Gpu, test, format!("no CUDA device: {e}"));
            None
        }
    }
}

fn exe() -> PathBuf {
    std::env::var_os("UQA_EXE")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_uqa")), PathBuf::from)
}

fn repo() -> PathBuf {
    std::env::var_os("UQA_REPO")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn uqa(args: &[&str]) -> Output {
    let o = Command::new(exe())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("uqa runs");
    assert!(
        o.status.success(),
        "uqa {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Largest absolute difference of two tensors, relative to the larger magnitude of `a` (or 1).
fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_device(&Device::Cpu).unwrap().flatten_all().unwrap();
    let b = b.to_device(&Device::Cpu).unwrap().flatten_all().unwrap();
    let a: Vec<f32> = a.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

const ENCODERS: [&str; 5] = [
    r#"{"kind": "trmpp", "layers": 2, "width": 16, "heads": 2, "dropout": 0.0}"#,
    r#"{"kind": "sasrec", "layers": 2, "width": 16, "heads": 2, "ffn": 32, "dropout": 0.0, "max_len": 8}"#,
    r#"{"kind": "hstu", "layers": 2, "width": 16, "heads": 2, "linear_dim": 8, "attention_dim": 8, "max_len": 8}"#,
    r#"{"kind": "gru4rec", "layers": 2, "width": 16, "hidden": 16}"#,
    r#"{"kind": "mamba4rec", "layers": 2, "width": 16}"#,
];

/// One model per device from the same seed: the weights are drawn on the host, so they are
/// the same on both.
fn pretrain_model(encoder: &str, device: &Device) -> (PretrainModel, VarMap) {
    let json = format!(
        r#"{{"embedder": {{"variant": "full", "item_dim": 8, "side_dim": 4}},
            "encoder": {encoder}, "objective": {{"kind": "sl", "chunk": 5}}}}"#
    );
    let cfg: PretrainConfig = serde_json::from_str(&json).unwrap();
    let vm = VarMap::new();
    let model = PretrainModel::new(
        &cfg,
        &common::VOCAB,
        seeded_var_builder(&vm, 3, DType::F32, device),
    )
    .unwrap();
    (model, vm)
}

#[test]
fn every_encoder_matches_the_cpu_on_cuda() {
    let Some(gpu) = cuda("every_encoder_matches_the_cpu_on_cuda") else {
        return;
    };
    let batch = common::batch(&[6, 4, 5], 6, 12);
    for encoder in ENCODERS {
        let (cpu_model, cpu_vars) = pretrain_model(encoder, &Device::Cpu);
        let (gpu_model, gpu_vars) = pretrain_model(encoder, &gpu);
        let cpu_loss = cpu_model.loss(&batch, false, 0).unwrap().mean().unwrap();
        let gpu_loss = gpu_model.loss(&batch, false, 0).unwrap().mean().unwrap();
        let d = relative_difference(&cpu_loss, &gpu_loss);
        assert!(d < 1e-4, "{encoder}: loss differs by {d} (relative)");
        let cpu_grads = cpu_loss.backward().unwrap();
        let gpu_grads = gpu_loss.backward().unwrap();
        let gpu_named: std::collections::BTreeMap<String, candle_core::Var> =
            common::named_vars(&gpu_vars).into_iter().collect();
        for (name, var) in common::named_vars(&cpu_vars) {
            let other = &gpu_named[&name];
            match (
                cpu_grads.get(var.as_tensor()),
                gpu_grads.get(other.as_tensor()),
            ) {
                (Some(a), Some(b)) => {
                    let d = relative_difference(a, b);
                    assert!(d < 1e-3, "{encoder}: gradient of `{name}` differs by {d}");
                }
                (None, None) => {}
                (a, _) => panic!(
                    "{encoder}: `{name}` has a gradient on {} only",
                    if a.is_some() { "the CPU" } else { "CUDA" }
                ),
            }
        }
    }
}

#[test]
fn llm_logits_match_the_cpu_on_cuda() {
    let Some(gpu) = cuda("llm_logits_match_the_cpu_on_cuda") else {
        return;
    };
    let cfg = LlmConfig::tiny(64);
    let logits = |device: &Device| {
        let vm = VarMap::new();
        let lm = CausalLm::new(&cfg, seeded_var_builder(&vm, 5, DType::F32, device)).unwrap();
        let ids = Tensor::new(&[[1u32, 7, 9, 30, 2, 11], [4, 4, 8, 1, 0, 0]], device).unwrap();
        let mask = TokenMask::from_lengths(&[6, 4], Padding::Right);
        let x = lm.embed_tokens(&ids).unwrap();
        let h = lm.forward(&x, &mask, None, Mode::Infer).unwrap();
        candle_nn::ops::log_softmax(&lm.logits(&h).unwrap(), D::Minus1).unwrap()
    };
    let d = relative_difference(&logits(&Device::Cpu), &logits(&gpu));
    assert!(d < 1e-4, "log-probabilities differ by {d} (relative)");
}

/// The losses of a run's metrics.jsonl, step by step.
fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

/// The tiny dataset, its questions, and a 6-step pre-training on `device` (cpu or cuda).
fn pretrain_tiny(dir: &Path, device: &str) -> PathBuf {
    let data = dir.join("tiny");
    if !data.exists() {
        uqa(&[
            "data",
            "synth",
            "--preset",
            "tiny",
            "--tokenizer",
            "builtin",
            "--out",
            &s(&data),
        ]);
        uqa(&["qa-gen", "--data", &s(&data), "--out", &s(&dir.join("qa"))]);
    }
    let out = dir.join(format!("pretrain-{device}"));
    let config = repo().join("configs/tests/tiny_sasrec.toml");
    uqa(&[
        "pretrain",
        "--config",
        &s(&config),
        "--device",
        device,
        "--set",
        &format!("data.dir={:?}", s(&data)),
        "--set",
        &format!("train.out={:?}", s(&out)),
        "--set",
        "train.max_steps=6",
        "--set",
        "train.log_every=1",
        "--set",
        "metrics.enabled=false",
    ]);
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn pretraining_on_cuda_follows_the_cpu_run() {
    if cuda("pretraining_on_cuda_follows_the_cpu_run").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cpu = losses(&pretrain_tiny(tmp.path(), "cpu"));
    let gpu_out = pretrain_tiny(tmp.path(), "cuda");
    let resolved = std::fs::read_to_string(gpu_out.join("resolved.toml")).unwrap();
    assert!(resolved.contains("cuda:0"), "{resolved}");
    let gpu = losses(&gpu_out);
    assert_eq!(cpu.len(), gpu.len(), "{cpu:?} {gpu:?}");
    for (step, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
        // Summation order differs between the devices; six AdamW steps keep it small.
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "step {step}: cpu {a}, cuda {b}"
        );
    }
}

#[test]
fn alignment_and_evaluation_run_on_cuda() {
    if cuda("alignment_and_evaluation_run_on_cuda").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let encoder = pretrain_tiny(tmp.path(), "cuda");
    let out = tmp.path().join("align");
    let config = repo().join("configs/tests/tiny_align.toml");
    uqa(&[
        "align",
        "--config",
        &s(&config),
        "--device",
        "cuda",
        "--set",
        &format!("data.dataset={:?}", s(&tmp.path().join("tiny"))),
        "--set",
        &format!("data.qa_dir={:?}", s(&tmp.path().join("qa"))),
        "--set",
        &format!("prompt.encoder={:?}", s(&encoder)),
        "--set",
        &format!("train.out={:?}", s(&out)),
        "--set",
        "train.max_steps=6",
        "--set",
        "metrics.enabled=false",
    ]);
    let l = losses(&out);
    assert!(!l.is_empty() && l.iter().all(|x| x.is_finite()), "{l:?}");
    let eval = tmp.path().join("eval");
    let o = uqa(&[
        "eval",
        "--run",
        &s(&out),
        "--device",
        "cuda",
        "--out",
        &s(&eval),
        "--limit",
        "20",
        "--max-new-tokens",
        "6",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    let predictions = std::fs::read_to_string(eval.join("predictions.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 20, "{text}");
}
