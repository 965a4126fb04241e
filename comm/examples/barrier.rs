//! The smallest distributed program: bootstrap from the launch environment, pass one barrier and
//! all-reduce `rank + 1` (so the sum proves every rank took part). Used to measure launcher
//! start-up (`time uqa-launch --standalone --nproc-per-node 8 -- target/release/examples/barrier`),
//! as a smoke test of a cluster's networking, and as the stand-in training command of the Slurm
//! templates (`TRAIN_CMD=.../barrier sbatch slurm/multi_node.sbatch`).
//!
//! `--backend tcp|mpi|nccl` (default tcp, or `UQA_COMM_BACKEND`). Prints one line per rank:
//! `rank R/W node N local L host H: barrier passed T ms after start; all_reduce(rank+1) = S`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use uqa_comm::{Backend, BootstrapOptions, CommunicatorExt, RankEnv, ReduceOp, bootstrap};

fn backend() -> Result<Backend, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--backend") {
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| "--backend needs a value".to_string())?
            .parse(),
        None => std::env::var("UQA_COMM_BACKEND")
            .map(|b| b.parse())
            .unwrap_or(Ok(Backend::Tcp)),
    }
}

fn main() -> ExitCode {
    let start = Instant::now();
    let run = || -> Result<String, String> {
        let env = RankEnv::from_env().map_err(|e| e.to_string())?;
        let opts = BootstrapOptions {
            backend: backend()?,
            timeout: Duration::from_secs(60),
        };
        let mut comm = bootstrap(&env, &opts).map_err(|e| e.to_string())?;
        let t = Duration::from_secs(60);
        comm.barrier(t).map_err(|e| e.to_string())?;
        let passed = start.elapsed();
        let mut sum = [comm.rank() as i64 + 1];
        comm.all_reduce(&mut sum, ReduceOp::Sum, t)
            .map_err(|e| e.to_string())?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        // Under Slurm, name the emulated node too (all local nodes share one hostname).
        let host = match std::env::var("SLURMD_NODENAME") {
            Ok(node) => format!("{host}/{node}"),
            Err(_) => host,
        };
        Ok(format!(
            "rank {}/{} node {} local {} host {host}: barrier passed {:.1} ms after start; all_reduce(rank+1) = {} [{}]",
            comm.rank(),
            comm.world_size(),
            env.group_rank,
            env.local_rank,
            passed.as_secs_f64() * 1e3,
            sum[0],
            comm.backend(),
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("barrier: {e}");
            ExitCode::FAILURE
        }
    }
}
