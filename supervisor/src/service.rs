//! The operations the API offers, with Kubernetes semantics: admission, optimistic concurrency,
//! status/scale subresources, patches and deletion propagation. The HTTP layer only parses and
//! maps; everything that decides lives here.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::capacity::Fit;
use crate::controller::replicaset::{FOREGROUND, ORPHAN};
use crate::controller::vmi::VMI_FINALIZER;
use crate::kinds::services::{Cidr, Taken, default_and_allocate};
use crate::kinds::validation::{FieldError, Invalid, decode};
use crate::kinds::vmi::VmiSpec;
use crate::kinds::{AdmitError, FieldValidation, Kind, admit};
use crate::meta;
use crate::store::{Deleted, ObjectKey, Store, StoreError};

/// Why an operation failed (each maps to one HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The media type is not supported (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The operation is not allowed on this object (405).
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl OpError {
    fn invalid(e: FieldError) -> Self {
        OpError::Admit(AdmitError::Invalid(Invalid::from(e)))
    }
}

/// Patch formats (`Content-Type` of a PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386 `application/merge-patch+json`.
    Merge,
    /// RFC 6902 `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`: accepted for built-in kinds (HPA), applied as a
    /// merge patch without `$`-directives (no list of those kinds has a merge key).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply): create-or-merge.
    Apply,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// Outcome of a delete.
pub enum DeleteOutcome {
    /// Removed now.
    Gone(Arc<Value>),
    /// Still there until its finalizers ran (`deletionTimestamp` set).
    Pending(Arc<Value>),
}

/// Capacity facts used to reject VMs that can never fit.
pub trait CapacityCheck: Send + Sync {
    /// Would a VM with `guest_memory` bytes ever fit this host?
    fn can_ever_fit(&self, guest_memory: u64) -> Result<(), String>;
}

impl CapacityCheck for crate::capacity::Capacity {
    fn can_ever_fit(&self, guest_memory: u64) -> Result<(), String> {
        let (total, _) = crate::host::memory();
        match self.check(self.need(guest_memory), 0, total, u64::MAX) {
            Fit::Never(m) => Err(m),
            _ => Ok(()),
        }
    }
}

/// The operations over the store.
pub struct Service {
    pub store: Arc<Store>,
    capacity: Arc<dyn CapacityCheck>,
    /// The range cluster IPs of Services come from.
    service_range: Cidr,
    /// Serializes the allocation of cluster IPs and node ports with the store write.
    allocation: Mutex<()>,
}

/// Kubernetes' (kubeadm's) default service range.
pub const DEFAULT_SERVICE_RANGE: &str = "10.96.0.0/12";

fn strip_status_for_create(kind: Kind, obj: &mut Value) {
    if matches!(kind, Kind::ReplicaSet | Kind::Vmi | Kind::Service) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
}

/// Removes `$`-prefixed directive keys of a strategic merge patch.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Strategic merge of the list `parent.field` whose elements are keyed by `key` (a Service's
/// `spec.ports`, keyed by `port`): patch elements merge into the element with the same key or
/// are added, `$patch: delete` removes one, `$setElementOrder/<field>` orders the result. The
/// list is taken out of `patch` so the plain merge that follows leaves it alone.
fn merge_keyed_list(doc: &mut Value, patch: &mut Value, parent: &str, field: &str, key: &str) {
    let Some(pp) = patch.get_mut(parent).and_then(Value::as_object_mut) else {
        return;
    };
    let order = pp.remove(&format!("$setElementOrder/{field}"));
    // null (delete the list) or a non-list: left to the plain merge.
    if !pp.get(field).is_some_and(Value::is_array) {
        return;
    }
    let Some(Value::Array(items)) = pp.remove(field) else {
        return;
    };
    let mut list: Vec<Value> = doc
        .pointer(&format!("/{parent}/{field}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in items {
        let k = item.get(key).cloned();
        let at = list
            .iter()
            .position(|e| e.get(key) == k.as_ref() && k.is_some());
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => json_patch::merge(&mut list[i], &item),
            (None, false) => {
                let mut fresh = Value::Null;
                json_patch::merge(&mut fresh, &item);
                list.push(fresh);
            }
        }
    }
    if let Some(Value::Array(order)) = order {
        let rank = |e: &Value| {
            order
                .iter()
                .position(|o| o.get(key) == e.get(key))
                .unwrap_or(usize::MAX)
        };
        list.sort_by_key(rank);
    }
    if !doc.get(parent).is_some_and(Value::is_object) {
        doc[parent] = json!({});
    }
    doc[parent][field] = Value::Array(list);
}

