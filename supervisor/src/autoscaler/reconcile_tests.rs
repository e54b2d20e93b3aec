//! HPA syncs against a real store (scale subresource, events, status) with a table of CPU
//! samples and a controllable clock.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::capacity::Capacity;
use crate::controller::ControllerConfig;
use crate::controller::images::ImageCache;
use crate::controller::queue::WorkQueue;
use crate::events::{Recorder, events_for};
use crate::kinds::FieldValidation;
use crate::runtime::fake::FakeRuntime;
use crate::store::Store;

struct NoImages;
impl crate::boot::ImageSource for NoImages {
    fn boot_image(
        &self,
        _: &str,
        _: crate::boot::PullPolicy,
        _: bool,
    ) -> crate::boot::BoxFuture<Result<crate::boot::BootImage, String>> {
        Box::pin(async { Err("unused".into()) })
    }
    fn kernel_from(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: crate::boot::PullPolicy,
    ) -> crate::boot::BoxFuture<Result<crate::boot::KernelArtifacts, String>> {
        Box::pin(async { Err("unused".into()) })
    }
}

#[derive(Default)]
struct Table(Mutex<HashMap<String, algorithm::Sample>>);
impl CpuSource for Table {
    fn cpu(&self, uid: &str) -> Option<algorithm::Sample> {
        self.0.lock().unwrap().get(uid).copied()
    }
}

type SharedClock = Arc<Mutex<(Tick, DateTime<Utc>)>>;

struct World {
    _dir: tempfile::TempDir,
    ctx: Ctx,
    cpu: Arc<Table>,
    clock: SharedClock,
    hpa: Autoscaler,
}

const SELECTOR: &str = "kubevirt.io/domain=lab05-cirros";
const SET: &str = "lab05-cirros-replicaset";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn world(config: AutoscalerConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let ctx = Ctx {
        store: store.clone(),
        runtime: Arc::new(FakeRuntime::default()),
        images: ImageCache::new(Arc::new(NoImages)),
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
    };
    let cpu = Arc::new(Table::default());
    let clock: SharedClock = Arc::new(Mutex::new((Duration::from_secs(1000), t0())));
    let c = Arc::clone(&clock);
    let hpa = Autoscaler::with_clock(config, cpu.clone(), Box::new(move || *c.lock().unwrap()));
    World {
        _dir: dir,
        ctx,
        cpu,
        clock,
        hpa,
    }
}

impl World {
    fn advance(&self, secs: u64) {
        let mut c = self.clock.lock().unwrap();
        c.0 += Duration::from_secs(secs);
        c.1 += chrono::Duration::seconds(secs as i64);
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.lock().unwrap().1
    }

    fn create_set(&self, replicas: i64) {
        let mut v: Value =
            serde_norway::from_str(include_str!("../../../tests/fixtures/seed/vmirs.yaml"))
                .unwrap();
        v["spec"]["replicas"] = json!(replicas);
        v["status"] = json!({"replicas": replicas, "labelSelector": SELECTOR});
        self.ctx
            .store
            .create(Kind::ReplicaSet, "default", v, true)
            .unwrap();
    }

    fn set_replicas(&self) -> i64 {
        self.ctx
            .store
            .get(&ObjectKey::new(Kind::ReplicaSet, "default", SET))
            .unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    }

