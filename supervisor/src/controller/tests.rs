//! Controller scenarios against the fake runtime and a fake image source: the reconcile logic
//! end to end, without processes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::boot::{BootImage, BoxFuture, ImageSource, KernelArtifacts, PullPolicy};
use crate::events::events_for;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{ExitInfo, Observed};

struct Images {
    fail: bool,
}

impl ImageSource for Images {
    fn boot_image(
        &self,
        image: &str,
        _p: PullPolicy,
        _k: bool,
    ) -> BoxFuture<Result<BootImage, String>> {
        let (fail, image) = (self.fail, image.to_string());
        Box::pin(async move {
            if fail {
                return Err(format!("{image}: manifest unknown"));
            }
            Ok(BootImage {
                digest: "sha256:00".into(),
                disk: "/store/disk.raw".into(),
                kernel: Some("/store/vmlinux".into()),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            })
        })
    }
    fn kernel_from(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: PullPolicy,
    ) -> BoxFuture<Result<KernelArtifacts, String>> {
        Box::pin(async { Err("unused".into()) })
    }
}

struct World {
    _dir: tempfile::TempDir,
    ctx: Arc<Ctx>,
    rt: Arc<FakeRuntime>,
    rx: tokio::sync::Mutex<tokio::sync::broadcast::Receiver<Arc<crate::store::WatchEvent>>>,
}

fn world(fail_images: bool, auto_ready: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let rt = Arc::new(FakeRuntime {
        auto_ready,
        ..Default::default()
    });
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        runtime: rt.clone(),
        images: ImageCache::new(Arc::new(Images { fail: fail_images })),
        events: Recorder::new(store),
        capacity: Capacity {
            reserve: 0,
            overhead: 0,
        },
        queue: WorkQueue::new(),
        config: ControllerConfig::default(),
        launch_lock: Mutex::new(()),
        crash_loops: Mutex::new(Default::default()),
        probes: Default::default(),
    });
    let (_, rx) = ctx.store.watch(None).unwrap();
    World {
        _dir: dir,
        ctx,
        rt,
        rx: tokio::sync::Mutex::new(rx),
    }
}

/// Processes queued keys (and their store-change follow-ups) until nothing is left.
async fn settle(w: &World) {
    let mut rx = w.rx.lock().await;
    for _ in 0..200 {
        while let Ok(ev) = rx.try_recv() {
            route(
                &w.ctx,
                &ev.key,
                &ev.object,
                ev.event_type == crate::store::EventType::Deleted,
            );
        }
        if w.ctx.queue.is_empty() {
            // Let spawned image pulls finish and wake their VMIs.
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(ev) = rx.try_recv() {
                route(
                    &w.ctx,
                    &ev.key,
                    &ev.object,
                    ev.event_type == crate::store::EventType::Deleted,
                );
            }
            if w.ctx.queue.is_empty() {
                return;
            }
        }
        let k = w.ctx.queue.next().await;
        process(&w.ctx, None, &k);
        w.ctx.queue.done(&k);
    }
    panic!("controllers did not settle");
}

fn seed_set(replicas: i64) -> Value {
    let mut v: Value =
        serde_norway::from_str(include_str!("../../../tests/fixtures/seed/vmirs.yaml")).unwrap();
    v["spec"]["replicas"] = json!(replicas);
    v
}

fn create_set(w: &World, obj: Value) -> Arc<Value> {
    let o = w
        .ctx
        .store
        .create(Kind::ReplicaSet, "default", obj, true)
        .unwrap();
    w.ctx
        .queue
        .add(WorkKey::Set("default".into(), meta::name(&o).into()));
    o
}

fn vmis(w: &World) -> Vec<Arc<Value>> {
    w.ctx.store.list(Kind::Vmi, Some("default"), |_| true).0
}

fn set_status(w: &World, name: &str) -> Value {
    w.ctx
        .store
        .get(&ObjectKey::new(Kind::ReplicaSet, "default", name))
        .unwrap()["status"]
        .clone()
}

