//! HorizontalPodAutoscaler objects over the real daemon, without VMs: the seed lab's v1 YAML,
//! the v2 shape and its conversion to v1, validation (422s), the status of an HPA whose target
//! is missing, the Table kubectl prints, and the metrics endpoints (`metrics.k8s.io`, the pod and
//! node lists kubectl's `top` needs, Prometheus `/metrics`).

use std::time::Duration;

use corral_tests::daemon::{Daemon, wait_for};
use serde_json::{Value, json};

const V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
const V2: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
const NAME: &str = "lab05-cirros-replicaset";

fn seed_hpa() -> String {
    std::fs::read_to_string(corral_tests::bin::workspace().join("tests/fixtures/seed/hpa.yaml"))
        .unwrap()
}

fn daemon() -> Daemon {
    Daemon::start(&[
        "--hpa-sync-period",
        "500ms",
        "--metrics-resolution",
        "500ms",
    ])
}

fn post_json(d: &Daemon, path: &str, v: &Value) -> api::client::Response {
    d.req(
        "POST",
        path,
        Some("application/json"),
        v.to_string().as_bytes(),
    )
}

fn v2_hpa(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name}, "spec": spec})
}

fn target() -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet", "name": NAME})
}

#[test]
fn seed_hpa_is_served_as_v1_and_v2() {
    let d = daemon();
    let r = d.req(
        "POST",
        &format!("{V1}?fieldValidation=Strict"),
        Some("application/yaml"),
        seed_hpa().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json().unwrap();
    assert_eq!(created["apiVersion"], "autoscaling/v1");
    assert_eq!(created["spec"]["targetCPUUtilizationPercentage"], 75);
    let v2 = d.get_json(&format!("{V2}/{NAME}"));
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0],
        json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}}})
    );
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
    // A merge patch through v2 is seen through v1.
    let r = d.req(
        "PATCH",
        &format!("{V2}/{NAME}"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":60}}}]}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["apiVersion"], "autoscaling/v2");
    let v1 = d.get_json(&format!("{V1}/{NAME}"));
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    // A strategic merge patch through v1 (what kubectl apply sends for an HPA).
    let r = d.req(
        "PATCH",
        &format!("{V1}/{NAME}"),
        Some("application/strategic-merge-patch+json"),
        br#"{"spec":{"maxReplicas":3,"targetCPUUtilizationPercentage":75}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = d.get_json(&format!("{V2}/{NAME}"));
    assert_eq!(v2["spec"]["maxReplicas"], 3);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        75
    );
    // Lists at both versions.
    let l1 = d.get_json(V1);
    assert_eq!(l1["kind"], "HorizontalPodAutoscalerList");
    assert_eq!(l1["items"][0]["apiVersion"], "autoscaling/v1");
    assert_eq!(d.get_json(V2)["items"][0]["apiVersion"], "autoscaling/v2");
}

#[test]
fn v2_only_fields_survive_a_v1_round_trip() {
    let d = daemon();
    let obj = v2_hpa(
        "behaved",
        json!({"scaleTargetRef": target(), "maxReplicas": 4,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}}),
    );
    let r = post_json(&d, V2, &obj);
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json().unwrap();
    assert_eq!(created["spec"]["minReplicas"], 1, "defaulted");
    assert_eq!(
        created["spec"]["behavior"]["scaleUp"]["policies"][0],
        json!({"type": "Pods", "value": 4, "periodSeconds": 15}),
        "behavior defaulted as the API server does"
    );
    // GET and PUT back through v1: the behavior travels in an annotation and comes back.
    // The controller writes the status meanwhile: a PUT with a stale resourceVersion is a 409,
    // so read-modify-write until it applies, as clients do.
    wait_for(Duration::from_secs(10), "a v1 PUT to apply", || {
        let v1 = d.get_json(&format!("{V1}/behaved"));
        assert!(
            v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/behavior"]
                .as_str()
                .unwrap()
                .contains("\"stabilizationWindowSeconds\":20")
        );
        let r = d.req(
            "PUT",
            &format!("{V1}/behaved"),
            None,
            v1.to_string().as_bytes(),
        );
        match r.status {
            200 => Some(()),
            409 => None,
            s => panic!("PUT: {s} {}", r.text()),
        }
    });
    let v2 = d.get_json(&format!("{V2}/behaved"));
    assert_eq!(v2["spec"]["behavior"], created["spec"]["behavior"]);
    assert!(v2["metadata"].get("annotations").is_none());
}

