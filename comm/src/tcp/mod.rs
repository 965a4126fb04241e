//! The `tcp` backend: ring collectives over TCP for CPU runs and tests (the default on CPU).
//! Rendezvous goes through the [`Store`]; the data path is a ring of TCP connections driven by a
//! single-threaded poll loop (`engine`) executing plain-data schedules (`schedule`).

mod engine;
mod header;
mod poll;
mod ring;
mod schedule;

use std::time::{Duration, Instant};

use crate::communicator::{Communicator, ReduceOp, check};
use crate::element::Element;
use crate::env::RankEnv;
use crate::error::{CommError, Result};
use crate::stall::{self, Diagnosis};
use crate::store::{Store, StoreServer};
use engine::{EngineError, Links, Stall};
use header::Arg;
use schedule::Schedule;

/// One rank of a TCP ring.
pub struct TcpComm {
    rank: usize,
    world: usize,
    links: Option<Links>,
    store: Option<Store>,
    poisoned: Option<String>,
    /// Number of collectives started; equal on all ranks while they are in step.
    seq: u64,
    /// Declared last so it is dropped last: the store outlives our own use of it.
    _server: Option<StoreServer>,
}

impl TcpComm {
    /// Bootstraps from the launch contract: hosts the store if this rank should, connects to it,
    /// forms the ring and runs a barrier, all within `timeout`. World size 1 needs no network.
    pub fn connect(env: &RankEnv, timeout: Duration) -> Result<Self> {
        if env.world_size == 1 {
            return Ok(Self {
                rank: 0,
                world: 1,
                links: None,
                store: None,
                poisoned: None,
                seq: 0,
                _server: None,
            });
        }
        let start = Instant::now();
        let server = if env.hosts_store {
            Some(StoreServer::bind(
                &env.store_bind_addr(),
                &env.job_token,
                env.rank,
            )?)
        } else {
            None
        };
        let store = Store::connect(&env.store_addr(), &env.job_token, env.rank, timeout)?
            // Keys of a restarted gang never collide with the previous attempt's (the launcher's
            // store lives across restarts).
            .with_prefix(&format!("uqa/{}/", env.restart_count));
        let left = timeout.saturating_sub(start.elapsed());
        let mut comm = Self::over_store(store, env.rank, env.world_size, &env.job_token, left)?;
        comm._server = server;
        Ok(comm)
    }

