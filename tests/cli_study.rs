//! `uqa study run --local` and `uqa study report` on a tiny 2-element study (trained and
//! untrained encoder under one adapter): the shared pre-training runs once, a re-run skips every
//! finished stage, an unfinished element is reported as missing and then completed, and a study
//! file that changed or names an unknown axis is refused before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("uqa runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = uqa(args);
    let t = text(&o);
    assert!(o.status.success(), "uqa {args:?} failed:\n{t}");
    t
}

const STUDY: &str = r#"
[study]
name = "tiny"

[base]
data = { preset = "tiny" }
questions = { train_per_task = 20, eval_per_task = 10 }
pretrain = "configs/tests/tiny_sasrec.toml"
align = "configs/tests/tiny_align.toml"
pretrain_set = ["train.max_steps=4"]
align_set = ["train.max_steps=4", "metrics.enabled=false"]
eval = { max_new_tokens = 6, limit = 40 }

[axes.prompts.trained]
[axes.prompts.untrained]
align = ["prompt.untrained = true"]
"#;

fn write_study(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("study.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_study_runs_its_elements_once_resumes_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let study = write_study(tmp.path(), STUDY);
    let out = tmp.path().join("out");
    let (study_arg, out_arg) = (study.to_str().unwrap(), out.to_str().unwrap());
    let run = [
        "study", "run", study_arg, "--local", "--out", out_arg, "--nproc", "2",
    ];

    // A dry run lists the stages and writes nothing.
    let mut dry = run.to_vec();
    dry.push("--dry-run");
    let plan = ok(&dry);
    assert!(plan.contains("dry run: 7 stages to run"), "{plan}");
    assert!(
        plan.contains("[3/7] pre-training base-s0: uqa pretrain"),
        "{plan}"
    );
    // Every training stage's Prometheus series name the study and the stage.
    assert!(
        plan.contains("metrics.labels = { study = \"tiny\", element = \"untrained-s0\" }"),
        "{plan}"
    );
    assert!(!out.exists());

    let first = ok(&run);
    assert!(first.contains("study tiny: 2 elements"), "{first}");
    assert!(first.contains("(7 stages run)"), "{first}");
    // One pre-training shared by both elements, one alignment each.
    assert_eq!(folders(&out.join("pretrain")), ["base-s0"]);
    assert_eq!(folders(&out.join("align")), ["trained-s0", "untrained-s0"]);

    // Finished stages are skipped, untouched.
    let marker = out.join("pretrain/base-s0/study-stage.json");
    let stamp = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let again = ok(&run);
    assert_eq!(again.matches("done, skipped").count(), 7, "{again}");
    assert!(again.contains("(0 stages run)"), "{again}");
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        stamp
    );

    let status = ok(&["study", "status", out_arg]);
    assert!(status.contains("2 of 2 elements evaluated"), "{status}");
    assert!(
        status.contains("| trained | base-s0: done, loss ")
            && status.contains("trained-s0: done, loss"),
        "{status}"
    );

    // An element whose evaluation is gone is missing from the report, then run again alone.
    std::fs::remove_dir_all(out.join("align/untrained-s0/eval")).unwrap();
    let status = ok(&["study", "status", out_arg]);
    assert!(status.contains("1 of 2 elements evaluated"), "{status}");
    let report = ok(&["study", "report", out_arg]);
    assert!(report.contains("| trained |"), "{report}");
    assert!(report.contains("| prior |"), "{report}");
    assert!(!report.contains("| untrained |"), "{report}");
    assert!(
        report.contains("missing (1 elements not finished): untrained"),
        "{report}"
    );
    let elements = std::fs::read_to_string(out.join("report/elements.md")).unwrap();
    assert!(
        elements.contains("| untrained | base-s0 (done) | untrained-s0 (done) | missing |"),
        "{elements}"
    );
    let resumed = ok(&run);
    assert!(resumed.contains("(1 stages run)"), "{resumed}");
    assert!(
        resumed.contains("[7/7] evaluation untrained: uqa eval"),
        "{resumed}"
    );
    let report = ok(&["study", "report", out_arg, "--compare", "trained,untrained"]);
    assert!(
        report.contains("| untrained |") && !report.contains("missing"),
        "{report}"
    );
    assert!(report.contains("trained - untrained = "), "{report}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report/report.json")).unwrap()).unwrap();
    let names: Vec<&str> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // The elements, then the baselines of the same questions.
    assert_eq!(names, ["trained", "untrained", "prior", "history"]);

    // The study changed under a finished stage: refused, naming the stage folder.
    let changed = write_study(
        tmp.path(),
        &STUDY.replace(
            "train.max_steps=4\", \"metrics",
            "train.max_steps=5\", \"metrics",
        ),
    );
    let o = uqa(&[
        "study",
        "run",
        changed.to_str().unwrap(),
        "--local",
        "--out",
        out_arg,
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("align/trained-s0") && t.contains("made by another command"),
        "{t}"
    );
}

#[test]
fn a_bad_study_file_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (edit, expected) in [
        (
            STUDY.replace("axes.prompts.untrained", "axes.colours.untrained"),
            "axes.colours: unknown axis",
        ),
        (
            STUDY.to_string() + "\n[[points]]\nprompts = \"oracle\"\n",
            "points[0].prompts = \"oracle\": unknown value",
        ),
        (
            STUDY.replace("tiny_align.toml", "no_such.toml"),
            "base.align:",
        ),
    ] {
        let study = write_study(tmp.path(), &edit);
        let o = uqa(&[
            "study",
            "run",
            study.to_str().unwrap(),
            "--local",
            "--out",
            out.to_str().unwrap(),
        ]);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(t.contains(expected) && t.contains("study.toml"), "{t}");
        assert!(!out.exists(), "a refused study wrote {}", out.display());
    }
}

/// Every committed study file loads and expands: the CPU-scale ones as a local dry run, the
/// paper-scale ones (studies/paper/) as the sbatch commands `--slurm` would submit. A dry run
/// writes nothing.
#[test]
fn every_committed_study_expands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for (dir, mode) in [(root.clone(), "--local"), (root.join("paper"), "--slurm")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for study in files {
            let out = tmp.path().join(format!("{seen}"));
            let t = ok(&[
                "study",
                "run",
                study.to_str().unwrap(),
                mode,
                "--dry-run",
                "--out",
                out.to_str().unwrap(),
            ]);
            let expected = if mode == "--slurm" {
                "nothing submitted"
            } else {
                "stages to run"
            };
            assert!(t.contains(expected), "{}:\n{t}", study.display());
            if mode == "--slurm" {
                // Each training element gets a whole node's ranks.
                assert!(
                    t.contains("--ntasks-per-node=8"),
                    "{}:\n{t}",
                    study.display()
                );
            }
            assert!(
                !out.exists(),
                "{}: the dry run wrote {}",
                study.display(),
                out.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 11, "{seen} study files");
}
