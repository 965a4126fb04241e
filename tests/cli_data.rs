//! `uqa data ...` end to end through the real binary: generation, determinism, statistics,
//! validation, MovieLens import, and bad input (clear message, non-zero exit, nothing
//! half-written).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use uqa_data::assets::Asset;
use uqa_testkit::{Category, skip};

fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "uqa failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "uqa unexpectedly succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "uqa panicked: {err}");
    err
}

fn synth_tiny(out: &Path, seed: u64) -> Output {
    uqa(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--seed",
        &seed.to_string(),
        "--out",
        out.to_str().unwrap(),
    ])
}

const FILES: [&str; 5] = [
    "dataset.json",
    "tokenizer.json",
    "item_catalog.arrow",
    "pretrain_data_train.arrow",
    "pretrain_data_eval.arrow",
];

#[test]
fn synth_is_deterministic_per_seed_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let summary = ok(&synth_tiny(&a, 3));
    assert!(summary.contains("users               300"), "{summary}");
    ok(&synth_tiny(&b, 3));
    ok(&synth_tiny(&c, 4));
    for f in FILES {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs between two runs with seed 3");
    }
    assert_ne!(
        std::fs::read(a.join("pretrain_data_train.arrow")).unwrap(),
        std::fs::read(c.join("pretrain_data_train.arrow")).unwrap()
    );
    for f in ["pretrain_data_train.arrow", "pretrain_data_eval.arrow"] {
        let p = a.join(f);
        let v = ok(&uqa(&["data", "validate", p.to_str().unwrap()]));
        assert!(v.contains(": ok: 300 rows"), "{v}");
    }
    // The item catalog is recognised and checked against the dataset's vocabulary.
    let catalog = a.join("item_catalog.arrow");
    let v = ok(&uqa(&["data", "validate", catalog.to_str().unwrap()]));
    assert!(
        v.contains(": ok: item catalog of ") && v.contains("within the vocabulary"),
        "{v}"
    );
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn stats_json_agrees_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    ok(&synth_tiny(&ds, 1));
    let out = ok(&uqa(&["data", "stats", "--json", ds.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counts = &v["meta"]["counts"];
    assert_eq!(v["train"]["rows"], counts["users"]);
    assert_eq!(v["train"]["positions"], counts["train_interactions"]);
    assert_eq!(v["eval"]["positions"], counts["eval_interactions"]);
    // The chronological 9:1 split: about a tenth of each user's clicks are held out.
    let held = counts["eval_interactions"].as_f64().unwrap();
    let total = held + counts["train_interactions"].as_f64().unwrap();
    assert!(
        (held / total - 0.1).abs() < 0.01,
        "held-out share {}",
        held / total
    );
    // A single file works too.
    let f = ds.join("pretrain_data_eval.arrow");
    let out = ok(&uqa(&["data", "stats", "--json", f.to_str().unwrap()]));
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["rows"], 300);
}

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    std::fs::write(ds.join("precious.txt"), "keep me").unwrap();
    let err = failed(&synth_tiny(&ds, 1));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(ds.join("precious.txt")).unwrap(),
        "keep me"
    );
    let out = uqa(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--force",
        "--out",
        ds.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(!ds.join("precious.txt").exists() && ds.join("dataset.json").exists());
}

