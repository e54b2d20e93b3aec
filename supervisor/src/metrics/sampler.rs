//! The sampler: every `resolution` it reads each running VM's cumulative CPU time (its cgroup's
//! `cpuacct.usage` / `cpu.stat usage_usec`, or the VMM's `/proc` times without cgroups) and
//! memory, and turns the last two readings into a rate, as metrics-server does with the
//! kubelet's cumulative counters: usage = Δcpu / Δt over `window` = Δt, stamped with the later
//! reading's time. A VM has metrics from its second reading on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::counters::{self, COUNTERS};
use crate::cgroups::Cgroups;
use crate::cgroups::place::Placer;
use crate::runtime::{VmRef, VmRuntime};

/// One cumulative reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub cpu_ns: u64,
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

/// A VM's metrics (one `PodMetrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmMetrics {
    pub vm: VmRef,
    /// CPU usage over `window` in nanocores (metrics-server's unit).
    pub cpu_nanocores: u64,
    /// Cumulative CPU time in nanoseconds.
    pub cpu_total_ns: u64,
    /// Working set (usage − inactive file) of the cgroup, or the VMM's RSS without cgroups.
    pub memory_working_set: u64,
    /// Resident memory of the VMM process.
    pub rss: u64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

impl VmMetrics {
    /// Millicores, rounded up (what `Quantity.MilliValue()` gives the HPA and kubectl).
    pub fn cpu_millis(&self) -> u64 {
        self.cpu_nanocores.div_ceil(1_000_000)
    }
}

/// CPU rate between two readings in nanocores, and the window (`None` if time did not advance
/// or the counter went backwards).
pub fn rate(prev: &Reading, cur: &Reading) -> Option<(u64, Duration)> {
    let dt = cur.at.checked_duration_since(prev.at)?;
    if dt.is_zero() || cur.cpu_ns < prev.cpu_ns {
        return None;
    }
    let ncores = u128::from(cur.cpu_ns - prev.cpu_ns) * 1_000_000_000 / dt.as_nanos();
    Some((u64::try_from(ncores).unwrap_or(u64::MAX), dt))
}

struct Tracked {
    pid: u32,
    last: Reading,
    metrics: Option<VmMetrics>,
}

/// The host's metrics (one `NodeMetrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    pub cpu_nanocores: u64,
    /// `MemTotal − MemAvailable`.
    pub memory_working_set: u64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

#[derive(Default)]
struct NodeTrack {
    last: Option<Reading>,
    usage: Option<NodeUsage>,
}

/// The sampler; share it behind an `Arc`.
pub struct Sampler {
    runtime: Arc<dyn VmRuntime>,
    cgroups: Option<Arc<Cgroups>>,
    placer: Option<Arc<Placer>>,
    vms: Mutex<HashMap<String, Tracked>>,
    node: Mutex<NodeTrack>,
}

