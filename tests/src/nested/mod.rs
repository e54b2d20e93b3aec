//! The nested tier: real Linux guests on a host whose `/dev/kvm` cannot run them (PVM).
//!
//! QEMU's software emulator implements AMD SVM with nested paging, so an "L1" Linux booted with
//! `qemu-system-x86_64 -accel tcg -cpu EPYC,+svm` loads `kvm-amd` and has a real `/dev/kvm`.
//! corral runs inside L1 and boots real Linux "L2" guests there (the CirrOS-like image).
//!
//! A scenario is a shell script, `tests/nested/<name>.sh`, that L1's `/init`
//! (`tests/nested/init.sh`) runs with `tests/nested/lib.sh` sourced and a deadline. It talks
//! to the harness through markers on L1's serial console:
//! `NESTED-L1-UP` (L1's init runs), `NESTED-VALUE key=value` (a measurement),
//! `NESTED-FAIL why` and `NESTED-EXIT code` (always last; L1 then powers itself off). What the
//! scenario put under L1's `/out` (L2 console logs, daemon log, ...) comes back on a raw
//! virtio disk as a tar and is unpacked into `target/nested/<name>/out/`, next to `l1.log`
//! (L1's serial log with host timestamps) and `qemu.stderr`.
//!
//! Threads: the caller's, plus one reading QEMU's stdout.

pub mod cpio;
pub mod image;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::{Contents, Kernel, L1_MODULES, L1_NET_MODULES};

/// One scenario run in its own L1 machine.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `tests/nested/<name>.sh`; also the results directory `target/nested/<name>/`.
    pub name: String,
    /// L1's own deadline for the script (it then fails the scenario and powers off).
    pub deadline: Duration,
    /// L1 memory in MiB.
    pub memory_mib: u32,
    /// L1 vCPUs (each is a host thread under TCG). One by default: with two, a blocked L2 vCPU
    /// thread in L1 is now and then never woken (its timer or SIPI is lost) whenever L1's two
    /// vCPUs do not run at the same time on the host: every L2 boot stalls under
    /// `-accel tcg,thread=single`, with `corral vmm` and QEMU microvm alike, and some do on a
    /// contended host. With one L1 vCPU no L2 boot stalled, even single-threaded.
    pub cpus: u32,
    /// Also put QEMU (the microvm peer) into L1.
    pub with_qemu: bool,
    /// Also put what pod networks need into L1: the CNI plugins, nft, iptables (nft backend,
    /// for the bridge plugin's ipMasq), iperf3, and the modules `/etc/l1-net-modules` lists.
    pub with_pod_network: bool,
    /// `NESTED_<KEY>=<value>` in the script's environment.
    pub env: Vec<(String, String)>,
    /// Raw disk images L1 gets read-only, after the results disk: `/dev/vdb`, `/dev/vdc`, ...
    /// (for fixtures too large for L1's initramfs, which lives in its memory).
    pub disks: Vec<PathBuf>,
}

/// L1's vCPU count: the scenario's, or `NESTED_L1_CPUS` (for experiments).
fn l1_cpus(s: &Scenario) -> u32 {
    std::env::var("NESTED_L1_CPUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(s.cpus)
}

impl Scenario {
    pub fn new(name: &str) -> Scenario {
        Scenario {
            name: name.to_string(),
            deadline: Duration::from_secs(240),
            memory_mib: 2048,
            cpus: 1,
            with_qemu: false,
            with_pod_network: false,
            env: Vec::new(),
            disks: Vec::new(),
        }
    }

    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    pub fn with_qemu(mut self) -> Self {
        self.with_qemu = true;
        self
    }

    pub fn with_pod_network(mut self) -> Self {
        self.with_pod_network = true;
        self
    }

    /// L1's memory in MiB.
    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// A read-only disk for L1 (see [`Scenario::disks`]).
    pub fn disk(mut self, image: &Path) -> Self {
        assert!(
            image.exists(),
            "{}: missing (tests/fixtures/build.sh)",
            image.display()
        );
        self.disks.push(image.to_path_buf());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// How a scenario ended.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// `target/nested/<name>/`.
    pub dir: PathBuf,
    /// The code in `NESTED-EXIT` (None: L1 never got that far).
    pub exit: Option<i32>,
    /// `NESTED-FAIL` lines.
    pub failures: Vec<String>,
    /// `NESTED-VALUE` pairs.
    pub values: BTreeMap<String, String>,
    /// L1's serial log.
    pub l1_log: String,
    /// Seconds from QEMU's start to `NESTED-L1-UP`.
    pub l1_up: Option<f64>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.exit == Some(0) && self.failures.is_empty()
    }

    /// Panics with the reasons and the end of L1's log unless the scenario passed.
    pub fn assert_passed(&self) {
        if self.passed() {
            return;
        }
        let tail: Vec<&str> = self.l1_log.lines().rev().take(90).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "nested scenario {} failed (exit {:?}): {:?}\nlogs: {}\n--- last lines of L1's console ---\n{}",
            self.name,
            self.exit,
            self.failures,
            self.dir.display(),
            tail.join("\n")
        );
    }

    /// A file the scenario left under L1's `/out`.
    pub fn file(&self, rel: &str) -> String {
        let p = self.dir.join("out").join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A `NESTED-VALUE`, parsed.
    pub fn value<T: std::str::FromStr>(&self, key: &str) -> T {
        let v = self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("{}: no NESTED-VALUE {key}", self.name));
        v.parse()
            .unwrap_or_else(|_| panic!("{}: NESTED-VALUE {key}={v} does not parse", self.name))
    }
}

