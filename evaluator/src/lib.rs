//! uqa's evaluation side: question/answer generation for the seven sub-tasks (`qa`), scoring of
//! generated answers (`score`), distributed answering by an aligned model (`answer`, the
//! `uqa eval` command), model-free baselines (`baseline`) and the paper-style tables and plots
//! (`report`).

pub mod answer;
pub mod baseline;
pub mod error;
pub mod qa;
pub mod report;
pub mod score;

pub use error::{EvalError, Result};
