//! The kinds corral serves, their API coordinates, and admission (decode, strict unknown-field
//! checks, validation) of incoming objects.

pub mod hpa;
pub mod interfaces;
pub mod probes;
pub mod services;
pub mod validation;
pub mod vmi;
pub mod vmirs;

use serde::Deserialize;
use serde_json::Value;

use crate::meta::ObjectMeta;
use crate::selector::{is_dns_subdomain, validate_key, validate_value};
use validation::{FieldError, Invalid, decode};

/// A stored kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ReplicaSet,
    Vmi,
    Hpa,
    Event,
    Service,
    Endpoints,
    EndpointSlice,
}

/// How a kind appears in the API.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
}

impl Kind {
    /// Every kind, in storage order.
    pub const ALL: [Kind; 7] = [
        Kind::ReplicaSet,
        Kind::Vmi,
        Kind::Hpa,
        Kind::Event,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
    ];

    /// API coordinates of the kind.
    pub fn info(self) -> &'static KindInfo {
        match self {
            Kind::ReplicaSet => &KindInfo {
                kind: "VirtualMachineInstanceReplicaSet",
                list_kind: "VirtualMachineInstanceReplicaSetList",
                group: "kubevirt.io",
                version: "v1",
                plural: "virtualmachineinstancereplicasets",
                singular: "virtualmachineinstancereplicaset",
                short_names: &["vmirs", "vmirss"],
            },
            Kind::Vmi => &KindInfo {
                kind: "VirtualMachineInstance",
                list_kind: "VirtualMachineInstanceList",
                group: "kubevirt.io",
                version: "v1",
                plural: "virtualmachineinstances",
                singular: "virtualmachineinstance",
                short_names: &["vmi", "vmis"],
            },
            Kind::Hpa => &KindInfo {
                kind: "HorizontalPodAutoscaler",
                list_kind: "HorizontalPodAutoscalerList",
                group: "autoscaling",
                version: "v1",
                plural: "horizontalpodautoscalers",
                singular: "horizontalpodautoscaler",
                short_names: &["hpa"],
            },
            Kind::Event => &KindInfo {
                kind: "Event",
                list_kind: "EventList",
                group: "",
                version: "v1",
                plural: "events",
                singular: "event",
                short_names: &["ev"],
            },
            Kind::Service => &KindInfo {
                kind: "Service",
                list_kind: "ServiceList",
                group: "",
                version: "v1",
                plural: "services",
                singular: "service",
                short_names: &["svc"],
            },
            Kind::Endpoints => &KindInfo {
                kind: "Endpoints",
                list_kind: "EndpointsList",
                group: "",
                version: "v1",
                plural: "endpoints",
                singular: "endpoints",
                short_names: &["ep"],
            },
            Kind::EndpointSlice => &KindInfo {
                kind: "EndpointSlice",
                list_kind: "EndpointSliceList",
                group: "discovery.k8s.io",
                version: "v1",
                plural: "endpointslices",
                singular: "endpointslice",
                short_names: &[],
            },
        }
    }

    /// `group/version` (or `v1` for the core group).
    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.version.to_string()
        } else {
            format!("{}/{}", i.group, i.version)
        }
    }

    /// `plural.group` as used in Kubernetes messages (`virtualmachineinstances.kubevirt.io`).
    pub fn qualified_plural(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.plural.to_string()
        } else {
            format!("{}.{}", i.plural, i.group)
        }
    }

    /// Short stable tag used in storage keys.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "vmirs",
            Kind::Vmi => "vmi",
            Kind::Hpa => "hpa",
            Kind::Event => "event",
            Kind::Service => "svc",
            Kind::Endpoints => "ep",
            Kind::EndpointSlice => "eps",
        }
    }

    /// Inverse of [`Kind::tag`].
    pub fn from_tag(tag: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// What to do with fields the schema does not know (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop nothing, say nothing.
    Ignore,
    /// Keep them and return a warning each (the API server's default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

/// Why admission refused an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Semantic validation failed (HTTP 422).
    #[error("{0}")]
    Invalid(Invalid),
    /// Strict field validation found unknown fields (HTTP 400).
    #[error("strict decoding error: {}", .0.iter().map(|f| format!("unknown field \"{f}\"")).collect::<Vec<_>>().join(", "))]
    UnknownFields(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "S: serde::de::DeserializeOwned")]
