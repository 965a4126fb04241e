//! Prometheus metrics of a training run: each rank serves `GET /metrics` (text exposition
//! format 0.0.4) on `metrics.address`, port `metrics.base_port + LOCAL_RANK`, from a
//! `tiny_http` server thread that stops when the run ends.
//!
//! The loop feeds one [`StepReport`] per optimiser step (and the evaluation results), with
//! values already reduced where the loop reduces them: loss, learning rate and gradient norm are
//! the global ones (equal on every rank); step time, throughput and all-reduce traffic are this
//! rank's. Every series carries a `rank` label (the global rank), so `sum by ()` over ranks
//! gives the job's throughput, and the constant labels of `metrics.labels` (a study's `study`
//! and `element`).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `uqa_train_loss` | gauge | mean next-item loss of the last step, over the global batch |
//! | `uqa_train_learning_rate` | gauge | learning rate of the last step |
//! | `uqa_train_grad_norm` | gauge | global L2 gradient norm of the last step, before clipping |
//! | `uqa_train_step_duration_seconds` | histogram | wall time of each optimiser step |
//! | `uqa_train_samples_per_second` | gauge | sequences per second of this rank's last step |
//! | `uqa_train_positions_per_second` | gauge | valid positions (tokens) per second, likewise |
//! | `uqa_train_samples_total` | counter | sequences this process has trained on |
//! | `uqa_train_positions_total` | counter | valid positions this process has trained on |
//! | `uqa_allreduce_seconds_total` | counter | time in gradient all-reduce |
//! | `uqa_allreduce_bytes_total` | counter | gradient bytes all-reduced (per rank, payload) |
//! | `uqa_train_step` | gauge | optimiser steps completed (continues across resumes) |
//! | `uqa_train_epoch` | gauge | epochs completed |
//! | `uqa_train_world_size` | gauge | ranks in the run |
//! | `uqa_restarts` | gauge | gang restarts before this process (`UQA_RESTART_COUNT`, `TORCHELASTIC_RESTART_COUNT`) |
//! | `uqa_process_resident_memory_bytes` | gauge | resident set size, read at scrape time |
//! | `uqa_optimizer_state_bytes` | gauge | AdamW moment bytes this rank holds (about 1/world of the total with `train.zero = 1`) |
//! | `uqa_eval_hit_ratio`, `uqa_eval_ndcg` | gauge | last evaluation (rank 0), labels `protocol`, `k` |
//!
//! Port choice: the default base port is 9450, clear of node_exporter (9100) and NVIDIA's
//! dcgm-exporter (9400), which run on most GPU nodes; 8 local ranks take 9450-9457. A busy port
//! is an error naming the address and rank when `metrics.base_port` is set explicitly; with the
//! default port it is a warning and the run trains without an endpoint (two runs sharing a node,
//! or parallel tests, must not kill each other over an auxiliary service). `base_port = 0` lets
//! the system pick a free port per rank (printed at start).

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, Opts, Registry,
    TextEncoder,
};
use serde::{Deserialize, Serialize};
use uqa_comm::RankEnv;

use super::{EvalReport, Observer};
use crate::engine::StepReport;
use crate::error::{Result, TrainError};
use crate::eval::{HitNdcg, RankingMetrics};

/// Default first port; rank with LOCAL_RANK `r` serves on `DEFAULT_BASE_PORT + r`.
pub const DEFAULT_BASE_PORT: u16 = 9450;

/// The `[metrics]` section: the per-rank Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (default: true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on (default: loopback only; `0.0.0.0` exposes the endpoint to the
    /// network, for a Prometheus server on another host).
    #[serde(default = "loopback")]
    pub address: IpAddr,
    /// First port; each rank adds its LOCAL_RANK. Unset: 9450, and a busy port is only a
    /// warning. Set: a busy port is an error. 0: a free port chosen by the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_port: Option<u16>,
    /// Constant labels on every series besides `rank`, e.g. `{ study = "table2", element =
    /// "sasrec-s0" }` (set by `uqa study run`), to tell runs apart in one Prometheus.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl MetricsConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Label names Prometheus accepts (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-reserved, not `rank`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        for name in self.labels.keys() {
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok
                || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with("__")
                || name == "rank"
            {
                return Err(format!(
                    "metrics.labels.{name}: not a usable Prometheus label name (letters, digits and `_`, not starting with a digit or `__`; `rank` is set per rank)"
                ));
            }
        }
        Ok(())
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: loopback(),
            base_port: None,
            labels: BTreeMap::new(),
        }
    }
}

