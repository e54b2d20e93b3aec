//! The object store: every API object in memory for reads, redb underneath for durability, and a
//! watch stream of changes with a bounded history for `?watch=true&resourceVersion=N`.
//!
//! Writers are serialized by one lock and each write is committed to redb before it becomes
//! visible; readers never wait for a commit. resourceVersion is one strictly increasing counter
//! across all kinds, as in etcd, also across a `kill -9` of the daemon: versions are reserved
//! durably in blocks ([`db`]) and a restart resumes above every version handed out before, with
//! an empty history, so that a watch from an older version gets 410 Gone and lists again.

mod db;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kinds::Kind;
use crate::meta::{self, now_rfc3339};
use db::{Db, Write};
pub use db::{DbError, RV_BLOCK};

mod history;
use history::History;

/// Identity of a stored object. Cluster-scoped objects use an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn db_key(&self) -> String {
        format!("{}/{}/{}", self.kind.tag(), self.namespace, self.name)
    }

    fn from_db_key(k: &str) -> Option<Self> {
        let mut parts = k.splitn(3, '/');
        let kind = Kind::from_tag(parts.next()?)?;
        Some(ObjectKey::new(kind, parts.next()?, parts.next()?))
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event type string (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as delivered to watchers.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub key: ObjectKey,
    pub event_type: EventType,
    pub object: Arc<Value>,
    pub resource_version: u64,
}

/// Live watch events.
pub type WatchReceiver = broadcast::Receiver<Arc<WatchEvent>>;

/// Store errors, each mapping to one Kubernetes status reason.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{} \"{name}\" not found", .kind.qualified_plural())]
    NotFound { kind: Kind, name: String },
    #[error("{} \"{name}\" already exists", .kind.qualified_plural())]
    AlreadyExists { kind: Kind, name: String },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {reason}", .kind.qualified_plural())]
    Conflict {
        kind: Kind,
        name: String,
        reason: String,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("storage failed")]
    Db(#[from] DbError),
}

/// Result of a delete request.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone.
    Gone(Arc<Value>),
    /// Finalizers hold it; `deletionTimestamp` is set.
    Pending(Arc<Value>),
}