struct Envelope<S> {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    spec: Option<S>,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<Value>,
}

/// Endpoints have no `spec`: metadata and `subsets`.
#[derive(Deserialize)]
struct EndpointsEnvelope {
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

fn meta_name(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

fn check_meta(meta: &ObjectMeta, kind: Kind, inv: &mut Invalid) {
    let max = if kind == Kind::Vmi { 63 } else { 253 };
    match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => {
            if !is_dns_subdomain(n) || n.len() > max {
                inv.push(FieldError::invalid(
                    "metadata.name",
                    format!("\"{n}\""),
                    &format!("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most {max} characters)"),
                ));
            }
        }
        (_, Some(g)) if !g.is_empty() => {
            let stem = g.trim_end_matches(['-', '.']);
            if !stem.is_empty() && !is_dns_subdomain(stem) {
                inv.push(FieldError::invalid(
                    "metadata.generateName",
                    format!("\"{g}\""),
                    "must be a valid name prefix",
                ));
            }
        }
        _ => inv.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    for (k, v) in meta.labels.iter().flatten() {
        if let Err(e) = validate_key(k).and_then(|()| validate_value(v)) {
            inv.push(FieldError::invalid(
                format!("metadata.labels[{k}]"),
                format!("\"{v}\""),
                &e.to_string(),
            ));
        }
    }
}

fn decode_envelope<S: serde::de::DeserializeOwned>(
    obj: &Value,
) -> Result<(Envelope<S>, Vec<String>), AdmitError> {
    // serde decodes a struct from an array too (by position): an object is required here, as
    // callers then write fields of `obj` by key.
    if !obj.is_object() {
        return Err(AdmitError::Invalid(
            FieldError {
                reason: "FieldValueTypeInvalid",
                field: "<root>".into(),
                message: "Invalid value: the object must be a JSON/YAML mapping".into(),
            }
            .into(),
        ));
    }
    let d = decode::<Envelope<S>>(obj, "").map_err(|e| AdmitError::Invalid(e.into()))?;
    Ok((d.value, d.unknown))
}

fn finish(
    inv: Invalid,
    unknown: Vec<String>,
    fv: FieldValidation,
) -> Result<Vec<String>, AdmitError> {
    if fv == FieldValidation::Strict && !unknown.is_empty() {
        return Err(AdmitError::UnknownFields(unknown));
    }
    inv.into_result().map_err(AdmitError::Invalid)?;
    Ok(match fv {
        FieldValidation::Warn => unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
        _ => Vec::new(),
    })
}

/// Admits an object of `kind` for create or update: decodes it, applies the field-validation
/// mode to unknown fields and validates it. Returns the warnings to send back.
pub fn admit(kind: Kind, obj: &Value, fv: FieldValidation) -> Result<Vec<String>, AdmitError> {
    let mut inv = Invalid::default();
    match kind {
        Kind::ReplicaSet => {
            let (env, mut unknown) = decode_envelope::<vmirs::ReplicaSetSpec>(obj)?;
            check_meta(&env.metadata.unwrap_or_default(), kind, &mut inv);
            match env.spec {
                None => inv.push(FieldError::required("spec", "spec is required")),
                Some(spec) => {
                    if let Err(e) = spec.validate(&mut unknown) {
                        inv.causes.extend(e.causes);
                    }
                }
            }
            finish(inv, unknown, fv)
        }
        Kind::Vmi => {
            let (env, unknown) = decode_envelope::<vmi::VmiSpec>(obj)?;
            let meta = env.metadata.unwrap_or_default();
            check_meta(&meta, kind, &mut inv);
            vmi::check_transport(&meta, "metadata", &mut inv);
            match env.spec {
                None => inv.push(FieldError::required("spec", "spec is required")),
                Some(spec) => {
                    if let Err(e) = spec.validate("spec") {
                        inv.causes.extend(e.causes);
                    }
                }
            }
            finish(inv, unknown, fv)
        }
        Kind::Hpa => hpa::admit(obj, fv),
        Kind::Event => {
            let (env, unknown) = decode_envelope::<Value>(obj)?;
            check_meta(&env.metadata.unwrap_or_default(), kind, &mut inv);
            finish(inv, unknown, fv)
        }
        Kind::Service => {
            let (env, unknown) = decode_envelope::<services::ServiceSpec>(obj)?;
            check_meta(&env.metadata.unwrap_or_default(), kind, &mut inv);
            if let Some(name) = meta_name(obj) {
                // A Service's name is a DNS label (it becomes a DNS name in a cluster).
                if !validation::is_dns1123_label(name) {
                    inv.push(FieldError::invalid(
                        "metadata.name",
                        format!("\"{name}\""),
                        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
                    ));
                }
            }
            match env.spec {
                None => inv.push(FieldError::required("spec", "")),
                Some(spec) => spec.validate(&mut inv),
            }
            finish(inv, unknown, fv)
        }
        Kind::Endpoints => {
            decode_envelope::<Value>(obj)?;
            check_meta(
                &decode::<EndpointsEnvelope>(obj, "")
                    .map_err(|e| AdmitError::Invalid(e.into()))?
                    .value
                    .metadata
                    .unwrap_or_default(),
                kind,
                &mut inv,
            );
            services::validate_endpoints(obj, &mut inv);
            finish(inv, Vec::new(), fv)
        }
        Kind::EndpointSlice => {
            decode_envelope::<Value>(obj)?;
            check_meta(
                &decode::<EndpointsEnvelope>(obj, "")
                    .map_err(|e| AdmitError::Invalid(e.into()))?
                    .value
                    .metadata
                    .unwrap_or_default(),
                kind,
                &mut inv,
            );
            services::validate_endpoint_slice(obj, &mut inv);
            finish(inv, Vec::new(), fv)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_vmirs() -> Value {
        let text = include_str!("../../../tests/fixtures/seed/vmirs.yaml");
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn seed_lab_yaml_is_admitted_strictly() {
        let w = admit(Kind::ReplicaSet, &seed_vmirs(), FieldValidation::Strict).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn unknown_fields_warn_or_reject() {
        let mut obj = seed_vmirs();
        obj["spec"]["template"]["spec"]["domain"]["flux"] = Value::Bool(true);
        obj["spec"]["bogus"] = Value::from(1);
        let w = admit(Kind::ReplicaSet, &obj, FieldValidation::Warn).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        let err = admit(Kind::ReplicaSet, &obj, FieldValidation::Strict).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("unknown field \"spec.template.spec.domain.flux\""),
            "{msg}"
        );
        assert!(msg.contains("unknown field \"spec.bogus\""), "{msg}");
        assert!(
            admit(Kind::ReplicaSet, &obj, FieldValidation::Ignore)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn positional_objects_are_refused_not_panicked_on() {
        // serde reads `[apiVersion, kind, metadata, spec]` as the envelope; HPA admission then
        // wrote `out["spec"]` into the array: a panic (an abort in release) from one request.
        let arr = serde_json::json!([null, null, {"name": "h"},
            {"scaleTargetRef": {"kind": "VirtualMachineInstanceReplicaSet", "name": "s"},
             "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}]);
        for kind in Kind::ALL {
            assert!(matches!(
                admit(kind, &arr, FieldValidation::Warn),
                Err(AdmitError::Invalid(_))
            ));
        }
        for v in ["v1", "v2"] {
            assert!(hpa::admit_versioned(&arr, v, FieldValidation::Warn).is_err());
            assert!(hpa::admit_versioned(&Value::from("x"), v, FieldValidation::Warn).is_err());
        }
    }

    #[test]
    fn bad_names_are_invalid() {
        let mut obj = seed_vmirs();
        obj["metadata"]["name"] = Value::from("Bad_Name");
        assert!(matches!(
            admit(Kind::ReplicaSet, &obj, FieldValidation::Warn),
            Err(AdmitError::Invalid(_))
        ));
    }
}