/// A run's metrics sink: an endpoint with its registry, or nothing (disabled, in-process
/// replicas in tests, or the default port was busy).
pub struct Telemetry {
    active: Option<(Arc<TrainMetrics>, MetricsServer)>,
}

impl Telemetry {
    /// A sink that records nothing.
    pub fn disabled() -> Self {
        Self { active: None }
    }

    /// Start this rank's endpoint as `cfg` says.
    pub fn start(cfg: &MetricsConfig, env: &RankEnv) -> Result<Self> {
        Self::start_on(cfg, env, DEFAULT_BASE_PORT)
    }

    fn start_on(cfg: &MetricsConfig, env: &RankEnv, default_base: u16) -> Result<Self> {
        if !cfg.enabled {
            return Ok(Self::disabled());
        }
        cfg.validate().map_err(TrainError::Invalid)?;
        let base = cfg.base_port.unwrap_or(default_base);
        let port = match base {
            0 => 0,
            b => u16::try_from(usize::from(b) + env.local_rank).map_err(|_| {
                TrainError::Invalid(format!(
                    "metrics.base_port = {b} + local rank {} is past port 65535; choose a lower metrics.base_port",
                    env.local_rank
                ))
            })?,
        };
        let addr = SocketAddr::new(cfg.address, port);
        let metrics = Arc::new(TrainMetrics::with_labels(
            env.rank,
            env.world_size,
            env.restart_count,
            &cfg.labels,
        )?);
        let render = {
            let m = Arc::clone(&metrics);
            Arc::new(move || m.render()) as Render
        };
        match MetricsServer::start(addr, render) {
            Ok(server) => {
                if env.rank == 0 || base == 0 {
                    eprintln!(
                        "rank {}: Prometheus metrics at http://{}/metrics{}",
                        env.rank,
                        server.local_addr(),
                        if base == 0 || env.world_size == 1 {
                            ""
                        } else {
                            " (other ranks: base port + LOCAL_RANK)"
                        }
                    );
                }
                Ok(Self {
                    active: Some((metrics, server)),
                })
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse && cfg.base_port.is_none() => {
                eprintln!(
                    "warning: rank {} (local rank {}): Prometheus port {addr} is already in use; \
                     training without a metrics endpoint (set metrics.base_port to choose a port, \
                     or metrics.enabled = false)",
                    env.rank, env.local_rank
                );
                Ok(Self::disabled())
            }
            Err(e) => Err(bind_error(addr, env, e)),
        }
    }

    /// The endpoint's address, when serving.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.active.as_ref().map(|(_, s)| s.local_addr())
    }

    pub fn record_step(&self, r: &StepReport) {
        if let Some((m, _)) = &self.active {
            m.record_step(r);
        }
    }

    /// This rank's optimiser state size, reported once at start-up.
    pub fn record_optimizer_state(&self, bytes: usize) {
        if let Some((m, _)) = &self.active {
            m.optimizer_state_bytes.set(bytes as f64);
        }
    }

    pub fn record_eval(&self, epoch: u64, m: &RankingMetrics) {
        if let Some((t, _)) = &self.active {
            t.record_eval(epoch, m);
        }
    }
}

impl Observer for &Telemetry {
    fn step(&mut self, r: &StepReport) -> Result<()> {
        self.record_step(r);
        Ok(())
    }

    fn eval(&mut self, r: &EvalReport) -> Result<()> {
        self.record_eval(r.epoch, r.metrics);
        Ok(())
    }
}

fn bind_error(addr: SocketAddr, env: &RankEnv, e: std::io::Error) -> TrainError {
    let hint = match e.kind() {
        ErrorKind::AddrInUse => {
            "; another process holds it (another run on this node?): choose another metrics.base_port or set metrics.enabled = false"
        }
        ErrorKind::AddrNotAvailable => "; metrics.address is not an address of this host",
        _ => "",
    };
    TrainError::Invalid(format!(
        "rank {} (local rank {}): cannot serve Prometheus metrics on {addr}: {e}{hint}",
        env.rank, env.local_rank
    ))
}

