//! `skip` as test binaries use it: child processes (this binary re-executed, the `child` test
//! chosen by `UQA_TESTKIT_CHILD`) record skips into one `UQA_SKIP_LOG` in parallel, and
//! `UQA_REQUIRE` turns a skip of a named category into a failure that records nothing.

use std::path::Path;
use std::process::{Command, Output};

use uqa_testkit::{Category, SKIP_LOG_VAR, skip};

const CHILD: &str = "UQA_TESTKIT_CHILD";

/// In a child: `UQA_TESTKIT_CHILD=N` skips N times from 4 threads; `=one` skips once (slurm).
#[test]
fn child() {
    let Ok(what) = std::env::var(CHILD) else {
        return;
    };
    if what == "one" {
        return skip(Category::Slurm, "child", "sbatch not found\n(second line)");
    }
    let n: usize = what.parse().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..n {
                    skip(Category::Gpu, &format!("child_{t}_{i}"), "no NCCL");
                }
            });
        }
    });
}

fn run_child(what: &str, log: &Path, require: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child", "--exact", "--quiet"])
        .env(CHILD, what)
        .env(SKIP_LOG_VAR, log)
        .env_remove("UQA_REQUIRE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(r) = require {
        cmd.env("UQA_REQUIRE", r);
    }
    cmd.spawn().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn skips_from_parallel_processes_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let children: Vec<_> = (0..3).map(|_| run_child("50", &log, None)).collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        // On stderr too, past libtest's capture.
        assert!(String::from_utf8_lossy(&o.stderr).contains("SKIPPED child_0_0 [gpu]: no NCCL"));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 3 * 4 * 50);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("child_") && l.ends_with(" [gpu]: no NCCL"))
    );
}

#[test]
fn a_skip_is_one_line_naming_test_category_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let o = run_child("one", &log, Some("assets,mpi"))
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "child [slurm]: sbatch not found (second line)\n"
    );
}

#[test]
fn a_required_category_fails_instead_of_skipping() {
    for require in ["slurm", "all", " Assets , SLURM "] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        let o = run_child("one", &log, Some(require))
            .wait_with_output()
            .unwrap();
        let t = text(&o);
        assert!(!o.status.success(), "UQA_REQUIRE={require}: {t}");
        assert!(
            t.contains("child could not run and UQA_REQUIRE requires `slurm`: sbatch not found"),
            "{t}"
        );
        assert!(!log.exists(), "a failure is not a skip");
    }
}

#[test]
fn gpu_skips_fail_only_when_gpu_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let o = run_child("1", &log, Some("all"))
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run_child("1", &log, Some("gpu"))
        .wait_with_output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

#[test]
fn a_misspelt_requirement_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let o = run_child("one", &log, Some("slrum"))
        .wait_with_output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("unknown category \"slrum\""), "{t}");
}
