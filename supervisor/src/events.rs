//! Kubernetes `Event` objects (core/v1) about VMIRS, VMIs and HPAs, for `kubectl describe`.
//!
//! Identical events (same object, type, reason and message) are aggregated into one object whose
//! `count` and `lastTimestamp` grow, as the API server's event correlator does. At most
//! [`MAX_EVENTS`] are kept; the oldest are dropped. Events are not fsynced (they are diagnostics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::meta::{self, now_rfc3339};
use crate::store::{ObjectKey, Store};

/// Events kept in the store.
pub const MAX_EVENTS: usize = 2000;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// (involved uid, type, reason, message): what makes two events the same.
type EventIdent = (String, &'static str, String, String);

/// Records events into the store.
pub struct Recorder {
    store: Arc<Store>,
    /// Identity → name of the event object that aggregates it.
    seen: Mutex<HashMap<EventIdent, String>>,
}

impl Recorder {
    /// A recorder writing to `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Recorder {
            store,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event about `involved` (a stored object of kind `kind`).
    pub fn record(&self, kind: Kind, involved: &Value, ek: EventKind, reason: &str, message: &str) {
        let type_ = match ek {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        };
        let ns = meta::namespace(involved).to_string();
        let ident = (
            meta::uid(involved).to_string(),
            type_,
            reason.to_string(),
            message.to_string(),
        );
        let now = now_rfc3339();
        let existing = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&ident)
            .cloned();
        if let Some(name) = existing {
            let key = ObjectKey::new(Kind::Event, &ns, &name);
            let bumped = self.store.update(&key, false, |cur| {
                let mut n = cur.clone();
                let count = cur.get("count").and_then(Value::as_i64).unwrap_or(1);
                n["count"] = json!(count + 1);
                n["lastTimestamp"] = json!(now);
                Ok(Some(n))
            });
            if bumped.is_ok() {
                return;
            }
        }
        let name = format!("{}.{:016x}", meta::name(involved), rand::random::<u64>());
        let ev = json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": kind.api_version(),
                "kind": kind.info().kind,
                "name": meta::name(involved),
                "namespace": ns,
                "uid": meta::uid(involved),
                "resourceVersion": meta::meta_str(involved, "resourceVersion").unwrap_or_default(),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "corral"},
            "reportingComponent": "corral",
            "reportingInstance": crate::host::node_name(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        match self.store.create(Kind::Event, &ns, ev, false) {
            Ok(_) => {
                self.seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(ident, name);
                self.prune();
            }
            Err(e) => tracing::warn!(error = %e, reason, "could not record event"),
        }
    }

    fn prune(&self) {
        let (mut all, _) = self.store.list(Kind::Event, None, |_| true);
        if all.len() <= MAX_EVENTS {
            return;
        }
        all.sort_by_key(|e| meta::resource_version(e));
        let excess = all.len() - MAX_EVENTS;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in all.into_iter().take(excess) {
            let name = meta::name(&e).to_string();
            seen.retain(|_, v| *v != name);
            let _ = self.store.delete(
                &ObjectKey::new(Kind::Event, meta::namespace(&e), &name),
                None,
                None,
                false,
            );
        }
    }
}

/// Events about one object (by uid), oldest first, for `describe`.
pub fn events_for(store: &Store, namespace: &str, uid: &str) -> Vec<Arc<Value>> {
    let (mut evs, _) = store.list(Kind::Event, Some(namespace), |e| {
        e.get("involvedObject")
            .and_then(|o| o.get("uid"))
            .and_then(Value::as_str)
            == Some(uid)
    });
    evs.sort_by_key(|e| meta::resource_version(e));
    evs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_events_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let obj = store
            .create(
                Kind::ReplicaSet,
                "default",
                json!({"metadata": {"name": "rs"}}),
                true,
            )
            .unwrap();
        let r = Recorder::new(store.clone());
        r.record(
            Kind::ReplicaSet,
            &obj,
            EventKind::Normal,
            "SuccessfulCreate",
            "made a",
        );
        r.record(
            Kind::ReplicaSet,
            &obj,
            EventKind::Normal,
            "SuccessfulCreate",
            "made a",
        );
        r.record(
            Kind::ReplicaSet,
            &obj,
            EventKind::Warning,
            "FailedCreate",
            "boom",
        );
        let evs = events_for(&store, "default", meta::uid(&obj));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0]["count"], json!(2));
        assert_eq!(
            evs[0]["involvedObject"]["kind"],
            json!("VirtualMachineInstanceReplicaSet")
        );
        assert_eq!(evs[1]["type"], json!("Warning"));
    }
}
