//! How a run's global batch splits over ranks, micro-steps and optimiser steps: the schedule
//! pre-training and alignment share.

use uqa_data::sampler::{DistributedSampler, SamplerConfig};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// This rank's sampler and the batch arithmetic of a run.
pub struct BatchPlan {
    pub sampler: DistributedSampler,
    /// Rows this rank takes per optimiser step.
    pub per_rank: usize,
    /// Rows per micro-step (`per_rank / grad_accum`).
    pub micro: usize,
    /// Optimiser steps per epoch, and of the whole run (`max_steps` when set and smaller).
    pub steps_per_epoch: u64,
    pub total_steps: u64,
}

impl BatchPlan {
    /// For `rows` training rows on `rank` of `world`. The global batch must split evenly into
    /// ranks and micro-steps (as DDP with gradient accumulation requires).
    pub fn new(rows: usize, rank: usize, world: usize, train: &TrainConfig) -> Result<Self> {
        if !train.batch_size.is_multiple_of(world * train.grad_accum) {
            return Err(TrainError::Invalid(format!(
                "train.batch_size = {} is not divisible by world size ({world}) x train.grad_accum ({})",
                train.batch_size, train.grad_accum
            )));
        }
        let sampler = DistributedSampler::new(
            rows,
            rank,
            world,
            SamplerConfig {
                shuffle: true,
                seed: train.seed,
                drop_last: false,
            },
        );
        let per_rank = train.batch_size / world;
        let steps_per_epoch = sampler.shard_len().div_ceil(per_rank) as u64;
        let total_steps = match train.max_steps {
            0 => steps_per_epoch * train.epochs,
            n => n.min(steps_per_epoch * train.epochs),
        };
        Ok(BatchPlan {
            sampler,
            per_rank,
            micro: per_rank / train.grad_accum,
            steps_per_epoch,
            total_steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(batch_size: usize, grad_accum: usize, epochs: u64, max_steps: u64) -> TrainConfig {
        toml::from_str(&format!(
            "batch_size = {batch_size}\ngrad_accum = {grad_accum}\nepochs = {epochs}\n\
             max_steps = {max_steps}\nout = \"x\""
        ))
        .unwrap()
    }

    #[test]
    fn the_global_batch_splits_into_ranks_and_micro_steps() {
        // 10 rows on 2 ranks: 5 each; 4 per rank per step -> 2 steps an epoch.
        let plan = BatchPlan::new(10, 1, 2, &train(8, 2, 3, 0)).unwrap();
        assert_eq!((plan.per_rank, plan.micro, plan.total_steps), (4, 2, 6));
        let capped = BatchPlan::new(10, 0, 2, &train(8, 2, 3, 5)).unwrap();
        assert_eq!(capped.total_steps, 5);
        let err = BatchPlan::new(10, 0, 3, &train(8, 1, 1, 0)).err().unwrap();
        assert!(
            err.to_string().contains("not divisible by world size (3)"),
            "{err}"
        );
    }
}
