//! Driving `corral vmm` from tests: spawn it, read its console line by line, talk to its
//! control socket, wait for its exit code.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use crate::bin::corral;

/// The workspace root.
pub fn root() -> PathBuf {
    crate::bin::workspace()
}

/// A fixture from target/fixtures (built by tests/fixtures/build.sh).
pub fn fixture(name: &str) -> PathBuf {
    let path = crate::bin::fixtures().join(name);
    assert!(
        path.exists(),
        "{} missing: run tests/fixtures/build.sh",
        path.display()
    );
    path
}

/// The test guest ELF.
pub fn testguest() -> PathBuf {
    fixture("testguest.elf")
}

/// Console output collected so far, shared with the reader thread.
#[derive(Default)]
struct Output {
    text: String,
    closed: bool,
}

/// A running `corral vmm` process.
pub struct Vm {
    pub child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<(Mutex<Output>, Condvar)>,
    err: Arc<Mutex<String>>,
    err_reader: Option<std::thread::JoinHandle<()>>,
}

/// Builder-style options for [`Vm::spawn`].
pub struct VmArgs {
    pub args: Vec<String>,
    pub stdin: bool,
    pub env: Vec<(String, String)>,
}

impl VmArgs {
    /// `corral vmm --kernel <testguest> --cmdline <cmdline>` with stdin attached.
    pub fn testguest(cmdline: &str) -> Self {
        VmArgs {
            args: vec![
                "--kernel".into(),
                testguest().display().to_string(),
                "--cmdline".into(),
                cmdline.into(),
            ],
            stdin: true,
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn no_stdin(mut self) -> Self {
        self.stdin = false;
        self.args.push("--no-stdin".into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

impl Vm {
    pub fn spawn(opts: VmArgs) -> Vm {
        let mut cmd = Command::new(corral());
        cmd.arg("vmm")
            .args(&opts.args)
            .stdin(if opts.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn corral vmm");
        let out = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let mut stdout = child.stdout.take().unwrap();
        let out2 = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*out2;
                let mut o = lock.lock().unwrap();
                if n == 0 {
                    o.closed = true;
                    cv.notify_all();
                    return;
                }
                o.text
                    .push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
                cv.notify_all();
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = err.clone();
        let stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut e = err2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let stdin = child.stdin.take();
        Vm {
            child,
            stdin,
            out,
            err,
            err_reader: Some(err_reader),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the guest printed so far (CR removed).
    pub fn output(&self) -> String {
        self.out.0.lock().unwrap().text.clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle` `count` times; panics with the output on timeout.
    pub fn wait_for_n(&self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.out;
        let mut o = lock.lock().unwrap();
        // Count incrementally: output arrives a few bytes at a time.
        let (mut found, mut from) = (0, 0);
        loop {
            while let Some(pos) = o.text[from..].find(needle) {
                found += 1;
                from += pos + needle.len();
            }
            if found >= count {
                return o.text.clone();
            }
            from = from.max(o.text.len().saturating_sub(needle.len() - 1));
            while !o.text.is_char_boundary(from) {
                from -= 1;
            }
            let now = Instant::now();
            if now >= deadline || o.closed {
                panic!(
                    "waited {timeout:?} for {count}x {needle:?}; output so far:\n{}\nstderr:\n{}",
                    o.text,
                    self.stderr()
                );
            }
            o = cv.wait_timeout(o, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_n(needle, 1, timeout)
    }

    /// Waits for a complete line starting with `prefix` (its first occurrence); returns the rest
    /// of that line.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_for_nth_line(prefix, 0, timeout)
    }

    /// Like [`wait_for_line`](Self::wait_for_line) for occurrence `n` (0-based) of `prefix`.
    pub fn wait_for_nth_line(&self, prefix: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.wait_for_n(
                prefix,
                n + 1,
                deadline.saturating_duration_since(Instant::now()),
            );
            let (at, _) = out.match_indices(prefix).nth(n).unwrap();
            let rest = &out[at + prefix.len()..];
            if let Some(end) = rest.find('\n') {
                return rest[..end].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "incomplete line {prefix:?}: {out}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes to the guest's serial input through our stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("spawned with --no-stdin");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the process to exit; kills it and panics on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                let (lock, cv) = &*self.out;
                let mut o = lock.lock().unwrap();
                while !o.closed {
                    o = cv.wait_timeout(o, Duration::from_secs(2)).unwrap().0;
                }
                drop(o);
                // And the stderr reader: callers assert on the exit message.
                let drained = Instant::now() + Duration::from_secs(2);
                while self.err_reader.as_ref().is_some_and(|h| !h.is_finished())
                    && Instant::now() < drained
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "corral vmm did not exit within {timeout:?}; output:\n{}\nstderr:\n{}",
                    self.output(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit and returns its code (panics if killed by a signal).
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait_exit(timeout);
        status
            .code()
            .unwrap_or_else(|| panic!("killed by signal: {status:?}\n{}", self.stderr()))
    }

    /// User + system CPU time of the process so far, in clock ticks (see `ticks_per_second`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // fields[0] is field 3 (state); utime is field 14, stime field 15.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

/// One request on a control socket; returns the reply line as JSON.
pub fn control(socket: &Path, request: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).expect("connect control socket");
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
}

/// Waits for a control socket file to appear.
pub fn wait_for_socket(socket: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `testguest: e820 ...` lines the guest must print for `mem_bytes` of RAM.
pub fn expected_e820_lines(mem_bytes: u64) -> Vec<String> {
    vmm::arch::x86_64::layout::e820_ram(mem_bytes)
        .iter()
        .map(|r| {
            format!(
                "testguest: e820 addr={:#x} size={:#x} type=1",
                r.start, r.len
            )
        })
        .collect()
}

/// Lines of `text` starting with `prefix`.
pub fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Whether this host has hardware virtualization (VMX/SVM) behind /dev/kvm.
pub fn hardware_kvm() -> bool {
    vmm::kvm::host_kvm() == vmm::kvm::HostKvm::Hardware
}

/// Default timeout for test-guest steps (the guest itself needs milliseconds; the margin is for
/// a loaded, shared machine).
pub const STEP: Duration = Duration::from_secs(20);

impl Vm {
    /// Sends a console command and returns the rest of the next new line starting with `prefix`
    /// (lines of that prefix printed before the command do not count).
    pub fn ask(&mut self, command: &str, prefix: &str) -> String {
        let seen = self.output().matches(prefix).count();
        self.send(&format!("{command}\n"));
        self.wait_for_nth_line(prefix, seen, STEP)
    }
}

/// FNV-1a (64-bit), as the test guest prints it for `blk read`/`blk write`.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The bytes the test guest writes for `blk write DEV SECTOR COUNT SEED`: byte i = i ^ SEED.
pub fn guest_pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8) ^ seed).collect()
}

/// `sha256sum` of a file.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Open file descriptors of `pid` whose target is under `dir` (as `readlink` shows them, e.g.
/// `/run/vm/#1234 (deleted)` for an unnamed `O_TMPFILE`).
pub fn fds_under(pid: i32, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.starts_with(&dir.display().to_string()))
        .collect()
}
