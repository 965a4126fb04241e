//! Question generation for the seven UQABench sub-tasks (REFERENCE.md section 5), and yes/no
//! click questions for the CTR mode (`ctr`).

pub mod corpus;
pub mod ctr;
pub mod generate;
pub mod parse;
pub mod rules;
pub mod task;
pub mod templates;

pub use ctr::{CtrConfig, generate_ctr};
pub use generate::{QaGenConfig, QaGenReport, generate};
pub use task::{Group, Task};
pub use templates::Lang;
