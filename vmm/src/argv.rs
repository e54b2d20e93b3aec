//! The `corral vmm` argument vector of a [`VmConfig`]: how a supervisor asks for a VM.
//!
//! The inverse of the CLI's parser (`api/src/cli/vmm.rs`, which round-trip tests it): a caller
//! fills in the typed configuration and spawns `corral` with [`VmConfig::to_args`], never with
//! arguments of its own making.

use std::path::Path;

use thiserror::Error;

use crate::arch::x86_64::boot::BootProtocol;
use crate::config::VmConfig;
use crate::console::DEFAULT_LOG_MAX_BYTES;
use crate::devices::virtio::TransportKind;
use crate::disk::spec::{DiskSource, DiskSpec};
use crate::kvm::DEFAULT_KVM_DEVICE;

/// The subcommand every vector starts with.
pub const SUBCOMMAND: &str = "vmm";

/// A configuration the command line cannot carry.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgvError {
    #[error("{what} path {path:?} is not UTF-8")]
    NotUtf8 { what: &'static str, path: String },
    #[error("disk path {0:?} contains a comma (the --disk separator)")]
    CommaInPath(String),
    #[error("disk serial {0:?} contains a comma (the --disk separator)")]
    CommaInSerial(String),
}

impl std::fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if !self.serial.is_empty() {
            write!(f, ",serial={}", self.serial)?;
        }
        Ok(())
    }
}

fn utf8<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, ArgvError> {
    path.to_str().ok_or_else(|| ArgvError::NotUtf8 {
        what,
        path: path.display().to_string(),
    })
}

/// One `--disk` value, refused when a comma would change its meaning.
fn disk_arg(disk: &DiskSpec) -> Result<String, ArgvError> {
    let path = match &disk.source {
        DiskSource::Raw { path, .. } => Some(path),
        DiskSource::Overlay { base } => Some(base),
        DiskSource::Seed { dir } => Some(dir),
        DiskSource::Empty { .. } => None,
    };
    if let Some(p) = path {
        if utf8("disk", p)?.contains(',') {
            return Err(ArgvError::CommaInPath(p.display().to_string()));
        }
    }
    if disk.serial.contains(',') {
        return Err(ArgvError::CommaInSerial(disk.serial.clone()));
    }
    Ok(disk.to_string())
}

impl VmConfig {
    /// `vmm --kernel ... --disk ...`: the arguments after the binary that make `corral vmm` run
    /// this configuration. Defaults are left out, so the vector stays short and readable in
    /// `ps`.
    pub fn to_args(&self) -> Result<Vec<String>, ArgvError> {
        let mut a: Vec<String> = vec![SUBCOMMAND.into()];
        let kernel = utf8("kernel", &self.kernel)?;
        a.extend(["--kernel".into(), kernel.into()]);
        if let Some(p) = &self.initrd {
            a.extend(["--initrd".into(), utf8("initrd", p)?.into()]);
        }
        // Free text: `--cmdline=` keeps one that starts with `-` from reading as a flag.
        a.push(format!("--cmdline={}", self.cmdline));
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        flag("memory", self.memory_bytes.to_string());
        flag("cpus", self.vcpus.to_string());
        if let Some(p) = &self.control_socket {
            flag("control-socket", utf8("control socket", p)?.into());
        }
        if let Some(p) = &self.console_log {
            flag("console-log", utf8("console log", p)?.into());
        }
        if self.console_log_max_bytes != DEFAULT_LOG_MAX_BYTES {
            flag(
                "console-log-max-bytes",
                self.console_log_max_bytes.to_string(),
            );
        }
        if let Some(p) = &self.scratch_dir {
            flag("scratch-dir", utf8("scratch directory", p)?.into());
        }
        if let Some(p) = &self.exit_file {
            flag("exit-file", utf8("exit file", p)?.into());
        }
        if self.kvm_device != Path::new(DEFAULT_KVM_DEVICE) {
            flag("kvm-device", utf8("KVM device", &self.kvm_device)?.into());
        }
        match self.boot_protocol {
            BootProtocol::Auto => {}
            BootProtocol::Linux64 => flag("boot-protocol", "linux".into()),
            BootProtocol::Pvh => flag("boot-protocol", "pvh".into()),
        }
        if self.transport != TransportKind::Pci {
            flag("transport", self.transport.name().into());
        }
        for d in &self.disks {
            flag("disk", disk_arg(d)?);
        }
        for n in &self.nets {
            flag("net", n.to_string());
        }
        if let Some(j) = &self.jail {
            flag("jail-uid", j.uid.to_string());
            flag("jail-gid", j.gid.to_string());
            if let Some(kind) = j.selftest {
                flag("jail-selftest", kind.name().into());
            }
        }
        if !self.stdin {
            a.push("--no-stdin".into());
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JailSpec;
    use std::path::PathBuf;

    #[test]
    fn defaults_are_left_out() {
        let a = VmConfig::new("/k").to_args().unwrap();
        assert_eq!(
            a,
            [
                "vmm",
                "--kernel",
                "/k",
                "--cmdline=console=ttyS0 reboot=k panic=1",
                "--memory",
                "268435456",
                "--cpus",
                "1"
            ]
        );
    }

    #[test]
    fn disks_and_jail() {
        let mut c = VmConfig::new("/k");
        c.stdin = false;
        c.disks = vec![
            DiskSpec {
                source: DiskSource::Overlay {
                    base: "/img/disk.raw".into(),
                },
                serial: "containerdisk".into(),
            },
            DiskSpec::seed("/s/seed/cloudinitdisk"),
            DiskSpec {
                source: DiskSource::Empty { capacity: 1 << 30 },
                serial: String::new(),
            },
        ];
        c.jail = Some(JailSpec::new(990, 991));
        c.nets = vec![
            crate::config::NetSpec::tap("tap0"),
            crate::config::NetSpec::parse("fd=4,mac=02:00:00:00:00:07").unwrap(),
        ];
        let a = c.to_args().unwrap();
        let nets: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "--net")
            .map(|w| &w[1])
            .collect();
        assert_eq!(nets, ["tap=tap0", "fd=4,mac=02:00:00:00:00:07"]);
        let disks: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "--disk")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            disks,
            [
                "/img/disk.raw,overlay,serial=containerdisk",
                "seed=/s/seed/cloudinitdisk,serial=cidata",
                "empty=1073741824",
            ]
        );
        assert!(a.ends_with(&[
            "--jail-uid".into(),
            "990".into(),
            "--jail-gid".into(),
            "991".into(),
            "--no-stdin".into()
        ]));
    }

    #[test]
    fn what_a_command_line_cannot_carry() {
        let mut c = VmConfig::new("/k");
        c.disks = vec![DiskSpec {
            source: DiskSource::Raw {
                path: "/a,b".into(),
                read_only: true,
            },
            serial: String::new(),
        }];
        assert_eq!(c.to_args(), Err(ArgvError::CommaInPath("/a,b".into())));
        c.disks = vec![DiskSpec {
            source: DiskSource::Empty { capacity: 512 },
            serial: "x,ro".into(),
        }];
        assert_eq!(c.to_args(), Err(ArgvError::CommaInSerial("x,ro".into())));
        use std::os::unix::ffi::OsStrExt as _;
        let c = VmConfig::new(PathBuf::from(std::ffi::OsStr::from_bytes(b"/k\xff")));
        assert!(matches!(c.to_args(), Err(ArgvError::NotUtf8 { .. })));
    }
}
