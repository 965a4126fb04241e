//! Studies: the paper's tables as sweeps. A study file names axes (encoders, sizes, lengths, ...)
//! whose values override the base configs of the stages (`spec`); its stages (`plan`) run
//! locally, stage by stage, resuming where a run stopped (`local`), or as dependent Slurm job
//! arrays (`slurm`), and whatever has finished is reported in the
//! paper's layout (`report`); `status` tells where each element stands. See `spec` for the
//! file.

pub mod local;
pub mod plan;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod status;

pub use local::{StudyEvent, run_local, run_stage};
pub use report::{StudyReport, report};
pub use slurm::{SlurmRun, Submitted, submit};
pub use spec::{AXES, Element, Study};
pub use status::{ElementStatus, StageState, status};
