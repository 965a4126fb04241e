//! The `uqa` command line as a library: `src/main.rs` parses and runs it, and the binary-level
//! tests walk its clap definition (`uqa::cli::Cli::command()`) to reach every flag of every
//! subcommand (tests/cli_bad_numbers.rs).

pub mod cli;
