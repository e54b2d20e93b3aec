//! A host without CA certificates (no `/etc/ssl/certs`): simulated with `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` pointing at an empty file and an empty directory, which is all the system
//! root loader then reads. A local import and the daemon need no roots; a registry pull fails
//! with a clear error instead of aborting in the HTTP client's constructor.

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use api::client::{Client, Endpoint};
use corral_tests::corral::{binary, fixtures, image_cmd, stderr, stdout};
use corral_tests::daemon::wait_for;

/// `c` on a host with no CA certificates at all.
fn without_roots<'a>(c: &'a mut Command, dir: &Path) -> &'a mut Command {
    let file = dir.join("empty.pem");
    let certs = dir.join("empty-certs");
    std::fs::write(&file, "").unwrap();
    std::fs::create_dir_all(&certs).unwrap();
    c.env("SSL_CERT_FILE", file).env("SSL_CERT_DIR", certs)
}

fn describe(o: &std::process::Output) -> String {
    format!(
        "status {:?} (signal {:?})\nstdout: {}\nstderr: {}",
        o.status.code(),
        o.status.signal(),
        stdout(o),
        stderr(o)
    )
}

#[test]
fn local_import_needs_no_ca_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = image_cmd(&dir.path().join("store"));
    c.args(["import", "--json"])
        .arg(fixtures().join("images/testguest/oci"));
    let o = without_roots(&mut c, dir.path()).output().unwrap();
    assert!(o.status.success(), "import: {}", describe(&o));
    let img: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(img["disk_format"], "qcow2", "{img}");
}

#[test]
fn a_pull_without_ca_certificates_fails_clearly_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback "registry" that must never see a connection.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let registry = l.local_addr().unwrap().to_string();
    for insecure in [false, true] {
        let mut c = image_cmd(&dir.path().join("store"));
        c.arg("pull");
        if insecure {
            c.args(["--insecure-registry", &registry]);
        }
        c.arg(format!("{registry}/corral/testguest:latest"));
        let o = without_roots(&mut c, dir.path()).output().unwrap();
        let what = describe(&o);
        assert_eq!(o.status.code(), Some(1), "an error, not a crash: {what}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "no CA certificates on this host to verify registry {registry}"
            )) && err.contains("SSL_CERT_FILE"),
            "{what}"
        );
        assert_eq!(
            err.contains("even for a plain-HTTP registry"),
            insecure,
            "{what}"
        );
    }
    assert!(l.accept().is_err(), "the pull connected to the registry");
}

#[test]
fn the_daemon_starts_without_ca_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let socket = run.join("corral.sock");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut c = Command::new(binary());
    c.arg("daemon")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(&run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = without_roots(&mut c, dir.path()).spawn().unwrap();
    let client = Client::new(Endpoint::Unix(socket));
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(Duration::from_secs(20), "the daemon to serve", || {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the daemon exited with {st}; log:\n{}",
                    std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
                );
            }
            client.get("/readyz").ok().filter(|r| r.status == 200)
        })
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = served {
        std::panic::resume_unwind(e);
    }
}
