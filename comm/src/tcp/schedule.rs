//! Ring schedules: which block of the buffer each step sends to the next rank and receives from the
//! previous one, and which step each depends on. The engine only executes schedules, so the
//! algorithms are plain data here and unit-tested without sockets.
//!
//! Ring all-reduce (Patarasuk & Yuan, 2009; the NCCL/Horovod ring): the buffer is cut into n
//! blocks; n-1 reduce-scatter steps leave rank r with the full reduction of block r+1, then n-1
//! all-gather steps circulate the reduced blocks. Each rank sends and receives 2(n-1)/n of the
//! buffer, which is why bus bandwidth = algbw * 2(n-1)/n. Steps overlap at byte granularity
//! (a block is forwarded while it is still arriving), which is what pipelining means here.

use std::ops::Range;

use crate::communicator::ReduceOp;

/// Sends `range` (elements) to the next rank; with a gate, only the part already completed by
/// receive step `gate` (data is forwarded as it arrives).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SendStep {
    pub range: Range<usize>,
    pub gate: Option<usize>,
}

/// Receives `range` from the previous rank, reducing into it (`reduce`) or overwriting it. With a
/// gate, bytes are overwritten only after send step `gate` has sent them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecvStep {
    pub range: Range<usize>,
    /// The reduction and whether to divide by the world size afterwards (last step of an Avg).
    pub reduce: Option<(ReduceOp, bool)>,
    pub gate: Option<usize>,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Schedule {
    pub sends: Vec<SendStep>,
    pub recvs: Vec<RecvStep>,
}

/// Block `c` of `n` near-equal blocks of `len` elements.
fn block(len: usize, n: usize, c: usize) -> Range<usize> {
    len * c / n..len * (c + 1) / n
}

/// `(rank - k) mod n` for small non-negative `k`.
fn back(rank: usize, k: usize, n: usize) -> usize {
    (rank + n * (k / n + 1) - k) % n
}

/// Sends: own block first, then forward what receive step s-1 produced (up to `forwarded` steps).
fn forward_sends(
    len: usize,
    n: usize,
    first: usize,
    recvs: &[RecvStep],
    forwarded: usize,
) -> Vec<SendStep> {
    let mut sends = vec![SendStep {
        range: block(len, n, first),
        gate: None,
    }];
    sends.extend((0..forwarded).map(|t| SendStep {
        range: recvs[t].range.clone(),
        gate: Some(t),
    }));
    sends
}

pub(crate) fn all_reduce(len: usize, rank: usize, n: usize, op: ReduceOp) -> Schedule {
    let mut recvs: Vec<RecvStep> = (0..n - 1)
        .map(|t| RecvStep {
            range: block(len, n, back(rank, t + 1, n)),
            reduce: Some((op, op == ReduceOp::Avg && t == n - 2)),
            gate: None,
        })
        .collect();
    // All-gather: block r-k was sent by send step k, so overwrite only what that step has sent.
    recvs.extend((0..n - 1).map(|k| RecvStep {
        range: block(len, n, back(rank, k, n)),
        reduce: None,
        gate: Some(k),
    }));
    let sends = forward_sends(len, n, rank, &recvs, 2 * n - 3);
    Schedule { sends, recvs }
}

/// Reduce-scatter shifted by one block so that rank r ends with block r.
pub(crate) fn reduce_scatter(len: usize, rank: usize, n: usize, op: ReduceOp) -> Schedule {
    let recvs: Vec<RecvStep> = (0..n - 1)
        .map(|t| RecvStep {
            range: block(len, n, back(rank, t + 2, n)),
            reduce: Some((op, op == ReduceOp::Avg && t == n - 2)),
            gate: None,
        })
        .collect();
    let sends = forward_sends(len, n, back(rank, 1, n), &recvs, n - 2);
    Schedule { sends, recvs }
}

/// All-gather on a buffer of `n` blocks whose block `rank` already holds this rank's data.
pub(crate) fn all_gather(len: usize, rank: usize, n: usize) -> Schedule {
    let recvs: Vec<RecvStep> = (0..n - 1)
        .map(|k| RecvStep {
            range: block(len, n, back(rank, k + 1, n)),
            reduce: None,
            gate: None,
        })
        .collect();
    let sends = forward_sends(len, n, rank, &recvs, n - 2);
    Schedule { sends, recvs }
}

