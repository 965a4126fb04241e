//! `uqa-launch`: a torchrun-compatible launcher.
//!
//! It starts `--nproc-per-node` ranks with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
//! LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, MASTER_ADDR,
//! MASTER_PORT, TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID, and
//! OMP_NUM_THREADS=1 when unset and several ranks share the node, as torchrun does) plus ours
//! (UQA_RESTART_COUNT, UQA_JOB_TOKEN, UQA_STORE_HOSTED). Then it:
//! - hosts the rendezvous store on node 0 for the whole launch (in `--standalone` mode on a free
//!   port it binds itself, so there is no probe-then-reuse race);
//! - copies every output line of rank N to its own stdout/stderr as `[rankN]:line`;
//! - forwards SIGINT/SIGTERM to every rank's process group;
//! - when a rank fails, sends SIGTERM to the others, SIGKILL after `--grace-period`, restarts the
//!   gang up to `--max-restarts` times, and finally exits with the failing rank's exit code
//!   (128 + signal for a signal) after a one-line root cause on stderr;
//! - when all ranks succeed, kills leftovers they started in the background (they would hold the
//!   output pipes open forever) and exits 0.
//!
//! The binary is `fn main() { run(Args::parse()) }`; the `uqa launch` subcommand mounts the same
//! [`Args`] and calls [`run()`]. [`launch`] takes a resolved [`LaunchConfig`] and returns the
//! [`Outcome`] and errors as values, for callers that want them.

#![cfg(unix)]

pub mod args;
pub mod error;
pub mod gang;
pub mod output;
pub mod run;
mod unix;

pub use args::{Args, LaunchConfig};
pub use error::LaunchError;
pub use gang::{Death, Failure};
pub use run::{Outcome, launch, run};
