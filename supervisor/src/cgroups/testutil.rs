//! Helpers for tests on real cgroups: a busy process, a per-test cgroup parent nested under this
//! process's own cgroups (removed on drop), and CPU measurements.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;

/// Why real-cgroup tests cannot run here, if they cannot.
pub fn real_cgroups_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    None
}

pub struct Busy(pub Child);

impl Busy {
    pub fn spawn() -> Busy {
        Busy(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        )
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// utime + stime of the process, in nanoseconds (USER_HZ = 100).
    pub fn cpu_ns(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks * 10_000_000
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Idle CPU of the host over a closure, in cores.
pub fn idle_cores_during<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let idle = || {
        let s = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu: Vec<u64> = s
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        cpu[3] + cpu[4]
    };
    let (i0, t0) = (idle(), Instant::now());
    let out = f();
    let (i1, dt) = (idle(), t0.elapsed().as_secs_f64());
    (out, (i1 - i0) as f64 / 100.0 / dt)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// A VM-shaped cgroup name for a test.
pub fn test_vm_name() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The test's own v1 backend, nested under this process's cgroups; removed on drop.
pub struct TestRoot {
    pub cg: std::sync::Arc<Cgroups>,
    pub dirs: Vec<std::path::PathBuf>,
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        // VM cgroups left by a failed assertion first (their processes were killed already).
        std::thread::sleep(Duration::from_millis(50));
        for d in &self.dirs {
            for c in fs::children(d) {
                let _ = std::fs::remove_dir(d.join(c));
            }
            let _ = std::fs::remove_dir(d);
        }
    }
}

pub fn v1_test_root() -> Result<TestRoot, String> {
    let cfg = CgroupConfig {
        mode: Mode::V1,
        root: Some(unique("corral-test")),
    };
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let pc = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let backend = choose(&cfg, &mi, &pc).map_err(|e| e.to_string())?;
    let name = backend.name();
    let cg = Cgroups::with_backend(backend).map_err(|e| crate::error_chain(&e))?;
    let dirs = name
        .trim_start_matches("cgroup v1 (")
        .trim_end_matches(')')
        .split(", ")
        .filter_map(|p| p.split_once(' ').map(|(_, d)| d.into()))
        .collect();
    Ok(TestRoot {
        cg: std::sync::Arc::new(cg),
        dirs,
    })
}

/// Millicores used by `vm` over `d`, from the cgroup's counter, and by `busy` from /proc.
pub fn measure(cg: &Cgroups, vm: &str, busy: &Busy, d: Duration) -> (f64, f64) {
    let (c0, p0, t0) = (cg.cpu_usage_ns(vm).unwrap(), busy.cpu_ns(), Instant::now());
    std::thread::sleep(d);
    let (c1, p1, dt) = (cg.cpu_usage_ns(vm).unwrap(), busy.cpu_ns(), t0.elapsed());
    let m = |a: u64, b: u64| (b - a) as f64 / dt.as_nanos() as f64 * 1000.0;
    (m(c0, c1), m(p0, p1))
}
