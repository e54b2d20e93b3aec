//! Benchmark of corral's sampling and autoscaling cost with N VMs, before (or without) real VMs:
//! N processes (a few spinning, the rest idle) each in its own per-VM cgroup, sampled by the real
//! [`Sampler`] (cgroup counters, memory, rss), and HPA syncs by the real [`Autoscaler`] over a
//! store holding N Running VMIs. The peer is `ps -o pid,time,rss -p <pids>` over the same
//! processes (reading the same per-process CPU and memory from /proc).
//!
//! Run: `bench/autoscaler/run.sh` (root, cgroup v1 or v2 with cpu+memory delegated).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use supervisor::autoscaler::reconcile::{Autoscaler, AutoscalerConfig};
use supervisor::cgroups::{CgroupConfig, Cgroups, Mode, Settings};
use supervisor::controller::HpaReconciler;
use supervisor::kinds::Kind;
use supervisor::metrics::Sampler;
use supervisor::runtime::{LaunchPlan, Observed, RuntimeError, VmRef, VmRuntime};
use supervisor::store::Store;

/// A runtime that only lists pids (the sampler asks nothing else).
struct Procs(Vec<(VmRef, u32)>);

impl VmRuntime for Procs {
    fn launch(&self, _: &LaunchPlan) -> Result<(), RuntimeError> {
        unreachable!()
    }
    fn observe(&self, uid: &str) -> Observed {
        match self.pid(uid) {
            Some(pid) => Observed::Running { pid, ready: true },
            None => Observed::Unknown,
        }
    }
    fn stop(&self, _: &str, _: Duration) {}
    fn release(&self, _: &str) {}
    fn known(&self) -> Vec<VmRef> {
        self.0.iter().map(|(v, _)| v.clone()).collect()
    }
    fn console_log(&self, _: &str) -> Option<PathBuf> {
        None
    }
    fn control_socket(&self, _: &str) -> Option<PathBuf> {
        None
    }
    fn pid(&self, uid: &str) -> Option<u32> {
        self.0.iter().find(|(v, _)| v.uid == uid).map(|(_, p)| *p)
    }
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU time of this thread in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = s[s.rfind(')').map_or(0, |i| i + 2)..].split(' ').collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) * 10_000_000
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).min(v.len()) - 1];
    (mean, p99)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let busy: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let root = format!("corral-bench-{}", std::process::id());
    let cg = Arc::new(
        Cgroups::detect(&CgroupConfig {
            mode: Mode::Auto,
            root: Some(root.clone()),
        })
        .expect("cgroups (run as root)"),
    );
    // The store: a set of N Running, Ready VMIs and the lab's HPA.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let set: serde_json::Value =
        serde_norway::from_str(include_str!("../../tests/fixtures/seed/vmirs.yaml")).unwrap();
    let mut s = set.clone();
    s["spec"]["replicas"] = json!(n);
    s["status"] = json!({"replicas": n, "labelSelector": "kubevirt.io/domain=lab05-cirros"});
    store.create(Kind::ReplicaSet, "default", s, false).unwrap();
    let long_ago = "2026-01-01T00:00:00Z";
    let mut uids = Vec::new();
    for i in 0..n {
        let o = json!({"metadata": {"name": format!("vm-{i}"), "labels": {"kubevirt.io/domain": "lab05-cirros"}},
            "spec": set["spec"]["template"]["spec"].clone(),
            "status": {"phase": "Running",
                "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": long_ago}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": long_ago}]}});
        let created = store.create(Kind::Vmi, "default", o, false).unwrap();
        // The sampler knows VMs by VMI uid.
        uids.push(created["metadata"]["uid"].as_str().unwrap().to_string());
    }
    let (stored, _) = supervisor::kinds::hpa::admit_versioned(
        &serde_norway::from_str(include_str!("../../tests/fixtures/seed/hpa.yaml")).unwrap(),
        "v1",
        supervisor::kinds::FieldValidation::Ignore,
    )
    .unwrap();
    let mut h = stored;
    h["spec"]["maxReplicas"] = json!(n * 2);
    store.create(Kind::Hpa, "default", h, false).unwrap();
    let mut kids = Kill(Vec::new());
    let mut vms = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        let script = if i < busy {
            "while :; do :; done"
        } else {
            "exec sleep 100000"
        };
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let vm = VmRef {
            uid: uid.clone(),
            namespace: "default".into(),
            name: format!("vm-{i}"),
        };
        let s = Settings::for_vm(Some(100), Some(300), 1, 64 << 20, None, 16 << 20);
        let placed = cg.place(&vm.uid, child.id(), &s);
        vms.push((vm, child.id()));
        kids.0.push(child);
        if let Err(e) = placed {
            eprintln!("place: {}", supervisor::error_chain(&e));
            return;
        }
    }
    let pids: Vec<String> = vms.iter().map(|(_, p)| p.to_string()).collect();
    let rt: Arc<dyn VmRuntime> = Arc::new(Procs(vms.clone()));
    let sampler = Sampler::new(Arc::clone(&rt), Some(Arc::clone(&cg)), None);
    sampler.sample();
    std::thread::sleep(Duration::from_millis(200));
    // Sampling rounds.
    let mut times = Vec::new();
    let c0 = thread_cpu_ns();
    for _ in 0..rounds {
        let t = Instant::now();
        sampler.sample();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_per_round = (thread_cpu_ns() - c0) as f64 / rounds as f64 / 1e6;
    if sampler.all().len() != n {
        eprintln!("only {} of {n} VMs have metrics", sampler.all().len());
    }
    let (s_mean, s_p99) = stats(times);
    // Peer: one `ps` snapshot of the same processes.
    let mut peer = Vec::new();
    for _ in 0..rounds.min(50) {
        let t = Instant::now();
        let out = Command::new("ps")
            .args(["-o", "pid=,time=,rss=", "-p", &pids.join(",")])
            .output()
            .expect("ps");
        if !out.status.success() {
            eprintln!("ps failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        peer.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p_mean, p_p99) = stats(peer);
    let ctx = bench_ctx(store);
    let hpa = Autoscaler::new(AutoscalerConfig::default(), sampler.clone());
    hpa.reconcile(&ctx, "default", "lab05-cirros-replicaset");
    let st = ctx
        .store
        .get(&supervisor::store::ObjectKey::new(
            Kind::Hpa,
            "default",
            "lab05-cirros-replicaset",
        ))
        .unwrap();
    if !st["status"]["currentMetrics"].is_array() {
        eprintln!(
            "the HPA did not compute from the sampled VMs: {}",
            st["status"]
        );
    }
    let mut hpa_times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        hpa.reconcile(&ctx, "default", "lab05-cirros-replicaset");
        hpa_times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (h_mean, h_p99) = stats(hpa_times);
    let per_15s = (cpu_per_round + h_mean) / 15_000.0 * 100.0;
    println!("| {n} VMs ({busy} spinning) | value |");
    println!("|---|---|");
    println!(
        "| corral sample round (cgroup CPU + memory + rss of every VM), mean / p99 | {s_mean:.2} ms / {s_p99:.2} ms |"
    );
    println!("| corral sample round, CPU time | {cpu_per_round:.2} ms |");
    println!(
        "| peer: `ps -o pid,time,rss -p <{n} pids>`, mean / p99 | {p_mean:.2} ms / {p_p99:.2} ms |"
    );
    println!(
        "| ratio corral / ps (mean wall time) | {:.3} |",
        s_mean / p_mean
    );
    println!(
        "| HPA sync over {n} VMIs (store, algorithm, status), mean / p99 | {h_mean:.3} ms / {h_p99:.3} ms |"
    );
    println!(
        "| daemon CPU for sampling + autoscaling at the 15 s defaults | {per_15s:.4} % of one core |"
    );
    drop(kids);
    std::thread::sleep(Duration::from_millis(100));
    cg.sweep();
    cg.sweep();
    remove_root(&root);
}

/// Removes the benchmark's parent cgroups (their VM cgroups were swept).
fn remove_root(root: &str) {
    for base in [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let _ = std::fs::remove_dir(format!("{base}/{root}"));
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(mem) = own.lines().find_map(|l| {
        l.strip_prefix(|c: char| c.is_ascii_digit())
            .and_then(|l| l.strip_prefix(":memory:"))
    }) {
        let _ = std::fs::remove_dir(format!(
            "/sys/fs/cgroup/memory{}/{root}",
            mem.trim_end_matches('/')
        ));
    }
}

fn bench_ctx(store: Arc<Store>) -> supervisor::controller::Ctx {
    struct NoImages;
    impl supervisor::boot::ImageSource for NoImages {
        fn boot_image(
            &self,
            _: &str,
            _: supervisor::boot::PullPolicy,
            _: bool,
        ) -> supervisor::boot::BoxFuture<Result<supervisor::boot::BootImage, String>> {
            Box::pin(async { Err("unused".into()) })
        }
        fn kernel_from(
            &self,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
            _: supervisor::boot::PullPolicy,
        ) -> supervisor::boot::BoxFuture<Result<supervisor::boot::KernelArtifacts, String>>
        {
            Box::pin(async { Err("unused".into()) })
        }
    }
    supervisor::controller::Ctx {
        store: store.clone(),
        runtime: Arc::new(Procs(Vec::new())),
        images: supervisor::controller::images::ImageCache::new(Arc::new(NoImages)),
        events: supervisor::events::Recorder::new(store),
        capacity: supervisor::capacity::Capacity {
            reserve: 0,
            overhead: 0,
        },
        queue: supervisor::controller::queue::WorkQueue::new(),
        config: supervisor::controller::ControllerConfig::default(),
        launch_lock: Default::default(),
        crash_loops: Default::default(),
        probes: Default::default(),
    }
}
