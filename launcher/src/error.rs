//! The launcher's error type: bad flags (naming the flag and value), failures to host the store or
//! to start a rank (naming the command and rank).

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("cannot host the rendezvous store: {0}")]
    Store(#[from] uqa_comm::CommError),

    #[error("cannot start rank {rank} ({command:?}): {source}")]
    Spawn {
        rank: usize,
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

pub type Result<T, E = LaunchError> = std::result::Result<T, E>;
