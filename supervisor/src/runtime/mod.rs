//! Where VMs actually run. The controllers only talk to [`VmRuntime`]; [`process::ProcessRuntime`]
//! is the real one (one `corral vmm` process per VM), tests use a fake.

pub mod args;
pub mod control;
pub mod pod;
pub mod process;
pub mod procfs;

use std::path::PathBuf;
use std::time::Duration;

/// A VM's identity as the runtime knows it: the VMI uid plus where to report changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct VmRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A disk as the VM will see it, in order (vda, vdb, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchDisk {
    /// A shared read-only base image with a private copy-on-write overlay (containerDisk).
    Image {
        name: String,
        path: PathBuf,
        readonly: bool,
    },
    /// A NoCloud `cidata` seed built from these files (name, bytes).
    Seed {
        name: String,
        files: Vec<(String, Vec<u8>)>,
    },
    /// Sparse scratch space of `capacity` bytes (emptyDisk).
    Empty { name: String, capacity: u64 },
}

/// A NIC on the pod network (masquerade binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchInterface {
    /// The interface's name in the VMI.
    pub name: String,
    pub mac: [u8; 6],
    /// Ports forwarded from the pod IP to the guest; empty: all.
    pub ports: Vec<crate::network::Port>,
}

/// What the runtime reports of a VM's NIC (the VMI's `status.interfaces[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub name: String,
    /// The pod IP (KubeVirt reports it for masquerade NICs).
    pub ip: std::net::Ipv4Addr,
    pub mac: [u8; 6],
}

/// CPU and memory limits to enforce on the VM's process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub vm: VmRef,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub disks: Vec<LaunchDisk>,
    /// NICs (at most one today: the pod network).
    pub interfaces: Vec<LaunchInterface>,
    /// The guest's hostname (DHCP option 12): `spec.hostname`, else the VMI's name.
    pub hostname: String,
    pub limits: Limits,
    /// The virtio transport (the VMI's `corral.dev/virtio-transport` annotation; pci).
    pub transport: vmm::TransportKind,
}

/// How a VM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// True when the guest powered itself off (exit 0).
    pub succeeded: bool,
    /// CamelCase reason for the VMI status (`GuestPoweredOff`, `GuestCrashed`, ...).
    pub reason: String,
    /// Human message (exit code or signal, and the VMM's last error line when there is one).
    pub message: String,
}

