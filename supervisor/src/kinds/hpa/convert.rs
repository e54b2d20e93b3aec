//! `autoscaling/v1` ⇄ `autoscaling/v2` conversion, the way the API server converts: v1 carries
//! the CPU target in `targetCPUUtilizationPercentage` and everything v1 cannot express (other
//! metrics, `behavior`, status conditions and other current metrics) in annotations, so that an
//! object written through v2 and read/updated through v1 loses nothing.

use serde_json::{Map, Value, json};

use super::types::{MetricSpec, MetricTarget, ResourceMetricSource, SpecV1, SpecV2};

/// v2 metrics v1 cannot express (JSON list of v2 `MetricSpec`).
pub const ANN_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// v2 `behavior` (JSON).
pub const ANN_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// v2 status conditions (JSON list).
pub const ANN_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// v2 current metrics v1 cannot express (JSON list).
pub const ANN_CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// The metric a v1 `targetCPUUtilizationPercentage` stands for.
pub fn cpu_metric(utilization: i64) -> MetricSpec {
    MetricSpec {
        type_: Some("Resource".into()),
        resource: Some(ResourceMetricSource {
            name: Some("cpu".into()),
            target: Some(MetricTarget {
                type_: Some("Utilization".into()),
                average_utilization: Some(utilization),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn is_cpu_utilization(m: &MetricSpec) -> Option<i64> {
    let r = m.resource.as_ref()?;
    (m.type_.as_deref() == Some("Resource") && r.name.as_deref() == Some("cpu"))
        .then(|| r.target.as_ref()?.average_utilization)
        .flatten()
}

fn annotations_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let m = crate::meta::meta_mut(obj);
    if !m.get("annotations").is_some_and(Value::is_object) {
        m.insert("annotations".into(), json!({}));
    }
    m.get_mut("annotations")
        .and_then(Value::as_object_mut)
        .expect("just made an object")
}

/// Removes annotation `key` and parses it as JSON.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let anns = obj
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?;
    let v = anns.remove(key)?;
    if anns.is_empty() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("annotations");
        }
    }
    serde_json::from_str(v.as_str()?).ok()
}

fn put_annotation(obj: &mut Value, key: &str, v: &Value) {
    annotations_mut(obj).insert(key.into(), json!(v.to_string()));
}

/// A v1 spec (plus the annotations of `obj`, which are consumed) as a v2 spec.
pub fn spec_from_v1(spec: &SpecV1, obj: &mut Value) -> SpecV2 {
    let mut metrics: Vec<MetricSpec> = Vec::new();
    if let Some(t) = spec.target_cpu_utilization_percentage {
        metrics.push(cpu_metric(t));
    }
    if let Some(extra) = take_annotation(obj, ANN_METRICS) {
        if let Ok(list) = serde_json::from_value::<Vec<MetricSpec>>(extra) {
            metrics.extend(list);
        }
    }
    let behavior = take_annotation(obj, ANN_BEHAVIOR).and_then(|b| serde_json::from_value(b).ok());
    SpecV2 {
        scale_target_ref: spec.scale_target_ref.clone(),
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        metrics: (!metrics.is_empty()).then_some(metrics),
        behavior,
    }
}

/// A v2 status in place of a v1 status (annotations of `obj` consumed).
pub fn status_from_v1(obj: &mut Value) {
    let conditions = take_annotation(obj, ANN_CONDITIONS);
    let extra = take_annotation(obj, ANN_CURRENT_METRICS);
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let mut current: Vec<Value> = Vec::new();
    if let Some(u) = status.remove("currentCPUUtilizationPercentage") {
        current.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}}));
    }
    if let Some(Value::Array(list)) = extra {
        current.extend(list);
    }
    if !current.is_empty() {
        status.insert("currentMetrics".into(), Value::Array(current));
    }
    if let Some(c @ Value::Array(_)) = conditions {
        status.insert("conditions".into(), c);
    }
}

