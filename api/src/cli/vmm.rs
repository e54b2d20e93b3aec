//! `corral vmm`: run one VM in the foreground.
//!
//! Exit codes: 0 guest powered off, 1 VMM/host error, 2 bad arguments, 3 guest crash,
//! 4 KVM internal error, 5 stopped by the host (see the README's table).

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::lifecycle::{EXIT_BAD_ARGS, EXIT_VMM_ERROR, Outcome};
use vmm::{BootProtocol, VmConfig};

/// Arguments of `corral vmm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kernel: an ELF vmlinux (64-bit entry or PVH note) or a bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = vmm::config::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest memory as a Kubernetes quantity (256Mi, 1Gi, 512M, bytes).
    #[arg(long, value_name = "QUANTITY", default_value = "256Mi", value_parser = parse_memory)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u16,
    /// Also append guest console output to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Serve the JSON control protocol on this unix socket (created 0600, stale file replaced).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Do not feed stdin to the guest serial input.
    #[arg(long)]
    pub no_stdin: bool,
    /// Entry protocol for ELF kernels with a PVH note: auto (PVH), linux (64-bit), pvh.
    #[arg(long, hide = true, default_value = "auto", value_parser = parse_protocol)]
    pub boot_protocol: BootProtocol,
    /// KVM device (tests point it elsewhere to simulate a host without KVM).
    #[arg(long, hide = true, env = vmm::kvm::KVM_DEVICE_ENV, default_value = vmm::kvm::DEFAULT_KVM_DEVICE)]
    pub kvm_device: PathBuf,
}

fn parse_memory(s: &str) -> Result<u64, String> {
    vmm::quantity::parse_bytes(s).map_err(|e| e.to_string())
}

fn parse_protocol(s: &str) -> Result<BootProtocol, String> {
    match s {
        "auto" => Ok(BootProtocol::Auto),
        "linux" => Ok(BootProtocol::Linux64),
        "pvh" => Ok(BootProtocol::Pvh),
        other => Err(format!("{other:?} is not one of auto, linux, pvh")),
    }
}

impl Args {
    fn config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            memory_bytes: self.memory,
            vcpus: self.cpus,
            console_log: self.console_log,
            control_socket: self.control_socket,
            stdin: !self.no_stdin,
            kvm_device: self.kvm_device,
            boot_protocol: self.boot_protocol,
        }
    }
}

/// Runs the VM; the exit code tells how it ended.
pub fn run(args: Args) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let config = match args.config().validate() {
        Ok(config) => config,
        Err(e) => {
            super::print_error_chain(&e);
            return ExitCode::from(EXIT_BAD_ARGS);
        }
    };
    match vmm::run(&config) {
        Ok(outcome) => {
            match &outcome {
                Outcome::PoweredOff => {}
                Outcome::Crashed(why) => eprintln!("corral vmm: guest crashed: {why}"),
                Outcome::KvmInternalError(why) => {
                    eprintln!("corral vmm: KVM internal error: {why}");
                }
                Outcome::Stopped(why) => eprintln!("corral vmm: stopped: {why}"),
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            super::print_error_chain(&e);
            ExitCode::from(EXIT_VMM_ERROR)
        }
    }
}
