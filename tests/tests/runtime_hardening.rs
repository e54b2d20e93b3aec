//! The runtime's hardening against a real daemon and real VMs (the test guest): VMs' disks live
//! on the scratch filesystem and are admitted against its size (kubelet's ephemeral-storage), and
//! a VMM whose launch the daemon did not finish recording is found again after a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_tests::daemon::{Daemon, alive, wait_for};
use corral_tests::lab::{seed_set, testguest_registry};
use corral_tests::registry::Registry;
use serde_json::{Value, json};

const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
const BOOT: Duration = Duration::from_secs(60);

/// The seed lab's VMI template (the test guest from `reg`), named `name`, with an emptyDisk of
/// `empty`.
fn vmi(reg: &Registry, name: &str, empty: Option<&str>) -> Value {
    let set: Value = serde_norway::from_str(&seed_set(reg)).unwrap();
    let mut spec = set["spec"]["template"]["spec"].clone();
    if let Some(capacity) = empty {
        spec["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "scratch", "disk": {"bus": "virtio"}}));
        spec["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "scratch", "emptyDisk": {"capacity": capacity}}));
    }
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": name}, "spec": spec})
}

fn create(d: &Daemon, v: &Value) {
    let r = d.req(
        "POST",
        VMI,
        Some("application/json"),
        v.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn get(d: &Daemon, name: &str) -> Value {
    d.get_json(&format!("{VMI}/{name}"))
}

fn ready(v: &Value) -> bool {
    v["status"]["phase"] == "Running"
        && v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A tmpfs of `size` mounted on a new directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("corral-scratch")
            .tempdir()
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (the tests run as root)");
        Tmpfs(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Targets of the process's descriptors that are unlinked files.
fn unlinked_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().ends_with(" (deleted)"))
        .collect()
}

fn pid_of(d: &Daemon, name: &str) -> u32 {
    let uid = get(d, name)["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(d.vms_dir().join(&uid).join("vm.json")).unwrap(),
    )
    .unwrap();
    rec["pid"].as_u64().unwrap() as u32
}

#[test]
fn disks_live_on_the_scratch_filesystem_and_are_admitted_against_it() {
    // 64 MiB, of which 10% is reserve: 57.6 MiB for VMs. Each test-guest VM needs its 8 MiB
    // overlay, a 1 MiB seed allowance and its emptyDisk.
    let scratch = Tmpfs::mount("64m");
    let reg = testguest_registry();
    let d = Daemon::start(&[
        "--insecure-registry",
        reg.addr.as_str(),
        "--scratch-dir",
        scratch.path().to_str().unwrap(),
    ]);

    // Larger than the filesystem can ever hold: Failed, with the numbers.
    create(&d, &vmi(&reg, "huge", Some("1Gi")));
    let v = wait_for(Duration::from_secs(30), "huge to fail", || {
        let v = get(&d, "huge");
        (v["status"]["phase"] == "Failed").then_some(v)
    });
    assert_eq!(v["status"]["reason"], "Unschedulable", "{v}");
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ephemeral storage"),
        "{v}"
    );

    // 39 MiB fits; a second one does not fit next to it (Pending), and runs once the first goes.
    create(&d, &vmi(&reg, "first", Some("30Mi")));
    wait_for(BOOT, "first to be ready", || {
        ready(&get(&d, "first")).then_some(())
    });
    create(&d, &vmi(&reg, "second", Some("30Mi")));
    let v = wait_for(
        Duration::from_secs(30),
        "second to be unschedulable",
        || {
            let v = get(&d, "second");
            (v["status"]["reason"] == "Unschedulable").then_some(v)
        },
    );
    assert_eq!(v["status"]["phase"], "Pending", "{v}");
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient ephemeral storage"),
        "{v}"
    );

    // The VMM's overlay, emptyDisk and seed image are unnamed files on the scratch filesystem;
    // the run directory (tmpfs under /run) holds no disk or seed.
    let pid = pid_of(&d, "first");
    let files = unlinked_files(pid);
    let on_scratch = files
        .iter()
        .filter(|f| f.starts_with(scratch.path()))
        .count();
    assert!(
        on_scratch >= 3,
        "overlay, emptyDisk and seed image: {files:?}"
    );
    let uid = get(&d, "first")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!d.vms_dir().join(&uid).join("seed").exists());
    assert!(
        scratch
            .path()
            .join(&uid)
            .join("seed/cloudinitdisk/user-data")
            .exists()
    );

    assert_eq!(
        d.req("DELETE", &format!("{VMI}/first"), None, b"").status,
        200
    );
    wait_for(BOOT, "second to run once first is gone", || {
        ready(&get(&d, "second")).then_some(())
    });
    wait_for(
        Duration::from_secs(30),
        "first's scratch directory to go",
        || (!scratch.path().join(&uid).exists()).then_some(()),
    );
    drop(d);
}

#[test]
fn a_vmm_whose_pid_was_never_recorded_is_found_again() {
    let reg = testguest_registry();
    let mut d = Daemon::start(&["--insecure-registry", reg.addr.as_str()]);
    create(&d, &vmi(&reg, "orphan", None));
    wait_for(BOOT, "orphan to be ready", || {
        ready(&get(&d, "orphan")).then_some(())
    });
    let pid = pid_of(&d, "orphan");
    let uid = get(&d, "orphan")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // As if the daemon died right after spawning the VMM: the record exists, without its pid.
    d.kill9();
    let rec_path = d.vms_dir().join(&uid).join("vm.json");
    let mut rec: Value =
        serde_json::from_str(&std::fs::read_to_string(&rec_path).unwrap()).unwrap();
    rec["pid"] = json!(0);
    rec["start_time"] = json!(0);
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    d.restart();

    wait_for(BOOT, "orphan to be ready again", || {
        ready(&get(&d, "orphan")).then_some(())
    });
    assert_eq!(pid_of(&d, "orphan"), pid, "the same VMM, re-adopted");
    assert!(alive(pid));
    let vmms = d.vmm_pids();
    assert_eq!(vmms, vec![pid], "no second VMM for the VMI");
    assert!(
        d.log()
            .contains("found the VMM of a launch the daemon did not finish recording")
    );
    assert_eq!(
        d.req("DELETE", &format!("{VMI}/orphan"), None, b"").status,
        200
    );
    wait_for(Duration::from_secs(30), "the adopted VMM to end", || {
        (!alive(pid)).then_some(())
    });
}
