//! uqa's training stages, pre-training of user-sequence encoders (`pretrain`) and their
//! alignment to an LLM through soft prompts (`align`), both run by one loop (`engine`), with
//! their optimiser (`optim`), checkpoints (`checkpoint`), data parallelism (`parallel`), what
//! a run reports (`observe`: the JSONL log, the progress line, Prometheus) and encoder
//! evaluation (`eval`).

pub mod align;
pub mod bench_step;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod observe;
pub mod optim;
pub mod parallel;
pub mod plan;
pub mod pretrain;

pub use align::{AlignJob, AlignOutcome, align};
pub use config::PretrainJob;
pub use error::{Result, TrainError};
pub use pretrain::{PretrainOutcome, pretrain};
