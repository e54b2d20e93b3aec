//! The `corral` binary: parses the command line and hands over to [`api::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    api::cli::run(api::cli::Cli::parse())
}
