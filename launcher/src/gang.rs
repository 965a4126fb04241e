//! One attempt: the ranks of this node started together, watched together and stopped together.
//! Each rank is the leader of its own process group, so stopping a rank also stops whatever it
//! spawned (a shell wrapper's children), and terminal Ctrl-C reaches ranks only through the
//! launcher, which forwards it.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uqa_comm::RankEnv;
use uqa_comm::env::{TORCHELASTIC_USE_AGENT_STORE, UQA_STORE_HOSTED};

use crate::args::LaunchConfig;
use crate::error::{LaunchError, Result};
use crate::output::{self, Stream};
use crate::unix;

/// How often the supervisor checks for signals while waiting for exits.
const POLL: Duration = Duration::from_millis(5);

/// How a rank ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    Code(i32),
    Signal(i32),
}

impl Death {
    fn of(status: ExitStatus) -> Option<Self> {
        match (status.code(), status.signal()) {
            (Some(0), _) => None,
            (Some(c), _) => Some(Self::Code(c)),
            (None, Some(s)) => Some(Self::Signal(s)),
            (None, None) => Some(Self::Code(1)),
        }
    }

    /// The launcher's exit code for this death (shell convention for signals).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Code(c) => (c & 0xff) as u8,
            Self::Signal(s) => (128 + s).clamp(1, 255) as u8,
        }
    }
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exited with code {c}"),
            Self::Signal(s) => write!(f, "was killed by {}", unix::name(*s)),
        }
    }
}

/// The first rank that failed in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub rank: usize,
    pub local_rank: usize,
    pub pid: u32,
    pub death: Death,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} (local rank {}, pid {}) {}",
            self.rank, self.local_rank, self.pid, self.death
        )
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Success,
    Failed(Failure),
    /// The launcher received this signal; it was forwarded and the ranks stopped.
    Interrupted(i32),
}

struct Rank {
    rank: usize,
    local_rank: usize,
    child: Child,
    exited: Option<ExitStatus>,
}

/// A rank (index into `Gang::ranks`) and how it exited.
type ExitEvent = (usize, ExitStatus);

/// The running ranks of one attempt.
pub struct Gang {
    ranks: Vec<Rank>,
    readers: Vec<JoinHandle<()>>,
    /// Exits in the order they happened, from one waiter thread per rank: the first failure is
    /// the root cause, so order matters more than a polling loop could resolve.
    exits: (Sender<ExitEvent>, Receiver<ExitEvent>),
    grace: Duration,
}

/// What every rank of the attempt shares.
pub struct Rendezvous {
    pub master_port: u16,
    pub token: String,
    pub restart_count: u32,
}

impl Gang {
    /// Starts this node's ranks. On error the ranks already started are stopped.
    pub fn spawn(cfg: &LaunchConfig, rdzv: &Rendezvous) -> Result<Self> {
        let mut gang = Gang {
            ranks: Vec::new(),
            readers: Vec::new(),
            exits: mpsc::channel(),
            grace: cfg.grace_period,
        };
        for local_rank in 0..cfg.nproc_per_node {
            let env = RankEnv {
                rank: cfg.node_rank * cfg.nproc_per_node + local_rank,
                local_rank,
                world_size: cfg.world_size(),
                local_world_size: cfg.nproc_per_node,
                group_rank: cfg.node_rank,
                master_addr: cfg.master_addr.clone(),
                master_port: rdzv.master_port,
                restart_count: rdzv.restart_count,
                job_token: rdzv.token.clone(),
                store_port: rdzv.master_port,
                hosts_store: false,
                source: uqa_comm::LaunchSource::Torchrun,
            };
            if let Err(e) = gang.spawn_rank(cfg, &env) {
                gang.stop(libc::SIGKILL);
                return Err(e);
            }
        }
        Ok(gang)
    }

