//! The VirtualMachineInstanceReplicaSet controller, after KubeVirt's: claim matching VMIs, create
//! or delete to reach `spec.replicas`, replace finished VMIs, report status.
//!
//! Differences from KubeVirt, on purpose: the store is read directly (no informer cache), so no
//! expectations are needed; scale-down deletes Pending/Scheduling VMIs first, then not-Ready
//! ones, then the newest (KubeVirt picks arbitrarily).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Value, json};

use super::replicas::{self, Phase, VmiView};
use super::status::{remove_condition, set_condition};
use super::vmi::VMI_FINALIZER;
use super::{Ctx, WorkKey};
use crate::events::EventKind;
use crate::kinds::Kind;
use crate::kinds::validation::decode;
use crate::kinds::vmirs::ReplicaSetSpec;
use crate::meta::{self, OwnerReference, now_rfc3339};
use crate::selector::Selector;
use crate::store::{ObjectKey, StoreError};

/// Finalizer for `propagationPolicy: Foreground` (delete the VMIs first).
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer for `propagationPolicy: Orphan` (keep the VMIs, drop their owner reference).
pub const ORPHAN: &str = "orphan";

/// Failed VMIs replaced at once before backing off.
const FREE_FAILURES: u32 = 3;
/// Longest wait between replacements of failing VMIs.
const MAX_CRASH_BACKOFF: Duration = Duration::from_secs(300);

/// Crash-loop protection for one set: after a few failed VMIs in a row, replacements are
/// delayed exponentially (1 s, 2 s, 4 s, ... up to 5 min) until a VMI of the set becomes Ready.
/// KubeVirt has no such protection; without it a set whose VMs fail at boot would spin.
#[derive(Debug, Clone, Default)]
pub struct CrashLoop {
    failures: u32,
    next_create: Option<Instant>,
}

impl CrashLoop {
    /// Records `n` more failed VMIs at `now`.
    pub fn failed(&mut self, n: u32, now: Instant) {
        if n == 0 {
            return;
        }
        self.failures += n;
        if self.failures > FREE_FAILURES {
            let exp = (self.failures - FREE_FAILURES - 1).min(16);
            let delay = Duration::from_secs(1u64 << exp).min(MAX_CRASH_BACKOFF);
            self.next_create = Some(now + delay);
        }
    }

    /// A VMI of the set is Ready: forget the failures.
    pub fn healthy(&mut self) {
        *self = CrashLoop::default();
    }

    /// How long creates must still wait.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.next_create.filter(|t| *t > now).map(|t| t - now)
    }
}

fn view(v: &Value) -> VmiView {
    VmiView {
        name: meta::name(v).to_string(),
        phase: Phase::parse(
            v.get("status")
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str),
        ),
        ready: super::status::condition(v, "Ready") == Some(true),
        deleting: meta::is_deleting(v),
        created: meta::meta_str(v, "creationTimestamp")
            .and_then(meta::parse_time)
            .map(|t| t.timestamp_millis())
            .unwrap_or(0),
    }
}

