//! The `corral` command line: one binary, one subcommand per job.
//!
//! Each subcommand lives in its own module exposing `Args` (clap) and `run(Args) -> ExitCode`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod image;
pub mod vmm;

/// corral: a single-node VM supervisor for KVM hosts.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one VM in the foreground (what the daemon spawns per VM).
    Vmm(vmm::Args),
    /// Pull, import, list and remove container disks.
    Image(image::Args),
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Vmm(args) => vmm::run(args),
        Command::Image(args) => image::run(args),
    }
}

/// Prints an error and its whole source chain once, on stderr.
pub fn print_error_chain(err: &(dyn std::error::Error + 'static)) {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    eprintln!("corral: error: {msg}");
}
