//! `uqa bench sampler`: the distributed sampler and batch collation over a dataset's training
//! file, timed (the target is 100x what one training step consumes, docs/BENCHMARKS.md).

use std::time::Instant;

use serde::Serialize;

use super::memory::{peak_rss_mb, rss_split_mb};
use crate::batch::collate;
use crate::dataset::Dataset;
use crate::sampler::{DistributedSampler, SamplerConfig, SamplerState};

/// What to time.
#[derive(Debug, Clone)]
pub struct SamplerBench {
    /// Rows per batch.
    pub batch: usize,
    /// Positions kept per sequence (the last ones).
    pub max_len: usize,
    /// Batches to time.
    pub batches: usize,
    pub rank: usize,
    pub world_size: usize,
    /// Keep mapped pages resident between batches instead of releasing them.
    pub keep_pages: bool,
}

/// Settings that cannot work on this dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerBenchError {
    #[error("rank {rank} is not below the world size {world_size}")]
    Rank { rank: usize, world_size: usize },
    /// More ranks than rows would pad every shard up to the world size: a huge world would
    /// allocate (and shuffle) that many indices before the first batch.
    #[error("world size {world_size}: more ranks than the {rows} training rows")]
    WorldExceedsRows { world_size: usize, rows: usize },
    /// Whole batches only: a shard smaller than one batch would never yield one.
    #[error(
        "{rows} training rows give each of {world_size} ranks {shard} rows, fewer than a batch of {batch}"
    )]
    ShardBelowBatch {
        rows: usize,
        world_size: usize,
        shard: usize,
        batch: usize,
    },
}

/// The figures of one timing.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerReport {
    pub batches: usize,
    pub positions: usize,
    pub seconds: f64,
    /// Resident heap and mapped MB after opening the dataset, and after sampling.
    pub opened_mb: (f64, f64),
    pub sampled_mb: (f64, f64),
    pub peak_rss_mb: f64,
}

impl SamplerBench {
    /// Whether these settings can sample `rows` training rows.
    pub fn check(&self, rows: usize) -> Result<(), SamplerBenchError> {
        let (rank, world_size, batch) = (self.rank, self.world_size, self.batch);
        if rank >= world_size {
            return Err(SamplerBenchError::Rank { rank, world_size });
        }
        if world_size > rows {
            return Err(SamplerBenchError::WorldExceedsRows { world_size, rows });
        }
        let shard = rows.div_ceil(world_size);
        if shard < batch {
            return Err(SamplerBenchError::ShardBelowBatch {
                rows,
                world_size,
                shard,
                batch,
            });
        }
        Ok(())
    }

    /// Samples and collates `batches` batches of `ds`'s training file, epoch after epoch.
    pub fn run(&self, ds: &Dataset) -> Result<SamplerReport, SamplerBenchError> {
        let file = &ds.train;
        self.check(file.num_rows())?;
        let opened_mb = rss_split_mb();
        file.advise_random();
        let sampler = DistributedSampler::new(
            file.num_rows(),
            self.rank,
            self.world_size,
            SamplerConfig::default(),
        );
        let start = Instant::now();
        let (mut n, mut positions, mut epoch) = (0usize, 0usize, 0u64);
        while n < self.batches {
            let state = SamplerState { epoch, position: 0 };
            for rows in sampler.batches(state, self.batch, true) {
                let batch = collate(file, &rows, self.max_len);
                if !self.keep_pages {
                    file.release_pages();
                }
                positions += batch.lengths.iter().map(|&l| l as usize).sum::<usize>();
                n += 1;
                if n == self.batches {
                    break;
                }
            }
            epoch += 1;
        }
        Ok(SamplerReport {
            batches: n,
            positions,
            seconds: start.elapsed().as_secs_f64(),
            opened_mb,
            sampled_mb: rss_split_mb(),
            peak_rss_mb: peak_rss_mb(),
        })
    }
}
