//! The `uqa-launch` binary: parse, run, exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    uqa_launcher::run(uqa_launcher::Args::parse())
}
