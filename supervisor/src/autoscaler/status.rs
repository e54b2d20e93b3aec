//! The HPA's status as the controller writes it (`autoscaling/v2` shape): conditions with
//! `lastTransitionTime` kept while the status is unchanged (`setConditionInList`), the current
//! metrics, and `currentReplicas`/`desiredReplicas`, which are always present once a status
//! exists (the Python client's models require them).

use serde_json::{Value, json};

/// `AbleToScale`, `ScalingActive`, `ScalingLimited`.
pub const ABLE_TO_SCALE: &str = "AbleToScale";
pub const SCALING_ACTIVE: &str = "ScalingActive";
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// Sets condition `type_`; the transition time changes only with the status.
pub fn set_condition(
    status: &mut Value,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let st = if value { "True" } else { "False" };
    if !status.is_object() {
        *status = json!({});
    }
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"]
        .as_array_mut()
        .expect("just made a list");
    let idx = match list
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        Some(i) => i,
        None => {
            list.push(json!({"type": type_}));
            list.len() - 1
        }
    };
    let c = &mut list[idx];
    if c.get("status").and_then(Value::as_str) != Some(st) {
        c["lastTransitionTime"] = json!(now);
    }
    c["status"] = json!(st);
    c["reason"] = json!(reason);
    c["message"] = json!(message);
}

/// A condition's (status, reason).
pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<(bool, &'a str)> {
    let c = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
    Some((
        c.get("status")?.as_str()? == "True",
        c.get("reason").and_then(Value::as_str).unwrap_or(""),
    ))
}

/// The current-metric entry of a cpu utilization metric.
pub fn cpu_metric_status(utilization: i32, average_millis: u64) -> Value {
    json!({
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "current": {
                "averageUtilization": utilization,
                "averageValue": crate::quantity::format_cpu_millis(average_millis),
            },
        },
    })
}

/// `setStatus`: replicas and metrics; `lastScaleTime` moves to `now` on a rescale.
pub fn set_replicas(
    status: &mut Value,
    current: i32,
    desired: i32,
    metrics: Option<Vec<Value>>,
    rescaled_at: Option<&str>,
) {
    if !status.is_object() {
        *status = json!({});
    }
    status["currentReplicas"] = json!(current);
    status["desiredReplicas"] = json!(desired);
    match metrics {
        Some(m) if !m.is_empty() => status["currentMetrics"] = Value::Array(m),
        _ => {
            if let Some(o) = status.as_object_mut() {
                o.remove("currentMetrics");
            }
        }
    }
    if let Some(t) = rescaled_at {
        status["lastScaleTime"] = json!(t);
    }
}

/// Makes sure a written status carries both replica counts (keeping earlier values).
pub fn ensure_replicas(status: &mut Value) {
    for k in ["currentReplicas", "desiredReplicas"] {
        if status.get(k).is_none() {
            status[k] = json!(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut s = json!({});
        set_condition(&mut s, ABLE_TO_SCALE, true, "SucceededGetScale", "m", "t1");
        set_condition(&mut s, ABLE_TO_SCALE, true, "ReadyForNewScale", "m2", "t2");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(s["conditions"][0]["reason"], "ReadyForNewScale");
        set_condition(&mut s, ABLE_TO_SCALE, false, "FailedGetScale", "m3", "t3");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "t3");
        set_condition(&mut s, SCALING_ACTIVE, true, "ValidMetricFound", "", "t3");
        assert_eq!(
            condition(&s, SCALING_ACTIVE),
            Some((true, "ValidMetricFound"))
        );
        assert_eq!(s["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn replicas_are_always_present() {
        let mut s = json!({"conditions": []});
        ensure_replicas(&mut s);
        assert_eq!(
            (s["currentReplicas"].clone(), s["desiredReplicas"].clone()),
            (json!(0), json!(0))
        );
        set_replicas(
            &mut s,
            1,
            2,
            Some(vec![cpu_metric_status(283, 283)]),
            Some("t"),
        );
        assert_eq!(
            s["currentMetrics"][0]["resource"]["current"]["averageValue"],
            "283m"
        );
        assert_eq!(s["lastScaleTime"], "t");
        set_replicas(&mut s, 2, 2, None, None);
        assert!(s.get("currentMetrics").is_none());
        assert_eq!(s["lastScaleTime"], "t");
    }
}
