//! The replicas of one run: a single process, or ranks joined by a communicator. What training
//! and evaluation need from their peers, in their terms: agree on a value, sum a few scalars,
//! sum or broadcast flat f32 buffers in size-capped buckets, gather bytes, wait at a barrier.
//! Every call is a no-op (or the identity) for a single process.

use std::time::{Duration, Instant};

use crate::bootstrap::{BootstrapOptions, bootstrap};
use crate::communicator::{Communicator, CommunicatorExt, ReduceOp};
use crate::error::{CommError, Result};
use crate::runtime::Runtime;

/// PyTorch DDP's default gradient bucket cap, in MB.
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

/// Bytes moved and time spent in one bucketed collective.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncStats {
    pub bytes: usize,
    pub seconds: f64,
}

pub enum Replicas {
    Single,
    Distributed {
        comm: Box<dyn Communicator>,
        bucket_elems: usize,
        timeout: Duration,
    },
}

impl Replicas {
    /// The ranks `runtime` describes, joined through its backend (a single process when the
    /// world has one rank); every collective waits at most `timeout`.
    pub fn connect(runtime: &Runtime, timeout: Duration) -> Result<Self> {
        if runtime.env.world_size == 1 {
            return Ok(Replicas::Single);
        }
        let opts = BootstrapOptions {
            backend: runtime.backend,
            timeout,
        };
        let comm = bootstrap(&runtime.env, &opts)?;
        // MPI learns the world from mpirun itself: it must agree with the launch variables.
        if (comm.rank(), comm.world_size()) != (runtime.env.rank, runtime.env.world_size) {
            return Err(CommError::EnvInconsistent(format!(
                "the launch variables say rank {} of {}, the {} backend rank {} of {}",
                runtime.env.rank,
                runtime.env.world_size,
                runtime.backend,
                comm.rank(),
                comm.world_size()
            )));
        }
        Ok(Self::with_comm(comm, DEFAULT_BUCKET_MB, timeout))
    }

    pub fn with_comm(comm: Box<dyn Communicator>, bucket_mb: f64, timeout: Duration) -> Self {
        Replicas::Distributed {
            comm,
            bucket_elems: bucket_elems(bucket_mb),
            timeout,
        }
    }

    /// Cap buckets of summed and broadcast buffers at `bucket_mb` MB.
    pub fn with_bucket_mb(mut self, bucket_mb: f64) -> Self {
        if let Replicas::Distributed {
            bucket_elems: b, ..
        } = &mut self
        {
            *b = bucket_elems(bucket_mb);
        }
        self
    }

    pub fn rank(&self) -> usize {
        match self {
            Replicas::Single => 0,
            Replicas::Distributed { comm, .. } => comm.rank(),
        }
    }

    pub fn world_size(&self) -> usize {
        match self {
            Replicas::Single => 1,
            Replicas::Distributed { comm, .. } => comm.world_size(),
        }
    }

    /// The largest bucket, in f32 elements.
    pub fn bucket_elems(&self) -> usize {
        match self {
            Replicas::Single => usize::MAX,
            Replicas::Distributed { bucket_elems, .. } => *bucket_elems,
        }
    }

