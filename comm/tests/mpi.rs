//! The `mpi` backend under a real `mpirun -np 2` (this test binary re-executed as the MPI
//! program, the scenario chosen by `UQA_TEST_SCENARIO`): every collective and element type gives
//! bitwise the same results as the tcp backend on the same inputs (with two ranks a sum has one
//! association, so even floating-point sums match exactly), and a silent rank gives a timeout
//! naming it. Without the `mpi` feature or without `mpirun` the tests are recorded skips, failures
//! under `UQA_REQUIRE=mpi` (see uqa-testkit).

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use uqa_comm::{Communicator, CommunicatorExt, RankEnv, ReduceOp, TcpComm};
use uqa_testkit::{Category, skip};

const SCENARIO: &str = "UQA_TEST_SCENARIO";
const T: Duration = Duration::from_secs(30);

/// Deterministic pseudo-random floats per rank (xorshift), with awkward values.
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

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn digest_f32(v: &[f32]) -> String {
    format!(
        "{}x{:016x}",
        v.len(),
        fnv(v.iter().flat_map(|x| x.to_le_bytes()))
    )
}

fn digest_f64(v: &[f64]) -> String {
    format!(
        "{}x{:016x}",
        v.len(),
        fnv(v.iter().flat_map(|x| x.to_le_bytes()))
    )
}

fn digest_i64(v: &[i64]) -> String {
    format!(
        "{}x{:016x}",
        v.len(),
        fnv(v.iter().flat_map(|x| x.to_le_bytes()))
    )
}

/// Every collective, every element type and several lengths; returns `name -> digest` lines.
fn scenario(c: &mut dyn Communicator) -> Vec<String> {
    let (r, n) = (c.rank(), c.world_size());
    let mut out = Vec::new();
    for len in [0usize, 1, 3, 1000, 200_003] {
        let mut sum = data(r, len);
        c.all_reduce(&mut sum, ReduceOp::Sum, T).unwrap();
        out.push(format!("sum/{len} {}", digest_f32(&sum)));
        let mut avg: Vec<f64> = data(r, len).iter().map(|&v| f64::from(v)).collect();
        c.all_reduce(&mut avg, ReduceOp::Avg, T).unwrap();
        out.push(format!("avg/{len} {}", digest_f64(&avg)));
        let mut max = data(r, len);
        c.all_reduce(&mut max, ReduceOp::Max, T).unwrap();
        out.push(format!("max/{len} {}", digest_f32(&max)));
        let mut min: Vec<i64> = data(r, len).iter().map(|&v| v as i64).collect();
        c.all_reduce(&mut min, ReduceOp::Min, T).unwrap();
        out.push(format!("min/{len} {}", digest_i64(&min)));
        let mut bytes: Vec<u8> = data(r, len).iter().map(|&v| v as i64 as u8).collect();
        c.all_reduce(&mut bytes, ReduceOp::Sum, T).unwrap();
        out.push(format!("u8sum/{len} {:016x}", fnv(bytes.iter().copied())));
        let mut bc: Vec<f64> = data(r, len).iter().map(|&v| f64::from(v)).collect();
        c.broadcast(&mut bc, n - 1, T).unwrap();
        out.push(format!("broadcast/{len} {}", digest_f64(&bc)));
        let gathered = c.all_gather_vec(&data(r, len), T).unwrap();
        out.push(format!("all_gather/{len} {}", digest_f32(&gathered)));
        let mut rs = vec![0f32; len];
        c.reduce_scatter(&data(r, len * n), &mut rs, ReduceOp::Avg, T)
            .unwrap();
        out.push(format!("reduce_scatter/{len} {}", digest_f32(&rs)));
        let mut rsi = vec![0i64; len];
        let send: Vec<i64> = (0..len * n).map(|i| (i * (r + 1)) as i64).collect();
        c.reduce_scatter(&send, &mut rsi, ReduceOp::Max, T).unwrap();
        out.push(format!("reduce_scatter_max/{len} {}", digest_i64(&rsi)));
        let mut rsb = vec![0u8; len];
        let send: Vec<u8> = (0..len * n).map(|i| (i * 7 + 100 * r) as u8).collect();
        c.reduce_scatter(&send, &mut rsb, ReduceOp::Sum, T).unwrap();
        out.push(format!(
            "reduce_scatter_u8/{len} {:016x}",
            fnv(rsb.iter().copied())
        ));
        c.barrier(T).unwrap();
    }
    // Small exact values as a sanity check that digests are not all equal by accident.
    let mut v = [r as f32 + 1.0, 10.0 * r as f32];
    c.all_reduce(&mut v, ReduceOp::Sum, T).unwrap();
    out.push(format!("exact {v:?}"));
    out
}

