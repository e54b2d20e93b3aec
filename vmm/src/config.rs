//! The VM configuration `corral vmm` runs with, and its validation.

pub mod net;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use thiserror::Error;

use crate::arch::x86_64::boot::BootProtocol;
use crate::arch::x86_64::layout::{CMDLINE_MAX_SIZE, MAX_VIRTIO_DEVICES, virtio_mmio_slot};
use crate::console::{DEFAULT_LOG_MAX_BYTES, MAX_LOG_MAX_BYTES, MIN_LOG_MAX_BYTES};
use crate::devices::virtio::TransportKind;
use crate::disk::spec::{DiskSource, DiskSpec};
pub use crate::jail::JailSpec;
use crate::kvm::DEFAULT_KVM_DEVICE;
pub use net::{MacAddr, NetBackend, NetSpec};

/// Smallest guest we start (the ACPI area and boot structures alone need the first MiB).
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest we start.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most vCPUs (APIC ids are one byte; 255 is the broadcast id).
pub const MAX_VCPUS: u16 = 254;
/// Guest memory is a whole number of 4 KiB pages (`512M` is rounded up).
pub const PAGE_SIZE: u64 = 4096;
/// Command line when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Everything needed to run one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory_bytes: u64,
    pub vcpus: u16,
    pub console_log: Option<PathBuf>,
    /// Size at which the console log is renamed to `.1` (one older file is kept).
    pub console_log_max_bytes: u64,
    pub control_socket: Option<PathBuf>,
    /// Feed the process' stdin to the guest serial input.
    pub stdin: bool,
    pub kvm_device: PathBuf,
    pub boot_protocol: BootProtocol,
    /// The virtio transport of every device (pci by default).
    pub transport: TransportKind,
    /// virtio-blk disks in guest order (vda, vdb, ...).
    pub disks: Vec<DiskSpec>,
    /// virtio-net devices, after the disks (in slot order).
    pub nets: Vec<NetSpec>,
    /// Where overlays, scratch disks and seed images are created (unnamed); `None`: the
    /// system's temporary directory.
    pub scratch_dir: Option<PathBuf>,
    /// Where the CLI writes how the VMM ended (its directory stays reachable in the jail).
    pub exit_file: Option<PathBuf>,
    /// Run jailed (see [`crate::jail`]); `None`: with the caller's privileges and view.
    pub jail: Option<JailSpec>,
}

