//! The `corral` command line: one binary, one subcommand per job.
//!
//! Each subcommand lives in its own module exposing `Args` (clap) and `run(Args) -> ExitCode`.

use std::process::ExitCode;

use clap::{ArgMatches, Parser, Subcommand};

/// Writes to stdout; a closed pipe (`corral get ... | head`) ends the process quietly, as Unix
/// tools do, instead of panicking like `print!`.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("corral: error: write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` that tolerates a closed pipe.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*)) };
}

/// `println!` that tolerates a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

pub mod apply;
pub mod common;
pub mod console;
pub mod daemon;
pub mod delete;
pub mod describe;
pub mod expose;
pub mod get;
pub mod image;
pub mod kubeconfig;
pub mod logs;
pub mod proxy;
pub mod scale;
pub mod top;
pub mod vmm;

/// corral: a single-node VM supervisor for KVM hosts.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the supervisor: API, controllers and VMs (the systemd service).
    Daemon(daemon::Args),
    /// List objects (vmirs, vmi, hpa, events), like kubectl get.
    Get(get::Args),
    /// Create or update objects from YAML/JSON files, like kubectl apply.
    Apply(apply::Args),
    /// Delete objects and wait until they are gone.
    Delete(delete::Args),
    /// Set the replicas of a replica set.
    Scale(scale::Args),
    /// Put a Service in front of a replica set or VMI (virtctl expose).
    Expose(expose::Args),
    /// Show an object and its events.
    Describe(describe::Args),
    /// Attach to a VMI's serial console (Ctrl+] detaches).
    Console(console::Args),
    /// Print the recent serial output of a VMI.
    Logs(logs::Args),
    /// CPU and memory of VMIs.
    Top(top::Args),
    /// Print a kubeconfig for kubectl (TCP listener + token).
    Kubeconfig(kubeconfig::Args),
    /// Serve the web console and the API on a loopback port, like kubectl proxy.
    Proxy(proxy::Args),
    /// Run one VM in the foreground (what the daemon spawns per VM).
    Vmm(vmm::Args),
    /// Pull, import, list and remove container disks.
    Image(image::Args),
}

/// Runs the parsed command line and returns the process exit code. `matches` are the raw
/// matches (the daemon merges its config file under flags given explicitly).
pub fn run(cli: Cli, matches: &ArgMatches) -> ExitCode {
    let sub = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    match cli.command {
        Command::Daemon(args) => daemon::run(args, &sub),
        Command::Get(a) => get::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Delete(a) => delete::run(a),
        Command::Scale(a) => scale::run(a),
        Command::Expose(a) => expose::run(a),
        Command::Describe(a) => describe::run(a),
        Command::Console(a) => console::run(a),
        Command::Logs(a) => logs::run(a),
        Command::Top(a) => top::run(a),
        Command::Kubeconfig(a) => kubeconfig::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Vmm(args) => vmm::run(args),
        Command::Image(args) => image::run(args),
    }
}

/// Prints an error and its whole source chain once, on stderr.
pub fn print_error_chain(err: &(dyn std::error::Error + 'static)) {
    eprintln!("corral: error: {}", supervisor::error_chain(err));
}

/// Logs to stderr (journald adds timestamps; a TTY gets them from us). `RUST_LOG` filters.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Prints a client command's error once and returns its exit status.
pub fn fail(e: &common::CmdError) -> ExitCode {
    match e {
        common::CmdError::Server { .. } => eprintln!("{e}"),
        other => print_error_chain(other),
    }
    ExitCode::from(e.code())
}
