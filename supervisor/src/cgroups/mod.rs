//! Per-VM cgroups: each VMM process runs in its own cgroup, named after its VMI's uid, under
//! corral's parent cgroup; `limits.cpu` becomes a CFS quota, `requests.cpu` shares/weight, and
//! memory is capped at guest memory + VMM overhead ([`settings`]). cgroup v2 (`cpu.max`,
//! `cpu.weight`, `memory.max`) and v1 (`cpu.cfs_quota_us`, `cpu.shares`, `cpuacct`,
//! `memory.limit_in_bytes`) sit behind one [`Backend`] trait and are detected from
//! `/proc/self/mountinfo`.
//!
//! A cgroup outlives a daemon restart (its path is derived from the uid, so the new daemon finds
//! the re-adopted VM's cgroup again) and is removed by [`Cgroups::sweep`] once its process is
//! gone. Threads: called from the runtime's launch path and the sampler task; one lock
//! serializes creation against sweeping.

pub mod fs;
pub mod mounts;
pub mod place;
pub mod settings;
pub mod v1;
pub mod v2;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

pub use settings::Settings;

/// Cgroup errors.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected content in {path}: {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {controllers} controller(s) are not enabled in {path}: limits are not enforced")]
    ControllerMissing { path: PathBuf, controllers: String },
    #[error("no usable cgroup hierarchy: {0}")]
    Unavailable(String),
}

/// Memory of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// Charged memory.
    pub usage: u64,
    /// Usage minus inactive file cache (what the kubelet and metrics-server report).
    pub working_set: u64,
}

/// One cgroup implementation.
pub trait Backend: Send + Sync {
    /// Human description (version and paths).
    fn name(&self) -> String;
    /// Creates the parent and enables controllers (once, at start).
    fn prepare(&self) -> Result<(), CgroupError>;
    /// Creates the VM's cgroup.
    fn create(&self, vm: &str) -> Result<(), CgroupError>;
    /// Writes the VM's limits.
    fn apply(&self, vm: &str, s: &Settings) -> Result<(), CgroupError>;
    /// Moves process `pid` into the VM's cgroup.
    fn attach(&self, vm: &str, pid: u32) -> Result<(), CgroupError>;
    /// Processes in the VM's cgroup.
    fn procs(&self, vm: &str) -> Result<Vec<u32>, CgroupError>;
    /// Removes the VM's (empty) cgroup.
    fn remove(&self, vm: &str) -> Result<(), CgroupError>;
    /// Names of the cgroups under the parent.
    fn list(&self) -> Vec<String>;
    /// Cumulative CPU time of the VM's cgroup in nanoseconds.
    fn cpu_usage_ns(&self, vm: &str) -> Result<u64, CgroupError>;
    /// Memory of the VM's cgroup.
    fn memory(&self, vm: &str) -> Result<MemoryUsage, CgroupError>;
    /// (CFS quota µs, memory limit bytes) as currently written.
    fn limits(&self, vm: &str) -> Result<(Option<u64>, Option<u64>), CgroupError>;
}

/// Which hierarchy to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// cgroup v2 if `/sys/fs/cgroup` is cgroup2 (or a cgroup2 mount has the cpu controller),
    /// else v1 if the cpu, cpuacct and memory hierarchies are mounted.
    #[default]
    Auto,
    V1,
    V2,
    /// No cgroups (limits are not enforced and CPU metrics are unavailable).
    None,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "v1" => Ok(Mode::V1),
            "v2" => Ok(Mode::V2),
            "none" => Ok(Mode::None),
            o => Err(format!("unknown cgroup mode {o:?} (auto, v1, v2 or none)")),
        }
    }
}

/// Cgroup configuration.
#[derive(Debug, Clone, Default)]
pub struct CgroupConfig {
    pub mode: Mode,
    /// The VMs' parent cgroup: absolute (`/corral`) or relative to the daemon's own cgroup
    /// (`vms`, the default).
    pub root: Option<String>,
}

/// The VMs' parent under the daemon's own cgroup, by default.
pub const DEFAULT_ROOT: &str = "vms";

/// Resolves the VMs' parent cgroup path against the daemon's own: (path, relative?).
fn resolve_root(root: Option<&str>, own: &str) -> (String, bool) {
    let root = root.unwrap_or(DEFAULT_ROOT);
    if root.starts_with('/') {
        return (root.to_string(), false);
    }
    let rel = root.trim_matches('/');
    (format!("{}/{rel}", own.trim_end_matches('/')), true)
}

