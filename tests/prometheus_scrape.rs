//! A real Prometheus server scrapes a live 2-rank pre-training run (issue 4 item 6): its query
//! API returns the loss series of both ranks, and `promtool check metrics` accepts a `/metrics`
//! body taken from a rank mid-run.
//!
//! Needs the Debian package `prometheus` (`prometheus` and `promtool`); without them the test is
//! a recorded skip (a failure under `UQA_REQUIRE=prometheus`, see uqa-testkit). Everything listens on 127.0.0.1;
//! every wait is bounded; every spawned process is stopped by a guard, also when an assertion
//! fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A spawned process, stopped on drop: SIGTERM (the launcher forwards it to its ranks), then
/// SIGKILL after a grace period.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child }
    }

    /// The exit status, once the process has ended within `limit`.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status();
        if self.wait_for(Duration::from_secs(10)).is_none() {
            eprintln!("{}: no exit after SIGTERM, killing", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `name` on PATH (or in /usr/bin, where Debian puts it).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free port `p` on 127.0.0.1 with `p + 1` free too (one per rank).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// HTTP/1.0 GET (no chunked answers): status and body, or None when nothing answers.
fn http_get(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Percent-encode a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: (rank label or "", value) of each series returned.
fn query(prom: SocketAddr, promql: &str) -> Vec<(String, f64)> {
    let Some((200, body)) = http_get(prom, &format!("/api/v1/query?query={}", encode(promql)))
    else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| {
                    let rank = s["metric"]["rank"].as_str().unwrap_or("").to_string();
                    let value = s["value"][1].as_str()?.parse().ok()?;
                    Some((rank, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa")
}

fn tiny_data(dir: &Path) -> PathBuf {
    let ds = dir.join("tiny");
    let o = uqa(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--out",
        ds.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ds
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn prometheus_scrapes_loss_from_a_live_two_rank_run() {
    let (Some(prometheus), Some(promtool)) = (find_binary("prometheus"), find_binary("promtool"))
    else {
        return uqa_testkit::skip(
            uqa_testkit::Category::Prometheus,
            "prometheus_scrapes_loss_from_a_live_two_rank_run",
            "prometheus or promtool not installed (Debian: apt-get install prometheus)",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let base = free_port_pair();
    let ranks: Vec<SocketAddr> = (0..2)
        .map(|r| SocketAddr::from(([127, 0, 0, 1], base + r)))
        .collect();

    // The Prometheus server: 1 s scrapes of both ranks.
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: uqa\n    static_configs:\n      - targets: ['{}', '{}']\n",
            ranks[0], ranks[1]
        ),
    )
    .unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let log_file = std::fs::File::create(&prom_log).unwrap();
    let mut server = Guard::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={prom}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file),
    );
    let until = Instant::now() + Duration::from_secs(60);
    while http_get(prom, "/-/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < until,
            "prometheus not ready after 60 s:\n{}",
            read(&prom_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Scraping has begun (the scrape manager applies targets a few seconds after start): only
    // then start the run, so that even a short run is scraped many times.
    while query(prom, "count(up)") != [(String::new(), 2.0)] {
        assert!(
            Instant::now() < until,
            "prometheus scrapes nothing after 60 s:\n{}",
            read(&prom_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A 2-rank run long enough for a dozen scrapes (tiny epochs are ~10 steps of 0.1-0.4 s).
    let exe = env!("CARGO_BIN_EXE_uqa");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tests/tiny_sasrec.toml");
    let (out_log, err_log) = (dir.path().join("run.out"), dir.path().join("run.err"));
    let mut run = Guard::spawn(
        "uqa launch",
        Command::new(exe)
            .args(["launch", "--standalone", "--nproc-per-node", "2", "--", exe])
            .args(["pretrain", "--config", cfg.to_str().unwrap()])
            .args(["--set", &format!("data.dir=\"{}\"", data.display())])
            .args([
                "--set",
                &format!("train.out=\"{}\"", dir.path().join("out").display()),
            ])
            .args(["--set", &format!("metrics.base_port={base}")])
            .args(["--set", "train.epochs=1000", "--set", "train.max_steps=60"])
            .args(["--set", "eval.every_epochs=0", "--set", "eval.max_users=50"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_log).unwrap())
            .stderr(std::fs::File::create(&err_log).unwrap()),
    );
    let run_logs = || format!("{}\n{}", read(&out_log), read(&err_log));

    // promtool on a body scraped from rank 0 once it has trained a step.
    let until = Instant::now() + Duration::from_secs(120);
    let body = loop {
        if let Some((200, body)) = http_get(ranks[0], "/metrics")
            && body.contains("uqa_train_step{rank=\"0\"}")
            && !body.contains("uqa_train_step{rank=\"0\"} 0\n")
        {
            break body;
        }
        assert!(
            run.running() && Instant::now() < until,
            "no trained step on {}:\n{}",
            ranks[0],
            run_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        http_get(ranks[1], "/metrics").is_some_and(|(s, b)| s == 200 && b.contains("rank=\"1\"")),
        "rank 1 serves no metrics on {}",
        ranks[1]
    );
    assert_eq!(http_get(ranks[0], "/").map(|r| r.0), Some(404));
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}\non:\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Prometheus' query API returns the loss of both ranks (the global loss: equal values).
    let until = Instant::now() + Duration::from_secs(60);
    let loss = loop {
        let mut loss = query(prom, "last_over_time(uqa_train_loss[5m]) > 0");
        loss.sort_by(|a, b| a.0.cmp(&b.0));
        if loss.len() == 2 {
            break loss;
        }
        assert!(
            Instant::now() < until,
            "prometheus has no loss of both ranks after 60 s (got {loss:?}; server running: {}); \
             targets: {:?}\nprometheus log:\n{}\nrun:\n{}",
            server.running(),
            http_get(prom, "/api/v1/targets"),
            read(&prom_log),
            run_logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(loss[0].0, "0");
    assert_eq!(loss[1].0, "1");
    assert!(loss.iter().all(|(_, v)| v.is_finite()), "{loss:?}");
    let steps = query(
        prom,
        "max_over_time(uqa_train_step_duration_seconds_count[5m])",
    );
    assert_eq!(steps.len(), 2, "{steps:?}");

    // The run ends by itself, and its endpoints with it.
    let status = run.wait_for(Duration::from_secs(300));
    assert!(
        status.is_some_and(|s| s.success()),
        "run failed or timed out ({status:?}):\n{}",
        run_logs()
    );
    for addr in &ranks {
        assert!(
            TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_err(),
            "{addr} still open after the run"
        );
    }
}
