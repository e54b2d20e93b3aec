//! HorizontalPodAutoscaler (`autoscaling/v1` and `autoscaling/v2`).
//!
//! Storage decision: an HPA is stored once, in the `autoscaling/v2` shape (the API server's
//! storage version), whatever version it was written through. A write through a version is
//! decoded with that version's schema (unknown fields are reported against it and then dropped,
//! as the API server does for built-in kinds), validated, converted and defaulted
//! (`minReplicas: 1`, a cpu 80% metric when none is given, every absent `behavior` field); reads
//! convert back ([`convert::to_version`]). v1 keeps what it cannot express in the
//! `autoscaling.alpha.kubernetes.io/*` annotations, so nothing is lost across versions.

pub mod convert;
pub mod policy;
pub mod types;
pub mod validate;

use serde_json::{Value, json};

use super::validation::{FieldError, Invalid};
use super::{AdmitError, Envelope, FieldValidation, Kind, check_meta, decode_envelope, finish};
use convert::{spec_from_v1, status_from_v1};
pub use policy::Autoscaling;
use types::{SpecV1, SpecV2};

/// The shape of an HPA object: `v1` when its spec carries `targetCPUUtilizationPercentage`,
/// else `v2`. (The shape, not `apiVersion`: the store stamps every kind with one apiVersion, and
/// a v1 spec without a target reads the same through both schemas.)
pub fn version_of(obj: &Value) -> &'static str {
    let v1_field = obj
        .get("spec")
        .and_then(|s| s.get("targetCPUUtilizationPercentage"))
        .is_some();
    let v2_field = obj
        .get("spec")
        .is_some_and(|s| s.get("metrics").is_some() || s.get("behavior").is_some());
    if v1_field && !v2_field { "v1" } else { "v2" }
}

/// Applies the API server's defaults to a v2 spec.
pub fn default_spec(spec: &mut SpecV2) {
    if spec.min_replicas.is_none() {
        spec.min_replicas = Some(1);
    }
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = Some(vec![convert::cpu_metric(i64::from(
            policy::DEFAULT_CPU_UTILIZATION,
        ))]);
    }
    if let Some(b) = &spec.behavior {
        spec.behavior = Some(policy::default_behavior(b));
    }
}

fn decode_spec(
    obj: &mut Value,
    version: &str,
    inv: &mut Invalid,
) -> Result<(Option<SpecV2>, Vec<String>), AdmitError> {
    if version == "v1" {
        let (env, unknown): (Envelope<SpecV1>, _) = decode_envelope(obj)?;
        check_meta(&env.metadata.unwrap_or_default(), Kind::Hpa, inv);
        let Some(spec) = env.spec else {
            return Ok((None, unknown));
        };
        validate::validate_v1(&spec, inv);
        let v2 = spec_from_v1(&spec, obj);
        if let Some(b) = &v2.behavior {
            let probe = SpecV2 {
                behavior: Some(b.clone()),
                ..Default::default()
            };
            let mut binv = Invalid::default();
            validate::validate_v2(&probe, &mut binv);
            inv.causes.extend(
                binv.causes
                    .into_iter()
                    .filter(|c| c.field.starts_with("spec.behavior")),
            );
        }
        Ok((Some(v2), unknown))
    } else {
        let (env, unknown): (Envelope<SpecV2>, _) = decode_envelope(obj)?;
        check_meta(&env.metadata.unwrap_or_default(), Kind::Hpa, inv);
        if let Some(spec) = &env.spec {
            validate::validate_v2(spec, inv);
        }
        Ok((env.spec, unknown))
    }
}

/// Admits an HPA written through `version` (`v1` or `v2`): returns the storage (v2) form and the
/// warnings for unknown fields. The status is converted too (for the status subresource).
pub fn admit_versioned(
    obj: &Value,
    version: &str,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), AdmitError> {
    let mut out = obj.clone();
    let mut inv = Invalid::default();
    let (spec, unknown) = decode_spec(&mut out, version, &mut inv)?;
    let Some(mut spec) = spec else {
        inv.push(FieldError::required("spec", "spec is required"));
        return Err(AdmitError::Invalid(inv));
    };
    let warnings = finish(inv, unknown, fv)?;
    default_spec(&mut spec);
    if version == "v1" {
        status_from_v1(&mut out);
    }
    out["spec"] = json!(spec);
    out["apiVersion"] = json!("autoscaling/v2");
    Ok((out, warnings))
}

/// The status of an object written through `version` (the status subresource), in the storage
/// shape; spec and metadata are left as they are.
pub fn status_to_storage(obj: &Value, version: &str) -> Value {
    let mut out = obj.clone();
    if version == "v1" {
        status_from_v1(&mut out);
    }
    out
}

/// The RFC 6902 operations that turn `from` into `to` (a patch written against a served view,
/// re-expressed against the stored object).
pub fn patch_between(from: &Value, to: &Value) -> Value {
    serde_json::to_value(json_patch::diff(from, to)).unwrap_or_else(|_| json!([]))
}

/// Admission of a stored-form (or v1-shaped) HPA, for [`super::admit`].
pub fn admit(obj: &Value, fv: FieldValidation) -> Result<Vec<String>, AdmitError> {
    admit_versioned(obj, version_of(obj), fv).map(|(_, w)| w)
}

/// The resolved autoscaling policy of a stored HPA (either shape; defaults applied).
pub fn resolve(obj: &Value) -> Autoscaling {
    let mut o = obj.clone();
    let mut spec: SpecV2 = if version_of(obj) == "v1" {
        let v1: SpecV1 = obj
            .get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        spec_from_v1(&v1, &mut o)
    } else {
        obj.get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default()
    };
    default_spec(&mut spec);
    Autoscaling::from_spec(&spec)
}

#[cfg(test)]
mod tests;
