//! Multi-process tests: real processes (this test binary re-executed as a worker, selected by the
//! `UQA_TEST_SCENARIO` variable) bootstrapping from torchrun-style variables over 127.0.0.1.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use uqa_comm::{BootstrapOptions, CommunicatorExt, RankEnv, ReduceOp, bootstrap};

const SCENARIO: &str = "UQA_TEST_SCENARIO";
const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(scenario: &str, rank: usize, world: usize, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(SCENARIO, scenario)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("UQA_JOB_TOKEN", "multiproc")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts `world` ranks of `scenario` and returns their outputs in rank order.
fn gang(scenario: &str, world: usize, extra: &[(&str, &str)]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| spawn(scenario, r, world, port, extra))
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// The worker side: runs only when re-executed with `UQA_TEST_SCENARIO`.
#[test]
fn worker() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    let env = RankEnv::from_env().unwrap();
    let boot_ms: u64 = std::env::var("UQA_TEST_BOOT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let opts = BootstrapOptions {
        timeout: Duration::from_millis(boot_ms),
        ..Default::default()
    };
    let mut c = match bootstrap(&env, &opts) {
        Ok(c) => c,
        Err(e) => {
            println!("BOOTSTRAP ERROR: {e}");
            std::process::exit(3);
        }
    };
    let (r, n) = (c.rank(), c.world_size());
    match scenario.as_str() {
        "collectives" => {
            let mut v: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32 + r as f32).collect();
            c.all_reduce(&mut v, ReduceOp::Sum, T).unwrap();
            let ranks: f32 = (0..n).map(|q| q as f32).sum();
            assert!(
                v.iter()
                    .enumerate()
                    .all(|(i, &x)| x == n as f32 * (i % 7) as f32 + ranks)
            );
            let mut m = [r as f64, -(r as f64)];
            c.all_reduce(&mut m, ReduceOp::Max, T).unwrap();
            assert_eq!(m, [(n - 1) as f64, 0.0]);
            let mut a = [r as f32 * 2.0];
            c.all_reduce(&mut a, ReduceOp::Avg, T).unwrap();
            assert_eq!(a, [(n - 1) as f32]);
            let mut b = vec![r as u8; 70_000];
            c.broadcast(&mut b, 1, T).unwrap();
            assert!(b.iter().all(|&x| x == 1));
            let g = c.all_gather_vec(&[r as i64, 10 * r as i64], T).unwrap();
            assert_eq!(
                g,
                (0..n as i64).flat_map(|q| [q, 10 * q]).collect::<Vec<_>>()
            );
            let send: Vec<f32> = (0..4 * n).map(|i| i as f32).collect();
            let mut rs = [0f32; 4];
            c.reduce_scatter(&send, &mut rs, ReduceOp::Sum, T).unwrap();
            assert_eq!(rs, std::array::from_fn(|i| n as f32 * (4 * r + i) as f32));
            c.barrier(T).unwrap();
            println!("OK rank {r}");
        }
        "stall" => {
            if r == 1 {
                std::thread::sleep(Duration::from_secs(3));
                return;
            }
            let err = c
                .all_reduce(&mut [0f32; 64], ReduceOp::Sum, Duration::from_secs(1))
                .unwrap_err();
            println!("COLLECTIVE ERROR: {err}");
        }
        "crash" => {
            if r == 1 {
                std::process::exit(7);
            }
            let err = c.all_reduce(&mut [0f32; 64], ReduceOp::Sum, T).unwrap_err();
            println!("COLLECTIVE ERROR: {err}");
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn collectives_on_two_and_four_processes() {
    for world in [2, 4] {
        let outs = gang("collectives", world, &[]);
        for (r, out) in outs.iter().enumerate() {
            assert!(
                out.status.success(),
                "world {world} rank {r}: {}",
                text(out)
            );
            assert!(text(out).contains(&format!("OK rank {r}")), "{}", text(out));
        }
    }
}

#[test]
fn stalled_rank_times_out_naming_collective_and_rank() {
    let start = Instant::now();
    let outs = gang("stall", 2, &[]);
    let t = text(&outs[0]);
    assert!(
        t.contains(
            "COLLECTIVE ERROR: all_reduce: timed out after 1s waiting for rank 1 (on rank 0)"
        ),
        "{t}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn crashed_rank_is_reported_as_closed_connection() {
    let start = Instant::now();
    let outs = gang("crash", 2, &[]);
    assert_eq!(outs[1].status.code(), Some(7));
    let t = text(&outs[0]);
    assert!(
        t.contains("COLLECTIVE ERROR: all_reduce: rank 1 closed the connection (on rank 0)"),
        "{t}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn unreachable_store_names_address_and_rank() {
    let port = free_port();
    let out = spawn("collectives", 1, 2, port, &[("UQA_TEST_BOOT_MS", "500")])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "rank 1: rendezvous store at 127.0.0.1:{port} unreachable after 500ms"
        )),
        "{t}"
    );
}

#[test]
fn port_in_use_is_reported() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = spawn("collectives", 0, 2, port, &[("UQA_TEST_BOOT_MS", "500")])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for rank 0: address already in use"
        )),
        "{t}"
    );
}

#[test]
fn rank_of_another_job_is_refused() {
    let port = free_port();
    let a = spawn("collectives", 0, 2, port, &[("UQA_TEST_BOOT_MS", "1500")]);
    let b = spawn(
        "collectives",
        1,
        2,
        port,
        &[("UQA_JOB_TOKEN", "other-job"), ("UQA_TEST_BOOT_MS", "1500")],
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let t = text(&b);
    assert_eq!(b.status.code(), Some(3), "{t}");
    assert!(t.contains("rejected us: job token mismatch"), "{t}");
    // Rank 0 never meets its peer and says so.
    let t = text(&a);
    assert!(
        t.contains("bootstrap: timed out") && t.contains("waiting for rank 1"),
        "{t}"
    );
}
