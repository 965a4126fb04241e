//! The command line (torchrun's flags and spellings, dashes or underscores) and its resolution
//! into a validated [`LaunchConfig`]: parsing and validation are separate steps, so the `uqa
//! launch` subcommand can mount the same `Args` and get the same checks.

use std::time::Duration;

use clap::Parser;

use crate::error::{LaunchError, Result};

/// Most ranks per node: more than any node's accelerators or cores, and a bound on how many
/// processes a typo can start.
pub const MAX_NPROC_PER_NODE: usize = 4096;

/// Most nodes: keeps every rank number (node rank x ranks per node) far from overflowing.
pub const MAX_NNODES: usize = 65_536;

/// Longest --grace-period, in seconds (a day): a longer wait is a typo, and a huge one does not
/// fit in a `Duration`.
pub const MAX_GRACE_PERIOD_S: f64 = 86_400.0;

/// Start one process per rank, torchrun-style.
///
/// Example: `uqa-launch --standalone --nproc-per-node 4 -- uqa pretrain --config c.toml`
#[derive(Debug, Clone, Parser)]
#[command(name = "uqa-launch", version)]
pub struct Args {
    /// Processes on this node: a number (1 to 4096), or `cpu`/`auto` for one per CPU.
    #[arg(long = "nproc-per-node", alias = "nproc_per_node", default_value = "1")]
    pub nproc_per_node: String,

    /// Number of nodes (`N` up to 65,536, or torchrun's `N:N`; elastic ranges are not
    /// supported).
    #[arg(long, default_value = "1")]
    pub nnodes: String,

    /// Rank of this node, in 0..nnodes.
    #[arg(long = "node-rank", alias = "node_rank", default_value_t = 0)]
    pub node_rank: usize,

    /// Address of node 0, where the rendezvous store runs.
    #[arg(
        long = "master-addr",
        alias = "master_addr",
        default_value = "127.0.0.1"
    )]
    pub master_addr: String,

    /// Port of the rendezvous store on node 0.
    #[arg(long = "master-port", alias = "master_port", default_value_t = 29500)]
    pub master_port: u16,

    /// Single node on 127.0.0.1 with a free port (overrides --nnodes, --node-rank,
    /// --master-addr and --master-port).
    #[arg(long)]
    pub standalone: bool,

    /// Restart the whole gang up to this many times after a rank fails.
    #[arg(long = "max-restarts", alias = "max_restarts", default_value_t = 0)]
    pub max_restarts: u32,

    /// Seconds between SIGTERM and SIGKILL when stopping the gang (at most a day).
    #[arg(long = "grace-period", alias = "grace_period", default_value_t = 5.0)]
    pub grace_period: f64,

    /// `host:port` of the store, torchrun's c10d spelling of --master-addr/--master-port
    /// (overrides them).
    #[arg(long = "rdzv-endpoint", alias = "rdzv_endpoint")]
    pub rdzv_endpoint: Option<String>,

    /// Accepted for torchrun compatibility (`static` or `c10d`); the rendezvous is always our
    /// store on node 0.
    #[arg(long = "rdzv-backend", alias = "rdzv_backend", value_parser = ["static", "c10d"])]
    pub rdzv_backend: Option<String>,

    /// Run id exported as TORCHELASTIC_RUN_ID (torchrun's --rdzv-id).
    #[arg(
        long = "rdzv-id",
        alias = "rdzv_id",
        alias = "run-id",
        alias = "run_id"
    )]
    pub rdzv_id: Option<String>,

    /// Accepted for torchrun compatibility; commands always run as given.
    #[arg(long = "no-python", alias = "no_python")]
    pub no_python: bool,

    /// The command each rank runs (after `--`, or simply after the flags as with torchrun).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Validated launch settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchConfig {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    /// None: pick a free port (standalone).
    pub master_port: Option<u16>,
    pub max_restarts: u32,
    pub grace_period: Duration,
    pub run_id: String,
    pub command: Vec<String>,
}

impl LaunchConfig {
    pub fn world_size(&self) -> usize {
        self.nproc_per_node * self.nnodes
    }

    /// Whether this node's launcher hosts the store (node 0 always does).
    pub fn hosts_store(&self) -> bool {
        self.node_rank == 0
    }
}