fn scale(w: &World, name: &str, n: i64) {
    let key = ObjectKey::new(Kind::ReplicaSet, "default", name);
    w.ctx
        .store
        .update(&key, true, |cur| {
            let mut c = cur.clone();
            c["spec"]["replicas"] = json!(n);
            Ok(Some(c))
        })
        .unwrap();
}

fn notify_all(w: &World) {
    for v in vmis(w) {
        w.ctx
            .queue
            .add(WorkKey::Vmi("default".into(), meta::name(&v).into()));
    }
}

#[tokio::test]
async fn set_reaches_ready_replicas_and_scales() {
    let w = world(false, true);
    create_set(&w, seed_set(2));
    settle(&w).await;
    let st = set_status(&w, "lab05-cirros-replicaset");
    assert_eq!(
        (st["replicas"].clone(), st["readyReplicas"].clone()),
        (json!(2), json!(2)),
        "{st}"
    );
    assert_eq!(
        st["labelSelector"],
        json!("kubevirt.io/domain=lab05-cirros")
    );
    for v in vmis(&w) {
        assert_eq!(v["status"]["phase"], json!("Running"));
        assert!(meta::name(&v).starts_with("lab05-cirros-replicaset"));
        assert_eq!(
            meta::controller_ref(&v).unwrap().name,
            "lab05-cirros-replicaset"
        );
    }
    let launches = w.rt.launches.lock().unwrap().clone();
    assert_eq!(launches.len(), 2);
    assert_eq!(launches[0].memory_bytes, 265 << 20);
    assert_eq!(launches[0].limits.cpu_limit_millis, Some(300));

    scale(&w, "lab05-cirros-replicaset", 1);
    settle(&w).await;
    assert_eq!(vmis(&w).len(), 1);
    assert_eq!(w.rt.stops.lock().unwrap().len(), 1);
    assert_eq!(w.rt.released.lock().unwrap().len(), 1);

    scale(&w, "lab05-cirros-replicaset", 5);
    settle(&w).await;
    assert_eq!(
        set_status(&w, "lab05-cirros-replicaset")["readyReplicas"],
        json!(5)
    );
    let set = w
        .ctx
        .store
        .get(&ObjectKey::new(
            Kind::ReplicaSet,
            "default",
            "lab05-cirros-replicaset",
        ))
        .unwrap();
    let evs = events_for(&w.ctx.store, "default", meta::uid(&set));
    assert!(evs.iter().any(|e| e["reason"] == "SuccessfulCreate"));
    assert!(evs.iter().any(|e| e["reason"] == "SuccessfulDelete"));
}

#[tokio::test]
async fn crashed_vm_is_replaced_then_cleaned_up() {
    let w = world(false, true);
    create_set(&w, seed_set(2));
    settle(&w).await;
    let victim = vmis(&w)[0].clone();
    w.rt.set(
        meta::uid(&victim),
        Observed::Exited(ExitInfo {
            succeeded: false,
            reason: "Killed".into(),
            message: "SIGKILL".into(),
        }),
    );
    notify_all(&w);
    settle(&w).await;
    let names: Vec<String> = vmis(&w).iter().map(|v| meta::name(v).to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        !names.contains(&meta::name(&victim).to_string()),
        "the failed VMI was deleted"
    );
    assert_eq!(
        set_status(&w, "lab05-cirros-replicaset")["readyReplicas"],
        json!(2)
    );
}