/// The stored (v2) object as served by `autoscaling/v1`.
pub fn to_v1(stored: &Value) -> Value {
    let mut o = stored.clone();
    o["apiVersion"] = json!("autoscaling/v1");
    let spec: SpecV2 = o
        .get("spec")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let mut target = None;
    let mut others = Vec::new();
    for m in spec.metrics.iter().flatten() {
        match (target, is_cpu_utilization(m)) {
            (None, Some(u)) => target = Some(u),
            _ => others.push(m.clone()),
        }
    }
    if !others.is_empty() {
        put_annotation(&mut o, ANN_METRICS, &json!(others));
    }
    if let Some(b) = &spec.behavior {
        put_annotation(&mut o, ANN_BEHAVIOR, &json!(b));
    }
    let v1 = SpecV1 {
        scale_target_ref: spec.scale_target_ref,
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        target_cpu_utilization_percentage: target,
    };
    if o.get("spec").is_some() {
        o["spec"] = json!(v1);
    }
    let status = o.get("status").cloned();
    if let Some(Value::Object(mut st)) = status {
        let mut cpu = None;
        let mut rest = Vec::new();
        if let Some(Value::Array(list)) = st.remove("currentMetrics") {
            for m in list {
                let u = m
                    .get("resource")
                    .filter(|r| r.get("name").and_then(Value::as_str) == Some("cpu"))
                    .and_then(|r| r.get("current")?.get("averageUtilization")?.as_i64());
                match (cpu, u) {
                    (None, Some(u)) => cpu = Some(u),
                    _ => rest.push(m),
                }
            }
        }
        if let Some(u) = cpu {
            st.insert("currentCPUUtilizationPercentage".into(), json!(u));
        }
        if !rest.is_empty() {
            put_annotation(&mut o, ANN_CURRENT_METRICS, &json!(rest));
        }
        if let Some(c) = st.remove("conditions") {
            if c.as_array().is_some_and(|a| !a.is_empty()) {
                put_annotation(&mut o, ANN_CONDITIONS, &c);
            }
        }
        o["status"] = Value::Object(st);
    }
    o
}

/// A v1-shaped object (written around the API) in the storage shape.
fn canonical(obj: &Value) -> Value {
    let mut o = obj.clone();
    if super::version_of(obj) == "v1" {
        let v1: SpecV1 = obj
            .get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let v2 = spec_from_v1(&v1, &mut o);
        o["spec"] = json!(v2);
        status_from_v1(&mut o);
    }
    o
}

/// The stored object as served by `version` (`v1` or `v2`).
pub fn to_version(stored: &Value, version: &str) -> Value {
    let stored = &canonical(stored);
    if version == "v1" {
        return to_v1(stored);
    }
    let mut o = stored.clone();
    o["apiVersion"] = json!(format!("autoscaling/{version}"));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_only_fields_survive_a_v1_round_trip() {
        let stored = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "VirtualMachineInstanceReplicaSet", "name": "s"},
                "minReplicas": 1, "maxReplicas": 3,
                "metrics": [serde_json::to_value(cpu_metric(75)).unwrap()],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}},
            "status": {"currentReplicas": 1, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 283, "averageValue": "283m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]},
        });
        let v1 = to_v1(&stored);
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 75);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 283);
        assert!(v1["status"].get("conditions").is_none());
        let anns = v1["metadata"]["annotations"].as_object().unwrap();
        assert!(anns.contains_key(ANN_BEHAVIOR) && anns.contains_key(ANN_CONDITIONS));

        // Back: what a v1 client PUTs is what was stored.
        let mut back = v1.clone();
        let spec1: SpecV1 = serde_json::from_value(back["spec"].clone()).unwrap();
        let spec2 = spec_from_v1(&spec1, &mut back);
        status_from_v1(&mut back);
        assert_eq!(json!(spec2), stored["spec"]);
        assert_eq!(back["status"]["conditions"], stored["status"]["conditions"]);
        assert_eq!(
            back["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            283
        );
        assert!(back["metadata"].get("annotations").is_none());
    }
}
