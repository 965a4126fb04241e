//! The quickstart end to end, shortened by its override flags (the full run takes minutes and
//! is recorded in docs/BENCHMARKS.md): every stage runs on 2 ranks and leaves its artefacts,
//! the report has both runs, and the printed table and paths are there.

use std::process::Command;

#[test]
fn the_whole_pipeline_runs_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let o = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args([
            "quickstart",
            "--out",
            out.to_str().unwrap(),
            "--tokenizer",
            "builtin",
            "--train-per-task",
            "16",
            "--eval-per-task",
            "4",
            "--max-new-tokens",
            "4",
            "--pretrain-set",
            "train.epochs=1",
            "--pretrain-set",
            "train.max_steps=3",
            "--align-set",
            "train.max_steps=3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}\n{stdout}");
    for stage in ["[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]"] {
        assert!(stderr.contains(stage), "missing {stage}: {stderr}");
    }
    assert!(
        stdout.contains("| Trm++ (trained) |") && stdout.contains("| Trm++ (untrained) |"),
        "{stdout}"
    );
    assert!(stdout.contains("quickstart finished"), "{stdout}");
    for p in [
        "data/dataset.json",
        "qa/align_data_eval.arrow",
        "encoder/checkpoints/latest",
        "align_trained/checkpoints/latest",
        "align_untrained/checkpoints/latest",
        "align_trained/eval/predictions.jsonl",
        "align_untrained/eval/eval.json",
        "report/report.md",
        "configs/align_trmpp.toml",
    ] {
        assert!(out.join(p).exists(), "{p} missing");
    }
    let predictions =
        std::fs::read_to_string(out.join("align_trained/eval/predictions.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 7 * 4);
    // Both ranks took part in every distributed stage.
    assert!(stdout.contains("[rank1]:") || stderr.contains("[rank1]:"));
}
