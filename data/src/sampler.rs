//! The distributed sampler, with the semantics of PyTorch's `DistributedSampler`: every epoch the
//! dataset's indices are shuffled by (seed, epoch), made divisible by the world size (by
//! repeating the first indices, or by dropping the tail with `drop_last`), and rank r takes every
//! world-size-th index starting at r. A [`SamplerState`] (epoch and position) resumes a run
//! exactly where it stopped.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerConfig {
    pub shuffle: bool,
    pub seed: u64,
    /// Drop the tail that does not divide evenly by the world size instead of padding.
    pub drop_last: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            shuffle: true,
            seed: 0,
            drop_last: false,
        }
    }
}

/// Where a rank is in its stream: saved with checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    /// Samples of this epoch's shard already consumed by this rank.
    pub position: usize,
}

#[derive(Debug, Clone)]
pub struct DistributedSampler {
    len: usize,
    rank: usize,
    world_size: usize,
    config: SamplerConfig,
}

impl DistributedSampler {
    /// Panics if `rank >= world_size` or `world_size == 0`: both come from the launch
    /// contract, which validates them first.
    pub fn new(len: usize, rank: usize, world_size: usize, config: SamplerConfig) -> Self {
        assert!(
            world_size > 0 && rank < world_size,
            "rank {rank} of {world_size}"
        );
        Self {
            len,
            rank,
            world_size,
            config,
        }
    }

    /// Samples each rank sees per epoch.
    pub fn shard_len(&self) -> usize {
        if self.config.drop_last {
            self.len / self.world_size
        } else {
            self.len.div_ceil(self.world_size)
        }
    }

    /// This rank's indices for `epoch`, in order.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.len).collect();
        if self.config.shuffle {
            Rng::new(self.config.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .shuffle(&mut all);
        }
        let total = self.shard_len() * self.world_size;
        if total <= all.len() {
            all.truncate(total);
        } else if !all.is_empty() {
            // Pad by repeating from the start, as torch does (possibly several times over when
            // the dataset is smaller than the world).
            let mut k = 0;
            while all.len() < total {
                all.push(all[k]);
                k += 1;
            }
        }
        all.into_iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .collect()
    }

    /// Mini-batches of this rank's shard for `state.epoch`, starting at `state.position`.
    /// The last, short batch is kept unless `drop_last_batch`.
    pub fn batches(
        &self,
        state: SamplerState,
        batch_size: usize,
        drop_last_batch: bool,
    ) -> impl Iterator<Item = Vec<usize>> {
        assert!(batch_size > 0, "batch size 0");
        let indices = self.indices(state.epoch);
        let start = state.position.min(indices.len());
        let rest = indices[start..].to_vec();
        let full = rest.len() / batch_size;
        let n = if drop_last_batch {
            full
        } else {
            rest.len().div_ceil(batch_size)
        };
        (0..n).map(move |b| rest[b * batch_size..((b + 1) * batch_size).min(rest.len())].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(shuffle: bool, drop_last: bool) -> SamplerConfig {
        SamplerConfig {
            shuffle,
            seed: 7,
            drop_last,
        }
    }

    #[test]
    fn shards_cover_every_index_once_when_divisible() {
        let world = 4;
        let mut seen: Vec<usize> = (0..world)
            .flat_map(|r| DistributedSampler::new(100, r, world, cfg(true, false)).indices(3))
            .collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn padding_repeats_first_indices_like_torch() {
        // torch: indices [0..10) padded to 12 with [0, 1], rank r takes [r::3].
        let shards: Vec<Vec<usize>> = (0..3)
            .map(|r| DistributedSampler::new(10, r, 3, cfg(false, false)).indices(0))
            .collect();
        assert_eq!(shards[0], vec![0, 3, 6, 9]);
        assert_eq!(shards[1], vec![1, 4, 7, 0]);
        assert_eq!(shards[2], vec![2, 5, 8, 1]);
    }

    #[test]
    fn drop_last_truncates_to_divisible() {
        let s = DistributedSampler::new(10, 2, 3, cfg(false, true));
        assert_eq!(s.shard_len(), 3);
        assert_eq!(s.indices(0), vec![2, 5, 8]);
    }

    #[test]
    fn tiny_dataset_pads_beyond_its_length() {
        let shards: Vec<Vec<usize>> = (0..4)
            .map(|r| DistributedSampler::new(1, r, 4, cfg(false, false)).indices(0))
            .collect();
        assert_eq!(shards, vec![vec![0]; 4]);
        assert!(
            DistributedSampler::new(0, 0, 2, cfg(true, false))
                .indices(0)
                .is_empty()
        );
    }

    #[test]
    fn epochs_reshuffle_and_seed_is_deterministic() {
        let s = DistributedSampler::new(50, 1, 2, cfg(true, false));
        assert_ne!(s.indices(0), s.indices(1));
        assert_eq!(s.indices(1), s.clone().indices(1));
        let other = DistributedSampler::new(
            50,
            1,
            2,
            SamplerConfig {
                seed: 8,
                ..cfg(true, false)
            },
        );
        assert_ne!(s.indices(1), other.indices(1));
    }

    #[test]
    fn resuming_from_a_position_continues_the_same_stream() {
        let s = DistributedSampler::new(37, 0, 2, cfg(true, false));
        let all: Vec<usize> = s
            .batches(
                SamplerState {
                    epoch: 2,
                    position: 0,
                },
                4,
                false,
            )
            .flatten()
            .collect();
        let resumed: Vec<usize> = s
            .batches(
                SamplerState {
                    epoch: 2,
                    position: 8,
                },
                4,
                false,
            )
            .flatten()
            .collect();
        assert_eq!(all.len(), 19);
        assert_eq!(&all[8..], &resumed[..]);
    }

    #[test]
    fn last_short_batch_kept_or_dropped() {
        let s = DistributedSampler::new(10, 0, 1, cfg(false, false));
        let kept: Vec<_> = s.batches(SamplerState::default(), 4, false).collect();
        assert_eq!(kept.last().unwrap(), &vec![8, 9]);
        let dropped: Vec<_> = s.batches(SamplerState::default(), 4, true).collect();
        assert_eq!(dropped.len(), 2);
    }
}