/// `target/nested/`.
pub fn root() -> PathBuf {
    crate::bin::workspace().join("target/nested")
}

/// Says something in the test output even when libtest captures `eprintln!`.
pub fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The `corral` binary without its debug sections (half the size; L1 unpacks every byte of
/// its initramfs under emulation). Re-made when the binary changes.
fn stripped_corral(cache: &Path) -> PathBuf {
    let src = crate::bin::corral();
    let dst = cache.join("corral");
    let newer = |a: &Path, b: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (m(a), m(b)) {
            (Some(a), Some(b)) => a > b,
            _ => true,
        }
    };
    if newer(&src, &dst) {
        std::fs::create_dir_all(cache).unwrap();
        let tmp = cache.join("corral.tmp");
        let st = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&src)
            .arg(&tmp)
            .status()
            .expect("objcopy (apt binutils)");
        assert!(st.success(), "objcopy --strip-debug {}", src.display());
        std::fs::rename(&tmp, &dst).unwrap();
    }
    dst
}

/// `nested-timer`, next to the test executables (cargo builds a package's binaries before its
/// integration tests); built here when missing.
fn timer() -> PathBuf {
    let profile = crate::bin::profile_dir();
    let bin = profile.join("nested-timer");
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(crate::bin::workspace()).args([
            "build",
            "-p",
            "corral-tests",
            "--bin",
            "nested-timer",
        ]);
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().is_ok_and(|s| s.success()),
            "cargo build --bin nested-timer"
        );
    }
    bin
}