    /// A Running, Ready VMI of the set (started an hour ago); returns its uid.
    fn add_vmi(&self, name: &str) -> String {
        let set: Value =
            serde_norway::from_str(include_str!("../../../tests/fixtures/seed/vmirs.yaml"))
                .unwrap();
        let long_ago = (self.now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let vmi = json!({
            "metadata": {"name": name, "labels": {"kubevirt.io/domain": "lab05-cirros"}},
            "spec": set["spec"]["template"]["spec"].clone(),
            "status": {"phase": "Running",
                "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": long_ago}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": long_ago}]},
        });
        let o = self
            .ctx
            .store
            .create(Kind::Vmi, "default", vmi, true)
            .unwrap();
        meta::uid(&o).to_string()
    }

    fn load(&self, uid: &str, millis: u64) {
        self.cpu.0.lock().unwrap().insert(
            uid.to_string(),
            algorithm::Sample {
                millis,
                timestamp: self.now(),
                window: Duration::from_secs(15),
            },
        );
    }

    fn create_hpa(&self, obj: Value, version: &str) {
        let (stored, _) = hpa::admit_versioned(&obj, version, FieldValidation::Strict).unwrap();
        self.ctx
            .store
            .create(Kind::Hpa, "default", stored, true)
            .unwrap();
    }

    fn seed_hpa(&self) {
        let v: Value =
            serde_norway::from_str(include_str!("../../../tests/fixtures/seed/hpa.yaml")).unwrap();
        self.create_hpa(v, "v1");
    }

    fn sync(&self, name: &str) -> Option<Duration> {
        self.hpa.reconcile(&self.ctx, "default", name)
    }

    fn hpa_obj(&self, name: &str) -> Arc<Value> {
        self.ctx
            .store
            .get(&ObjectKey::new(Kind::Hpa, "default", name))
            .unwrap()
    }

    fn cond(&self, name: &str, t: &str) -> Option<(bool, String)> {
        super::super::status::condition(&self.hpa_obj(name)["status"], t)
            .map(|(s, r)| (s, r.to_string()))
    }

    fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        let obj = self.hpa_obj(name);
        events_for(&self.ctx.store, "default", meta::uid(&obj))
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

#[test]
fn the_lab_scales_up_then_down_after_the_window() {
    let w = world(AutoscalerConfig {
        downscale_stabilization: Duration::from_secs(30),
        ..AutoscalerConfig::default()
    });
    w.create_set(1);
    let a = w.add_vmi("vm-a");
    w.seed_hpa();
    w.load(&a, 2);
    assert_eq!(w.sync(SET), Some(Duration::from_secs(15)));
    assert_eq!(w.set_replicas(), 1);
    let st = w.hpa_obj(SET)["status"].clone();
    assert_eq!(
        (st["currentReplicas"].clone(), st["desiredReplicas"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        crate::kinds::hpa::convert::to_version(&w.hpa_obj(SET), "v1")["status"]["currentCPUUtilizationPercentage"],
        2
    );
    // Load: 283m of a 100m request against 75%.
    w.advance(15);
    w.load(&a, 283);
    w.sync(SET);
    assert_eq!(w.set_replicas(), 2, "1 → 2 (maxReplicas 2)");
    let obj = w.hpa_obj(SET);
    assert_eq!(obj["status"]["currentReplicas"], 1);
    assert_eq!(obj["status"]["desiredReplicas"], 2);
    assert_eq!(
        obj["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        283
    );
    assert_eq!(obj["status"]["lastScaleTime"], "2026-11-27T12:00:15Z");
    assert_eq!(
        w.cond(SET, "AbleToScale"),
        Some((true, "SucceededRescale".into()))
    );
    assert_eq!(
        w.cond(SET, "ScalingActive"),
        Some((true, "ValidMetricFound".into()))
    );
    assert_eq!(
        w.cond(SET, "ScalingLimited"),
        Some((true, "TooManyReplicas".into()))
    );
    assert!(w.event_reasons(SET).contains(&(
        "SuccessfulRescale".into(),
        "New size: 2; reason: cpu resource utilization (percentage of request) above target".into()
    )));
    // The second VMI comes up; the load stops.
    let b = w.add_vmi("vm-b");
    w.advance(15);
    w.load(&a, 3);
    w.load(&b, 2);
    w.sync(SET);
    assert_eq!(w.set_replicas(), 2, "held by the stabilization window");
    assert_eq!(
        w.cond(SET, "AbleToScale"),
        Some((true, "ScaleDownStabilized".into()))
    );
    assert_eq!(w.hpa_obj(SET)["status"]["currentReplicas"], 2);
    w.advance(15);
    w.load(&a, 3);
    w.load(&b, 2);
    w.sync(SET);
    assert_eq!(w.set_replicas(), 2, "still inside the 30 s window");
    w.advance(16);
    w.load(&a, 3);
    w.load(&b, 2);
    w.sync(SET);
    assert_eq!(w.set_replicas(), 1, "down after the window");
    assert!(w.event_reasons(SET).contains(&(
        "SuccessfulRescale".into(),
        "New size: 1; reason: All metrics below target".into()
    )));
}

#[test]
fn a_missing_target_reports_scaling_inactive() {
    let w = world(AutoscalerConfig::default());
    w.seed_hpa();
    assert_eq!(w.sync(SET), Some(Duration::from_secs(15)));
    assert_eq!(
        w.cond(SET, "ScalingActive"),
        Some((false, "FailedGetScale".into()))
    );
    assert_eq!(
        w.cond(SET, "AbleToScale"),
        Some((false, "FailedGetScale".into()))
    );
    let st = w.hpa_obj(SET)["status"].clone();
    assert!(st["currentReplicas"].is_i64() && st["desiredReplicas"].is_i64());
    assert!(
        w.event_reasons(SET)
            .iter()
            .any(|(r, m)| r == "FailedGetScale" && m.contains("not found"))
    );
}

#[test]
fn metrics_missing_and_disabled_scaling() {
    let w = world(AutoscalerConfig::default());
    w.create_set(1);
    w.add_vmi("vm-a");
    w.seed_hpa();
    w.sync(SET);
    assert_eq!(
        w.cond(SET, "ScalingActive"),
        Some((false, "FailedGetResourceMetric".into()))
    );
    assert_eq!(w.set_replicas(), 1);
    assert!(
        w.event_reasons(SET)
            .iter()
            .any(|(r, _)| r == "FailedComputeMetricsReplicas")
    );
    // A set scaled to zero disables autoscaling.
    let svc = Service::new(w.ctx.store.clone(), Arc::new(w.ctx.capacity));
    svc.set_scale("default", SET, &json!({"spec": {"replicas": 0}}))
        .unwrap();
    // Within the period the HPA is not synced again (its own status write changed it).
    assert_eq!(w.sync(SET), Some(Duration::from_secs(15)));
    assert_eq!(
        w.cond(SET, "ScalingActive"),
        Some((false, "FailedGetResourceMetric".into()))
    );
    w.advance(15);
    w.sync(SET);
    assert_eq!(
        w.cond(SET, "ScalingActive"),
        Some((false, "ScalingDisabled".into()))
    );
    assert_eq!(w.set_replicas(), 0);
}

#[test]
fn bounds_are_enforced_without_metrics() {
    let w = world(AutoscalerConfig::default());
    w.create_set(5);
    w.seed_hpa();
    w.sync(SET);
    assert_eq!(w.set_replicas(), 2, "above maxReplicas: down to it at once");
    assert!(w.event_reasons(SET).contains(&(
        "SuccessfulRescale".into(),
        "New size: 2; reason: Current number of replicas above Spec.MaxReplicas".into()
    )));
    let mut obj: Value =
        serde_norway::from_str(include_str!("../../../tests/fixtures/seed/hpa.yaml")).unwrap();
    obj["metadata"]["name"] = json!("floor");
    obj["spec"]["minReplicas"] = json!(3);
    obj["spec"]["maxReplicas"] = json!(4);
    w.create_hpa(obj, "v1");
    w.sync("floor");
    assert_eq!(w.set_replicas(), 3, "below minReplicas: up to it at once");
}

#[test]
fn v2_default_behavior_scales_up_without_the_legacy_cap() {
    let w = world(AutoscalerConfig::default());
    w.create_set(1);
    let a = w.add_vmi("vm-a");
    w.load(&a, 283);
    w.create_hpa(
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "v2"},
            "spec": {"scaleTargetRef": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet", "name": SET},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": {}}}),
        "v2",
    );
    w.sync("v2");
    // 283% / 50% → ⌈5.66⌉ = 6, capped by the default +4 pods per 15 s → 5.
    assert_eq!(w.set_replicas(), 5);
    assert_eq!(
        w.cond("v2", "ScalingLimited"),
        Some((true, "ScaleUpLimit".into()))
    );
    // Within the same 15 s period no further growth is allowed.
    w.advance(5);
    w.load(&a, 283);
    w.sync("v2");
    assert_eq!(w.set_replicas(), 5);
}
