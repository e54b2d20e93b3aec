//! The test guest's network mode (tests/guest/src/net) end to end, without corral's VMM: QEMU's
//! software emulation (`-M microvm -accel tcg`, modern virtio-mmio) boots `testguest.elf` with a
//! `virtio-net-device` on user-mode networking (slirp: DHCP server, guest 10.0.2.15, gateway
//! 10.0.2.2) and a NoCloud seed on a `virtio-blk-device`. The guest's ports 80 and 7 are
//! forwarded to loopback ports of the host; no tap, no bridge, nothing outside loopback.
//!
//! Checks: the MAC read from config space, the DHCP lease line, `GET /` (named by the seed's `local-hostname`), `GET
//! /burn?ms=50` (takes at least 50 ms), a 404, two requests on one keep-alive connection, TCP
//! echo round trips and 1 MiB of bulk echo, then 200 sequential `Connection: close` requests and 200 keep-alive
//! requests, timed; their rates are printed (`guest_net_qemu: http ...`) and appended to
//! `target/nested/guest-net-qemu.log`; then the idle guest must cost QEMU < 10% of a core.
//! A second boot uses `net=static:...` and no seed. A boot with no `net=` option at all (the
//! default mode, as corral's daemon boots the guest) must bring the network up with DHCP by
//! itself, with the serial console still taking commands (`echo`, `burn` stopped by Enter,
//! `net get` to an HTTP server on the host's loopback via slirp's 10.0.2.2, `poweroff`);
//! `net=off` keeps the default mode off the network (`net get` answers `error=no network`).
//! Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_tests::vmm::testguest;

const HOSTNAME: &str = "corral-net-e2e";
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const REQUESTS: usize = 200;

/// A QEMU process whose serial console is collected by a reader thread; killed on drop.
struct Qemu {
    child: Child,
    /// The guest's serial console input.
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
}

