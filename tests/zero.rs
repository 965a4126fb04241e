//! ZeRO-1 (`train.zero = 1`) through the CLI on the tiny preset: sharded AdamW state trains to
//! the same weights as replicated state, bit for bit, for `uqa pretrain` and `uqa align`; each
//! rank's `optimizer-rank{R}.safetensors` holds about half of the state on 2 ranks; a sharded
//! run stopped and resumed, or killed (SIGKILL of a rank, gang restart), equals an
//! uninterrupted one bit for bit; resuming with another `train.zero`, another world size or a
//! missing shard fails naming the cause.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `uqa JOB --config CONFIG` on `ranks` processes (plain when 1, under `uqa launch` otherwise)
/// with `--set` overrides.
fn run(ranks: usize, job: &str, cfg: &str, sets: &[String]) -> Output {
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
    args.extend([job, "--config", &config(cfg)].map(String::from));
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    Command::new(&exe).args(&args).output().expect("run")
}

fn pretrain(ranks: usize, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut sets = vec![
        format!("data.dir=\"{}\"", data.display()),
        format!("train.out=\"{}\"", out.display()),
        // A failing rank must not leave the others waiting for the default 300 s.
        "train.collective_timeout_s=30".to_string(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    run(ranks, "pretrain", "tiny_sasrec.toml", &sets)
}

fn elements(t: &BTreeMap<String, Vec<f32>>) -> usize {
    t.values().map(Vec::len).sum()
}

/// Bit-for-bit equality of two tensor sets, naming the first tensor that differs.
fn assert_identical(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, x) in a {
        let same = x
            .iter()
            .zip(&b[name])
            .all(|(p, q)| p.to_bits() == q.to_bits());
        let worst = x
            .iter()
            .zip(&b[name])
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(same, "{what}: `{name}` differs (max |difference| {worst})");
    }
}

#[test]
fn sharded_pretraining_equals_replicated_and_halves_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (plain, sharded) = (dir.path().join("z0"), dir.path().join("z1"));
    ok(
        pretrain(2, &data, &plain, &["train.max_steps=6"]),
        "zero=0 run",
    );
    let o = ok(
        pretrain(2, &data, &sharded, &["train.max_steps=6", "train.zero=1"]),
        "zero=1 run",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("optimizer state (sharded, train.zero = 1)"),
        "{stderr}"
    );

    let (a, b) = (latest(&plain), latest(&sharded));
    assert_identical(
        &read_safetensors(&a.join("model.safetensors")),
        &read_safetensors(&b.join("model.safetensors")),
        "weights, zero=1 vs zero=0",
    );
    // The shards partition the whole state: together they are the replicated file, each
    // about half of it.
    let whole = read_safetensors(&a.join("optimizer.safetensors"));
    assert!(!b.join("optimizer.safetensors").exists());
    let mut joined = BTreeMap::new();
    for r in 0..2 {
        let shard = read_safetensors(&b.join(format!("optimizer-rank{r}.safetensors")));
        let share = elements(&shard) as f64 / elements(&whole) as f64;
        assert!((0.4..0.6).contains(&share), "rank {r} holds {share:.3}");
        joined.extend(shard);
    }
    assert_identical(&whole, &joined, "optimizer state, shards vs whole");

    // Every metrics line reports each rank's optimiser bytes (2 moments x 4 bytes).
    let metrics = std::fs::read_to_string(sharded.join("metrics.jsonl")).unwrap();
    let line: Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let bytes: Vec<u64> = line["optimizer_state_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(bytes.iter().sum::<u64>(), elements(&whole) as u64 * 4);
    assert_eq!(bytes.len(), 2);
}

#[test]
fn a_resumed_sharded_run_is_bit_identical_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (resumed, straight) = (dir.path().join("resumed"), dir.path().join("straight"));
    ok(
        pretrain(2, &data, &resumed, &["train.max_steps=3", "train.zero=1"]),
        "first half",
    );
    let o = ok(
        pretrain(2, &data, &resumed, &["train.max_steps=6", "train.zero=1"]),
        "resume",
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resumed from"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(
        pretrain(2, &data, &straight, &["train.max_steps=6", "train.zero=1"]),
        "uninterrupted",
    );
    let (a, b) = (latest(&resumed), latest(&straight));
    assert!(a.ends_with("step-00000006"), "{}", a.display());
    for file in [
        "model.safetensors",
        "optimizer-rank0.safetensors",
        "optimizer-rank1.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs"
        );
    }
    // The same position (the config hashes differ only by train.out).
    let state = |d: &Path| -> Value {
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("config_hash");
        v
    };
    assert_eq!(state(&a), state(&b));

    // train.zero is part of the config hash: the sharded checkpoint is not silently resumed
    // with replicated state.
    let o = pretrain(1, &data, &resumed, &["train.max_steps=9"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("another config") && err.contains("train.zero = 1"),
        "{err}"
    );
    // Another world size: the shard file is named.
    let o = pretrain(1, &data, &resumed, &["train.max_steps=9", "train.zero=1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("optimizer-rank0.safetensors") && err.contains("written by 2 ranks"),
        "{err}"
    );
    // A missing shard makes that checkpoint damaged: every rank names the file and falls back
    // to the previous intact checkpoint.
    std::fs::remove_file(a.join("optimizer-rank1.safetensors")).unwrap();
    let o = pretrain(2, &data, &resumed, &["train.max_steps=9", "train.zero=1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("is damaged") && err.contains("optimizer-rank1.safetensors"),
        "{err}"
    );
}

#[test]
fn sharded_full_alignment_equals_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let qa = dir.path().join("qa");
    let encoder = dir.path().join("enc");
    ok(
        uqa(&[
            "qa-gen",
            "--data",
            data.to_str().unwrap(),
            "--out",
            qa.to_str().unwrap(),
        ]),
        "qa-gen",
    );
    ok(
        pretrain(1, &data, &encoder, &["train.max_steps=4"]),
        "pretrain",
    );
    let align = |out: &Path, zero: u8| {
        let sets = vec![
            format!("data.dataset=\"{}\"", data.display()),
            format!("data.qa_dir=\"{}\"", qa.display()),
            format!("prompt.encoder=\"{}\"", encoder.display()),
            format!("train.out=\"{}\"", out.display()),
            "strategy={kind = \"full\", llm_lr = 1e-4}".to_string(),
            "train.max_steps=3".to_string(),
            format!("train.zero={zero}"),
        ];
        ok(run(2, "align", "tiny_align.toml", &sets), "align")
    };
    let (plain, sharded) = (dir.path().join("a0"), dir.path().join("a1"));
    align(&plain, 0);
    let o = align(&sharded, 1);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("optimizer state (sharded, train.zero = 1)"),
        "{stderr}"
    );
    let (a, b) = (latest(&plain), latest(&sharded));
    let weights = read_safetensors(&a.join("model.safetensors"));
    // The full strategy trains the LLM too (at its own learning rate).
    assert!(
        weights.keys().any(|k| k.starts_with("llm.")),
        "{:?}",
        weights.keys()
    );
    assert_identical(
        &weights,
        &read_safetensors(&b.join("model.safetensors")),
        "aligned weights, zero=1 vs zero=0",
    );
    let whole = elements(&read_safetensors(&a.join("optimizer.safetensors")));
    let shards: Vec<usize> = (0..2)
        .map(|r| {
            elements(&read_safetensors(
                &b.join(format!("optimizer-rank{r}.safetensors")),
            ))
        })
        .collect();
    assert_eq!(shards.iter().sum::<usize>(), whole);
    assert!(shards.iter().all(|&s| s < whole), "{shards:?} of {whole}");
}

