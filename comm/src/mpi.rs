//! The `mpi` backend (cargo feature `mpi`): collectives through the system's MPI (rsmpi's raw
//! bindings over Debian's OpenMPI), for CPU clusters where the job is started by `mpirun` or by
//! `srun --mpi=pmix`. Rank and world size come from MPI itself, not from the launch variables.
//!
//! # Timeouts
//! MPI's blocking collectives cannot be interrupted, so every collective is started as a
//! non-blocking one (`MPI_Iallreduce`, `MPI_Ibcast`, ...) and its request is polled with
//! `MPI_Test` (which also drives OpenMPI's progress engine) until it completes or the deadline
//! passes. MPI cannot cancel a collective, so after a timeout the operation may still write into
//! its buffers at any later time. To keep that sound, MPI never sees the caller's slices: data is
//! copied into a staging buffer owned by the communicator, and on a timeout that buffer is leaked
//! (never freed or reused) and the communicator poisoned. The cost is one copy in and one out per
//! call (measure with `examples/allreduce_bench.rs --backend mpi`).
//!
//! A timeout returns [`CommError::Timeout`]. MPI does not say which rank is missing, so the ranks
//! that timed out report to a side-channel rendezvous store hosted by rank 0 (formed at start-up,
//! its address and token broadcast over MPI) and the ranks that never report within a second are
//! named as silent, as in the tcp backend. After a timeout the process should exit: MPI is then
//! deliberately not finalized (`MPI_Finalize` synchronises with the silent rank and would hang),
//! so `mpirun`/`srun` end the whole job.
//!
//! OpenMPI runs non-blocking collectives through `coll/libnbc`, whose default all-reduce
//! algorithm is often slower than its ring on two ranks: `mpirun --mca
//! coll_libnbc_iallreduce_algorithm 1` (or `OMPI_MCA_coll_libnbc_iallreduce_algorithm=1`)
//! selects the ring; compare with `examples/allreduce_bench.rs --backend mpi`.
//!
//! Ranks making different calls are not detected as in the tcp backend (that would cost a round
//! trip per call): MPI reports some mismatches as errors, others end in a timeout. `Max`/`Min`
//! over NaN follow MPI's C comparisons (NaN does not reliably win, unlike the tcp backend).
//! Counts are limited to `i32::MAX` elements per call (MPI's `int` counts).
//!
//! u8 sums do not use `MPI_SUM`: OpenMPI 4.1's AVX reduction component saturates 8-bit sums
//! instead of wrapping (open-mpi/ompi#8045, closed as won't fix; seen here on Debian 12's 4.1.4),
//! so they are all-gathered and folded in rank order with our own wrapping reduction.

use std::ffi::{CStr, c_int};
use std::time::{Duration, Instant};

use ::mpi::environment::Universe;
use ::mpi::ffi;
use ::mpi::topology::{Communicator as _, SimpleCommunicator};
use ::mpi::traits::AsRaw;

use crate::communicator::{Communicator, ReduceOp, check};
use crate::element::{DType, Element, as_bytes, as_bytes_mut};
use crate::env::{LaunchSource, RankEnv, fnv1a64, host_port};
use crate::error::{CommError, Result};
use crate::stall::{self, Diagnosis};
use crate::store::{Store, StoreServer};

/// Room for the side-channel store's `host:port` and token in the start-up broadcast.
const ADDR_MSG: usize = 512;
/// Room for one processor (host) name; OpenMPI's MPI_MAX_PROCESSOR_NAME is 256.
const NAME_MSG: usize = 256;
/// Tight `MPI_Test` polls before yielding the CPU between polls (ranks may share cores).
const SPINS: u32 = 64;

/// One rank of an MPI job.
pub struct MpiComm {
    rank: usize,
    world: usize,
    /// A duplicate of `MPI_COMM_WORLD` with `MPI_ERRORS_RETURN`, so our traffic never matches
    /// other MPI users' and errors come back as codes instead of aborting.
    comm: SimpleCommunicator,
    /// Staging memory MPI reads and writes (u64 for 8-byte alignment of f64/i64 elements).
    staging: Vec<u64>,
    seq: u64,
    poisoned: Option<String>,
    /// Whether a timed-out operation may still be running: then MPI must not be finalized.
    abandoned: bool,
    store: Option<Store>,
    _server: Option<StoreServer>,
    /// `Some` until drop; dropping it finalizes MPI.
    universe: Option<Universe>,
}

