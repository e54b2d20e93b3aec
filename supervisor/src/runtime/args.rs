//! The `corral vmm` configuration of a [`LaunchPlan`] (pure; unit-tested). The command line
//! itself is the `vmm` crate's rendering of its own [`VmConfig`] ([`VmConfig::to_args`]).

use std::path::PathBuf;

use vmm::VmConfig;
use vmm::config::net::{MacAddr, NetBackend, NetSpec};
use vmm::disk::{DiskSource, DiskSpec};
use vmm::jail::JailSpec;

use super::{LaunchDisk, LaunchPlan, RuntimeError};

/// Files inside a VM's run directory.
pub mod files {
    /// The VMM's control socket.
    pub const CONTROL: &str = "control.sock";
    /// Serial console output.
    pub const CONSOLE: &str = "console.log";
    /// The VMM's own stderr (its error chain on failure).
    pub const VMM_LOG: &str = "vmm.log";
    /// The launch record used for re-adoption (`vm.json`).
    pub const RECORD: &str = "vm.json";
    /// Directory (in the VM's scratch directory) holding seed files, one subdirectory per seed
    /// disk.
    pub const SEED: &str = "seed";
    /// The VMM's own record of how it ended (`{"code": N, ...}`), for re-adopted VMMs.
    pub const EXIT: &str = "exit.json";
}

/// The descriptor number at which a VMM inherits its pod's tap.
pub const TAP_FD: i32 = 3;

/// Who each VMM runs as (the daemon's `--vmm-user` / `--no-jail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmJail {
    /// Jailed as a per-VM uid/gid from the reserved range (`vmm::jail::DYNAMIC_ID_BASE`),
    /// derived from the VMI's uid.
    #[default]
    Dynamic,
    /// Jailed, every VMM as this one user.
    User { uid: u32, gid: u32 },
    /// Not jailed: the VMM runs as the daemon's user with its view (debugging only).
    Off,
}

impl VmmJail {
    /// The jail of the VM `vm_uid`, if any; a dynamic uid is never one `taken` by another live
    /// VMM.
    pub fn spec(&self, vm_uid: &str, taken: impl Fn(u32) -> bool) -> Option<JailSpec> {
        match *self {
            VmmJail::Dynamic => Some(JailSpec::dynamic_free(vm_uid, taken)),
            VmmJail::User { uid, gid } => Some(JailSpec::new(uid, gid)),
            VmmJail::Off => None,
        }
    }
}

/// Where one VM's files go: its run directory (sockets, logs, record) and its scratch directory
/// on disk (overlays, emptyDisks, seed images: unnamed files the VMM creates, plus seed files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDirs {
    pub run: PathBuf,
    pub scratch: PathBuf,
}

/// `name` as one safe path component: user input (disk and volume names, seed file names) never
/// leaves the directory it is joined to, whatever the API let through.
pub fn component<'a>(what: &'static str, name: &'a str) -> Result<&'a str, RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name)
    } else {
        Err(RuntimeError::UnsafeName {
            what,
            name: name.chars().take(80).collect(),
        })
    }
}

/// The VM `plan` describes, with its files in `dirs`, jailed as `jail`.
/// `nic`: the MAC of a NIC whose tap the VMM inherits at [`TAP_FD`].
pub fn vmm_config(
    plan: &LaunchPlan,
    dirs: &VmDirs,
    jail: Option<JailSpec>,
    nic: Option<[u8; 6]>,
) -> Result<VmConfig, RuntimeError> {
    let mut c = VmConfig::new(&plan.kernel);
    c.initrd = plan.initrd.clone();
    c.cmdline = plan.cmdline.clone();
    c.memory_bytes = plan.memory_bytes;
    // Admission bounds cpu to 1024; the VMM refuses more than it can run with a clear error.
    c.vcpus = u16::try_from(plan.vcpus).unwrap_or(u16::MAX);
    c.stdin = false;
    c.control_socket = Some(dirs.run.join(files::CONTROL));
    c.console_log = Some(dirs.run.join(files::CONSOLE));
    c.scratch_dir = Some(dirs.scratch.clone());
    c.exit_file = Some(dirs.run.join(files::EXIT));
    c.jail = jail;
    c.transport = plan.transport;
    for d in &plan.disks {
        c.disks.push(match d {
            LaunchDisk::Image {
                name,
                path,
                readonly,
            } => DiskSpec {
                source: if *readonly {
                    DiskSource::Raw {
                        path: path.clone(),
                        read_only: true,
                    }
                } else {
                    DiskSource::Overlay { base: path.clone() }
                },
                serial: name.clone(),
            },
            LaunchDisk::Seed { name, .. } => DiskSpec {
                source: DiskSource::Seed {
                    dir: seed_dir(dirs, name)?,
                },
                serial: name.clone(),
            },
            LaunchDisk::Empty { name, capacity } => DiskSpec {
                source: DiskSource::Empty {
                    capacity: *capacity,
                },
                serial: name.clone(),
            },
        });
    }
    if let Some(mac) = nic {
        c.nets.push(NetSpec {
            backend: NetBackend::Fd { fd: TAP_FD },
            mac: Some(MacAddr(mac)),
        });
    }
    Ok(c)
}

