//! The benchmark's error type.

use std::path::{Path, PathBuf};

pub type Result<T, E = QaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QaError {
    #[error(transparent)]
    Data(#[from] uqa_data::DataError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{0}")]
    Invalid(String),
}

impl QaError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