/// What the runtime observes of a VM right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The runtime has no record of this VM.
    Unknown,
    /// The process runs; `ready` once the VMM reports every vCPU entered and no crash.
    Running { pid: u32, ready: bool },
    /// A stop was requested and is in progress.
    Stopping { pid: u32 },
    /// The process is gone.
    Exited(ExitInfo),
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("create run directory {path}")]
    RunDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write seed file {path}")]
    Seed {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("spawn {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write VM record {path}")]
    Record {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} {name:?} cannot name a file: one path component of [A-Za-z0-9._-], not . or .., is required"
    )]
    UnsafeName { what: &'static str, name: String },
    #[error("VMM command line")]
    Argv(#[from] vmm::argv::ArgvError),
    #[error("pod network")]
    Network(#[from] crate::network::NetworkError),
}

/// The side effects of running VMs.
pub trait VmRuntime: Send + Sync + 'static {
    /// Starts the VM; returns once the process is spawned (readiness is reported later).
    fn launch(&self, plan: &LaunchPlan) -> Result<(), RuntimeError>;
    /// Current state of the VM with this uid.
    fn observe(&self, uid: &str) -> Observed;
    /// Stops the VM in the background: graceful for `grace`, then killed. Reported when done.
    fn stop(&self, uid: &str, grace: Duration);
    /// Forgets an exited VM and removes its run directory (console log, sockets, scratch).
    fn release(&self, uid: &str);
    /// Every VM the runtime knows (running or exited but not released).
    fn known(&self) -> Vec<VmRef>;
    /// Path of the VM's serial console log, if it has one.
    fn console_log(&self, uid: &str) -> Option<PathBuf>;
    /// Path of the VM's control socket, while it runs.
    fn control_socket(&self, uid: &str) -> Option<PathBuf>;
    /// Process ids of running VMs (for metrics and cgroups).
    fn pid(&self, uid: &str) -> Option<u32>;
    /// Does the VM's ephemeral storage (overlays, emptyDisks, seed) fit on the scratch
    /// filesystem? Called under the controller's launch lock, right before [`launch`](Self::launch).
    fn fits_storage(&self, _plan: &LaunchPlan) -> crate::capacity::Fit {
        crate::capacity::Fit::Yes
    }
    /// The VM's NICs as they are on the host (pod IP, MAC), once launched.
    fn interfaces(&self, _uid: &str) -> Vec<InterfaceStatus> {
        Vec::new()
    }
}

impl LaunchPlan {
    /// Bytes of ephemeral storage the guest can make the host write, given the size of each
    /// image file: the overlay of each writable image, each emptyDisk and the seed.
    pub fn ephemeral_bytes(&self, image_size: impl Fn(&std::path::Path) -> u64) -> u64 {
        self.disks
            .iter()
            .map(|d| match d {
                LaunchDisk::Image { readonly: true, .. } => 0,
                LaunchDisk::Image { path, .. } => image_size(path),
                LaunchDisk::Empty { capacity, .. } => *capacity,
                LaunchDisk::Seed { files, .. } => files
                    .iter()
                    .map(|(_, b)| b.len() as u64)
                    .fold(crate::storage::SEED_OVERHEAD, u64::saturating_add),
            })
            .fold(0, u64::saturating_add)
    }
}

/// Maps a `corral vmm` exit status to a VMI outcome (see the README's exit-code table).
pub fn exit_info(code: Option<i32>, signal: Option<i32>, last_error: Option<&str>) -> ExitInfo {
    let (succeeded, reason, what) = match (code, signal) {
        (Some(0), _) => (true, "GuestPoweredOff", "the guest powered off".to_string()),
        (Some(1), _) => (
            false,
            "VMMError",
            "the VMM failed (exit code 1)".to_string(),
        ),
        (Some(2), _) => (
            false,
            "InvalidVMConfiguration",
            "the VMM rejected its arguments (exit code 2)".to_string(),
        ),
        (Some(3), _) => (
            false,
            "GuestCrashed",
            "the guest crashed (triple fault, exit code 3)".to_string(),
        ),
        (Some(4), _) => (
            false,
            "KVMInternalError",
            "KVM reported an internal error (exit code 4)".to_string(),
        ),
        (Some(5), _) => (
            false,
            "StoppedByHost",
            "the VM was stopped by the host (exit code 5)".to_string(),
        ),
        (Some(c), _) => (false, "VMMError", format!("the VMM exited with code {c}")),
        (None, Some(9)) => (false, "Killed", "the VMM was killed (SIGKILL)".to_string()),
        (None, Some(s)) => (false, "Killed", format!("the VMM was killed by signal {s}")),
        (None, None) => (
            false,
            "VMMLost",
            // Only adopted VMMs get here: they are not our children, so the kernel gives corral no
            // exit status, and a VMM that was killed or crashed wrote no exit file.
            "the VMM ended without recording an exit code (corral adopted it after a restart, \
             so its exit status is not visible; it was probably killed)"
                .to_string(),
        ),
    };
    let message = match last_error {
        Some(e) if !e.trim().is_empty() && !succeeded => format!("{what}: {}", e.trim()),
        _ => what,
    };
    ExitInfo {
        succeeded,
        reason: reason.to_string(),
        message,
    }
}

#[cfg(test)]
pub mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_reasons() {
        let cases = [
            (Some(0), None, true, "GuestPoweredOff"),
            (Some(1), None, false, "VMMError"),
            (Some(3), None, false, "GuestCrashed"),
            (Some(4), None, false, "KVMInternalError"),
            (Some(5), None, false, "StoppedByHost"),
            (None, Some(9), false, "Killed"),
            (None, None, false, "VMMLost"),
        ];
        for (code, sig, ok, reason) in cases {
            let e = exit_info(code, sig, Some("corral: error: boom"));
            assert_eq!(
                (e.succeeded, e.reason.as_str()),
                (ok, reason),
                "{code:?} {sig:?}"
            );
        }
        assert!(
            exit_info(Some(1), None, Some("corral: error: boom"))
                .message
                .ends_with("boom")
        );
    }
}
