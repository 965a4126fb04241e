//! The runtime of one process, resolved once at start: its place in the launch (rank, local
//! rank, world size: [`RankEnv`]), the collective backend and the compute device. Everything
//! else (the training loop, telemetry, the evaluator) takes these from the [`Runtime`], never
//! from the environment.

use std::fmt;
use std::str::FromStr;

use crate::bootstrap::Backend;
use crate::env::{LaunchSource, RankEnv};
use crate::error::{CommError, Result};

/// The collective backend: `tcp` (default), `mpi` or `nccl`; `mpirun`'s ranks default to `mpi`.
pub const UQA_COMM_BACKEND: &str = "UQA_COMM_BACKEND";

/// The device a run asks for (`runtime.device`, `--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// `cuda:LOCAL_RANK` when the build has CUDA and a device is visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device {other:?} (expected auto, cpu or cuda)"
            )),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// The device a process computes on, once resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda { ordinal: usize },
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Where and how this process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub env: RankEnv,
    pub backend: Backend,
    pub device: DeviceKind,
}

impl Runtime {
    /// From the process environment, with the device `device` asks for.
    pub fn from_env(device: DeviceRequest) -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok(), device)
    }

    /// From an injected lookup (tests).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        device: DeviceRequest,
    ) -> Result<Self> {
        let env = RankEnv::from_lookup(&get)?;
        let backend = match get(UQA_COMM_BACKEND).filter(|v| !v.trim().is_empty()) {
            Some(v) => v.trim().parse().map_err(|reason| CommError::EnvVar {
                var: UQA_COMM_BACKEND,
                value: v.clone(),
                reason,
            })?,
            None if env.source == LaunchSource::Mpirun => Backend::Mpi,
            None => Backend::Tcp,
        };
        let device = resolve_device(device, env.local_rank)?;
        Ok(Self {
            env,
            backend,
            device,
        })
    }

    /// One process on the CPU (in-process tests).
    pub fn single() -> Self {
        Self {
            env: RankEnv::single(),
            backend: Backend::Tcp,
            device: DeviceKind::Cpu,
        }
    }

    /// `rank 1 of 4 (local 1), tcp, cpu`: printed at start.
    pub fn describe(&self) -> String {
        format!(
            "rank {} of {} (local {}), {} backend, device {}",
            self.env.rank, self.env.world_size, self.env.local_rank, self.backend, self.device
        )
    }
}

/// `cpu` is the CPU. `cuda` is `cuda:LOCAL_RANK` (torchrun's convention: one GPU per local
/// rank), refused by name on a build without CUDA, when no device is visible, or when the local
/// rank has no device of its own. `auto` is `cuda:LOCAL_RANK` when the build has CUDA and the
/// local rank has a visible device, else the CPU.
fn resolve_device(request: DeviceRequest, local_rank: usize) -> Result<DeviceKind> {
    let refuse = |reason: String| CommError::Setting {
        setting: "runtime.device",
        value: request.to_string(),
        reason,
    };
    match (request, cuda_devices()) {
        (DeviceRequest::Cpu, _) => Ok(DeviceKind::Cpu),
        (DeviceRequest::Auto, Some(Ok(n))) if local_rank < n => Ok(DeviceKind::Cuda {
            ordinal: local_rank,
        }),
        (DeviceRequest::Auto, _) => Ok(DeviceKind::Cpu),
        (DeviceRequest::Cuda, None) => Err(refuse(
            "this build of uqa has no CUDA support (build with `--features cuda`); use \"cpu\" \
             or \"auto\""
                .into(),
        )),
        (DeviceRequest::Cuda, Some(Err(e))) => Err(refuse(format!(
            "no CUDA device is visible ({e}); use \"cpu\" or \"auto\""
        ))),
        (DeviceRequest::Cuda, Some(Ok(n))) if local_rank >= n => Err(refuse(format!(
            "local rank {local_rank} has no CUDA device of its own ({n} visible): start at most \
             {n} ranks per node"
        ))),
        (DeviceRequest::Cuda, Some(Ok(_))) => Ok(DeviceKind::Cuda {
            ordinal: local_rank,
        }),
    }
}

/// How many CUDA devices this process sees: `None` on a build without CUDA, an error (the
/// driver's, e.g. no device or no driver) when there are none.
#[cfg(feature = "cuda")]
fn cuda_devices() -> Option<std::result::Result<usize, String>> {
    Some(match cudarc::driver::CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err("the driver reports 0 devices".into()),
        Err(e) => Err(format!("CUDA driver: {e}")),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices() -> Option<std::result::Result<usize, String>> {
    None
}

impl DeviceKind {
    /// The CUDA ordinal, `None` for the CPU.
    pub fn cuda_ordinal(self) -> Option<usize> {
        match self {
            Self::Cpu => None,
            Self::Cuda { ordinal } => Some(ordinal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn runtime(pairs: &[(&str, &str)], device: DeviceRequest) -> Result<Runtime> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Runtime::from_lookup(|k| map.get(k).map(|v| v.to_string()), device)
    }

    #[test]
    fn backend_comes_from_its_variable_and_mpirun_defaults_to_mpi() {
        let single = runtime(&[], DeviceRequest::Auto).unwrap();
        assert_eq!(
            (single.backend, single.device),
            (Backend::Tcp, DeviceKind::Cpu)
        );
        let nccl = runtime(&[("UQA_COMM_BACKEND", "nccl")], DeviceRequest::Cpu).unwrap();
        assert_eq!(nccl.backend, Backend::Nccl);
        let mpirun = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")];
        let r = runtime(&mpirun, DeviceRequest::Auto).unwrap();
        assert_eq!(
            (r.backend, r.env.rank, r.env.world_size),
            (Backend::Mpi, 1, 2)
        );
        let err = runtime(&[("UQA_COMM_BACKEND", "gloo")], DeviceRequest::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("UQA_COMM_BACKEND") && err.contains("gloo"),
            "{err}"
        );
    }

    /// Without CUDA (a CPU build, or the CUDA build on a machine without a GPU), `cuda` is
    /// refused naming the setting and `auto` is the CPU.
    #[test]
    fn cuda_without_a_device_is_refused_by_name() {
        if cuda_devices().is_some_and(|n| n.is_ok()) {
            return; // a GPU host: tests/gpu.rs covers it
        }
        let err = runtime(&[], DeviceRequest::Cuda).unwrap_err().to_string();
        let why = if cfg!(feature = "cuda") {
            "no CUDA device is visible"
        } else {
            "no CUDA support"
        };
        assert!(err.contains("runtime.device") && err.contains(why), "{err}");
        let auto = runtime(&[], DeviceRequest::Auto).unwrap();
        assert_eq!(auto.device, DeviceKind::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>(), Ok(DeviceRequest::Cuda));
        assert!(
            "tpu"
                .parse::<DeviceRequest>()
                .unwrap_err()
                .contains("auto, cpu or cuda")
        );
    }
}
