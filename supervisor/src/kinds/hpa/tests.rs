use serde_json::{Value, json};

use super::policy::{PolicyKind, Select};
use super::*;

fn seed_hpa() -> Value {
    serde_norway::from_str(include_str!("../../../../tests/fixtures/seed/hpa.yaml")).unwrap()
}

fn v2(spec: Value) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"}, "spec": spec})
}

fn target() -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet", "name": "s"})
}

fn fields(e: AdmitError) -> Vec<String> {
    match e {
        AdmitError::Invalid(inv) => inv.causes.into_iter().map(|c| c.to_string()).collect(),
        other => vec![other.to_string()],
    }
}

#[test]
fn seed_lab_hpa_is_admitted_strictly_as_v1_and_stored_as_v2() {
    let (stored, w) = admit_versioned(&seed_hpa(), "v1", FieldValidation::Strict).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(stored["apiVersion"], "autoscaling/v2");
    assert_eq!(
        stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        75
    );
    assert!(
        stored["spec"]
            .get("targetCPUUtilizationPercentage")
            .is_none()
    );
    let a = resolve(&stored);
    assert_eq!(
        (a.min_replicas, a.max_replicas, a.cpu_targets.clone()),
        (1, 2, vec![75])
    );
    assert_eq!(a.target.name, "lab05-cirros-replicaset");
    assert!(a.behavior.is_none(), "v1 HPAs take the legacy path");
    // Served back through v1, the seed's spec is unchanged.
    let v1 = convert::to_version(&stored, "v1");
    assert_eq!(v1["spec"], seed_hpa()["spec"]);
    // A v1-shaped object resolves the same way.
    assert_eq!(resolve(&seed_hpa()), a);
}

#[test]
fn v2_defaults_are_filled_in() {
    let obj = v2(
        json!({"scaleTargetRef": target(), "maxReplicas": 4, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}}),
    );
    let (stored, _) = admit_versioned(&obj, "v2", FieldValidation::Strict).unwrap();
    assert_eq!(stored["spec"]["minReplicas"], 1);
    assert_eq!(
        stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert_eq!(
        stored["spec"]["behavior"]["scaleUp"]["policies"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let a = resolve(&stored);
    let b = a.behavior.unwrap();
    assert_eq!(b.scale_down.stabilization_window_seconds, Some(20));
    assert_eq!(b.scale_up.select, Select::Max);
    assert_eq!(b.scale_up.policies[0].kind, PolicyKind::Pods);
    // A v2 HPA without behavior takes the legacy path, as in Kubernetes.
    let plain = v2(json!({"scaleTargetRef": target(), "maxReplicas": 4}));
    let (stored, _) = admit_versioned(&plain, "v2", FieldValidation::Strict).unwrap();
    assert!(resolve(&stored).behavior.is_none());
}

#[test]
fn invalid_specs_are_rejected_with_the_api_servers_messages() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"scaleTargetRef": target(), "minReplicas": 3, "maxReplicas": 2}),
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
        ),
        (
            json!({"scaleTargetRef": target(), "minReplicas": 0, "maxReplicas": 2}),
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        ),
        (
            json!({"scaleTargetRef": target()}),
            "spec.maxReplicas: Invalid value: 0: must be greater than 0",
        ),
        (
            json!({"maxReplicas": 2}),
            "spec.scaleTargetRef: Required value",
        ),
        (
            json!({"scaleTargetRef": {"kind": "VirtualMachineInstanceReplicaSet"}, "maxReplicas": 2}),
            "spec.scaleTargetRef.name: Required value",
        ),
        (
            json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "maxReplicas": 2}),
            "spec.scaleTargetRef.kind: Unsupported value: \"Deployment\"",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}}}]}),
            "spec.metrics[0].type: Unsupported value: \"Pods\"",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Cheddar"}]}),
            "spec.metrics[0].type: Unsupported value: \"Cheddar\": supported values",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 50}}}]}),
            "spec.metrics[0].resource.name: Unsupported value: \"memory\"",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}]}),
            "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "behavior": {"scaleUp": {"selectPolicy": "Most"}}}),
            "spec.behavior.scaleUp.selectPolicy: Unsupported value: \"Most\"",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3601}}}),
            "spec.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: 3601: must be less than or equal to 3600",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 2,
                "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}}}),
            "spec.behavior.scaleDown.policies[0].periodSeconds: Invalid value: 0: must be greater than zero",
        ),
    ];
    for (spec, want) in cases {
        let err = admit_versioned(&v2(spec.clone()), "v2", FieldValidation::Warn).unwrap_err();
        let got = fields(err);
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "{spec}: want {want:?}, got {got:?}"
        );
    }
    let mut bad_v1 = seed_hpa();
    bad_v1["spec"]["targetCPUUtilizationPercentage"] = json!(0);
    let got = fields(admit_versioned(&bad_v1, "v1", FieldValidation::Warn).unwrap_err());
    assert_eq!(
        got,
        vec!["spec.targetCPUUtilizationPercentage: Invalid value: 0: must be greater than 0"]
    );
    let mut no_spec = seed_hpa();
    no_spec.as_object_mut().unwrap().remove("spec");
    assert!(admit_versioned(&no_spec, "v1", FieldValidation::Warn).is_err());
}

