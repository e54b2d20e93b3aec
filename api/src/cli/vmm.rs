//! `corral vmm`: run one VM in the foreground.
//!
//! Exit codes: 0 guest powered off, 1 VMM/host error, 2 bad arguments, 3 guest crash,
//! 4 KVM internal error, 5 stopped by the host (see the README's table). With `--exit-file`,
//! the code and a reason are also written there as JSON on every exit the VMM controls.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::config::{ConfigError, JailSpec, NetSpec};
use vmm::disk::DiskSpec;
use vmm::lifecycle::{EXIT_BAD_ARGS, EXIT_VMM_ERROR, Outcome};
use vmm::seccomp::ThreadKind;
use vmm::{BootProtocol, TransportKind, VmConfig};

/// Arguments of `corral vmm` (boxed: the command enum stays small).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub vm: Box<VmArgs>,
}

/// The flags of `corral vmm`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
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
    #[arg(long, value_name = "QUANTITY", default_value = "256Mi")]
    pub memory: String,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u16,
    /// Also append guest console output to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Rename the console log to FILE.1 (replacing it) when it reaches this size (a Kubernetes
    /// quantity, 4Ki..1Gi): the log takes at most twice this.
    #[arg(long, value_name = "QUANTITY", default_value = "1Mi")]
    pub console_log_max_bytes: String,
    /// Serve the JSON control protocol on this unix socket (created 0600, stale file replaced).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Do not feed stdin to the guest serial input.
    #[arg(long)]
    pub no_stdin: bool,
    /// A virtio-blk disk, in guest order (vda, vdb, ...): PATH[,ro] | PATH,overlay |
    /// seed=DIR | empty=SIZE, each with an optional ,serial=NAME.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// A virtio-net device, after the disks: tap=NAME (opened by the VMM; needs CAP_NET_ADMIN
    /// unless the tap is persistent and owned by the caller) or fd=N (an inherited tap already
    /// attached with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), each with an optional ,mac=02:xx:..
    /// (default: 02: and a hash of the tap's name).
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<String>,
    /// Add a NoCloud seed disk (serial cidata) built from DIR after the --disk disks.
    #[arg(long, value_name = "DIR")]
    pub seed_dir: Option<PathBuf>,
    /// Directory for the VM's overlays, scratch disks and seed image (created unnamed, so they
    /// vanish with the process); default: the system temporary directory.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// On exit, write {"code": N, "reason": "..."} here (atomically).
    #[arg(long, value_name = "PATH")]
    pub exit_file: Option<PathBuf>,
    /// virtio transport of every device: pci (PCIe host bridge, MSI-X) or mmio (virtio-mmio
    /// windows in the DSDT; the guest kernel needs the virtio_mmio driver).
    #[arg(long, default_value = "pci", value_parser = parse_transport)]
    pub transport: TransportKind,
    /// Entry protocol for ELF kernels with a PVH note: auto (PVH), linux (64-bit), pvh.
    #[arg(long, hide = true, default_value = "auto", value_parser = parse_protocol)]
    pub boot_protocol: BootProtocol,
    /// Run jailed as this uid (needs root): own mount namespace with only the directories of
    /// the exit file, console log and control socket, no capabilities, no_new_privs and a
    /// seccomp filter per thread. The daemon always asks for it (unless `--no-jail`).
    #[arg(long, value_name = "UID")]
    pub jail_uid: Option<u32>,
    /// The jail's gid (default: the jail's uid).
    #[arg(long, value_name = "GID", requires = "jail_uid")]
    pub jail_gid: Option<u32>,
    /// Test hook: once filtered, a thread of this kind (main, event-loop, vcpu, blk-read) makes a
    /// forbidden system call, which must kill the VMM with SIGSYS.
    #[arg(long, hide = true, value_name = "KIND", requires = "jail_uid", value_parser = parse_thread_kind)]
    pub jail_selftest: Option<ThreadKind>,
    /// KVM device (tests point it elsewhere to simulate a host without KVM).
    #[arg(long, hide = true, env = vmm::kvm::KVM_DEVICE_ENV, default_value = vmm::kvm::DEFAULT_KVM_DEVICE)]
    pub kvm_device: PathBuf,
}

