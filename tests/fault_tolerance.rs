//! Faults in data-parallel pre-training: `kill -9` of one rank mid-run makes the launcher
//! restart the gang, training resumes from the latest checkpoint, and the final weights equal an
//! uninterrupted run's bit for bit; a crash while a checkpoint is being written leaves the
//! previous one loadable.

mod common;

use common::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/tests/tiny_sasrec.toml")
        .display()
        .to_string()
}

fn launch(data: &Path, out: &Path, restarts: u32) -> Child {
    let exe = env!("CARGO_BIN_EXE_uqa");
    Command::new(exe)
        .args([
            "launch",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            &restarts.to_string(),
        ])
        .args([
            "--grace-period",
            "2",
            "--",
            exe,
            "pretrain",
            "--config",
            &config(),
        ])
        .args(["--set", &format!("data.dir=\"{}\"", data.display())])
        .args(["--set", &format!("train.out=\"{}\"", out.display())])
        .args([
            "--set",
            "train.epochs=3",
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "train.log_every=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn final_weights(out: &Path) -> Vec<u8> {
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    std::fs::read(
        out.join("checkpoints")
            .join(latest.trim())
            .join("model.safetensors"),
    )
    .unwrap()
}

fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|s| s.lines().filter(|l| l.contains("\"loss\"")).count())
        .unwrap_or(0)
}

#[test]
fn killed_rank_restarts_the_gang_and_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (clean, faulty) = (dir.path().join("clean"), dir.path().join("faulty"));

    let out = launch(&data, &clean, 0).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let child = launch(&data, &faulty, 1);
    // Wait until a few steps (and a checkpoint) exist, then SIGKILL rank 1.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        assert!(Instant::now() < deadline, "the run never reached step 5");
        if logged_steps(&faulty) >= 5
            && let Some(pid) = rank_pid(&faulty, 1)
        {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restarted run failed: {stderr}\n{stdout}"
    );
    assert!(
        stdout.contains("resumed from") || stderr.contains("resumed from"),
        "{stderr}\n{stdout}"
    );
    assert!(
        final_weights(&clean) == final_weights(&faulty),
        "weights differ after the restart"
    );
}

#[test]
fn a_crash_while_writing_a_checkpoint_leaves_the_previous_one_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let out = dir.path().join("run");
    let o = launch(&data, &out, 0).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Simulate a writer that died mid-checkpoint: a half-written temporary folder and a
    // truncated file inside it, exactly what an interrupted save leaves behind.
    let root = out.join("checkpoints");
    let partial = root.join(".step-99999999.tmp.4242");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"\x10\x00\x00").unwrap();
    let before = std::fs::read_to_string(root.join("latest")).unwrap();
    // Resuming (one more epoch) must load `latest`, ignore the debris, and succeed.
    let exe = env!("CARGO_BIN_EXE_uqa");
    let resumed = Command::new(exe)
        .args([
            "launch",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--",
            exe,
            "pretrain",
            "--config",
            &config(),
        ])
        .args(["--set", &format!("data.dir=\"{}\"", data.display())])
        .args(["--set", &format!("train.out=\"{}\"", out.display())])
        .args([
            "--set",
            "train.epochs=4",
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "train.log_every=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(resumed.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "resumed from {}",
            root.join(before.trim()).display()
        )),
        "{text}"
    );
    assert!(
        !partial.exists(),
        "stale temporary checkpoint folder was not cleaned up"
    );
}
