//! Question generation for the seven UQABench sub-tasks (REFERENCE.md section 5).

pub mod generate;
pub mod rules;
pub mod task;
pub mod templates;

pub use generate::{QaGenConfig, QaGenReport, generate};
pub use task::{Group, Task};
pub use templates::Lang;
