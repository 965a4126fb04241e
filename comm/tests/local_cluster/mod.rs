//! What the Slurm tests (comm/tests/slurm.rs, tests/slurm_pretrain.rs, tests/slurm_study.rs)
//! share about the local cluster of `slurm/local-cluster.sh`: whether it can run here, and the
//! guard that starts it and stops the daemons a test started.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use uqa_testkit::{Category, skip};

/// Whether the local cluster can run here; if not, `test` records a `slurm` skip (a failure
/// under `UQA_REQUIRE=slurm`) and returns false.
pub fn available(test: &str) -> bool {
    if !has("sbatch") || !has("slurmctld") {
        let reason =
            "sbatch/slurmctld not found (apt-get install slurm-wlm munge; see scripts/ci-deps.sh)";
        skip(Category::Slurm, test, reason);
        return false;
    }
    if !is_root() {
        skip(
            Category::Slurm,
            test,
            "the local Slurm cluster runs its daemons as root",
        );
        return false;
    }
    true
}

fn has(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Stops the local cluster when the test ends (passing or failing) if the test started it; a
/// cluster that was already up (someone's own) is left running.
pub struct ClusterGuard {
    script: PathBuf,
    started_here: bool,
}

impl ClusterGuard {
    /// Starts the cluster (panicking with the script's output when it cannot) and returns the
    /// guard and the path of its `slurm.conf`, for `SLURM_CONF`.
    pub fn up(script: PathBuf) -> (Self, String) {
        let (guard, up) = Self::start(script);
        assert!(
            up.status.success(),
            "cluster start failed:\n{}{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
        let state = std::env::var("UQA_SLURM_STATE").unwrap_or_else(|_| "/tmp/uqa-slurm".into());
        (guard, format!("{state}/slurm.conf"))
    }

    fn start(script: PathBuf) -> (Self, Output) {
        let was_up = Command::new(&script)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
        let up = Command::new(&script)
            .arg("start")
            .output()
            .expect("local-cluster.sh runs");
        let guard = ClusterGuard {
            script,
            started_here: !was_up,
        };
        (guard, up)
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new(&self.script).arg("stop").output();
        }
    }
}
