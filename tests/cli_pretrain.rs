//! `uqa pretrain` end to end on the tiny synthetic dataset: the loss falls and the encoder beats
//! chance; a run stopped and resumed ends with the same weights, bit for bit, as an
//! uninterrupted one (dropout included); bad configs, foreign checkpoints and diverging losses are clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa")
}

fn ok(args: &[&str]) -> String {
    let out = uqa(args);
    assert!(
        out.status.success(),
        "uqa {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/tests/tiny_sasrec.toml")
        .display()
        .to_string()
}

fn tiny_data(dir: &Path) -> PathBuf {
    let ds = dir.join("tiny");
    ok(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--out",
        ds.to_str().unwrap(),
    ]);
    ds
}

fn pretrain(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let cfg = config();
    let d = format!("data.dir=\"{}\"", data.display());
    let o = format!("train.out=\"{}\"", out.display());
    let mut args = vec!["pretrain", "--config", &cfg, "--set", &d, "--set", &o];
    for e in extra {
        args.push("--set");
        args.push(e);
    }
    uqa(&args)
}

fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn final_weights(out: &Path) -> Vec<u8> {
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    std::fs::read(
        out.join("checkpoints")
            .join(latest.trim())
            .join("model.safetensors"),
    )
    .unwrap()
}

#[test]
fn loss_falls_and_the_encoder_beats_chance() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let out = dir.path().join("run");
    let o = pretrain(&data, &out, &["train.epochs=3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = metrics(&out);
    let losses: Vec<f64> = m.iter().filter_map(|v| v["loss"].as_f64()).collect();
    // ln(1129 items) = 7.03 at the start.
    assert!((losses[0] - 7.03).abs() < 0.3, "{losses:?}");
    assert!(losses.last().unwrap() < &(losses[0] - 0.5), "{losses:?}");
    let eval = m.iter().rev().find(|v| v.get("eval").is_some()).unwrap();
    // Chance for HR@10 over 100 sampled negatives is 10/101.
    let hr10 = eval["eval"]["sampled"]["10"]["hr"].as_f64().unwrap();
    assert!(hr10 > 0.3, "HR@10 {hr10}");
    assert!(out.join("config.toml").exists());
    // What the run resolved at start: the world, the batch split, absolute paths.
    let resolved: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("resolved.toml")).unwrap()).unwrap();
    let r = &resolved["resolved"];
    assert_eq!(r["world_size"].as_integer(), Some(1));
    assert_eq!(r["device"].as_str(), Some("cpu"));
    assert_eq!(r["micro_batch"].as_integer(), Some(32));
    assert!(r["total_steps"].as_integer().unwrap() > 0);
    let data_dir = resolved["paths"]["data.dir"].as_str().unwrap();
    assert!(Path::new(data_dir).is_absolute(), "{data_dir}");
}

#[test]
fn resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // With dropout: its masks are drawn from the step's seed, so a resumed step repeats them.
    let dropout = "model.encoder.dropout=0.2";
    let whole = pretrain(&data, &a, &[dropout]);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    // Stop mid-epoch at step 7, then resume to the end.
    let part = pretrain(&data, &b, &["train.max_steps=7", dropout]);
    assert!(
        part.status.success(),
        "{}",
        String::from_utf8_lossy(&part.stderr)
    );
    let rest = pretrain(&data, &b, &[dropout]);
    let err = String::from_utf8_lossy(&rest.stderr);
    assert!(
        rest.status.success() && err.contains("resumed from"),
        "{err}"
    );
    assert!(
        final_weights(&a) == final_weights(&b),
        "weights differ after resume"
    );
    let last = |out: &Path| {
        metrics(out)
            .into_iter()
            .rev()
            .find(|v| v.get("eval").is_some())
            .unwrap()
    };
    assert_eq!(last(&a)["eval"], last(&b)["eval"]);
}

#[test]
fn a_checkpoint_of_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let out = dir.path().join("run");
    assert!(
        pretrain(&data, &out, &["train.max_steps=2"])
            .status
            .success()
    );
    let o = pretrain(&data, &out, &["optim.lr=0.1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another config") && err.contains("step-00000002"),
        "{err}"
    );
}

#[test]
fn a_diverging_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let out = dir.path().join("run");
    let o = pretrain(&data, &out, &["optim.lr=1e30", "train.checkpoint_every=1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("loss is") && err.contains("step "), "{err}");
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert!(latest.starts_with("step-"), "{latest}");
}

#[test]
fn bad_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let out = dir.path().join("run");
    for (set, needle) in [
        ("model.encoder.kind=\"lstm\"", "lstm"),
        ("model.encoder.heads=3", "heads"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epoch=3", "epoch"),
        // Cross-field: SASRec has 50 learned positions.
        (
            "data.max_len=80",
            "`data.max_len`: 80 exceeds model.encoder.max_len = 50",
        ),
        ("runtime.device=\"tpu\"", "runtime.device"),
        ("runtime.device=\"cuda\"", "no CUDA support"),
    ] {
        let o = pretrain(&data, &out, &[set]);
        assert!(!o.status.success(), "{set}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{set}: {err}"
        );
    }
}

/// Trm++ with activation checkpointing (blocks recomputed in backward, dropout on) trains to
/// the weights of the plain run, within f32 rounding.
#[test]
fn activation_checkpointing_trains_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let trmpp = [
        "model.encoder={kind=\"trmpp\", layers=2, width=32, heads=2, dropout=0.2}",
        "train.max_steps=6",
    ];
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let args: Vec<&str> = trmpp.iter().chain(extra).copied().collect();
        let o = pretrain(&data, &out, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::final_weights(&out)
    };
    let plain = run("plain", &[]);
    let recomputed = run(
        "recomputed",
        &["model.encoder.activation_checkpointing=true"],
    );
    let (worst, at) = common::max_difference(&plain, &recomputed);
    assert!(worst < 1e-4, "weights differ by {worst} in {at}");
    assert!(plain.keys().any(|n| n.contains("layers.1.mlp")));
}
