//! The launch contract: who am I (rank, node, world) and where is the rendezvous (master address,
//! port, job token). Read from torchrun's variables, else derived from Slurm's (`srun` without a
//! launcher), else the single-process default. Both `uqa-launch` and every rank use the variable
//! names defined here, so the contract lives in one place.
//!
//! Everything is read through a lookup function, so tests inject maps and never touch the
//! process environment.

use std::collections::HashMap;

use crate::error::{CommError, Result};
use crate::nodelist::{expand_nodelist, expand_tasks_per_node};

pub const RANK: &str = "RANK";
pub const LOCAL_RANK: &str = "LOCAL_RANK";
pub const WORLD_SIZE: &str = "WORLD_SIZE";
pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
pub const GROUP_RANK: &str = "GROUP_RANK";
pub const MASTER_ADDR: &str = "MASTER_ADDR";
pub const MASTER_PORT: &str = "MASTER_PORT";
pub const TORCHELASTIC_RESTART_COUNT: &str = "TORCHELASTIC_RESTART_COUNT";
pub const UQA_RESTART_COUNT: &str = "UQA_RESTART_COUNT";
/// Shared secret of one job; connections presenting another token are refused. It guards against
/// stale ranks of another job on a reused port, not against attackers on the network.
pub const UQA_JOB_TOKEN: &str = "UQA_JOB_TOKEN";
/// Set to `1` by `uqa-launch`: the launcher of node 0 hosts the store, so rank 0 must not.
pub const UQA_STORE_HOSTED: &str = "UQA_STORE_HOSTED";
/// Set by torchrun when its agent hosts a (torch-protocol) store on MASTER_PORT.
pub const TORCHELASTIC_USE_AGENT_STORE: &str = "TORCHELASTIC_USE_AGENT_STORE";

/// Open MPI's view of a process started by `mpirun`.
pub const OMPI_RANK: &str = "OMPI_COMM_WORLD_RANK";
pub const OMPI_SIZE: &str = "OMPI_COMM_WORLD_SIZE";
pub const OMPI_LOCAL_RANK: &str = "OMPI_COMM_WORLD_LOCAL_RANK";
pub const OMPI_LOCAL_SIZE: &str = "OMPI_COMM_WORLD_LOCAL_SIZE";
pub const OMPI_NODE_RANK: &str = "OMPI_COMM_WORLD_NODE_RANK";

/// Slurm assigns no port; jobs derive one from the job id in this range so that concurrent jobs
/// sharing a node rarely collide (MASTER_PORT overrides).
pub const SLURM_PORT_BASE: u16 = 20000;
pub const SLURM_PORT_SPAN: u16 = 10000;

const DEFAULT_ADDR: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 29500;

/// Where the launch values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchSource {
    /// torchrun or `uqa-launch` (same variables).
    Torchrun,
    /// An `srun` task without a launcher.
    Slurm,
    /// A process started by Open MPI's `mpirun` (its `OMPI_COMM_WORLD_*` variables).
    Mpirun,
    /// No launcher: one process.
    Single,
}

/// One rank's view of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    pub local_world_size: usize,
    /// Node rank (torchrun's GROUP_RANK, Slurm's SLURM_NODEID).
    pub group_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub restart_count: u32,
    pub job_token: String,
    /// Port of our rendezvous store: MASTER_PORT, except under real torchrun whose own store
    /// already occupies MASTER_PORT, where it is MASTER_PORT + 1.
    pub store_port: u16,
    /// Whether this rank hosts the store (rank 0, unless the launcher does).
    pub hosts_store: bool,
    pub source: LaunchSource,
}

