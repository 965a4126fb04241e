//! The real `uqa-launch` binary running small shell commands (and this test binary re-executed as
//! a distributed worker): environment, output prefixes, gang teardown, exit codes, restarts,
//! signal forwarding, bad flags, and the time to form an 8-rank communicator.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LAUNCH: &str = env!("CARGO_BIN_EXE_uqa-launch");
const WORKER: &str = "UQA_LAUNCH_TEST_WORKER";

fn launch(args: &[&str]) -> Output {
    Command::new(LAUNCH).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines of rank `r`, prefix removed.
fn lines_of(text: &str, r: usize) -> Vec<String> {
    let prefix = format!("[rank{r}]:");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

const SHOW_ENV: &str = "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $GROUP_RANK $MASTER_ADDR $MASTER_PORT \
$TORCHELASTIC_RESTART_COUNT $UQA_RESTART_COUNT $UQA_STORE_HOSTED $OMP_NUM_THREADS $UQA_JOB_TOKEN\"";

#[test]
fn sets_torchrun_environment_for_2_and_4_ranks() {
    for n in [2usize, 4] {
        let out = launch(&[
            "--standalone",
            "--nproc-per-node",
            &n.to_string(),
            "--",
            "sh",
            "-c",
            SHOW_ENV,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let mut ports_tokens = Vec::new();
        for r in 0..n {
            let lines = lines_of(&text, r);
            assert_eq!(lines.len(), 1, "{text}");
            let f: Vec<&str> = lines[0].split(' ').collect();
            assert_eq!(
                &f[..6],
                [
                    r.to_string(),
                    r.to_string(),
                    n.to_string(),
                    n.to_string(),
                    "0".into(),
                    "127.0.0.1".into()
                ]
            );
            assert!(f[6].parse::<u16>().unwrap() > 0);
            assert_eq!(&f[7..11], ["0", "0", "1", "1"]);
            assert!(f[11].len() >= 16, "token {:?}", f[11]);
            ports_tokens.push((f[6].to_string(), f[11].to_string()));
        }
        assert!(
            ports_tokens.windows(2).all(|w| w[0] == w[1]),
            "one port and token per job"
        );
    }
}

#[test]
fn explicit_rendezvous_with_underscore_spellings() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = launch(&[
        "--nproc_per_node=2",
        "--nnodes=1",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        &format!("--master_port={port}"),
        "sh",
        "-c",
        SHOW_ENV,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for r in 0..2 {
        let l = &lines_of(&stdout(&out), r)[0];
        assert!(
            l.starts_with(&format!("{r} {r} 2 2 0 127.0.0.1 {port} ")),
            "{l}"
        );
    }
}

#[test]
fn prefixes_every_line_of_stdout_and_stderr() {
    let out = launch(&[
        "--nproc-per-node",
        "2",
        "--master-port",
        "0",
        "--",
        "sh",
        "-c",
        "printf 'a\\nb\\n'; echo e1 >&2; printf 'no newline'",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for r in 0..2 {
        assert_eq!(lines_of(&stdout(&out), r), ["a", "b", "no newline"]);
        assert_eq!(lines_of(&stderr(&out), r), ["e1"]);
    }
    assert!(
        stdout(&out).lines().all(|l| l.starts_with("[rank")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn failing_rank_stops_the_gang_and_sets_the_exit_code() {
    let start = Instant::now();
    let out = launch(&[
        "--standalone",
        "--nproc-per-node",
        "4",
        "--",
        "sh",
        "-c",
        "if [ $RANK = 2 ]; then sleep 0.2; exit 3; fi; exec sleep 60",
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(3),
        "long sleeps must be killed quickly, took {took:?}"
    );
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("uqa-launch: failed: rank 2 (local rank 2, pid "),
        "{err}"
    );
    assert!(last.ends_with("exited with code 3"), "{err}");
}

#[test]
fn ranks_ignoring_sigterm_are_killed_after_the_grace_period() {
    let start = Instant::now();
    let out = launch(&[
        "--standalone",
        "--nproc-per-node",
        "2",
        "--grace-period",
        "0.5",
        "--",
        "sh",
        "-c",
        "if [ $RANK = 0 ]; then sleep 0.2; exit 9; fi; trap '' TERM; sleep 60; echo survived",
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(!stdout(&out).contains("survived"));
}

#[test]
fn death_by_signal_is_reported_with_shell_exit_code() {
    let out = launch(&["--", "sh", "-c", "kill -SEGV $$"]);
    assert_eq!(out.status.code(), Some(128 + 11));
    assert!(
        stderr(&out).contains("rank 0 (local rank 0, pid "),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("was killed by SIGSEGV"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restarts_are_counted_and_exhausted() {
    // Rank 0 fails twice, then the gang succeeds. Rank 1 may be stopped before it prints in the
    // failed attempts (the gang is torn down as soon as rank 0 exits), but not in the last one.
    let out = launch(&[
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "3",
        "--",
        "sh",
        "-c",
        "echo attempt $UQA_RESTART_COUNT $TORCHELASTIC_RESTART_COUNT; \
         if [ $RANK = 0 ] && [ $UQA_RESTART_COUNT -lt 2 ]; then exit 5; fi",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lines_of(&stdout(&out), 0),
        ["attempt 0 0", "attempt 1 1", "attempt 2 2"]
    );
    assert_eq!(
        lines_of(&stdout(&out), 1).last().map(String::as_str),
        Some("attempt 2 2")
    );
    assert_eq!(
        stderr(&out).matches("stopped the gang, restarting").count(),
        2,
        "{}",
        stderr(&out)
    );
    // Always fails: the final code is the failure's, after the allowed restarts.
    let out = launch(&["--max-restarts", "1", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(err.contains("restarting (1 of 1 restarts)"), "{err}");
    assert!(
        err.trim_end()
            .ends_with("exited with code 4 (after 1 restart)"),
        "{err}"
    );
}

#[test]
fn sigterm_is_forwarded_to_every_rank() {
    let mut child = Command::new(LAUNCH)
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while seen.matches("ready").count() < 2 {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "launcher ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let start = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(128 + 15));
    for r in 0..2 {
        assert!(rest.contains(&format!("[rank{r}]:got TERM")), "{rest}");
    }
}

#[test]
fn bad_flags_busy_port_and_missing_program_are_errors() {
    let out = launch(&["--nproc-per-node", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--nproc-per-node \"0\": expected a number in 1..=4096"),
        "{}",
        stderr(&out)
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = launch(&["--master-port", &port, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot listen on 127.0.0.1:{port} for rank 0: address already in use"
        )),
        "{}",
        stderr(&out)
    );

    let out = launch(&[
        "--standalone",
        "--nproc-per-node",
        "2",
        "--",
        "/nonexistent/prog",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot start rank 0 (\"/nonexistent/prog\")"),
        "{}",
        stderr(&out)
    );
}

/// Worker side of the 8-rank test: runs only when re-executed under the launcher.
#[test]
fn worker() {
    let Ok(scenario) = std::env::var(WORKER) else {
        return;
    };
    use uqa_comm::{BootstrapOptions, CommunicatorExt, RankEnv, ReduceOp, bootstrap};
    let env = RankEnv::from_env().unwrap();
    let mut c = bootstrap(
        &env,
        &BootstrapOptions {
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .unwrap();
    c.barrier(Duration::from_secs(10)).unwrap();
    if scenario == "crash-first-attempt" && env.restart_count == 0 && c.rank() == 1 {
        std::process::exit(13);
    }
    let mut v = [c.rank() as i64];
    c.all_reduce(&mut v, ReduceOp::Sum, Duration::from_secs(10))
        .unwrap();
    println!(
        "FORMED rank {} sum {} restart {}",
        c.rank(),
        v[0],
        env.restart_count
    );
}

#[test]
fn eight_ranks_form_a_communicator_quickly() {
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let out = Command::new(LAUNCH)
        .args(["--standalone", "--nproc-per-node", "8", "--"])
        .arg(exe)
        .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(WORKER, "1")
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for r in 0..8 {
        assert!(
            stdout(&out).contains(&format!("[rank{r}]:FORMED rank {r} sum 28 restart 0")),
            "{}",
            stdout(&out)
        );
    }
    eprintln!("8 ranks spawned and communicator formed in {took:?}");
    // The target is 2 s (release, idle machine); leave headroom for debug builds on a busy CI box.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn restarted_gang_meets_again_through_the_same_store() {
    // Rank 1 dies after the first rendezvous; the launcher stops rank 0 (blocked in a collective
    // or already failing), restarts both, and they rendezvous again under restart count 1.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(LAUNCH)
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
            "--",
        ])
        .arg(exe)
        .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(WORKER, "crash-first-attempt")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for r in 0..2 {
        assert!(
            stdout(&out).contains(&format!("[rank{r}]:FORMED rank {r} sum 1 restart 1")),
            "{}",
            stdout(&out)
        );
    }
    let err = stderr(&out);
    assert!(err.contains("rank 1 (local rank 1, pid "), "{err}");
    assert!(
        err.contains("exited with code 13; stopped the gang, restarting (1 of 1 restarts)"),
        "{err}"
    );
}

#[test]
fn two_launchers_as_two_nodes_form_one_communicator() {
    // Node 0's launcher hosts the store; node 1's ranks find it through --master-addr/-port and
    // both launchers derive the same job token without being told one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exe = std::env::current_exe().unwrap();
    let node = |rank: &str| {
        Command::new(LAUNCH)
            .args([
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--nproc-per-node",
                "2",
            ])
            .args([
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                &port.to_string(),
                "--",
            ])
            .arg(&exe)
            .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(WORKER, "1")
            .env_remove("UQA_JOB_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (n0, n1) = (node("0"), node("1"));
    let (n0, n1) = (
        n0.wait_with_output().unwrap(),
        n1.wait_with_output().unwrap(),
    );
    for (out, ranks) in [(&n0, [0, 1]), (&n1, [2, 3])] {
        assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
        for r in ranks {
            assert!(
                stdout(out).contains(&format!("[rank{r}]:FORMED rank {r} sum 6 restart 0")),
                "{}",
                stdout(out)
            );
        }
    }
}