struct State {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    rv: u64,
    /// Recent events, for watches that resume from a resourceVersion.
    history: History,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Db,
    write_lock: Mutex<()>,
    state: RwLock<State>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new random uid (UUID v4, like the API server's).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Store {
    /// Opens the database at `path` and loads every object.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Db::open(path)?;
        let (rows, counters) = db.load()?;
        let rv = counters.resume_at();
        let objects = rows
            .into_iter()
            .filter_map(|(k, v)| Some((ObjectKey::from_db_key(&k)?, Arc::new(v))))
            .collect();
        let (tx, _) = broadcast::channel(4096);
        Ok(Store {
            db,
            write_lock: Mutex::new(()),
            state: RwLock::new(State {
                objects,
                rv,
                history: History::new(rv),
            }),
            tx,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read().rv
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    /// One object or `NotFound`.
    pub fn get_or_404(&self, key: &ObjectKey) -> Result<Arc<Value>, StoreError> {
        self.get(key).ok_or_else(|| StoreError::NotFound {
            kind: key.kind,
            name: key.name.clone(),
        })
    }

    /// Every object of `kind` (in `namespace` when given) accepted by `filter`, and the
    /// resourceVersion the list is consistent with.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, u64) {
        let st = self.read();
        let items = st
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, v)| filter(v))
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.rv)
    }

    /// Starts a watch: the events after `since` still in history, and a receiver for later ones.
    /// `since = None` means "from now".
    pub fn watch(
        &self,
        since: Option<u64>,
    ) -> Result<(Vec<Arc<WatchEvent>>, WatchReceiver), StoreError> {
        let st = self.read();
        let rx = self.tx.subscribe();
        let Some(since) = since else {
            return Ok((Vec::new(), rx));
        };
        match st.history.since(since) {
            Some(past) => Ok((past, rx)),
            None => Err(StoreError::Gone {
                requested: since,
                oldest: st.history.floor(),
            }),
        }
    }

    /// Commits one change and publishes it. Must be called with the write lock held.
    fn commit(
        &self,
        key: &ObjectKey,
        new: Option<Value>,
        last: Option<&Arc<Value>>,
        durable: bool,
    ) -> Result<Arc<Value>, StoreError> {
        let rv = self.read().rv + 1;
        let db_key = key.db_key();
        let (event_type, object, size) = match new {
            Some(mut obj) => {
                meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                let bytes =
                    serde_json::to_vec(&obj).map_err(|e| StoreError::BadRequest(e.to_string()))?;
                let size = bytes.len();
                self.db.commit(&[Write::Put(&db_key, bytes)], rv, durable)?;
                let t = if last.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (t, Arc::new(obj), size)
            }
            None => {
                self.db.commit(&[Write::Delete(&db_key)], rv, durable)?;
                let mut obj = last.map(|o| (**o).clone()).unwrap_or(Value::Null);
                if obj.is_object() {
                    meta::meta_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(rv.to_string()));
                }
                let size = serde_json::to_vec(&obj).map_or(0, |b| b.len());
                (EventType::Deleted, Arc::new(obj), size)
            }
        };
        let ev = Arc::new(WatchEvent {
            key: key.clone(),
            event_type,
            object: object.clone(),
            resource_version: rv,
        });
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.rv = rv;
        if event_type == EventType::Deleted {
            st.objects.remove(key);
        } else {
            st.objects.insert(key.clone(), object.clone());
        }
        st.history.push(ev.clone(), size);
        let _ = self.tx.send(ev);
        Ok(object)
    }

    /// Creates an object. Fills uid, creationTimestamp, generation and the name from
    /// `generateName` (+5 random characters, retried on collision).
    pub fn create(
        &self,
        kind: Kind,
        namespace: &str,
        mut obj: Value,
        durable: bool,
    ) -> Result<Arc<Value>, StoreError> {
        let _w = lock(&self.write_lock);
        let info = kind.info();
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(info.kind);
        let m = meta::meta_mut(&mut obj);
        let mut name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let base = m
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if base.is_empty() {
                return Err(StoreError::BadRequest(
                    "name or generateName is required".into(),
                ));
            }
            name = (0..8)
                .map(|_| crate::names::generate(&base))
                .find(|n| self.get(&ObjectKey::new(kind, namespace, n)).is_none())
                .ok_or_else(|| StoreError::AlreadyExists {
                    kind,
                    name: base.clone(),
                })?;
        }
        let key = ObjectKey::new(kind, namespace, &name);
        if self.get(&key).is_some() {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        let m = meta::meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if !namespace.is_empty() {
            m.insert("namespace".into(), json!(namespace));
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("resourceVersion");
        m.remove("selfLink");
        self.commit(&key, Some(obj), None, durable)
    }

    /// Read-modify-write of one object. `f` gets the current object and returns the new one, or
    /// `None` to leave it unchanged. System metadata (uid, creationTimestamp, deletionTimestamp)
    /// is preserved, generation is bumped when `spec` changed, and an object that is being deleted
    /// and has no finalizer left is removed.
    pub fn update(
        &self,
        key: &ObjectKey,
        durable: bool,
        f: impl FnOnce(&Value) -> Result<Option<Value>, StoreError>,
    ) -> Result<Arc<Value>, StoreError> {
        let _w = lock(&self.write_lock);
        let cur = self.get_or_404(key)?;
        let Some(mut new) = f(&cur)? else {
            return Ok(cur);
        };
        let info = key.kind.info();
        new["apiVersion"] = json!(key.kind.api_version());
        new["kind"] = json!(info.kind);
        let old_meta = cur.get("metadata").cloned().unwrap_or(json!({}));
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = cur.get("spec") != new.get("spec");
        let m = meta::meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.insert(
            "generation".into(),
            json!(if spec_changed {
                generation + 1
            } else {
                generation
            }),
        );
        if *cur == new_without_rv(&new, &cur) {
            return Ok(cur);
        }
        if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() {
            return self.commit(key, None, Some(&cur), durable);
        }
        self.commit(key, Some(new), Some(&cur), durable)
    }

    /// Deletes an object: removed at once without finalizers, otherwise marked with
    /// `deletionTimestamp` until the finalizers are removed. `precondition_uid` guards against
    /// deleting a newer object of the same name.
    pub fn delete(
        &self,
        key: &ObjectKey,
        precondition_uid: Option<&str>,
        grace_seconds: Option<i64>,
        durable: bool,
    ) -> Result<Deleted, StoreError> {
        let _w = lock(&self.write_lock);
        let cur = self.get_or_404(key)?;
        if let Some(uid) = precondition_uid {
            if meta::uid(&cur) != uid {
                return Err(StoreError::Conflict {
                    kind: key.kind,
                    name: key.name.clone(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&cur)
                    ),
                });
            }
        }
        if meta::finalizers(&cur).is_empty() {
            return Ok(Deleted::Gone(self.commit(
                key,
                None,
                Some(&cur),
                durable,
            )?));
        }
        if meta::is_deleting(&cur) {
            return Ok(Deleted::Pending(cur));
        }
        let mut new = (*cur).clone();
        let m = meta::meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        if let Some(g) = grace_seconds {
            m.insert("deletionGracePeriodSeconds".into(), json!(g));
        }
        Ok(Deleted::Pending(self.commit(
            key,
            Some(new),
            Some(&cur),
            durable,
        )?))
    }
}