impl RankEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads an injected map (tests, or a launcher computing a child's view).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self> {
        Self::from_lookup(|k| map.get(k).cloned())
    }

    /// The single-process default: rank 0 of 1 on 127.0.0.1.
    pub fn single() -> Self {
        Self {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            local_world_size: 1,
            group_rank: 0,
            master_addr: DEFAULT_ADDR.into(),
            master_port: DEFAULT_PORT,
            restart_count: 0,
            job_token: "single".into(),
            store_port: DEFAULT_PORT,
            hosts_store: true,
            source: LaunchSource::Single,
        }
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Lookup(&get);
        if env.has(RANK) || env.has(WORLD_SIZE) {
            Self::torchrun(&env)
        } else if env.has(OMPI_RANK) {
            // Before Slurm's: under mpirun inside an allocation, SLURM_* describe mpirun's
            // daemons, not the ranks.
            Self::mpirun(&env)
        } else if env.has("SLURM_PROCID") && (env.has("SLURM_STEP_ID") || env.has("SLURM_STEPID")) {
            // Only inside an srun step: the batch script itself also sees SLURM_PROCID=0 and
            // SLURM_NTASKS=<allocation>, but it is one process, not rank 0 of many.
            Self::slurm(&env)
        } else {
            let mut single = Self::single();
            single.restart_count = restart_count(&env, None)?;
            Ok(single)
        }
    }

    fn torchrun(env: &Lookup<'_>) -> Result<Self> {
        const CTX: &str = "torchrun-style launch: RANK or WORLD_SIZE is set";
        let rank = env.required_usize(RANK, CTX)?;
        let world_size = env.required_usize(WORLD_SIZE, CTX)?;
        let local_world_size = env.usize_or(LOCAL_WORLD_SIZE, world_size)?;
        let local_rank = env.usize_or(LOCAL_RANK, rank % local_world_size.max(1))?;
        let group_rank = env.usize_or(GROUP_RANK, rank / local_world_size.max(1))?;
        let (master_addr, master_port) = if world_size > 1 {
            (
                env.required(MASTER_ADDR, "needed when WORLD_SIZE > 1")?,
                env.port(MASTER_PORT)?.ok_or(CommError::EnvMissing {
                    var: MASTER_PORT,
                    context: "needed when WORLD_SIZE > 1",
                })?,
            )
        } else {
            (
                env.get(MASTER_ADDR).unwrap_or_else(|| DEFAULT_ADDR.into()),
                env.port(MASTER_PORT)?.unwrap_or(DEFAULT_PORT),
            )
        };
        let launcher_store = env.get(UQA_STORE_HOSTED).is_some_and(|v| v == "1");
        let torch_agent_store = !launcher_store
            && env
                .get(TORCHELASTIC_USE_AGENT_STORE)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let store_port = if torch_agent_store {
            master_port
                .checked_add(1)
                .ok_or_else(|| CommError::EnvVar {
                    var: MASTER_PORT,
                    value: master_port.to_string(),
                    reason: "torchrun's store occupies it and MASTER_PORT + 1 overflows".into(),
                })?
        } else {
            master_port
        };
        let restart_count = restart_count(env, None)?;
        let job_token = job_token(env, &master_addr, master_port, world_size);
        let out = Self {
            rank,
            local_rank,
            world_size,
            local_world_size,
            group_rank,
            master_addr,
            master_port,
            restart_count,
            job_token,
            store_port,
            hosts_store: rank == 0 && !launcher_store,
            source: LaunchSource::Torchrun,
        };
        out.validate()?;
        Ok(out)
    }

    fn mpirun(env: &Lookup<'_>) -> Result<Self> {
        const CTX: &str = "mpirun launch: OMPI_COMM_WORLD_RANK is set";
        let rank = env.required_usize(OMPI_RANK, CTX)?;
        let world_size = env.required_usize(OMPI_SIZE, CTX)?;
        let local_world_size = env.usize_or(OMPI_LOCAL_SIZE, world_size)?;
        let local_rank = env.usize_or(OMPI_LOCAL_RANK, rank % local_world_size.max(1))?;
        let master_addr = env.get(MASTER_ADDR).unwrap_or_else(|| DEFAULT_ADDR.into());
        let master_port = env.port(MASTER_PORT)?.unwrap_or(DEFAULT_PORT);
        let out = Self {
            rank,
            local_rank,
            world_size,
            local_world_size,
            group_rank: env.usize_or(OMPI_NODE_RANK, rank / local_world_size.max(1))?,
            job_token: job_token(env, &master_addr, master_port, world_size),
            master_addr,
            master_port,
            restart_count: restart_count(env, None)?,
            store_port: master_port,
            hosts_store: rank == 0,
            source: LaunchSource::Mpirun,
        };
        out.validate()?;
        Ok(out)
    }

    fn slurm(env: &Lookup<'_>) -> Result<Self> {
        const CTX: &str = "srun launch: SLURM_PROCID is set";
        let rank = env.required_usize("SLURM_PROCID", CTX)?;
        let world_size = match env.get("SLURM_NTASKS") {
            Some(_) => env.required_usize("SLURM_NTASKS", CTX)?,
            None => env.required_usize("SLURM_NPROCS", CTX)?,
        };
        let local_rank = env.usize_or("SLURM_LOCALID", 0)?;
        let group_rank = env.usize_or("SLURM_NODEID", 0)?;
        let local_world_size = if env.has("SLURM_NTASKS_PER_NODE") {
            env.required_usize("SLURM_NTASKS_PER_NODE", CTX)?
        } else if let Some(tpn) = env.get("SLURM_TASKS_PER_NODE") {
            let counts = expand_tasks_per_node(&tpn)?;
            *counts.get(group_rank).ok_or_else(|| CommError::EnvVar {
                var: "SLURM_TASKS_PER_NODE",
                value: tpn.clone(),
                reason: format!("has no entry for SLURM_NODEID={group_rank}"),
            })?
        } else {
            world_size
        };
        let master_addr = match env.get(MASTER_ADDR) {
            Some(a) => a,
            None => {
                let (var, list) = match env.get("SLURM_JOB_NODELIST") {
                    Some(l) => ("SLURM_JOB_NODELIST", l),
                    None => (
                        "SLURM_NODELIST",
                        env.required("SLURM_NODELIST", "srun launch without MASTER_ADDR")?,
                    ),
                };
                let hosts = expand_nodelist(&list).map_err(|e| match e {
                    CommError::EnvVar { value, reason, .. } => {
                        CommError::EnvVar { var, value, reason }
                    }
                    other => other,
                })?;
                hosts[0].clone()
            }
        };
        let master_port = match env.port(MASTER_PORT)? {
            Some(p) => p,
            None => {
                let job = env.required_u64("SLURM_JOB_ID", "srun launch without MASTER_PORT")?;
                SLURM_PORT_BASE + (job % u64::from(SLURM_PORT_SPAN)) as u16
            }
        };
        let restart_count = restart_count(env, Some("SLURM_RESTART_COUNT"))?;
        let job_token = job_token(env, &master_addr, master_port, world_size);
        let out = Self {
            rank,
            local_rank,
            world_size,
            local_world_size,
            group_rank,
            master_addr,
            master_port,
            restart_count,
            job_token,
            store_port: master_port,
            hosts_store: rank == 0,
            source: LaunchSource::Slurm,
        };
        out.validate()?;
        Ok(out)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CommError::EnvInconsistent(m));
        if self.world_size == 0 {
            return bad("world size is 0".into());
        }
        if self.rank >= self.world_size {
            return bad(format!(
                "rank {} is not below world size {}",
                self.rank, self.world_size
            ));
        }
        if self.local_world_size == 0 || self.local_world_size > self.world_size {
            return bad(format!(
                "local world size {} is not in 1..={}",
                self.local_world_size, self.world_size
            ));
        }
        if self.local_rank >= self.local_world_size {
            return bad(format!(
                "local rank {} is not below local world size {}",
                self.local_rank, self.local_world_size
            ));
        }
        Ok(())
    }

    /// `host:port` of the rendezvous store.
    pub fn store_addr(&self) -> String {
        host_port(&self.master_addr, self.store_port)
    }

    /// Where the host of the store listens: the master address itself when it is a loopback
    /// address (single-node jobs stay off the network), every interface otherwise (MASTER_ADDR
    /// may be a name for any of this node's interfaces).
    pub fn store_bind_addr(&self) -> String {
        store_bind_addr(&self.master_addr, self.store_port)
    }

    /// The variables a launcher sets for this rank (the inverse of [`RankEnv::from_map`]).
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (RANK, self.rank.to_string()),
            (LOCAL_RANK, self.local_rank.to_string()),
            (WORLD_SIZE, self.world_size.to_string()),
            (LOCAL_WORLD_SIZE, self.local_world_size.to_string()),
            (GROUP_RANK, self.group_rank.to_string()),
            (MASTER_ADDR, self.master_addr.clone()),
            (MASTER_PORT, self.master_port.to_string()),
            (TORCHELASTIC_RESTART_COUNT, self.restart_count.to_string()),
            (UQA_RESTART_COUNT, self.restart_count.to_string()),
            (UQA_JOB_TOKEN, self.job_token.clone()),
        ]
    }
}