// SAFETY: MPI handles are raw pointers, hence not `Send` by default. MPI was initialised with at
// least MPI_THREAD_SERIALIZED (checked in `init`), which allows calls from any thread as long as
// no two are concurrent. All MPI calls of this process go through the one `MpiComm` (MPI can be
// initialised once, and `init` refuses a second time), and every call takes `&mut self` (or runs
// in `drop`), so calls are never concurrent.
unsafe impl Send for MpiComm {}

impl MpiComm {
    /// Initialises MPI (once per process), duplicates the world communicator and forms the
    /// side-channel store used to name silent ranks, all within `timeout`.
    ///
    /// `env` is the launch contract read from the environment; MPI's rank and size win over it,
    /// but a world of one MPI process where `env` promises several is an error (the processes
    /// were not started by an MPI launcher).
    pub fn init(env: &RankEnv, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        if ::mpi::environment::is_initialized() {
            return Err(unavailable(
                "MPI is already initialized in this process (it can be initialized once; keep one MpiComm)",
            ));
        }
        let (universe, provided) = ::mpi::initialize_with_threading(::mpi::Threading::Serialized)
            .ok_or_else(|| {
            unavailable("MPI_Init_thread was refused (MPI already initialized)")
        })?;
        if provided < ::mpi::Threading::Serialized {
            return Err(unavailable(&format!(
                "the MPI library provides thread level {provided:?}, MPI_THREAD_SERIALIZED is needed"
            )));
        }
        let comm = universe.world().duplicate();
        // SAFETY: `comm` is a valid communicator handle owned by us; ERRORS_RETURN is a
        // predefined handle; the call only changes how errors on `comm` are reported.
        let rc = unsafe { ffi::MPI_Comm_set_errhandler(comm.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
        let (rank, world) = (comm.rank() as usize, comm.size() as usize);
        let mut me = Self {
            rank,
            world,
            comm,
            staging: Vec::new(),
            seq: 0,
            poisoned: None,
            abandoned: false,
            store: None,
            _server: None,
            universe: Some(universe),
        };
        me.check_rc("init", rc)?;
        // Processes started by a non-MPI launcher (uqa-launch, torchrun, srun without --mpi) are
        // MPI singletons: each would train alone. When MPI sees several ranks it is right (under
        // mpirun inside an allocation the SLURM_* variables describe mpirun's daemons instead).
        if world == 1 && env.source != LaunchSource::Single && env.world_size > 1 {
            return Err(CommError::EnvInconsistent(format!(
                "launch variables say rank {} of {}, but MPI sees a world of 1: start MPI jobs \
                 with mpirun or srun --mpi=pmix (not uqa-launch or torchrun)",
                env.rank, env.world_size
            )));
        }
        me.side_channel(env, deadline)?;
        me.barrier(deadline.saturating_duration_since(Instant::now()))?;
        // Number user collectives from 1, as the tcp backend does after its bootstrap barrier.
        // (Diagnosis keys of start-up collectives are never reused: a failed start-up ends here.)
        me.seq = 1;
        Ok(me)
    }

    /// Forms the side-channel store: rank 0 hosts it (on loopback when every rank runs on its
    /// host, on all interfaces otherwise) and broadcasts `host:port` and a fresh token. The
    /// store only serves timeout diagnosis, so a rank that cannot reach it carries on without.
    fn side_channel(&mut self, env: &RankEnv, deadline: Instant) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        let mine = processor_name();
        let mut name = [0u8; NAME_MSG];
        let n = mine.len().min(NAME_MSG);
        name[..n].copy_from_slice(&mine.as_bytes()[..n]);
        let names = {
            let mut all = vec![0u8; NAME_MSG * self.world];
            self.all_gather_t(&name, &mut all, left())?;
            all
        };
        let one_host = names.chunks(NAME_MSG).all(|c| c == name.as_slice());
        let mut msg = [0u8; ADDR_MSG];
        if self.rank == 0 {
            let bind = if one_host { "127.0.0.1:0" } else { "0.0.0.0:0" };
            let token = format!(
                "mpi-{:016x}",
                fnv1a64(
                    format!(
                        "{}/{:?}/{}",
                        std::process::id(),
                        std::time::SystemTime::now(),
                        env.job_token
                    )
                    .as_bytes()
                )
            );
            // Diagnosis is best effort: on failure the others learn there is no store.
            if let Ok(server) = StoreServer::bind(bind, &token, 0) {
                let host = if one_host {
                    "127.0.0.1".to_string()
                } else {
                    mine
                };
                let text = format!("{}\n{token}", host_port(&host, server.local_addr().port()));
                if text.len() <= ADDR_MSG {
                    msg[..text.len()].copy_from_slice(text.as_bytes());
                    self._server = Some(server);
                }
            }
        }
        self.broadcast_t(&mut msg, 0, left())?;
        let text = String::from_utf8_lossy(&msg);
        let text = text.trim_end_matches('\0');
        if let Some((addr, token)) = text.split_once('\n') {
            let budget = left().min(Duration::from_secs(10));
            self.store = Store::connect(addr, token, self.rank, budget).ok();
        }
        Ok(())
    }

    /// The side-channel store (None for one rank or when it could not be formed).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    fn check_rc(&self, op: &'static str, rc: c_int) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        Err(CommError::Mpi {
            op,
            rank: self.rank,
            code: rc,
            message: error_string(rc),
        })
    }

    /// Staging regions of `send` and `recv` bytes, each 8-byte aligned and disjoint.
    fn stage(&mut self, send: usize, recv: usize) -> (*mut u8, *mut u8) {
        let send_words = send.div_ceil(8);
        let words = send_words + recv.div_ceil(8);
        if self.staging.len() < words {
            self.staging.resize(words, 0);
        }
        let base = self.staging.as_mut_ptr();
        // SAFETY: `send_words <= words <= self.staging.len()`, so the offset stays inside (or one
        // past the end of) the allocation.
        (
            base.cast::<u8>(),
            unsafe { base.add(send_words) }.cast::<u8>(),
        )
    }

    /// Runs one collective: `start` launches the non-blocking MPI operation on staging memory
    /// and returns its request, which is then polled until done or `timeout`. Any failure
    /// poisons the communicator.
    fn run(
        &mut self,
        op: &'static str,
        timeout: Duration,
        start: impl FnOnce(ffi::MPI_Comm, *mut ffi::MPI_Request) -> c_int,
    ) -> Result<()> {
        let seq = self.seq;
        self.seq += 1;
        let deadline = Instant::now() + timeout;
        // SAFETY: MPI_Request is a plain handle (pointer or integer); all-zero is a valid bit
        // pattern for either, and MPI overwrites it before we read it.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        let rc = start(self.comm.as_raw(), &mut req);
        if let Err(e) = self.check_rc(op, rc) {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        let mut spins = 0u32;
        loop {
            let mut flag: c_int = 0;
            // SAFETY: `req` was returned by a successful non-blocking call and is tested until it
            // completes (MPI then sets it to MPI_REQUEST_NULL); STATUS_IGNORE is the predefined
            // null status.
            let rc = unsafe { ffi::MPI_Test(&mut req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            if let Err(e) = self.check_rc(op, rc) {
                self.abandon();
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
            if flag != 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.abandon();
                let err = self.timeout_error(op, seq, timeout);
                self.poisoned = Some(err.to_string());
                return Err(err);
            }
            spins += 1;
            if spins > SPINS {
                std::thread::yield_now();
            }
        }
    }

    /// After a timeout MPI may still write into the staging memory: leak it so that memory is
    /// never freed or handed to anything else, and remember not to finalize MPI.
    fn abandon(&mut self) {
        std::mem::forget(std::mem::take(&mut self.staging));
        self.abandoned = true;
    }

    fn timeout_error(&self, op: &'static str, seq: u64, timeout: Duration) -> CommError {
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let (peer, hint) = match self
            .store
            .as_ref()
            .map(|s| stall::diagnose(s, op, seq, self.rank, self.world))
        {
            Some(Diagnosis::Silent(silent)) => (
                silent[0],
                format!("; ranks that never reached {op} #{seq}: {silent:?}"),
            ),
            Some(Diagnosis::AllTimedOut) => (
                others.first().copied().unwrap_or(self.rank),
                format!("; every rank timed out in {op} #{seq}, so no rank is simply late"),
            ),
            Some(Diagnosis::Unknown) | None => (
                others.first().copied().unwrap_or(self.rank),
                "; MPI does not say which rank is missing and the diagnosis store is unavailable"
                    .to_string(),
            ),
        };
        CommError::Timeout {
            op,
            timeout,
            peer,
            rank: self.rank,
            hint,
        }
    }

    fn ready(&self, op: &'static str) -> Result<()> {
        match &self.poisoned {
            Some(first) => Err(CommError::Poisoned {
                op,
                rank: self.rank,
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn count(&self, op: &'static str, n: usize) -> Result<c_int> {
        c_int::try_from(n).map_err(|_| CommError::InvalidArgument {
            op,
            rank: self.rank,
            reason: format!("{n} elements exceed MPI's limit of {} per call", c_int::MAX),
        })
    }

    fn all_reduce_t<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        const OP: &str = "all_reduce";
        self.ready(OP)?;
        check::op::<T>(OP, self.rank, op)?;
        if saturates::<T>(op) {
            let all = self.gather_all(OP, buf, timeout)?;
            fold(buf, &all, op, self.world);
            return Ok(());
        }
        let count = self.count(OP, buf.len())?;
        let bytes = size_of_val(buf);
        let (send, recv) = self.stage(bytes, bytes);
        // SAFETY: `send` has room for `bytes` bytes (see `stage`) and does not overlap `buf`.
        unsafe { std::ptr::copy_nonoverlapping(as_bytes(buf).as_ptr(), send, bytes) };
        let (dtype, mpi_op) = (datatype(T::DTYPE), reduce_op(op));
        self.run(OP, timeout, |comm, req| {
            // SAFETY: both staging regions hold `count` elements of `dtype`, are disjoint, and
            // stay allocated until the request completes (or forever, if it is abandoned).
            unsafe {
                ffi::MPI_Iallreduce(send.cast(), recv.cast(), count, dtype, mpi_op, comm, req)
            }
        })?;
        // SAFETY: the request completed, so `recv` holds `bytes` bytes of results; `buf` is a
        // distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(recv, as_bytes_mut(buf).as_mut_ptr(), bytes) };
        if op == ReduceOp::Avg {
            T::div(buf, self.world);
        }
        Ok(())
    }

    fn broadcast_t<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
        timeout: Duration,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        self.ready(OP)?;
        check::root(OP, self.rank, root, self.world)?;
        let count = self.count(OP, buf.len())?;
        let bytes = size_of_val(buf);
        let (data, _) = self.stage(bytes, 0);
        if self.rank == root {
            // SAFETY: `data` has room for `bytes` bytes and does not overlap `buf`.
            unsafe { std::ptr::copy_nonoverlapping(as_bytes(buf).as_ptr(), data, bytes) };
        }
        let dtype = datatype(T::DTYPE);
        self.run(OP, timeout, |comm, req| {
            // SAFETY: `data` holds `count` elements of `dtype` and outlives the request; `root`
            // is below the world size (checked), so it fits a c_int.
            unsafe { ffi::MPI_Ibcast(data.cast(), count, dtype, root as c_int, comm, req) }
        })?;
        // SAFETY: the request completed; `data` holds `bytes` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data, as_bytes_mut(buf).as_mut_ptr(), bytes) };
        Ok(())
    }

    fn all_gather_t<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        const OP: &str = "all_gather";
        self.ready(OP)?;
        check::blocks(OP, self.rank, send.len(), recv.len(), self.world)?;
        let count = self.count(OP, send.len())?;
        self.count(OP, recv.len())?;
        let (sb, rb) = (size_of_val(send), size_of_val(recv));
        let (s, r) = self.stage(sb, rb);
        // SAFETY: `s` has room for `sb` bytes and does not overlap `send`.
        unsafe { std::ptr::copy_nonoverlapping(as_bytes(send).as_ptr(), s, sb) };
        let dtype = datatype(T::DTYPE);
        self.run(OP, timeout, |comm, req| {
            // SAFETY: `s` holds `count` elements, `r` room for `world * count`, disjoint, both
            // alive until the request completes (or forever).
            unsafe {
                ffi::MPI_Iallgather(s.cast(), count, dtype, r.cast(), count, dtype, comm, req)
            }
        })?;
        // SAFETY: the request completed; `r` holds `rb` bytes.
        unsafe { std::ptr::copy_nonoverlapping(r, as_bytes_mut(recv).as_mut_ptr(), rb) };
        Ok(())
    }

    fn reduce_scatter_t<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter";
        self.ready(OP)?;
        check::op::<T>(OP, self.rank, op)?;
        check::blocks(OP, self.rank, recv.len(), send.len(), self.world)?;
        if saturates::<T>(op) {
            let all = self.gather_all(OP, send, timeout)?;
            let m = recv.len();
            let mine: Vec<T> = all
                .chunks(send.len().max(1))
                .flat_map(|block| block[self.rank * m..(self.rank + 1) * m].iter().copied())
                .collect();
            fold(recv, &mine, op, self.world);
            return Ok(());
        }
        let count = self.count(OP, recv.len())?;
        self.count(OP, send.len())?;
        let (sb, rb) = (size_of_val(send), size_of_val(recv));
        let (s, r) = self.stage(sb, rb);
        // SAFETY: `s` has room for `sb` bytes and does not overlap `send`.
        unsafe { std::ptr::copy_nonoverlapping(as_bytes(send).as_ptr(), s, sb) };
        let (dtype, mpi_op) = (datatype(T::DTYPE), reduce_op(op));
        self.run(OP, timeout, |comm, req| {
            // SAFETY: `s` holds `world * count` elements, `r` room for `count`, disjoint, both
            // alive until the request completes (or forever).
            unsafe {
                ffi::MPI_Ireduce_scatter_block(s.cast(), r.cast(), count, dtype, mpi_op, comm, req)
            }
        })?;
        // SAFETY: the request completed; `r` holds `rb` bytes.
        unsafe { std::ptr::copy_nonoverlapping(r, as_bytes_mut(recv).as_mut_ptr(), rb) };
        if op == ReduceOp::Avg {
            T::div(recv, self.world);
        }
        Ok(())
    }
}

impl MpiComm {
    /// Every rank's `mine`, concatenated in rank order (for reductions MPI gets wrong).
    fn gather_all<T: Element>(
        &mut self,
        op: &'static str,
        mine: &[T],
        timeout: Duration,
    ) -> Result<Vec<T>> {
        let mut all = vec![T::default(); mine.len() * self.world];
        self.all_gather_t(mine, &mut all, timeout)
            .map_err(|e| match e {
                CommError::Timeout {
                    timeout,
                    peer,
                    rank,
                    hint,
                    ..
                } => CommError::Timeout {
                    op,
                    timeout,
                    peer,
                    rank,
                    hint,
                },
                other => other,
            })?;
        Ok(all)
    }
}

/// Whether OpenMPI's built-in reduction would saturate instead of wrap (8-bit sums).
fn saturates<T: Element>(op: ReduceOp) -> bool {
    T::DTYPE == DType::U8 && matches!(op, ReduceOp::Sum | ReduceOp::Avg)
}

/// `out = blocks[0] op blocks[1] op ...` in rank order, `blocks` being `world` blocks of
/// `out.len()` elements.
fn fold<T: Element>(out: &mut [T], blocks: &[T], op: ReduceOp, world: usize) {
    let m = out.len();
    if m == 0 {
        return;
    }
    out.copy_from_slice(&blocks[..m]);
    for block in blocks.chunks(m).skip(1) {
        T::reduce(out, block, op);
    }
    if op == ReduceOp::Avg {
        T::div(out, world);
    }
}

impl Communicator for MpiComm {
    crate::typed_collectives!("mpi");
    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.ready("barrier")?;
        // SAFETY: a barrier moves no data; `req` is written by MPI.
        self.run("barrier", timeout, |comm, req| unsafe {
            ffi::MPI_Ibarrier(comm, req)
        })
    }
}

impl Drop for MpiComm {
    fn drop(&mut self) {
        if self.abandoned {
            // MPI_Finalize would wait for the operation we gave up on (and for the silent rank):
            // leave MPI as it is; the launcher ends the job when this process exits.
            std::mem::forget(self.universe.take());
        }
        // Otherwise `comm` is freed, then `universe` finalizes MPI, in field order.
    }
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("seq", &self.seq)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn unavailable(reason: &str) -> CommError {
    CommError::BackendUnavailable {
        backend: "mpi",
        reason: reason.to_string(),
    }
}

fn datatype(d: DType) -> ffi::MPI_Datatype {
    // SAFETY: reading predefined datatype handles, which MPI initialises before main (OpenMPI:
    // addresses of static objects) and never changes.
    unsafe {
        match d {
            DType::U8 => ffi::RSMPI_UINT8_T,
            DType::I64 => ffi::RSMPI_INT64_T,
            DType::F32 => ffi::RSMPI_FLOAT,
            DType::F64 => ffi::RSMPI_DOUBLE,
        }
    }
}

fn reduce_op(op: ReduceOp) -> ffi::MPI_Op {
    // SAFETY: as in `datatype`, for predefined reduction handles. Avg is a sum divided afterwards.
    unsafe {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => ffi::RSMPI_SUM,
            ReduceOp::Max => ffi::RSMPI_MAX,
            ReduceOp::Min => ffi::RSMPI_MIN,
        }
    }
}

fn error_string(code: c_int) -> String {
    let mut buf = vec![0 as std::ffi::c_char; 1024];
    let mut len: c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_ERROR_STRING (256 in OpenMPI, 1024 here) characters
    // plus the terminator, as the standard requires; `len` receives the length.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
    if rc != 0 {
        return "unknown MPI error".into();
    }
    // SAFETY: on success MPI wrote a NUL-terminated string into `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// This host's name as MPI reports it.
fn processor_name() -> String {
    ::mpi::environment::processor_name().unwrap_or_else(|_| "unknown-host".into())
}