/// `new` with the current object's resourceVersion, to detect no-op updates.
fn new_without_rv(new: &Value, cur: &Value) -> Value {
    let mut n = new.clone();
    let rv = cur
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .cloned();
    let m = meta::meta_mut(&mut n);
    match rv {
        Some(rv) => m.insert("resourceVersion".into(), rv),
        None => m.remove("resourceVersion"),
    };
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.redb")).unwrap();
        (dir, s)
    }

    #[test]
    fn create_get_update_delete_roundtrip_and_persist() {
        let (dir, s) = open();
        let a = s
            .create(
                Kind::ReplicaSet,
                "default",
                json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}}),
                true,
            )
            .unwrap();
        assert_eq!(meta::resource_version(&a), 1);
        assert_eq!(a["metadata"]["generation"], json!(1));
        let key = ObjectKey::new(Kind::ReplicaSet, "default", "a");
        let b = s
            .update(&key, true, |cur| {
                let mut n = cur.clone();
                n["spec"]["replicas"] = json!(3);
                Ok(Some(n))
            })
            .unwrap();
        assert_eq!(meta::resource_version(&b), 2);
        assert_eq!(b["metadata"]["generation"], json!(2));
        assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
        // status-only change keeps generation
        let c = s
            .update(&key, false, |cur| {
                let mut n = cur.clone();
                n["status"] = json!({"replicas": 3});
                Ok(Some(n))
            })
            .unwrap();
        assert_eq!(c["metadata"]["generation"], json!(2));
        // no-op update writes nothing
        let d = s.update(&key, true, |cur| Ok(Some(cur.clone()))).unwrap();
        assert_eq!(meta::resource_version(&d), 3);
        drop(s);
        let s = Store::open(&dir.path().join("db.redb")).unwrap();
        // The first write reserved versions 1..=RV_BLOCK; a restart resumes above them.
        assert_eq!(s.resource_version(), RV_BLOCK + 1);
        assert_eq!(s.get(&key).unwrap()["spec"]["replicas"], json!(3));
        assert!(matches!(
            s.delete(&key, None, None, true).unwrap(),
            Deleted::Gone(_)
        ));
        assert!(s.get(&key).is_none());
        assert!(matches!(
            s.delete(&key, None, None, true),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn generate_name_and_conflicts() {
        let (_d, s) = open();
        let o = s
            .create(
                Kind::Vmi,
                "ns",
                json!({"metadata": {"generateName": "web"}}),
                true,
            )
            .unwrap();
        let n = meta::name(&o);
        assert!(n.starts_with("web") && n.len() == 8, "{n}");
        let dup = s.create(Kind::Vmi, "ns", json!({"metadata": {"name": n}}), true);
        assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })));
    }

    #[test]
    fn finalizers_hold_deletion() {
        let (_d, s) = open();
        s.create(
            Kind::Vmi,
            "ns",
            json!({"metadata": {"name": "v", "finalizers": ["x"]}}),
            true,
        )
        .unwrap();
        let key = ObjectKey::new(Kind::Vmi, "ns", "v");
        assert!(matches!(
            s.delete(&key, None, Some(5), true).unwrap(),
            Deleted::Pending(_)
        ));
        assert!(meta::is_deleting(&s.get(&key).unwrap()));
        s.update(&key, true, |cur| {
            let mut n = cur.clone();
            meta::set_finalizers(&mut n, &[]);
            Ok(Some(n))
        })
        .unwrap();
        assert!(s.get(&key).is_none());
    }

    #[test]
    fn watch_resumes_from_history_and_reports_gone() {
        let (_d, s) = open();
        for i in 0..3 {
            s.create(
                Kind::Vmi,
                "ns",
                json!({"metadata": {"name": format!("v{i}")}}),
                false,
            )
            .unwrap();
        }
        let (past, mut rx) = s.watch(Some(1)).unwrap();
        assert_eq!(
            past.iter().map(|e| e.resource_version).collect::<Vec<_>>(),
            vec![2, 3]
        );
        s.delete(&ObjectKey::new(Kind::Vmi, "ns", "v0"), None, None, false)
            .unwrap();
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.event_type, EventType::Deleted);
        assert_eq!(ev.resource_version, 4);
        assert_eq!(meta::resource_version(&ev.object), 4);
        // After a restart the history is empty: older versions are gone.
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("db")).unwrap();
        st.create(Kind::Vmi, "ns", json!({"metadata": {"name": "x"}}), true)
            .unwrap();
        drop(st);
        let st = Store::open(&dir.path().join("db")).unwrap();
        for rv in [0, 1, RV_BLOCK] {
            assert!(matches!(st.watch(Some(rv)), Err(StoreError::Gone { .. })));
        }
        assert!(st.watch(Some(st.resource_version())).unwrap().0.is_empty());
    }

    /// A copy of the database file taken while it is open is what a `kill -9` leaves behind:
    /// non-durable commits are not in it.
    fn crash_copy(dir: &Path) -> Store {
        let copy = dir.join("crashed.redb");
        std::fs::copy(dir.join("db.redb"), &copy).unwrap();
        Store::open(&copy).unwrap()
    }

    #[test]
    fn resource_version_never_goes_back_after_a_crash() {
        let (dir, s) = open();
        let key = ObjectKey::new(Kind::ReplicaSet, "default", "a");
        s.create(
            Kind::ReplicaSet,
            "default",
            json!({"metadata": {"name": "a"}}),
            true,
        )
        .unwrap();
        // Status writes are not durable: a crash loses them, but not the versions they used.
        // The second round crosses a block boundary.
        for rounds in [10, RV_BLOCK + 10] {
            for i in 0..rounds {
                s.update(&key, false, |cur| {
                    let mut n = cur.clone();
                    n["status"] = json!({"i": i});
                    Ok(Some(n))
                })
                .unwrap();
            }
            let seen = s.resource_version();
            let after = crash_copy(dir.path());
            assert!(
                after.resource_version() > seen,
                "{} after a crash at {seen}",
                after.resource_version()
            );
            // Every version seen before the crash is gone for watches, including the last.
            for rv in [1, seen - 1, seen] {
                assert!(
                    matches!(after.watch(Some(rv)), Err(StoreError::Gone { .. })),
                    "watch from {rv}"
                );
            }
            // The object is there (its last durable state), and the next write goes up.
            assert!(after.get(&key).is_some());
            let o = after
                .update(&key, false, |cur| {
                    let mut n = cur.clone();
                    n["status"] = json!({"after": true});
                    Ok(Some(n))
                })
                .unwrap();
            assert!(meta::resource_version(&o) > after.resource_version() - 1);
            assert!(meta::resource_version(&o) > seen);
        }
    }

    #[test]
    fn a_crash_right_after_a_restart_resumes_at_the_same_version() {
        // No write happened in between, so the state at that version is the same.
        let (dir, s) = open();
        s.create(Kind::Vmi, "ns", json!({"metadata": {"name": "v"}}), false)
            .unwrap();
        let first = crash_copy(dir.path());
        let rv = first.resource_version();
        drop(first);
        let copy = dir.path().join("crashed.redb");
        assert_eq!(Store::open(&copy).unwrap().resource_version(), rv);
        // A new database starts at 0.
        let (_d, fresh) = open();
        assert_eq!(fresh.resource_version(), 0);
        assert!(fresh.watch(Some(0)).unwrap().0.is_empty());
    }
}