fn owner_ref(set: &Value) -> OwnerReference {
    OwnerReference {
        api_version: Kind::ReplicaSet.api_version(),
        kind: Kind::ReplicaSet.info().kind.to_string(),
        name: meta::name(set).to_string(),
        uid: meta::uid(set).to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// VMIs controlled by the set with this uid.
pub fn owned_vmis(ctx: &Ctx, ns: &str, set_uid: &str) -> Vec<Arc<Value>> {
    ctx.store
        .list(Kind::Vmi, Some(ns), |v| {
            meta::controller_ref(v).is_some_and(|r| r.uid == set_uid)
        })
        .0
}

fn set_owner(ctx: &Ctx, vmi: &Value, owner: Option<&OwnerReference>) -> Result<(), StoreError> {
    let key = ObjectKey::new(Kind::Vmi, meta::namespace(vmi), meta::name(vmi));
    ctx.store.update(&key, true, |cur| {
        let mut n = cur.clone();
        let m = meta::meta_mut(&mut n);
        let mut refs: Vec<Value> = m
            .get("ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.get("controller").and_then(Value::as_bool) != Some(true))
            .collect();
        if let Some(o) = owner {
            refs.push(serde_json::to_value(o).expect("owner reference serializes"));
        }
        if refs.is_empty() {
            m.remove("ownerReferences");
        } else {
            m.insert("ownerReferences".into(), json!(refs));
        }
        Ok(Some(n))
    })?;
    Ok(())
}

/// Reconciles one replica set; returns when to look again.
pub fn reconcile(ctx: &Ctx, key: &ObjectKey) -> Result<Option<Duration>, StoreError> {
    let Some(set) = ctx.store.get(key) else {
        return Ok(None);
    };
    let ns = key.namespace.as_str();
    let uid = meta::uid(&set).to_string();
    if meta::is_deleting(&set) {
        finalize(ctx, key, &set)?;
        return Ok(None);
    }
    let spec = set
        .get("spec")
        .and_then(|s| decode::<ReplicaSetSpec>(s, "spec").ok())
        .map(|d| d.value);
    let mut unknown = Vec::new();
    let valid = match spec.map(|s| s.validate(&mut unknown)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::error!(vmirs = %format!("{ns}/{}", key.name), error = %e, "Selector does not match template labels, will not re-enqueue.");
            let now = now_rfc3339();
            write_status(ctx, key, |st| {
                set_condition(
                    st,
                    "ReplicaFailure",
                    true,
                    "FailedCreate",
                    &e.to_string(),
                    &now,
                );
            })?;
            return Ok(None);
        }
        None => return Ok(None),
    };

    // Claim: adopt matching orphans, release owned VMIs whose labels no longer match.
    let (all, _) = ctx.store.list(Kind::Vmi, Some(ns), |_| true);
    let owner = owner_ref(&set);
    let mut mine = Vec::new();
    for v in all {
        let matches = valid.selector.matches(&meta::labels(&v));
        match meta::controller_ref(&v) {
            Some(r) if r.uid == uid => {
                if matches || meta::is_deleting(&v) {
                    mine.push(v);
                } else {
                    set_owner(ctx, &v, None)?;
                }
            }
            None if matches && !meta::is_deleting(&v) => {
                set_owner(ctx, &v, Some(&owner))?;
                mine.push(v);
            }
            _ => {}
        }
    }
    let views: Vec<VmiView> = mine.iter().map(|v| view(v)).collect();

    let mut failure: Option<String> = None;
    let mut requeue = None;
    if !valid.paused {
        let mut plan = replicas::plan(valid.replicas as usize, &views, ctx.config.burst);
        let now = Instant::now();
        let newly_failed = views
            .iter()
            .filter(|v| v.phase == Phase::Failed && plan.cleanup.contains(&v.name))
            .count();
        let wait = {
            let mut loops = ctx
                .crash_loops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cl = loops.entry(uid.clone()).or_default();
            if views.iter().any(|v| v.is_active() && v.ready) {
                cl.healthy();
            }
            cl.failed(u32::try_from(newly_failed).unwrap_or(u32::MAX), now);
            cl.wait(now)
        };
        if let (Some(wait), true) = (wait, plan.create > 0) {
            let msg = format!(
                "VMIs of this set keep failing; waiting {}s before creating replacements",
                wait.as_secs().max(1)
            );
            ctx.events
                .record(Kind::ReplicaSet, &set, EventKind::Warning, "BackOff", &msg);
            failure = Some(msg);
            plan.create = 0;
            requeue = Some(wait);
        }
        for _ in 0..plan.create {
            if let Err(e) = create_vmi(
                ctx,
                &set,
                &valid.selector,
                &valid.template_meta,
                &valid.template_spec,
                &owner,
            ) {
                let msg = crate::error_chain(&e);
                ctx.events.record(
                    Kind::ReplicaSet,
                    &set,
                    EventKind::Warning,
                    "FailedCreate",
                    &format!("Error creating VMI: {msg}"),
                );
                failure = Some(msg);
                break;
            }
        }
        for name in plan.delete.iter().chain(&plan.cleanup) {
            let vkey = ObjectKey::new(Kind::Vmi, ns, name);
            match ctx.store.delete(&vkey, None, None, true) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    ctx.events.record(
                        Kind::ReplicaSet,
                        &set,
                        EventKind::Normal,
                        "SuccessfulDelete",
                        &format!("Stopped the virtual machine by deleting the virtual machine instance {name}"),
                    );
                }
                Err(e) => {
                    let msg = crate::error_chain(&e);
                    ctx.events.record(
                        Kind::ReplicaSet,
                        &set,
                        EventKind::Warning,
                        "FailedDelete",
                        &msg,
                    );
                    failure = Some(msg);
                }
            }
        }
    }

    // Status from what the store holds now.
    let now_views: Vec<VmiView> = owned_vmis(ctx, ns, &uid).iter().map(|v| view(v)).collect();
    let (replicas, ready) = replicas::counts(&now_views);
    let selector = valid.selector.to_string();
    let was_paused = super::status::condition(&set, "ReplicaPaused") == Some(true);
    let now = now_rfc3339();
    write_status(ctx, key, |st| {
        st["replicas"] = json!(replicas);
        st["readyReplicas"] = json!(ready);
        st["labelSelector"] = json!(selector);
        match &failure {
            Some(msg) => set_condition(st, "ReplicaFailure", true, "FailedCreate", msg, &now),
            None => remove_condition(st, "ReplicaFailure"),
        }
        if valid.paused {
            set_condition(
                st,
                "ReplicaPaused",
                true,
                "Paused",
                "Controller got paused",
                &now,
            );
        } else {
            remove_condition(st, "ReplicaPaused");
        }
    })?;
    if valid.paused != was_paused {
        let (reason, msg) = if valid.paused {
            ("SuccessfulPaused", "Paused")
        } else {
            ("SuccessfulResumed", "Resumed")
        };
        ctx.events
            .record(Kind::ReplicaSet, &set, EventKind::Normal, reason, msg);
    }
    Ok(requeue)
}

