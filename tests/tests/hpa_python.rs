//! The official Python client (pinned in `.venv` by `.ci/install-deps.sh`) reads corral's HPAs
//! through its typed models, which require `currentReplicas` and `desiredReplicas` in a status.

use std::process::Command;
use std::time::Duration;

use corral_tests::daemon::{Daemon, wait_for};

const SCRIPT: &str = r#"
import sys
from kubernetes import client
cfg = client.Configuration()
cfg.host = sys.argv[1]
cfg.ssl_ca_cert = sys.argv[3]
cfg.api_key = {"authorization": "Bearer " + open(sys.argv[2]).read().strip()}
api = client.ApiClient(cfg)
v1 = client.AutoscalingV1Api(api)
v2 = client.AutoscalingV2Api(api)
h = v1.read_namespaced_horizontal_pod_autoscaler("lab05-cirros-replicaset", "default")
assert h.spec.target_cpu_utilization_percentage == 75, h.spec
assert h.status.current_replicas == 0 and h.status.desired_replicas == 0, h.status
lst = v1.list_horizontal_pod_autoscaler_for_all_namespaces()
assert [i.metadata.name for i in lst.items] == ["lab05-cirros-replicaset"]
h2 = v2.read_namespaced_horizontal_pod_autoscaler("lab05-cirros-replicaset", "default")
assert h2.spec.metrics[0].resource.target.average_utilization == 75
conds = {c.type: c for c in h2.status.conditions}
assert conds["ScalingActive"].status == "False" and conds["ScalingActive"].reason == "FailedGetScale", conds
p = v1.patch_namespaced_horizontal_pod_autoscaler("lab05-cirros-replicaset", "default", {"spec": {"maxReplicas": 4}})
assert p.spec.max_replicas == 4
st = v1.read_namespaced_horizontal_pod_autoscaler_status("lab05-cirros-replicaset", "default")
assert st.status.desired_replicas == 0
print("python client ok")
"#;

#[test]
fn python_client_reads_hpas() {
    let python = corral_tests::bin::workspace().join(".venv/bin/python");
    if !python.exists() {
        println!(
            "SKIP python_client_reads_hpas: {} missing (run .ci/install-deps.sh)",
            python.display()
        );
        return;
    }
    let port = 20000 + (std::process::id() % 20000) as u16;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "hpa-python-token\n").unwrap();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&[
        "--hpa-sync-period",
        "500ms",
        "--listen",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let hpa =
        std::fs::read(corral_tests::bin::workspace().join("tests/fixtures/seed/hpa.yaml")).unwrap();
    let r = d.req(
        "POST",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
        Some("application/yaml"),
        &hpa,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for(Duration::from_secs(10), "the HPA status", || {
        let v = d.get_json(
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/lab05-cirros-replicaset",
        );
        v.get("status")
            .filter(|s| s.get("conditions").is_some())
            .map(|_| ())
    });
    let out = Command::new(&python)
        .args([
            "-c",
            SCRIPT,
            &format!("https://{addr}"),
            token.to_str().unwrap(),
            d.state_dir.join("tls/ca.crt").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("python client ok"), "{text}");
}
