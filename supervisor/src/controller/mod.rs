//! Controllers: the replica-set controller, the VMI lifecycle controller, and the manager that
//! feeds them from the store's watch stream through one work queue.
//!
//! Level-triggered: a key in the queue means "look at this object again"; each reconcile reads
//! the desired state (store) and the observed state (runtime) and acts on the difference. Keys
//! come from store changes, VM runtime notifications, and a periodic resync.

pub mod images;
pub mod probes;
pub mod queue;
pub mod replicas;
pub mod replicaset;
pub mod status;
pub mod vmi;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::capacity::Capacity;
use crate::events::Recorder;
use crate::kinds::Kind;
use crate::meta;
use crate::runtime::{VmRef, VmRuntime};
use crate::store::{ObjectKey, Store};
use images::ImageCache;
use queue::WorkQueue;

/// What the queue holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkKey {
    Set(String, String),
    Vmi(String, String),
    Hpa(String, String),
    /// Garbage collection of orphaned VMIs and VM processes.
    Gc,
}

/// Controller tuning.
#[derive(Debug, Clone, Copy)]
pub struct ControllerConfig {
    /// Most creates or deletes one replica-set sync performs (KubeVirt: 250).
    pub burst: usize,
    /// Concurrent reconciles.
    pub workers: usize,
    /// Period of the full resync.
    pub resync: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            burst: 250,
            workers: 4,
            resync: Duration::from_secs(30),
        }
    }
}

/// Shared state of the controllers.
pub struct Ctx {
    pub store: Arc<Store>,
    pub runtime: Arc<dyn VmRuntime>,
    pub images: ImageCache,
    pub events: Recorder,
    pub capacity: Capacity,
    pub queue: Arc<WorkQueue<WorkKey>>,
    pub config: ControllerConfig,
    /// Serializes capacity admission of VMs.
    pub launch_lock: Mutex<()>,
    /// Crash-loop state per replica set uid.
    pub crash_loops: Mutex<std::collections::HashMap<String, replicaset::CrashLoop>>,
    /// Readiness and liveness probes of running VMIs.
    pub probes: probes::Prober,
}

fn route(ctx: &Ctx, key: &ObjectKey, obj: &serde_json::Value, deleted: bool) {
    let (ns, name) = (key.namespace.clone(), key.name.clone());
    match key.kind {
        Kind::ReplicaSet if deleted => ctx.queue.add(WorkKey::Gc),
        Kind::ReplicaSet => ctx.queue.add(WorkKey::Set(ns, name)),
        Kind::Vmi => {
            if let Some(r) = meta::controller_ref(obj) {
                if r.kind == Kind::ReplicaSet.info().kind {
                    ctx.queue.add(WorkKey::Set(ns.clone(), r.name));
                }
            }
            ctx.queue.add(WorkKey::Vmi(ns, name));
        }
        Kind::Hpa => ctx.queue.add(WorkKey::Hpa(ns, name)),
        // Services and Endpoints have their own loop (crate::proxy).
        Kind::Event | Kind::Service | Kind::Endpoints | Kind::EndpointSlice => {}
    }
}

fn enqueue_all(ctx: &Ctx) {
    for kind in [Kind::ReplicaSet, Kind::Vmi, Kind::Hpa] {
        let (objs, _) = ctx.store.list(kind, None, |_| true);
        for o in objs {
            route(
                ctx,
                &ObjectKey::new(kind, meta::namespace(&o), meta::name(&o)),
                &o,
                false,
            );
        }
    }
    ctx.queue.add(WorkKey::Gc);
}

/// Stops and forgets VM processes whose VMI no longer exists.
fn collect_vm_garbage(ctx: &Ctx) {
    for vm in ctx.runtime.known() {
        let obj = ctx
            .store
            .get(&ObjectKey::new(Kind::Vmi, &vm.namespace, &vm.name));
        if obj.as_ref().is_some_and(|o| meta::uid(o) == vm.uid) {
            continue;
        }
        tracing::warn!(vm = %format!("{}/{}", vm.namespace, vm.name), uid = %vm.uid, "VM without a VMI; stopping it");
        match ctx.runtime.observe(&vm.uid) {
            crate::runtime::Observed::Running { .. } => {
                ctx.runtime.stop(&vm.uid, Duration::from_secs(5));
            }
            crate::runtime::Observed::Stopping { .. } => {}
            _ => ctx.runtime.release(&vm.uid),
        }
    }
}

