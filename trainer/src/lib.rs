//! uqa's training stages: pre-training of user-sequence encoders (`pretrain`) and their
//! alignment to an LLM through soft prompts (`align`), with their
//! optimiser (`optim`), checkpoints (`checkpoint`), metrics log (`metrics`), Prometheus endpoint
//! (`telemetry`) and encoder evaluation (`eval`).

pub mod align;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod plan;
pub mod pretrain;
pub mod telemetry;

pub use align::{AlignJob, AlignOutcome, align};
pub use config::PretrainJob;
pub use error::{Result, TrainError};
pub use pretrain::{PretrainOutcome, pretrain};
