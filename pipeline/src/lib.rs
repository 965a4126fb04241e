//! uqa-pipeline: the pipeline's stages run end to end, each through the command a user would
//! type (`uqa launch ... -- uqa pretrain ...`), so a pipeline exercises exactly what users run.
//!
//! - [`quickstart`]: synthetic data -> questions -> Trm++ pre-training -> alignment of the
//!   trained and the untrained encoder -> evaluation -> report with baselines and verdicts.
//! - [`study`]: a study file's elements (points of its axes), each through the same stages,
//!   run locally with resume, and reported in the paper's layout.

pub mod quickstart;
pub mod study;
pub mod uqa_exe;

/// Why a pipeline stopped, naming the stage.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] uqa_data::DataError),
    #[error(transparent)]
    Qa(#[from] uqabench::QaError),
    /// A study file or folder is invalid; `reason` names the key, axis or value.
    #[error("{}: {reason}", path.display())]
    Study {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("stage `uqa {command}` failed ({status})")]
    Stage { command: String, status: String },
}

pub type Result<T> = std::result::Result<T, PipelineError>;