#[test]
fn invalid_hpas_are_422() {
    let d = daemon();
    let cases = [
        (
            json!({"scaleTargetRef": target(), "minReplicas": 3, "maxReplicas": 2}),
            "spec.maxReplicas",
        ),
        (
            json!({"scaleTargetRef": target(), "minReplicas": 0, "maxReplicas": 2}),
            "spec.minReplicas",
        ),
        (json!({"maxReplicas": 2}), "spec.scaleTargetRef"),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1"}}}]}),
            "spec.metrics[0].type",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 50}}}]}),
            "spec.metrics[0].resource.name",
        ),
    ];
    for (spec, field) in cases {
        let r = post_json(&d, V2, &v2_hpa("bad", spec.clone()));
        assert_eq!(r.status, 422, "{spec}: {}", r.text());
        let s = r.json().unwrap();
        assert_eq!(s["reason"], "Invalid");
        let causes = s["details"]["causes"].as_array().unwrap();
        assert!(causes.iter().any(|c| c["field"] == field), "{spec}: {s}");
    }
    // v1 too, against the v1 schema.
    let bad = seed_hpa().replace(
        "targetCPUUtilizationPercentage: 75",
        "targetCPUUtilizationPercentage: 0",
    );
    let r = d.req("POST", V1, Some("application/yaml"), bad.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("spec.targetCPUUtilizationPercentage"));
    assert_eq!(d.get_json(V2)["items"].as_array().unwrap().len(), 0);
}

#[test]
fn an_hpa_on_a_missing_target_reports_why() {
    let d = daemon();
    let r = d.req("POST", V1, Some("application/yaml"), seed_hpa().as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let st = wait_for(Duration::from_secs(10), "the HPA's first sync", || {
        let v = d.get_json(&format!("{V2}/{NAME}"));
        v.get("status")
            .filter(|s| s.get("conditions").is_some())
            .cloned()
    });
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(cond("ScalingActive")["status"], "False", "{st}");
    assert_eq!(cond("ScalingActive")["reason"], "FailedGetScale");
    assert!(
        cond("ScalingActive")["message"]
            .as_str()
            .unwrap()
            .contains(NAME)
    );
    assert_eq!(cond("AbleToScale")["reason"], "FailedGetScale");
    // The Python client's models require both counts once a status exists.
    let v1 = d.get_json(&format!("{V1}/{NAME}"));
    assert!(
        v1["status"]["currentReplicas"].is_i64() && v1["status"]["desiredReplicas"].is_i64(),
        "{v1}"
    );
    // kubectl get hpa's row.
    let mut req = api::client::Request::new("GET", V2);
    req.accept = Some("application/json;as=Table;v=v1;g=meta.k8s.io");
    let t = d.client().send(&req).unwrap().json().unwrap();
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            NAME,
            format!("VirtualMachineInstanceReplicaSet/{NAME}"),
            "cpu: <unknown>/75%",
            "1",
            2,
            0,
            t["rows"][0]["cells"][6]
        ])
    );
    // The warning event.
    let ev = d.get_json("/api/v1/namespaces/default/events");
    assert!(
        ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "FailedGetScale"
                && e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"),
        "{ev}"
    );
}

#[test]
fn metrics_endpoints_without_vms() {
    let d = daemon();
    let r = d.req("POST", V1, Some("application/yaml"), seed_hpa().as_bytes());
    assert_eq!(r.status, 201);
    // metrics.k8s.io is discovered (kubectl top checks /apis).
    let groups = d.get_json("/apis");
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io")
    );
    let pm = d.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods");
    assert_eq!(pm["kind"], "PodMetricsList");
    assert_eq!(pm["items"], json!([]));
    // kubectl top pod's fallback when there are no pod metrics, and top node's node list.
    let pods = d.get_json("/api/v1/namespaces/default/pods");
    assert_eq!(
        (pods["kind"].clone(), pods["items"].clone()),
        (json!("PodList"), json!([]))
    );
    let nodes = d.get_json("/api/v1/nodes");
    let host = nodes["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let nm = wait_for(Duration::from_secs(10), "node metrics", || {
        let v = d.get_json("/apis/metrics.k8s.io/v1beta1/nodes");
        v["items"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a[0].clone())
    });
    assert_eq!(nm["metadata"]["name"], host.as_str());
    assert!(nm["usage"]["cpu"].as_str().unwrap().ends_with('m') || nm["usage"]["cpu"].is_string());
    let missing = d.req(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
        None,
        b"",
    );
    assert_eq!(missing.status, 404);
    // Prometheus text.
    wait_for(Duration::from_secs(10), "an HPA reconcile counted", || {
        let r = d.req("GET", "/metrics", None, b"");
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = r.text();
        let line = text
            .lines()
            .find(|l| l.starts_with("corral_reconciles_total{kind=\"horizontalpodautoscaler\"}"))?;
        let n: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (n >= 1.0
            && text.contains(&format!("kube_horizontalpodautoscaler_spec_max_replicas{{namespace=\"default\",horizontalpodautoscaler=\"{NAME}\"}} 2"))
            && text.contains("# TYPE kubevirt_vmi_cpu_usage_seconds_total counter"))
        .then_some(())
    });
    // Console input needs a running VMI.
    let r = d.req(
        "POST",
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/nope/consoleinput",
        Some("text/plain"),
        b"burn\n",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}