    /// Fail on every rank, naming the first rank that differs, unless all ranks hold `value`.
    pub fn check_same(&mut self, what: &str, value: &str) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        let all = comm.all_gather_bytes(value.as_bytes(), *timeout)?;
        if let Some(r) = all.iter().position(|v| v != value.as_bytes()) {
            let mine = comm.rank();
            return Err(CommError::RanksDisagree(format!(
                "rank {r} has a different {what} than rank {mine} ({} vs {value}): every rank must run the same config",
                String::from_utf8_lossy(&all[r])
            )));
        }
        Ok(())
    }

    /// Every rank's bytes (predictions, reports), in rank order.
    pub fn gather_bytes(&mut self, send: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(vec![send.to_vec()]);
        };
        comm.all_gather_bytes(send, *timeout)
    }

    /// Sum small values over ranks in place.
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        comm.all_reduce(values, ReduceOp::Sum, *timeout)
    }

    /// One count per rank (e.g. optimiser state bytes), in rank order, on every rank.
    pub fn gather_counts(&mut self, value: u64) -> Result<Vec<u64>> {
        let (rank, world) = (self.rank(), self.world_size());
        // A sum of one-hot vectors: exact in f64 for counts below 2^53.
        let mut v = vec![0.0f64; world];
        v[rank] = value as f64;
        self.sum(&mut v)?;
        Ok(v.into_iter().map(|x| x as u64).collect())
    }

    /// Sum `bufs` over ranks in place, packed in order into buckets of at most the bucket cap
    /// (a larger buffer goes alone), so every rank issues the same collectives.
    pub fn sum_buffers(&mut self, bufs: &mut [Vec<f32>]) -> Result<SyncStats> {
        let Replicas::Distributed {
            comm,
            bucket_elems,
            timeout,
        } = self
        else {
            return Ok(SyncStats::default());
        };
        let start = Instant::now();
        let mut stats = SyncStats::default();
        let mut bucket: Vec<f32> = Vec::with_capacity(*bucket_elems);
        let mut members: Vec<usize> = Vec::new();
        let n = bufs.len();
        for i in 0..=n {
            let flush =
                i == n || (!members.is_empty() && bucket.len() + bufs[i].len() > *bucket_elems);
            if flush && !members.is_empty() {
                comm.all_reduce(&mut bucket, ReduceOp::Sum, *timeout)?;
                stats.bytes += bucket.len() * 4;
                let mut at = 0;
                for &m in &members {
                    let len = bufs[m].len();
                    bufs[m].copy_from_slice(&bucket[at..at + len]);
                    at += len;
                }
                bucket.clear();
                members.clear();
            }
            if i < n {
                bucket.extend_from_slice(&bufs[i]);
                members.push(i);
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Copy `root`'s `values` to every rank.
    pub fn broadcast(&mut self, values: &mut [f32], root: usize) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        comm.broadcast(values, root, *timeout)
    }

    pub fn barrier(&mut self) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        comm.barrier(*timeout)
    }
}

fn bucket_elems(bucket_mb: f64) -> usize {
    ((bucket_mb * 1e6) as usize / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalComm;

    #[test]
    fn buckets_sum_every_buffer_exactly_once() {
        let comms = LocalComm::group(3);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let rank = c.rank() as f32;
                    // Bucket cap of 5 elements: buffers of 3, 4 and 7 elements force three
                    // buckets, one of them oversized.
                    let mut r =
                        Replicas::with_comm(Box::new(c), 5.0 * 4.0 / 1e6, Duration::from_secs(10));
                    let mut bufs = vec![vec![1.0 + rank; 3], vec![2.0; 4], vec![rank; 7]];
                    let stats = r.sum_buffers(&mut bufs).unwrap();
                    let mut s = [rank as f64];
                    r.sum(&mut s).unwrap();
                    (bufs, stats.bytes, s[0])
                })
            })
            .collect();
        for h in handles {
            let (bufs, bytes, s) = h.join().unwrap();
            assert_eq!(bufs, vec![vec![6.0; 3], vec![6.0; 4], vec![3.0; 7]]);
            assert_eq!(bytes, 14 * 4);
            assert_eq!(s, 3.0);
        }
    }

    #[test]
    fn config_mismatch_names_the_rank() {
        let comms = LocalComm::group(2);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let hash = if c.rank() == 1 { "bbb" } else { "aaa" };
                    let mut r = Replicas::with_comm(Box::new(c), 25.0, Duration::from_secs(10));
                    r.check_same("config hash", hash).unwrap_err().to_string()
                })
            })
            .collect();
        let errs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            errs[0].contains("rank 1 has a different config hash"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains("rank 0 has a different config hash"),
            "{}",
            errs[1]
        );
    }
}
