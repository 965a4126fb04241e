//! Choosing and forming a communicator from the launch contract: the one place that knows which
//! backends exist (llm.c's lesson: one function decides how ranks bootstrap). Feature-gated
//! backends (`mpi`, `nccl`) plug in here.

use std::str::FromStr;
use std::time::Duration;

use crate::communicator::Communicator;
use crate::env::RankEnv;
#[cfg(not(all(feature = "mpi", any(feature = "nccl", feature = "nccl-gpu"))))]
use crate::error::CommError;
use crate::error::Result;
use crate::tcp::TcpComm;

/// A collective engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Ring collectives over TCP (CPU; the default).
    Tcp,
    /// MPI (cargo feature `mpi`): rank and world size from MPI (`mpirun`, `srun --mpi=pmix`).
    Mpi,
    /// NCCL through cudarc (cargo feature `nccl`): GPU `LOCAL_RANK`, unique id through the store;
    /// a clear error when no NCCL library is present.
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

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Mpi => "mpi",
            Self::Nccl => "nccl",
        })
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
        #[cfg(feature = "mpi")]
        Backend::Mpi => Ok(Box::new(crate::mpi::MpiComm::init(env, opts.timeout)?)),
        #[cfg(not(feature = "mpi"))]
        Backend::Mpi => Err(CommError::BackendUnavailable {
            backend: "mpi",
            reason: "not compiled in (build with the `mpi` feature)".into(),
        }),
        #[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
        Backend::Nccl => Ok(Box::new(crate::nccl::NcclComm::connect(env, opts.timeout)?)),
        #[cfg(not(any(feature = "nccl", feature = "nccl-gpu")))]
        Backend::Nccl => Err(CommError::BackendUnavailable {
            backend: "nccl",
            reason: "not compiled in (build with the `nccl` feature)".into(),
        }),
    }
}
