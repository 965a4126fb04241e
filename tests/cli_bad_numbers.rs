//! Issue 15, "Bad input to every subcommand": every numeric flag of every subcommand, given
//! zero, negative, huge and malformed values, ends either in an error that names the flag or in
//! a normal run; never in a panic, a signal (the OOM killer's SIGKILL included) or a hang.
//!
//! The flags come from clap's own definition (`uqa::cli::Cli::command()`, subcommands at every
//! depth), so a new numeric flag fails `every_numeric_flag_has_an_allowed_range` until its
//! allowed values are written in `ACCEPTS`, and is then run with every value of `VALUES`.
//!
//! Each subcommand runs with minimal other arguments (`harness`) chosen so that an accepted value
//! finishes in about a second: the tiny dataset for the data, question and sampler commands, a
//! toy model for `bench generate` and `bench step`, `true` as the command `uqa launch` starts.
//! Two commands would start long jobs for any accepted value: `quickstart` (the whole pipeline)
//! and `eval` (which needs a trained, aligned run). They run against an output or run folder that
//! cannot exist, so for them the test checks that bad values are refused before any work starts
//! and that accepted ones get as far as that folder. Flags whose accepted values run for longer
//! the larger they are (`--steps`, `--batches`, `--new-tokens`, ...) have an upper bound, and
//! the huge values here only check that the bound refuses them.

mod common;

use std::any::TypeId;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use common::{ok, tiny_data, uqa};

/// Values every numeric flag is run with: zero, negative, fractional, huge (beyond i64, the
/// largest u64, one past it, beyond u64 as a float) and malformed.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "99999999999",
    "18446744073709551615",
    "18446744073709551616",
    "1e30",
    "abc",
    "",
    "nan",
    "inf",
];

/// A run longer than this is a hang: accepted values are chosen to finish in about a second.
const DEADLINE: Duration = Duration::from_secs(60);

/// Training rows of the tiny dataset: the sampler's --batch and --world-size are bounded by them
/// (checked in the test, so a change of the preset shows here first).
const TINY_TRAIN_ROWS: i128 = 300;

const U32: i128 = u32::MAX as i128;
const U64: i128 = u64::MAX as i128;

/// The values a flag accepts, given its subcommand's `harness` arguments.
#[derive(Clone, Copy, Debug)]
enum Accepts {
    /// Integers in lo..=hi.
    Int(i128, i128),
    /// Finite numbers in [lo, hi], or [lo, hi) when `hi_open`.
    Float { lo: f64, hi: f64, hi_open: bool },
}

use Accepts::Int;

const NON_NEGATIVE: Accepts = Accepts::Float {
    lo: 0.0,
    hi: f64::MAX,
    hi_open: false,
};

