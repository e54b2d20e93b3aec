//! The HPA reconcile (`reconcileAutoscaler`): read the target's scale, compute a proposal from
//! the VMIs' CPU, normalize it, write the scale through the scale subresource's semantics,
//! record events and write the status. One sync per HPA every `sync_period` (15 s by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::algorithm::{self, Tuning};
use super::behavior::{self, Bounds, Memory, Tick};
use super::pods::{CpuSource, pod_of};
use super::status::{
    ABLE_TO_SCALE, SCALING_ACTIVE, SCALING_LIMITED, cpu_metric_status, ensure_replicas,
    set_condition, set_replicas,
};
use crate::controller::{Ctx, HpaReconciler};
use crate::events::EventKind;
use crate::kinds::Kind;
use crate::kinds::hpa::{self, Autoscaling};
use crate::meta;
use crate::metrics::counters::{self, COUNTERS};
use crate::selector::Selector;
use crate::service::{Service, scale_of};
use crate::store::{ObjectKey, StoreError};

/// Autoscaler settings (kube-controller-manager's HPA flags).
#[derive(Debug, Clone, Copy)]
pub struct AutoscalerConfig {
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub downscale_stabilization: Duration,
    pub tuning: Tuning,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tuning: Tuning::default(),
        }
    }
}

/// One HPA as the controller remembers it.
struct Tracked {
    uid: String,
    /// The spec generation of the last sync.
    generation: i64,
    last_sync: Tick,
    memory: Memory,
}

/// Monotonic and wall-clock time of a sync.
pub type Clock = Box<dyn Fn() -> (Tick, DateTime<Utc>) + Send + Sync>;

/// The autoscaler: the [`HpaReconciler`] plugged into the controller manager.
pub struct Autoscaler {
    config: AutoscalerConfig,
    metrics: Arc<dyn CpuSource>,
    /// Per HPA (namespace, name): what the controller remembers about it.
    memory: Mutex<HashMap<(String, String), Tracked>>,
    clock: Clock,
}

const METRIC_NAME: &str = "cpu resource utilization (percentage of request)";

impl Autoscaler {
    /// An autoscaler reading CPU from `metrics`.
    pub fn new(config: AutoscalerConfig, metrics: Arc<dyn CpuSource>) -> Self {
        let start = Instant::now();
        Self::with_clock(
            config,
            metrics,
            Box::new(move || (start.elapsed(), Utc::now())),
        )
    }