/// The worker side: runs only when re-executed by mpirun with `UQA_TEST_SCENARIO`.
#[test]
fn worker() {
    let Ok(scenario_name) = std::env::var(SCENARIO) else {
        return;
    };
    #[cfg(feature = "mpi")]
    {
        let env = RankEnv::from_env().unwrap();
        let mut c = match uqa_comm::MpiComm::init(&env, T) {
            Ok(c) => c,
            Err(e) => {
                println!("BOOTSTRAP ERROR: {e}");
                std::process::exit(3);
            }
        };
        let r = c.rank();
        match scenario_name.as_str() {
            "collectives" => {
                assert_eq!(c.backend(), "mpi");
                for line in scenario(&mut c) {
                    println!("RESULT {r} {line}");
                }
                println!("OK rank {r} of {}", c.world_size());
            }
            "stall" => {
                if r == 1 {
                    std::thread::sleep(Duration::from_secs(3));
                    println!("rank 1 woke up");
                    return;
                }
                let err = c
                    .all_reduce(&mut [0f32; 64], ReduceOp::Sum, Duration::from_secs(1))
                    .unwrap_err();
                println!("COLLECTIVE ERROR: {err}");
                let again = c.barrier(T).unwrap_err();
                println!("AFTER: {again}");
            }
            "singleton" => println!("UNEXPECTED: formed a world of {}", c.world_size()),
            other => panic!("unknown scenario {other}"),
        }
    }
    #[cfg(not(feature = "mpi"))]
    panic!("scenario {scenario_name} needs the mpi feature");
}

/// `mpirun`, or None (with `test`'s skip recorded) when the test cannot run here.
fn mpirun(test: &str) -> Option<&'static str> {
    if !cfg!(feature = "mpi") {
        let reason = "uqa-comm built without the `mpi` feature (needs OpenMPI and libclang, see scripts/test.sh)";
        skip(Category::Mpi, test, reason);
        return None;
    }
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = "mpirun not found (install openmpi-bin, see scripts/ci-deps.sh)";
        skip(Category::Mpi, test, reason);
        return None;
    }
    Some("mpirun")
}

fn run_mpi(scenario: &str, np: usize) -> Output {
    let exe = std::env::current_exe().unwrap();
    // `timeout`: a hang must fail the test, not the whole run.
    Command::new("timeout")
        .args([
            "60",
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
        ])
        .arg(np.to_string())
        // Containers often forbid the cross-memory attach that shared-memory transfers use.
        .args(["--mca", "btl_vader_single_copy_mechanism", "none"])
        .arg(exe)
        .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(SCENARIO, scenario)
        // Without launcher variables the ranks read the single-process default, as under mpirun.
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tcp_results(world: usize) -> Vec<Vec<String>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..world)
            .map(|r| {
                s.spawn(move || {
                    let vars: HashMap<String, String> = [
                        ("RANK", r.to_string()),
                        ("WORLD_SIZE", world.to_string()),
                        ("MASTER_ADDR", "127.0.0.1".into()),
                        ("MASTER_PORT", port.to_string()),
                        ("UQA_JOB_TOKEN", "mpi-test".into()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                    let env = RankEnv::from_map(&vars).unwrap();
                    let mut c = TcpComm::connect(&env, T).unwrap();
                    scenario(&mut c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn mpi_matches_tcp_bitwise_on_two_ranks() {
    if mpirun("mpi_matches_tcp_bitwise_on_two_ranks").is_none() {
        return;
    }
    let out = run_mpi("collectives", 2);
    let t = text(&out);
    assert!(out.status.success(), "mpirun failed:\n{t}");
    let tcp = tcp_results(2);
    for (rank, expected) in tcp.iter().enumerate() {
        assert!(t.contains(&format!("OK rank {rank} of 2")), "{t}");
        let got: Vec<String> = t
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("RESULT {rank} ")))
            .map(str::to_string)
            .collect();
        assert_eq!(&got, expected, "rank {rank}: mpi vs tcp");
    }
    assert!(t.contains("exact [3.0, 10.0]"), "{t}");
}

#[test]
fn mpi_silent_rank_times_out_naming_it() {
    if mpirun("mpi_silent_rank_times_out_naming_it").is_none() {
        return;
    }
    let start = Instant::now();
    let out = run_mpi("stall", 2);
    let t = text(&out);
    assert!(
        t.contains("COLLECTIVE ERROR: all_reduce: timed out after 1s waiting for rank 1 (on rank 0); ranks that never reached all_reduce #1: [1]"),
        "{t}"
    );
    assert!(
        t.contains("AFTER: barrier: communicator on rank 0 is unusable after an earlier failure"),
        "{t}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn mpi_singletons_under_a_non_mpi_launcher_are_refused() {
    if mpirun("mpi_singletons_under_a_non_mpi_launcher_are_refused").is_none() {
        return;
    }
    // Rank 0 of 2 by torchrun-style variables, but started without mpirun: MPI sees a world of 1.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(SCENARIO, "singleton")
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "9")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("BOOTSTRAP ERROR: inconsistent launch environment: launch variables say rank 0 of 2, but MPI sees a world of 1"),
        "{t}"
    );
}