impl VmConfig {
    /// A configuration with defaults: 256 MiB, 1 vCPU, stdin attached.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_bytes: 256 << 20,
            vcpus: 1,
            console_log: None,
            console_log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            control_socket: None,
            stdin: true,
            kvm_device: PathBuf::from(DEFAULT_KVM_DEVICE),
            boot_protocol: BootProtocol::Auto,
            transport: TransportKind::Pci,
            disks: Vec::new(),
            nets: Vec::new(),
            scratch_dir: None,
            exit_file: None,
            jail: None,
        }
    }

    /// The directories the VMM still writes to once jailed: those of its exit file, console
    /// log and control socket.
    pub fn jail_dirs(&self) -> Vec<PathBuf> {
        [&self.exit_file, &self.console_log, &self.control_socket]
            .into_iter()
            .flatten()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect()
    }

    /// Number of virtio-mmio devices: the disks, then the network devices.
    pub fn virtio_devices(&self) -> usize {
        self.disks.len() + self.nets.len()
    }

    /// The command line the guest gets: ours, plus with the mmio transport one
    /// `virtio_mmio.device=4K@0xADDR:GSI` per virtio device (for kernels with
    /// `VIRTIO_MMIO_CMDLINE_DEVICES`; the DSDT describes them too).
    pub fn kernel_cmdline(&self) -> String {
        let mut cmdline = self.cmdline.clone();
        if self.transport != TransportKind::Mmio {
            return cmdline;
        }
        for i in 0..self.virtio_devices() {
            let (base, gsi) = virtio_mmio_slot(i);
            cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
        }
        cmdline
    }

    /// The scratch directory to use.
    pub fn scratch_dir(&self) -> PathBuf {
        self.scratch_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Checks what can be checked before touching KVM; rounds memory up to whole pages.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.memory_bytes < MIN_MEMORY || self.memory_bytes > MAX_MEMORY {
            return Err(ConfigError::Memory(self.memory_bytes));
        }
        self.memory_bytes = self.memory_bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_LOG_MAX_BYTES..=MAX_LOG_MAX_BYTES).contains(&self.console_log_max_bytes) {
            return Err(ConfigError::ConsoleLogMaxBytes(self.console_log_max_bytes));
        }
        if self.disks.len() > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        if self.virtio_devices() > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices {
                disks: self.disks.len(),
                nets: self.nets.len(),
            });
        }
        for n in &self.nets {
            let ok = match &n.backend {
                NetBackend::Tap { name } => crate::devices::virtio::net::tap::valid_name(name),
                NetBackend::Fd { fd } => *fd > 2,
            };
            if !ok {
                return Err(ConfigError::Net(net::NetSpecError::Backend(n.to_string())));
            }
        }
        let mut fds: Vec<_> = self
            .nets
            .iter()
            .filter_map(|n| match n.backend {
                NetBackend::Fd { fd } => Some(fd),
                NetBackend::Tap { .. } => None,
            })
            .collect();
        fds.sort_unstable();
        if let Some(w) = fds.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::NetFdTwice(w[0]));
        }
        let cmdline_len = self.kernel_cmdline().len();
        if cmdline_len >= CMDLINE_MAX_SIZE {
            return Err(ConfigError::Cmdline(cmdline_len));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        for path in std::iter::once(&self.kernel).chain(self.initrd.as_ref()) {
            if !path.is_file() {
                return Err(ConfigError::NotAFile(path.clone()));
            }
        }
        for disk in &self.disks {
            match &disk.source {
                DiskSource::Raw { path, .. } | DiskSource::Overlay { base: path } => {
                    let ok = std::fs::metadata(path)
                        .is_ok_and(|m| m.is_file() || m.file_type().is_block_device());
                    if !ok {
                        return Err(ConfigError::NotAFile(path.clone()));
                    }
                }
                DiskSource::Seed { dir } if !dir.is_dir() => {
                    return Err(ConfigError::NotADirectory(dir.clone()));
                }
                _ => {}
            }
        }
        if let Some(jail) = &self.jail {
            jail.validate().map_err(|_| ConfigError::JailIdentity)?;
        }
        if let Some(dir) = &self.scratch_dir {
            if !dir.is_dir() {
                return Err(ConfigError::NotADirectory(dir.clone()));
            }
        }
        Ok(self)
    }
}

