//! systemd integration: the unit file passes `systemd-analyze verify`, and the daemon sends
//! `READY=1` on `$NOTIFY_SOCKET` (Type=notify) once its API serves.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::bin::{corral, workspace};

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(workspace().join("packaging/corral.service")).unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("KillMode=process")
            && unit.contains("Delegate=yes")
    );
    // Verify a copy whose ExecStart points at the binary under test (the packaged path does not
    // exist on a build machine).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("corral.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/corral", corral().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed by .ci/install-deps.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("corral.service"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify failed:\n{stderr}"
    );
}

#[test]
fn daemon_notifies_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = Command::new(corral())
        .args([
            "daemon",
            "--state-dir",
            &format!("{d}/state"),
            "--run-dir",
            &format!("{d}/run"),
        ])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    // READY comes after the socket serves.
    assert!(std::os::unix::net::UnixStream::connect(format!("{d}/run/corral.sock")).is_ok());
    eprintln!("READY=1 after {:?}", start.elapsed());
    // SIGTERM: STOPPING=1, then a clean exit.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
}
