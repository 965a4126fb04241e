//! uqa's training stages. Today: pre-training of user-sequence encoders (`pretrain`), with its
//! optimiser (`optim`), checkpoints (`checkpoint`), metrics log (`metrics`), Prometheus endpoint
//! (`telemetry`) and encoder evaluation (`eval`).

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod pretrain;
pub mod telemetry;

pub use config::PretrainJob;
pub use error::{Result, TrainError};
pub use pretrain::{PretrainOutcome, pretrain};
