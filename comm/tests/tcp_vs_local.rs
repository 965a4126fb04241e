//! The TCP ring against the in-process reference: every collective, several world sizes and
//! buffer lengths (empty, smaller than the world, not divisible by it, larger than the engine's
//! scratch buffer), ranks as threads of this process over 127.0.0.1.

use std::collections::HashMap;
use std::time::Duration;

use uqa_comm::{Communicator, CommunicatorExt, LocalComm, RankEnv, ReduceOp, TcpComm};

const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(rank: usize, world: usize, port: u16) -> RankEnv {
    let vars = [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", "127.0.0.1".into()),
        ("MASTER_PORT", port.to_string()),
        ("UQA_JOB_TOKEN", "test".into()),
    ];
    RankEnv::from_map(
        &vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    )
    .unwrap()
}

/// Runs `f` on `world` threads with TCP communicators.
fn run_tcp<R: Send>(world: usize, f: impl Fn(&mut dyn Communicator) -> R + Sync) -> Vec<R> {
    let port = free_port();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..world)
            .map(|r| {
                let f = &f;
                s.spawn(move || {
                    let mut c = TcpComm::connect(&env(r, world, port), T).unwrap();
                    f(&mut c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Deterministic pseudo-random data per rank (xorshift), with awkward float values.
fn data(rank: usize, len: usize) -> Vec<f32> {
    let mut x = 0x9e37_79b9_u32.wrapping_mul(rank as u32 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 1e3
        })
        .collect()
}

/// sum, avg, max, broadcast, all-gather, reduce-scatter, integer min.
type Out = (
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
    Vec<f64>,
    Vec<f32>,
    Vec<f32>,
    Vec<i64>,
);

fn scenario(c: &mut dyn Communicator, len: usize) -> Out {
    let (r, n) = (c.rank(), c.world_size());
    let mut sum = data(r, len);
    c.all_reduce(&mut sum, ReduceOp::Sum, T).unwrap();
    let mut avg = data(r, len);
    c.all_reduce(&mut avg, ReduceOp::Avg, T).unwrap();
    let mut max = data(r, len);
    c.all_reduce(&mut max, ReduceOp::Max, T).unwrap();
    let mut bc: Vec<f64> = data(r, len).iter().map(|&v| v as f64).collect();
    c.broadcast(&mut bc, n - 1, T).unwrap();
    let gathered = c.all_gather_vec(&data(r, len), T).unwrap();
    let mut rs = vec![0f32; len];
    c.reduce_scatter(&data(r, len * n), &mut rs, ReduceOp::Avg, T)
        .unwrap();
    c.barrier(T).unwrap();
    let mut ints = vec![r as i64 - 3; len.min(9)];
    c.all_reduce(&mut ints, ReduceOp::Min, T).unwrap();
    (sum, avg, max, bc, gathered, rs, ints)
}

#[test]
fn tcp_matches_local_reference_bitwise_except_summation_order() {
    for world in [1, 2, 3, 4] {
        for len in [0, 1, 3, 1000, 200_003] {
            let tcp: Vec<Out> = run_tcp(world, |c| scenario(c, len));
            let local: Vec<Out> = LocalComm::run(world, |mut c| scenario(&mut c, len));
            for (rank, (t, l)) in tcp.iter().zip(&local).enumerate() {
                let ctx = format!("world {world} len {len} rank {rank}");
                // Sums are associated in ring order, not rank order: equal up to rounding.
                for (a, b) in [(&t.0, &l.0), (&t.1, &l.1), (&t.5, &l.5)] {
                    assert_eq!(a.len(), b.len(), "{ctx}");
                    for (x, y) in a.iter().zip(b.iter()) {
                        assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()), "{ctx}: {x} vs {y}");
                    }
                }
                assert_eq!(t.2, l.2, "max {ctx}");
                assert_eq!(t.3, l.3, "broadcast {ctx}");
                assert_eq!(t.4, l.4, "all_gather {ctx}");
                assert_eq!(t.6, l.6, "min {ctx}");
                // Every rank holds bitwise the same reduction.
                assert_eq!(
                    t.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    tcp[0].0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{ctx}"
                );
            }
        }
    }
}

#[test]
fn misuse_is_an_error_not_a_hang() {
    let out = run_tcp(2, |c| {
        let e1 = c.broadcast(&mut [0u8; 4], 2, T).unwrap_err().to_string();
        let e2 = c
            .reduce_scatter(&[0f32; 5], &mut [0f32; 2], ReduceOp::Sum, T)
            .unwrap_err()
            .to_string();
        let e3 = c
            .all_reduce(&mut [0u8; 2], ReduceOp::Avg, T)
            .unwrap_err()
            .to_string();
        // Argument errors happen before any communication, so the ranks stay in step.
        c.barrier(T).unwrap();
        (e1, e2, e3)
    });
    assert!(
        out[0].0.contains("root 2 is not below world size 2"),
        "{}",
        out[0].0
    );
    assert!(
        out[0].1.contains("5 elements is not 2 blocks of 2"),
        "{}",
        out[0].1
    );
    assert!(
        out[0].2.contains("Avg needs a floating-point type"),
        "{}",
        out[0].2
    );
}

#[test]
fn silent_rank_is_named_by_every_rank() {
    // Rank 2 of 4 never enters the all-reduce; its neighbour 3 waits on it directly, ranks 0 and 1
    // wait on 3 and 0, and the store-based diagnosis points all of them at rank 2.
    // Rank 0 hosts the store: all ranks keep their communicators until everyone is done, and
    // nothing in the threads can panic before the barrier (a panic would hang the others).
    let done = std::sync::Barrier::new(4);
    let out = run_tcp(4, |c| {
        if c.rank() == 2 {
            std::thread::sleep(Duration::from_secs(3));
            done.wait();
            return (String::new(), Duration::ZERO, String::new());
        }
        let start = std::time::Instant::now();
        let err = c.all_reduce(&mut [1f32; 1000], ReduceOp::Sum, Duration::from_millis(800));
        let took = start.elapsed();
        let again = c.barrier(T);
        done.wait();
        let show = |r: uqa_comm::Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
        (show(err), took, show(again))
    });
    for (rank, (msg, took, again)) in out.iter().enumerate() {
        if rank == 2 {
            continue;
        }
        assert!(*took < Duration::from_secs(5), "rank {rank} took {took:?}");
        assert!(
            again.contains("unusable after an earlier failure"),
            "{again}"
        );
        assert!(
            msg.starts_with("all_reduce: timed out after 800ms waiting for rank 2"),
            "rank {rank}: {msg}"
        );
        assert!(
            msg.contains("never reached all_reduce #1: [2]"),
            "rank {rank}: {msg}"
        );
    }
}

#[test]
fn ranks_making_different_calls_fail_loudly() {
    let out = run_tcp(2, |c| {
        let mut v = vec![1f32; 10 + 10 * c.rank()];
        c.all_reduce(&mut v, ReduceOp::Sum, T)
            .unwrap_err()
            .to_string()
    });
    assert!(
        out[0].contains("all_reduce: invalid argument on rank 0: ranks disagree: rank 1 called all_reduce(Sum) #1 on 20 x F32, this rank all_reduce(Sum) #1 on 10 x F32"),
        "{}",
        out[0]
    );
    let out = run_tcp(3, |c| {
        if c.rank() == 1 {
            c.broadcast(&mut [0f32; 4], 0, T).unwrap_err().to_string()
        } else {
            c.all_reduce(&mut [0f32; 4], ReduceOp::Sum, T)
                .unwrap_err()
                .to_string()
        }
    });
    assert!(
        out[2].contains("rank 1 called broadcast(root 0) #1 on 4 x F32"),
        "{}",
        out[2]
    );
}
