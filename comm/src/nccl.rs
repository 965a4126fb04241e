//! The `nccl` backend (cargo feature `nccl`): collectives on GPUs through `cudarc::nccl`, the
//! only GPU-specific code of this crate.
//!
//! Feature `nccl` builds cudarc with `dynamic-loading`: it compiles without CUDA, finds
//! `libcuda.so` and `libnccl.so` at run time, and **panics** on first use when they are missing.
//! So [`NcclComm::connect`] checks both libraries before any other cudarc call and returns
//! [`CommError::BackendUnavailable`] ("NCCL library not found: ...") instead. cudarc looks for
//! `libnccl.so`, not `libnccl.so.2` (the only file NCCL's pip wheel ships): add the symlink.
//! Feature `nccl-gpu` is the same code for GPU builds with candle's `cuda` feature, where cudarc
//! links the libraries at build time.
//!
//! Bootstrap: a tcp communicator is formed first (rendezvous store, liveness, timeout diagnosis);
//! rank 0 creates the NCCL unique id and publishes it in the store, the others `get` it, and
//! every rank joins with `ncclCommInitRank` on GPU `LOCAL_RANK`.
//!
//! The [`Communicator`] trait takes host slices, so each call copies to the device, runs the
//! collective on this rank's stream and copies back. Timeouts: the collective is followed by a
//! recorded event that is polled until the deadline; on a timeout the NCCL communicator is
//! aborted (`ncclCommAbort`, which stops the in-flight kernels) and the silent rank is named
//! through the store, as in the tcp backend. Training code on GPUs should reduce device tensors
//! directly; that API arrives with the trainer's `cuda` feature.
//!
//! Only type-checked and tested without a GPU so far (the missing-library path); the GPU path
//! needs a run on a GPU host (see `examples/barrier.rs --backend nccl`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType};

use crate::communicator::{Communicator, ReduceOp, check};
use crate::element::Element;
use crate::env::RankEnv;
use crate::error::{CommError, Result};
use crate::stall::{self, Diagnosis};
use crate::tcp::TcpComm;

/// Store key of the NCCL unique id (under the tcp communicator's per-restart prefix).
const ID_KEY: &str = "nccl/unique_id";
/// Tight event polls before yielding the CPU between polls.
const SPINS: u32 = 64;

/// Element types NCCL can move (all of ours).
trait DevElement: Element + NcclType + DeviceRepr + ValidAsZeroBits {}
impl<T: Element + NcclType + DeviceRepr + ValidAsZeroBits> DevElement for T {}

/// Under `nccl-gpu` cudarc links the libraries at build time: present by construction.
#[cfg(not(feature = "nccl"))]
pub fn libraries_present() -> Result<()> {
    Ok(())
}

/// Whether cudarc can load the CUDA driver and NCCL. Every cudarc call panics when its library
/// is missing, so this runs before any of them.
#[cfg(feature = "nccl")]
pub fn libraries_present() -> Result<()> {
    // SAFETY: these functions only try `dlopen` on candidate names and close them again; they
    // call nothing inside the libraries.
    let (driver, nccl) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nccl::sys::is_culib_present(),
        )
    };
    let missing = |what: &str, lib: &str, hint: &str| {
        let mut names = cudarc::get_lib_name_candidates(lib);
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        CommError::BackendUnavailable {
            backend: "nccl",
            reason: format!(
                "{what} library not found: none of {names:?} could be loaded from the library path{hint}"
            ),
        }
    };
    if !nccl {
        return Err(missing(
            "NCCL",
            "nccl",
            " (NCCL's pip wheel ships only libnccl.so.2: add a libnccl.so symlink next to it \
             and put that folder on LD_LIBRARY_PATH)",
        ));
    }
    if !driver {
        return Err(missing(
            "CUDA driver",
            "cuda",
            " (is this a GPU host with the NVIDIA driver installed?)",
        ));
    }
    Ok(())
}

/// One rank of an NCCL communicator.
pub struct NcclComm {
    rank: usize,
    world: usize,
    /// `None` after an abort.
    comm: Option<Comm>,
    stream: Arc<CudaStream>,
    /// Rendezvous, liveness and timeout diagnosis.
    tcp: TcpComm,
    seq: u64,
    poisoned: Option<String>,
}

