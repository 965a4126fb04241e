//! The sbatch templates on a real (local, two-node) Slurm cluster: `slurm/local-cluster.sh`
//! brings up slurmctld and two slurmd on 127.0.0.1, then a 2-node x 2-task job
//! (`slurm/multi_node.sbatch`) and a 2-element job array (`slurm/sweep_sizes.sbatch`) run the
//! `barrier` example as their training command: ranks derive RANK/WORLD_SIZE from SLURM_*
//! (RankEnv) and form a tcp communicator across the emulated nodes. Without `sbatch` (or not as
//! root, which the local cluster needs) the test is a recorded skip, a failure under
//! `UQA_REQUIRE=slurm` (see uqa-testkit).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod local_cluster;
use local_cluster::ClusterGuard;
use uqa_testkit::{Category, skip};

/// Budget for both jobs once the cluster is up.
const JOBS_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("comm/ has a parent")
        .to_path_buf()
}

/// The `barrier` example next to this test binary (cargo builds examples for `cargo test`).
fn barrier_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("barrier");
    p.exists().then_some(p)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sbatch(conf: &str, dir: &Path, env: &[(&str, String)], args: &[&str]) -> Child {
    let mut cmd = Command::new("sbatch");
    cmd.env("SLURM_CONF", conf)
        .env("MASTER_ADDR", "127.0.0.1")
        // Do not let a launch environment of the test runner leak into the job.
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("MASTER_PORT")
        .arg("--wait")
        .arg(format!("--chdir={}", dir.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("sbatch starts")
}

/// Waits for `child` until `deadline`; on expiry cancels the job by name and fails.
fn wait(mut child: Child, deadline: Instant, conf: &str, name: &str) -> Output {
    loop {
        // sbatch prints one line, so the pipes cannot fill up while we poll.
        if child.try_wait().expect("sbatch status").is_some() {
            return child.wait_with_output().expect("sbatch output");
        }
        if Instant::now() >= deadline {
            let _ = Command::new("scancel")
                .env("SLURM_CONF", conf)
                .args(["--name", name])
                .status();
            let _ = child.kill();
            panic!("job {name} did not finish within {JOBS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rank_lines(log: &str, world: usize) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&format!("/{world} node ")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn sbatch_templates_run_on_a_local_two_node_cluster() {
    const TEST: &str = "sbatch_templates_run_on_a_local_two_node_cluster";
    if !local_cluster::available(TEST) {
        return;
    }
    let Some(example) = barrier_example() else {
        let reason =
            "the barrier example is not built (run `cargo test -p uqa-comm` without --test)";
        return skip(Category::Slurm, TEST, reason);
    };
    let repo = repo();
    let (_cluster, conf) = ClusterGuard::up(repo.join("slurm/local-cluster.sh"));

    let dir = std::env::temp_dir().join(format!("uqa-slurm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    let deadline = start + JOBS_TIMEOUT;
    let cmd = example.display().to_string();
    let multi = sbatch(
        &conf,
        &dir,
        &[
            ("TRAIN_CMD", cmd.clone()),
            ("OUT_ROOT", dir.join("multi").display().to_string()),
        ],
        &[
            "--job-name=uqa-test-multi",
            "--nodes=2",
            "--ntasks-per-node=2",
            "--output=multi-%j.out",
            repo.join("slurm/multi_node.sbatch").to_str().unwrap(),
        ],
    );
    let array = sbatch(
        &conf,
        &dir,
        &[
            ("TRAIN_CMD", cmd),
            ("OUT_ROOT", dir.join("sweep").display().to_string()),
        ],
        &[
            "--job-name=uqa-test-sweep",
            "--array=0-1",
            "--ntasks-per-node=2",
            "--output=sweep-%A_%a.out",
            repo.join("slurm/sweep_sizes.sbatch").to_str().unwrap(),
        ],
    );
    let multi = wait(multi, deadline, &conf, "uqa-test-multi");
    let array = wait(array, deadline, &conf, "uqa-test-sweep");
    println!("jobs finished in {:?}", start.elapsed());
    assert!(
        multi.status.success(),
        "multi-node job failed:\n{}",
        text(&multi)
    );
    assert!(
        array.status.success(),
        "job array failed:\n{}",
        text(&array)
    );

    // The 2 x 2 job: one line per rank, both nodes, the all-reduce of rank+1 = 1+2+3+4.
    let job_dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("multi"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(job_dirs.len(), 1, "{job_dirs:?}");
    let log = std::fs::read_to_string(job_dirs[0].join("train.log")).unwrap();
    let lines = rank_lines(&log, 4);
    assert_eq!(lines.len(), 4, "{log}");
    for (r, line) in lines.iter().enumerate() {
        // srun --label prefixes "R: ".
        assert!(
            line.starts_with(&format!("{r}: rank {r}/4 node {} local {}", r / 2, r % 2)),
            "{line}"
        );
        assert!(line.ends_with("all_reduce(rank+1) = 10 [tcp]"), "{line}");
        assert!(
            line.contains(&format!("/n{}:", r / 2 + 1)),
            "rank {r} on the wrong node: {line}"
        );
    }
    let job = std::fs::read_to_string(job_dirs[0].join("job.json")).unwrap();
    assert!(
        job.contains("\"ntasks\": 4") && job.contains("n[1-2]"),
        "{job}"
    );

    // The array: each element in its own folder named by its Table 5 size, 2 ranks each.
    let arrays: Vec<PathBuf> = std::fs::read_dir(dir.join("sweep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(arrays.len(), 1, "{arrays:?}");
    for (i, (size, layers)) in [("3.2M", 4), ("13M", 4)].into_iter().enumerate() {
        let folder = arrays[0].join(size);
        let log = std::fs::read_to_string(folder.join("train.log"))
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
        let lines = rank_lines(&log, 2);
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines
                .iter()
                .all(|l| l.ends_with("all_reduce(rank+1) = 3 [tcp]")),
            "{log}"
        );
        let job = std::fs::read_to_string(folder.join("job.json")).unwrap();
        assert!(
            job.contains(&format!("\"array_index\": {i}"))
                && job.contains(&format!("\"size\": \"{size}\""))
                && job.contains(&format!("\"layers\": {layers}")),
            "{job}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The mpi backend under `srun --mpi=pmix` (one emulated node: two slurmd on one host share
    // PMIx's /tmp/spmix_appdir_* directory, so a 2-node pmix step cannot start here).
    if cfg!(feature = "mpi") {
        let out = Command::new("timeout")
            .args(["30", "srun", "--mpi=pmix", "-N1", "-n2", "--label"])
            .arg(&example)
            .args(["--backend", "mpi"])
            .env("SLURM_CONF", &conf)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let t = text(&out);
        if t.contains("not compiled in") {
            let reason = "srun --mpi=pmix: the barrier example was built without `mpi`";
            return skip(Category::Mpi, TEST, reason);
        }
        assert!(out.status.success(), "srun --mpi=pmix failed:\n{t}");
        let lines = rank_lines(&t, 2);
        assert_eq!(lines.len(), 2, "{t}");
        assert!(
            lines
                .iter()
                .all(|l| l.ends_with("all_reduce(rank+1) = 3 [mpi]")),
            "{t}"
        );
    }
}