/// An extra reconciler (the autoscaler) plugged into the manager for `WorkKey::Hpa`.
pub trait HpaReconciler: Send + Sync + 'static {
    /// Reconciles one HPA; returns when to look again.
    fn reconcile(&self, ctx: &Ctx, ns: &str, name: &str) -> Option<Duration>;
}

fn process(ctx: &Ctx, hpa: Option<&dyn HpaReconciler>, key: &WorkKey) -> Option<Duration> {
    let res = match key {
        WorkKey::Set(ns, name) => {
            replicaset::reconcile(ctx, &ObjectKey::new(Kind::ReplicaSet, ns, name))
        }
        WorkKey::Vmi(ns, name) => vmi::reconcile(ctx, &ObjectKey::new(Kind::Vmi, ns, name)),
        WorkKey::Hpa(ns, name) => Ok(hpa.and_then(|h| h.reconcile(ctx, ns, name))),
        WorkKey::Gc => {
            replicaset::collect_garbage(ctx);
            collect_vm_garbage(ctx);
            Ok(None)
        }
    };
    let kind = match key {
        WorkKey::Set(..) => crate::metrics::counters::ReconcileKind::ReplicaSet,
        WorkKey::Vmi(..) => crate::metrics::counters::ReconcileKind::Vmi,
        WorkKey::Hpa(..) => crate::metrics::counters::ReconcileKind::Hpa,
        WorkKey::Gc => crate::metrics::counters::ReconcileKind::Gc,
    };
    crate::metrics::counters::reconciled(kind, res.is_err());
    match res {
        Ok(r) => r,
        Err(crate::store::StoreError::NotFound { .. }) => None,
        Err(crate::store::StoreError::Conflict { .. }) => Some(Duration::from_millis(10)),
        Err(e) => {
            tracing::error!(?key, error = %crate::error_chain(&e), "reconcile failed; retrying");
            Some(Duration::from_secs(1))
        }
    }
}

/// Starts the manager: the watch router, runtime notifications, the resync timer and the workers.
pub fn spawn(
    ctx: Arc<Ctx>,
    mut vm_events: UnboundedReceiver<VmRef>,
    hpa: Option<Arc<dyn HpaReconciler>>,
) {
    // Store changes → keys.
    let c = Arc::clone(&ctx);
    let (_, mut rx) = c.store.watch(None).expect("watching from now cannot fail");
    tokio::spawn(async move {
        enqueue_all(&c);
        loop {
            match rx.recv().await {
                Ok(ev) => route(
                    &c,
                    &ev.key,
                    &ev.object,
                    ev.event_type == crate::store::EventType::Deleted,
                ),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "controller fell behind the watch stream; resyncing"
                    );
                    enqueue_all(&c);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    // VM runtime notifications → VMI keys.
    let c = Arc::clone(&ctx);
    tokio::spawn(async move {
        while let Some(vm) = vm_events.recv().await {
            c.queue.add(WorkKey::Vmi(vm.namespace, vm.name));
        }
    });
    // Periodic resync.
    let c = Arc::clone(&ctx);
    tokio::spawn(async move {
        let mut t = tokio::time::interval(c.config.resync);
        t.tick().await;
        loop {
            t.tick().await;
            enqueue_all(&c);
        }
    });
    for _ in 0..ctx.config.workers.max(1) {
        let c = Arc::clone(&ctx);
        let h = hpa.clone();
        tokio::spawn(async move {
            loop {
                let key = c.queue.next().await;
                let c2 = Arc::clone(&c);
                let h2 = h.clone();
                let k2 = key.clone();
                let job = tokio::task::spawn_blocking(move || process(&c2, h2.as_deref(), &k2));
                let requeue = match job.await {
                    Ok(r) => r,
                    // The runtime is shutting down: the key is reconciled at the next start.
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => {
                        tracing::error!(error = %e, "reconcile panicked");
                        Some(Duration::from_secs(1))
                    }
                };
                c.queue.done(&key);
                if let Some(d) = requeue {
                    c.queue.add_after(key, d);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
