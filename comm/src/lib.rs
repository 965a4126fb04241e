//! Collective communication for uqa.
//!
//! - [`env`](mod@env): the launch contract ([`RankEnv`]) shared with `uqa-launch`, torchrun and `srun`;
//! - [`store`]: the rendezvous key-value store ([`Store`], [`StoreServer`]);
//! - [`Communicator`]: all-reduce, broadcast, all-gather, reduce-scatter and barrier, each with a
//!   timeout, typed through [`CommunicatorExt`];
//! - backends: [`TcpComm`] (ring over TCP, CPU default), [`LocalComm`] (threads of one process,
//!   for tests), `MpiComm` (feature `mpi`: rsmpi over the system's MPI, started by `mpirun` or
//!   `srun --mpi=pmix`) and `NcclComm` (feature `nccl`, or `nccl-gpu` next to candle's `cuda`:
//!   cudarc, a clear error without NCCL); [`bootstrap()`] picks one from the environment.
//!
//! ```no_run
//! use std::time::Duration;
//! use uqa_comm::{bootstrap, BootstrapOptions, CommunicatorExt, RankEnv, ReduceOp};
//! let env = RankEnv::from_env()?;
//! let mut comm = bootstrap(&env, &BootstrapOptions::default())?;
//! let mut grads = vec![1.0f32; 1024];
//! comm.all_reduce(&mut grads, ReduceOp::Avg, Duration::from_secs(30))?;
//! # Ok::<(), uqa_comm::CommError>(())
//! ```

#![cfg(unix)]

pub mod bootstrap;
pub mod communicator;
pub mod element;
pub mod env;
pub mod error;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
pub mod nccl;
pub mod nodelist;
pub mod replicas;
pub mod runtime;
mod stall;
pub mod store;
pub mod tcp;
mod wire;

pub use bootstrap::{Backend, BootstrapOptions, bootstrap};
pub use communicator::{Communicator, CommunicatorExt, ReduceOp};
pub use element::{BufMut, BufRef, DType, Element};
pub use env::{LaunchSource, RankEnv};
pub use error::{CommError, Result};
pub use local::LocalComm;
#[cfg(feature = "mpi")]
pub use mpi::MpiComm;
#[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
pub use nccl::NcclComm;
pub use replicas::{DEFAULT_BUCKET_MB, Replicas, SyncStats};
pub use runtime::{DeviceKind, DeviceRequest, Runtime, UQA_COMM_BACKEND};
pub use store::{Store, StoreServer};
pub use tcp::TcpComm;
pub use wire::{MAX_FRAME, MAX_KEY};
