//! The UQABench benchmark itself, apart from any model: question/answer generation for the seven
//! sub-tasks (`qa`), scoring of answers (`score`), model-free baselines (`baseline`), and the
//! paper-style tables and plots (`report`). Nothing here trains or runs a tensor: answering by an
//! aligned model is `uqa_evaluator`'s.

pub mod baseline;
pub mod error;
pub mod qa;
pub mod report;
pub mod score;

pub use error::{QaError, Result};
