//! The in-process backend: N communicators for N threads of one process, exchanging through shared
//! memory. It exists so distributed logic (bucketing, sharded optimisers, sampler padding) can be
//! unit-tested in one process; its results are the reference the TCP backend is tested against.
//! Reductions fold ranks in order 0..n, so every rank gets bitwise identical results.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::communicator::{Communicator, ReduceOp, check};
use crate::element::Element;
use crate::error::{CommError, Result};

type Deposit = Arc<dyn Any + Send + Sync>;

/// One collective call in flight: what each rank contributed.
struct Round {
    deposits: Vec<Option<(&'static str, Deposit)>>,
    taken: usize,
}

#[derive(Default)]
struct Shared {
    rounds: Mutex<HashMap<u64, Round>>,
    cv: Condvar,
}

/// One rank of an in-process group.
pub struct LocalComm {
    rank: usize,
    world: usize,
    seq: u64,
    shared: Arc<Shared>,
    poisoned: Option<String>,
}

impl LocalComm {
    /// Creates the `n` communicators of one group; give one to each thread.
    pub fn group(n: usize) -> Vec<LocalComm> {
        let shared = Arc::new(Shared::default());
        (0..n)
            .map(|rank| LocalComm {
                rank,
                world: n,
                seq: 0,
                shared: Arc::clone(&shared),
                poisoned: None,
            })
            .collect()
    }

