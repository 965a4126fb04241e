//! The guard both Slurm tests (comm/tests/slurm.rs and tests/slurm_pretrain.rs) put around the
//! local cluster of `slurm/local-cluster.sh`, so that a test stops the daemons it started.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Stops the local cluster when the test ends (passing or failing) if the test started it; a
/// cluster that was already up (someone's own) is left running.
pub struct ClusterGuard {
    script: PathBuf,
    started_here: bool,
}

impl ClusterGuard {
    pub fn start(script: PathBuf) -> (Self, Output) {
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
