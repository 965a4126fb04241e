//! Data parallelism with PyTorch DDP's semantics, kept out of the model: identical start
//! (parameters broadcast from rank 0), gradients summed across ranks in deterministic,
//! size-capped buckets once per optimiser step (never on inner micro-steps), and the few scalars
//! the loop needs (label counts, loss sums) reduced alongside. A run's ranks must agree on the
//! resolved config: its hash is compared at start-up.
//!
//! Gradients are **summed**, not averaged: each rank divides its loss by the *global* label
//! count first, so the sum is the mean over all labels of the global batch, exactly what one
//! process would compute for that batch.

use std::time::Instant;

pub use uqa_comm::{Replicas, SyncStats};

use crate::error::{CandleContext, Result};
use crate::optim::{AdamW, Grads, Params, with_f32};

/// What training adds to [`Replicas`]: parameters broadcast, gradients summed, the optimiser
/// stepped with its sharded state (ZeRO-1).
pub trait DataParallel {
    /// Copy rank 0's parameters to every rank.
    fn broadcast_params(&mut self, params: &Params) -> Result<()>;

    /// Sum gradients over ranks, bucket by bucket in parameter-name order.
    fn sum_grads(&mut self, grads: &mut Grads) -> Result<SyncStats>;

    /// The AdamW update, then, when its state is sharded (ZeRO-1), the updated parameters
    /// copied from their owners to every rank. Returns the broadcast's cost.
    fn step_optimizer(
        &mut self,
        optimizer: &mut AdamW,
        params: &Params,
        grads: &Grads,
        lr: f64,
        grad_scale: f64,
    ) -> Result<SyncStats>;

    /// Copy each parameter from its owner (`owners[i]`) to every rank.
    fn broadcast_owned(&mut self, params: &Params, owners: &[usize]) -> Result<SyncStats>;
}

impl DataParallel for Replicas {
    fn broadcast_params(&mut self, params: &Params) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        for var in &params.vars {
            let mut values = with_f32(var.as_tensor(), |s| s.to_vec())?;
            self.broadcast(&mut values, 0)?;
            let t = candle_core::Tensor::from_vec(values, var.shape(), var.device())
                .ctx("broadcast parameters")?;
            var.set(&t).ctx("broadcast parameters")?;
        }
        Ok(())
    }

    fn sum_grads(&mut self, grads: &mut Grads) -> Result<SyncStats> {
        Ok(self.sum_buffers(&mut grads.bufs)?)
    }

    fn step_optimizer(
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

    /// Owner by owner in rank order, each owner's parameters in name order packed into buckets
    /// of at most the bucket cap (a larger parameter goes alone). Every rank derives the same
    /// sequence of broadcasts from `owners` and the shapes, so no sizes need exchanging; the
    /// bytes sent are the owner's exactly, so replicas stay bit-identical.
    fn broadcast_owned(&mut self, params: &Params, owners: &[usize]) -> Result<SyncStats> {
        let (rank, world, bucket_elems) = (self.rank(), self.world_size(), self.bucket_elems());
        if world == 1 {
            return Ok(SyncStats::default());
        }
        let start = Instant::now();
        let mut stats = SyncStats::default();
        let mut bucket: Vec<f32> = Vec::new();
        for root in 0..world {
            let mine: Vec<usize> = (0..params.len()).filter(|&i| owners[i] == root).collect();
            let mut groups: Vec<Vec<usize>> = Vec::new();
            let mut len = 0;
            for &i in &mine {
                let n = params.vars[i].elem_count();
                match groups.last_mut() {
                    Some(g) if len + n <= bucket_elems => g.push(i),
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
                self.broadcast(&mut bucket, root)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use uqa_comm::{Communicator, LocalComm};

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