impl Qemu {
    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The first console line starting with `prefix`, waiting up to `timeout`.
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.output().lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < end,
                "no {prefix:?} line within {timeout:?}; console:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for a console line equal to `line`.
    fn wait_exact(&self, line: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.output().lines().any(|l| l == line) {
            assert!(
                Instant::now() < end,
                "no line {line:?} within {timeout:?}; console:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `line` and Enter on the guest's serial console.
    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago (QEMU binds it for the forward).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A NoCloud `cidata` FAT image naming the guest (mkfs.vfat + mcopy, as images_qemu does).
fn seed(dir: &Path) -> PathBuf {
    let meta = dir.join("meta-data");
    std::fs::write(
        &meta,
        format!("instance-id: iid-net-e2e\nlocal-hostname: {HOSTNAME}\n"),
    )
    .unwrap();
    let img = dir.join("seed.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let st = Command::new("mkfs.vfat")
        .args(["-n", "CIDATA"])
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .expect("mkfs.vfat (apt dosfstools)");
    assert!(st.success(), "mkfs.vfat");
    let st = Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg(&meta)
        .arg("::/")
        .status()
        .expect("mcopy (apt mtools)");
    assert!(st.success(), "mcopy");
    img
}

/// Boots the guest with `cmdline`, the seed image if any, `extra` QEMU arguments, and ports 80
/// and 7 forwarded.
fn boot(cmdline: &str, seed: Option<&Path>, extra: &[&str], http: u16, echo: u16) -> Qemu {
    let netdev = format!(
        "user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:{http}-:80,hostfwd=tcp:127.0.0.1:{echo}-:7"
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(extra);
    if let Some(seed) = seed {
        cmd.args([
            "-drive",
            &format!(
                "id=seed,file={},format=raw,if=none,readonly=on",
                seed.display()
            ),
            "-device",
            "virtio-blk-device,drive=seed",
        ]);
    }
    let mut child = cmd
        .args(["-M", "microvm", "-accel", "tcg", "-m", "128", "-smp", "1"])
        .args([
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        // Modern (version 2) virtio-mmio transports: the guest drives no legacy devices.
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-kernel")
        .arg(testguest())
        .args(["-append", cmdline])
        .args([
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-device,netdev=n0,mac=02:00:00:c0:ff:ee",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 (apt qemu-system-x86)");
    let out = Arc::new(Mutex::new(String::new()));
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(line.trim_end_matches('\r'));
            s.push('\n');
        }
    });
    Qemu { child, stdin, out }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one response (head + Content-Length body): (status code, head, body).
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, head, body)
}

/// One request on a fresh connection with `Connection: close`; the server must close after it.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = connect(port);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, head, body) = read_response(&mut s);
    assert!(head.contains("Connection: close"), "{head}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("server closes");
    assert!(rest.is_empty(), "bytes after the body: {rest:?}");
    (status, body)
}

/// The guest's `GET /stats` counters.
fn stats(port: u16) -> std::collections::HashMap<String, u64> {
    let (status, body) = get(port, "/stats");
    assert_eq!(status, 200);
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Request rates and the guest's own cost per request (from `/stats`).
struct Rates {
    close_rps: f64,
    keepalive_rps: f64,
    /// Guest µs not halted per request: one-connection, keep-alive.
    close_busy_us: f64,
    keepalive_busy_us: f64,
    /// Requests the guest answered from the first `/stats` to the last (excluded): both runs
    /// and the middle `/stats`.
    served: u64,
}

impl Rates {
    fn line(&self) -> String {
        format!(
            "http requests={REQUESTS} close_rps={:.0} keepalive_rps={:.0} close_busy_us={:.1} keepalive_busy_us={:.1}",
            self.close_rps, self.keepalive_rps, self.close_busy_us, self.keepalive_busy_us
        )
    }
}

/// REQUESTS sequential one-request connections, then REQUESTS requests on one connection,
/// bounded by 120 s each.
fn rates(http: u16) -> Rates {
    let s0 = stats(http);
    let t = Instant::now();
    for i in 0..REQUESTS {
        assert_eq!(get(http, "/").0, 200, "request {i}");
        assert!(t.elapsed() < Duration::from_secs(120), "too slow at {i}");
    }
    let close_rps = REQUESTS as f64 / t.elapsed().as_secs_f64();
    let s1 = stats(http);
    let mut s = connect(http);
    let t = Instant::now();
    for i in 0..REQUESTS {
        s.write_all(b"GET / HTTP/1.1\r\nHost: guest\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut s).0, 200, "request {i}");
        assert!(t.elapsed() < Duration::from_secs(120), "too slow at {i}");
    }
    let keepalive_rps = REQUESTS as f64 / t.elapsed().as_secs_f64();
    drop(s);
    let s2 = stats(http);
    // Each /stats request is itself one one-connection request (counted in the next window).
    let per = |a: &std::collections::HashMap<String, u64>,
               b: &std::collections::HashMap<String, u64>| {
        (b["busy_us"] - a["busy_us"]) as f64 / REQUESTS as f64
    };
    Rates {
        close_rps,
        keepalive_rps,
        close_busy_us: per(&s0, &s1),
        keepalive_busy_us: per(&s1, &s2),
        served: s2["requests"] - s0["requests"],
    }
}

/// User + system CPU ticks of process `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn record(line: &str) {
    println!("{line}");
    let dir = corral_tests::nested::root();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("guest-net-qemu.log"))
        .and_then(|mut f| writeln!(f, "{line}"));
}

#[test]
fn testguest_network_mode_under_qemu_tcg() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed(dir.path());
    let (http, echo) = (free_port(), free_port());
    let vm = boot("console=ttyS0 net=dhcp", Some(&seed), &[], http, echo);

    let lease = vm.wait_line("testguest: net dhcp ", Duration::from_secs(60));
    assert_eq!(
        lease,
        "testguest: net dhcp ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3",
        "console:\n{}",
        vm.output()
    );
    vm.wait_line("testguest: net listening echo=7 http=80", IO_TIMEOUT);
    let out = vm.output();
    // The MAC comes from the device's config space (QEMU's default would be 52:54:00:12:34:56).
    assert!(out.contains(" mac=02:00:00:c0:ff:ee "), "{out}");
    assert!(
        out.contains("testguest: cidata dev=") && out.contains("instance-id=iid-net-e2e"),
        "{out}"
    );

    assert_eq!(get(http, "/"), (200, format!("hello from {HOSTNAME}\n")));
    let t = Instant::now();
    assert_eq!(
        get(http, "/burn?ms=50"),
        (200, format!("burned 50 ms on {HOSTNAME}\n"))
    );
    let burn = t.elapsed();
    assert!(burn >= Duration::from_millis(50), "burn took {burn:?}");
    assert_eq!(get(http, "/nope").0, 404);

    // Keep-alive: two requests on one connection, the second after the first answer.
    let mut s = connect(http);
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: guest\r\n\r\n")
            .unwrap();
        let (status, head, body) = read_response(&mut s);
        assert_eq!(status, 200);
        assert!(head.contains("Connection: keep-alive"), "{head}");
        assert_eq!(body, format!("hello from {HOSTNAME}\n"));
    }
    drop(s);

    // TCP echo: 20 round trips of 1 KiB, then the guest closes after our FIN.
    let mut s = connect(echo);
    let t = Instant::now();
    for i in 0..20u8 {
        let msg = vec![b'a' + i; 1024];
        s.write_all(&msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg, "echo round trip {i}");
    }
    let echo_rt = t.elapsed() / 20;

    // Bulk: 1 MiB through the echo server while reading it back (windows fill, transmit slots
    // run out, receive buffers recycle), byte-exact.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut writer = s.try_clone().unwrap();
    let to_send = data.clone();
    let t = Instant::now();
    let sender = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).unwrap();
    sender.join().unwrap();
    let bulk_mb_s = data.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    assert!(got == data, "bulk echo differs");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let r = rates(http);
    assert_eq!(r.served, 2 * REQUESTS as u64 + 2);

    // Idle: the guest halts until a frame or its next TCP/DHCP deadline, so QEMU (TCG) itself
    // should be nearly idle too (measured ~0.3% of a core).
    std::thread::sleep(Duration::from_millis(500));
    let hz = corral_tests::vmm::ticks_per_second();
    let before = cpu_ticks(vm.child.id());
    std::thread::sleep(Duration::from_secs(3));
    let idle_ticks = cpu_ticks(vm.child.id()) - before;
    assert!(
        idle_ticks * 10 < 3 * hz,
        "idle guest cost QEMU {idle_ticks} ticks in 3 s (hz {hz})"
    );
    record(&format!(
        "guest_net_qemu: {} burn50_ms={} echo_rt_us={} echo_bulk_mb_s={bulk_mb_s:.1} idle_cpu_pct={:.1} (QEMU TCG, slirp)",
        r.line(),
        burn.as_millis(),
        echo_rt.as_micros(),
        idle_ticks as f64 * 100.0 / (3 * hz) as f64
    ));
}

/// A static address from the command line (no DHCP) and no seed: the guest calls itself
/// `testguest`.
#[test]
fn static_address_without_a_seed() {
    let (http, echo) = (free_port(), free_port());
    let vm = boot(
        "console=ttyS0 net=static:10.0.2.15/24,gw=10.0.2.2",
        None,
        &[],
        http,
        echo,
    );
    assert_eq!(
        vm.wait_line("testguest: net static ", Duration::from_secs(60)),
        "testguest: net static ip=10.0.2.15/24 gw=10.0.2.2 dns=none"
    );
    vm.wait_line("testguest: net listening", IO_TIMEOUT);
    assert_eq!(get(http, "/"), (200, "hello from testguest\n".to_string()));
    let mut s = connect(echo);
    s.write_all(b"static echo").unwrap();
    let mut got = [0u8; 11];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"static echo");
    assert!(!vm.output().contains("net dhcp"), "{}", vm.output());
}

/// The same server with the guest slowed to PVM's pace: `-icount shift=8,align=on` makes every
/// guest instruction 256 ns of virtual time and keeps virtual time in step with real time, so
/// the guest runs ~3.9 M instructions/s (PVM's emulator: ~3.6-4 M/s; its exits cost extra and are
/// not modelled). Under icount the TSC counts virtual time, so `busy_us` / 0.256 is the number of
/// guest instructions per request. Prints the rates (`guest_net_qemu: pvm-pace ...`).
#[test]
fn rates_at_pvm_instruction_pace() {
    let (http, echo) = (free_port(), free_port());
    let vm = boot(
        "console=ttyS0 net=static:10.0.2.15/24,gw=10.0.2.2",
        None,
        &["-icount", "shift=8,align=on,sleep=on"],
        http,
        echo,
    );
    vm.wait_line("testguest: net listening", Duration::from_secs(120));
    assert_eq!(get(http, "/"), (200, "hello from testguest\n".to_string()));
    let r = rates(http);
    record(&format!(
        "guest_net_qemu: pvm-pace {} close_kinstr={:.1} keepalive_kinstr={:.1} (QEMU TCG -icount shift=8,align=on)",
        r.line(),
        r.close_busy_us / 256.0,
        r.keepalive_busy_us / 256.0
    ));
}

/// A one-answer-per-connection HTTP server on a loopback port for the guest's `net get`
/// (slirp forwards the guest's 10.0.2.2 to the host's loopback): answers `from the host` and
/// records each request head.
fn host_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut b), Ok(1)) {
                head.push(b[0]);
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_string());
            let _ = s.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nfrom the host\n",
            );
        }
    });
    (port, seen)
}