/// Every numeric flag: (subcommand path, flag, accepted values). The bounds mirror the flags'
/// definitions (src/cli/*.rs, launcher/src/args.rs); a value outside must be refused, naming
/// the flag.
const ACCEPTS: &[(&str, &str, Accepts)] = &[
    ("quickstart", "--seed", Int(0, U64)),
    ("quickstart", "--nproc", Int(1, 4096)),
    ("study run", "--nproc", Int(1, 4096)),
    ("study stage", "--nproc", Int(1, 4096)),
    ("quickstart", "--train-per-task", Int(1, U64)),
    ("quickstart", "--train-windows", Int(1, U64)),
    ("quickstart", "--eval-per-task", Int(1, U64)),
    ("quickstart", "--max-new-tokens", Int(1, 32_768)),
    ("data synth", "--seed", Int(0, U64)),
    ("data import movielens", "--max-len", Int(1, U64)),
    ("qa-gen", "--seed", Int(0, U64)),
    ("qa-gen", "--train-per-task", Int(1, U64)),
    ("qa-gen", "--eval-per-task", Int(1, U64)),
    ("qa-gen", "--ctr-users", Int(0, U64)),
    ("qa-gen", "--train-windows", Int(1, U64)),
    ("qa-gen", "--valid-per-task", Int(0, U64)),
    ("eval", "--batch-size", Int(1, U64)),
    ("eval", "--max-new-tokens", Int(1, 32_768)),
    ("eval", "--limit", Int(0, U64)),
    ("eval", "--collective-timeout-s", Int(1, 7 * 24 * 3600)),
    ("launch", "--nproc-per-node", Int(1, 4096)),
    ("launch", "--nnodes", Int(1, 65_536)),
    // Below --nnodes, 1 in the harness.
    ("launch", "--node-rank", Int(0, 0)),
    ("launch", "--master-port", Int(0, 65_535)),
    ("launch", "--max-restarts", Int(0, U32)),
    (
        "launch",
        "--grace-period",
        Accepts::Float {
            lo: 0.0,
            hi: 86_400.0,
            hi_open: false,
        },
    ),
    // At most a rank's share of the tiny dataset (--world-size 1 in the harness).
    ("bench sampler", "--batch", Int(1, TINY_TRAIN_ROWS)),
    ("bench sampler", "--max-len", Int(1, U64)),
    ("bench sampler", "--batches", Int(1, 1_000_000)),
    // Below --world-size, 1 in the harness.
    ("bench sampler", "--rank", Int(0, 0)),
    // At most the tiny dataset's rows (--batch 1 in the harness).
    ("bench sampler", "--world-size", Int(1, TINY_TRAIN_ROWS)),
    ("bench generate", "--hidden", Int(1, 65_536)),
    ("bench generate", "--layers", Int(1, 1024)),
    ("bench generate", "--heads", Int(1, 1024)),
    ("bench generate", "--kv-heads", Int(1, 1024)),
    ("bench generate", "--intermediate", Int(1, 1 << 20)),
    ("bench generate", "--vocab", Int(1, 1 << 24)),
    ("bench generate", "--prompt-len", Int(1, 32_767)),
    ("bench generate", "--new-tokens", Int(1, 32_767)),
    ("bench generate", "--batch", Int(1, 4096)),
    ("bench generate", "--qas", Int(1, 10_000)),
    ("bench generate", "--batches", Int(1, 10_000)),
    ("bench generate", "--seed", Int(0, U64)),
    ("bench step", "--layers", Int(1, 1024)),
    ("bench step", "--dim", Int(1, 65_536)),
    ("bench step", "--heads", Int(1, 1024)),
    ("bench step", "--seq", Int(2, 65_536)),
    ("bench step", "--batch", Int(1, 65_536)),
    ("bench step", "--items", Int(2, U32)),
    ("bench step", "--cates", Int(2, U32)),
    ("bench step", "--brands", Int(2, U32)),
    ("bench step", "--shops", Int(2, U32)),
    ("bench step", "--bag-len", Int(1, 1024)),
    ("bench step", "--ce-chunk", Int(1, U64)),
    (
        "bench step",
        "--dropout",
        Accepts::Float {
            lo: 0.0,
            hi: 1.0,
            hi_open: true,
        },
    ),
    ("bench step", "--lr", NON_NEGATIVE),
    ("bench step", "--clip", NON_NEGATIVE),
    ("bench step", "--steps", Int(1, 10_000)),
    ("bench step", "--warmup", Int(0, 10_000)),
    ("bench step", "--seed", Int(0, U64)),
];

impl Accepts {
    fn accepts(self, value: &str) -> bool {
        match self {
            Int(lo, hi) => value.parse::<i128>().is_ok_and(|v| (lo..=hi).contains(&v)),
            Accepts::Float { lo, hi, hi_open } => value
                .parse::<f64>()
                .is_ok_and(|v| v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi }),
        }
    }

    fn is_int(self) -> bool {
        matches!(self, Int(..))
    }
}

/// Whether clap parses the flag as a number, and as which: integer (true) or float (false).
fn numeric_kind(arg: &clap::Arg) -> Option<bool> {
    let t = arg.get_value_parser().type_id();
    let ints = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ];
    if ints.iter().any(|i| t == *i) {
        return Some(true);
    }
    if t == TypeId::of::<f32>() || t == TypeId::of::<f64>() {
        return Some(false);
    }
    // Numbers taken as text, parsed later (the launcher's `--nproc-per-node 4|cpu|auto`,
    // `--nnodes N|N:N`): a flag whose default is a number.
    let default = arg.get_default_values().first()?.to_str()?;
    if default.parse::<i128>().is_ok() {
        Some(true)
    } else if default.parse::<f64>().is_ok() {
        Some(false)
    } else {
        None
    }
}

/// Every flag that takes a number, from clap's definition: (subcommand path, --flag, integer).
fn numeric_flags() -> Vec<(String, String, bool)> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, bool)>) {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if !arg.get_action().takes_values() {
                continue;
            }
            if let Some(int) = numeric_kind(arg) {
                out.push((path.to_string(), format!("--{long}"), int));
            }
        }
        for sub in cmd.get_subcommands() {
            let path = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&uqa::cli::Cli::command(), "", &mut out);
    out
}

/// The files a subcommand's harness needs.
struct Fixtures {
    dir: PathBuf,
    tiny: PathBuf,
    movielens: PathBuf,
}

