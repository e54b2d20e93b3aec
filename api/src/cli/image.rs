//! `corral image`: pull, import, list and remove container disks.

use std::process::ExitCode;

/// Arguments of `corral image`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the image subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("corral image: not implemented yet");
    ExitCode::from(1)
}