/// `host:port`, with brackets around IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// See [`RankEnv::store_bind_addr`]; shared with the launcher, which hosts the store too.
pub fn store_bind_addr(master_addr: &str, port: u16) -> String {
    let loopback = master_addr == "localhost"
        || master_addr
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        host_port(master_addr, port)
    } else {
        format!("0.0.0.0:{port}")
    }
}

/// Our restart count wins over torchrun's (they agree under `uqa-launch`).
fn restart_count(env: &Lookup<'_>, extra: Option<&'static str>) -> Result<u32> {
    for var in [UQA_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT]
        .into_iter()
        .chain(extra)
    {
        if let Some(v) = env.get(var) {
            return v.trim().parse().map_err(|_| CommError::EnvVar {
                var,
                value: v.clone(),
                reason: "not a non-negative integer".into(),
            });
        }
    }
    Ok(0)
}

/// UQA_JOB_TOKEN, or a value every rank of the same job derives identically.
fn job_token(env: &Lookup<'_>, addr: &str, port: u16, world: usize) -> String {
    if let Some(t) = env.get(UQA_JOB_TOKEN) {
        return t;
    }
    let mut material = format!("{addr}:{port}/{world}");
    for var in [
        "SLURM_JOB_ID",
        "SLURM_STEP_ID",
        "TORCHELASTIC_RUN_ID",
        "OMPI_MCA_ess_base_jobid",
        "PMIX_NAMESPACE",
    ] {
        material.push('/');
        material.push_str(&env.get(var).unwrap_or_default());
    }
    format!("derived-{:016x}", fnv1a64(material.as_bytes()))
}

