//! The seed lab's HPA part end to end on real VMs (test guest, real registry, real cgroups): the
//! set scaled to 1, the lab's v1 HPA, the lab's load line typed into the guest's console, the set
//! scaled 1 → 2 within two sync periods and never beyond maxReplicas, `kubectl top pod` showing
//! the VMIs, the load stopped, and the scale-down to minReplicas only after the (shortened)
//! stabilization window; plus an HPA whose target does not exist.

use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::daemon::{Daemon, wait_for};
use corral_tests::lab;
use corral_tests::proxy::Proxy;
use serde_json::{Value, json};

const NS: &str = "default";
const SET: &str = "lab05-cirros-replicaset";
const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const HPAS: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
const SYNC: u64 = 3;
const RESOLUTION: u64 = 3;
const WINDOW: u64 = 24;

struct Kubectl {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(addr: &str) -> Option<Kubectl> {
        let bin = corral_tests::bin::workspace().join(".venv/bin/kubectl");
        if !bin.exists() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{addr}\"}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: default}}}}]\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        Some(Kubectl { bin, dir })
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

/// [`wait_for`], with the daemon's log in the failure message.
fn wait<T>(d: &Daemon, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; daemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set_replicas(d: &Daemon) -> i64 {
    d.get_json(&format!("{RS}/{SET}"))["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

fn ready_vmis(d: &Daemon) -> Vec<String> {
    d.get_json("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["metadata"]["deletionTimestamp"].is_null())
        .filter(|v| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn console(d: &Daemon, vmi: &str, line: &str, until: &str) -> String {
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachineinstances/{vmi}/consoleinput?waitMillis=10000&until={}",
        until.replace(' ', "%20")
    );
    let r = d.req("POST", &path, Some("text/plain"), line.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn hpa(d: &Daemon) -> Value {
    d.get_json(&format!("{HPAS}/{SET}"))
}

#[test]
fn the_lab_autoscales_on_guest_load() {
    let reg = lab::testguest_registry();
    let d = lab::daemon(&reg, SYNC, RESOLUTION, WINDOW);
    let seed = lab::seed_set(&reg);
    let r = d.req("POST", RS, Some("application/yaml"), seed.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.req(
        "PATCH",
        &format!("{RS}/{SET}/scale"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":1}}"#,
    );
    assert_eq!(r.status, 200);
    let vmi = wait(&d, Duration::from_secs(120), "one Ready VMI", || {
        let v = ready_vmis(&d);
        (v.len() == 1 && set_replicas(&d) == 1).then(|| v[0].clone())
    });
    // The lab's HPA, verbatim.
    let r = d.req(
        "POST",
        HPAS,
        Some("application/yaml"),
        &std::fs::read(corral_tests::bin::workspace().join("tests/fixtures/seed/hpa.yaml"))
            .unwrap(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let idle = wait(&d, Duration::from_secs(60), "an idle utilization", || {
        hpa(&d)["status"]["currentCPUUtilizationPercentage"].as_i64()
    });
    assert!(
        idle < 20,
        "an idle test guest is at {idle}% of its 100m request"
    );
    // kubectl top pod shows the VMI (through `corral proxy`: kubectl sends no token over HTTP).
    let proxy = Proxy::to_socket(&d.socket);
    let kubectl = Kubectl::new(&proxy.addr());
    if let Some(k) = &kubectl {
        let top = k.run(&["top", "pod"]);
        assert!(top.contains("CPU(cores)") && top.contains(&vmi), "{top}");
    } else {
        println!(
            "kubectl top pod not checked: .venv/bin/kubectl missing (run .ci/install-deps.sh)"
        );
    }
    // The lab's load line.
    let reply = console(
        &d,
        &vmi,
        "load() { dd if=/dev/zero of=/dev/null & }; load; read; killall dd\n",
        "burn started",
    );
    assert!(reply.contains("burn started"), "{reply}");
    let t_load = Instant::now();
    wait(
        &d,
        Duration::from_secs(2 * SYNC + RESOLUTION + 30),
        "the scale-up",
        || (set_replicas(&d) >= 2).then_some(()),
    );
    let up = t_load.elapsed();
    println!(
        "scaled 1 → 2 {:.1}s after the load started (sync {SYNC}s, resolution {RESOLUTION}s)",
        up.as_secs_f64()
    );
    assert!(
        up <= Duration::from_secs(2 * SYNC + RESOLUTION),
        "1 → 2 took {up:?}, more than two sync periods after the first loaded sample"
    );
    let h = hpa(&d);
    assert_eq!(set_replicas(&d), 2, "maxReplicas is 2");
    assert_eq!(h["status"]["desiredReplicas"], 2);
    let util = h["status"]["currentCPUUtilizationPercentage"]
        .as_i64()
        .unwrap();
    assert!(util >= 150, "utilization under load: {util}%");
    let conds: Vec<Value> = serde_json::from_str(
        h["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "ScalingLimited" && c["reason"] == "TooManyReplicas"),
        "{conds:?}"
    );
    let events = d.get_json("/api/v1/namespaces/default/events");
    assert!(events["items"].as_array().unwrap().iter().any(|e| {
        e["reason"] == "SuccessfulRescale"
            && e["message"]
                .as_str()
                .unwrap()
                .starts_with("New size: 2; reason: cpu resource utilization")
    }));
    // The second VMI boots; the load keeps the set at 2 (never 3).
    wait(&d, Duration::from_secs(120), "two Ready VMIs", || {
        (ready_vmis(&d).len() == 2).then_some(())
    });
    if let Some(k) = &kubectl {
        // The new VMI has metrics from its second sample on.
        let top = wait_for(
            Duration::from_secs(4 * RESOLUTION),
            "both VMIs in kubectl top pod",
            || {
                let top = k.run(&["top", "pod"]);
                (top.lines().skip(1).count() == 2).then_some(top)
            },
        );
        let rows: Vec<&str> = top.lines().skip(1).collect();
        let busy = rows.iter().find(|r| r.starts_with(vmi.as_str())).unwrap();
        let cpu: u64 = busy
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('m')
            .parse()
            .unwrap();
        assert!(
            (200..=330).contains(&cpu),
            "the loaded VMI under its 300m limit: {top}"
        );
        println!("{top}");
        println!("{}", k.run(&["get", "hpa"]));
    }
    std::thread::sleep(Duration::from_secs(SYNC));
    assert_eq!(set_replicas(&d), 2);
    // Stop the load (Enter, as in the lab).
    let reply = console(&d, &vmi, "\n", "burn stopped");
    assert!(reply.contains("burn stopped"), "{reply}");
    let t_stop = Instant::now();
    wait(
        &d,
        Duration::from_secs(WINDOW + 2 * SYNC + RESOLUTION + 30),
        "the scale-down",
        || (set_replicas(&d) == 1).then_some(()),
    );
    let down = t_stop.elapsed();
    println!(
        "scaled 2 → 1 {:.1}s after the load stopped (window {WINDOW}s)",
        down.as_secs_f64()
    );
    assert!(
        down >= Duration::from_secs(WINDOW - RESOLUTION - SYNC),
        "scaled down after {down:?}, inside the {WINDOW}s window"
    );
    // minReplicas holds while idle.
    std::thread::sleep(Duration::from_secs(2 * SYNC));
    assert_eq!(set_replicas(&d), 1);
    assert!(hpa(&d)["status"]["lastScaleTime"].is_string());
    // Prometheus text has the VMIs.
    let m = d.req("GET", "/metrics", None, b"").text();
    assert!(
        m.contains(&format!(
            "kubevirt_vmi_cpu_usage_seconds_total{{namespace=\"default\",name=\"{vmi}\""
        )),
        "{m}"
    );
    assert!(
        m.contains("corral_hpa_rescales_total{direction=\"up\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("corral_hpa_rescales_total{direction=\"down\"} 1"),
        "{m}"
    );
}

#[test]
fn an_hpa_on_a_missing_target_reports_scaling_inactive() {
    let d = Daemon::start(&["--hpa-sync-period", "1s"]);
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "orphan"},
        "spec": {"scaleTargetRef": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet", "name": "nope"},
            "maxReplicas": 3}});
    let r = d.req(
        "POST",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
        Some("application/json"),
        hpa.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201);
    let c = wait_for(Duration::from_secs(10), "ScalingActive", || {
        let v =
            d.get_json("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/orphan");
        v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ScalingActive")
            .cloned()
    });
    assert_eq!(
        (c["status"].clone(), c["reason"].clone()),
        (json!("False"), json!("FailedGetScale"))
    );
    assert!(c["message"].as_str().unwrap().contains("nope"));
}
