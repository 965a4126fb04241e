//! Choosing and forming a communicator from the launch contract: the one place that knows which
//! backends exist (llm.c's lesson: one function decides how ranks bootstrap). Feature-gated
//! backends (`mpi`, `nccl`) plug in here.

use std::str::FromStr;
use std::time::Duration;

use crate::communicator::Communicator;
use crate::env::RankEnv;
use crate::error::{CommError, Result};
use crate::tcp::TcpComm;

/// A collective engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Ring collectives over TCP (CPU; the default).
    Tcp,
    /// MPI (cargo feature `mpi`; not built yet).
    Mpi,
    /// NCCL through cudarc (cargo feature `nccl`; not built yet).
    Nccl,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "mpi" => Ok(Self::Mpi),
            "nccl" => Ok(Self::Nccl),
            other => Err(format!(
                "unknown backend {other:?} (expected tcp, mpi or nccl)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub backend: Backend,
    /// Budget for reaching the store, meeting every rank and the first barrier.
    pub timeout: Duration,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Tcp,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Connects this rank to the others as described by `env` and returns the communicator.
pub fn bootstrap(env: &RankEnv, opts: &BootstrapOptions) -> Result<Box<dyn Communicator>> {
    match opts.backend {
        Backend::Tcp => Ok(Box::new(TcpComm::connect(env, opts.timeout)?)),
        Backend::Mpi => Err(CommError::BackendUnavailable {
            backend: "mpi",
            reason: "not compiled in (build with the `mpi` feature)".into(),
        }),
        Backend::Nccl => Err(CommError::BackendUnavailable {
            backend: "nccl",
            reason: "not compiled in (build with the `nccl` feature)".into(),
        }),
    }
}