/// A configuration that cannot run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("memory {0} bytes is outside 16Mi..1Ti")]
    Memory(u64),
    #[error("{0} vCPUs is outside 1..=254")]
    Vcpus(u16),
    #[error("command line (with the virtio_mmio.device= entries) is {0} bytes, the limit is 2047")]
    Cmdline(usize),
    #[error("{0} disks; at most 18 fit (one interrupt line each)")]
    TooManyDisks(usize),
    #[error("{disks} disks and {nets} network devices; at most 18 virtio devices fit")]
    TooManyDevices { disks: usize, nets: usize },
    #[error("--net fd={0} given twice")]
    NetFdTwice(i32),
    #[error("--net")]
    Net(#[source] net::NetSpecError),
    #[error("{0}: no such directory")]
    NotADirectory(PathBuf),
    #[error("--memory")]
    MemoryQuantity(#[source] crate::quantity::QuantityError),
    #[error("--console-log-max-bytes {0} is outside 4Ki..1Gi")]
    ConsoleLogMaxBytes(u64),
    #[error("--console-log-max-bytes")]
    ConsoleLogQuantity(#[source] crate::quantity::QuantityError),
    #[error("--disk")]
    Disk(#[source] crate::disk::spec::SpecError),
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("{0}: no such file")]
    NotAFile(PathBuf),
    #[error("--jail-uid and --jail-gid must not be 0")]
    JailIdentity,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig::new("/proc/self/exe")
    }

    #[test]
    fn validation() {
        assert!(config().validate().is_ok());
        let c = VmConfig {
            memory_bytes: 512_000_001,
            ..config()
        }
        .validate()
        .unwrap();
        assert_eq!(c.memory_bytes % PAGE_SIZE, 0);
        assert_eq!(
            VmConfig {
                memory_bytes: 1 << 20,
                ..config()
            }
            .validate(),
            Err(ConfigError::Memory(1 << 20))
        );
        assert_eq!(
            VmConfig {
                memory_bytes: 1 << 50,
                ..config()
            }
            .validate(),
            Err(ConfigError::Memory(1 << 50))
        );
        assert_eq!(
            VmConfig {
                vcpus: 0,
                ..config()
            }
            .validate(),
            Err(ConfigError::Vcpus(0))
        );
        assert_eq!(
            VmConfig {
                vcpus: 255,
                ..config()
            }
            .validate(),
            Err(ConfigError::Vcpus(255))
        );
        assert!(matches!(
            VmConfig {
                cmdline: "x".repeat(4000),
                ..config()
            }
            .validate(),
            Err(ConfigError::Cmdline(_))
        ));
        for bad in [0, MIN_LOG_MAX_BYTES - 1, MAX_LOG_MAX_BYTES + 1] {
            assert_eq!(
                VmConfig {
                    console_log_max_bytes: bad,
                    ..config()
                }
                .validate(),
                Err(ConfigError::ConsoleLogMaxBytes(bad))
            );
        }
        assert_eq!(config().console_log_max_bytes, 1 << 20);
        assert!(matches!(
            VmConfig::new("/nonexistent").validate(),
            Err(ConfigError::NotAFile(_))
        ));
        assert!(matches!(
            VmConfig {
                initrd: Some("/".into()),
                ..config()
            }
            .validate(),
            Err(ConfigError::NotAFile(_))
        ));
    }

    #[test]
    fn disks_extend_the_command_line_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::write(&image, [0u8; 512]).unwrap();
        let disks = vec![
            DiskSpec::parse(&format!("{},overlay,serial=root", image.display())).unwrap(),
            DiskSpec::seed(dir.path()),
        ];
        let c = VmConfig {
            cmdline: "console=ttyS0".into(),
            disks,
            scratch_dir: Some(dir.path().into()),
            transport: TransportKind::Mmio,
            ..config()
        };
        assert_eq!(
            c.kernel_cmdline(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        let pci = VmConfig {
            transport: TransportKind::Pci,
            ..c.clone()
        };
        assert_eq!(pci.kernel_cmdline(), "console=ttyS0", "PCI needs no hints");
        assert!(c.clone().validate().is_ok());
        let missing = VmConfig {
            disks: vec![DiskSpec::parse("/nonexistent.raw,ro").unwrap()],
            ..c.clone()
        };
        assert!(matches!(missing.validate(), Err(ConfigError::NotAFile(_))));
        let seed_file = VmConfig {
            disks: vec![DiskSpec::seed(&image)],
            ..c.clone()
        };
        assert!(matches!(
            seed_file.validate(),
            Err(ConfigError::NotADirectory(_))
        ));
        let too_many = VmConfig {
            disks: vec![DiskSpec::parse("empty=1Mi").unwrap(); 19],
            ..c.clone()
        };
        assert_eq!(too_many.validate(), Err(ConfigError::TooManyDisks(19)));
        let with_nets = VmConfig {
            disks: vec![DiskSpec::seed(dir.path())],
            nets: vec![NetSpec::tap("tap0"), NetSpec::parse("fd=5").unwrap()],
            ..c.clone()
        };
        assert_eq!(
            with_nets.kernel_cmdline(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7"
        );
        assert!(with_nets.clone().validate().is_ok());
        let crowded = VmConfig {
            disks: vec![DiskSpec::parse("empty=1Mi").unwrap(); 17],
            ..with_nets.clone()
        };
        assert_eq!(
            crowded.validate(),
            Err(ConfigError::TooManyDevices { disks: 17, nets: 2 })
        );
        let twice = VmConfig {
            nets: vec![
                NetSpec::parse("fd=5").unwrap(),
                NetSpec::parse("fd=5,mac=02:00:00:00:00:01").unwrap(),
            ],
            ..with_nets
        };
        assert_eq!(twice.validate(), Err(ConfigError::NetFdTwice(5)));
        let bad_scratch = VmConfig {
            scratch_dir: Some(image.clone()),
            ..c
        };
        assert!(matches!(
            bad_scratch.validate(),
            Err(ConfigError::NotADirectory(_))
        ));
    }
}