/// How a subcommand runs in this test: arguments before the flags (positionals), flags (the
/// one under test replaces its own), arguments after the flags; and whether an accepted value
/// must make it succeed.
struct Harness {
    positional: Vec<String>,
    flags: Vec<(&'static str, String)>,
    trailing: Vec<String>,
    succeeds: bool,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The harness of subcommand `cmd` for case `case` (which names its output folders). `None`
/// for a subcommand without one: a test failure, once it has a numeric flag.
fn harness(cmd: &str, fx: &Fixtures, case: usize) -> Option<Harness> {
    let out = |name: &str| path(&fx.dir.join(format!("{name}-{case}")));
    let h = |positional: Vec<String>, flags: Vec<(&'static str, String)>, succeeds| Harness {
        positional,
        flags,
        trailing: Vec::new(),
        succeeds,
    };
    let s = |v: &str| v.to_string();
    Some(match cmd {
        // Below a regular file, so the pipeline stops at its first folder (see the module doc).
        "quickstart" => h(
            vec![],
            vec![("--out", path(&fx.dir.join("a-file/quickstart")))],
            false,
        ),
        "data synth" => h(
            vec![],
            vec![
                ("--preset", s("tiny")),
                ("--tokenizer", s("builtin")),
                ("--out", out("synth")),
            ],
            true,
        ),
        "data import movielens" => h(
            vec![path(&fx.movielens)],
            vec![("--tokenizer", s("builtin")), ("--out", out("movielens"))],
            true,
        ),
        "qa-gen" => h(
            vec![],
            vec![("--data", path(&fx.tiny)), ("--out", out("qa"))],
            true,
        ),
        // A dry run of the committed study: checked and planned, nothing run.
        "study run" => Harness {
            positional: vec![path(
                &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("studies/table2.toml"),
            )],
            flags: vec![("--out", out("study"))],
            trailing: vec![s("--local"), s("--dry-run")],
            succeeds: true,
        },
        // No study folder: the number is checked before the folder is read.
        "study stage" => h(vec![out("no-study"), s("data")], vec![], false),
        // No aligned run (see the module doc).
        "eval" => h(vec![], vec![("--run", out("no-run"))], false),
        "launch" => Harness {
            positional: vec![],
            flags: vec![("--master-port", s("0"))],
            trailing: vec![s("--"), s("true")],
            succeeds: true,
        },
        "bench sampler" => h(
            vec![path(&fx.tiny)],
            vec![
                ("--batch", s("1")),
                ("--batches", s("2")),
                ("--max-len", s("16")),
                ("--rank", s("0")),
                ("--world-size", s("1")),
            ],
            true,
        ),
        "bench generate" => h(
            vec![],
            [
                ("--hidden", "8"),
                ("--layers", "1"),
                ("--heads", "2"),
                ("--kv-heads", "1"),
                ("--intermediate", "16"),
                ("--vocab", "32"),
                ("--prompt-len", "4"),
                ("--new-tokens", "2"),
                ("--batch", "2"),
                ("--qas", "1"),
                ("--batches", "1"),
            ]
            .map(|(f, v)| (f, s(v)))
            .to_vec(),
            true,
        ),
        "bench step" => h(
            vec![],
            [
                ("--side", "no-side"),
                ("--layers", "1"),
                ("--dim", "8"),
                ("--heads", "2"),
                ("--seq", "4"),
                ("--batch", "2"),
                ("--items", "16"),
                ("--cates", "4"),
                ("--brands", "4"),
                ("--shops", "4"),
                ("--bag-len", "2"),
                ("--ce-chunk", "8"),
                ("--steps", "1"),
                ("--warmup", "0"),
            ]
            .map(|(f, v)| (f, s(v)))
            .to_vec(),
            true,
        ),
        _ => return None,
    })
}

/// MovieLens in RecBole's atomic layout, 8 users who all rated the same 8 movies: enough for the
/// 5-core filter and leave-one-out.
fn tiny_movielens(dir: &Path) -> PathBuf {
    let ml = dir.join("ml-tiny");
    std::fs::create_dir_all(&ml).unwrap();
    let mut item =
        String::from("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n");
    for i in 1..=8 {
        item += &format!("{i}\tMovie {i}\t199{i}\tDrama Comedy\n");
    }
    let mut inter = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for u in 1..=8 {
        for i in 1..=8 {
            inter += &format!("{u}\t{i}\t4\t{}\n", 880_000_000 + u * 100 + i);
        }
    }
    std::fs::write(ml.join("ml-tiny.item"), item).unwrap();
    std::fs::write(ml.join("ml-tiny.inter"), inter).unwrap();
    ml
}

/// Whether `text` names `flag` (not merely a longer flag it prefixes: --batch in --batches).
fn names(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        !text[i + flag.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Runs `uqa ARGS` with stdout and stderr in files (a pipe nobody reads would block a chatty
/// child), killing it at the deadline. `None`: it hung.
fn run_bounded(args: &[String], log: &Path) -> Option<(ExitStatus, String)> {
    let (out, err) = (log.with_extension("out"), log.with_extension("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(&err).unwrap_or_default()
        + &std::fs::read_to_string(&out).unwrap_or_default();
    Some((status, text))
}

/// What is wrong with one run, if anything.
fn verdict(
    status: Option<(ExitStatus, String)>,
    accepted: bool,
    succeeds: bool,
    flag: &str,
    value: &str,
) -> Option<String> {
    let Some((status, text)) = status else {
        return Some(format!("hung (killed after {DEADLINE:?})"));
    };
    let tail = || text.chars().rev().take(1500).collect::<Vec<_>>();
    let tail = || tail().into_iter().rev().collect::<String>();
    if text.contains("panicked at") || status.code() == Some(101) {
        return Some(format!("panicked ({status}):\n{}", tail()));
    }
    if status.code().is_none() {
        return Some(format!("killed by a signal ({status}):\n{}", tail()));
    }
    if !accepted {
        if status.success() {
            return Some("succeeded, but the value is out of range".into());
        }
        if !names(&text, flag) {
            return Some(format!("failed without naming {flag}:\n{}", tail()));
        }
    } else if text.contains(&format!("invalid value '{value}' for '{flag}"))
        || (succeeds && !status.success())
    {
        return Some(format!("refused a value in range ({status}):\n{}", tail()));
    }
    None
}

#[test]
fn every_numeric_flag_has_an_allowed_range() {
    let defined = numeric_flags();
    let mut missing = Vec::new();
    for (cmd, flag, int) in &defined {
        match ACCEPTS.iter().find(|(c, f, _)| c == cmd && f == flag) {
            None => missing.push(format!("uqa {cmd} {flag} (no entry in ACCEPTS)")),
            Some((_, _, a)) if a.is_int() != *int => missing.push(format!(
                "uqa {cmd} {flag}: ACCEPTS says {}, clap parses {}",
                if a.is_int() { "integer" } else { "float" },
                if *int { "an integer" } else { "a float" }
            )),
            Some(_) => {}
        }
    }
    for (cmd, flag, _) in ACCEPTS {
        if !defined.iter().any(|(c, f, _)| c == cmd && f == flag) {
            missing.push(format!(
                "uqa {cmd} {flag}: in ACCEPTS but not a numeric flag"
            ));
        }
    }
    let fx = Fixtures {
        dir: PathBuf::new(),
        tiny: PathBuf::new(),
        movielens: PathBuf::new(),
    };
    for (cmd, _, _) in &defined {
        if harness(cmd, &fx, 0).is_none() {
            missing.push(format!("uqa {cmd}: no harness"));
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn bad_numbers_are_clear_errors_never_panics_or_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixtures {
        dir: dir.path().to_path_buf(),
        tiny: tiny_data(dir.path()),
        movielens: tiny_movielens(dir.path()),
    };
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let stats = ok(
        uqa(&["data", "stats", "--json", fx.tiny.to_str().unwrap()]),
        "uqa data stats",
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        stats["train"]["rows"], TINY_TRAIN_ROWS as u64,
        "the tiny preset changed: update TINY_TRAIN_ROWS"
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    let mut cases = Vec::new();
    for (cmd, flag, accepts) in ACCEPTS {
        for value in VALUES {
            cases.push((*cmd, *flag, *accepts, *value));
        }
    }
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(&(cmd, flag, accepts, value)) = cases.get(i) else {
                        return;
                    };
                    let h = harness(cmd, &fx, i).expect("every command has a harness");
                    let mut args: Vec<String> = cmd.split(' ').map(String::from).collect();
                    args.extend(h.positional);
                    for (f, v) in h.flags.into_iter().filter(|(f, _)| *f != flag) {
                        args.push(format!("{f}={v}"));
                    }
                    // `--flag=value`: clap would take `-1` alone for a flag of its own.
                    args.push(format!("{flag}={value}"));
                    args.extend(h.trailing);
                    let status = run_bounded(&args, &logs.join(format!("case-{i}")));
                    if let Some(why) =
                        verdict(status, accepts.accepts(value), h.succeeds, flag, value)
                    {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("uqa {}: {why}", args.join(" ")));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} runs went wrong:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{} runs in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
}
