//! The VM configuration `corral vmm` runs with, and its validation.

use std::path::PathBuf;

use thiserror::Error;

use crate::arch::x86_64::boot::BootProtocol;
use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;
use crate::kvm::DEFAULT_KVM_DEVICE;

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
    pub control_socket: Option<PathBuf>,
    /// Feed the process' stdin to the guest serial input.
    pub stdin: bool,
    pub kvm_device: PathBuf,
    pub boot_protocol: BootProtocol,
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
            control_socket: None,
            stdin: true,
            kvm_device: PathBuf::from(DEFAULT_KVM_DEVICE),
            boot_protocol: BootProtocol::Auto,
        }
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
        if self.cmdline.len() >= CMDLINE_MAX_SIZE {
            return Err(ConfigError::Cmdline(self.cmdline.len()));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        for path in std::iter::once(&self.kernel).chain(self.initrd.as_ref()) {
            if !path.is_file() {
                return Err(ConfigError::NotAFile(path.clone()));
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
    #[error("command line is {0} bytes, the limit is 2047")]
    Cmdline(usize),
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("{0}: no such file")]
    NotAFile(PathBuf),
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
}