/// Chooses and builds a backend from the system's mounts (pure given the two files' text).
pub fn choose(
    cfg: &CgroupConfig,
    mountinfo: &str,
    proc_cgroup: &str,
) -> Result<Box<dyn Backend>, CgroupError> {
    let mounts = mounts::parse_mountinfo(mountinfo);
    let own = mounts::parse_proc_cgroup(proc_cgroup);
    let sys = std::path::Path::new("/sys/fs/cgroup");
    let v2_mount = mounts
        .iter()
        .find(|m| m.v2 && m.point == sys)
        .or_else(|| mounts.iter().find(|m| m.v2));
    let have_v1 = ["cpu", "cpuacct", "memory"]
        .iter()
        .all(|c| mounts::v1_mount(&mounts, c).is_some());
    let use_v2 = match cfg.mode {
        Mode::None => return Err(CgroupError::Unavailable("disabled (--cgroups none)".into())),
        Mode::V2 => true,
        Mode::V1 => false,
        Mode::Auto => v2_mount.is_some_and(|m| m.point == sys) || !have_v1,
    };
    if use_v2 {
        let m = v2_mount.ok_or_else(|| CgroupError::Unavailable("no cgroup2 mount".into()))?;
        let own_path = mounts::v2_own_path(&own).unwrap_or_else(|| "/".into());
        // Already in the daemon's leaf (an earlier start moved it, or systemd's
        // `DelegateSubgroup=supervisor` put it there): the delegated cgroup is the leaf's parent.
        let own_path = match own_path.rsplit_once('/') {
            Some((parent, leaf)) if leaf == v2::SUPERVISOR_LEAF => {
                if parent.is_empty() {
                    "/".to_string()
                } else {
                    parent.to_string()
                }
            }
            _ => own_path,
        };
        let (parent, relative) = resolve_root(cfg.root.as_deref(), &own_path);
        let mut enable = Vec::new();
        let mut leaf_for_self = None;
        if relative {
            let own_dir = mounts::dir_of(m, &own_path);
            if own_path != "/" {
                leaf_for_self = Some(own_dir.join(v2::SUPERVISOR_LEAF));
            }
            let parent_dir = mounts::dir_of(m, &parent);
            let mut d = parent_dir.parent().map(std::path::Path::to_path_buf);
            while let Some(p) = d {
                if !p.starts_with(&own_dir) {
                    break;
                }
                enable.insert(0, p.clone());
                d = p.parent().map(std::path::Path::to_path_buf);
            }
        }
        return Ok(Box::new(v2::V2 {
            parent: mounts::dir_of(m, &parent),
            enable,
            leaf_for_self,
        }));
    }
    if !have_v1 {
        return Err(CgroupError::Unavailable(
            "the cpu, cpuacct and memory v1 hierarchies are not all mounted".into(),
        ));
    }
    let dir = |ctrl: &str| {
        let m = mounts::v1_mount(&mounts, ctrl).expect("checked above");
        let own_path = mounts::v1_own_path(&own, ctrl).unwrap_or_else(|| "/".into());
        mounts::dir_of(m, &resolve_root(cfg.root.as_deref(), &own_path).0)
    };
    Ok(Box::new(v1::V1 {
        cpu: dir("cpu"),
        cpuacct: dir("cpuacct"),
        memory: dir("memory"),
    }))
}

/// The per-VM cgroup manager.
pub struct Cgroups {
    backend: Box<dyn Backend>,
    lock: Mutex<BTreeSet<String>>,
}

/// True for names corral gives VM cgroups (VMI uids).
fn is_vm_name(n: &str) -> bool {
    n.len() == 36 && n.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl Cgroups {
    /// Detects the hierarchy, prepares corral's parent and returns the manager.
    pub fn detect(cfg: &CgroupConfig) -> Result<Cgroups, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Read {
                path: p.into(),
                source,
            })
        };
        let backend = choose(
            cfg,
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
        )?;
        Cgroups::with_backend(backend)
    }

    /// A manager over `backend` (prepared).
    pub fn with_backend(backend: Box<dyn Backend>) -> Result<Cgroups, CgroupError> {
        backend.prepare()?;
        Ok(Cgroups {
            backend,
            lock: Mutex::new(BTreeSet::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Human description.
    pub fn describe(&self) -> String {
        self.backend.name()
    }

    /// Creates the VM's cgroup, writes its limits and moves `pid` into it. The process is moved
    /// even when limits could not all be written (the error says which).
    pub fn place(&self, vm: &str, pid: u32, s: &Settings) -> Result<(), CgroupError> {
        let _g = self.lock();
        self.backend.create(vm)?;
        let applied = self.backend.apply(vm, s);
        self.backend.attach(vm, pid)?;
        applied
    }

    /// True when `pid` is in the VM's cgroup.
    pub fn contains(&self, vm: &str, pid: u32) -> bool {
        self.backend.procs(vm).is_ok_and(|p| p.contains(&pid))
    }

    /// Cumulative CPU time of the VM in nanoseconds.
    pub fn cpu_usage_ns(&self, vm: &str) -> Result<u64, CgroupError> {
        self.backend.cpu_usage_ns(vm)
    }

    /// Memory of the VM.
    pub fn memory(&self, vm: &str) -> Result<MemoryUsage, CgroupError> {
        self.backend.memory(vm)
    }

    /// Current (quota µs, memory limit) of the VM's cgroup.
    pub fn limits(&self, vm: &str) -> Result<(Option<u64>, Option<u64>), CgroupError> {
        self.backend.limits(vm)
    }

    /// VM cgroups that exist.
    pub fn list(&self) -> Vec<String> {
        self.backend
            .list()
            .into_iter()
            .filter(|n| is_vm_name(n))
            .collect()
    }

    /// Removes VM cgroups found empty on two consecutive sweeps (so a cgroup being created by
    /// another daemon sharing the parent is never taken). Returns the removed names.
    pub fn sweep(&self) -> Vec<String> {
        let mut empty_before = self.lock();
        let mut now_empty = BTreeSet::new();
        let mut removed = Vec::new();
        for vm in self.list() {
            match self.backend.procs(&vm) {
                Ok(p) if p.is_empty() => {
                    if empty_before.contains(&vm) {
                        match self.backend.remove(&vm) {
                            Ok(()) => removed.push(vm),
                            Err(e) => {
                                tracing::warn!(error = %crate::error_chain(&e), "could not remove a VM cgroup");
                            }
                        }
                    } else {
                        now_empty.insert(vm);
                    }
                }
                _ => {}
            }
        }
        *empty_before = now_empty;
        removed
    }

    /// Removes the VM's cgroup now if it is empty.
    pub fn remove_if_empty(&self, vm: &str) -> Result<bool, CgroupError> {
        let _g = self.lock();
        if self.backend.procs(vm).is_ok_and(|p| p.is_empty()) {
            self.backend.remove(vm)?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;
