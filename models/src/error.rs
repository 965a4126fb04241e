//! The crate's error type. Public entry points return [`ModelError`]; internal tensor code uses
//! `candle_core::Result` and gets its context (which module, which op) attached at the boundary
//! through [`CandleContext::ctx`].

/// Everything that can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is invalid; `field` is the path of the offending key.
    #[error("invalid config field `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// A mini-batch is malformed (inconsistent lengths, broken bag offsets, ...).
    #[error("invalid batch: {reason}")]
    Batch { reason: String },
    /// An id does not fit the embedding table it indexes.
    #[error("{feature} id {id} at flat position {position} is outside its vocabulary of {vocab}")]
    IdOutOfRange {
        feature: &'static str,
        id: u32,
        position: usize,
        vocab: u64,
    },
    /// A conversation cannot be rendered (malformed chat JSON, no assistant turn, a prompt
    /// beyond the context); the caller adds the file and row.
    #[error("chat: {reason}")]
    Chat { reason: String },
    /// A model file (checkpoint, config, GGUF) is missing, unreadable or unsupported as a whole.
    #[error("{}: {reason}", path.display())]
    ModelFile {
        path: std::path::PathBuf,
        reason: String,
    },
    /// One tensor of a model file is missing, misshaped or stored in an unsupported type.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        path: std::path::PathBuf,
        tensor: String,
        reason: String,
    },
    /// A tokenizer produces ids the model has no embedding for.
    #[error(
        "tokenizer ({tokenizer}) has {tokenizer_vocab} token ids but the model's vocabulary is {model_vocab}"
    )]
    TokenizerMismatch {
        tokenizer: String,
        tokenizer_vocab: usize,
        model_vocab: usize,
    },
    /// A run's checkpoints are missing, damaged or do not fit the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A dataset, question file or tokenizer could not be read.
    #[error(transparent)]
    Data(#[from] uqa_data::DataError),
    /// A configuration is invalid as a whole (which file and key are in the message).
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed; `context` names the module and step.
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn model_file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        ModelError::ModelFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(
        path: &std::path::Path,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn chat(reason: impl Into<String>) -> Self {
        ModelError::Chat {
            reason: reason.into(),
        }
    }

    pub(crate) fn batch(reason: impl Into<String>) -> Self {
        ModelError::Batch {
            reason: reason.into(),
        }
    }
}

/// Attaches a context string to candle errors.
pub trait CandleContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| ModelError::Candle {
            context: context.to_string(),
            source,
        })
    }
}