/// Everything L1 gets.
fn contents(s: &Scenario, kernel: &Kernel, cache: &Path) -> Contents {
    let ws = crate::bin::workspace();
    let fx = crate::bin::fixtures();
    let mut c = Contents::default();
    for d in [
        "dev", "proc", "sys", "tmp", "run", "root", "mnt", "out", "var/lib", "etc", "usr/sbin",
        "sbin",
    ] {
        c.dir(d);
    }
    image::busybox(&mut c);
    c.file("init", 0o755, &ws.join("tests/nested/init.sh"));
    let nested = ws.join("tests/nested");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&nested)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    for p in scripts {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        c.file(&format!("nested/{name}"), 0o755, &p);
    }
    assert!(
        nested.join(format!("{}.sh", s.name)).exists(),
        "no scenario tests/nested/{}.sh",
        s.name
    );
    // Kernel modules, flat, and the order init loads them in.
    let mdir = format!("lib/modules/{}", kernel.version);
    let mut load = String::new();
    for m in L1_MODULES {
        if let Some(p) = kernel.module(m, cache) {
            c.file(&format!("{mdir}/{m}.ko"), 0o644, &p);
            load.push_str(m);
            load.push('\n');
        }
    }
    c.bytes("etc/l1-modules", 0o644, load);
    // corral and the tools the scripts use.
    let corral = stripped_corral(cache);
    c.file("usr/local/bin/corral", 0o755, &corral);
    c.libraries(&corral);
    c.file("usr/local/bin/nested-timer", 0o755, &timer());
    for p in ["/usr/bin/curl", "/usr/bin/jq"] {
        c.program(Path::new(p));
    }
    if s.with_qemu {
        c.program(Path::new("/usr/bin/qemu-system-x86_64"));
        // The firmware microvm loads, from QEMU's search path (`qemu-system-x86_64 -L help`).
        for f in [
            "bios-microvm.bin",
            "pvh.bin",
            "linuxboot_dma.bin",
            "kvmvapic.bin",
        ] {
            let p = ["/usr/share/qemu", "/usr/share/seabios"]
                .iter()
                .map(|d| Path::new(d).join(f))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("QEMU firmware {f} not found"));
            c.file(&p.display().to_string(), 0o644, &p);
        }
    }
    if s.with_pod_network {
        pod_network(&mut c, kernel, cache);
    }
    c.file(
        "etc/ssl/certs/ca-certificates.crt",
        0o644,
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
    );
    c.bytes("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    c.bytes("etc/group", 0o644, "root:x:0:\nkvm:x:993:\n");
    c.bytes(
        "etc/hosts",
        0o644,
        "127.0.0.1 localhost l1\n::1 localhost\n",
    );
    c.bytes(
        "etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nhosts: files\n",
    );
    // Fixtures: the CirrOS-like container disk as a docker archive, the L2 kernel's bzImage
    // (the same package as L1's), the seed lab's YAML.
    c.file(
        "nested/fixtures/cirros-like.tar",
        0o644,
        &fx.join("images/cirros-like/docker-archive.tar"),
    );
    image::scenario_fixtures(&mut c, &s.name, &fx);
    c.file(
        "nested/fixtures/vmlinuz",
        0o644,
        &Kernel::find(&fx.join("kernel-cloud")).vmlinuz(),
    );
    c.file(
        "nested/fixtures/vmirs.yaml",
        0o644,
        &ws.join("tests/fixtures/seed/vmirs.yaml"),
    );
    c.file(
        "nested/fixtures/hpa.yaml",
        0o644,
        &ws.join("examples/hpa.yaml"),
    );
    // The boot benchmark's seed, as files (corral) and as the FAT image corral's seed builder
    // makes of them (QEMU).
    let seed = [
        (
            "meta-data",
            "instance-id: iid-bench-0001\nlocal-hostname: bench\n",
        ),
        ("user-data", "#cloud-config\n"),
    ];
    let files: Vec<(String, Vec<u8>)> = seed
        .iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect();
    for (n, t) in &files {
        c.bytes(&format!("nested/fixtures/bench-seed/{n}"), 0o644, t.clone());
    }
    c.bytes(
        "nested/fixtures/bench-seed.img",
        0o644,
        vmm::seed::image(&files).expect("seed image"),
    );
    c
}