/// Applies a patch document to `target`.
pub fn apply_patch(target: &Value, patch: &Value, pt: PatchType) -> Result<Value, OpError> {
    let mut doc = target.clone();
    match pt {
        PatchType::Merge | PatchType::Apply | PatchType::Strategic => {
            if !patch.is_object() {
                return Err(OpError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            let mut p = patch.clone();
            if pt == PatchType::Strategic {
                merge_keyed_list(&mut doc, &mut p, "spec", "ports", "port");
                strip_directives(&mut p);
            }
            json_patch::merge(&mut doc, &p);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| OpError::BadRequest(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                OpError::Admit(AdmitError::Invalid(Invalid::from(FieldError::invalid(
                    "patch",
                    "(json patch)",
                    &e.to_string(),
                ))))
            })?;
        }
    }
    Ok(doc)
}

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<Store>, capacity: Arc<dyn CapacityCheck>) -> Self {
        Service {
            store,
            capacity,
            service_range: Cidr::parse(DEFAULT_SERVICE_RANGE).expect("the default range parses"),
            allocation: Mutex::new(()),
        }
    }

    /// Takes cluster IPs from `range` instead of [`DEFAULT_SERVICE_RANGE`].
    pub fn with_service_range(mut self, range: Cidr) -> Self {
        self.service_range = range;
        self
    }

    /// Defaults a Service and allocates its cluster IP and node ports against the stored ones.
    fn allocate(&self, ns: &str, obj: &mut Value, old: Option<&Value>) -> Result<(), OpError> {
        let name = meta::meta_str(obj, "name").unwrap_or_default().to_string();
        let (all, _) = self.store.list(Kind::Service, None, |_| true);
        let taken = Taken::from_services(all.iter().map(|a| a.as_ref()), &format!("{ns}/{name}"));
        default_and_allocate(obj, old, self.service_range, &taken)
            .map_err(|e| OpError::Admit(AdmitError::Invalid(e)))
    }

    fn check_capacity(&self, kind: Kind, obj: &Value) -> Result<(), OpError> {
        let (spec, path) = match kind {
            Kind::Vmi => (obj.get("spec"), "spec"),
            Kind::ReplicaSet => (
                obj.get("spec")
                    .and_then(|s| s.get("template"))
                    .and_then(|t| t.get("spec")),
                "spec.template.spec",
            ),
            _ => return Ok(()),
        };
        let Some(spec) = spec else { return Ok(()) };
        let Ok(d) = decode::<VmiSpec>(spec, path) else {
            return Ok(());
        };
        let Ok((needs, _)) = d.value.validate(path) else {
            return Ok(());
        };
        self.capacity.can_ever_fit(needs.guest_memory).map_err(|m| {
            OpError::invalid(FieldError::invalid(
                format!("{path}.domain.resources.requests.memory"),
                crate::quantity::format_bytes(needs.guest_memory),
                &format!("the VM can never fit on this host: {m}"),
            ))
        })
    }

    fn check_body_identity(
        kind: Kind,
        obj: &Value,
        name: Option<&str>,
        ns: &str,
    ) -> Result<(), OpError> {
        if !obj.is_object() {
            return Err(OpError::BadRequest(
                "the request body must be an object".into(),
            ));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str) {
            if k != kind.info().kind {
                return Err(OpError::BadRequest(format!(
                    "the body's kind {k:?} does not match the resource {} (kind {:?})",
                    kind.qualified_plural(),
                    kind.info().kind
                )));
            }
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            if av != kind.api_version() && !(kind == Kind::Hpa && av.starts_with("autoscaling/")) {
                return Err(OpError::BadRequest(format!(
                    "the body's apiVersion {av:?} does not match {:?}",
                    kind.api_version()
                )));
            }
        }
        if let Some(body_ns) = meta::meta_str(obj, "namespace") {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(OpError::BadRequest(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
        }
        if let Some(name) = name {
            if let Some(bn) = meta::meta_str(obj, "name") {
                if bn != name {
                    return Err(OpError::BadRequest(format!(
                        "the name of the object ({bn}) does not match the name on the URL ({name})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates an object. Returns it with the admission warnings.
    pub fn create(
        &self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
        fv: FieldValidation,
    ) -> Result<(Arc<Value>, Vec<String>), OpError> {
        Self::check_body_identity(kind, &obj, None, ns)?;
        if kind == Kind::Event {
            return Err(OpError::MethodNotAllowed(
                "events are written by corral only".into(),
            ));
        }
        let warnings = admit(kind, &obj, fv)?;
        self.check_capacity(kind, &obj)?;
        strip_status_for_create(kind, &mut obj);
        if kind == Kind::Vmi {
            let mut fins = meta::finalizers(&obj);
            if !fins.iter().any(|f| f == VMI_FINALIZER) {
                fins.push(VMI_FINALIZER.into());
            }
            meta::set_finalizers(&mut obj, &fins);
        }
        let _held = (kind == Kind::Service).then(|| self.allocation.lock());
        if kind == Kind::Service {
            self.allocate(ns, &mut obj, None)?;
        }
        let created = self.store.create(kind, ns, obj, true)?;
        Ok((created, warnings))
    }

    fn check_rv(kind: Kind, name: &str, obj: &Value, cur: &Value) -> Result<(), StoreError> {
        if let Some(rv) = meta::meta_str(obj, "resourceVersion").filter(|s| !s.is_empty()) {
            if rv != meta::meta_str(cur, "resourceVersion").unwrap_or_default() {
                return Err(StoreError::Conflict {
                    kind,
                    name: name.to_string(),
                    reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
                });
            }
        }
        Ok(())
    }

    /// Replaces the spec and metadata of an object (status is kept: it has its own subresource).
    pub fn replace(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        obj: Value,
        fv: FieldValidation,
    ) -> Result<(Arc<Value>, Vec<String>), OpError> {
        Self::check_body_identity(kind, &obj, Some(name), ns)?;
        let mut obj = obj;
        meta::meta_mut(&mut obj).insert("name".into(), json!(name));
        let warnings = admit(kind, &obj, fv)?;
        self.check_capacity(kind, &obj)?;
        if kind == Kind::Vmi {
            self.check_vmi_spec_unchanged(ns, name, &obj)?;
        }
        let key = ObjectKey::new(kind, ns, name);
        let _held = (kind == Kind::Service).then(|| self.allocation.lock());
        if kind == Kind::Service {
            let cur = self.store.get_or_404(&key)?;
            self.allocate(ns, &mut obj, Some(&cur))?;
        }
        let updated = self.store.update(&key, true, |cur| {
            Self::check_rv(kind, name, &obj, cur)?;
            let mut n = obj.clone();
            match cur.get("status") {
                Some(st) if kind != Kind::Event => n["status"] = st.clone(),
                _ => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            Ok(Some(n))
        })?;
        Ok((updated, warnings))
    }

    /// A running VMI's spec is immutable (as in KubeVirt); metadata may change.
    fn check_vmi_spec_unchanged(&self, ns: &str, name: &str, obj: &Value) -> Result<(), OpError> {
        let cur = self
            .store
            .get_or_404(&ObjectKey::new(Kind::Vmi, ns, name))?;
        if cur.get("spec") != obj.get("spec") {
            return Err(OpError::invalid(FieldError::forbidden(
                "spec",
                "a VirtualMachineInstance's spec cannot be changed after creation",
            )));
        }
        Ok(())
    }

    /// Replaces `status` only.
    pub fn replace_status(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        obj: Value,
    ) -> Result<Arc<Value>, OpError> {
        Self::check_body_identity(kind, &obj, Some(name), ns)?;
        let key = ObjectKey::new(kind, ns, name);
        Ok(self.store.update(&key, true, |cur| {
            Self::check_rv(kind, name, &obj, cur)?;
            let mut n = cur.clone();
            match obj.get("status") {
                Some(st) => n["status"] = st.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            Ok(Some(n))
        })?)
    }

    /// Patches an object (the main resource, or its `status` with `status_only`).
    pub fn patch(
        &self,
        key: &ObjectKey,
        patch: &Value,
        pt: PatchType,
        status_only: bool,
        fv: FieldValidation,
    ) -> Result<(Arc<Value>, Vec<String>), OpError> {
        let (kind, ns, name) = (key.kind, key.namespace.as_str(), key.name.as_str());
        let cur = match self.store.get(key) {
            Some(c) => c,
            None if pt == PatchType::Apply && !status_only => {
                let mut obj = patch.clone();
                strip_directives(&mut obj);
                return self.create(kind, ns, obj, fv);
            }
            None => {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                }
                .into());
            }
        };
        let mut merged = apply_patch(&cur, patch, pt)?;
        // A patch may carry a resourceVersion precondition; otherwise it applies to the latest.
        let precondition = patch
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_some();
        if !precondition {
            meta::meta_mut(&mut merged).remove("resourceVersion");
        }
        if status_only {
            return Ok((self.replace_status(kind, ns, name, merged)?, Vec::new()));
        }
        self.replace(kind, ns, name, merged, fv)
    }

    /// Deletes an object with the given propagation policy.
    pub fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        propagation: Propagation,
        grace: Option<i64>,
        uid: Option<&str>,
    ) -> Result<DeleteOutcome, OpError> {
        let key = ObjectKey::new(kind, ns, name);
        let fin = match (kind, propagation) {
            (Kind::ReplicaSet, Propagation::Foreground) => Some(FOREGROUND),
            (Kind::ReplicaSet, Propagation::Orphan) => Some(ORPHAN),
            _ => None,
        };
        if let Some(f) = fin {
            self.store.update(&key, true, |cur| {
                if meta::is_deleting(cur) {
                    return Ok(None);
                }
                let mut fins = meta::finalizers(cur);
                if fins.iter().any(|x| x == f) {
                    return Ok(None);
                }
                fins.push(f.to_string());
                let mut n = cur.clone();
                meta::set_finalizers(&mut n, &fins);
                Ok(Some(n))
            })?;
        }
        Ok(match self.store.delete(&key, uid, grace, true)? {
            Deleted::Gone(o) => DeleteOutcome::Gone(o),
            Deleted::Pending(o) => DeleteOutcome::Pending(o),
        })
    }

    /// The autoscaling/v1 `Scale` of a replica set.
    pub fn scale(&self, ns: &str, name: &str) -> Result<Value, OpError> {
        let set = self
            .store
            .get_or_404(&ObjectKey::new(Kind::ReplicaSet, ns, name))?;
        Ok(scale_of(&set))
    }

    /// Sets `spec.replicas` through the scale subresource. `scale` is a `Scale` object (PUT) whose
    /// `metadata.resourceVersion`, when present, must match.
    pub fn set_scale(&self, ns: &str, name: &str, scale: &Value) -> Result<Value, OpError> {
        let replicas = scale
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .ok_or_else(|| {
                OpError::invalid(FieldError::required(
                    "spec.replicas",
                    "replicas is required",
                ))
            })?;
        let replicas = replicas.as_i64().ok_or_else(|| {
            OpError::invalid(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be an integer",
            ))
        })?;
        if replicas < 0 {
            return Err(OpError::invalid(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )));
        }
        if replicas > crate::kinds::vmirs::MAX_REPLICAS {
            return Err(OpError::invalid(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be less than or equal to 10000",
            )));
        }
        let key = ObjectKey::new(Kind::ReplicaSet, ns, name);
        let updated = self.store.update(&key, true, |cur| {
            Self::check_rv(Kind::ReplicaSet, name, scale, cur)?;
            if cur
                .get("spec")
                .and_then(|s| s.get("replicas"))
                .and_then(Value::as_i64)
                == Some(replicas)
            {
                return Ok(None);
            }
            let mut n = cur.clone();
            n["spec"]["replicas"] = json!(replicas);
            Ok(Some(n))
        })?;
        Ok(scale_of(&updated))
    }

    /// Patches the Scale (merge or JSON patch against the current Scale).
    pub fn patch_scale(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
        pt: PatchType,
    ) -> Result<Value, OpError> {
        let cur = self.scale(ns, name)?;
        let mut merged = apply_patch(&cur, patch, pt)?;
        if patch
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_none()
        {
            meta::meta_mut(&mut merged).remove("resourceVersion");
        }
        self.set_scale(ns, name, &merged)
    }
}

/// The `Scale` view of a replica set.
pub fn scale_of(set: &Value) -> Value {
    let spec_replicas = set
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status = set.get("status");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(set),
            "namespace": meta::namespace(set),
            "uid": meta::uid(set),
            "resourceVersion": meta::meta_str(set, "resourceVersion").unwrap_or_default(),
            "creationTimestamp": meta::meta_str(set, "creationTimestamp").unwrap_or_default(),
        },
        "spec": {"replicas": spec_replicas},
        "status": {
            "replicas": status.and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(0),
            "selector": status.and_then(|s| s.get("labelSelector")).and_then(Value::as_str).unwrap_or_default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unlimited;
    impl CapacityCheck for Unlimited {
        fn can_ever_fit(&self, g: u64) -> Result<(), String> {
            if g > 1 << 40 {
                Err("too big".into())
            } else {
                Ok(())
            }
        }
    }

    fn svc() -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        (dir, Service::new(store, Arc::new(Unlimited)))
    }

    fn seed() -> Value {
        serde_norway::from_str(include_str!("../../tests/fixtures/seed/vmirs.yaml")).unwrap()
    }

    #[test]
    fn create_replace_with_stale_rv_conflicts() {
        let (_d, s) = svc();
        let (o, w) = s
            .create(Kind::ReplicaSet, "default", seed(), FieldValidation::Strict)
            .unwrap();
        assert!(w.is_empty());
        let mut stale = (*o).clone();
        stale["spec"]["replicas"] = json!(3);
        s.replace(
            Kind::ReplicaSet,
            "default",
            meta::name(&o),
            stale.clone(),
            FieldValidation::Strict,
        )
        .unwrap();
        let err = s
            .replace(
                Kind::ReplicaSet,
                "default",
                meta::name(&o),
                stale,
                FieldValidation::Strict,
            )
            .unwrap_err();
        assert!(
            matches!(err, OpError::Store(StoreError::Conflict { .. })),
            "{err}"
        );
    }

    #[test]
    fn strategic_patches_merge_service_ports_by_port() {
        let cur = json!({"spec": {"selector": {"a": "b"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 80},
            {"name": "https", "port": 443, "targetPort": 443}]}});
        // What `kubectl apply` sends after changing one targetPort and dropping https.
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 8443}],
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "$patch": "delete"},
                      {"name": "alt", "port": 8443}]}});
        let out = apply_patch(&cur, &patch, PatchType::Strategic).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "http", "port": 80, "targetPort": 8080}, {"name": "alt", "port": 8443}])
        );
        assert_eq!(out["spec"]["selector"], json!({"a": "b"}));
        let cleared = apply_patch(
            &cur,
            &json!({"spec": {"ports": null}}),
            PatchType::Strategic,
        )
        .unwrap();
        assert!(cleared["spec"].get("ports").is_none());
    }

    #[test]
    fn scale_subresource() {
        let (_d, s) = svc();
        s.create(Kind::ReplicaSet, "default", seed(), FieldValidation::Warn)
            .unwrap();
        let sc = s.scale("default", "lab05-cirros-replicaset").unwrap();
        assert_eq!(sc["spec"]["replicas"], json!(2));
        let sc = s
            .patch_scale(
                "default",
                "lab05-cirros-replicaset",
                &json!({"spec": {"replicas": 5}}),
                PatchType::Merge,
            )
            .unwrap();
        assert_eq!(sc["spec"]["replicas"], json!(5));
        let err = s
            .set_scale(
                "default",
                "lab05-cirros-replicaset",
                &json!({"spec": {"replicas": -1}}),
            )
            .unwrap_err();
        assert!(matches!(err, OpError::Admit(AdmitError::Invalid(_))));
        let err = s
            .set_scale(
                "default",
                "lab05-cirros-replicaset",
                &json!({"spec": {"replicas": i64::MAX}}),
            )
            .unwrap_err();
        assert!(matches!(err, OpError::Admit(AdmitError::Invalid(_))));
        let mut stale = sc.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        stale["spec"]["replicas"] = json!(1);
        assert!(matches!(
            s.set_scale("default", "lab05-cirros-replicaset", &stale),
            Err(OpError::Store(StoreError::Conflict { .. }))
        ));
    }

    #[test]
    fn patches() {
        let (_d, s) = svc();
        s.create(Kind::ReplicaSet, "default", seed(), FieldValidation::Warn)
            .unwrap();
        let (o, _) = s
            .patch(
                &ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset"),
                &json!({"spec": {"paused": true}}),
                PatchType::Merge,
                false,
                FieldValidation::Strict,
            )
            .unwrap();
        assert_eq!(o["spec"]["paused"], json!(true));
        let (o, _) = s
            .patch(
                &ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset"),
                &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
                PatchType::Json,
                false,
                FieldValidation::Strict,
            )
            .unwrap();
        assert_eq!(o["spec"]["replicas"], json!(4));
        let err = s
            .patch(
                &ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset"),
                &json!([1]),
                PatchType::Merge,
                false,
                FieldValidation::Strict,
            )
            .unwrap_err();
        assert!(matches!(err, OpError::BadRequest(_)));
        let err = s
            .patch(
                &ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset"),
                &json!({"spec": {"replicas": -2}}),
                PatchType::Merge,
                false,
                FieldValidation::Strict,
            )
            .unwrap_err();
        assert!(matches!(err, OpError::Admit(AdmitError::Invalid(_))));
    }

    #[test]
    fn too_big_vms_are_rejected_at_admission() {
        let (_d, s) = svc();
        let mut o = seed();
        o["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("2Ti");
        let err = s
            .create(Kind::ReplicaSet, "default", o, FieldValidation::Warn)
            .unwrap_err();
        assert!(err.to_string().contains("can never fit"), "{err}");
    }

    #[test]
    fn vmi_gets_finalizer_and_immutable_spec() {
        let (_d, s) = svc();
        let set = seed();
        let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v1"}, "spec": set["spec"]["template"]["spec"].clone()});
        let (o, _) = s
            .create(Kind::Vmi, "default", vmi, FieldValidation::Strict)
            .unwrap();
        assert_eq!(meta::finalizers(&o), vec![VMI_FINALIZER.to_string()]);
        let mut changed = (*o).clone();
        changed["spec"]["domain"]["cpu"]["cores"] = json!(2);
        assert!(
            s.replace(Kind::Vmi, "default", "v1", changed, FieldValidation::Warn)
                .is_err()
        );
        let mut relabeled = (*o).clone();
        relabeled["metadata"]["labels"] = json!({"a": "b"});
        s.replace(Kind::Vmi, "default", "v1", relabeled, FieldValidation::Warn)
            .unwrap();
        assert!(matches!(
            s.delete(
                Kind::Vmi,
                "default",
                "v1",
                Propagation::Background,
                None,
                None
            )
            .unwrap(),
            DeleteOutcome::Pending(_)
        ));
    }
}
