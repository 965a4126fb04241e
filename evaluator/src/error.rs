//! The evaluator's error type.

use std::path::{Path, PathBuf};

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] uqa_data::DataError),

    #[error(transparent)]
    Comm(#[from] uqa_comm::CommError),

    #[error(transparent)]
    Qa(#[from] uqabench::QaError),

    /// Boxed: the model's error is large and most evaluator paths never produce it.
    #[error(transparent)]
    Model(Box<uqa_models::ModelError>),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl From<uqa_models::ModelError> for EvalError {
    fn from(e: uqa_models::ModelError) -> Self {
        EvalError::Model(Box::new(e))
    }
}

impl EvalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