/// The pod network's tools in L1: CNI plugins where corral looks for them, nft, iptables (the
/// bridge plugin's ipMasq runs it; Debian's is the nft backend, whose extensions are loaded
/// with dlopen), iperf3, and the kernel modules, loaded by `net_modules` in lib.sh.
fn pod_network(c: &mut Contents, kernel: &Kernel, cache: &Path) {
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let p = Path::new("/usr/lib/cni").join(plugin);
        assert!(
            p.exists(),
            "{}: missing (apt containernetworking-plugins)",
            p.display()
        );
        c.file(&p.display().to_string(), 0o755, &p);
    }
    for p in [
        "/usr/sbin/nft",
        "/usr/sbin/xtables-nft-multi",
        "/usr/bin/iperf3",
    ] {
        c.program(Path::new(p));
    }
    // iproute2's ip (corral runs `ip -batch`), ahead of busybox's applet on PATH.
    c.file("usr/local/bin/ip", 0o755, Path::new("/usr/bin/ip"));
    c.libraries(Path::new("/usr/bin/ip"));
    for name in ["iptables", "iptables-save", "iptables-restore", "ip6tables"] {
        c.symlink(&format!("usr/sbin/{name}"), "xtables-nft-multi");
    }
    let xt = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    let mut exts: Vec<PathBuf> = std::fs::read_dir(xt)
        .unwrap_or_else(|e| panic!("{}: {e} (apt iptables)", xt.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    exts.sort();
    for p in exts {
        let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        c.file(&p.display().to_string(), 0o644, &real);
    }
    let mdir = format!("lib/modules/{}", kernel.version);
    let mut load = String::new();
    for m in L1_NET_MODULES {
        if let Some(p) = kernel.module(m, cache) {
            c.file(&format!("{mdir}/{m}.ko"), 0o644, &p);
            load.push_str(m);
            load.push('\n');
        }
    }
    c.bytes("etc/l1-net-modules", 0o644, load);
    // bench/net: iperf3 for the guest on its own disk, and a seed whose user-data mounts it
    // and starts `iperf3 -s` (as files for corral, as the FAT image for QEMU). iperf3 keeps
    // its stream buffers in files under $TMPDIR; the guest's /tmp is on its read-only root.
    let fx = crate::bin::fixtures();
    c.file(
        "nested/fixtures/net-tools.ext4",
        0o644,
        &fx.join("images/net-tools/disk.ext4"),
    );
    let seed = [
        (
            "meta-data",
            "instance-id: iid-bench-net\nlocal-hostname: bench-net\n",
        ),
        (
            "user-data",
            "#!/bin/sh\n\
             mkdir -p /run/tools && mount -o ro LABEL=net-tools /run/tools || exit 1\n\
             export TMPDIR=/run\n\
             echo NET-FEATURES $(cat /sys/class/net/eth0/device/features)\n\
             /run/tools/lib/ld-linux-x86-64.so.2 --library-path /run/tools/lib \
             /run/tools/bin/iperf3 -s -D --logfile /run/iperf3.log && echo IPERF3-SERVER-UP\n",
        ),
    ];
    let files: Vec<(String, Vec<u8>)> = seed
        .iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect();
    for (n, t) in &files {
        c.bytes(&format!("nested/fixtures/net-seed/{n}"), 0o644, t.clone());
    }
    c.bytes(
        "nested/fixtures/net-seed.img",
        0o644,
        vmm::seed::image(&files).expect("seed image"),
    );
}

/// What one L1 boot printed.
struct Boot {
    exit: Option<i32>,
    failures: Vec<String>,
    values: BTreeMap<String, String>,
    log: String,
    l1_up: Option<f64>,
    /// Killed at the hard deadline.
    hung: bool,
}

/// Runs `s` in a fresh L1 and returns how it ended (never panics on a scenario failure:
/// call [`Outcome::assert_passed`]). An L1 that fails by itself (see [`l1_fault`]) is booted
/// once more, and that is said and counted in `target/nested/retries.log`.
pub fn run(s: &Scenario) -> Outcome {
    let start = Instant::now();
    // L1's kernel: the fixtures' cloud kernel package, or another unpacked kernel package
    // (`NESTED_L1_KERNEL=DIR`, for trying L1 kernels).
    let kernel = Kernel::find(
        &std::env::var_os("NESTED_L1_KERNEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::bin::fixtures().join("kernel-cloud")),
    );
    let cache = root().join("cache");
    let contents = contents(s, &kernel, &cache);
    let initrd = image::cached(&cache, &contents);
    let dir = root().join(&s.name);
    let mut boot = boot_l1(s, &kernel, &initrd, &dir);
    // QEMU's emulated SVM sometimes breaks L1 itself (a panic, a reset, a hang); that run says
    // nothing about corral, so it is booted once more, and that is said and counted.
    if let Some(why) = l1_fault(&boot) {
        let line = format!("nested {}: L1 failed ({why}); booting it once more", s.name);
        announce(&line);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root().join("retries.log"))
            .and_then(|mut f| writeln!(f, "{} {line}", chrono_like_now()));
        let _ = std::fs::rename(
            dir.join("l1.log"),
            root().join(format!("{}.l1-failed.log", s.name)),
        );
        boot = boot_l1(s, &kernel, &initrd, &dir);
    }
    let out = Outcome {
        name: s.name.clone(),
        dir,
        exit: boot.exit,
        failures: boot.failures,
        values: boot.values,
        l1_log: boot.log,
        l1_up: boot.l1_up,
        elapsed: start.elapsed(),
    };
    announce(&format!(
        "nested {}: {} in {:.1} s (L1 init after {}), values {:?}",
        s.name,
        if out.passed() { "PASS" } else { "FAIL" },
        out.elapsed.as_secs_f64(),
        out.l1_up
            .map_or("never".to_string(), |t| format!("{t:.1} s")),
        out.values
    ));
    out
}

/// Why L1 itself failed, if it did: it never ran its init, its kernel panicked or oopsed, it
/// reset (QEMU exits 0 on a reset with -no-reboot) or it hung, before the scenario ended.
fn l1_fault(b: &Boot) -> Option<String> {
    if b.l1_up.is_none() {
        return Some(
            b.log
                .lines()
                .find(|l| l.contains("Kernel panic") || l.contains("divide error"))
                .map_or("no NESTED-L1-UP".to_string(), |l| l.trim().to_string()),
        );
    }
    if b.exit.is_some() {
        return None;
    }
    let oops = b.log.lines().find(|l| {
        [
            "Kernel panic",
            "BUG: ",
            "Oops: ",
            "general protection fault",
        ]
        .iter()
        .any(|m| l.contains(m))
    });
    Some(match (oops, b.hung) {
        (Some(l), _) => format!("kernel: {}", l.trim()),
        (None, true) => "hung".to_string(),
        (None, false) => "reset without a panic".to_string(),
    })
}

/// Seconds since the epoch, for the retries log.
fn chrono_like_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("[{t}]")
}

