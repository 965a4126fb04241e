//! Studies: the paper's tables as sweeps. A study file names axes (encoders, sizes, lengths, ...)
//! whose values override the base configs of the stages; its elements run locally, stage by
//! stage, resuming where a run stopped (`local`), and whatever has finished is reported in the
//! paper's layout (`report`); `status` tells where each element stands. See `spec` for the
//! file.

pub mod local;
pub mod report;
pub mod spec;
pub mod status;

pub use local::{StudyEvent, run_local};
pub use report::{StudyReport, report};
pub use spec::{AXES, Element, Study};
pub use status::{ElementStatus, StageState, status};
