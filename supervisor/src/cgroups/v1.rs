//! cgroup v1: one directory per VM in each of the `cpu`, `cpuacct` and `memory` hierarchies
//! (which may be one co-mounted `cpu,cpuacct` hierarchy).

use std::path::{Path, PathBuf};

use super::settings::{CFS_PERIOD_US, Settings};
use super::{Backend, CgroupError, MemoryUsage, fs};

/// The v1 backend: the VM cgroups' parent directory in each hierarchy.
#[derive(Debug, Clone)]
pub struct V1 {
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
}

impl V1 {
    /// Distinct parent directories (co-mounted hierarchies appear once).
    fn parents(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.cpu, &self.cpuacct, &self.memory];
        v.dedup();
        v.sort();
        v.dedup();
        v
    }
}

impl Backend for V1 {
    fn name(&self) -> String {
        format!(
            "cgroup v1 (cpu {}, cpuacct {}, memory {})",
            self.cpu.display(),
            self.cpuacct.display(),
            self.memory.display()
        )
    }

    fn prepare(&self) -> Result<(), CgroupError> {
        for p in self.parents() {
            fs::mkdir(p)?;
        }
        Ok(())
    }

    fn create(&self, vm: &str) -> Result<(), CgroupError> {
        for p in self.parents() {
            fs::mkdir(&fs::child(p, vm))?;
        }
        Ok(())
    }

    fn apply(&self, vm: &str, s: &Settings) -> Result<(), CgroupError> {
        let cpu = fs::child(&self.cpu, vm);
        fs::write(&cpu, "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
        let quota = s.cpu_quota_us.map_or("-1".to_string(), |q| q.to_string());
        fs::write(&cpu, "cpu.cfs_quota_us", &quota)?;
        fs::write(&cpu, "cpu.shares", &s.cpu_shares.to_string())?;
        let mem = fs::child(&self.memory, vm);
        if let Some(m) = s.memory_max {
            fs::write(&mem, "memory.limit_in_bytes", &m.to_string())?;
        }
        // The VMM is moved a moment after it started: bring the memory it already touched
        // along (best effort; the knob is deprecated on recent kernels).
        let _ = fs::write(&mem, "memory.move_charge_at_immigrate", "3");
        Ok(())
    }

    fn attach(&self, vm: &str, pid: u32) -> Result<(), CgroupError> {
        for p in self.parents() {
            fs::write(&fs::child(p, vm), "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn procs(&self, vm: &str) -> Result<Vec<u32>, CgroupError> {
        let mut all = Vec::new();
        for p in self.parents() {
            all.extend(fs::procs(&fs::child(p, vm))?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn remove(&self, vm: &str) -> Result<(), CgroupError> {
        let mut first = Ok(());
        for p in self.parents() {
            if let Err(e) = fs::rmdir(&fs::child(p, vm)) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn list(&self) -> Vec<String> {
        let mut all: Vec<String> = self.parents().into_iter().flat_map(fs::children).collect();
        all.sort();
        all.dedup();
        all
    }

    fn cpu_usage_ns(&self, vm: &str) -> Result<u64, CgroupError> {
        fs::read_u64(&fs::child(&self.cpuacct, vm), "cpuacct.usage")
    }

    fn memory(&self, vm: &str) -> Result<MemoryUsage, CgroupError> {
        let dir = fs::child(&self.memory, vm);
        let usage = fs::read_u64(&dir, "memory.usage_in_bytes")?;
        let stat = fs::read(&dir, "memory.stat")?;
        let inactive = fs::keyed(&stat, "total_inactive_file").unwrap_or(0);
        Ok(MemoryUsage {
            usage,
            working_set: usage.saturating_sub(inactive),
        })
    }

    fn limits(&self, vm: &str) -> Result<(Option<u64>, Option<u64>), CgroupError> {
        let cpu = fs::child(&self.cpu, vm);
        let quota = fs::read(&cpu, "cpu.cfs_quota_us")?;
        let q = quota.trim().parse::<i64>().ok().filter(|q| *q > 0);
        let mem = fs::read_u64(&fs::child(&self.memory, vm), "memory.limit_in_bytes")?;
        Ok((q.map(|q| q as u64), (mem < (1 << 62)).then_some(mem)))
    }
}