#[test]
fn unknown_config_key_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ok(&uqa(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--print-config",
    ]));
    let cfg = dir.path().join("spec.toml");
    std::fs::write(
        &cfg,
        spec.replace("users = 300", "users = 300\nusers_typo = 1"),
    )
    .unwrap();
    let out_dir = dir.path().join("ds");
    let err = failed(&uqa(&[
        "data",
        "synth",
        "--config",
        cfg.to_str().unwrap(),
        "--tokenizer",
        "builtin",
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(
        err.contains("spec.toml") && err.contains("users_typo"),
        "{err}"
    );
    assert!(!out_dir.exists());
    // The printed spec itself round-trips.
    std::fs::write(&cfg, &spec).unwrap();
    ok(&uqa(&[
        "data",
        "synth",
        "--config",
        cfg.to_str().unwrap(),
        "--tokenizer",
        "builtin",
        "--out",
        out_dir.to_str().unwrap(),
    ]));
}

#[test]
fn validate_reports_corrupt_and_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    ok(&synth_tiny(&ds, 2));
    let bytes = std::fs::read(ds.join("pretrain_data_eval.arrow")).unwrap();
    let cut = dir.path().join("cut.arrow");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = failed(&uqa(&["data", "validate", cut.to_str().unwrap()]));
    assert!(
        err.contains("cut.arrow") && err.contains("truncated"),
        "{err}"
    );
    let err = failed(&uqa(&[
        "data",
        "validate",
        "--vocab",
        "bogus",
        cut.to_str().unwrap(),
    ]));
    assert!(err.contains("cut.arrow"), "{err}");
}

#[test]
fn validate_against_the_reference_vocabulary() {
    // `--vocab reference` checks ids against REFERENCE.md's sizes instead of the file's own.
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    ok(&synth_tiny(&ds, 2));
    let f = ds.join("pretrain_data_train.arrow");
    let out = ok(&uqa(&[
        "data",
        "validate",
        "--vocab",
        "reference",
        f.to_str().unwrap(),
    ]));
    assert!(out.contains("items 994447"), "{out}");
}

/// The fetched MovieLens folder, or None with `test`'s skip recorded. A folder that is there
/// but incomplete fails the import, and so the test.
fn movielens(test: &str, asset: Asset) -> Option<PathBuf> {
    let found = asset.find();
    if found.is_none() {
        let reason = format!(
            "{asset:?} not in the asset cache ({}); run scripts/fetch-assets.sh movielens",
            asset.path().display()
        );
        skip(Category::Movielens, test, reason);
    }
    found
}

#[test]
fn movielens_100k_imports_with_the_sasrec_protocol() {
    let Some(src) = movielens(
        "movielens_100k_imports_with_the_sasrec_protocol",
        Asset::Movielens100k,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml100k");
    ok(&uqa(&[
        "data",
        "import",
        "movielens",
        src.to_str().unwrap(),
        "--tokenizer",
        "builtin",
        "--out",
        out.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&ok(&uqa(&[
        "data",
        "stats",
        "--json",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    let c = &v["meta"]["counts"];
    assert_eq!(c["raw_users"], 943);
    assert_eq!(c["raw_items"], 1682);
    assert_eq!(c["raw_interactions"], 100_000);
    assert_eq!(
        c["users"], 943,
        "every ML-100k user has at least 20 ratings"
    );
    // Leave-one-out: exactly one held-out click per user.
    assert_eq!(c["eval_interactions"], 943);
    let items = c["items"].as_u64().unwrap();
    assert!(
        (1300..1400).contains(&items),
        "items with >= 5 ratings: {items}"
    );
    for f in ["pretrain_data_train.arrow", "pretrain_data_eval.arrow"] {
        ok(&uqa(&["data", "validate", out.join(f).to_str().unwrap()]));
    }
}

#[test]
fn movielens_1m_matches_the_sasrec_paper_counts() {
    let Some(src) = movielens(
        "movielens_1m_matches_the_sasrec_paper_counts",
        Asset::Movielens1m,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml1m");
    ok(&uqa(&[
        "data",
        "import",
        "movielens",
        src.to_str().unwrap(),
        "--tokenizer",
        "builtin",
        "--out",
        out.to_str().unwrap(),
    ]));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    let c = &meta["counts"];
    assert_eq!(c["raw_interactions"], 1_000_209);
    assert_eq!(c["users"], 6_040);
    // SASRec (Kang & McAuley 2018), Table 2: 6,040 users and 3,416 items after 5-core filtering.
    assert_eq!(c["items"], 3_416);
    assert_eq!(meta["source"]["kind"], "movielens");
    assert!(
        meta["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("genre"))
    );
}

#[test]
fn committed_dataset_specs_equal_the_presets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for preset in ["tiny", "small", "taobao"] {
        let printed = ok(&uqa(&[
            "data",
            "synth",
            "--preset",
            preset,
            "--print-config",
        ]));
        let file =
            std::fs::read_to_string(root.join(format!("configs/data/{preset}.toml"))).unwrap();
        let body: String = file
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            body.trim(),
            printed.trim(),
            "configs/data/{preset}.toml drifted from the preset"
        );
    }
}
