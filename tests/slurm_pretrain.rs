//! Real pre-training through the sbatch templates on the local two-node Slurm cluster
//! (`slurm/local-cluster.sh`): `slurm/multi_node.sbatch` runs `uqa pretrain` as a 2 nodes x 2
//! tasks job (ranks from SLURM_* variables, no launcher) and ends with the weights of one
//! process with the same global batch; `slurm/sweep_sizes.sbatch` runs a 2-element job array of
//! Table 5 sizes, each element pre-training on 2 ranks into its own folder. (comm/tests/slurm.rs
//! covers the same templates with the collective smoke program and the mpi backend.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[path = "../comm/tests/local_cluster/mod.rs"]
mod local_cluster;
use local_cluster::ClusterGuard;

const JOBS_TIMEOUT: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sbatch(conf: &str, dir: &Path, env: &[(&str, String)], args: &[&str]) -> Child {
    let mut cmd = Command::new("sbatch");
    cmd.env("SLURM_CONF", conf)
        .env("MASTER_ADDR", "127.0.0.1")
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

fn wait(mut child: Child, deadline: Instant, conf: &str, name: &str, log_dir: &Path) -> Output {
    loop {
        if child.try_wait().expect("sbatch status").is_some() {
            return child.wait_with_output().expect("sbatch output");
        }
        if Instant::now() >= deadline {
            let _ = Command::new("scancel")
                .env("SLURM_CONF", conf)
                .args(["--name", name])
                .status();
            let _ = child.kill();
            panic!(
                "job {name} did not finish within {JOBS_TIMEOUT:?}; logs in {}",
                log_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn only_subdir(dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

#[test]
fn sbatch_jobs_pretrain_for_real() {
    if !local_cluster::available("sbatch_jobs_pretrain_for_real") {
        return;
    }
    let (_cluster, conf) = ClusterGuard::up(repo().join("slurm/local-cluster.sh"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = tiny_data(dir);
    let exe = env!("CARGO_BIN_EXE_uqa");
    let base = format!(
        "{exe} pretrain --config {} --set 'data.dir=\"{}\"' --set train.max_steps=4 --set metrics.enabled=false",
        config("tiny_sasrec.toml"),
        data.display()
    );
    // $UQA_OUT_DIR is the job's output folder, set by the template for each task.
    let multi_cmd = format!("{base} --set \"train.out=\\\"$UQA_OUT_DIR\\\"\"");
    let sweep_cmd = format!(
        "{base} --set train.max_steps=2 --set \"train.out=\\\"$UQA_OUT_DIR\\\"\" \
         --set \"model.encoder={{kind = \\\"trmpp\\\", layers = $UQA_MODEL_LAYERS, width = $UQA_MODEL_WIDTH, heads = $UQA_MODEL_HEADS, dropout = 0.0}}\""
    );
    let start = Instant::now();
    let deadline = start + JOBS_TIMEOUT;
    let multi = sbatch(
        &conf,
        dir,
        &[
            ("TRAIN_CMD", multi_cmd),
            ("OUT_ROOT", dir.join("multi").display().to_string()),
        ],
        &[
            "--job-name=uqa-test-pretrain",
            "--nodes=2",
            "--ntasks-per-node=2",
            "--output=multi-%j.out",
            repo().join("slurm/multi_node.sbatch").to_str().unwrap(),
        ],
    );
    let multi = wait(multi, deadline, &conf, "uqa-test-pretrain", dir);
    let sweep = sbatch(
        &conf,
        dir,
        &[
            ("TRAIN_CMD", sweep_cmd),
            ("OUT_ROOT", dir.join("sweep").display().to_string()),
        ],
        &[
            "--job-name=uqa-test-pretrain-sweep",
            "--array=0-1",
            "--ntasks-per-node=2",
            "--output=sweep-%A_%a.out",
            repo().join("slurm/sweep_sizes.sbatch").to_str().unwrap(),
        ],
    );
    let sweep = wait(sweep, deadline, &conf, "uqa-test-pretrain-sweep", dir);
    println!("jobs finished in {:?}", start.elapsed());
    let logs = || {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".out"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        multi.status.success(),
        "pre-training job failed:\n{}",
        logs()
    );
    assert!(sweep.status.success(), "sweep job failed:\n{}", logs());

    // 2 nodes x 2 tasks: 4 ranks trained, and the weights equal one process with the same
    // global batch (the data-parallel equivalence, now under Slurm).
    let job = only_subdir(&dir.join("multi"));
    let metrics = std::fs::read_to_string(job.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"world_size\":4"), "{metrics}");
    let one = dir.join("one");
    ok(
        uqa(&[
            "pretrain",
            "--config",
            &config("tiny_sasrec.toml"),
            "--set",
            &format!("data.dir=\"{}\"", data.display()),
            "--set",
            &format!("train.out=\"{}\"", one.display()),
            "--set",
            "train.max_steps=4",
            "--set",
            "metrics.enabled=false",
        ]),
        "the 1-process reference run",
    );
    let (diff, name) = max_difference(&final_weights(&one), &final_weights(&job));
    assert!(
        diff < 2e-4,
        "Slurm 2x2 run differs from 1 process by {diff} in `{name}`"
    );

    // The array: each element pre-trained its Table 5 size on 2 ranks into its own folder.
    let sweep_root = only_subdir(&dir.join("sweep"));
    for (size, width) in [("3.2M", 256), ("13M", 512)] {
        let out = sweep_root.join(size);
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", out.display(), logs()));
        assert!(metrics.contains("\"world_size\":2"), "{metrics}");
        let weights = final_weights(&out);
        let q = weights
            .iter()
            .find(|(k, _)| k.ends_with("attn.q.weight"))
            .unwrap_or_else(|| {
                panic!(
                    "no attention weight in {:?}",
                    weights.keys().take(5).collect::<Vec<_>>()
                )
            });
        assert_eq!(q.1.len(), width * width, "{size}: {}", q.0);
    }
}