    /// The same with a chosen clock (tests).
    pub fn with_clock(config: AutoscalerConfig, metrics: Arc<dyn CpuSource>, clock: Clock) -> Self {
        Autoscaler {
            config,
            metrics,
            memory: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Tracked>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What one sync decided, before it is written.
struct Outcome {
    status: Value,
    /// (desired, reason) when the target must be rescaled.
    rescale: Option<(i32, String)>,
    current: i32,
    /// Events to record: (kind, reason, message).
    events: Vec<(EventKind, &'static str, String)>,
}

impl Autoscaler {
    fn compute(&self, ctx: &Ctx, hpa_obj: &Value, a: &Autoscaling, mem: &mut Memory) -> Outcome {
        let (tick, wall) = (self.clock)();
        let now = wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let ns = meta::namespace(hpa_obj);
        let mut status = hpa_obj.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut events = Vec::new();
        let out = |status: Value, events, rescale, current| Outcome {
            status,
            rescale,
            current,
            events,
        };
        // The target's scale subresource.
        let set_key = ObjectKey::new(Kind::ReplicaSet, ns, &a.target.name);
        let Some(set) = ctx.store.get(&set_key) else {
            let err = format!(
                "{} \"{}\" not found",
                Kind::ReplicaSet.qualified_plural(),
                a.target.name
            );
            events.push((EventKind::Warning, "FailedGetScale", err.clone()));
            set_condition(
                &mut status,
                ABLE_TO_SCALE,
                false,
                "FailedGetScale",
                &format!("the HPA controller was unable to get the target's current scale: {err}"),
                &now,
            );
            set_condition(
                &mut status,
                SCALING_ACTIVE,
                false,
                "FailedGetScale",
                &format!(
                    "the HPA target {}/{} does not exist",
                    a.target.kind, a.target.name
                ),
                &now,
            );
            ensure_replicas(&mut status);
            return out(status, events, None, 0);
        };
        set_condition(
            &mut status,
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
            &now,
        );
        let scale = scale_of(&set);
        let current = scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
        let selector = scale["status"]["selector"]
            .as_str()
            .unwrap_or("")
            .to_string();
        mem.record_initial(current, tick);
        let (min, max) = (a.min_replicas, a.max_replicas);
        let mut metric_statuses = None;
        let (desired, reason) = if current == 0 && min != 0 {
            set_condition(
                &mut status,
                SCALING_ACTIVE,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &now,
            );
            set_replicas(&mut status, current, 0, None, None);
            return out(status, events, None, current);
        } else if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
            )
        } else if current < min {
            (
                min,
                "Current number of replicas below Spec.MinReplicas".to_string(),
            )
        } else {
            let proposal = self.propose(
                ctx,
                ns,
                &selector,
                current,
                a,
                &now,
                &mut status,
                &mut events,
            );
            let Some((proposed, statuses)) = proposal else {
                // `setCurrentReplicasAndMetricsInStatus`: the previous desired count stays.
                let previous = status["desiredReplicas"].as_i64().unwrap_or(0) as i32;
                set_replicas(&mut status, current, previous, None, None);
                return out(status, events, None, current);
            };
            metric_statuses = Some(statuses);
            let reason = if proposed > current {
                format!("{METRIC_NAME} above target")
            } else {
                "All metrics below target".to_string()
            };
            let bounds = Bounds { current, min, max };
            let n = match &a.behavior {
                None => behavior::normalize_legacy(
                    mem,
                    bounds,
                    proposed,
                    self.config.downscale_stabilization,
                    tick,
                ),
                Some(b) => behavior::normalize_with_behaviors(
                    mem,
                    b,
                    bounds,
                    proposed,
                    self.config.downscale_stabilization,
                    tick,
                ),
            };
            set_condition(&mut status, ABLE_TO_SCALE, true, n.able.0, n.able.1, &now);
            let (limited, why) = n.limited;
            set_condition(&mut status, SCALING_LIMITED, limited, why.0, why.1, &now);
            (n.replicas, reason)
        };
        let rescale = (desired != current).then_some((desired, reason));
        let shown = if rescale.is_some() { desired } else { current };
        set_replicas(&mut status, current, shown, metric_statuses, None);
        out(status, events, rescale, current)
    }

    /// Computes the metric proposal; `None` when no metric could be computed (the conditions
    /// and events say why).
    #[allow(clippy::too_many_arguments)]
    fn propose(
        &self,
        ctx: &Ctx,
        ns: &str,
        selector: &str,
        current: i32,
        a: &Autoscaling,
        now: &str,
        status: &mut Value,
        events: &mut Vec<(EventKind, &'static str, String)>,
    ) -> Option<(i32, Vec<Value>)> {
        if selector.is_empty() {
            events.push((
                EventKind::Warning,
                "SelectorRequired",
                "selector is required".into(),
            ));
            set_condition(
                status,
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
                now,
            );
            return None;
        }
        let sel = match Selector::parse(selector) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                );
                events.push((EventKind::Warning, "InvalidSelector", msg.clone()));
                set_condition(status, SCALING_ACTIVE, false, "InvalidSelector", &msg, now);
                return None;
            }
        };
        let (vmis, _) = ctx
            .store
            .list(Kind::Vmi, Some(ns), |o| sel.matches(&meta::labels(o)));
        let pods: Vec<_> = vmis.iter().map(|v| pod_of(v)).collect();
        let samples: BTreeMap<String, algorithm::Sample> = pods
            .iter()
            .filter_map(|p| Some((p.name.clone(), self.metrics.cpu(&p.name)?)))
            .collect();
        let wall = (self.clock)().1;
        let mut best: Option<i32> = None;
        let mut statuses = Vec::new();
        let mut first_error = None;
        for target in &a.cpu_targets {
            match algorithm::cpu_replicas(
                current,
                *target,
                &pods,
                &samples,
                wall,
                &self.config.tuning,
            ) {
                Ok(p) => {
                    statuses.push(cpu_metric_status(p.utilization, p.average_millis));
                    best = Some(best.map_or(p.replicas, |b| b.max(p.replicas)));
                }
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        let n = a.cpu_targets.len();
        let invalid = n - statuses.len();
        if let Some(e) = &first_error {
            let err = format!("failed to get cpu utilization: {e}");
            events.push((EventKind::Warning, "FailedGetResourceMetric", err.clone()));
            if invalid >= n || best.is_some_and(|b| b < current) {
                set_condition(
                    status,
                    SCALING_ACTIVE,
                    false,
                    "FailedGetResourceMetric",
                    &format!("the HPA was unable to compute the replica count: {err}"),
                    now,
                );
                events.push((
                    EventKind::Warning,
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({invalid} invalid out of {n}), first error is: failed to get cpu resource metric value: {err}"
                    ),
                ));
                return None;
            }
        }
        set_condition(
            status,
            SCALING_ACTIVE,
            true,
            "ValidMetricFound",
            &format!(
                "the HPA was able to successfully calculate a replica count from {METRIC_NAME}"
            ),
            now,
        );
        best.map(|b| (b, statuses))
    }

    /// One sync; returns when the next one is due (`None`: the HPA is gone).
    fn sync(&self, ctx: &Ctx, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
        let key = ObjectKey::new(Kind::Hpa, ns, name);
        let mem_key = (ns.to_string(), name.to_string());
        let Some(obj) = ctx.store.get(&key).filter(|o| !meta::is_deleting(o)) else {
            self.memory().remove(&mem_key);
            return Ok(None);
        };
        let uid = meta::uid(&obj).to_string();
        let generation = obj
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let started = (self.clock)().0;
        let mut mem = {
            let mut g = self.memory();
            match g.remove(&mem_key) {
                Some(t) if t.uid == uid => {
                    // Like the controller's rate-limited queue: changes of the object (its own
                    // status writes, resyncs) do not sync it more often than every period; a
                    // new spec does.
                    let next = t.last_sync + self.config.sync_period.mul_f64(0.9);
                    if t.generation == generation && started < next {
                        let wait = t.last_sync + self.config.sync_period - started;
                        g.insert(mem_key, t);
                        return Ok(Some(wait));
                    }
                    t.memory
                }
                _ => Memory::default(),
            }
        };
        let a = hpa::resolve(&obj);
        let mut o = self.compute(ctx, &obj, &a, &mut mem);
        if let Some((desired, reason)) = o.rescale.clone() {
            let svc = Service::new(ctx.store.clone(), Arc::new(ctx.capacity));
            let (tick, wall) = (self.clock)();
            let now = wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            match svc.set_scale(ns, &a.target.name, &json!({"spec": {"replicas": desired}})) {
                Ok(_) => {
                    set_condition(
                        &mut o.status,
                        ABLE_TO_SCALE,
                        true,
                        "SucceededRescale",
                        &format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                        &now,
                    );
                    o.events.push((
                        EventKind::Normal,
                        "SuccessfulRescale",
                        format!("New size: {desired}; reason: {reason}"),
                    ));
                    mem.store_scale_event(a.behavior.as_ref(), o.current, desired, tick);
                    o.status["lastScaleTime"] = json!(now);
                    let c = if desired > o.current {
                        &COUNTERS.hpa_scale_ups
                    } else {
                        &COUNTERS.hpa_scale_downs
                    };
                    counters::add(c, 1);
                    tracing::info!(hpa = %format!("{ns}/{name}"), from = o.current, to = desired, %reason, "rescaled");
                }
                Err(e) => {
                    let err = e.to_string();
                    o.events.push((
                        EventKind::Warning,
                        "FailedRescale",
                        format!("New size: {desired}; reason: {reason}; error: {err}"),
                    ));
                    set_condition(
                        &mut o.status,
                        ABLE_TO_SCALE,
                        false,
                        "FailedUpdateScale",
                        &format!("the HPA controller was unable to update the target scale: {err}"),
                        &now,
                    );
                    o.status["desiredReplicas"] = obj
                        .get("status")
                        .and_then(|s| s.get("desiredReplicas"))
                        .cloned()
                        .unwrap_or(json!(o.current));
                }
            }
        }
        for (k, reason, msg) in &o.events {
            ctx.events.record(Kind::Hpa, &obj, *k, reason, msg);
        }
        self.memory().insert(
            mem_key,
            Tracked {
                uid: uid.clone(),
                generation,
                last_sync: started,
                memory: mem,
            },
        );
        if obj.get("status") != Some(&o.status) {
            ctx.store.update(&key, false, |cur| {
                if meta::uid(cur) != uid {
                    return Ok(None);
                }
                let mut n = cur.clone();
                n["status"] = o.status.clone();
                Ok(Some(n))
            })?;
        }
        Ok(Some(self.config.sync_period))
    }
}

impl HpaReconciler for Autoscaler {
    fn reconcile(&self, ctx: &Ctx, ns: &str, name: &str) -> Option<Duration> {
        let t0 = Instant::now();
        let res = self.sync(ctx, ns, name);
        counters::add(&COUNTERS.hpa_nanos, t0.elapsed().as_nanos() as u64);
        match res {
            Ok(next) => next,
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(hpa = %format!("{ns}/{name}"), error = %crate::error_chain(&e), "HPA sync failed; retrying");
                Some(Duration::from_secs(1).min(self.config.sync_period))
            }
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
