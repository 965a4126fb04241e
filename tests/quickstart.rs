//! The quickstart end to end, exactly as the README's first command runs it (embedded defaults,
//! 2 ranks, deterministic): it must not only run but measure. The trained encoder's soft prompt
//! has to beat the prior baseline (no user information) by at least 10 points and the untrained
//! encoder, both with paired bootstrap 95% intervals above zero, and its answers must vary with
//! the user. The run takes a few minutes (docs/BENCHMARKS.md); only the full default run shows
//! the effect, so that is the one tested.

use std::process::Command;

use serde_json::Value;

const TRAINED: &str = "Trm++ (trained)";
const UNTRAINED: &str = "Trm++ (untrained)";

/// The paired comparison `a - b` of report.json: (difference, CI low, CI high) overall and per
/// sub-task.
fn comparison<'a>(report: &'a Value, a: &str, b: &str) -> &'a Value {
    report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["a"] == a && c["b"] == b)
        .unwrap_or_else(|| panic!("no comparison {a} - {b} in {}", report["comparisons"]))
}

fn figures(d: &Value) -> (f64, f64, f64) {
    let ci = d["ci95"].as_array().unwrap();
    (
        d["diff"].as_f64().unwrap(),
        ci[0].as_f64().unwrap(),
        ci[1].as_f64().unwrap(),
    )
}

#[test]
fn the_default_quickstart_shows_that_the_user_embedding_helps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let o = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(["quickstart", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}\n{stdout}");
    for stage in ["[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]"] {
        assert!(stderr.contains(stage), "missing {stage}: {stderr}");
    }
    for row in [TRAINED, UNTRAINED, "prior", "history"] {
        assert!(
            stdout.contains(&format!("| {row} |")),
            "no row {row}: {stdout}"
        );
    }
    assert!(stdout.contains("quickstart finished"), "{stdout}");
    for p in [
        "data/dataset.json",
        "qa/align_data_eval.arrow",
        "encoder/checkpoints/latest",
        "align_trained/checkpoints/latest",
        "align_untrained/checkpoints/latest",
        "align_untrained/eval/eval.json",
        "report/report.md",
        "configs/align_trmpp.toml",
    ] {
        assert!(out.join(p).exists(), "{p} missing");
    }
    // Both ranks took part in the distributed stages.
    assert!(stdout.contains("[rank1]:") || stderr.contains("[rank1]:"));

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report/report.json")).unwrap()).unwrap();
    let vs_prior = comparison(&report, TRAINED, "prior");
    let (diff, lo, _) = figures(&vs_prior["paired"]["overall"]);
    assert!(
        diff >= 10.0 && lo > 0.0,
        "trained - prior = {diff:.2} [{lo:.2}, ..]: {stdout}"
    );
    let (diff, lo, _) = figures(&comparison(&report, TRAINED, UNTRAINED)["paired"]["overall"]);
    assert!(
        diff > 0.0 && lo > 0.0,
        "trained - untrained = {diff:.2} [{lo:.2}, ..]: {stdout}"
    );
    // The sub-tasks pre-training on next clicks can know: the next click's attribute and the
    // recent interest, each clearly above the prior.
    for task in ["AP", "SI"] {
        let (diff, lo, _) = figures(&vs_prior["paired"]["tasks"][task]);
        assert!(
            diff > 0.0 && lo > 0.0,
            "{task}: trained - prior = {diff:.2} [{lo:.2}, ..]"
        );
    }
    // The answers depend on the user: the prior gives one answer per template, the trained
    // prompt many (60 questions per sub-task).
    let runs = report["runs"].as_array().unwrap();
    let distinct = |name: &str, task: &str| {
        runs.iter().find(|r| r["name"] == name).unwrap()["distinct_predictions"][task]
            .as_u64()
            .unwrap()
    };
    for task in ["DF", "AP", "SI", "LI"] {
        assert!(
            distinct(TRAINED, task) >= 20,
            "{task}: {} distinct answers",
            distinct(TRAINED, task)
        );
    }
    assert!(distinct(TRAINED, "All") > 2 * distinct("prior", "All"));
}