/// Pipelined chain broadcast root -> root+1 -> ... -> root-1.
pub(crate) fn broadcast(len: usize, rank: usize, n: usize, root: usize) -> Schedule {
    let pos = (rank + n - root) % n;
    let whole = 0..len;
    let recv = RecvStep {
        range: whole.clone(),
        reduce: None,
        gate: None,
    };
    match pos {
        0 => Schedule {
            sends: vec![SendStep {
                range: whole,
                gate: None,
            }],
            recvs: vec![],
        },
        p if p == n - 1 => Schedule {
            sends: vec![],
            recvs: vec![recv],
        },
        _ => Schedule {
            sends: vec![SendStep {
                range: whole,
                gate: Some(0),
            }],
            recvs: vec![recv],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Executes the schedules of all ranks with FIFO links, honouring gates at whole-step
    /// granularity, and returns the final buffers.
    fn simulate(
        n: usize,
        len: usize,
        make: impl Fn(usize) -> Schedule,
        init: impl Fn(usize, usize) -> f64,
    ) -> Vec<Vec<f64>> {
        use std::collections::VecDeque;
        let scheds: Vec<Schedule> = (0..n).map(&make).collect();
        let mut bufs: Vec<Vec<f64>> = (0..n)
            .map(|r| (0..len).map(|i| init(r, i)).collect())
            .collect();
        let mut inbox: Vec<VecDeque<Vec<f64>>> = vec![VecDeque::new(); n];
        let (mut sp, mut rp) = (vec![0; n], vec![0; n]);
        loop {
            let mut progress = false;
            for r in 0..n {
                while let Some(step) = scheds[r].sends.get(sp[r]) {
                    if step.gate.is_some_and(|g| rp[r] <= g) {
                        break;
                    }
                    inbox[(r + 1) % n].push_back(bufs[r][step.range.clone()].to_vec());
                    sp[r] += 1;
                    progress = true;
                }
                while let Some(step) = scheds[r].recvs.get(rp[r]) {
                    if step.gate.is_some_and(|h| sp[r] <= h) || inbox[r].is_empty() {
                        break;
                    }
                    let data = inbox[r].pop_front().unwrap();
                    assert_eq!(
                        data.len(),
                        step.range.len(),
                        "n={n} rank {r} step {}",
                        rp[r]
                    );
                    for (d, s) in bufs[r][step.range.clone()].iter_mut().zip(&data) {
                        match step.reduce {
                            Some(_) => *d += s,
                            None => *d = *s,
                        }
                    }
                    rp[r] += 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for r in 0..n {
            assert_eq!(
                (sp[r], rp[r]),
                (scheds[r].sends.len(), scheds[r].recvs.len()),
                "rank {r} stalled"
            );
            assert!(inbox[r].is_empty());
        }
        bufs
    }

    #[test]
    fn ring_all_reduce_sums_everywhere() {
        for n in 2..=5 {
            for len in [0, 1, 3, 7, 16] {
                let out = simulate(
                    n,
                    len,
                    |r| all_reduce(len, r, n, ReduceOp::Sum),
                    |r, i| (r * 100 + i) as f64,
                );
                for buf in out {
                    let want: Vec<f64> = (0..len)
                        .map(|i| (0..n).map(|r| (r * 100 + i) as f64).sum())
                        .collect();
                    assert_eq!(buf, want, "n={n} len={len}");
                }
            }
        }
    }

    #[test]
    fn reduce_scatter_leaves_block_r_on_rank_r() {
        for n in 2..=5 {
            let len = 3 * n;
            let out = simulate(
                n,
                len,
                |r| reduce_scatter(len, r, n, ReduceOp::Sum),
                |r, i| (r * 100 + i) as f64,
            );
            for (r, buf) in out.iter().enumerate() {
                let b = block(len, n, r);
                let want: Vec<f64> = b
                    .clone()
                    .map(|i| (0..n).map(|q| (q * 100 + i) as f64).sum())
                    .collect();
                assert_eq!(&buf[b], &want[..], "n={n} rank {r}");
            }
        }
    }

    #[test]
    fn all_gather_and_broadcast() {
        for n in 2..=5 {
            let len = 2 * n;
            let own = |r: usize, i: usize| {
                if block(len, n, r).contains(&i) {
                    (r + 1) as f64
                } else {
                    0.0
                }
            };
            for buf in simulate(n, len, |r| all_gather(len, r, n), own) {
                let want: Vec<f64> = (0..len).map(|i| (i / 2 + 1) as f64).collect();
                assert_eq!(buf, want);
            }
            for root in 0..n {
                let out = simulate(
                    n,
                    4,
                    |r| broadcast(4, r, n, root),
                    |r, i| (r * 10 + i) as f64,
                );
                for buf in out {
                    assert_eq!(
                        buf,
                        (0..4).map(|i| (root * 10 + i) as f64).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
