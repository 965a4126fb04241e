//! The trainer's error type: what failed, and where (config key, file, step).

use std::path::{Path, PathBuf};

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] uqa_data::DataError),

    #[error(transparent)]
    Model(#[from] uqa_models::ModelError),

    #[error(transparent)]
    Comm(#[from] uqa_comm::CommError),

    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: config key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error(
        "step {step}: loss is {value}, gradient norm {grad_norm}: not finite; stopping (the last good checkpoint is kept)"
    )]
    NonFiniteLoss {
        step: u64,
        value: f64,
        grad_norm: f64,
    },

    #[error("{0}")]
    Invalid(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn config(path: &Path, key: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Attach context to candle results.
pub(crate) trait CandleContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| TrainError::Candle {
            context: context.to_string(),
            source,
        })
    }
}
