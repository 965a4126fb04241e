//! uqa's evaluation side: question/answer generation for the seven sub-tasks today; distributed
//! generation, scoring and reports as the alignment stage lands.

pub mod error;
pub mod qa;

pub use error::{EvalError, Result};
