//! The data crate's error type: every variant names the file and, where one exists, the row,
//! column or key at fault, so a message alone tells the user what to fix.

use std::path::{Path, PathBuf};

/// Result alias for the data crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not an Arrow IPC file ({reason})")]
    NotArrowFile { path: PathBuf, reason: String },

    #[error("{path}: corrupt Arrow IPC file: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("{path}: missing column `{column}`")]
    MissingColumn { path: PathBuf, column: String },

    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },

    #[error(
        "{path}: row {row}: column `{column}` has {found} positions but `{reference}` has {expected}"
    )]
    RaggedRow {
        path: PathBuf,
        row: usize,
        column: String,
        found: usize,
        reference: String,
        expected: usize,
    },

    #[error(
        "{path}: row {row}, position {position}: column `{column}` holds id {id}, outside the vocabulary [{min}, {vocab})"
    )]
    IdOutOfRange {
        path: PathBuf,
        row: usize,
        position: usize,
        column: String,
        id: i64,
        min: i64,
        vocab: u64,
    },

    #[error(
        "{path}: row {row}, position {position}: column `{column}` must hold exactly one id, found {found}"
    )]
    BagSize {
        path: PathBuf,
        row: usize,
        position: usize,
        column: String,
        found: usize,
    },

    #[error("{path}: row {row}: empty sequence")]
    EmptySequence { path: PathBuf, row: usize },

    #[error("{path}: row {row}: column `{column}` is null")]
    NullValue {
        path: PathBuf,
        row: usize,
        column: String,
    },

    #[error("{path}: row {row}: {reason}")]
    BadRow {
        path: PathBuf,
        row: usize,
        reason: String,
    },

    #[error("{path}: {reason}")]
    BadMetadata { path: PathBuf, reason: String },

    #[error("{path}: line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{path}: config key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    /// A conversation of the chat JSON is malformed; the caller adds the file and row.
    #[error("chat: {reason}")]
    Chat { reason: String },

    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn chat(reason: impl Into<String>) -> Self {
        Self::Chat {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