/// FNV-1a: stable across processes and Rust versions (std's hasher is not).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Typed access to the lookup function with errors naming the variable and value.
struct Lookup<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Lookup<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn has(&self, var: &str) -> bool {
        self.get(var).is_some()
    }

    fn required(&self, var: &'static str, context: &'static str) -> Result<String> {
        self.get(var).ok_or(CommError::EnvMissing { var, context })
    }

    fn parse_u64(var: &'static str, v: &str) -> Result<u64> {
        v.trim().parse().map_err(|_| CommError::EnvVar {
            var,
            value: v.to_string(),
            reason: "not a non-negative integer".into(),
        })
    }

    fn required_u64(&self, var: &'static str, context: &'static str) -> Result<u64> {
        Self::parse_u64(var, &self.required(var, context)?)
    }

    fn required_usize(&self, var: &'static str, context: &'static str) -> Result<usize> {
        let v = self.required(var, context)?;
        usize::try_from(Self::parse_u64(var, &v)?).map_err(|_| CommError::EnvVar {
            var,
            value: v,
            reason: "too large".into(),
        })
    }

    fn usize_or(&self, var: &'static str, default: usize) -> Result<usize> {
        match self.get(var) {
            Some(_) => self.required_usize(var, ""),
            None => Ok(default),
        }
    }

    fn port(&self, var: &'static str) -> Result<Option<u16>> {
        let Some(v) = self.get(var) else {
            return Ok(None);
        };
        match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(CommError::EnvVar {
                var,
                value: v,
                reason: "not a port number in 1..=65535".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<RankEnv> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RankEnv::from_map(&map)
    }

    #[test]
    fn reads_torchrun_variables() {
        let e = env(&[
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("GROUP_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("UQA_JOB_TOKEN", "tok"),
        ])
        .unwrap();
        assert_eq!(
            (
                e.rank,
                e.local_rank,
                e.world_size,
                e.local_world_size,
                e.group_rank
            ),
            (5, 1, 8, 4, 1)
        );
        assert_eq!(e.store_addr(), "10.0.0.1:29400");
        assert_eq!((e.restart_count, e.job_token.as_str()), (2, "tok"));
        assert_eq!(e.source, LaunchSource::Torchrun);
        assert!(!e.hosts_store);
    }

    #[test]
    fn addresses_bracket_ipv6_and_bind_loopback_only_locally() {
        assert_eq!(host_port("::1", 5), "[::1]:5");
        assert_eq!(host_port("h", 5), "h:5");
        assert_eq!(store_bind_addr("127.0.0.2", 5), "127.0.0.2:5");
        assert_eq!(store_bind_addr("::1", 5), "[::1]:5");
        assert_eq!(store_bind_addr("localhost", 5), "localhost:5");
        assert_eq!(store_bind_addr("node1", 5), "0.0.0.0:5");
        assert_eq!(store_bind_addr("10.0.0.1", 5), "0.0.0.0:5");
    }

    #[test]
    fn to_vars_round_trips() {
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap();
        let map = e
            .to_vars()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(RankEnv::from_map(&map).unwrap(), e);
        assert!(e.hosts_store);
    }

    #[test]
    fn launcher_and_torch_agent_stores() {
        let base = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1000"),
        ];
        let mut ours = base.to_vec();
        ours.push(("UQA_STORE_HOSTED", "1"));
        let e = env(&ours).unwrap();
        assert!(!e.hosts_store);
        assert_eq!(e.store_port, 1000);
        let mut torch = base.to_vec();
        torch.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        let e = env(&torch).unwrap();
        assert!(e.hosts_store);
        assert_eq!(e.store_port, 1001);
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        let err = env(&[("RANK", "x1"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable RANK=\"x1\": not a non-negative integer"
        );
        let err = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("MASTER_PORT=\"70000\""), "{err}");
        let err = env(&[("RANK", "0"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_ADDR is not set"), "{err}");
        let err = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("rank 3 is not below world size 2"), "{err}");
        let err = env(&[("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK is not set"), "{err}");
    }

    #[test]
    fn derives_from_slurm() {
        let e = env(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_TASKS_PER_NODE", "2(x2)"),
            ("SLURM_JOB_NODELIST", "n[1-3,5]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap();
        assert_eq!(
            (
                e.rank,
                e.local_rank,
                e.world_size,
                e.local_world_size,
                e.group_rank
            ),
            (3, 1, 4, 2, 1)
        );
        assert_eq!(e.master_addr, "n1");
        assert_eq!(e.master_port, SLURM_PORT_BASE + 3456);
        assert_eq!(e.source, LaunchSource::Slurm);
        // Every task of the job derives the same token without coordination.
        let e0 = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_NODELIST", "n[1-3,5]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap();
        assert_eq!(e0.job_token, e.job_token);
        assert!(e0.hosts_store);
    }

    #[test]
    fn reads_mpirun_variables_before_slurms() {
        // mpirun inside a Slurm allocation: the SLURM_* variables describe its daemons.
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("OMPI_COMM_WORLD_NODE_RANK", "1"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
        ])
        .unwrap();
        assert_eq!(
            (
                e.rank,
                e.local_rank,
                e.world_size,
                e.local_world_size,
                e.group_rank
            ),
            (3, 1, 4, 2, 1)
        );
        assert_eq!(e.source, LaunchSource::Mpirun);
        assert!(!e.hosts_store);
        let err = env(&[("OMPI_COMM_WORLD_RANK", "4"), ("OMPI_COMM_WORLD_SIZE", "4")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank 4 is not below world size 4"), "{err}");
    }

    #[test]
    fn slurm_master_port_and_addr_overrides_and_errors() {
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEPID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_NTASKS_PER_NODE", "2"),
            ("MASTER_ADDR", "10.1.1.1"),
            ("MASTER_PORT", "4242"),
        ])
        .unwrap();
        assert_eq!(e.store_addr(), "10.1.1.1:4242");
        assert_eq!(e.local_world_size, 2);
        let err = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "n[1-"),
            ("SLURM_JOB_ID", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLURM_JOB_NODELIST=\"n[1-\""), "{err}");
        let err = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "two"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLURM_NTASKS=\"two\""), "{err}");
    }

    #[test]
    fn batch_script_without_srun_step_is_single_process() {
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "7"),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.source),
            (0, 1, LaunchSource::Single)
        );
    }

    #[test]
    fn default_is_single_process() {
        let e = env(&[]).unwrap();
        assert_eq!(e, RankEnv::single());
        assert_eq!(env(&[("UQA_RESTART_COUNT", "3")]).unwrap().restart_count, 3);
        let err = env(&[("UQA_RESTART_COUNT", "-1")]).unwrap_err().to_string();
        assert!(err.contains("UQA_RESTART_COUNT=\"-1\""), "{err}");
    }
}
