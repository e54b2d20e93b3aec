//! Fault and soak runs against a real daemon with real VMs (the test guest), bounded in rounds and
//! time, printing a Markdown table (bench/soak/run.sh):
//!
//! * **daemon kills**: `kill -9` of the daemon at a random point of each 0→N and N→0 scale, then a
//!   restart: the set converges with exactly N VMIs and N VMMs, every VMM belongs to a VMI (no
//!   orphan), no VMI has two VMMs, and every acknowledged scale is what the store returns.
//! * **VMM kills**: `kill -9` of a random VMM of a Ready set: time until the set is Ready at N again.
//! * **scale cycles**: 0→2→0 many times: processes, the daemon's fds and threads, cgroups, mounts and
//!   files back to what they were at the start.
//!
//! `soak [--rounds R] [--replicas N] [--kills K] [--cycles C] [--seed S]`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_tests::daemon::{Daemon, alive};
use corral_tests::registry::Registry;
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
const SET: &str = "soak";
const CONVERGE: Duration = Duration::from_secs(180);

struct Opts {
    rounds: usize,
    replicas: i64,
    kills: usize,
    cycles: usize,
    seed: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 50,
        replicas: 20,
        kills: 20,
        cycles: 1000,
        seed: Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or("");
        let n: u64 = v
            .parse()
            .unwrap_or_else(|_| die(&format!("{}: expected a number, got {v:?}", w[0])));
        match w[0].as_str() {
            "--rounds" => o.rounds = n as usize,
            "--replicas" => o.replicas = n as i64,
            "--kills" => o.kills = n as usize,
            "--cycles" => o.cycles = n as usize,
            "--seed" => o.seed = n,
            other => die(&format!("unknown option {other}")),
        }
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

/// xorshift64*: reproducible random points from `--seed`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            die(&format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vmis(d: &Daemon) -> Vec<Value> {
    let r = d.req("GET", VMI, None, b"");
    if r.status != 200 {
        return Vec::new();
    }
    r.json()
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn ready(v: &Value) -> bool {
    v["status"]["phase"] == "Running"
        && v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn scale(d: &Daemon, n: i64) -> i64 {
    let body = json!({"spec": {"replicas": n}}).to_string();
    let r = d.req(
        "PATCH",
        &format!("{RS}/{SET}/scale"),
        Some("application/merge-patch+json"),
        body.as_bytes(),
    );
    if r.status != 200 {
        die(&format!("scale to {n}: {} {}", r.status, r.text()));
    }
    n
}

/// VMM processes of this daemon (by their run directory in the command line): pid → VM uid.
fn vmm_processes(run_dir: &Path) -> BTreeMap<u32, String> {
    let vms = run_dir.join("vms");
    let needle = vms.to_string_lossy().to_string();
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.get(1).map(String::as_str) != Some("vmm") || !alive(pid) {
            continue;
        }
        if let Some(sock) = args
            .iter()
            .find(|a| a.starts_with(&needle) && a.ends_with("control.sock"))
        {
            let uid = Path::new(sock)
                .parent()
                .and_then(|p| p.file_name())
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            out.insert(pid, uid);
        }
    }
    out
}

/// The set has converged to `n`: `n` live VMIs, all Ready, one VMM each, no other VMM.
fn converged(d: &Daemon, n: i64) -> Option<()> {
    let vs: Vec<Value> = vmis(d)
        .into_iter()
        .filter(|v| v["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let all = vmis(d);
    if vs.len() as i64 != n || all.len() as i64 != n || !vs.iter().all(ready) {
        return None;
    }
    let uids: BTreeSet<String> = vs
        .iter()
        .filter_map(|v| v["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    let procs = vmm_processes(&d.run_dir);
    let owners: Vec<&String> = procs.values().collect();
    let distinct: BTreeSet<&String> = owners.iter().copied().collect();
    (owners.len() as i64 == n
        && distinct.len() == owners.len()
        && distinct.iter().all(|u| uids.contains(*u)))
    .then_some(())
}

/// Everything that must come back to its starting value after scale cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    // Leaks only grow: each count must end at or below its start.
    vmm_processes: usize,
    daemon_fds: usize,
    daemon_threads: usize,
    cgroups: usize,
    mounts: usize,
    files: usize,
}

fn count_dir(p: &Path, only_dirs: bool) -> usize {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let here = usize::from(!only_dirs || is_dir);
            here + if is_dir {
                count_dir(&e.path(), only_dirs)
            } else {
                0
            }
        })
        .sum()
}

impl Counts {
    fn within(&self, start: &Counts) -> bool {
        self.vmm_processes <= start.vmm_processes
            && self.daemon_fds <= start.daemon_fds
            && self.daemon_threads <= start.daemon_threads
            && self.cgroups <= start.cgroups
            && self.mounts <= start.mounts
            && self.files <= start.files
    }
}

/// The VMs' parent cgroup (`vms` under the daemon's own) in every hierarchy: cgroup2 and each
/// mounted v1 controller.
fn daemon_cgroup_roots(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let rel = path.trim_start_matches('/');
        let bases: Vec<PathBuf> = if ctrl.is_empty() {
            vec!["/sys/fs/cgroup".into(), "/sys/fs/cgroup/unified".into()]
        } else {
            vec![Path::new("/sys/fs/cgroup").join(ctrl.trim_start_matches("name="))]
        };
        out.extend(
            bases
                .into_iter()
                .map(|b| b.join(rel).join("vms"))
                .filter(|p| p.is_dir()),
        );
    }
    out
}

fn counts(d: &Daemon) -> Counts {
    let pid = d.pid();
    Counts {
        vmm_processes: vmm_processes(&d.run_dir).len(),
        daemon_fds: count_dir(Path::new(&format!("/proc/{pid}/fd")), false),
        daemon_threads: count_dir(Path::new(&format!("/proc/{pid}/task")), true),
        cgroups: daemon_cgroup_roots(pid)
            .iter()
            .map(|p| count_dir(p, true))
            .sum(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |t| t.lines().count()),
        files: count_dir(&d.run_dir.join("vms"), false)
            + count_dir(&d.state_dir.join("scratch"), false),
    }
}

fn main() {
    let o = opts();
    let mut rng = Rng(o.seed | 1);
    eprintln!(
        "soak: seed {} ({} rounds of 0->{}->0 with a daemon kill each way, {} VMM kills, {} cycles)",
        o.seed, o.rounds, o.replicas, o.kills, o.cycles
    );
    let reg = Registry::start();
    let oci = corral_tests::corral::fixtures().join("images/testguest/oci");
    reg.push(
        &format!("oci:{}:latest", oci.display()),
        "corral/testguest:latest",
    );
    let mut d = Daemon::start(&["--insecure-registry", reg.addr.as_str()]);
    let yaml = std::fs::read_to_string(
        corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"),
    )
    .unwrap_or_else(|e| die(&format!("tests/fixtures/seed/vmirs.yaml: {e}")))
    .replace(
        "quay.io/kubevirt/cirros-container-disk-demo",
        &reg.reference("corral/testguest:latest"),
    )
    .replace("name: lab05-cirros-replicaset", &format!("name: {SET}"))
    .replace("replicas: 2", "replicas: 0");
    let r = d.req("POST", RS, Some("application/yaml"), yaml.as_bytes());
    if r.status != 201 {
        die(&format!("create the set: {} {}", r.status, r.text()));
    }
    // Warm the image cache so the rounds measure the controllers, not the pull.
    scale(&d, 1);
    wait("the first VM", CONVERGE, || converged(&d, 1));
    scale(&d, 0);
    wait("no VM", CONVERGE, || converged(&d, 0));

    // 1. Daemon kills during scale-ups and scale-downs.
    let started = Instant::now();
    let mut lost_acks = 0;
    let mut worst = Duration::ZERO;
    for round in 0..o.rounds {
        for target in [o.replicas, 0] {
            let acked = scale(&d, target);
            std::thread::sleep(Duration::from_millis(rng.below(1500)));
            d.restart();
            let got = d.get_json(&format!("{RS}/{SET}"))["spec"]["replicas"].as_i64();
            if got != Some(acked) {
                lost_acks += 1;
                eprintln!(
                    "soak: round {round}: acknowledged replicas {acked}, the store says {got:?}"
                );
            }
            let t = Instant::now();
            wait(
                &format!("round {round}: converge to {target}"),
                CONVERGE,
                || converged(&d, target),
            );
            worst = worst.max(t.elapsed());
        }
        eprintln!("soak: round {}/{} ok", round + 1, o.rounds);
    }
    let kill_rounds = started.elapsed();

    // 2. VMM kills in a Ready set.
    let n = o.replicas.clamp(1, 5);
    scale(&d, n);
    wait("the set at N", CONVERGE, || converged(&d, n));
    let mut recoveries = Vec::new();
    for _ in 0..o.kills {
        let procs: Vec<u32> = vmm_processes(&d.run_dir).into_keys().collect();
        let victim = procs[rng.below(procs.len() as u64) as usize];
        let t = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status();
        wait("the set to be Ready at N again", CONVERGE, || {
            (!vmm_processes(&d.run_dir).contains_key(&victim)).then_some(())?;
            converged(&d, n)
        });
        recoveries.push(t.elapsed());
    }
    recoveries.sort();
    scale(&d, 0);
    wait("no VM", CONVERGE, || converged(&d, 0));

    // 3. Scale cycles: everything back to where it started (measured once the cgroups of the
    // killed VMMs are swept: two equal readings 3 s apart, within a minute).
    let settled = |d: &Daemon| {
        let t = Instant::now();
        let mut last = counts(d);
        loop {
            std::thread::sleep(Duration::from_secs(3));
            let now = counts(d);
            if now == last || t.elapsed() > Duration::from_secs(60) {
                return now;
            }
            last = now;
        }
    };
    let before = settled(&d);
    let t = Instant::now();
    let (mut up, mut down) = (Duration::ZERO, Duration::ZERO);
    for i in 0..o.cycles {
        let t0 = Instant::now();
        scale(&d, 2);
        wait(&format!("cycle {i}: 2 VMs"), CONVERGE, || converged(&d, 2));
        let t1 = Instant::now();
        if i == 0 {
            eprintln!(
                "soak: with 2 VMs: {:?} (cgroups under {:?})",
                counts(&d),
                daemon_cgroup_roots(d.pid())
            );
        }
        scale(&d, 0);
        wait(&format!("cycle {i}: no VM"), CONVERGE, || converged(&d, 0));
        up += t1 - t0;
        down += t1.elapsed();
        if (i + 1) % 100 == 0 || i < 2 {
            eprintln!(
                "soak: cycle {}/{}: {:?}; up {} ms, down {} ms on average",
                i + 1,
                o.cycles,
                counts(&d),
                up.as_millis() / (i as u128 + 1),
                down.as_millis() / (i as u128 + 1)
            );
        }
    }
    // Threads and fds of a tokio daemon settle after idle blocking threads time out (10 s).
    let settle = Instant::now();
    let mut after = counts(&d);
    while !after.within(&before) && settle.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        after = counts(&d);
    }
    let cycles = t.elapsed();

