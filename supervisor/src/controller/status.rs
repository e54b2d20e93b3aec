//! Small pure helpers that edit `status` of stored objects: phases with transition timestamps and
//! conditions that keep their `lastTransitionTime` while unchanged.

use serde_json::{Value, json};

use super::replicas::Phase;

/// Sets `status.phase`, appending to `phaseTransitionTimestamps` when it changes.
pub fn set_phase(status: &mut Value, phase: Phase, now: &str) {
    if status.get("phase").and_then(Value::as_str) == Some(phase.as_str()) {
        return;
    }
    status["phase"] = json!(phase.as_str());
    let entry = json!({"phase": phase.as_str(), "phaseTransitionTimestamp": now});
    match status
        .get_mut("phaseTransitionTimestamps")
        .and_then(Value::as_array_mut)
    {
        Some(list) => list.push(entry),
        None => status["phaseTransitionTimestamps"] = json!([entry]),
    }
}

/// Sets (or replaces) condition `type_`; `lastTransitionTime` changes only when the status does.
pub fn set_condition(
    status: &mut Value,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let st = if value { "True" } else { "False" };
    let mut cond =
        json!({"type": type_, "status": st, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        cond["reason"] = json!(reason);
    }
    if !message.is_empty() {
        cond["message"] = json!(message);
    }
    let list = match status.get_mut("conditions").and_then(Value::as_array_mut) {
        Some(l) => l,
        None => {
            status["conditions"] = json!([]);
            status["conditions"].as_array_mut().expect("just set")
        }
    };
    if let Some(existing) = list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        if existing.get("status").and_then(Value::as_str) == Some(st) {
            cond["lastTransitionTime"] = existing
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or(json!(now));
        }
        *existing = cond;
    } else {
        list.push(cond);
    }
}

/// Removes condition `type_`.
pub fn remove_condition(status: &mut Value, type_: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(type_));
    }
}

/// Value of condition `type_` (`Some(true)` for `"True"`).
pub fn condition(obj: &Value, type_: &str) -> Option<bool> {
    obj.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .and_then(|c| c.get("status")?.as_str())
        .map(|s| s == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_record_transitions_once() {
        let mut s = json!({});
        set_phase(&mut s, Phase::Pending, "t1");
        set_phase(&mut s, Phase::Pending, "t2");
        set_phase(&mut s, Phase::Running, "t3");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["phaseTransitionTimestamps"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn conditions_keep_transition_time_while_unchanged() {
        let mut s = json!({});
        set_condition(&mut s, "Ready", false, "", "", "t1");
        set_condition(&mut s, "Ready", false, "", "", "t2");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "t1");
        set_condition(&mut s, "Ready", true, "", "", "t3");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "t3");
        assert_eq!(
            condition(&json!({"status": s.clone()}), "Ready"),
            Some(true)
        );
        remove_condition(&mut s, "Ready");
        assert_eq!(condition(&json!({"status": s}), "Ready"), None);
    }
}