/// Arguments after the binary: `vmm --kernel ... --disk ...`.
pub fn vmm_args(
    plan: &LaunchPlan,
    dirs: &VmDirs,
    jail: Option<JailSpec>,
    nic: Option<[u8; 6]>,
) -> Result<Vec<String>, RuntimeError> {
    Ok(vmm_config(plan, dirs, jail, nic)?.to_args()?)
}

/// Where the files of seed disk `name` are written.
pub fn seed_dir(dirs: &VmDirs, name: &str) -> Result<PathBuf, RuntimeError> {
    Ok(dirs
        .scratch
        .join(files::SEED)
        .join(component("seed disk name", name)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Limits, VmRef};
    use std::path::PathBuf;

    #[test]
    fn lab_vmi_command_line() {
        let plan = LaunchPlan {
            vm: VmRef {
                uid: "u1".into(),
                namespace: "default".into(),
                name: "vm1".into(),
            },
            kernel: PathBuf::from("/img/vmlinux"),
            initrd: Some(PathBuf::from("/img/initrd")),
            cmdline: "root=LABEL=cirros-rootfs ro console=ttyS0".into(),
            memory_bytes: 265 << 20,
            vcpus: 1,
            disks: vec![
                LaunchDisk::Image {
                    name: "containerdisk".into(),
                    path: PathBuf::from("/img/disk.raw"),
                    readonly: false,
                },
                LaunchDisk::Seed {
                    name: "cloudinitdisk".into(),
                    files: vec![],
                },
                LaunchDisk::Empty {
                    name: "scratch".into(),
                    capacity: 1 << 30,
                },
            ],
            interfaces: vec![],
            hostname: "vm1".into(),
            transport: vmm::TransportKind::Pci,
            limits: Limits::default(),
        };
        let dirs = VmDirs {
            run: PathBuf::from("/run/corral/vms/u1"),
            scratch: PathBuf::from("/var/lib/corral/scratch/u1"),
        };
        let a = vmm_args(&plan, &dirs, VmmJail::Dynamic.spec("u1", |_| false), None).unwrap();
        let joined = a.join(" ");
        assert!(
            joined.starts_with("vmm --kernel /img/vmlinux --initrd /img/initrd --cmdline"),
            "{joined}"
        );
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--memory" && w[1] == "277872640")
        );
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--control-socket" && w[1] == "/run/corral/vms/u1/control.sock")
        );
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--scratch-dir" && w[1] == "/var/lib/corral/scratch/u1"),
            "disks live on the state disk, not in the run directory (tmpfs)"
        );
        let disks: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "--disk")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            disks,
            vec![
                "/img/disk.raw,overlay,serial=containerdisk",
                "seed=/var/lib/corral/scratch/u1/seed/cloudinitdisk,serial=cloudinitdisk",
                "empty=1073741824,serial=scratch",
            ]
        );
        let uid = vmm::jail::JailSpec::dynamic("u1").uid;
        assert!(uid >= vmm::jail::DYNAMIC_ID_BASE);
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--jail-uid" && w[1] == uid.to_string())
        );
        assert!(a.contains(&"--no-stdin".to_string()));
        assert!(!a.contains(&"--net".to_string()), "no NIC asked for");
        // A pod NIC: the tap inherited at TAP_FD, with the VMI's MAC.
        let a = vmm_args(&plan, &dirs, None, Some([2, 0xab, 0, 0, 0, 1])).unwrap();
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--net" && w[1] == "fd=3,mac=02:ab:00:00:00:01"),
            "{a:?}"
        );
    }

    #[test]
    fn jails() {
        let free = |_| false;
        let d = VmmJail::Dynamic.spec("u1", free).unwrap();
        assert_eq!(Some(&d), VmmJail::Dynamic.spec("u1", free).as_ref());
        assert_ne!(Some(&d), VmmJail::Dynamic.spec("u2", free).as_ref());
        let moved = VmmJail::Dynamic.spec("u1", |id| id == d.uid).unwrap();
        assert_ne!(
            moved.uid, d.uid,
            "a uid another VMM has is not handed out again"
        );
        assert_eq!(
            VmmJail::User { uid: 990, gid: 991 }.spec("u1", free),
            Some(JailSpec::new(990, 991))
        );
        assert_eq!(VmmJail::Off.spec("u1", free), None);
    }

    #[test]
    fn names_never_leave_their_directory() {
        let dirs = VmDirs {
            run: PathBuf::from("/run/corral/vms/u1"),
            scratch: PathBuf::from("/var/lib/corral/scratch/u1"),
        };
        for bad in ["/tmp/x", "..", ".", "a/../../b", "", "a\0b", "x\ny", "a/b"] {
            assert!(
                matches!(seed_dir(&dirs, bad), Err(RuntimeError::UnsafeName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            seed_dir(&dirs, "cloudinitdisk").unwrap(),
            PathBuf::from("/var/lib/corral/scratch/u1/seed/cloudinitdisk")
        );
        assert!(component("seed file", "meta-data").is_ok());
        assert!(component("seed file", "network-config").is_ok());
    }
}