    let ms = |d: Duration| d.as_millis();
    let pct = |p: usize| {
        recoveries
            .get((recoveries.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!("| fault / soak run (seed {}) | result |", o.seed);
    println!("|---|---|");
    println!(
        "| daemon `kill -9` at random points of {} scale-ups 0→{} and {} scale-downs | {} lost acknowledged writes, 0 duplicate VMIs, 0 orphan VMMs; slowest convergence after restart {} ms; {} s in all |",
        o.rounds,
        o.replicas,
        o.rounds,
        lost_acks,
        ms(worst),
        kill_rounds.as_secs()
    );
    println!(
        "| `kill -9` of a random VMM of a Ready set of {n}, {} times | back to {n}/{n} Ready: median {} ms, p90 {} ms, max {} ms |",
        o.kills,
        ms(pct(50)),
        ms(pct(90)),
        ms(pct(100))
    );
    println!(
        "| {} scale cycles 0→2→0 | VMMs {}→{}, daemon fds {}→{}, threads {}→{}, cgroups {}→{}, mounts {}→{}, files {}→{}; {} s |",
        o.cycles,
        before.vmm_processes,
        after.vmm_processes,
        before.daemon_fds,
        after.daemon_fds,
        before.daemon_threads,
        after.daemon_threads,
        before.cgroups,
        after.cgroups,
        before.mounts,
        after.mounts,
        before.files,
        after.files,
        cycles.as_secs()
    );
    if lost_acks > 0 || !after.within(&before) {
        eprintln!("soak: FAILED (lost acknowledged writes, or counts not back to the start)");
        std::process::exit(1);
    }
}
