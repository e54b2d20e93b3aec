//! `VirtualMachineInstanceReplicaSet` (kubevirt.io/v1): typed spec and validation, as KubeVirt's
//! admission webhook does it (selector must match the template's labels).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validation::{FieldError, Invalid, decode};
use super::vmi::VmiSpec;
use crate::meta::ObjectMeta;
use crate::selector::{LabelSelector, Selector};

/// Most replicas a set (or an HPA's bounds) may ask for.
pub const MAX_REPLICAS: i64 = 10_000;

/// `spec` of a VMIRS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub template: Option<Template>,
    #[serde(default)]
    pub paused: Option<bool>,
}

/// `spec.template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(default)]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: Option<Value>,
}

/// A VMIRS spec that passed validation.
#[derive(Debug, Clone)]
pub struct ValidReplicaSet {
    pub replicas: u32,
    pub selector: Selector,
    pub paused: bool,
    pub template_meta: ObjectMeta,
    pub template_spec: Value,
}

impl ReplicaSetSpec {
    /// Validates like KubeVirt's vmirs admitter; unknown fields inside the template's VMI spec are
    /// appended to `unknown`.
    pub fn validate(&self, unknown: &mut Vec<String>) -> Result<ValidReplicaSet, Invalid> {
        let mut inv = Invalid::default();
        let replicas = self.replicas.unwrap_or(1);
        if replicas < 0 {
            inv.push(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            ));
        } else if replicas > MAX_REPLICAS {
            inv.push(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be less than or equal to 10000",
            ));
        }
        let Some(template) = &self.template else {
            inv.push(FieldError::required(
                "spec.template",
                "missing virtual machine template.",
            ));
            return Err(inv);
        };
        let template_meta = template.metadata.clone().unwrap_or_default();
        super::vmi::check_transport(&template_meta, "spec.template.metadata", &mut inv);
        let labels = template_meta.labels.clone().unwrap_or_default();
        let selector = match &self.selector {
            None => {
                inv.push(FieldError::required(
                    "spec.selector",
                    "selector is required",
                ));
                None
            }
            Some(ls) => match ls.to_selector() {
                Ok(s) if s.is_empty() => {
                    inv.push(FieldError::invalid(
                        "spec.selector",
                        "{}",
                        "empty selector is not valid for a replica set",
                    ));
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    inv.push(FieldError::invalid(
                        "spec.selector",
                        "(selector)",
                        &e.to_string(),
                    ));
                    None
                }
            },
        };
        if let Some(sel) = &selector {
            if !sel.matches(&labels) {
                inv.push(FieldError::invalid(
                    "spec.selector",
                    format!("\"{sel}\""),
                    "selector does not match labels.",
                ));
            }
        }
        let spec_value = template.spec.clone().unwrap_or(Value::Null);
        if spec_value.is_null() {
            inv.push(FieldError::required(
                "spec.template.spec",
                "missing virtual machine template spec.",
            ));
        } else {
            match decode::<VmiSpec>(&spec_value, "spec.template.spec") {
                Ok(d) => {
                    unknown.extend(d.unknown);
                    if let Err(e) = d.value.validate("spec.template.spec") {
                        inv.causes.extend(e.causes);
                    }
                }
                Err(e) => inv.push(e),
            }
        }
        inv.into_result()?;
        Ok(ValidReplicaSet {
            replicas: u32::try_from(replicas).unwrap_or(0),
            selector: selector.unwrap_or_default(),
            paused: self.paused.unwrap_or(false),
            template_meta,
            template_spec: spec_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_spec() -> Value {
        json!({
            "replicas": 2,
            "selector": {"matchLabels": {"kubevirt.io/domain": "lab05-cirros"}},
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": "lab05-cirros"}},
                "spec": {
                    "domain": {"cpu": {"cores": 1},
                        "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
                        "resources": {"requests": {"memory": "265Mi"}}},
                    "volumes": [{"name": "containerdisk", "containerDisk": {"image": "x"}}]
                }
            }
        })
    }

    fn check(spec: Value) -> Result<ValidReplicaSet, Invalid> {
        let d = decode::<ReplicaSetSpec>(&spec, "spec").unwrap();
        let mut unknown = d.unknown;
        d.value.validate(&mut unknown)
    }

    #[test]
    fn valid_set() {
        let v = check(seed_spec()).unwrap();
        assert_eq!(v.replicas, 2);
        assert_eq!(v.selector.to_string(), "kubevirt.io/domain=lab05-cirros");
    }

    #[test]
    fn invalid_sets_table() {
        let mut mismatch = seed_spec();
        mismatch["selector"]["matchLabels"]["kubevirt.io/domain"] = json!("other");
        let mut negative = seed_spec();
        negative["replicas"] = json!(-1);
        let mut huge = seed_spec();
        huge["replicas"] = json!(MAX_REPLICAS + 1);
        let mut no_template = seed_spec();
        no_template.as_object_mut().unwrap().remove("template");
        let mut no_selector = seed_spec();
        no_selector.as_object_mut().unwrap().remove("selector");
        let mut bad_vmi = seed_spec();
        bad_vmi["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("lots");
        let cases = [
            (mismatch, "spec.selector", "selector does not match labels."),
            (
                negative,
                "spec.replicas",
                "must be greater than or equal to 0",
            ),
            (huge, "spec.replicas", "must be less than or equal to 10000"),
            (
                no_template,
                "spec.template",
                "missing virtual machine template.",
            ),
            (no_selector, "spec.selector", "selector is required"),
            (
                bad_vmi,
                "spec.template.spec.domain.resources.requests.memory",
                "quantities must match",
            ),
        ];
        for (spec, field, msg) in cases {
            let err = check(spec).unwrap_err();
            assert!(
                err.causes
                    .iter()
                    .any(|c| c.field == field && c.message.contains(msg)),
                "want {field}: {msg}; got {err}"
            );
        }
    }
}
