//! Data-parallel pre-training through the real launcher: 2 and 4 CPU ranks end with the same
//! weights (within floating-point reordering) as 1 process with the same global batch, for
//! every encoder; ranks with different configs refuse to start.

mod common;

use common::*;

use std::path::Path;
use std::process::{Command, Output};

fn config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/tests/tiny_sasrec.toml")
        .display()
        .to_string()
}

/// `uqa pretrain` on `ranks` processes (plain when 1, under `uqa launch` otherwise).
fn run(ranks: usize, data: &Path, out: &Path, extra: &[String]) -> Output {
    let exe = env!("CARGO_BIN_EXE_uqa").to_string();
    let mut args: Vec<String> = Vec::new();
    if ranks > 1 {
        args.extend(
            [
                "launch",
                "--standalone",
                "--nproc-per-node",
                &ranks.to_string(),
                "--",
                &exe,
            ]
            .map(String::from),
        );
    }
    args.extend(["pretrain", "--config", &config()].map(String::from));
    for s in [
        format!("data.dir=\"{}\"", data.display()),
        format!("train.out=\"{}\"", out.display()),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    {
        args.push("--set".into());
        args.push(s);
    }
    let o = Command::new(&exe).args(&args).output().expect("run");
    assert!(
        o.status.success(),
        "{ranks} ranks failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn encoder_overrides(kind: &str) -> Vec<String> {
    let e = |s: &str| format!("model.encoder={s}");
    vec![match kind {
        "sasrec" => e(
            "{kind = \"sasrec\", layers = 1, width = 32, heads = 2, ffn = 64, dropout = 0.0, max_len = 50}",
        ),
        "trmpp" => e("{kind = \"trmpp\", layers = 1, width = 32, heads = 2, dropout = 0.0}"),
        "hstu" => e(
            "{kind = \"hstu\", layers = 1, width = 32, heads = 2, linear_dim = 32, attention_dim = 32, dropout = 0.0, max_len = 50}",
        ),
        "gru4rec" => e("{kind = \"gru4rec\", layers = 1, width = 32, hidden = 32, dropout = 0.0}"),
        _ => e("{kind = \"mamba4rec\", layers = 1, width = 32, dropout = 0.0}"),
    }]
}

#[test]
fn two_and_four_ranks_match_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let steps = vec!["train.max_steps=12".to_string()];
    let one = dir.path().join("one");
    run(1, &data, &one, &steps);
    let reference = final_weights(&one);
    for ranks in [2, 4] {
        let out = dir.path().join(format!("r{ranks}"));
        let o = run(ranks, &data, &out, &steps);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("[rank0]:") && stdout.contains(&format!("[rank{}]:", ranks - 1)),
            "{stdout}"
        );
        let (diff, name) = max_difference(&reference, &final_weights(&out));
        assert!(
            diff < 2e-4,
            "{ranks} ranks: max |difference| {diff} in `{name}`"
        );
        // Only rank 0 writes metrics; each line reports the world size.
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert!(
            metrics.contains(&format!("\"world_size\":{ranks}")),
            "{metrics}"
        );
    }
}

#[test]
fn every_encoder_trains_identically_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    for kind in ["trmpp", "sasrec", "hstu", "gru4rec", "mamba4rec"] {
        let mut extra = encoder_overrides(kind);
        extra.push("train.max_steps=3".into());
        extra.push("train.batch_size=16".into());
        let (one, two) = (
            dir.path().join(format!("{kind}1")),
            dir.path().join(format!("{kind}2")),
        );
        run(1, &data, &one, &extra);
        run(2, &data, &two, &extra);
        let (diff, name) = max_difference(&final_weights(&one), &final_weights(&two));
        assert!(diff < 2e-4, "{kind}: max |difference| {diff} in `{name}`");
    }
}

#[test]
fn a_batch_the_world_cannot_split_is_refused_on_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let exe = env!("CARGO_BIN_EXE_uqa");
    let cfg = config();
    let d = format!("data.dir=\"{}\"", data.display());
    let o = format!("train.out=\"{}\"", dir.path().join("x").display());
    let out = Command::new(exe)
        .args([
            "launch",
            "--standalone",
            "--nproc-per-node",
            "3",
            "--",
            exe,
            "pretrain",
            "--config",
            &cfg,
        ])
        .args(["--set", &d, "--set", &o])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not divisible by world size (3)"), "{err}");
}
