//! Data parallelism with PyTorch DDP's semantics, kept out of the model: identical start
//! (parameters broadcast from rank 0), gradients summed across ranks in deterministic,
//! size-capped buckets once per optimiser step (never on inner micro-steps), and the few scalars
//! the loop needs (label counts, loss sums) reduced alongside. A run's ranks must agree on the
//! resolved config: its hash is compared at start-up.
//!
//! Gradients are **summed**, not averaged: each rank divides its loss by the *global* label
//! count first, so the sum is the mean over all labels of the global batch, exactly what one
//! process would compute for that batch.

use std::time::{Duration, Instant};

use uqa_comm::{
    Backend, BootstrapOptions, Communicator, CommunicatorExt, RankEnv, ReduceOp, bootstrap,
};

use crate::error::{CandleContext, Result, TrainError};
use crate::optim::{AdamW, Grads, Params, with_f32};

/// Gradient bytes moved and time spent in one step's all-reduce.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncStats {
    pub bytes: usize,
    pub seconds: f64,
}

/// The replicas of one training run: a single process, or ranks joined by a communicator.
pub enum Replicas {
    Single,
    Distributed {
        comm: Box<dyn Communicator>,
        bucket_elems: usize,
        timeout: Duration,
    },
}

impl Replicas {
    /// From the launch environment (torchrun's or Slurm's variables; `UQA_COMM_BACKEND` =
    /// tcp (default), mpi or nccl, as the sbatch templates set it); a single process when there
    /// is no launch.
    pub fn from_env(bucket_mb: f64, timeout: Duration) -> Result<Self> {
        let backend = backend_from(std::env::var("UQA_COMM_BACKEND").ok().as_deref())?;
        let env = RankEnv::from_env()?;
        // MPI learns its world from mpirun itself, so only tcp and nccl can tell "no launch"
        // from the environment alone.
        if env.world_size == 1 && backend != Backend::Mpi {
            return Ok(Replicas::Single);
        }
        let comm = bootstrap(&env, &BootstrapOptions { backend, timeout })?;
        if comm.world_size() == 1 {
            return Ok(Replicas::Single);
        }
        Ok(Self::with_comm(comm, bucket_mb, timeout))
    }

    pub fn with_comm(comm: Box<dyn Communicator>, bucket_mb: f64, timeout: Duration) -> Self {
        Replicas::Distributed {
            comm,
            bucket_elems: ((bucket_mb * 1e6) as usize / 4).max(1),
            timeout,
        }
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

    /// Fail on every rank, naming the first rank that differs, unless all ranks hold `value`.
    pub fn check_same(&mut self, what: &str, value: &str) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        let all = comm.all_gather_bytes(value.as_bytes(), *timeout)?;
        if let Some(r) = all.iter().position(|v| v != value.as_bytes()) {
            let mine = comm.rank();
            return Err(TrainError::Invalid(format!(
                "rank {r} has a different {what} than rank {mine} ({} vs {value}): every rank must run the same config",
                String::from_utf8_lossy(&all[r])
            )));
        }
        Ok(())
    }

