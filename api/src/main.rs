//! The `corral` binary: parses the command line and hands over to [`api::cli`].

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = api::cli::Cli::command().get_matches();
    let cli = match api::cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    api::cli::run(cli, &matches)
}
