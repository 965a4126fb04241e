//! uqa's evaluation side: distributed answering of UQABench questions by an aligned model
//! (`answer`, the `uqa eval` command), scored and gathered with the benchmark's own code
//! (`uqabench`: question generation, scoring, baselines, reports).

pub mod answer;
pub mod error;

pub use error::{EvalError, Result};
