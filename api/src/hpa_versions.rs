//! HorizontalPodAutoscalers are stored once, in the `autoscaling/v2` shape, and served as
//! `autoscaling/v1` or `v2` by the URL's version (`supervisor::kinds::hpa` holds the schemas and
//! the conversion). Writes are converted here before they reach the service: a body is admitted
//! against the schema of the version it was sent to; a patch is applied to the view of that
//! version and re-expressed as a JSON patch against the stored object.

use serde_json::{Value, json};
use supervisor::kinds::hpa;
use supervisor::kinds::{FieldValidation, Kind};
use supervisor::meta;
use supervisor::service::{OpError, PatchType, apply_patch};
use supervisor::store::{ObjectKey, StoreError};

use crate::state::AppState;
use crate::status::ApiError;

/// The stored HPA as served at `version`.
pub fn to_version(obj: &Value, version: &str) -> Value {
    hpa::convert::to_version(obj, version)
}

fn admit_error(e: supervisor::kinds::AdmitError, name: &str) -> ApiError {
    ApiError::from_op(OpError::Admit(e), Kind::Hpa, name)
}

/// A body (POST or PUT, main resource) sent to `version`: the storage form, the warnings and the
/// field validation left for the service (which sees only the storage form). Other kinds pass
/// through.
pub fn incoming(
    kind: Kind,
    obj: Value,
    version: &str,
    fv: FieldValidation,
    create: bool,
) -> Result<(Value, Vec<String>, FieldValidation), ApiError> {
    if kind != Kind::Hpa {
        return Ok((obj, Vec::new(), fv));
    }
    let name = meta::name(&obj).to_string();
    let (mut stored, warnings) =
        hpa::admit_versioned(&obj, version, fv).map_err(|e| admit_error(e, &name))?;
    if create {
        // As the API server does for kinds with a status subresource.
        if let Some(o) = stored.as_object_mut() {
            o.remove("status");
        }
    }
    Ok((stored, warnings, FieldValidation::Ignore))
}

/// A status body (PUT `/status`) sent to `version`.
pub fn incoming_status(kind: Kind, obj: Value, version: &str) -> Value {
    if kind != Kind::Hpa {
        return obj;
    }
    hpa::status_to_storage(&obj, version)
}

/// A patch sent to `version`: the patch (and its type) to apply to the stored object, the
/// warnings and the field validation left for the service.
pub fn incoming_patch(
    st: &AppState,
    key: &ObjectKey,
    patch: Value,
    pt: PatchType,
    version: &str,
    fv: FieldValidation,
    status_only: bool,
) -> Result<(Value, PatchType, Vec<String>, FieldValidation), ApiError> {
    let kind = key.kind;
    if kind != Kind::Hpa {
        return Ok((patch, pt, Vec::new(), fv));
    }
    let name = key.name.as_str();
    let Some(cur) = st.store.get(key) else {
        if pt == PatchType::Apply && !status_only {
            let mut obj = patch;
            if obj.get("metadata").is_none() {
                obj["metadata"] = json!({"name": name});
            }
            let (stored, w, fv) = incoming(kind, obj, version, fv, true)?;
            return Ok((stored, PatchType::Apply, w, fv));
        }
        // The service answers NotFound.
        return Ok((patch, pt, Vec::new(), fv));
    };
    if let Some(rv) = patch
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
    {
        if rv != meta::meta_str(&cur, "resourceVersion").unwrap_or_default() {
            let e = StoreError::Conflict {
                kind,
                name: name.to_string(),
                reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
            };
            return Err(ApiError::from_op(e.into(), kind, name));
        }
    }
    let view = to_version(&cur, version);
    let patched = apply_patch(&view, &patch, pt).map_err(|e| ApiError::from_op(e, kind, name))?;
    let (target, warnings) = if status_only {
        let converted = hpa::status_to_storage(&patched, version);
        let mut t = (*cur).clone();
        match converted.get("status") {
            Some(s) => t["status"] = s.clone(),
            None => {
                if let Some(o) = t.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        (t, Vec::new())
    } else {
        let (mut t, w) =
            hpa::admit_versioned(&patched, version, fv).map_err(|e| admit_error(e, name))?;
        // The main resource keeps its status; the stored apiVersion stays as stored.
        match cur.get("status") {
            Some(s) => t["status"] = s.clone(),
            None => {
                if let Some(o) = t.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        t["apiVersion"] = cur.get("apiVersion").cloned().unwrap_or(Value::Null);
        (t, w)
    };
    Ok((
        hpa::patch_between(&cur, &target),
        PatchType::Json,
        warnings,
        FieldValidation::Ignore,
    ))
}