#[test]
fn a_killed_sharded_run_restarts_and_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (clean, faulty) = (dir.path().join("clean"), dir.path().join("faulty"));
    let exe = env!("CARGO_BIN_EXE_uqa");
    let launch = |out: &Path, restarts: u32| {
        Command::new(exe)
            .args(["launch", "--standalone", "--nproc-per-node", "2"])
            .args([
                "--max-restarts",
                &restarts.to_string(),
                "--grace-period",
                "2",
            ])
            .args([
                "--",
                exe,
                "pretrain",
                "--config",
                &config("tiny_sasrec.toml"),
            ])
            .args(["--set", &format!("data.dir=\"{}\"", data.display())])
            .args(["--set", &format!("train.out=\"{}\"", out.display())])
            .args([
                "--set",
                "train.epochs=2",
                "--set",
                "train.checkpoint_every=2",
            ])
            .args(["--set", "train.log_every=1", "--set", "train.zero=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = launch(&clean, 0).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let child = launch(&faulty, 1);
    // After a few steps (and a checkpoint), SIGKILL rank 1: its shard exists only on disk.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        assert!(Instant::now() < deadline, "the run never reached step 5");
        let steps = std::fs::read_to_string(faulty.join("metrics.jsonl"))
            .map(|s| s.lines().filter(|l| l.contains("\"loss\"")).count())
            .unwrap_or(0);
        if steps >= 5
            && let Some(pid) = rank_pid(&faulty, 1)
        {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "restarted run failed: {text}");
    assert!(text.contains("resumed from"), "{text}");
    let (a, b) = (latest(&clean), latest(&faulty));
    for file in [
        "model.safetensors",
        "optimizer-rank0.safetensors",
        "optimizer-rank1.safetensors",
    ] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs after the restart"
        );
    }
}