/// QEMU's CPU use (% of one core) over `secs` seconds.
fn cpu_pct(vm: &Qemu, secs: u64) -> f64 {
    let hz = corral_tests::vmm::ticks_per_second();
    let before = cpu_ticks(vm.child.id());
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_ticks(vm.child.id()) - before) as f64 * 100.0 / (secs * hz) as f64
}

/// The default mode (no `net=`, no `mode=`) with a NIC: DHCP comes up by itself (like CirrOS's
/// udhcpc on eth0) and the console keeps working beside the network: `echo`, a `burn` that Enter
/// stops (the network answers again afterwards, and the guest is idle again), `poweroff`.
#[test]
fn default_mode_brings_the_network_up_and_keeps_the_console() {
    let (http, echo) = (free_port(), free_port());
    let mut vm = boot("console=ttyS0", None, &[], http, echo);
    assert_eq!(
        vm.wait_line("testguest: net dhcp ", Duration::from_secs(60)),
        "testguest: net dhcp ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3"
    );
    vm.wait_line("testguest: net listening echo=7 http=80", IO_TIMEOUT);
    assert_eq!(get(http, "/"), (200, "hello from testguest\n".to_string()));

    vm.send("echo hi from the console");
    vm.wait_exact("hi from the console", IO_TIMEOUT);
    vm.send("bogus");
    vm.wait_exact("testguest: unknown command \"bogus\"", IO_TIMEOUT);

    vm.send("burn");
    vm.wait_exact("testguest: burn started", IO_TIMEOUT);
    let burning = cpu_pct(&vm, 1);
    assert!(
        burning > 50.0,
        "a console burn cost QEMU only {burning:.1}% of a core"
    );
    vm.send("");
    let stopped = vm.wait_line("testguest: burn stopped ms=", IO_TIMEOUT);
    let ms: u64 = stopped.rsplit('=').next().unwrap().parse().unwrap();
    assert!(ms >= 500, "{stopped}");
    // The network runs on after the burn, and the guest is idle again.
    assert_eq!(get(http, "/"), (200, "hello from testguest\n".to_string()));
    let mut s = connect(echo);
    s.write_all(b"after burn").unwrap();
    let mut got = [0u8; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after burn");
    drop(s);
    std::thread::sleep(Duration::from_millis(500));
    let idle = cpu_pct(&vm, 2);
    assert!(
        idle < 10.0,
        "idle guest after the burn cost QEMU {idle:.1}% of a core"
    );
    // `burn` then a command: the command stops the burn and runs.
    vm.send("burn");
    std::thread::sleep(Duration::from_millis(200));
    vm.send("echo second");
    vm.wait_exact("second", IO_TIMEOUT);
    assert_eq!(
        vm.output().matches("testguest: burn stopped ms=").count(),
        2,
        "{}",
        vm.output()
    );

    // Guest → host: `net get` through slirp's gateway to a server on the host's loopback, while
    // the guest's own servers keep answering; then a port nobody listens on.
    let (port, seen) = host_server();
    vm.send(&format!("net get 10.0.2.2:{port}/x"));
    let got = vm.wait_line("testguest: net get ", Duration::from_secs(20));
    assert!(
        got.starts_with("testguest: net get status=200 bytes=")
            && got.ends_with(" body=from the host"),
        "{got}; console:\n{}",
        vm.output()
    );
    assert_eq!(get(http, "/"), (200, "hello from testguest\n".to_string()));
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /x HTTP/1.0\r\n") && head.contains("Host: 10.0.2.2\r\n"),
        "{head:?}"
    );
    vm.send(&format!("net get 10.0.2.2:{}", free_port()));
    let end = Instant::now() + Duration::from_secs(20);
    while vm.output().matches("testguest: net get ").count() < 2 {
        assert!(
            Instant::now() < end,
            "no second net get line; console:\n{}",
            vm.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vm.output();
    let refused = out
        .lines()
        .filter(|l| l.starts_with("testguest: net get "))
        .nth(1)
        .unwrap();
    assert!(
        refused.starts_with("testguest: net get error="),
        "{refused}"
    );
    vm.send("net get 10.0.2");
    vm.wait_exact("testguest: net get error=bad address", IO_TIMEOUT);

    vm.send("poweroff");
    let end = Instant::now() + IO_TIMEOUT;
    while vm.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "no power-off; console:\n{}",
            vm.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vm.output();
    assert!(
        !out.contains("net=dhcp") && !out.contains("mode=net"),
        "{out}"
    );
    record(&format!(
        "guest_net_qemu: default-mode console burn_cpu_pct={burning:.0} idle_after_pct={idle:.1}"
    ));
}

/// `net=off`: the default mode ignores the NIC and stays interactive, with no network lines.
#[test]
fn net_off_keeps_the_default_mode_off_the_network() {
    let (http, echo) = (free_port(), free_port());
    let mut vm = boot("console=ttyS0 net=off", None, &[], http, echo);
    vm.wait_exact("TESTGUEST READY", Duration::from_secs(60));
    vm.send("echo still interactive");
    vm.wait_exact("still interactive", IO_TIMEOUT);
    vm.send("net get 10.0.2.2/");
    vm.wait_exact("testguest: net get error=no network", IO_TIMEOUT);
    let out = vm.output();
    assert!(
        out.lines()
            .all(|l| !l.starts_with("testguest: net") || l.starts_with("testguest: net get ")),
        "{out}"
    );
    assert!(out.contains("virtio devices=1"), "{out}");
}