    /// Copy rank 0's parameters to every rank.
    pub fn broadcast_params(&mut self, params: &Params) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        for var in &params.vars {
            let mut values = with_f32(var.as_tensor(), |s| s.to_vec())?;
            comm.broadcast(&mut values, 0, *timeout)?;
            let t = candle_core::Tensor::from_vec(values, var.shape(), var.device())
                .ctx("broadcast parameters")?;
            var.set(&t).ctx("broadcast parameters")?;
        }
        Ok(())
    }

    /// Every rank's bytes (predictions, reports), in rank order.
    pub fn gather_bytes(&mut self, send: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(vec![send.to_vec()]);
        };
        Ok(comm.all_gather_bytes(send, *timeout)?)
    }

    /// Sum small values over ranks in place.
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        comm.all_reduce(values, ReduceOp::Sum, *timeout)?;
        Ok(())
    }

    /// Sum gradients over ranks, bucket by bucket in parameter-name order.
    pub fn sum_grads(&mut self, grads: &mut Grads) -> Result<SyncStats> {
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
        let n = grads.bufs.len();
        for i in 0..=n {
            let flush = i == n
                || (!members.is_empty() && bucket.len() + grads.bufs[i].len() > *bucket_elems);
            if flush && !members.is_empty() {
                comm.all_reduce(&mut bucket, ReduceOp::Sum, *timeout)?;
                stats.bytes += bucket.len() * 4;
                let mut at = 0;
                for &m in &members {
                    let len = grads.bufs[m].len();
                    grads.bufs[m].copy_from_slice(&bucket[at..at + len]);
                    at += len;
                }
                bucket.clear();
                members.clear();
            }
            if i < n {
                bucket.extend_from_slice(&grads.bufs[i]);
                members.push(i);
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// The AdamW update, then, when its state is sharded (ZeRO-1), the updated parameters
    /// copied from their owners to every rank. Returns the broadcast's cost.
    pub fn step_optimizer(
        &mut self,
        optimizer: &mut AdamW,
        params: &Params,
        grads: &Grads,
        lr: f64,
        grad_scale: f64,
    ) -> Result<SyncStats> {
        optimizer.step(params, grads, lr, grad_scale)?;
        match optimizer.shard() {
            Some(shard) => self.broadcast_owned(params, &shard.owners),
            None => Ok(SyncStats::default()),
        }
    }

    /// Copy each parameter from its owner (`owners[i]`) to every rank: owner by owner in rank
    /// order, each owner's parameters in name order packed into buckets of at most
    /// `bucket_elems` (a larger parameter goes alone). Every rank derives the same sequence of
    /// broadcasts from `owners` and the shapes, so no sizes need exchanging; the bytes sent
    /// are the owner's exactly, so replicas stay bit-identical.
    pub fn broadcast_owned(&mut self, params: &Params, owners: &[usize]) -> Result<SyncStats> {
        let Replicas::Distributed {
            comm,
            bucket_elems,
            timeout,
        } = self
        else {
            return Ok(SyncStats::default());
        };
        let start = Instant::now();
        let (rank, world) = (comm.rank(), comm.world_size());
        let mut stats = SyncStats::default();
        let mut bucket: Vec<f32> = Vec::new();
        for root in 0..world {
            let mine: Vec<usize> = (0..params.len()).filter(|&i| owners[i] == root).collect();
            let mut groups: Vec<Vec<usize>> = Vec::new();
            let mut len = 0;
            for &i in &mine {
                let n = params.vars[i].elem_count();
                match groups.last_mut() {
                    Some(g) if len + n <= *bucket_elems => g.push(i),
                    _ => {
                        groups.push(vec![i]);
                        len = 0;
                    }
                }
                len += n;
            }
            for group in groups {
                bucket.clear();
                if rank == root {
                    for &i in &group {
                        with_f32(params.vars[i].as_tensor(), |s| bucket.extend_from_slice(s))?;
                    }
                } else {
                    let total = group.iter().map(|&i| params.vars[i].elem_count()).sum();
                    bucket.resize(total, 0.0);
                }
                comm.broadcast(&mut bucket, root, *timeout)?;
                stats.bytes += bucket.len() * 4;
                if rank != root {
                    let mut at = 0;
                    for &i in &group {
                        let var = &params.vars[i];
                        let n = var.elem_count();
                        candle_core::Tensor::from_slice(
                            &bucket[at..at + n],
                            var.shape(),
                            var.device(),
                        )
                        .and_then(|t| var.set(&t))
                        .ctx("ZeRO-1 parameter broadcast")?;
                        at += n;
                    }
                }
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
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

    pub fn barrier(&mut self) -> Result<()> {
        let Replicas::Distributed { comm, timeout, .. } = self else {
            return Ok(());
        };
        comm.barrier(*timeout)?;
        Ok(())
    }
}

/// The backend named by `UQA_COMM_BACKEND` (tcp when unset).
fn backend_from(value: Option<&str>) -> Result<Backend> {
    match value {
        None | Some("") => Ok(Backend::Tcp),
        Some(v) => v.parse().map_err(|e| {
            TrainError::Invalid(format!("environment variable UQA_COMM_BACKEND: {e}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uqa_comm::LocalComm;

    #[test]
    fn backend_comes_from_the_environment_variable() {
        assert_eq!(backend_from(None).unwrap(), Backend::Tcp);
        assert_eq!(backend_from(Some("nccl")).unwrap(), Backend::Nccl);
        let err = backend_from(Some("gloo")).unwrap_err().to_string();
        assert!(
            err.contains("UQA_COMM_BACKEND") && err.contains("gloo"),
            "{err}"
        );
    }

    #[test]
    fn buckets_sum_every_parameter_exactly_once() {
        let comms = LocalComm::group(3);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let rank = c.rank() as f32;
                    // Bucket cap of 5 elements: parameters of 3, 4 and 7 elements force three
                    // buckets, one of them oversized.
                    let mut r =
                        Replicas::with_comm(Box::new(c), 5.0 * 4.0 / 1e6, Duration::from_secs(10));
                    let mut g = Grads {
                        bufs: vec![vec![1.0 + rank; 3], vec![2.0; 4], vec![rank; 7]],
                    };
                    let stats = r.sum_grads(&mut g).unwrap();
                    let mut s = [rank as f64];
                    r.sum(&mut s).unwrap();
                    (g, stats.bytes, s[0])
                })
            })
            .collect();
        for h in handles {
            let (g, bytes, s) = h.join().unwrap();
            assert_eq!(g.bufs, vec![vec![6.0; 3], vec![6.0; 4], vec![3.0; 7]]);
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

    #[test]
    fn owned_parameters_reach_every_rank_in_buckets() {
        use candle_core::{DType, Device};
        let comms = LocalComm::group(3);
        let sizes = [3usize, 4, 7, 2];
        let owners = crate::optim::partition(&sizes, 3);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                let owners = owners.clone();
                std::thread::spawn(move || {
                    let rank = c.rank();
                    // Each rank's parameter i holds 10 * rank + i: after the broadcast it must
                    // hold 10 * owner + i. Bucket cap 5 elements: some buckets pack two.
                    let map = candle_nn::VarMap::new();
                    let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
                    for (i, n) in sizes.iter().enumerate() {
                        let value = (10 * rank + i) as f64;
                        vb.get_with_hints(*n, &format!("p{i}"), candle_nn::Init::Const(value))
                            .unwrap();
                    }
                    let params = Params::from_varmap(&map);
                    let mut r =
                        Replicas::with_comm(Box::new(c), 5.0 * 4.0 / 1e6, Duration::from_secs(10));
                    let stats = r.broadcast_owned(&params, &owners).unwrap();
                    let values: Vec<Vec<f32>> = params
                        .vars
                        .iter()
                        .map(|v| v.as_tensor().to_vec1::<f32>().unwrap())
                        .collect();
                    (values, stats.bytes)
                })
            })
            .collect();
        for h in handles {
            let (values, bytes) = h.join().unwrap();
            for (i, v) in values.iter().enumerate() {
                assert_eq!(
                    v,
                    &vec![(10 * owners[i] + i) as f32; sizes[i]],
                    "parameter {i}"
                );
            }
            assert_eq!(bytes, 16 * 4);
        }
    }
}
