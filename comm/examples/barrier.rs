//! The smallest distributed program: bootstrap from the launch environment and pass one barrier.
//! Used to measure launcher start-up (`time uqa-launch --standalone --nproc-per-node 8 --
//! target/release/examples/barrier`) and as a smoke test of a cluster's networking.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use uqa_comm::{BootstrapOptions, RankEnv, bootstrap};

fn main() -> ExitCode {
    let start = Instant::now();
    let run = || -> uqa_comm::Result<(usize, usize)> {
        let env = RankEnv::from_env()?;
        let mut comm = bootstrap(&env, &BootstrapOptions::default())?;
        comm.barrier(Duration::from_secs(60))?;
        Ok((comm.rank(), comm.world_size()))
    };
    match run() {
        Ok((rank, world)) => {
            println!(
                "rank {rank}/{world}: barrier passed {:.1} ms after start",
                start.elapsed().as_secs_f64() * 1e3
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("barrier: {e}");
            ExitCode::FAILURE
        }
    }
}
