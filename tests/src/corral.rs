//! Locating and running the real `corral` binary and the built fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use crate::bin::workspace;

/// The `corral` binary under test (see [`crate::bin::corral`]).
pub fn binary() -> PathBuf {
    crate::bin::corral()
}

/// `target/fixtures` (built by tests/fixtures/build.sh), or `$FIXTURES`.
pub fn fixtures() -> PathBuf {
    let p = crate::bin::fixtures();
    assert!(
        p.join("images/.stamp").exists(),
        "{} incomplete: run tests/fixtures/build.sh",
        p.display()
    );
    p
}

/// A `corral image ...` command against `store`, logging plainly (stderr is not a TTY).
pub fn image_cmd(store: &Path) -> Command {
    let mut c = Command::new(binary());
    c.arg("image")
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "images=info")
        .env_remove("CORRAL_IMAGE_STORE");
    c.env_remove("DOCKER_CONFIG")
        .env("HOME", store.parent().unwrap_or(store));
    c
}

/// Runs a command and returns its output (never panics on a non-zero exit).
pub fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires success; returns stdout.
pub fn ok(c: Command) -> String {
    let dbg = format!("{c:?}");
    let o = run(c);
    assert!(
        o.status.success(),
        "{dbg} failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and requires failure; returns stderr.
pub fn fails(c: Command) -> String {
    let dbg = format!("{c:?}");
    let o = run(c);
    assert!(
        !o.status.success(),
        "{dbg} unexpectedly succeeded:\n{}",
        stdout(&o)
    );
    stderr(&o)
}

/// Every path under `dir` with its size (and symlink target), sorted: "the store as it was".
pub fn snapshot(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let m = std::fs::symlink_metadata(&path).expect("metadata");
            if m.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                // lock files' mtimes change; their sizes do not
                let content = if rel.ends_with(".json") {
                    format!(" {}", Sha(&std::fs::read(&path).unwrap_or_default()))
                } else {
                    String::new()
                };
                out.push(format!("{rel} {}{content}", m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

struct Sha<'a>(&'a [u8]);

impl std::fmt::Display for Sha<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        f.write_str(&hex::encode(sha2::Sha256::digest(self.0))[..16])
    }
}
