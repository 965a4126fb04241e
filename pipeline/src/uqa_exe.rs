//! Running a stage through the `uqa` executable, as a user types it: under `uqa launch` on
//! several ranks, under `srun` inside a Slurm allocation, or directly on one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{PipelineError, Result};

/// The `uqa` executable and the ranks its training and evaluation stages run on.
#[derive(Debug, Clone)]
pub struct UqaExe {
    pub path: PathBuf,
    pub nproc: usize,
}

impl UqaExe {
    /// Runs `uqa ARGS...` on `nproc` ranks through `uqa launch`, or directly on one.
    pub fn launch(&self, args: &[String]) -> Result<()> {
        let mut cmd = Command::new(&self.path);
        if self.nproc > 1 {
            cmd.args(["launch", "--standalone", "--nproc-per-node"])
                .arg(self.nproc.to_string())
                .arg("--")
                .arg(&self.path);
        }
        self.status(cmd.args(args), args)
    }

    /// Runs `uqa ARGS...` on every task of the Slurm allocation this process runs in, one rank
    /// per task (the ranks read SLURM_PROCID and friends). `--kill-on-bad-exit`: one failed
    /// rank ends the step instead of leaving the others waiting in a collective.
    pub fn srun(&self, args: &[String]) -> Result<()> {
        let mut cmd = Command::new("srun");
        cmd.arg("--kill-on-bad-exit=1").arg(&self.path);
        self.status(cmd.args(args), args)
    }

    /// Runs `uqa ARGS...` once (a stage that is not distributed: data, questions).
    pub fn once(&self, args: &[String]) -> Result<()> {
        self.status(Command::new(&self.path).args(args), args)
    }

    fn status(&self, cmd: &mut Command, args: &[String]) -> Result<()> {
        let status = cmd.status().map_err(|e| PipelineError::Io {
            path: PathBuf::from(cmd.get_program()),
            source: e,
        })?;
        if !status.success() {
            return Err(PipelineError::Stage {
                command: args.join(" "),
                status: status.to_string(),
            });
        }
        Ok(())
    }
}

/// `--set KEY="PATH"`.
pub fn set_path(key: &str, path: &Path) -> [String; 2] {
    ["--set".into(), format!("{key}=\"{}\"", path.display())]
}

/// `--set` before each `KEY=VALUE`.
pub fn overrides(sets: &[String]) -> impl Iterator<Item = String> + '_ {
    sets.iter().flat_map(|s| ["--set".to_string(), s.clone()])
}
