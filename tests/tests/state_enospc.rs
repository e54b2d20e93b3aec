//! A full state filesystem: writes fail with a clear `Status`, the daemon keeps serving reads,
//! nothing acknowledged is lost, and once space is back (and after a restart) the store is whole.

use std::process::Command;
use std::time::Duration;

use corral_tests::daemon::{Daemon, wait_for};
use serde_json::Value;

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";

fn set(name: &str) -> String {
    std::fs::read_to_string(corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"))
        .unwrap()
        .replace("name: lab05-cirros-replicaset", &format!("name: {name}"))
        .replace("replicas: 2", "replicas: 0")
}

fn names(d: &Daemon) -> Vec<String> {
    d.get_json(RS)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Fills the filesystem of `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    // dd stops at ENOSPC; its failure is the point.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status()
        .unwrap();
    filler
}

#[test]
fn a_full_state_filesystem_fails_writes_clearly_and_loses_nothing() {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let mut mounted = None;
    let mut d = Daemon::start_with(
        |state| {
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
                .arg(state)
                .status()
                .unwrap();
            assert!(st.success(), "mount a tmpfs (the tests run as root)");
            mounted = Some(Unmount(state.to_path_buf()));
        },
        &[],
    );
    let mnt = d.state_dir.clone();
    let r = d.req(
        "POST",
        RS,
        Some("application/yaml"),
        set("before").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let filler = fill(&mnt);
    // Writes fail with a Status naming the problem; the daemon stays up and serves reads.
    let mut refused = None;
    for i in 0..50 {
        let r = d.req(
            "POST",
            RS,
            Some("application/yaml"),
            set(&format!("full-{i}")).as_bytes(),
        );
        if r.status != 201 {
            refused = Some((r.status, r.text()));
            break;
        }
    }
    let (status, text) = refused.expect("a write refused on a full filesystem");
    assert!(status >= 500, "{status} {text}");
    let body: Value = serde_json::from_str(&text).expect("a k8s Status");
    assert_eq!(body["kind"], "Status", "{text}");
    let msg = body["message"].as_str().unwrap_or("").to_lowercase();
    assert!(
        msg.contains("no space left on device"),
        "the message says the disk is full: {text}"
    );
    let listed = names(&d);
    assert!(listed.contains(&"before".to_string()), "{listed:?}");
    assert_eq!(d.req("GET", "/readyz", None, b"").status, 200);

    // Space back: writes work again, and a restart finds every acknowledged object.
    std::fs::remove_file(&filler).unwrap();
    let r = d.req(
        "POST",
        RS,
        Some("application/yaml"),
        set("after").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let acked: Vec<String> = names(&d);
    d.kill9();
    d.restart();
    let again = wait_for(
        Duration::from_secs(20),
        "the objects after a restart",
        || Some(names(&d)),
    );
    assert_eq!(
        again, acked,
        "every acknowledged object survives, nothing half-written"
    );
    drop(d);
    drop(mounted);
}