fn flag(flag: &'static str, value: impl ToString, reason: impl ToString) -> LaunchError {
    LaunchError::Flag {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl TryFrom<Args> for LaunchConfig {
    type Error = LaunchError;

    fn try_from(a: Args) -> Result<Self> {
        let nproc_per_node = match a.nproc_per_node.as_str() {
            "cpu" | "auto" => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            "gpu" => {
                return Err(flag(
                    "--nproc-per-node",
                    "gpu",
                    "give the number of GPUs explicitly",
                ));
            }
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_NPROC_PER_NODE).contains(n))
                .ok_or_else(|| {
                    flag(
                        "--nproc-per-node",
                        n,
                        format!("expected a number in 1..={MAX_NPROC_PER_NODE}, `cpu` or `auto`"),
                    )
                })?,
        };
        let nnodes = match a.nnodes.split_once(':') {
            Some((lo, hi)) if lo == hi => lo,
            Some(_) => {
                return Err(flag(
                    "--nnodes",
                    &a.nnodes,
                    "elastic node ranges are not supported; give one number",
                ));
            }
            None => a.nnodes.as_str(),
        };
        let nnodes = nnodes
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_NNODES).contains(n))
            .ok_or_else(|| {
                flag(
                    "--nnodes",
                    &a.nnodes,
                    format!("expected a number in 1..={MAX_NNODES}"),
                )
            })?;
        if !(0.0..=MAX_GRACE_PERIOD_S).contains(&a.grace_period) {
            return Err(flag(
                "--grace-period",
                format!("{:?}", a.grace_period),
                format!("expected a number of seconds in [0, {MAX_GRACE_PERIOD_S}]"),
            ));
        }
        let (master_addr, master_port) = match &a.rdzv_endpoint {
            None => (a.master_addr, a.master_port),
            Some(ep) => {
                let bad = || flag("--rdzv-endpoint", ep, "expected host:port");
                let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_string(), port.parse().map_err(|_| bad())?)
            }
        };
        let mut cfg = Self {
            nproc_per_node,
            nnodes,
            node_rank: a.node_rank,
            master_addr,
            master_port: Some(master_port),
            max_restarts: a.max_restarts,
            grace_period: Duration::from_secs_f64(a.grace_period),
            run_id: a.rdzv_id.unwrap_or_else(|| "none".into()),
            command: a.command,
        };
        if a.standalone {
            cfg.nnodes = 1;
            cfg.node_rank = 0;
            cfg.master_addr = "127.0.0.1".into();
            cfg.master_port = None;
        }
        if cfg.node_rank >= cfg.nnodes {
            return Err(flag(
                "--node-rank",
                cfg.node_rank,
                format!("must be below --nnodes {}", cfg.nnodes),
            ));
        }
        if cfg.master_port == Some(0) {
            if cfg.nnodes > 1 {
                return Err(flag(
                    "--master-port",
                    0,
                    "other nodes cannot find a random port; give one",
                ));
            }
            cfg.master_port = None;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LaunchConfig> {
        let args = Args::try_parse_from(std::iter::once("uqa-launch").chain(args.iter().copied()))
            .unwrap();
        LaunchConfig::try_from(args)
    }

    #[test]
    fn torchrun_spellings_and_trailing_command() {
        let a = parse(&[
            "--nproc_per_node=4",
            "--nnodes",
            "2:2",
            "--node_rank",
            "1",
            "--master_addr",
            "h",
            "--master_port=1234",
            "--max_restarts",
            "3",
            "prog",
            "--flag",
            "x",
        ])
        .unwrap();
        assert_eq!(
            (a.nproc_per_node, a.nnodes, a.node_rank, a.world_size()),
            (4, 2, 1, 8)
        );
        assert_eq!(
            (a.master_addr.as_str(), a.master_port, a.max_restarts),
            ("h", Some(1234), 3)
        );
        assert_eq!(a.command, ["prog", "--flag", "x"]);
        let b = parse(&["--nproc-per-node", "2", "--", "sh", "-c", "echo hi"]).unwrap();
        let c = parse(&["--rdzv-backend=c10d", "--rdzv_endpoint", "node7:29400", "x"]).unwrap();
        assert_eq!(
            (c.master_addr.as_str(), c.master_port),
            ("node7", Some(29400))
        );
        assert_eq!(b.command, ["sh", "-c", "echo hi"]);
        assert!(!parse(&["x"]).unwrap().master_addr.is_empty());
    }

    #[test]
    fn standalone_overrides_rendezvous_flags() {
        let a = parse(&[
            "--standalone",
            "--nnodes",
            "3",
            "--node-rank",
            "2",
            "--master-addr",
            "h",
            "x",
        ])
        .unwrap();
        assert_eq!(
            (a.nnodes, a.node_rank, a.master_addr.as_str(), a.master_port),
            (1, 0, "127.0.0.1", None)
        );
    }

    #[test]
    fn bad_flags_name_flag_and_value() {
        let e = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(
            e(&["--nproc-per-node", "0", "x"]),
            "--nproc-per-node \"0\": expected a number in 1..=4096, `cpu` or `auto`"
        );
        // Huge values are refused before anything starts (issue 15): no 10^11 processes, no
        // rank number overflowing, no `Duration` panic.
        assert!(e(&["--nproc-per-node", "99999999999", "x"]).contains("1..=4096"));
        assert!(e(&["--nnodes", "99999999999", "x"]).contains("--nnodes"));
        assert!(e(&["--grace-period", "1e30", "x"]).contains("--grace-period"));
        assert!(e(&["--grace-period", "inf", "x"]).contains("--grace-period"));
        assert!(e(&["--nnodes", "1:4", "x"]).contains("elastic"));
        assert_eq!(
            e(&["--nnodes", "2", "--node-rank", "2", "x"]),
            "--node-rank \"2\": must be below --nnodes 2"
        );
        assert!(e(&["--nnodes", "2", "--master-port", "0", "x"]).contains("--master-port \"0\""));
        assert!(e(&["--grace-period", "nan", "x"]).contains("--grace-period"));
        assert_eq!(
            e(&["--rdzv-endpoint", "nohost", "x"]),
            "--rdzv-endpoint \"nohost\": expected host:port"
        );
        assert!(
            Args::try_parse_from(["uqa-launch", "--nproc-per-node", "2"]).is_err(),
            "command is required"
        );
    }
}