#[tokio::test]
async fn paused_set_ignores_deleted_vmis_until_resumed() {
    let w = world(false, true);
    create_set(&w, seed_set(2));
    settle(&w).await;
    let key = ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset");
    w.ctx
        .store
        .update(&key, true, |c| {
            let mut n = c.clone();
            n["spec"]["paused"] = json!(true);
            Ok(Some(n))
        })
        .unwrap();
    settle(&w).await;
    let v = vmis(&w)[0].clone();
    w.ctx
        .store
        .delete(
            &ObjectKey::new(Kind::Vmi, "default", meta::name(&v)),
            None,
            None,
            true,
        )
        .unwrap();
    settle(&w).await;
    assert_eq!(vmis(&w).len(), 1);
    assert_eq!(
        super::status::condition(&w.ctx.store.get(&key).unwrap(), "ReplicaPaused"),
        Some(true)
    );
    w.ctx
        .store
        .update(&key, true, |c| {
            let mut n = c.clone();
            n["spec"]["paused"] = json!(false);
            Ok(Some(n))
        })
        .unwrap();
    settle(&w).await;
    assert_eq!(vmis(&w).len(), 2);
}

#[tokio::test]
async fn missing_image_leaves_vmis_pending_with_backoff() {
    let w = world(true, true);
    create_set(&w, seed_set(1));
    settle(&w).await;
    let v = vmis(&w)[0].clone();
    assert_eq!(v["status"]["phase"], json!("Pending"));
    assert_eq!(v["status"]["reason"], json!("ImagePullBackOff"));
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("manifest unknown")
    );
    assert!(w.rt.launches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn stored_selector_mismatch_sets_replica_failure_only() {
    let w = world(false, true);
    let mut bad = seed_set(2);
    bad["spec"]["selector"]["matchLabels"]["kubevirt.io/domain"] = json!("other");
    create_set(&w, bad);
    settle(&w).await;
    assert!(vmis(&w).is_empty());
    let set = w
        .ctx
        .store
        .get(&ObjectKey::new(
            Kind::ReplicaSet,
            "default",
            "lab05-cirros-replicaset",
        ))
        .unwrap();
    assert_eq!(super::status::condition(&set, "ReplicaFailure"), Some(true));
}

#[tokio::test]
async fn deleting_the_set_deletes_its_vmis_and_orphan_keeps_them() {
    let w = world(false, true);
    create_set(&w, seed_set(2));
    settle(&w).await;
    w.ctx
        .store
        .delete(
            &ObjectKey::new(Kind::ReplicaSet, "default", "lab05-cirros-replicaset"),
            None,
            None,
            true,
        )
        .unwrap();
    w.ctx.queue.add(WorkKey::Gc);
    settle(&w).await;
    assert!(vmis(&w).is_empty());
    assert!(w.rt.running_uids().is_empty());

    let mut o = seed_set(1);
    o["metadata"]["name"] = json!("keep");
    create_set(&w, o);
    settle(&w).await;
    let key = ObjectKey::new(Kind::ReplicaSet, "default", "keep");
    w.ctx
        .store
        .update(&key, true, |c| {
            let mut n = c.clone();
            meta::set_finalizers(&mut n, &["orphan".into()]);
            Ok(Some(n))
        })
        .unwrap();
    w.ctx.store.delete(&key, None, None, true).unwrap();
    settle(&w).await;
    assert!(w.ctx.store.get(&key).is_none());
    let left = vmis(&w);
    assert_eq!(left.len(), 1);
    assert!(meta::controller_ref(&left[0]).is_none());
}

#[tokio::test]
async fn vmi_that_can_never_fit_fails_and_the_set_backs_off() {
    let w = world(false, true);
    let mut set = seed_set(1);
    set["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("100Ti");
    let set = create_set(&w, set);
    settle(&w).await;
    assert!(w.rt.launches.lock().unwrap().is_empty());
    let (evs, _) = w.ctx.store.list(Kind::Event, Some("default"), |_| true);
    let unschedulable = evs
        .iter()
        .filter(|e| e["reason"] == "Unschedulable")
        .count();
    assert_eq!(
        unschedulable, 4,
        "three replacements at once, then back-off"
    );
    let st = set_status(&w, meta::name(&set));
    assert!(
        st["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("keep failing"),
        "{st}"
    );
}
