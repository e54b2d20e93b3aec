//! `corral vmm`: run one VM in the foreground.

use std::process::ExitCode;

/// Arguments of `corral vmm`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the VM; the exit code tells how it ended.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("corral vmm: not implemented yet");
    ExitCode::from(1)
}
