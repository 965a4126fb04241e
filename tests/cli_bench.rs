//! `uqa bench` refuses bad numbers with an error naming the flag, instead of panicking or
//! looping forever (a sampler whose shard is smaller than one batch never yields a batch, and
//! one with more ranks than rows pads every shard up to the world size). Zero and other values
//! out of a flag's range are clap's errors ("invalid value '0' for '--batch <BATCH>'"); every
//! numeric flag of every subcommand is covered by tests/cli_bad_numbers.rs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tiny_data;

/// Runs `uqa ARGS`, killing it after 60 s: a hang fails the test instead of stalling the suite.
fn uqa_bounded(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("uqa {} hung", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn bench_flags_with_bad_numbers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (
            &["bench", "sampler", data, "--batch", "0"],
            "'0' for '--batch ",
        ),
        (
            &["bench", "sampler", data, "--batches", "0"],
            "'0' for '--batches ",
        ),
        (
            &["bench", "sampler", data, "--world-size", "0"],
            "'0' for '--world-size ",
        ),
        (
            &[
                "bench",
                "sampler",
                data,
                "--batch",
                "1",
                "--world-size",
                "100000",
            ],
            "--world-size 100000: more ranks than",
        ),
        (
            &["bench", "sampler", data, "--rank", "2", "--world-size", "2"],
            "--rank 2",
        ),
        (
            &["bench", "sampler", data, "--batch", "100000000"],
            "fewer than --batch",
        ),
        (&["bench", "sampler", data, "--batch=-1"], "--batch"),
        (&["bench", "generate", "--batch", "0"], "'0' for '--batch "),
    ];
    for (args, want) in cases {
        let (ok, text) = uqa_bounded(args);
        assert!(!ok, "uqa {} succeeded: {text}", args.join(" "));
        assert!(text.contains(want), "uqa {}: {text}", args.join(" "));
        assert!(!text.contains("panicked"), "uqa {}: {text}", args.join(" "));
    }
}

/// The JSON line a successful `uqa bench ...` ends its output with.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let (ok, text) = uqa_bounded(args);
    assert!(ok, "uqa {}: {text}", args.join(" "));
    // `text` is stderr then stdout: the JSON line is the last one.
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Every benchmark runs to its JSON line on a tiny workload, with figures that add up: the
/// counts asked for, finite timings and losses, and batched generation giving the reference
/// loop's tokens.
#[test]
fn every_benchmark_runs_on_a_tiny_workload() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let train = data.join("pretrain_data_train.arrow");
    let scan = bench_json(&["bench", "scan", train.to_str().unwrap()]);
    assert!(scan["rows"].as_u64().unwrap() > 0, "{scan}");
    assert!(scan["ids"].as_u64() >= scan["positions"].as_u64(), "{scan}");

    let sampler = bench_json(&[
        "bench",
        "sampler",
        data.to_str().unwrap(),
        "--batch",
        "2",
        "--batches",
        "3",
        "--max-len",
        "8",
    ]);
    assert_eq!(sampler["batches"], 3, "{sampler}");
    assert!(
        sampler["positions_per_s"].as_f64().unwrap() > 0.0,
        "{sampler}"
    );

    let step = bench_json(&[
        "bench", "step", "--layers", "1", "--dim", "16", "--heads", "2", "--seq", "8", "--batch",
        "2", "--items", "100", "--cates", "10", "--brands", "10", "--shops", "10", "--steps", "2",
        "--warmup", "1",
    ]);
    assert_eq!(step["step_s_all"].as_array().unwrap().len(), 2, "{step}");
    assert!(step["loss_last"].as_f64().unwrap().is_finite(), "{step}");
    assert!(step["params_total"].as_u64().unwrap() > 0, "{step}");

    let generate = bench_json(&[
        "bench",
        "generate",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--intermediate",
        "32",
        "--vocab",
        "64",
        "--prompt-len",
        "6",
        "--new-tokens",
        "3",
        "--batch",
        "2",
        "--qas",
        "1",
        "--batches",
        "1",
    ]);
    assert_eq!(generate["tokens_match"], true, "{generate}");
    assert_eq!(generate["batched"]["batches"], 1, "{generate}");
}