    /// Forms the ring through an already connected store and runs a barrier.
    pub fn over_store(
        store: Store,
        rank: usize,
        world: usize,
        token: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let start = Instant::now();
        let links = if world > 1 {
            Some(ring::form(&store, rank, world, token, timeout)?)
        } else {
            None
        };
        let mut comm = Self {
            rank,
            world,
            links,
            store: Some(store),
            poisoned: None,
            seq: 0,
            _server: None,
        };
        comm.barrier(
            timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100)),
        )?;
        Ok(comm)
    }

    /// The rendezvous store (None for a single process), e.g. to share an NCCL id or check that
    /// all ranks resolved the same config.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Runs one collective: checks that the previous rank makes the same call, then executes the
    /// schedule. Any failure poisons the communicator.
    fn run<T: Element>(
        &mut self,
        op: &'static str,
        arg: Arg,
        buf: &mut [T],
        sched: &Schedule,
        timeout: Duration,
    ) -> Result<()> {
        if let Some(first) = &self.poisoned {
            return Err(CommError::Poisoned {
                op,
                rank: self.rank,
                first: first.clone(),
            });
        }
        let seq = self.seq;
        self.seq += 1;
        let Some(links) = self.links.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut hdr = [0i64; 2 * header::WORDS];
        hdr[..header::WORDS].copy_from_slice(&header::encode(
            seq as i64,
            op,
            arg,
            buf.len(),
            T::DTYPE,
        ));
        let result =
            engine::run(links, &mut hdr, &header::schedule(), op, deadline).and_then(|()| {
                let (mine, theirs) = hdr.split_at(header::WORDS);
                if mine != theirs {
                    return Err(EngineError::Comm(CommError::InvalidArgument {
                        op,
                        rank: self.rank,
                        reason: format!(
                            "ranks disagree: rank {} called {}, this rank {}",
                            links.prev_rank,
                            header::describe(theirs),
                            header::describe(mine)
                        ),
                    }));
                }
                engine::run(links, buf, sched, op, deadline)
            });
        let err = match result {
            Ok(()) => return Ok(()),
            Err(EngineError::Comm(e)) => e,
            Err(EngineError::Timeout(stall)) => self.diagnose(op, seq, stall, timeout),
        };
        self.poisoned = Some(err.to_string());
        Err(err)
    }

    /// Names the rank to blame for a timeout. Our direct ring peer may itself be waiting on
    /// someone else, so ranks that timed out report to the store and the ranks that never report
    /// within a short window are the silent ones.
    fn diagnose(&self, op: &'static str, seq: u64, stall: Stall, timeout: Duration) -> CommError {
        let direct = match (&stall, &self.links) {
            (Stall::Recv, Some(l)) => l.prev_rank,
            (Stall::Send, Some(l)) => l.next_rank,
            (_, None) => self.rank,
        };
        let mut err = CommError::Timeout {
            op,
            timeout,
            peer: direct,
            rank: self.rank,
            hint: String::new(),
        };
        let Some(store) = &self.store else { return err };
        let CommError::Timeout { peer, hint, .. } = &mut err else {
            return err;
        };
        match stall::diagnose(store, op, seq, self.rank, self.world) {
            Diagnosis::AllTimedOut => {
                *hint = format!("; every rank timed out in {op} #{seq}, so no rank is simply late");
            }
            Diagnosis::Silent(silent) => {
                if !silent.contains(peer) {
                    *peer = silent[0];
                }
                *hint = format!(
                    "; ranks that never reached {op} #{seq}: {silent:?} (ring neighbour: rank {direct})"
                );
            }
            Diagnosis::Unknown => {}
        }
        err
    }

    fn all_reduce_t<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        check::op::<T>("all_reduce", self.rank, op)?;
        let sched = self.sched(|r, n| schedule::all_reduce(buf.len(), r, n, op));
        self.run("all_reduce", Arg::Reduce(op), buf, &sched, timeout)
    }

    fn broadcast_t<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
        timeout: Duration,
    ) -> Result<()> {
        check::root("broadcast", self.rank, root, self.world)?;
        let sched = self.sched(|r, n| schedule::broadcast(buf.len(), r, n, root));
        self.run("broadcast", Arg::Root(root), buf, &sched, timeout)
    }

    fn all_gather_t<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        check::blocks("all_gather", self.rank, send.len(), recv.len(), self.world)?;
        let m = send.len();
        recv[self.rank * m..(self.rank + 1) * m].copy_from_slice(send);
        let sched = self.sched(|r, n| schedule::all_gather(recv.len(), r, n));
        self.run("all_gather", Arg::None, recv, &sched, timeout)
    }

    fn reduce_scatter_t<T: Element>(
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
        let mut work = send.to_vec();
        let sched = self.sched(|r, n| schedule::reduce_scatter(work.len(), r, n, op));
        self.run(
            "reduce_scatter",
            Arg::Reduce(op),
            &mut work,
            &sched,
            timeout,
        )?;
        let m = recv.len();
        recv.copy_from_slice(&work[self.rank * m..(self.rank + 1) * m]);
        Ok(())
    }

    /// The schedule for a multi-rank world; none (nothing to exchange) for one rank.
    fn sched(&self, make: impl FnOnce(usize, usize) -> Schedule) -> Schedule {
        if self.world > 1 {
            make(self.rank, self.world)
        } else {
            Schedule::default()
        }
    }
}

impl Communicator for TcpComm {
    crate::typed_collectives!("tcp");
    /// A ring all-gather of one byte per rank: it returns once every rank has contributed. The
    /// call header already checks that the ranks are in step.
    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        let mut all = vec![0u8; self.world];
        let sched = self.sched(|r, n| schedule::all_gather(n, r, n));
        self.run("barrier", Arg::None, &mut all, &sched, timeout)
    }
}

impl std::fmt::Debug for TcpComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("seq", &self.seq)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}