fn parse_protocol(s: &str) -> Result<BootProtocol, String> {
    match s {
        "auto" => Ok(BootProtocol::Auto),
        "linux" => Ok(BootProtocol::Linux64),
        "pvh" => Ok(BootProtocol::Pvh),
        other => Err(format!("{other:?} is not one of auto, linux, pvh")),
    }
}

fn parse_transport(s: &str) -> Result<TransportKind, String> {
    TransportKind::parse(s).ok_or_else(|| format!("{s:?} is not one of pci, mmio"))
}

fn parse_thread_kind(s: &str) -> Result<ThreadKind, String> {
    ThreadKind::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of main, event-loop, vcpu, blk-read"))
}

impl VmArgs {
    /// The VM configuration (parsed, not yet validated against the file system).
    fn config(self) -> Result<VmConfig, ConfigError> {
        let memory_bytes =
            vmm::quantity::parse_bytes(&self.memory).map_err(ConfigError::MemoryQuantity)?;
        let mut disks = self
            .disk
            .iter()
            .map(|d| DiskSpec::parse(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Disk)?;
        disks.extend(self.seed_dir.map(DiskSpec::seed));
        let nets = self
            .net
            .iter()
            .map(|n| NetSpec::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Net)?;
        let console_log_max_bytes = vmm::quantity::parse_bytes(&self.console_log_max_bytes)
            .map_err(ConfigError::ConsoleLogQuantity)?;
        // Jailed, the working directory is the jail's empty root: paths used after the jail
        // is entered (exit file, control socket removal, console log rotation) must be absolute.
        let jailed = self.jail_uid.is_some();
        let absolute = |p: Option<PathBuf>| match p {
            Some(p) if jailed => Some(std::path::absolute(&p).unwrap_or(p)),
            other => other,
        };
        Ok(VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            memory_bytes,
            vcpus: self.cpus,
            console_log: absolute(self.console_log),
            console_log_max_bytes,
            control_socket: absolute(self.control_socket),
            stdin: !self.no_stdin,
            kvm_device: self.kvm_device,
            boot_protocol: self.boot_protocol,
            transport: self.transport,
            disks,
            nets,
            scratch_dir: self.scratch_dir,
            exit_file: absolute(self.exit_file),
            jail: self.jail_uid.map(|uid| JailSpec {
                uid,
                gid: self.jail_gid.unwrap_or(uid),
                selftest: self.jail_selftest,
            }),
        })
    }
}

/// `corral vmm` parsed on its own: the same flags, help and errors as under [`super::Cli`].
#[derive(Debug, clap::Parser)]
#[command(
    name = "corral vmm",
    version,
    about = "Run one VM in the foreground (what the daemon spawns per VM)"
)]
struct Standalone {
    #[command(flatten)]
    vm: Box<VmArgs>,
}

/// `corral vmm ...` from the process' arguments (the binary's fast path).
pub fn main() -> ExitCode {
    use clap::Parser as _;
    let argv =
        std::iter::once(std::ffi::OsString::from("corral vmm")).chain(std::env::args_os().skip(2));
    run(Args {
        vm: Standalone::parse_from(argv).vm,
    })
}

/// Runs the VM; the exit code tells how it ended.
pub fn run(args: Args) -> ExitCode {
    // `RUST_LOG` gets the full filter syntax; without it a plain level (no filter parsing at
    // start-up).
    let log = tracing_subscriber::fmt().with_writer(std::io::stderr);
    let _ = if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        log.with_env_filter(filter).try_init()
    } else {
        log.with_max_level(tracing::Level::WARN).try_init()
    };
    let args = *args.vm;
    let exit_file = match (&args.exit_file, args.jail_uid) {
        (Some(p), Some(_)) => Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        (p, _) => p.clone(),
    };
    let (code, reason) = run_vm(args);
    if let Some(path) = exit_file {
        if let Err(e) = vmm::exit_file::write(&path, code, &reason) {
            eprintln!("corral: error: writing exit file {}: {e}", path.display());
        }
    }
    ExitCode::from(code)
}

