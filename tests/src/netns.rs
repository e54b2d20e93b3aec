//! Network namespaces for tests: anything that makes bridges, taps or VM addresses runs in a
//! namespace the test made, never in the host's.
//!
//! A namespace is a per-thread property: [`enter_private`] moves only the calling (test) thread;
//! the processes and threads it starts afterwards inherit the namespace.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Moves the calling thread into a new, empty network namespace with loopback up.
pub fn enter_private() -> io::Result<()> {
    // SAFETY: plain syscall; it changes only this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!("ip link set lo up: {st}")));
    }
    Ok(())
}

/// Whether the calling thread is in a network namespace other than the process's main thread's
/// (the test harness's main thread never leaves the host's).
pub fn in_private() -> bool {
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (ino("/proc/thread-self/ns/net"), ino("/proc/self/ns/net")) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// A CNI configuration directory for one test's daemon (`--cni-conf-dir`): corral's default
/// conflist, with host-local's leases kept beside it (`ipam/`) instead of on the host.
pub struct CniDir {
    dir: tempfile::TempDir,
}

impl CniDir {
    /// Writes the conflist into a new temporary directory.
    pub fn new() -> CniDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("net.d");
        let conf = supervisor::network::DefaultConfList {
            ipam_data_dir: Some(dir.path().join("ipam")),
            ..Default::default()
        };
        std::fs::write(
            conf_dir.join("10-corral.conflist"),
            conf.to_json().to_string(),
        )
        .expect("write the conflist");
        CniDir { dir }
    }

    /// The directory to pass as `--cni-conf-dir`.
    pub fn conf_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("net.d")
    }

    /// host-local's lease directory.
    pub fn ipam_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("ipam")
    }
}

impl Default for CniDir {
    fn default() -> Self {
        Self::new()
    }
}