    fn spawn_rank(&mut self, cfg: &LaunchConfig, env: &RankEnv) -> Result<()> {
        let mut cmd = Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..])
            .envs(env.to_vars())
            // The launcher of node 0 hosts the store; rank 0 must not try to.
            .env(UQA_STORE_HOSTED, "1")
            .env_remove(TORCHELASTIC_USE_AGENT_STORE)
            .env("ROLE_RANK", env.rank.to_string())
            .env("ROLE_WORLD_SIZE", env.world_size.to_string())
            .env("GROUP_WORLD_SIZE", cfg.nnodes.to_string())
            .env("TORCHELASTIC_MAX_RESTARTS", cfg.max_restarts.to_string())
            .env("TORCHELASTIC_RUN_ID", &cfg.run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // torchrun's default: N ranks each spawning a thread per core oversubscribe the node.
        // RAYON_NUM_THREADS sizes candle's pools (which ignore OMP_NUM_THREADS).
        if cfg.nproc_per_node > 1 {
            for var in ["OMP_NUM_THREADS", "RAYON_NUM_THREADS"] {
                if std::env::var_os(var).is_none() {
                    cmd.env(var, "1");
                }
            }
        }
        let spawn_err = |source| LaunchError::Spawn {
            rank: env.rank,
            command: cfg.command.join(" "),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (out, err, pid) = (child.stdout.take(), child.stderr.take(), child.id());
        let index = self.ranks.len();
        // Registered before anything else can fail, so `stop` always finds it.
        self.ranks.push(Rank {
            rank: env.rank,
            local_rank: env.local_rank,
            child,
            exited: None,
        });
        if let Some(out) = out {
            self.readers
                .push(output::forward(out, env.rank, Stream::Stdout).map_err(spawn_err)?);
        }
        if let Some(err) = err {
            self.readers
                .push(output::forward(err, env.rank, Stream::Stderr).map_err(spawn_err)?);
        }
        let tx = self.exits.0.clone();
        std::thread::Builder::new()
            .name(format!("uqa-launch-wait-{}", env.rank))
            .spawn(move || {
                if let Some(status) = unix::wait_exit(pid) {
                    let _ = tx.send((index, status));
                }
            })
            .map_err(spawn_err)?;
        Ok(())
    }

    /// Waits up to `timeout` for exits (without reaping, see [`unix::wait_exit`]) and returns the
    /// first new failure among them.
    fn reap(&mut self, timeout: Duration) -> Option<Failure> {
        let mut first = None;
        let mut next = self.exits.1.recv_timeout(timeout).ok();
        while let Some((index, status)) = next {
            let r = &mut self.ranks[index];
            r.exited = Some(status);
            if let (None, Some(death)) = (&first, Death::of(status)) {
                first = Some(Failure {
                    rank: r.rank,
                    local_rank: r.local_rank,
                    pid: r.child.id(),
                    death,
                });
            }
            next = self.exits.1.try_recv().ok();
        }
        first
    }

    /// Watches the ranks until all succeed, one fails (the others are then stopped), or the
    /// launcher is signalled (the signal is forwarded, then the ranks are stopped).
    pub fn supervise(mut self) -> Ending {
        let ending = loop {
            if let Some(sig) = unix::take_pending() {
                self.stop(sig);
                break Ending::Interrupted(sig);
            }
            if let Some(failure) = self.reap(POLL) {
                self.stop(libc::SIGTERM);
                break Ending::Failed(failure);
            }
            if self.ranks.iter().all(|r| r.exited.is_some()) {
                // Leftovers a rank started in the background would hold its output pipes open
                // forever: the job is over, so they go too.
                self.stop(libc::SIGKILL);
                break Ending::Success;
            }
        };
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        ending
    }

    /// Sends `first` to every rank still running, waits up to the grace period, then SIGKILLs
    /// whatever is left, including leftovers in the ranks' process groups, and reaps the ranks.
    fn stop(&mut self, first: i32) {
        if first != libc::SIGKILL {
            for r in self.ranks.iter().filter(|r| r.exited.is_none()) {
                unix::kill_group(r.child.id(), first);
            }
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline && self.ranks.iter().any(|r| r.exited.is_none()) {
                self.reap(POLL.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        // Every rank is still at least a zombie here, so its pid names its own group.
        for r in &self.ranks {
            unix::kill_group(r.child.id(), libc::SIGKILL);
        }
        for r in self.ranks.iter_mut() {
            let status = r.child.wait().ok();
            r.exited = r.exited.or(status);
        }
    }
}
