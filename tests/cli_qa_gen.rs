//! `uqa qa-gen` end to end: files in the reference layout, balanced sub-tasks, Chinese questions
//! recognised by the reference's rules as their own task, answers that agree with the dataset,
//! determinism per seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use uqa_data::dataset::Dataset;
use uqa_data::reader::SequenceFile;
use uqa_data::schema::Feature;
use uqabench::qa::Task;

fn uqa(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa");
    assert!(
        out.status.success(),
        "uqa {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tiny(dir: &Path) -> std::path::PathBuf {
    let ds = dir.join("ds");
    uqa(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--seed",
        "5",
        "--out",
        ds.to_str().unwrap(),
    ]);
    ds
}

fn chat(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).expect("chat JSON");
    let turns = v.as_array().unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["role"], "user");
    assert_eq!(turns[1]["role"], "assistant");
    (
        turns[0]["content"].as_str().unwrap().to_string(),
        turns[1]["content"].as_str().unwrap().to_string(),
    )
}

#[test]
fn chinese_questions_are_balanced_recognised_and_consistent_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let ds_dir = tiny(dir.path());
    let out = dir.path().join("qa");
    uqa(&[
        "qa-gen",
        "--data",
        ds_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--eval-per-task",
        "100",
    ]);
    let ds = Dataset::open(&ds_dir).unwrap();
    let catalog = ds.catalog().unwrap();

    for (file, per_task_cap) in [
        ("align_data_train.arrow", 7500),
        ("align_data_eval.arrow", 100),
    ] {
        let f = SequenceFile::open(out.join(file)).unwrap();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for row in f.rows() {
            let task = row.task().unwrap();
            *counts.entry(task.to_string()).or_default() += 1;
            let (q, a) = chat(row.text().unwrap());
            assert!(!a.is_empty(), "empty answer to {q}");
            assert_eq!(
                Task::recognise(&q).map(|t| t.to_string()).as_deref(),
                Some(task),
                "{q}"
            );
            let user = row.user_id().unwrap() as usize - 1;
            let history = ds.train.row(user).ids(Feature::ItemId);
            if file == "align_data_eval.arrow" {
                // Evaluation rows read the whole history; IP's answer is the first held-out click.
                assert_eq!(row.ids(Feature::ItemId), history);
                if task == "IP" {
                    let next = ds.eval.row(user).ids(Feature::ItemId)[0];
                    assert_eq!(a, catalog.titles.text(next as usize));
                }
            } else {
                // Training rows never include the held-out tail, nor the pseudo-future.
                assert!(row.len() < history.len());
                assert_eq!(row.ids(Feature::ItemId), &history[..row.len()]);
            }
            if task == "MF" {
                assert!(a.parse::<usize>().unwrap() > 0, "MF answers are never 0");
            }
        }
        assert_eq!(counts.len(), 7, "{file}: {counts:?}");
        let n = counts.values().next().copied().unwrap();
        assert!(
            counts.values().all(|&c| c == n),
            "{file} not balanced: {counts:?}"
        );
        assert!(n > 50 && n <= per_task_cap, "{file}: {n} per task");
    }
    let meta: Value = serde_json::from_slice(&std::fs::read(out.join("qa.json")).unwrap()).unwrap();
    assert_eq!(meta["eval"]["DF"], 100);
}

#[test]
fn english_generation_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let ds_dir = tiny(dir.path());
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for (out, seed) in [(&a, "1"), (&b, "1"), (&c, "2")] {
        uqa(&[
            "qa-gen",
            "--data",
            ds_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--lang",
            "en",
            "--seed",
            seed,
        ]);
    }
    let read = |d: &Path| std::fs::read(d.join("align_data_eval.arrow")).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    let f = SequenceFile::open(a.join("align_data_eval.arrow")).unwrap();
    let (q, _) = chat(f.row(0).text().unwrap());
    assert!(q.is_ascii(), "{q}");
}

#[test]
fn a_dataset_too_small_for_some_task_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        String::from_utf8(uqa(&["data", "synth", "--preset", "tiny", "--print-config"]).stdout)
            .unwrap();
    // Users with one category and tiny held-out tails cannot support LI or IT.
    let spec = spec
        .replace("users = 300", "users = 3")
        .replace("cates = 12", "cates = 1")
        .replace("brands = 40", "brands = 1")
        .replace("shops = 80", "shops = 1")
        .replace("min_len = 20", "min_len = 12")
        .replace("max_len = 300", "max_len = 12")
        .replace("min_item_interactions = 3", "min_item_interactions = 1");
    let cfg = dir.path().join("s.toml");
    std::fs::write(&cfg, spec).unwrap();
    let ds = dir.path().join("ds");
    uqa(&[
        "data",
        "synth",
        "--config",
        cfg.to_str().unwrap(),
        "--tokenizer",
        "builtin",
        "--out",
        ds.to_str().unwrap(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(["qa-gen", "--data", ds.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no usable user") && err.contains("LI"),
        "{err}"
    );
    assert!(!ds.join("align_data_train.arrow").exists());
}