#[test]
fn unknown_fields_are_judged_against_the_written_version_and_dropped() {
    let mut obj = seed_hpa();
    obj["spec"]["metrics"] = json!([{"type": "Resource"}]);
    let err = admit_versioned(&obj, "v1", FieldValidation::Strict).unwrap_err();
    assert!(
        err.to_string().contains("unknown field \"spec.metrics\""),
        "{err}"
    );
    let (stored, w) = admit_versioned(&obj, "v1", FieldValidation::Warn).unwrap();
    assert_eq!(w, vec!["unknown field \"spec.metrics\"".to_string()]);
    assert_eq!(
        stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 75,
        "the v1 target wins; the stray field is dropped"
    );
    let mut v2obj = v2(
        json!({"scaleTargetRef": target(), "maxReplicas": 2, "targetCPUUtilizationPercentage": 5}),
    );
    v2obj["spec"]["bogus"] = json!(1);
    let (_, w) = admit_versioned(&v2obj, "v2", FieldValidation::Warn).unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
}

#[test]
fn v1_status_writes_become_v2_status() {
    let mut obj = seed_hpa();
    obj["status"] =
        json!({"currentReplicas": 1, "desiredReplicas": 1, "currentCPUUtilizationPercentage": 2});
    let (stored, _) = admit_versioned(&obj, "v1", FieldValidation::Warn).unwrap();
    assert_eq!(
        stored["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        2
    );
    assert!(
        stored["status"]
            .get("currentCPUUtilizationPercentage")
            .is_none()
    );
}

#[test]
fn replica_bounds_are_corrals() {
    for (spec, field) in [
        (
            json!({"scaleTargetRef": target(), "maxReplicas": 10_001}),
            "spec.maxReplicas",
        ),
        (
            json!({"scaleTargetRef": target(), "minReplicas": i64::MAX, "maxReplicas": 3}),
            "spec.minReplicas",
        ),
        (
            json!({"scaleTargetRef": target(), "maxReplicas": i64::MAX}),
            "spec.maxReplicas",
        ),
    ] {
        let e = admit_versioned(&v2(spec), "v2", FieldValidation::Strict).unwrap_err();
        let f = fields(e);
        assert!(
            f.iter()
                .any(|c| c.starts_with(field) && c.contains("10000")),
            "{f:?}"
        );
    }
    let ok = v2(json!({"scaleTargetRef": target(), "maxReplicas": 10_000}));
    assert!(admit_versioned(&ok, "v2", FieldValidation::Strict).is_ok());
}
