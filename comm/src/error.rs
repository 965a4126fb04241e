//! The comm crate's error type. Every variant carries the context a user needs to act on it
//! without a debugger: the variable and value, the address, the rank, the peer, the collective.

use std::time::Duration;

/// Result alias for the comm crate.
pub type Result<T, E = CommError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// A launch variable is present but unusable.
    #[error("environment variable {var}={value:?}: {reason}")]
    EnvVar {
        var: &'static str,
        value: String,
        reason: String,
    },

    /// A launch variable that the chosen launch mode requires is absent.
    #[error("environment variable {var} is not set ({context})")]
    EnvMissing {
        var: &'static str,
        context: &'static str,
    },

    /// A runtime setting this build or machine cannot honour (`runtime.device = "cuda"` on a
    /// CPU-only build, say).
    #[error("{setting} = {value:?}: {reason}")]
    Setting {
        setting: &'static str,
        value: String,
        reason: String,
    },

    /// The ranks disagree on something they must share (the config hash).
    #[error("{0}")]
    RanksDisagree(String),

    /// The launch variables are individually valid but inconsistent.
    #[error("inconsistent launch environment: {0}")]
    EnvInconsistent(String),

    #[error(
        "cannot listen on {addr} for rank {rank}: address already in use (another job on this port? choose another MASTER_PORT)"
    )]
    PortInUse { addr: String, rank: usize },

    #[error("cannot listen on {addr} for rank {rank}: {source}")]
    Bind {
        addr: String,
        rank: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("rank {rank}: rendezvous store at {addr} unreachable after {timeout:?}: {last_error}")]
    StoreUnreachable {
        addr: String,
        rank: usize,
        timeout: Duration,
        last_error: String,
    },

    #[error("rank {rank}: rendezvous store at {addr} rejected us: {reason}")]
    StoreRejected {
        addr: String,
        rank: usize,
        reason: String,
    },

    #[error("rank {rank}: store {op}({key:?}) at {addr} timed out after {timeout:?}")]
    StoreTimeout {
        op: &'static str,
        key: String,
        addr: String,
        rank: usize,
        timeout: Duration,
    },

    #[error("rank {rank}: store {op}({key:?}) at {addr} failed: {reason}")]
    StoreOp {
        op: &'static str,
        key: String,
        addr: String,
        rank: usize,
        reason: String,
    },

    #[error("rank {rank}: store {op} at {addr}: {source}")]
    StoreIo {
        op: &'static str,
        addr: String,
        rank: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },

    /// A collective did not complete in time; `peer` is the rank we were waiting on.
    #[error("{op}: timed out after {timeout:?} waiting for rank {peer} (on rank {rank}){hint}")]
    Timeout {
        op: &'static str,
        timeout: Duration,
        peer: usize,
        rank: usize,
        /// Extra diagnosis, e.g. which ranks never entered the collective.
        hint: String,
    },

    #[error("{op}: rank {peer} closed the connection (on rank {rank}); did it exit or crash?")]
    PeerClosed {
        op: &'static str,
        peer: usize,
        rank: usize,
    },

    #[error("{op}: i/o error with rank {peer} (on rank {rank}): {source}")]
    PeerIo {
        op: &'static str,
        peer: usize,
        rank: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("rank {rank}: handshake with rank {peer} failed: {reason}")]
    Handshake {
        rank: usize,
        peer: usize,
        reason: String,
    },

    #[error("{op}: invalid argument on rank {rank}: {reason}")]
    InvalidArgument {
        op: &'static str,
        rank: usize,
        reason: String,
    },

    /// After a failed collective the ranks may disagree about where they are in the sequence of
    /// collectives, so the communicator refuses further work instead of returning garbage.
    #[error("{op}: communicator on rank {rank} is unusable after an earlier failure: {first}")]
    Poisoned {
        op: &'static str,
        rank: usize,
        first: String,
    },

    /// An MPI call returned an error code (our communicator returns errors instead of aborting).
    #[error("{op}: MPI error on rank {rank}: {message} (MPI error code {code})")]
    Mpi {
        op: &'static str,
        rank: usize,
        code: i32,
        message: String,
    },

    /// A CUDA or NCCL call failed.
    #[error("{op}: NCCL/CUDA error on rank {rank}: {message}")]
    Nccl {
        op: &'static str,
        rank: usize,
        message: String,
    },

    #[error("backend {backend} is not available: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },
}
