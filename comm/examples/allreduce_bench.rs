//! All-reduce bus bandwidth of the `tcp` or `mpi` backend, nccl-tests convention
//! (busbw = algbw * 2(n-1)/n), f32 sum, 4 KiB to 256 MiB, measured like
//! `../shared/bench/allreduce.py` (gloo): a barrier before each call, a call's time is the slowest
//! rank's, median and minimum over the iterations.
//!
//! ```text
//! cargo run --release -p uqa-comm --example allreduce_bench            # spawns 2 ranks itself
//! cargo run --release -p uqa-comm --example allreduce_bench -- --ranks 4 --min-kib 1024 --max-mib 64
//! uqa-launch --standalone --nproc-per-node 2 -- target/release/examples/allreduce_bench
//! cargo build --release -p uqa-comm --features mpi --example allreduce_bench
//! mpirun --allow-run-as-root -np 2 target/release/examples/allreduce_bench --backend mpi
//! ```
//! Prints a Markdown table on rank 0 and a final JSON line.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use uqa_comm::{Backend, BootstrapOptions, CommunicatorExt, RankEnv, ReduceOp, bootstrap};

const TIMEOUT: Duration = Duration::from_secs(120);

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--backend NAME` (default tcp).
fn backend(args: &[String]) -> Result<Backend, String> {
    match args.iter().position(|a| a == "--backend") {
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| "--backend needs a value".to_string())?
            .parse(),
        None => Ok(Backend::Tcp),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let backend = match backend(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("allreduce_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // MPI ranks come from mpirun/srun; only the tcp backend spawns its own ranks.
    if backend == Backend::Tcp && std::env::var_os("RANK").is_none() {
        return spawn_ranks(&args);
    }
    match bench(&args, backend) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allreduce_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Without a launcher: start `--ranks` copies of ourselves on 127.0.0.1.
fn spawn_ranks(args: &[String]) -> ExitCode {
    let n = arg(args, "--ranks", 2);
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("allreduce_bench: no free port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spawn = |r: usize| -> std::io::Result<std::process::Child> {
        Command::new(std::env::current_exe()?)
            .args(&args[1..])
            .env("RANK", r.to_string())
            .env("LOCAL_RANK", r.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
    };
    let mut ok = true;
    let mut children = Vec::new();
    for r in 0..n {
        match spawn(r) {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("allreduce_bench: cannot start rank {r}: {e}");
                ok = false;
                break;
            }
        }
    }
    for mut c in children {
        if !ok {
            let _ = c.kill();
        }
        ok &= c.wait().map(|s| s.success()).unwrap_or(false);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench(args: &[String], backend: Backend) -> uqa_comm::Result<()> {
    let env = RankEnv::from_env()?;
    let opts = BootstrapOptions {
        backend,
        ..Default::default()
    };
    let mut comm = bootstrap(&env, &opts)?;
    let (rank, n, name) = (comm.rank(), comm.world_size(), comm.backend());
    let max_bytes = arg(args, "--max-mib", 256) << 20;
    let bus = 2.0 * (n as f64 - 1.0) / n as f64;
    if rank == 0 {
        println!("{name} all-reduce, {n} ranks, f32 sum (busbw = algbw * {bus:.2})\n");
        println!("| bytes | median µs | min µs | algbw GB/s | busbw GB/s |");
        println!("| --- | --- | --- | --- | --- |");
    }
    let mut rows = Vec::new();
    let mut bytes = arg(args, "--min-kib", 4) << 10;
    while bytes <= max_bytes {
        let mut buf = vec![0f32; bytes / 4];
        // Enough iterations for a stable median, about a second per size at most.
        let iters = (256usize << 20).div_ceil(bytes).clamp(5, 200);
        let mut times = Vec::with_capacity(iters);
        for i in 0..iters + 2 {
            comm.barrier(TIMEOUT)?;
            let t = Instant::now();
            comm.all_reduce(&mut buf, ReduceOp::Sum, TIMEOUT)?;
            let mut dt = [t.elapsed().as_secs_f64()];
            comm.all_reduce(&mut dt, ReduceOp::Max, TIMEOUT)?;
            if i >= 2 {
                times.push(dt[0]);
            }
        }
        times.sort_by(f64::total_cmp);
        let (median, min) = (times[times.len() / 2], times[0]);
        let algbw = bytes as f64 / median / 1e9;
        if rank == 0 {
            println!(
                "| {} | {:.1} | {:.1} | {:.3} | {:.3} |",
                human(bytes),
                median * 1e6,
                min * 1e6,
                algbw,
                algbw * bus
            );
        }
        rows.push(format!(
            "{{\"bytes\":{bytes},\"median_us\":{:.1},\"min_us\":{:.1},\"algbw_gbps\":{algbw:.4},\"busbw_gbps\":{:.4}}}",
            median * 1e6,
            min * 1e6,
            algbw * bus
        ));
        bytes *= 4;
    }
    if rank == 0 {
        println!(
            "{{\"bench\":\"allreduce\",\"backend\":\"{name}\",\"ranks\":{n},\"dtype\":\"f32\",\"op\":\"sum\",\"results\":[{}]}}",
            rows.join(",")
        );
    }
    Ok(())
}

fn human(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}