/// The registry and its metrics; every series carries a constant `rank` label.
pub struct TrainMetrics {
    registry: Registry,
    loss: Gauge,
    lr: Gauge,
    grad_norm: Gauge,
    step_seconds: Histogram,
    samples_per_second: Gauge,
    positions_per_second: Gauge,
    samples: IntCounter,
    positions: IntCounter,
    allreduce_seconds: Counter,
    allreduce_bytes: IntCounter,
    step: Gauge,
    epoch: Gauge,
    rss: Gauge,
    optimizer_state_bytes: Gauge,
    eval_hr: GaugeVec,
    eval_ndcg: GaugeVec,
}

/// Step-time buckets: 5 ms to ~41 s, doubling (tiny CPU steps to large GPU steps).
fn step_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.005 * f64::from(1u32 << i)).collect()
}

impl TrainMetrics {
    pub fn new(rank: usize, world_size: usize, restarts: u32) -> Result<Self> {
        Self::with_labels(rank, world_size, restarts, &BTreeMap::new())
    }

    /// With constant `labels` on every series besides `rank`.
    pub fn with_labels(
        rank: usize,
        world_size: usize,
        restarts: u32,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut labels: HashMap<String, String> = labels.clone().into_iter().collect();
        labels.insert("rank".to_string(), rank.to_string());
        let registry = Registry::new_custom(None, Some(labels)).map_err(prom_error)?;
        let reg = |c: Box<dyn Collector>| registry.register(c).map_err(prom_error);
        let gauge = |name: &str, help: &str| -> Result<Gauge> {
            let g = Gauge::new(name, help).map_err(prom_error)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let int_counter = |name: &str, help: &str| -> Result<IntCounter> {
            let c = IntCounter::new(name, help).map_err(prom_error)?;
            reg(Box::new(c.clone()))?;
            Ok(c)
        };
        let eval_vec = |name: &str, help: &str| -> Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), &["protocol", "k"]).map_err(prom_error)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let step_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "uqa_train_step_duration_seconds",
                "Wall time of one optimiser step on this rank (micro-steps, all-reduce, update).",
            )
            .buckets(step_buckets()),
        )
        .map_err(prom_error)?;
        reg(Box::new(step_seconds.clone()))?;
        let allreduce_seconds = Counter::new(
            "uqa_allreduce_seconds_total",
            "Seconds this rank spent in gradient all-reduce.",
        )
        .map_err(prom_error)?;
        reg(Box::new(allreduce_seconds.clone()))?;

        gauge("uqa_train_world_size", "Ranks in the run.")?.set(world_size as f64);
        gauge(
            "uqa_restarts",
            "Gang restarts before this process started (UQA_RESTART_COUNT or TORCHELASTIC_RESTART_COUNT).",
        )?
        .set(f64::from(restarts));
        Ok(Self {
            loss: gauge(
                "uqa_train_loss",
                "Mean next-item loss of the last optimiser step over the global batch (all ranks).",
            )?,
            lr: gauge(
                "uqa_train_learning_rate",
                "Learning rate of the last optimiser step.",
            )?,
            grad_norm: gauge(
                "uqa_train_grad_norm",
                "Global L2 norm of the last step's gradients, before clipping.",
            )?,
            step_seconds,
            samples_per_second: gauge(
                "uqa_train_samples_per_second",
                "Sequences per second of this rank's last optimiser step.",
            )?,
            positions_per_second: gauge(
                "uqa_train_positions_per_second",
                "Valid sequence positions (tokens) per second of this rank's last optimiser step.",
            )?,
            samples: int_counter(
                "uqa_train_samples_total",
                "Sequences this rank has trained on since the process started.",
            )?,
            positions: int_counter(
                "uqa_train_positions_total",
                "Valid sequence positions (tokens) this rank has trained on since the process started.",
            )?,
            allreduce_seconds,
            allreduce_bytes: int_counter(
                "uqa_allreduce_bytes_total",
                "Gradient bytes this rank has all-reduced (payload, summed over buckets).",
            )?,
            step: gauge(
                "uqa_train_step",
                "Optimiser steps completed (continues across resumes).",
            )?,
            epoch: gauge("uqa_train_epoch", "Epochs completed.")?,
            rss: gauge(
                "uqa_process_resident_memory_bytes",
                "Resident set size of this rank's process, read at scrape time.",
            )?,
            optimizer_state_bytes: gauge(
                "uqa_optimizer_state_bytes",
                "Bytes of AdamW moment state this rank holds (a shard of it with train.zero = 1).",
            )?,
            eval_hr: eval_vec(
                "uqa_eval_hit_ratio",
                "Hit ratio at k of the last encoder evaluation (rank 0 evaluates).",
            )?,
            eval_ndcg: eval_vec(
                "uqa_eval_ndcg",
                "NDCG at k of the last encoder evaluation (rank 0 evaluates).",
            )?,
            registry,
        })
    }

    pub fn record_step(&self, r: &StepReport) {
        self.step.set(r.step as f64);
        self.epoch.set(r.epoch as f64);
        self.loss.set(r.loss);
        self.lr.set(r.lr);
        self.grad_norm.set(r.grad_norm);
        self.step_seconds.observe(r.seconds);
        if r.seconds > 0.0 {
            self.samples_per_second.set(r.samples as f64 / r.seconds);
            self.positions_per_second.set(r.inputs as f64 / r.seconds);
        }
        self.samples.inc_by(r.samples as u64);
        self.positions.inc_by(r.inputs as u64);
        self.allreduce_seconds.inc_by(r.allreduce.seconds.max(0.0));
        self.allreduce_bytes.inc_by(r.allreduce.bytes as u64);
    }

    pub fn record_eval(&self, epoch: u64, m: &RankingMetrics) {
        self.epoch.set(epoch as f64);
        let set = |protocol: &str, at: &std::collections::BTreeMap<usize, HitNdcg>| {
            for (k, v) in at {
                let k = k.to_string();
                self.eval_hr
                    .with_label_values(&[protocol, k.as_str()])
                    .set(v.hr);
                self.eval_ndcg
                    .with_label_values(&[protocol, k.as_str()])
                    .set(v.ndcg);
            }
        };
        set("full", &m.full);
        set("sampled", &m.sampled);
    }

    /// The exposition text (format 0.0.4), with the resident memory read now.
    pub fn render(&self) -> std::result::Result<Vec<u8>, String> {
        if let Some(rss) = resident_memory_bytes() {
            self.rss.set(rss as f64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

fn prom_error(e: prometheus::Error) -> TrainError {
    TrainError::Invalid(format!("Prometheus metrics: {e}"))
}

/// VmRSS from /proc/self/status (Linux); None elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------------
// The HTTP endpoint.

type Render = Arc<dyn Fn() -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// How often the serving thread checks for shutdown between requests.
const POLL: Duration = Duration::from_millis(50);

/// A thread answering `GET /metrics` (and `HEAD`) through `tiny_http`, which parses requests
/// (a malformed one gets its 400) and gives each connection its own thread, so a slow or silent
/// client never holds up a scrape; 404 elsewhere, 405 for other methods. Dropping it stops the
/// thread and closes the port.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Bind `addr` (binding ourselves keeps the OS error kind, e.g. address in use) and serve.
    pub fn start(addr: SocketAddr, render: Render) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("uqa-metrics".into())
            .spawn({
                let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
                move || serve(&server, &render, &stop)
            })?;
        Ok(Self {
            addr,
            server,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer requests until `stop` is set (checked at least every `POLL`).
fn serve(server: &tiny_http::Server, render: &Render, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => return,
        };
        // Errors here are the client's (resets, timeouts): nothing to report.
        let _ = answer(request, render);
    }
}

fn answer(request: tiny_http::Request, render: &Render) -> std::io::Result<()> {
    use tiny_http::Method;
    let path = request.url().split('?').next().unwrap_or("");
    let text = |status: u16, body: &str| {
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header("Content-Type", "text/plain"))
    };
    if path != "/metrics" {
        return request.respond(text(404, "not found: metrics are at /metrics\n"));
    }
    if !matches!(request.method(), Method::Get | Method::Head) {
        let r = text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD"));
        return request.respond(r);
    }
    match render() {
        // For HEAD, tiny_http sends the GET's headers without the body.
        Ok(body) => {
            let r = tiny_http::Response::from_data(body)
                .with_header(header("Content-Type", prometheus::TEXT_FORMAT));
            request.respond(r)
        }
        Err(e) => request.respond(text(500, &format!("encoding metrics: {e}\n"))),
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn env(rank: usize, local_rank: usize) -> RankEnv {
        let mut e = RankEnv::single();
        e.rank = rank;
        e.local_rank = local_rank;
        e.world_size = 2;
        e.restart_count = 3;
        e
    }

    fn cfg(base_port: Option<u16>) -> MetricsConfig {
        MetricsConfig {
            base_port,
            ..MetricsConfig::default()
        }
    }

    /// Send `request` raw (asking the server to close after answering, as HTTP/1.1 otherwise
    /// keeps the connection open); the whole answer as text.
    fn http(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = request.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n", 1);
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"),
        )
    }

    fn step(n: u64) -> StepReport {
        StepReport {
            step: n,
            epoch: 1,
            loss: 2.5,
            lr: 1e-3,
            grad_norm: 0.75,
            seconds: 0.5,
            samples: 16,
            inputs: 400,
            allreduce: crate::parallel::SyncStats {
                bytes: 1000,
                seconds: 0.125,
            },
            ..StepReport::default()
        }
    }

    #[test]
    fn configured_labels_join_every_series_and_bad_names_are_refused() {
        let labels = BTreeMap::from([
            ("study".to_string(), "table2".to_string()),
            ("element".to_string(), "sasrec-s0".to_string()),
        ]);
        let m = TrainMetrics::with_labels(0, 1, 0, &labels).unwrap();
        m.record_step(&step(3));
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        // The registry orders constant labels as it likes: look for each.
        let line = text
            .lines()
            .find(|l| l.starts_with("uqa_train_step{"))
            .unwrap_or_else(|| panic!("no uqa_train_step in {text}"));
        for label in ["study=\"table2\"", "element=\"sasrec-s0\"", "rank=\"0\""] {
            assert!(line.contains(label), "{label} not in {line}");
        }
        assert!(line.ends_with("} 3"), "{line}");
        for bad in ["9lives", "a-b", "__x", "rank"] {
            let cfg = MetricsConfig {
                labels: BTreeMap::from([(bad.to_string(), "v".to_string())]),
                ..MetricsConfig::default()
            };
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(&format!("metrics.labels.{bad}")), "{err}");
        }
    }

    #[test]
    fn exposition_has_every_metric_with_type_unit_and_rank_label() {
        let m = TrainMetrics::new(1, 2, 3).unwrap();
        m.record_step(&step(7));
        m.record_step(&step(8));
        let mut eval = RankingMetrics::default();
        eval.full.insert(
            10,
            HitNdcg {
                hr: 0.5,
                ndcg: 0.25,
            },
        );
        eval.sampled = BTreeMap::from([(10, HitNdcg { hr: 0.9, ndcg: 0.6 })]);
        m.record_eval(2, &eval);
        m.optimizer_state_bytes.set(4096.0);
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        let types = [
            ("uqa_train_loss", "gauge"),
            ("uqa_train_learning_rate", "gauge"),
            ("uqa_train_grad_norm", "gauge"),
            ("uqa_train_step_duration_seconds", "histogram"),
            ("uqa_train_samples_per_second", "gauge"),
            ("uqa_train_positions_per_second", "gauge"),
            ("uqa_train_samples_total", "counter"),
            ("uqa_train_positions_total", "counter"),
            ("uqa_allreduce_seconds_total", "counter"),
            ("uqa_allreduce_bytes_total", "counter"),
            ("uqa_train_step", "gauge"),
            ("uqa_train_epoch", "gauge"),
            ("uqa_train_world_size", "gauge"),
            ("uqa_restarts", "gauge"),
            ("uqa_process_resident_memory_bytes", "gauge"),
            ("uqa_optimizer_state_bytes", "gauge"),
            ("uqa_eval_hit_ratio", "gauge"),
            ("uqa_eval_ndcg", "gauge"),
        ];
        for (name, kind) in types {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}: {text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        }
        let value = |series: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("no {series} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(value("uqa_train_loss{rank=\"1\"}"), 2.5);
        assert_eq!(value("uqa_train_step{rank=\"1\"}"), 8.0);
        assert_eq!(value("uqa_train_epoch{rank=\"1\"}"), 2.0);
        assert_eq!(value("uqa_train_samples_total{rank=\"1\"}"), 32.0);
        assert_eq!(value("uqa_train_positions_per_second{rank=\"1\"}"), 800.0);
        assert_eq!(value("uqa_allreduce_bytes_total{rank=\"1\"}"), 2000.0);
        assert_eq!(value("uqa_allreduce_seconds_total{rank=\"1\"}"), 0.25);
        assert_eq!(value("uqa_restarts{rank=\"1\"}"), 3.0);
        assert_eq!(value("uqa_train_world_size{rank=\"1\"}"), 2.0);
        assert_eq!(value("uqa_optimizer_state_bytes{rank=\"1\"}"), 4096.0);
        assert_eq!(
            value("uqa_train_step_duration_seconds_bucket{rank=\"1\",le=\"0.64\"}"),
            2.0
        );
        assert_eq!(
            value("uqa_train_step_duration_seconds_count{rank=\"1\"}"),
            2.0
        );
        assert_eq!(
            value("uqa_eval_ndcg{k=\"10\",protocol=\"sampled\",rank=\"1\"}"),
            0.6
        );
        if cfg!(target_os = "linux") {
            assert!(value("uqa_process_resident_memory_bytes{rank=\"1\"}") > 1e6);
        }
        // Every sample line carries the rank label.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("rank=\"1\""), "{line}");
        }
    }

    #[test]
    fn endpoint_serves_metrics_and_404s_elsewhere() {
        let t = Telemetry::start(&cfg(Some(0)), &env(0, 0)).unwrap();
        let addr = t.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        t.record_step(&step(3));
        let ok = get(addr, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("uqa_train_step{rank=\"0\"} 3\n"), "{ok}");
        let with_query = get(addr, "/metrics?x=1");
        assert!(with_query.starts_with("HTTP/1.1 200"), "{with_query}");
        let head = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && !head.contains("uqa_train"),
            "{head}"
        );
        for path in ["/", "/metrics/x", "/favicon.ico"] {
            let nf = get(addr, path);
            assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {nf}");
        }
        let post = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let bad = http(addr, "garbage\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }

    #[test]
    fn slow_and_silent_clients_do_not_block_scrapes() {
        let t = Telemetry::start(&cfg(Some(0)), &env(0, 0)).unwrap();
        let addr = t.local_addr().unwrap();
        // Clients that connect and send nothing, or half a request.
        let idle: Vec<TcpStream> = (0..3)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                if i == 0 {
                    s.write_all(b"GET /metr").unwrap();
                }
                s
            })
            .collect();
        let start = Instant::now();
        let ok = get(addr, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(start.elapsed() < Duration::from_secs(2));
        // The idle ones got nothing, or a 400 for the half request.
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
        }
    }

    #[test]
    fn port_in_use_names_the_address_and_rank_unless_the_port_is_the_default() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        // Local rank 1 of base port - 1 lands on the taken port.
        let err = Telemetry::start(&cfg(Some(port - 1)), &env(5, 1))
            .err()
            .expect("a busy port must be an error")
            .to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{port}"))
                && err.contains("rank 5")
                && err.contains("local rank 1")
                && err.contains("metrics.base_port"),
            "{err}"
        );
        // Past the last port.
        let err = Telemetry::start(&cfg(Some(65535)), &env(0, 1))
            .err()
            .expect("port overflow")
            .to_string();
        assert!(err.contains("65535"), "{err}");
        // The same port as the default: a warning, and training goes on without an endpoint.
        let quiet = Telemetry::start_on(&cfg(None), &env(5, 1), port - 1).unwrap();
        assert!(quiet.local_addr().is_none());
        // Disabled: nothing is bound.
        let off = MetricsConfig {
            enabled: false,
            ..cfg(Some(port))
        };
        assert!(
            Telemetry::start(&off, &env(0, 0))
                .unwrap()
                .local_addr()
                .is_none()
        );
    }

    #[test]
    fn dropping_the_sink_closes_the_port() {
        let t = Telemetry::start(&cfg(Some(0)), &env(0, 0)).unwrap();
        let addr = t.local_addr().unwrap();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200"));
        drop(t);
        // tiny_http's accept thread lets go of the socket a moment after the drop.
        let deadline = Instant::now() + Duration::from_secs(3);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{addr} still accepts after the drop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn config_defaults_and_strictness() {
        #[derive(Deserialize)]
        struct Wrap {
            #[serde(default)]
            metrics: MetricsConfig,
        }
        let w: Wrap = toml::from_str("").unwrap();
        assert_eq!(w.metrics, MetricsConfig::default());
        let w: Wrap =
            toml::from_str("[metrics]\naddress = \"0.0.0.0\"\nbase_port = 9600\n").unwrap();
        assert_eq!(w.metrics.base_port, Some(9600));
        assert!(w.metrics.address.is_unspecified());
        assert!(toml::from_str::<Wrap>("[metrics]\nport = 1\n").is_err());
        assert!(toml::from_str::<Wrap>("[metrics]\naddress = \"localhost:1\"\n").is_err());
    }
}
