//! The consolelog subresource through a real daemon and a real VM: the rotated log and the
//! current one are served whole, in order, for a multi-MiB log, without the daemon's memory
//! growing with the log; `corral logs` agrees; a bad `tailBytes` is a 400 naming it.

use std::path::PathBuf;
use std::time::Duration;

use corral_tests::daemon::{Daemon, wait_for};
use corral_tests::lab;
use serde_json::Value;

const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
const LOG: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances";

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| b'!' + (i % 89) as u8)
        .collect()
}

/// The daemon's peak resident memory (VmHWM) in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The run directory of the VM named `name`.
fn vm_dir(d: &Daemon, name: &str) -> PathBuf {
    std::fs::read_dir(d.vms_dir())
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("vm.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["vm"]["name"] == name)
        })
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no run directory for {name}"))
}

#[test]
fn multi_mib_console_log_is_served_whole_and_streamed() {
    let reg = lab::testguest_registry();
    let d = Daemon::start(&["--insecure-registry", &reg.addr]);
    let yaml = lab::seed_set(&reg).replace("replicas: 2", "replicas: 1");
    let r = d.req(
        "POST",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets",
        Some("application/yaml"),
        yaml.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let name = wait_for(Duration::from_secs(60), "a VMI", || {
        d.get_json(VMI)["items"]
            .as_array()?
            .first()?
            .pointer("/metadata/name")?
            .as_str()
            .map(str::to_string)
    });
    let path = format!("{LOG}/{name}/consolelog");
    wait_for(Duration::from_secs(60), "TESTGUEST READY", || {
        d.req("GET", &path, None, b"")
            .text()
            .contains("TESTGUEST READY")
            .then_some(())
    });

    // The idle guest prints nothing more: make its log multi-MiB (the VMM only rotates after
    // its own writes pass the cap, so these files stay as written).
    let dir = vm_dir(&d, &name);
    let current = dir.join("console.log");
    let (old_len, new_len) = (2 << 20, (5 << 20) + 123);
    std::fs::write(dir.join("console.log.1"), pattern(0, old_len)).unwrap();
    let guest = std::fs::read(&current).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap();
    std::io::Write::write_all(&mut f, &pattern(old_len, new_len)).unwrap();
    let all = [
        pattern(0, old_len),
        guest.clone(),
        pattern(old_len, new_len),
    ]
    .concat();
    assert!(all.len() <= 8 << 20);

    let before = peak_kib(d.pid());
    let r = d.req("GET", &format!("{path}?tailBytes=8388608"), None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), all.len());
    assert!(
        r.body == all,
        "the rotated file, then the current one, byte for byte"
    );
    let grown = peak_kib(d.pid()).saturating_sub(before);
    assert!(
        grown < 4 << 10,
        "the daemon's peak memory grew {grown} KiB serving {} MiB",
        all.len() >> 20
    );

    // A tail that starts inside the rotated file, and the default 64 KiB.
    let tail = new_len + guest.len() + 1000;
    let r = d.req("GET", &format!("{path}?tailBytes={tail}"), None, b"");
    assert!(r.body == all[all.len() - tail..]);
    let r = d.req("GET", &path, None, b"");
    assert!(r.body == all[all.len() - 65536..]);

    // corral logs prints the same bytes.
    let out = d.cli(&["logs", &name, "--tail-bytes", &tail.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == all[all.len() - tail..]);

    for bad in ["8388609", "-1", "lots"] {
        let r = d.req("GET", &format!("{path}?tailBytes={bad}"), None, b"");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let v = r.json().unwrap();
        assert_eq!(v["kind"], "Status");
        assert!(v["message"].as_str().unwrap().contains("tailBytes"), "{v}");
    }
}