fn boot_l1(s: &Scenario, kernel: &Kernel, initrd: &Path, dir: &Path) -> Boot {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    // The results disk: L1 writes a tar of /out onto it as a raw device.
    let results = dir.join("results.img");
    File::create(&results).unwrap().set_len(512 << 20).unwrap();
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 nested.scenario={} nested.deadline={}",
        s.name,
        s.deadline.as_secs()
    );
    // Extra L1 kernel parameters, for debugging L1 itself.
    if let Ok(extra) = std::env::var("NESTED_L1_APPEND") {
        append.push(' ');
        append.push_str(&extra);
    }
    for (k, v) in &s.env {
        assert!(
            !v.contains(char::is_whitespace),
            "nested env {k}: no spaces"
        );
        append.push_str(&format!(" nested.env.{k}={v}"));
    }
    let mut extra_disks = Vec::new();
    for d in &s.disks {
        extra_disks.push("-drive".to_string());
        extra_disks.push(format!(
            "file={},format=raw,if=virtio,readonly=on",
            d.display()
        ));
    }
    let mut qemu = Command::new("qemu-system-x86_64")
        .arg("-accel")
        .arg(std::env::var("NESTED_ACCEL").unwrap_or_else(|_| "tcg".into()))
        .args(["-M", "pc", "-cpu"])
        .arg(std::env::var("NESTED_CPU").unwrap_or_else(|_| "EPYC,+svm".into()))
        .args([
            "-smp",
            &l1_cpus(s).to_string(),
            "-m",
            &s.memory_mib.to_string(),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                results.display()
            ),
        ])
        .args(&extra_disks)
        .args(["-device", "virtio-rng-pci"])
        // Extra QEMU flags for debugging L1 itself, e.g. "-d cpu_reset,guest_errors -D /tmp/q.log".
        .args(
            std::env::var("NESTED_QEMU_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("qemu.stderr")).unwrap())
        .spawn()
        .expect("qemu-system-x86_64 (.ci/install-deps.sh installs qemu-system-x86)");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = qemu.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let t0 = Instant::now();
    // L1 enforces the deadline itself; this one is for an L1 that hangs.
    let hard = s.deadline + Duration::from_secs(120);
    let mut log_file = File::create(dir.join("l1.log")).unwrap();
    let mut b = Boot {
        exit: None,
        failures: Vec::new(),
        values: BTreeMap::new(),
        log: String::new(),
        l1_up: None,
        hung: false,
    };
    loop {
        let left = hard.saturating_sub(t0.elapsed());
        if left.is_zero() {
            b.failures.push(format!(
                "L1 still running {} s after start: killed",
                hard.as_secs()
            ));
            let _ = qemu.kill();
            b.hung = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let t = t0.elapsed().as_secs_f64();
                let stamped = format!("[{t:8.3}] {line}");
                eprintln!("[nested {}] {stamped}", s.name);
                let _ = writeln!(log_file, "{stamped}");
                b.log.push_str(&stamped);
                b.log.push('\n');
                let l = line.trim_start();
                if l.starts_with("NESTED-L1-UP") {
                    b.l1_up = Some(t);
                } else if let Some(v) = l.strip_prefix("NESTED-VALUE ") {
                    if let Some((k, v)) = v.split_once('=') {
                        b.values.insert(k.trim().to_string(), v.trim().to_string());
                    }
                } else if let Some(f) = l.strip_prefix("NESTED-FAIL ") {
                    b.failures.push(f.to_string());
                } else if let Some(c) = l.strip_prefix("NESTED-EXIT ") {
                    b.exit = c.trim().parse().ok();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    match qemu.wait() {
        Ok(st) if st.success() => {}
        Ok(st) => b.failures.push(format!("QEMU (L1) ended with {st}")),
        Err(e) => b.failures.push(format!("waiting for QEMU: {e}")),
    }
    let _ = reader.join();
    // The results: a tar written onto the raw disk (an all-zero disk is an empty archive).
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&results)
        .arg("-C")
        .arg(dir.join("out"))
        .stderr(Stdio::piped())
        .output()
        .expect("tar");
    if !st.status.success() {
        b.failures.push(format!(
            "results disk: tar: {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
    }
    let _ = std::fs::remove_file(&results);
    b
}
