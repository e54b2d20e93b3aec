//! The `corral vmm` command line for a [`LaunchPlan`] (pure; unit-tested).

use std::path::PathBuf;

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
    /// The jail of the VM `vm_uid`, if any.
    pub fn spec(&self, vm_uid: &str) -> Option<vmm::jail::JailSpec> {
        match *self {
            VmmJail::Dynamic => Some(vmm::jail::JailSpec::dynamic(vm_uid)),
            VmmJail::User { uid, gid } => Some(vmm::jail::JailSpec::new(uid, gid)),
            VmmJail::Off => None,
        }
    }
}

/// The `--jail-*` arguments for the VM `vm_uid` (appended to [`vmm_args`]).
pub fn jail_args(jail: &VmmJail, vm_uid: &str) -> Vec<String> {
    jail.spec(vm_uid).map(|s| s.args()).unwrap_or_default()
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

/// Arguments after the binary: `vmm --kernel ... --disk ...`.
pub fn vmm_args(plan: &LaunchPlan, dirs: &VmDirs) -> Result<Vec<String>, RuntimeError> {
    let run_dir = dirs.run.as_path();
    let mut a: Vec<String> = vec![
        "vmm".into(),
        "--kernel".into(),
        plan.kernel.display().to_string(),
    ];
    if let Some(initrd) = &plan.initrd {
        a.push("--initrd".into());
        a.push(initrd.display().to_string());
    }
    a.extend([
        "--cmdline".into(),
        plan.cmdline.clone(),
        "--memory".into(),
        plan.memory_bytes.to_string(),
        "--cpus".into(),
        plan.vcpus.to_string(),
        "--no-stdin".into(),
        "--control-socket".into(),
        run_dir.join(files::CONTROL).display().to_string(),
        "--console-log".into(),
        run_dir.join(files::CONSOLE).display().to_string(),
        "--scratch-dir".into(),
        dirs.scratch.display().to_string(),
        "--exit-file".into(),
        run_dir.join(files::EXIT).display().to_string(),
    ]);
    for d in &plan.disks {
        a.push("--disk".into());
        a.push(match d {
            LaunchDisk::Image {
                name,
                path,
                readonly,
            } => {
                let mode = if *readonly { "ro" } else { "overlay" };
                format!("{},{mode},serial={name}", path.display())
            }
            LaunchDisk::Seed { name, .. } => {
                format!("seed={},serial={name}", seed_dir(dirs, name)?.display())
            }
            LaunchDisk::Empty { name, capacity } => format!("empty={capacity},serial={name}"),
        });
    }
    Ok(a)
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
    fn jail_arguments() {
        let dynamic = jail_args(&VmmJail::Dynamic, "u1");
        assert_eq!(dynamic[0], "--jail-uid");
        let uid: u32 = dynamic[1].parse().unwrap();
        assert!(uid >= vmm::jail::DYNAMIC_ID_BASE);
        assert_eq!(dynamic, jail_args(&VmmJail::Dynamic, "u1"));
        assert_eq!(
            jail_args(&VmmJail::User { uid: 990, gid: 991 }, "u1"),
            vec!["--jail-uid", "990", "--jail-gid", "991"]
        );
        assert!(jail_args(&VmmJail::Off, "u1").is_empty());
    }

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
            limits: Limits::default(),
        };
        let dirs = VmDirs {
            run: PathBuf::from("/run/corral/vms/u1"),
            scratch: PathBuf::from("/var/lib/corral/scratch/u1"),
        };
        let a = vmm_args(&plan, &dirs).unwrap();
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
