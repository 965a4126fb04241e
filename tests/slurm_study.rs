//! `uqa study run --slurm` on the local two-node Slurm cluster (`slurm/local-cluster.sh`): a
//! 2-element study (two seeds, so two pre-trainings) submitted as a data job and one job array
//! per stage; each alignment waits for its own pre-training (aftercorr) and each evaluation for
//! its alignment; every training and evaluation task runs on the 2 tasks of its allocation; a
//! re-submit finds nothing to do; the report has both elements.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "../comm/tests/local_cluster/mod.rs"]
mod local_cluster;
use local_cluster::ClusterGuard;

const JOBS_TIMEOUT: Duration = Duration::from_secs(420);

const STUDY: &str = r#"
[study]
name = "slurm-tiny"
seeds = [1, 2]

[base]
data = { preset = "tiny" }
questions = { train_per_task = 20, eval_per_task = 10 }
pretrain = "configs/tests/tiny_sasrec.toml"
align = "configs/tests/tiny_align.toml"
pretrain_set = ["train.max_steps=4", "metrics.enabled=false"]
align_set = ["train.max_steps=4", "metrics.enabled=false"]
eval = { max_new_tokens = 6, limit = 40 }

[slurm]
data = ["--ntasks=1"]
pretrain = ["--ntasks=2"]
align = ["--ntasks=2"]
eval = ["--ntasks=2"]
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn uqa(conf: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .current_dir(repo())
        .env("SLURM_CONF", conf)
        // The local cluster's node names do not resolve; its jobs inherit this.
        .env("MASTER_ADDR", "127.0.0.1")
        .env_remove("MASTER_PORT")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
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

fn queued(conf: &str) -> BTreeSet<String> {
    let out = Command::new("squeue")
        .env("SLURM_CONF", conf)
        .args(["-h", "-o", "%F"])
        .output()
        .expect("squeue runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn logs(dir: &Path) -> String {
    let mut all = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("slurm/logs")) {
        for e in entries.flatten() {
            all.push_str(&format!("--- {}\n", e.path().display()));
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

/// (started, finished) of a finished stage, from its marker.
fn times(stage: &Path, dir: &Path) -> (f64, f64) {
    let path = stage.join("study-stage.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), logs(dir)));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v["started"].as_f64().expect("started"),
        v["finished"].as_f64().expect("finished"),
    )
}

#[test]
fn a_study_runs_as_dependent_slurm_job_arrays() {
    if !local_cluster::available("a_study_runs_as_dependent_slurm_job_arrays") {
        return;
    }
    let (_cluster, conf) = ClusterGuard::up(repo().join("slurm/local-cluster.sh"));

    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study.toml");
    std::fs::write(&study, STUDY).unwrap();
    let out = tmp.path().join("out");
    let run = [
        "study",
        "run",
        study.to_str().unwrap(),
        "--slurm",
        "--out",
        out.to_str().unwrap(),
    ];

    // A dry run prints the sbatch commands and submits nothing.
    let mut dry = run.to_vec();
    dry.push("--dry-run");
    let o = uqa(&conf, &dry);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("dry run: 4 jobs for 8 of 8 stages"), "{t}");
    assert!(
        t.contains("--dependency=afterok:$JOB1,aftercorr:$JOB2"),
        "{t}"
    );
    assert!(!out.join("slurm").exists());

    let start = Instant::now();
    let o = uqa(&conf, &run);
    let t = text(&o);
    assert!(o.status.success(), "submission failed:\n{t}");
    let jobs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("slurm/jobs.json")).unwrap())
            .unwrap();
    let stages: Vec<&str> = jobs.iter().map(|j| j["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["data", "pretrain", "align", "eval"], "{t}");
    let id = |i: usize| jobs[i]["job_id"].as_str().unwrap().to_string();
    let dep = |i: usize| jobs[i]["dependency"].as_str().unwrap_or("").to_string();
    assert_eq!(dep(1), format!("afterok:{}", id(0)));
    assert_eq!(dep(2), format!("afterok:{},aftercorr:{}", id(0), id(1)));
    assert_eq!(dep(3), format!("afterok:{},aftercorr:{}", id(0), id(2)));
    // Slurm holds the alignment array on its pre-training array, task by task.
    let show = Command::new("scontrol")
        .env("SLURM_CONF", &conf)
        .args(["show", "job", &id(2)])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains(&format!("aftercorr:{}", id(1))), "{show}");
    // While its jobs are queued, a second submission is refused.
    let again = uqa(&conf, &run);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("still queued or running"),
        "{}",
        text(&again)
    );

    let ids: Vec<String> = (0..4).map(id).collect();
    let deadline = start + JOBS_TIMEOUT;
    while ids.iter().any(|i| queued(&conf).contains(i)) {
        if Instant::now() >= deadline {
            let _ = Command::new("scancel")
                .env("SLURM_CONF", &conf)
                .args(&ids)
                .status();
            panic!(
                "the study's jobs did not finish within {JOBS_TIMEOUT:?}\n{}",
                logs(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("study jobs finished in {:?}", start.elapsed());

    // Every stage finished, in dependency order, each element after its own predecessors.
    let (_, qa_done) = times(&out.join("qa"), &out);
    for seed in [1, 2] {
        let pretrain = out.join(format!("pretrain/base-s{seed}"));
        let align = out.join(format!("align/base-s{seed}"));
        let (pre_start, pre_done) = times(&pretrain, &out);
        let (align_start, align_done) = times(&align, &out);
        let (eval_start, _) = times(&align.join("eval"), &out);
        assert!(
            pre_start >= qa_done,
            "seed {seed}: pre-training before the questions"
        );
        assert!(
            align_start >= pre_done,
            "seed {seed}: alignment before its pre-training"
        );
        assert!(
            eval_start >= align_done,
            "seed {seed}: evaluation before its alignment"
        );
        // Data-parallel over the allocation's 2 tasks.
        let resolved = std::fs::read_to_string(pretrain.join("resolved.toml")).unwrap();
        assert!(resolved.contains("world_size = 2"), "{resolved}");
    }

    // Nothing left to submit.
    let o = uqa(&conf, &run);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("nothing to submit: all 8 stages are done"),
        "{t}"
    );

    let o = uqa(&conf, &["study", "report", out.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("slurm-tiny / seed 1") && t.contains("slurm-tiny / seed 2"),
        "{t}"
    );
    assert!(!t.contains("missing"), "{t}");
}