fn run_vm(args: VmArgs) -> (u8, String) {
    let config = match args.config().and_then(VmConfig::validate) {
        Ok(config) => config,
        Err(e) => {
            super::print_error_chain(&e);
            return (
                EXIT_BAD_ARGS,
                format!("bad arguments: {}", supervisor::error_chain(&e)),
            );
        }
    };
    match vmm::run(&config) {
        Ok(outcome) => {
            let reason = match &outcome {
                Outcome::PoweredOff => "guest powered off".to_string(),
                Outcome::Crashed(why) => format!("guest crashed: {why}"),
                Outcome::KvmInternalError(why) => format!("KVM internal error: {why}"),
                Outcome::Stopped(why) => format!("stopped: {why}"),
            };
            if outcome != Outcome::PoweredOff {
                eprintln!("corral vmm: {reason}");
            }
            (outcome.exit_code(), reason)
        }
        Err(e) => {
            super::print_error_chain(&e);
            (
                EXIT_VMM_ERROR,
                format!("error: {}", supervisor::error_chain(&e)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use vmm::disk::DiskSource;

    /// What the daemon spawns (`VmConfig::to_args`) parses back into the same configuration.
    #[test]
    fn to_args_round_trips_through_the_cli() {
        let mut full = VmConfig::new("/img/vmlinux");
        full.initrd = Some("/img/initrd".into());
        full.cmdline = "root=LABEL=cirros-rootfs ro console=ttyS0 --not-a-flag".into();
        full.memory_bytes = 277_872_640;
        full.vcpus = 3;
        full.stdin = false;
        full.control_socket = Some("/run/corral/vms/u1/control.sock".into());
        full.console_log = Some("/run/corral/vms/u1/console.log".into());
        full.console_log_max_bytes = 64 << 10;
        full.scratch_dir = Some("/var/lib/corral/scratch/u1".into());
        full.exit_file = Some("/run/corral/vms/u1/exit.json".into());
        full.kvm_device = "/dev/null".into();
        full.boot_protocol = BootProtocol::Linux64;
        full.transport = TransportKind::Mmio;
        full.disks = vec![
            DiskSpec {
                source: DiskSource::Overlay {
                    base: "/img/disk.raw".into(),
                },
                serial: "containerdisk".into(),
            },
            DiskSpec {
                source: DiskSource::Raw {
                    path: "/img/data.raw".into(),
                    read_only: true,
                },
                serial: String::new(),
            },
            DiskSpec::seed("/var/lib/corral/scratch/u1/seed/cloudinitdisk"),
            DiskSpec {
                source: DiskSource::Empty { capacity: 1 << 30 },
                serial: "scratch".into(),
            },
        ];
        full.nets = vec![
            NetSpec::tap("tap-u1"),
            NetSpec::parse("fd=3,mac=02:00:00:00:00:09").unwrap(),
        ];
        full.jail = Some(JailSpec::new(0x7c00_0001, 0x7c00_0002));
        let mut dash = VmConfig::new("/k");
        dash.cmdline = "-v --disk x".into();
        for want in [VmConfig::new("/k"), dash, full] {
            let argv = want.to_args().unwrap();
            let cli = super::super::Cli::try_parse_from(
                std::iter::once("corral".to_string()).chain(argv.iter().cloned()),
            )
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let super::super::Command::Vmm(args) = cli.command else {
                panic!("not the vmm command: {argv:?}");
            };
            assert_eq!(args.vm.config().unwrap(), want, "{argv:?}");
        }
    }
}
