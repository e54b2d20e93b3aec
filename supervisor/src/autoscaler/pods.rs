//! VMIs as the autoscaler's pods: phase, readiness, start time and CPU request from the stored
//! VMI, and CPU samples from the metrics source.

use serde_json::Value;

use super::algorithm::{Pod, PodPhase, Readiness, Sample};
use crate::cgroups::settings::effective_cpu_request;
use crate::kinds::validation::decode;
use crate::kinds::vmi::VmiSpec;
use crate::meta;
use crate::metrics::Sampler;

/// Where CPU samples come from (the sampler; a table in tests).
pub trait CpuSource: Send + Sync {
    /// The latest CPU sample of the VMI with this uid.
    fn cpu(&self, uid: &str) -> Option<Sample>;
}

impl CpuSource for Sampler {
    fn cpu(&self, uid: &str) -> Option<Sample> {
        let m = self.get(uid)?;
        Some(Sample {
            millis: m.cpu_millis(),
            timestamp: m.timestamp,
            window: m.window,
        })
    }
}

fn phase_of(vmi: &Value) -> PodPhase {
    match vmi
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
    {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    }
}

fn readiness_of(vmi: &Value) -> Option<Readiness> {
    let c = vmi
        .get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    Some(Readiness {
        ready: c.get("status").and_then(Value::as_str) == Some("True"),
        last_transition: meta::parse_time(c.get("lastTransitionTime")?.as_str()?)?,
    })
}

/// When the VM started running: the first transition to `Running`.
fn start_of(vmi: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    vmi.get("status")?
        .get("phaseTransitionTimestamps")?
        .as_array()?
        .iter()
        .find(|t| t.get("phase").and_then(Value::as_str) == Some("Running"))
        .and_then(|t| meta::parse_time(t.get("phaseTransitionTimestamp")?.as_str()?))
}

/// The CPU request the autoscaler divides by: `requests.cpu`, else `limits.cpu`, else KubeVirt's
/// 100m per vCPU (what the VMI's virt-launcher pod would request).
pub fn cpu_request(vmi: &Value) -> Option<u64> {
    let spec = decode::<VmiSpec>(vmi.get("spec")?, "spec").ok()?.value;
    let (needs, _) = spec.validate("spec").ok()?;
    Some(effective_cpu_request(
        needs.cpu_request_millis,
        needs.cpu_limit_millis,
        needs.vcpus,
    ))
}

/// A VMI as a pod.
pub fn pod_of(vmi: &Value) -> Pod {
    Pod {
        name: meta::uid(vmi).to_string(),
        phase: phase_of(vmi),
        deleting: meta::is_deleting(vmi),
        readiness: readiness_of(vmi),
        start_time: start_of(vmi),
        request_millis: cpu_request(vmi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vmi_to_pod() {
        let set: Value =
            serde_norway::from_str(include_str!("../../../tests/fixtures/seed/vmirs.yaml"))
                .unwrap();
        let mut spec = set["spec"]["template"]["spec"].clone();
        spec["domain"]["cpu"] = json!({"cores": 2});
        spec["domain"]["resources"] =
            json!({"requests": {"memory": "64Mi"}, "limits": {"cpu": "300m"}});
        let vmi = json!({
            "metadata": {"name": "v", "uid": "u1"},
            "spec": spec,
            "status": {"phase": "Running",
                "phaseTransitionTimestamps": [
                    {"phase": "Pending", "phaseTransitionTimestamp": "2026-11-27T12:00:00Z"},
                    {"phase": "Running", "phaseTransitionTimestamp": "2026-11-27T12:00:02Z"}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-27T12:00:03Z"}]},
        });
        let p = pod_of(&vmi);
        assert_eq!(p.name, "u1");
        assert_eq!(p.phase, PodPhase::Running);
        assert_eq!(p.request_millis, Some(300), "no request: the limit");
        assert!(p.readiness.unwrap().ready);
        assert_eq!(
            p.start_time.unwrap().to_rfc3339(),
            "2026-11-27T12:00:02+00:00"
        );
        let mut v2 = vmi.clone();
        v2["spec"]["domain"]["resources"] = json!({"requests": {"memory": "64Mi"}});
        v2["status"]["phase"] = json!("Scheduling");
        let p = pod_of(&v2);
        assert_eq!((p.phase, p.request_millis), (PodPhase::Pending, Some(200)));
    }
}
