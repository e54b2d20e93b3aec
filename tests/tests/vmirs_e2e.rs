//! The seed lab's replica-set steps against a real daemon, real KVM VMs (the test guest as a
//! container disk), and a real registry on loopback: create → 2 Ready, scale 1, scale 5, a VMM
//! killed → replaced, the daemon killed → VMs re-adopted with the same pids, delete → nothing
//! left. Plus: missing image (clear reason, no hot loop), paused sets, memory admission, a VMI
//! that powers off (Succeeded).

use std::collections::BTreeMap;
use std::time::Duration;

use corral_tests::daemon::{Daemon, alive, wait_for};
use corral_tests::registry::Registry;
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
const BOOT: Duration = Duration::from_secs(60);

fn registry_with_testguest() -> Registry {
    let reg = Registry::start();
    let oci = corral_tests::corral::fixtures().join("images/testguest/oci");
    reg.push(
        &format!("oci:{}:latest", oci.display()),
        "corral/testguest:latest",
    );
    reg
}

/// The seed lab's VMIRS, verbatim except the image (and optionally name and replicas).
fn seed(image: &str, name: &str, replicas: i64) -> String {
    std::fs::read_to_string(corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"))
        .unwrap()
        .replace("quay.io/kubevirt/cirros-container-disk-demo", image)
        .replace("name: lab05-cirros-replicaset", &format!("name: {name}"))
        .replace("replicas: 2", &format!("replicas: {replicas}"))
}

fn daemon(reg: &Registry, extra: &[&str]) -> Daemon {
    let mut args = vec!["--insecure-registry", reg.addr.as_str()];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

fn create(d: &Daemon, yaml: &str) -> Value {
    let r = d.req("POST", RS, Some("application/yaml"), yaml.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    r.json().unwrap()
}

fn vmis(d: &Daemon) -> Vec<Value> {
    d.get_json(VMI)["items"].as_array().unwrap().clone()
}

fn ready(v: &Value) -> bool {
    v["status"]["phase"] == "Running"
        && v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Waits until the set has exactly `n` VMIs, all Running and Ready (and the set says so).
fn wait_ready(d: &Daemon, set: &str, n: usize) -> Vec<Value> {
    wait_for(BOOT, &format!("{n} ready VMIs of {set}"), || {
        let vs: Vec<Value> = vmis(d)
            .into_iter()
            .filter(|v| v["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let st = d.get_json(&format!("{RS}/{set}"))["status"].clone();
        (vs.len() == n
            && vs.iter().all(ready)
            && st["readyReplicas"] == json!(n)
            && st["replicas"] == json!(n))
        .then_some(vs)
    })
}

fn scale(d: &Daemon, set: &str, n: i64) {
    let body = json!({"spec": {"replicas": n}}).to_string();
    let r = d.req(
        "PATCH",
        &format!("{RS}/{set}/scale"),
        Some("application/merge-patch+json"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["spec"]["replicas"], json!(n));
}

/// VMI name → VMM pid, from the runtime's records.
fn pids(d: &Daemon) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(d.vms_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(t) = std::fs::read_to_string(e.path().join("vm.json")) {
            let v: Value = serde_json::from_str(&t).unwrap();
            out.insert(
                v["vm"]["name"].as_str().unwrap().to_string(),
                v["pid"].as_u64().unwrap() as u32,
            );
        }
    }
    out
}

#[test]
fn lab_replica_set_lifecycle_with_real_vms() {
    let reg = registry_with_testguest();
    let mut d = daemon(&reg, &[]);
    let image = reg.reference("corral/testguest:latest");
    create(&d, &seed(&image, "lab05-cirros-replicaset", 2));
    let two = wait_ready(&d, "lab05-cirros-replicaset", 2);
    for v in &two {
        let name = v["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("lab05-cirros-replicaset")
                && name.len() == "lab05-cirros-replicaset".len() + 5
        );
        assert_eq!(
            v["status"]["nodeName"].as_str().unwrap(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        );
        // The guest really booted: its console says so.
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/consolelog"
        );
        wait_for(
            Duration::from_secs(20),
            "TESTGUEST READY on the console",
            || {
                d.req("GET", &path, None, b"")
                    .text()
                    .contains("TESTGUEST READY")
                    .then_some(())
            },
        );
    }

    // Scale to 1 through the scale subresource: one VMI and its VMM go away.
    scale(&d, "lab05-cirros-replicaset", 1);
    let one = wait_ready(&d, "lab05-cirros-replicaset", 1);
    wait_for(
        Duration::from_secs(30),
        "the deleted VMI's VMM to exit",
        || (pids(&d).len() == 1).then_some(()),
    );
    assert!(
        two.iter()
            .any(|v| v["metadata"]["name"] == one[0]["metadata"]["name"])
    );

    // Scale to 5.
    scale(&d, "lab05-cirros-replicaset", 5);
    wait_ready(&d, "lab05-cirros-replicaset", 5);

    // kill -9 one VMM: its VMI fails and is replaced.
    let before = pids(&d);
    let (victim, victim_pid) = before.iter().next().map(|(n, p)| (n.clone(), *p)).unwrap();
    std::process::Command::new("kill")
        .arg("-9")
        .arg(victim_pid.to_string())
        .status()
        .unwrap();
    let after = wait_for(BOOT, "the killed VMI to be replaced", || {
        let vs = wait_ready(&d, "lab05-cirros-replicaset", 5);
        (!vs.iter().any(|v| v["metadata"]["name"] == victim.as_str())).then_some(vs)
    });
    assert_eq!(after.len(), 5);
    let evs = d.get_json("/api/v1/namespaces/default/events")["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        evs.iter()
            .any(|e| e["involvedObject"]["name"] == victim.as_str() && e["reason"] == "Killed"),
        "the failure is recorded as an event"
    );

    // kill -9 the daemon: the VMs keep running; a new daemon re-adopts them, same pids.
    let running = pids(&d);
    assert_eq!(running.len(), 5);
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        running.values().all(|p| alive(*p)),
        "VMs survive the daemon"
    );
    d.restart();
    let adopted = wait_ready(&d, "lab05-cirros-replicaset", 5);
    let names: Vec<&str> = adopted
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap())
        .collect();
    for (name, pid) in &running {
        assert!(
            names.contains(&name.as_str()),
            "{name} survived the restart"
        );
        assert_eq!(
            pids(&d).get(name),
            Some(pid),
            "{name} kept its VMM (no restart, no duplicate)"
        );
        assert!(alive(*pid));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pids(&d),
        running,
        "no VM was started or stopped after re-adoption"
    );

    // Delete the set: every VMI, VMM, overlay and run directory goes away.
    let r = d.req(
        "DELETE",
        &format!("{RS}/lab05-cirros-replicaset"),
        None,
        b"",
    );
    assert_eq!(r.status, 200);
    wait_for(Duration::from_secs(60), "every VMI to be deleted", || {
        vmis(&d).is_empty().then_some(())
    });
    wait_for(Duration::from_secs(10), "every VMM to exit", || {
        running.values().all(|p| !alive(*p)).then_some(())
    });
    let leftovers: Vec<_> = std::fs::read_dir(d.vms_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "run directories left: {leftovers:?}");
}

#[test]
fn missing_image_gives_a_clear_reason_and_backs_off() {
    let reg = registry_with_testguest();
    let d = daemon(&reg, &[]);
    let image = reg.reference("corral/missing:latest");
    create(&d, &seed(&image, "missing", 1));
    let v = wait_for(
        Duration::from_secs(20),
        "the pull failure in the VMI status",
        || {
            vmis(&d)
                .into_iter()
                .find(|v| v["status"]["reason"] == "ImagePullBackOff")
        },
    );
    assert_eq!(v["status"]["phase"], "Pending");
    let msg = v["status"]["message"].as_str().unwrap();
    assert!(msg.contains("corral/missing"), "{msg}");
    // No hot loop: with exponential backoff (1 s, 2 s, 4 s, ...) a few attempts in 6 s.
    let first = reg.requests("corral/missing");
    std::thread::sleep(Duration::from_secs(6));
    let attempts = reg.requests("corral/missing") - first;
    assert!(attempts <= 6, "{attempts} registry requests in 6 s");
    assert!(pids(&d).is_empty(), "no VM was started");
}

#[test]
fn paused_set_ignores_deleted_vmis_until_resumed() {
    let reg = registry_with_testguest();
    let d = daemon(&reg, &[]);
    create(
        &d,
        &seed(&reg.reference("corral/testguest:latest"), "paused", 2),
    );
    let vs = wait_ready(&d, "paused", 2);
    let r = d.req(
        "PATCH",
        &format!("{RS}/paused"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"paused":true}}"#,
    );
    assert_eq!(r.status, 200);
    wait_for(Duration::from_secs(10), "ReplicaPaused", || {
        let s = d.get_json(&format!("{RS}/paused"));
        s["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "ReplicaPaused"))
            .then_some(())
    });
    let victim = vs[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        d.req("DELETE", &format!("{VMI}/{victim}"), None, b"")
            .status,
        200
    );
    wait_for(Duration::from_secs(30), "the VMI to go", || {
        (vmis(&d).len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(vmis(&d).len(), 1, "a paused set does not replace VMIs");
    let r = d.req(
        "PATCH",
        &format!("{RS}/paused"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"paused":false}}"#,
    );
    assert_eq!(r.status, 200);
    wait_ready(&d, "paused", 2);
}

fn mem_total() -> u64 {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = t
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn memory_admission_pending_and_never() {
    let reg = registry_with_testguest();
    // Leave 512 MiB of the host to VMs: a 265Mi VM fits the host in principle, but not next to
    // what the machine already uses → Pending with a reason.
    let reserve = (mem_total() - (512 << 20)).to_string();
    let d = daemon(&reg, &["--memory-reserve", &reserve]);
    let big = seed(&reg.reference("corral/testguest:latest"), "tight", 1);
    create(&d, &big);
    let v = wait_for(Duration::from_secs(20), "an Unschedulable VMI", || {
        vmis(&d)
            .into_iter()
            .find(|v| v["status"]["reason"] == "Unschedulable")
    });
    assert_eq!(v["status"]["phase"], "Pending");
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient memory")
    );
    // A VM larger than the host can ever give is rejected at admission.
    let huge = seed(&reg.reference("corral/testguest:latest"), "huge", 1)
        .replace("memory: 265Mi", "memory: 64Ti");
    let r = d.req("POST", RS, Some("application/yaml"), huge.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("can never fit"));
}

#[test]
fn vmi_that_powers_off_succeeds_and_direct_vmis_clean_up() {
    let reg = registry_with_testguest();
    let d = daemon(&reg, &[]);
    let set: Value =
        serde_norway::from_str(&seed(&reg.reference("corral/testguest:latest"), "x", 1)).unwrap();
    let mut spec = set["spec"]["template"]["spec"].clone();
    spec["domain"]["firmware"] =
        json!({"kernelBoot": {"kernelArgs": "console=ttyS0 mode=poweroff"}});
    let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "once"}, "spec": spec});
    let r = d.req(
        "POST",
        VMI,
        Some("application/json"),
        vmi.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = wait_for(BOOT, "the VMI to succeed", || {
        let v = d.get_json(&format!("{VMI}/once"));
        (v["status"]["phase"] == "Succeeded").then_some(v)
    });
    assert_eq!(v["status"]["reason"], "GuestPoweredOff");
    assert_eq!(
        d.req("DELETE", &format!("{VMI}/once"), None, b"").status,
        200
    );
    wait_for(Duration::from_secs(30), "the VMI to be gone", || {
        vmis(&d).is_empty().then_some(())
    });
    assert!(
        std::fs::read_dir(d.vms_dir()).unwrap().next().is_none(),
        "run directory removed"
    );
}
