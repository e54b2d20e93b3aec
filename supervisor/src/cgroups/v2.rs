//! cgroup v2: one directory per VM under a parent whose `cgroup.subtree_control` enables the
//! `cpu` and `memory` controllers. Under systemd that parent is the service's delegated cgroup
//! (`Delegate=yes`); since a cgroup with enabled controllers may not hold processes itself, the
//! daemon first moves into a `supervisor` leaf next to the VMs when it lives in that parent.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::settings::{CFS_PERIOD_US, Settings};
use super::{Backend, CgroupError, MemoryUsage, fs};

/// Name of the daemon's own leaf when it must leave the VMs' parent.
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// The v2 backend.
#[derive(Debug, Clone)]
pub struct V2 {
    /// The VMs' parent directory.
    pub parent: PathBuf,
    /// Directories above `parent` (top-down) whose `cgroup.subtree_control` must enable the
    /// controllers too (the daemon's own cgroup and any level between it and `parent`).
    pub enable: Vec<PathBuf>,
    /// Where this process moves first (its own cgroup may not keep processes once it enables
    /// controllers for its children).
    pub leaf_for_self: Option<PathBuf>,
}

fn enable_controllers(dir: &std::path::Path) -> Result<(), CgroupError> {
    let available = fs::read(dir, "cgroup.controllers")?;
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| matches!(*c, "cpu" | "memory"))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    fs::write(dir, "cgroup.subtree_control", &wanted.join(" "))
}

impl V2 {
    fn controllers(&self) -> BTreeSet<String> {
        fs::read(&self.parent, "cgroup.subtree_control")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Backend for V2 {
    fn name(&self) -> String {
        format!("cgroup v2 ({})", self.parent.display())
    }

    fn prepare(&self) -> Result<(), CgroupError> {
        fs::mkdir(&self.parent)?;
        if let Some(leaf) = &self.leaf_for_self {
            fs::mkdir(leaf)?;
            fs::write(leaf, "cgroup.procs", &std::process::id().to_string())?;
        }
        for d in &self.enable {
            enable_controllers(d)?;
        }
        enable_controllers(&self.parent)
    }

    fn create(&self, vm: &str) -> Result<(), CgroupError> {
        fs::mkdir(&fs::child(&self.parent, vm))
    }

    fn apply(&self, vm: &str, s: &Settings) -> Result<(), CgroupError> {
        let dir = fs::child(&self.parent, vm);
        let enabled = self.controllers();
        let mut missing = Vec::new();
        if enabled.contains("cpu") {
            let max = s.cpu_quota_us.map_or("max".to_string(), |q| q.to_string());
            fs::write(&dir, "cpu.max", &format!("{max} {CFS_PERIOD_US}"))?;
            fs::write(&dir, "cpu.weight", &s.cpu_weight.to_string())?;
        } else {
            missing.push("cpu");
        }
        if enabled.contains("memory") {
            let max = s.memory_max.map_or("max".to_string(), |m| m.to_string());
            fs::write(&dir, "memory.max", &max)?;
        } else {
            missing.push("memory");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CgroupError::ControllerMissing {
                path: self.parent.clone(),
                controllers: missing.join(", "),
            })
        }
    }

    fn attach(&self, vm: &str, pid: u32) -> Result<(), CgroupError> {
        fs::write(
            &fs::child(&self.parent, vm),
            "cgroup.procs",
            &pid.to_string(),
        )
    }

    fn procs(&self, vm: &str) -> Result<Vec<u32>, CgroupError> {
        fs::procs(&fs::child(&self.parent, vm))
    }

    fn remove(&self, vm: &str) -> Result<(), CgroupError> {
        fs::rmdir(&fs::child(&self.parent, vm))
    }

    fn list(&self) -> Vec<String> {
        fs::children(&self.parent)
    }

    fn cpu_usage_ns(&self, vm: &str) -> Result<u64, CgroupError> {
        let dir = fs::child(&self.parent, vm);
        let stat = fs::read(&dir, "cpu.stat")?;
        fs::keyed(&stat, "usage_usec")
            .map(|u| u * 1000)
            .ok_or(CgroupError::Parse {
                path: dir.join("cpu.stat"),
                text: "no usage_usec".into(),
            })
    }

    fn memory(&self, vm: &str) -> Result<MemoryUsage, CgroupError> {
        let dir = fs::child(&self.parent, vm);
        let usage = fs::read_u64(&dir, "memory.current")?;
        let stat = fs::read(&dir, "memory.stat")?;
        let inactive = fs::keyed(&stat, "inactive_file").unwrap_or(0);
        Ok(MemoryUsage {
            usage,
            working_set: usage.saturating_sub(inactive),
        })
    }

    fn limits(&self, vm: &str) -> Result<(Option<u64>, Option<u64>), CgroupError> {
        let dir = fs::child(&self.parent, vm);
        let cpu = fs::read(&dir, "cpu.max")?;
        let q = cpu.split_whitespace().next().and_then(|q| q.parse().ok());
        let mem = fs::read(&dir, "memory.max")?;
        Ok((q, mem.trim().parse().ok()))
    }
}