    /// Runs `f` on `n` threads, one communicator each, and returns the results in rank order.
    pub fn run<R: Send>(n: usize, f: impl Fn(LocalComm) -> R + Sync) -> Vec<R> {
        std::thread::scope(|s| {
            let handles: Vec<_> = Self::group(n)
                .into_iter()
                .map(|c| s.spawn(|| f(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    /// Deposits this rank's contribution and returns everybody's once all have arrived.
    fn exchange(
        &mut self,
        op: &'static str,
        mine: Deposit,
        timeout: Duration,
    ) -> Result<Vec<Deposit>> {
        if let Some(first) = &self.poisoned {
            return Err(CommError::Poisoned {
                op,
                rank: self.rank,
                first: first.clone(),
            });
        }
        let result = self.exchange_inner(op, mine, timeout);
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result
    }

    fn exchange_inner(
        &mut self,
        op: &'static str,
        mine: Deposit,
        timeout: Duration,
    ) -> Result<Vec<Deposit>> {
        let seq = self.seq;
        self.seq += 1;
        let deadline = Instant::now() + timeout;
        let mut rounds = self.shared.rounds.lock().unwrap_or_else(|p| p.into_inner());
        rounds
            .entry(seq)
            .or_insert_with(|| Round {
                deposits: vec![None; self.world],
                taken: 0,
            })
            .deposits[self.rank] = Some((op, mine));
        self.shared.cv.notify_all();
        loop {
            let round = rounds
                .get_mut(&seq)
                .expect("round removed before every rank took it");
            if round.deposits.iter().all(Option::is_some) {
                let all: Vec<(&'static str, Deposit)> =
                    round.deposits.iter().flatten().cloned().collect();
                round.taken += 1;
                if round.taken == self.world {
                    rounds.remove(&seq);
                }
                if let Some((other, (name, _))) =
                    all.iter().enumerate().find(|(_, (n, _))| *n != op)
                {
                    return Err(CommError::InvalidArgument {
                        op,
                        rank: self.rank,
                        reason: format!("collective mismatch: rank {other} called {name}"),
                    });
                }
                return Ok(all.into_iter().map(|(_, d)| d).collect());
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = round
                    .deposits
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_none())
                    .map(|(i, _)| i)
                    .collect();
                return Err(CommError::Timeout {
                    op,
                    timeout,
                    peer: missing[0],
                    rank: self.rank,
                    hint: format!("; ranks that never entered {op}: {missing:?}"),
                });
            }
            rounds = self
                .shared
                .cv
                .wait_timeout(rounds, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn all_reduce_t<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        check::op::<T>("all_reduce", self.rank, op)?;
        let all = self.exchange("all_reduce", Arc::new(buf.to_vec()), timeout)?;
        let all = downcast::<T>(&all, "all_reduce", self.rank, buf.len())?;
        buf.copy_from_slice(all[0]);
        for other in &all[1..] {
            T::reduce(buf, other, op);
        }
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
        check::root("broadcast", self.rank, root, self.world)?;
        let all = self.exchange("broadcast", Arc::new(buf.to_vec()), timeout)?;
        let all = downcast::<T>(&all, "broadcast", self.rank, buf.len())?;
        buf.copy_from_slice(all[root]);
        Ok(())
    }

    fn all_gather_t<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        check::blocks("all_gather", self.rank, send.len(), recv.len(), self.world)?;
        let all = self.exchange("all_gather", Arc::new(send.to_vec()), timeout)?;
        let all = downcast::<T>(&all, "all_gather", self.rank, send.len())?;
        for (block, part) in recv.chunks_exact_mut(send.len().max(1)).zip(all) {
            block.copy_from_slice(part);
        }
        Ok(())
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
        let all = self.exchange("reduce_scatter", Arc::new(send.to_vec()), timeout)?;
        let all = downcast::<T>(&all, "reduce_scatter", self.rank, send.len())?;
        let block = self.rank * recv.len()..(self.rank + 1) * recv.len();
        recv.copy_from_slice(&all[0][block.clone()]);
        for other in &all[1..] {
            T::reduce(recv, &other[block.clone()], op);
        }
        if op == ReduceOp::Avg {
            T::div(recv, self.world);
        }
        Ok(())
    }
}

/// Views every rank's deposit as `&[T]` of the expected length.
fn downcast<'a, T: Element>(
    all: &'a [Deposit],
    op: &'static str,
    rank: usize,
    len: usize,
) -> Result<Vec<&'a [T]>> {
    all.iter()
        .enumerate()
        .map(|(i, d)| match d.downcast_ref::<Vec<T>>() {
            Some(v) if v.len() == len => Ok(v.as_slice()),
            Some(v) => Err(CommError::InvalidArgument {
                op,
                rank,
                reason: format!("rank {i} passed {} elements, this rank {len}", v.len()),
            }),
            None => Err(CommError::InvalidArgument {
                op,
                rank,
                reason: format!("rank {i} passed another element type than {:?}", T::DTYPE),
            }),
        })
        .collect()
}

impl Communicator for LocalComm {
    crate::typed_collectives!("local");
    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.exchange("barrier", Arc::new(()), timeout).map(drop)
    }
}

impl std::fmt::Debug for LocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommunicatorExt;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn collectives_on_four_threads() {
        let out = LocalComm::run(4, |mut c| {
            let r = c.rank() as f32;
            let mut v = [r, 10.0 * r];
            c.all_reduce(&mut v, ReduceOp::Sum, T).unwrap();
            let mut m = [r];
            c.all_reduce(&mut m, ReduceOp::Max, T).unwrap();
            let mut a = [r];
            c.all_reduce(&mut a, ReduceOp::Avg, T).unwrap();
            let mut b = [c.rank() as i64 + 7];
            c.broadcast(&mut b, 2, T).unwrap();
            let g = c.all_gather_vec(&[c.rank() as u8], T).unwrap();
            let mut rs = [0f64; 2];
            let send: Vec<f64> = (0..8).map(|i| i as f64).collect();
            c.reduce_scatter(&send, &mut rs, ReduceOp::Sum, T).unwrap();
            c.barrier(T).unwrap();
            let bytes = c.all_gather_bytes(&vec![b'x'; c.rank()], T).unwrap();
            (v, m, a, b, g, rs, bytes)
        });
        for (rank, (v, m, a, b, g, rs, bytes)) in out.into_iter().enumerate() {
            assert_eq!(v, [6.0, 60.0]);
            assert_eq!(m, [3.0]);
            assert_eq!(a, [1.5]);
            assert_eq!(b, [9]);
            assert_eq!(g, [0, 1, 2, 3]);
            let base = 2.0 * rank as f64;
            assert_eq!(rs, [4.0 * base, 4.0 * (base + 1.0)]);
            assert_eq!(bytes.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 2, 3]);
        }
    }

    #[test]
    fn silent_rank_times_out_naming_it_then_poisons() {
        let out = LocalComm::run(3, |mut c| {
            if c.rank() == 1 {
                return None;
            }
            let err = c.barrier(Duration::from_millis(100)).unwrap_err();
            let again = c.barrier(T).unwrap_err();
            Some((err.to_string(), again.to_string()))
        });
        let (err, again) = out[0].clone().unwrap();
        assert!(
            err.starts_with("barrier: timed out after 100ms waiting for rank 1"),
            "{err}"
        );
        assert!(err.contains("never entered barrier: [1]"), "{err}");
        assert!(again.contains("unusable"), "{again}");
    }

    #[test]
    fn rejects_bad_arguments() {
        let out = LocalComm::run(2, |mut c| {
            let e1 = c
                .all_reduce(&mut [1i64], ReduceOp::Avg, T)
                .unwrap_err()
                .to_string();
            let e2 = c
                .all_gather(&[1u8], &mut [0u8; 3], T)
                .unwrap_err()
                .to_string();
            (e1, e2)
        });
        assert!(
            out[0].0.contains("Avg needs a floating-point type"),
            "{}",
            out[0].0
        );
        assert!(out[0].1.contains("is not 2 blocks of 1"), "{}", out[0].1);
    }
}
