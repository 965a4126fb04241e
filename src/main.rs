//! The `uqa` binary: parse the command line, run the subcommand, print the error chain and
//! exit non-zero on failure. All work lives in the library crates.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Keep freed memory in the process instead of returning it to the kernel. Training allocates
/// and frees the same large tensors every step; glibc by default serves blocks over 32 MB with
/// fresh mmap pages that the kernel must fault in and zero each time, about a third of a small
/// model's step on this machine (docs/BENCHMARKS.md).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called first thing in main,
    // before any thread exists, as glibc requires for changing these settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&*err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
