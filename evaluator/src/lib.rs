//! uqa's evaluation side: question/answer generation for the seven sub-tasks (`qa`), scoring of
//! generated answers (`score`) and the paper-style tables and plots (`report`). Distributed
//! generation lands with the alignment stage.

pub mod error;
pub mod qa;
pub mod report;
pub mod score;

pub use error::{EvalError, Result};
