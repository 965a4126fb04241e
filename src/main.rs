//! The `uqa` binary: parse the command line, run the subcommand, print the error chain and
//! exit non-zero on failure. All work lives in the library crates.

use std::process::ExitCode;

use clap::Parser;
use uqa::cli;

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

/// Honour torchrun's thread convention: `OMP_NUM_THREADS` (which launchers set to 1 when several
/// ranks share a node, and sbatch templates to the task's CPUs) also sizes candle's and rayon's
/// pools, which only read `RAYON_NUM_THREADS`. Without it, two ranks on two cores each run a
/// two-thread pool whose spin-waits take half the CPU.
fn threads_from_omp() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    if let Some(n) = std::env::var("OMP_NUM_THREADS")
        .ok()
        .filter(|n| n.parse::<usize>().is_ok_and(|n| n > 0))
    {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    threads_from_omp();
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
