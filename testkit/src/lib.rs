//! Test helpers shared by every uqa crate (a dev-dependency only, without dependencies of its
//! own, so no crate's tests can form a cycle through it).
//!
//! A test that cannot run here (an asset not fetched, a program not installed) calls [`skip`]
//! and returns. libtest hides the output of passing tests and counts them as passed, so
//! [`skip`] writes past its capture to stderr and appends one line to the file named by
//! `UQA_SKIP_LOG`, from which `scripts/test.sh` prints the `N skipped:` summary. Where
//! `UQA_REQUIRE` names the skip's category (module [`category`]), the skip is a failure
//! instead: CI sets `UQA_REQUIRE=all`, so a green CI run means those tests really ran.
//!
//! A skip is only for input that is absent. Input that is present but broken (a corrupt
//! tokenizer.json, a truncated GGUF) must fail the test, never skip it.

pub mod category;

pub use category::{Category, RequireError, parse_require, required};

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_VAR: &str = "UQA_SKIP_LOG";

/// Records that `test` (the test function's name) cannot run here because of `reason`, or
/// panics with the reason when `UQA_REQUIRE` names `category`. The caller returns after it:
///
/// ```no_run
/// # fn fetched() -> Option<std::path::PathBuf> { None }
/// let Some(path) = fetched() else {
///     return uqa_testkit::skip(uqa_testkit::Category::Gguf, "my_test", "not fetched");
/// };
/// ```
#[track_caller]
pub fn skip(category: Category, test: &str, reason: impl std::fmt::Display) {
    // One line each, whatever the reason holds, so that the log counts lines.
    let reason = reason.to_string().replace(['\n', '\r'], " ");
    if required(category) {
        panic!("{test} could not run and UQA_REQUIRE requires `{category}`: {reason}");
    }
    let line = format!("{test} [{category}]: {reason}\n");
    // Straight to the process's stderr, unbuffered: libtest captures `eprintln!` but not this.
    let _ = std::io::stderr().write_all(format!("SKIPPED {line}").as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR)
        && let Err(e) = append_line(Path::new(&path), &line)
    {
        // An uncounted skip is what this crate exists to prevent.
        let path = Path::new(&path).display();
        panic!("{test}: cannot record its skip in {path}: {e}");
    }
}

/// Appends `line` with one `write` on a file opened with O_APPEND: the kernel moves to the end
/// and writes under the inode's lock, so lines from parallel test threads and processes never
/// interleave or overwrite each other (lines are short; `write_all` loops only on a short write,
/// which regular files do not produce).
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_appends_give_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..200 {
                        let line = format!("t{t}_{i} [gpu]: {}\n", "x".repeat(100));
                        append_line(log, &line).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 200);
        assert!(
            lines.iter().all(|l| l.len() == l.find(' ').unwrap() + 108),
            "torn line"
        );
    }
}