// SAFETY: `Comm` and the stream hold raw CUDA/NCCL handles, hence not `Send` by default. NCCL
// communicators and CUDA streams may be used from any thread as long as calls on one
// communicator are not concurrent (NCCL's thread-safety rule); every call takes `&mut self`, and
// cudarc binds the CUDA context to the calling thread before each driver call.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Checks the libraries, forms the tcp communicator, shares the unique id through the store
    /// and initialises NCCL on GPU `env.local_rank`.
    pub fn connect(env: &RankEnv, timeout: Duration) -> Result<Self> {
        libraries_present()?;
        let start = Instant::now();
        let tcp = TcpComm::connect(env, timeout)?;
        let (rank, world) = (env.rank, env.world_size);
        let err = |op: &'static str, e: String| CommError::Nccl {
            op,
            rank,
            message: e,
        };
        let id = if world == 1 || rank == 0 {
            let id = Id::new().map_err(|e| err("ncclGetUniqueId", format!("{e:?}")))?;
            if let Some(store) = tcp.store() {
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                store.set(ID_KEY, &bytes)?;
            }
            id
        } else {
            let store = tcp
                .store()
                .ok_or_else(|| err("bootstrap", "the tcp communicator has no store".to_string()))?;
            let left = timeout.saturating_sub(start.elapsed());
            let bytes = store.get(ID_KEY, left)?;
            let internal: [std::ffi::c_char; 128] = bytes
                .iter()
                .map(|&b| b as std::ffi::c_char)
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|v: Vec<_>| {
                    err(
                        "bootstrap",
                        format!("unique id of {} bytes, expected 128", v.len()),
                    )
                })?;
            Id::uninit(internal)
        };
        // GPU LOCAL_RANK; modulo the visible count when the launcher already restricted
        // CUDA_VISIBLE_DEVICES to one GPU per task.
        let visible =
            CudaContext::device_count().map_err(|e| err("cuDeviceGetCount", e.to_string()))?;
        if visible < 1 {
            return Err(err("cuDeviceGetCount", "no visible CUDA device".into()));
        }
        let ordinal = env.local_rank % visible as usize;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| err("cuCtxCreate", format!("GPU {ordinal}: {e}")))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| err("cuStreamCreate", e.to_string()))?;
        // ncclCommInitRank blocks until every rank joins; the tcp barrier above means they are
        // all alive and past the id exchange.
        let comm = Comm::from_rank(stream.clone(), rank, world, id)
            .map_err(|e| err("ncclCommInitRank", format!("{e:?}")))?;
        Ok(Self {
            rank,
            world,
            comm: Some(comm),
            stream,
            tcp,
            // Number user collectives from 1, like the tcp backend after its bootstrap barrier.
            seq: 1,
            poisoned: None,
        })
    }

    /// Copies `host` to the device, runs `op` on it, waits (bounded) and copies the result into
    /// `out`.
    fn run<T: DevElement>(
        &mut self,
        name: &'static str,
        host: &[T],
        out: &mut [T],
        out_len: usize,
        timeout: Duration,
        op: impl FnOnce(&Comm, &mut cudarc::driver::CudaSlice<T>) -> Result<(), String>,
    ) -> Result<()> {
        if let Some(first) = &self.poisoned {
            return Err(CommError::Poisoned {
                op: name,
                rank: self.rank,
                first: first.clone(),
            });
        }
        let seq = self.seq;
        self.seq += 1;
        if host.is_empty() {
            // Nothing to move (CUDA refuses 0-byte allocations); every rank makes the same call.
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let result = self.launch(host, op).and_then(|dev| {
            let event = self.stream.record_event(None).map_err(|e| e.to_string())?;
            let mut spins = 0u32;
            loop {
                if event.try_is_complete().map_err(|e| e.to_string())? {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                spins += 1;
                if spins > SPINS {
                    std::thread::yield_now();
                }
            }
            let mut tmp = vec![T::default(); out_len];
            self.stream
                .memcpy_dtoh(&dev.slice(..out_len), tmp.as_mut_slice())
                .map_err(|e| e.to_string())?;
            Ok(Some(tmp))
        });
        let err = match result {
            Ok(Some(tmp)) => {
                out.copy_from_slice(&tmp[..out.len()]);
                return Ok(());
            }
            Ok(None) => {
                // Dropping the communicator aborts it (ncclCommAbort), stopping its kernels.
                self.comm = None;
                self.timeout_error(name, seq, timeout)
            }
            Err(message) => CommError::Nccl {
                op: name,
                rank: self.rank,
                message,
            },
        };
        self.poisoned = Some(err.to_string());
        Err(err)
    }

    fn launch<T: DevElement>(
        &self,
        host: &[T],
        op: impl FnOnce(&Comm, &mut cudarc::driver::CudaSlice<T>) -> Result<(), String>,
    ) -> Result<cudarc::driver::CudaSlice<T>, String> {
        let comm = self.comm.as_ref().ok_or("communicator was aborted")?;
        let mut dev = self.stream.clone_htod(host).map_err(|e| e.to_string())?;
        op(comm, &mut dev)?;
        Ok(dev)
    }

    fn timeout_error(&self, op: &'static str, seq: u64, timeout: Duration) -> CommError {
        let other = (self.rank + 1) % self.world;
        let (peer, hint) = match self
            .tcp
            .store()
            // Own namespace: the tcp communicator's diagnosis keys live under "stall/" too.
            .map(|s| stall::diagnose(&s.with_prefix("nccl/"), op, seq, self.rank, self.world))
        {
            Some(Diagnosis::Silent(s)) => (
                s[0],
                format!("; ranks that never reached {op} #{seq}: {s:?}"),
            ),
            Some(Diagnosis::AllTimedOut) => (
                other,
                format!("; every rank timed out in {op} #{seq}, so no rank is simply late"),
            ),
            _ => (other, "; NCCL does not say which rank is missing".into()),
        };
        CommError::Timeout {
            op,
            timeout,
            peer,
            rank: self.rank,
            hint,
        }
    }

    fn all_reduce_t<T: DevElement>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        check::op::<T>("all_reduce", self.rank, op)?;
        let host = buf.to_vec();
        let n = buf.len();
        self.run("all_reduce", &host, buf, n, timeout, |c, d| {
            c.all_reduce_in_place(d, &nccl_op(op))
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        })
    }

    fn broadcast_t<T: DevElement>(
        &mut self,
        buf: &mut [T],
        root: usize,
        timeout: Duration,
    ) -> Result<()> {
        check::root("broadcast", self.rank, root, self.world)?;
        let host = buf.to_vec();
        let n = buf.len();
        self.run("broadcast", &host, buf, n, timeout, |c, d| {
            c.broadcast_in_place(d, root as i32)
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        })
    }

    fn all_gather_t<T: DevElement>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        check::blocks("all_gather", self.rank, send.len(), recv.len(), self.world)?;
        // Gather in place: the device buffer is recv-sized, our block already at its offset.
        let m = send.len();
        let mut host = vec![T::default(); recv.len()];
        host[self.rank * m..(self.rank + 1) * m].copy_from_slice(send);
        let n = recv.len();
        let stream = self.stream.clone();
        self.run("all_gather", &host, recv, n, timeout, move |c, d| {
            let own = stream.clone_htod(send).map_err(|e| e.to_string())?;
            c.all_gather(&own, d)
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        })
    }

    fn reduce_scatter_t<T: DevElement>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        check::op::<T>("reduce_scatter", self.rank, op)?;
        check::blocks(
            "reduce_scatter",
            self.rank,
            recv.len(),
            send.len(),
            self.world,
        )?;
        let n = recv.len();
        let stream = self.stream.clone();
        // The device buffer holds `send`; the result goes to a recv-sized buffer copied back
        // into the first `n` elements of it.
        self.run("reduce_scatter", send, recv, n, timeout, move |c, d| {
            let mut out = stream.alloc_zeros::<T>(n).map_err(|e| e.to_string())?;
            c.reduce_scatter(&*d, &mut out, &nccl_op(op))
                .map_err(|e| format!("{e:?}"))?;
            stream
                .memcpy_dtod(&out, &mut d.slice_mut(..n))
                .map_err(|e| e.to_string())
        })
    }
}

fn nccl_op(op: ReduceOp) -> cudarc::nccl::ReduceOp {
    match op {
        ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
        ReduceOp::Avg => cudarc::nccl::ReduceOp::Avg,
        ReduceOp::Max => cudarc::nccl::ReduceOp::Max,
        ReduceOp::Min => cudarc::nccl::ReduceOp::Min,
    }
}

impl Communicator for NcclComm {
    crate::typed_collectives!("nccl");
    /// An all-reduce of one byte: NCCL has no barrier, and this orders the GPU streams too.
    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        let mut one = [0u8];
        let host = one;
        self.run("barrier", &host, &mut one, 1, timeout, |c, d| {
            c.all_reduce_in_place(d, &cudarc::nccl::ReduceOp::Sum)
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        })
    }
}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("seq", &self.seq)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}