fn write_status(ctx: &Ctx, key: &ObjectKey, f: impl FnOnce(&mut Value)) -> Result<(), StoreError> {
    ctx.store.update(key, false, |cur| {
        let mut n = cur.clone();
        let mut st = n.get("status").cloned().unwrap_or_else(|| json!({}));
        f(&mut st);
        if let Some(list) = st.get("conditions").and_then(Value::as_array) {
            if list.is_empty() {
                st.as_object_mut().map(|o| o.remove("conditions"));
            }
        }
        n["status"] = st;
        Ok(Some(n))
    })?;
    Ok(())
}

fn create_vmi(
    ctx: &Ctx,
    set: &Value,
    _selector: &Selector,
    tmeta: &crate::meta::ObjectMeta,
    tspec: &Value,
    owner: &OwnerReference,
) -> Result<(), StoreError> {
    let base = tmeta
        .name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| tmeta.generate_name.clone().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| meta::name(set).to_string());
    let mut metadata = json!({
        "generateName": base,
        "labels": tmeta.labels.clone().unwrap_or_default(),
        "ownerReferences": [owner],
        "finalizers": [VMI_FINALIZER],
    });
    if let Some(a) = &tmeta.annotations {
        metadata["annotations"] = json!(a);
    }
    let obj = json!({"metadata": metadata, "spec": tspec});
    let created = ctx
        .store
        .create(Kind::Vmi, meta::namespace(set), obj, true)?;
    ctx.events.record(
        Kind::ReplicaSet,
        set,
        EventKind::Normal,
        "SuccessfulCreate",
        &format!(
            "Started the virtual machine by creating the new virtual machine instance {}",
            meta::name(&created)
        ),
    );
    Ok(())
}

/// The set is being deleted with a finalizer: foreground deletes its VMIs first; orphan
/// releases them.
fn finalize(ctx: &Ctx, key: &ObjectKey, set: &Value) -> Result<(), StoreError> {
    let fins = meta::finalizers(set);
    let uid = meta::uid(set);
    let mut remaining = fins.clone();
    if fins.iter().any(|f| f == ORPHAN) {
        for v in owned_vmis(ctx, &key.namespace, uid) {
            set_owner(ctx, &v, None)?;
        }
        remaining.retain(|f| f != ORPHAN);
    }
    if fins.iter().any(|f| f == FOREGROUND) {
        let children = owned_vmis(ctx, &key.namespace, uid);
        if children.is_empty() {
            remaining.retain(|f| f != FOREGROUND);
        } else {
            for v in children.iter().filter(|v| !meta::is_deleting(v)) {
                let vkey = ObjectKey::new(Kind::Vmi, &key.namespace, meta::name(v));
                let _ = ctx.store.delete(&vkey, None, None, true);
            }
        }
    }
    if remaining != fins {
        ctx.store.update(key, true, |cur| {
            let mut n = cur.clone();
            meta::set_finalizers(&mut n, &remaining);
            Ok(Some(n))
        })?;
    }
    Ok(())
}

/// Deletes VMIs whose controlling replica set no longer exists (background propagation), and
/// queues the owners of VMIs for reconciliation.
pub fn collect_garbage(ctx: &Ctx) {
    let (vmis, _) = ctx.store.list(Kind::Vmi, None, |v| !meta::is_deleting(v));
    for v in vmis {
        let Some(r) = meta::controller_ref(&v) else {
            continue;
        };
        if r.kind != Kind::ReplicaSet.info().kind {
            continue;
        }
        let ns = meta::namespace(&v);
        let owner = ctx
            .store
            .get(&ObjectKey::new(Kind::ReplicaSet, ns, &r.name));
        let alive = owner.as_ref().is_some_and(|o| meta::uid(o) == r.uid);
        if !alive {
            tracing::info!(vmi = %format!("{ns}/{}", meta::name(&v)), owner = %r.name, "deleting VMI whose replica set is gone");
            let _ = ctx.store.delete(
                &ObjectKey::new(Kind::Vmi, ns, meta::name(&v)),
                None,
                None,
                true,
            );
        } else {
            ctx.queue.add(WorkKey::Set(ns.to_string(), r.name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_backs_off_after_free_failures() {
        let t0 = Instant::now();
        let mut cl = CrashLoop::default();
        cl.failed(1, t0);
        cl.failed(2, t0);
        assert_eq!(
            cl.wait(t0),
            None,
            "the first three failures are replaced at once"
        );
        cl.failed(1, t0);
        assert_eq!(cl.wait(t0), Some(Duration::from_secs(1)));
        cl.failed(1, t0);
        assert_eq!(cl.wait(t0), Some(Duration::from_secs(2)));
        cl.failed(20, t0);
        assert_eq!(cl.wait(t0), Some(MAX_CRASH_BACKOFF));
        cl.healthy();
        assert_eq!(cl.wait(t0), None);
    }
}
