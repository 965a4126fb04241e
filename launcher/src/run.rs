//! The launch: host the store (node 0), start the gang, restart it after a failure up to
//! `--max-restarts` times, and turn the final outcome into an exit code and a one-line root cause.

use std::process::ExitCode;

use uqa_comm::StoreServer;

use crate::args::{Args, LaunchConfig};
use crate::error::{LaunchError, Result};
use crate::gang::{Ending, Failure, Gang, Rendezvous};
use crate::unix;

/// The final outcome of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The root cause of the last attempt, and how many restarts were used.
    Failed {
        failure: Failure,
        restarts: u32,
    },
    Interrupted(i32),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed { failure, .. } => failure.death.exit_code(),
            Self::Interrupted(sig) => (128 + sig).clamp(1, 255) as u8,
        }
    }
}

/// Parses nothing: runs already parsed arguments (the `uqa launch` subcommand mounts [`Args`]).
/// Prints errors and the root cause of a failure on stderr.
pub fn run(args: Args) -> ExitCode {
    let result = LaunchConfig::try_from(args).and_then(|cfg| launch(&cfg));
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("uqa-launch: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the launch described by `cfg` to its end.
pub fn launch(cfg: &LaunchConfig) -> Result<Outcome> {
    unix::install().map_err(LaunchError::Signals)?;
    let token = job_token(cfg);
    // Node 0 hosts the store for the whole launch: it outlives restarts (ranks namespace their
    // keys by restart count) and, in standalone mode, binding port 0 here picks a free port
    // without the race of probing one and handing it to rank 0.
    let (_server, master_port) = if cfg.hosts_store() {
        let port = cfg.master_port.unwrap_or(0);
        let bind = uqa_comm::env::store_bind_addr(&cfg.master_addr, port);
        let server = StoreServer::bind(&bind, &token, 0)?;
        let port = server.local_addr().port();
        (Some(server), port)
    } else {
        // Validation only leaves the port open (None) for single-node launches, which host.
        let port = cfg.master_port.ok_or_else(|| LaunchError::Flag {
            flag: "--master-port",
            value: "0".into(),
            reason: "nodes other than 0 need the store's port".into(),
        })?;
        (None, port)
    };
    let mut restart = 0;
    loop {
        let rdzv = Rendezvous {
            master_port,
            token: token.clone(),
            restart_count: restart,
        };
        let ending = Gang::spawn(cfg, &rdzv)?.supervise();
        match ending {
            Ending::Success => return Ok(Outcome::Success),
            Ending::Interrupted(sig) => {
                eprintln!(
                    "uqa-launch: received {}; forwarded it and stopped all ranks",
                    unix::name(sig)
                );
                return Ok(Outcome::Interrupted(sig));
            }
            Ending::Failed(failure) if restart < cfg.max_restarts => {
                // A signal that arrived while the gang was being stopped ends the launch.
                if let Some(sig) = unix::take_pending() {
                    eprintln!("uqa-launch: {failure}; then received {}", unix::name(sig));
                    return Ok(Outcome::Interrupted(sig));
                }
                restart += 1;
                eprintln!(
                    "uqa-launch: {failure}; stopped the gang, restarting ({restart} of {} restarts)",
                    cfg.max_restarts
                );
            }
            Ending::Failed(failure) => {
                let after = match restart {
                    0 => String::new(),
                    1 => " (after 1 restart)".into(),
                    n => format!(" (after {n} restarts)"),
                };
                eprintln!("uqa-launch: failed: {failure}{after}");
                return Ok(Outcome::Failed {
                    failure,
                    restarts: restart,
                });
            }
        }
    }
}

/// UQA_JOB_TOKEN if the user set one (multi-node jobs should), else a value all nodes of the job
/// derive alike when there are several, else a random one.
fn job_token(cfg: &LaunchConfig) -> String {
    if let Ok(t) = std::env::var(uqa_comm::env::UQA_JOB_TOKEN)
        && !t.is_empty()
    {
        return t;
    }
    if cfg.nnodes > 1 {
        let slurm = std::env::var("SLURM_JOB_ID").unwrap_or_default();
        let material = format!(
            "{}:{:?}/{}/{}",
            cfg.master_addr, cfg.master_port, cfg.run_id, slurm
        );
        return format!("launch-{:016x}", fnv1a64(material.as_bytes()));
    }
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: unique enough to tell jobs apart, which is all the token is for.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(
            &fnv1a64(format!("{t:?}/{}", std::process::id()).as_bytes()).to_le_bytes(),
        );
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
