//! ZeRO-1 (PyTorch's `ZeroRedundancyOptimizer`, parameter-level partitioning): each rank keeps
//! AdamW moments only for the parameters it owns, updates only those, and the updated values
//! are broadcast from their owners (`Replicas::broadcast_owned`). Gradients are still summed in
//! full on every rank, so the global-norm clip factor is the same everywhere.

use super::grads::Params;

/// Which rank owns each parameter's optimiser state, and which rank this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    /// Owner of parameter `i` (in `Params` order, i.e. sorted by name).
    pub owners: Vec<usize>,
}

impl Shard {
    /// The partition of `params` over `world` ranks, seen from `rank`.
    pub fn new(params: &Params, rank: usize, world: usize) -> Self {
        let sizes: Vec<usize> = params.vars.iter().map(|v| v.elem_count()).collect();
        Self {
            rank,
            world,
            owners: partition(&sizes, world),
        }
    }

    pub fn owns(&self, param: usize) -> bool {
        self.owners[param] == self.rank
    }
}

/// Owner rank of each parameter, balancing element counts greedily: parameters largest first
/// (ties by index, so by name) each go to the least-loaded rank (ties by lowest rank). Only
/// the sizes and their order enter, so every rank computes the same partition.
pub fn partition(sizes: &[usize], world: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Stable sort: equal sizes keep index order.
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]));
    let mut load = vec![0usize; world];
    let mut owners = vec![0usize; sizes.len()];
    for i in order {
        let (rank, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(r, &l)| (l, r))
            .expect("world >= 1");
        owners[i] = rank;
        load[rank] += sizes[i];
    }
    owners
}

/// The start-up line on optimiser memory: `bytes` per rank, in rank order.
pub fn describe(zero: u8, bytes: &[u64]) -> String {
    let mb: Vec<String> = bytes
        .iter()
        .map(|&b| format!("{:.2}", b as f64 / 1e6))
        .collect();
    let how = if zero == 1 { "sharded" } else { "replicated" };
    format!(
        "optimizer state ({how}, train.zero = {zero}): [{}] MB per rank",
        mb.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(sizes: &[usize], owners: &[usize], world: usize) -> Vec<usize> {
        let mut l = vec![0; world];
        for (s, &o) in sizes.iter().zip(owners) {
            l[o] += s;
        }
        l
    }

    #[test]
    fn largest_first_to_the_least_loaded_rank() {
        // Sorted: 10 (#1) -> r0, 7 (#3) -> r1, 5 (#0) -> r1 (7 < 10), 3 (#2) -> r0 (10 < 12).
        let sizes = [5, 10, 3, 7];
        assert_eq!(partition(&sizes, 2), vec![1, 0, 0, 1]);
        assert_eq!(loads(&sizes, &partition(&sizes, 2), 2), vec![13, 12]);
    }

    #[test]
    fn ties_go_by_index_then_by_rank() {
        assert_eq!(partition(&[4, 4, 4, 4], 2), vec![0, 1, 0, 1]);
        assert_eq!(partition(&[1, 1, 1], 3), vec![0, 1, 2]);
        // More ranks than parameters: the rest own nothing.
        assert_eq!(partition(&[2, 9], 4), vec![1, 0]);
    }

    #[test]
    fn one_rank_owns_everything_and_partitions_are_balanced() {
        assert_eq!(partition(&[3, 1, 2], 1), vec![0, 0, 0]);
        assert_eq!(partition(&[], 2), Vec::<usize>::new());
        // Many parameters of mixed sizes: loads within the largest parameter of each other.
        let sizes: Vec<usize> = (0..50).map(|i| (i * 37 % 101) + 1).collect();
        for world in [2, 3, 4, 8] {
            let owners = partition(&sizes, world);
            assert_eq!(owners, partition(&sizes, world), "deterministic");
            let l = loads(&sizes, &owners, world);
            let (lo, hi) = (l.iter().min().unwrap(), l.iter().max().unwrap());
            assert!(hi - lo <= *sizes.iter().max().unwrap(), "{world}: {l:?}");
        }
    }
}