impl Sampler {
    /// A sampler over the runtime's VMs, reading cgroups when there are any.
    pub fn new(
        runtime: Arc<dyn VmRuntime>,
        cgroups: Option<Arc<Cgroups>>,
        placer: Option<Arc<Placer>>,
    ) -> Arc<Sampler> {
        Arc::new(Sampler {
            runtime,
            cgroups,
            placer,
            vms: Mutex::new(HashMap::new()),
            node: Mutex::new(NodeTrack::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_cpu(&self, uid: &str, pid: u32) -> Option<u64> {
        match &self.cgroups {
            Some(cg) => cg.cpu_usage_ns(uid).ok(),
            None => super::proc::cpu_ns(pid),
        }
    }

    /// Takes one reading of every running VM.
    pub fn sample(&self) {
        let t0 = Instant::now();
        let running: Vec<(VmRef, u32)> = self
            .runtime
            .known()
            .into_iter()
            .filter_map(|vm| {
                let pid = self.runtime.pid(&vm.uid)?;
                Some((vm, pid))
            })
            .collect();
        let mut fresh = HashMap::with_capacity(running.len());
        let mut old = std::mem::take(&mut *self.lock());
        for (vm, pid) in running {
            let prev = old.remove(&vm.uid).filter(|t| t.pid == pid);
            if prev.is_none() {
                if let Some(p) = &self.placer {
                    match p.ensure(&vm, pid) {
                        Ok(true) => {
                            tracing::info!(vmi = %format!("{}/{}", vm.namespace, vm.name), pid, "placed a re-adopted VM into its cgroup");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(vmi = %format!("{}/{}", vm.namespace, vm.name), error = %crate::error_chain(&e), "could not place the VM into its cgroup");
                        }
                    }
                }
            }
            let Some(cpu_ns) = self.read_cpu(&vm.uid, pid) else {
                continue;
            };
            let cur = Reading {
                cpu_ns,
                at: Instant::now(),
                wall: Utc::now(),
            };
            let rss = crate::runtime::procfs::rss_bytes(pid).unwrap_or(0);
            let memory = self
                .cgroups
                .as_ref()
                .and_then(|cg| cg.memory(&vm.uid).ok())
                .map_or(rss, |m| m.working_set);
            let metrics = prev.as_ref().and_then(|p| {
                let (ncores, window) = rate(&p.last, &cur)?;
                Some(VmMetrics {
                    vm: vm.clone(),
                    cpu_nanocores: ncores,
                    cpu_total_ns: cpu_ns,
                    memory_working_set: memory,
                    rss,
                    timestamp: cur.wall,
                    window,
                })
            });
            fresh.insert(
                vm.uid.clone(),
                Tracked {
                    pid,
                    last: cur,
                    metrics,
                },
            );
        }
        *self.lock() = fresh;
        if let Some(cg) = &self.cgroups {
            for gone in cg.sweep() {
                tracing::debug!(uid = %gone, "removed the cgroup of an ended VM");
            }
        }
        self.sample_node();
        counters::add(&COUNTERS.metric_samples, 1);
        counters::add(&COUNTERS.sample_nanos, t0.elapsed().as_nanos() as u64);
    }

    fn sample_node(&self) {
        let Some(busy) = super::node::read_busy_ns() else {
            return;
        };
        let cur = Reading {
            cpu_ns: busy,
            at: Instant::now(),
            wall: Utc::now(),
        };
        let mut n = self
            .node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ncores, window)) = n.last.as_ref().and_then(|p| rate(p, &cur)) {
            let (total, available) = crate::host::memory();
            n.usage = Some(NodeUsage {
                cpu_nanocores: ncores,
                memory_working_set: total.saturating_sub(available),
                timestamp: cur.wall,
                window,
            });
        }
        n.last = Some(cur);
    }

    /// The host's latest metrics.
    pub fn node(&self) -> Option<NodeUsage> {
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .usage
            .clone()
    }

    /// True when VM CPU comes from cgroups (not the VMMs' `/proc` times).
    pub fn uses_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// The latest metrics of a VM (by VMI uid).
    pub fn get(&self, uid: &str) -> Option<VmMetrics> {
        self.lock().get(uid).and_then(|t| t.metrics.clone())
    }

    /// The latest metrics of every VM that has them.
    pub fn all(&self) -> Vec<VmMetrics> {
        self.lock()
            .values()
            .filter_map(|t| t.metrics.clone())
            .collect()
    }

    /// Samples every `resolution` until the runtime is dropped (a tokio task).
    pub fn spawn(self: &Arc<Self>, resolution: Duration) {
        let s = Arc::clone(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(resolution);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                let s2 = Arc::clone(&s);
                let _ = tokio::task::spawn_blocking(move || s2.sample()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_like_metrics_server() {
        let t0 = Instant::now();
        let r = |cpu_ns, ms| Reading {
            cpu_ns,
            at: t0 + Duration::from_millis(ms),
            wall: Utc::now(),
        };
        // 4.5 s of CPU in 15 s: 300m.
        let (nc, w) = rate(&r(1_000_000_000, 0), &r(5_500_000_000, 15_000)).unwrap();
        assert_eq!((nc, w), (300_000_000, Duration::from_secs(15)));
        assert_eq!(rate(&r(5, 10), &r(4, 20)), None, "counter reset");
        assert_eq!(rate(&r(5, 10), &r(9, 10)), None, "no time passed");
        let m = VmMetrics {
            vm: VmRef {
                uid: "u".into(),
                namespace: "n".into(),
                name: "v".into(),
            },
            cpu_nanocores: 283_000_001,
            cpu_total_ns: 0,
            memory_working_set: 0,
            rss: 0,
            timestamp: Utc::now(),
            window: w,
        };
        assert_eq!(m.cpu_millis(), 284);
    }
}

#[cfg(test)]
mod real_tests {
    use super::*;
    use crate::cgroups::Settings;
    use crate::cgroups::testutil::*;
    use crate::runtime::Observed;
    use crate::runtime::fake::FakeRuntime;

    /// A busy process in a real cgroup with a 300m quota, seen by the sampler as a running VM:
    /// the sampler measures ≈ 300m and agrees with the process's own CPU counters.
    #[test]
    fn real_sampler_measures_a_quota_limited_process() {
        if let Some(why) = real_cgroups_unavailable() {
            println!("SKIP real_sampler_measures_a_quota_limited_process: {why}");
            return;
        }
        let Ok(root) = v1_test_root() else {
            println!("SKIP real_sampler_measures_a_quota_limited_process: no cgroup v1 here");
            return;
        };
        let busy = Busy::spawn();
        let vm = VmRef {
            uid: test_vm_name(),
            namespace: "default".into(),
            name: "spinner".into(),
        };
        let s = Settings::for_vm(Some(100), Some(300), 1, 64 << 20, None, 24 << 20);
        root.cg.place(&vm.uid, busy.pid(), &s).unwrap();
        let rt = Arc::new(FakeRuntime::default());
        rt.vms.lock().unwrap().insert(
            vm.uid.clone(),
            (
                vm.clone(),
                Observed::Running {
                    pid: busy.pid(),
                    ready: true,
                },
            ),
        );
        let sampler = Sampler::new(rt.clone(), Some(Arc::clone(&root.cg)), None);
        let mut ok = false;
        for _ in 0..3 {
            sampler.sample();
            let p0 = busy.cpu_ns();
            std::thread::sleep(Duration::from_secs(3));
            sampler.sample();
            let p1 = busy.cpu_ns();
            let m = sampler.get(&vm.uid).expect("metrics after two readings");
            let proc_m = (p1 - p0) as f64 / m.window.as_nanos() as f64 * 1000.0;
            let got = m.cpu_millis() as f64;
            println!(
                "sampler: {got:.0}m over {:?}, process counters {proc_m:.0}m, working set {} KiB, rss {} KiB",
                m.window,
                m.memory_working_set >> 10,
                m.rss >> 10
            );
            assert!(got <= 330.0, "over the quota: {got}m");
            assert!(
                (got - proc_m).abs() <= 0.05 * got + 10.0,
                "sampler {got:.0}m vs process {proc_m:.0}m"
            );
            assert!(m.rss > 0);
            assert_eq!(sampler.all().len(), 1);
            if got >= 270.0 {
                ok = true;
                break;
            }
        }
        assert!(ok, "the spinning process never reached 270m of its 300m");
        // The VM ends: its metrics go, and its cgroup is swept on the next readings.
        drop(busy);
        rt.set(
            &vm.uid,
            Observed::Exited(crate::runtime::exit_info(None, Some(9), None)),
        );
        sampler.sample();
        assert!(sampler.get(&vm.uid).is_none());
        sampler.sample();
        assert!(
            !root.cg.list().contains(&vm.uid),
            "cgroup removed once empty"
        );
    }
}
