//! A `corral daemon` on private state and run directories, for one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::client::{Client, Endpoint, Request, Response};
use serde_json::Value;

/// A running daemon. Dropping it stops the daemon and kills every VM it started.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Starts a daemon with extra arguments and waits until it serves.
    pub fn start(extra: &[&str]) -> Daemon {
        Self::start_with(|_| {}, extra)
    }

    /// Like [`start`](Self::start), after `prepare` has run on the (created, empty) state dir:
    /// e.g. to mount a small filesystem there.
    /// Without pod networking (`--no-pod-network`): VMs get no NIC, so nothing touches the
    /// host's network. See [`start_networked`](Self::start_networked).
    pub fn start_with(prepare: impl FnOnce(&Path), extra: &[&str]) -> Daemon {
        let mut args = vec!["--no-pod-network"];
        args.extend_from_slice(extra);
        Self::start_raw(prepare, &args)
    }

    /// A daemon with pod networking, for a test thread that has entered a network namespace of
    /// its own ([`crate::netns::enter_private`]): the daemon inherits it, so its bridge, pods
    /// and NAT rules live there. Panics on the host's namespace.
    pub fn start_networked(extra: &[&str]) -> Daemon {
        assert!(
            crate::netns::in_private(),
            "a networked daemon must run in the test's own network namespace"
        );
        Self::start_raw(|_| {}, extra)
    }

    fn start_raw(prepare: impl FnOnce(&Path), extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("corral-e2e")
            .tempdir()
            .expect("temp dir");
        let state_dir = dir.path().join("state");
        let run_dir = dir.path().join("run");
        let socket = run_dir.join("corral.sock");
        let mut d = Daemon {
            state_dir,
            run_dir,
            socket,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
        };
        std::fs::create_dir_all(&d.state_dir).expect("state dir");
        prepare(&d.state_dir);
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        let child = Command::new(crate::bin::corral())
            .arg("daemon")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corral daemon");
        self.child = Some(child);
        let c = self.client();
        wait_for(
            Duration::from_secs(20),
            "the daemon to serve /readyz",
            || {
                if let Some(st) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("the daemon exited with {st}; log:\n{}", self.log());
                }
                c.get("/readyz").ok().filter(|r| r.status == 200)
            },
        );
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `kill -9` of the daemon (its VMs keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same directories.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A client on the daemon's socket.
    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    /// `corral` CLI command against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::bin::corral())
            .args(args)
            .env("CORRAL_SOCKET", &self.socket)
            .output()
            .expect("run corral")
    }

    /// Sends a request.
    pub fn req(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let mut r = Request::new(method, path);
        r.content_type = content_type;
        r.body = body;
        self.client()
            .send(&r)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// GET returning JSON (panics on non-2xx).
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.req("GET", path, None, b"");
        assert!(
            (200..300).contains(&r.status),
            "GET {path}: {} {}",
            r.status,
            r.text()
        );
        r.json().expect("JSON body")
    }

    /// The run directory of VMs.
    pub fn vms_dir(&self) -> PathBuf {
        self.run_dir.join("vms")
    }

    /// Pids of the VMM processes recorded under the run directory.
    pub fn vmm_pids(&self) -> Vec<u32> {
        vmm_pids(&self.vms_dir())
    }
}

/// Pids from `vm.json` records under `dir`.
pub fn vmm_pids(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("vm.json")).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|v| v.get("pid").and_then(Value::as_u64))
        .filter_map(|p| u32::try_from(p).ok())
        .collect()
}

/// True if a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pids = self.vmm_pids();
        self.kill9();
        for p in pids {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        }
    }
}
