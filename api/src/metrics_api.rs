//! Metrics served by the daemon:
//!
//! * `metrics.k8s.io/v1beta1` `PodMetrics` (what `kubectl top pod` reads): one entry per VMI,
//!   named after the VMI (there is no virt-launcher pod to name it after; the VMI name is what
//!   `kubectl get vmi`, `corral console` and the HPA use), with one container, `compute`, as in
//!   KubeVirt's launcher pod. CPU is the cgroup's usage over the sampler's window, memory its
//!   working set;
//! * `NodeMetrics` and a one-node `NodeList` for the host, so `kubectl top node` works, and an
//!   empty `PodList` (kubectl's fallback when there are no pod metrics);
//! * Prometheus text on `/metrics`: KubeVirt's metric names where they exist
//!   (`kubevirt_vmi_cpu_usage_seconds_total`, `kubevirt_vmi_memory_resident_bytes`,
//!   `kubevirt_vmi_phase_count`, ...), kube-state-metrics' for HPAs, and corral's own counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use supervisor::kinds::Kind;
use supervisor::kinds::validation::decode;
use supervisor::kinds::vmi::VmiSpec;
use supervisor::meta;
use supervisor::metrics::counters::{COUNTERS, ReconcileKind, get};
use supervisor::metrics::{Sampler, VmMetrics};
use supervisor::quantity::format_cpu_millis;
use supervisor::store::ObjectKey;

use crate::body;
use crate::objects::{Filter, Query};
use crate::state::AppState;
use crate::status::ApiError;

/// What the metrics endpoints read.
pub struct MetricsState {
    pub sampler: Arc<Sampler>,
    /// Memory counted per VM beyond its guest memory (`--vmm-overhead`).
    pub vmm_overhead: u64,
}

const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// A duration as Go's `time.Duration.String()` prints it (`15.002s`, `1m0s`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, s, frac) = (ms / 60_000, (ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}")
    } else {
        format!("{s}.{frac:03}").trim_end_matches('0').to_string()
    };
    if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Memory as metrics-server writes it: Ki, rounded up.
fn format_memory(b: u64) -> String {
    format!("{}Ki", b.div_ceil(1024))
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn no_metrics() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "metrics are not available: the daemon runs without a sampler",
    )
}

fn pod_entry(m: &VmMetrics, vmi: &Value) -> Value {
    json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": m.vm.name,
            "namespace": m.vm.namespace,
            "creationTimestamp": stamp(chrono::Utc::now()),
            "labels": vmi.get("metadata").and_then(|md| md.get("labels")).cloned().unwrap_or(json!({})),
        },
        "timestamp": stamp(m.timestamp),
        "window": go_duration(m.window),
        "containers": [{
            "name": "compute",
            "usage": {
                "cpu": format_cpu_millis(m.cpu_millis()),
                "memory": format_memory(m.memory_working_set),
            },
        }],
    })
}

/// VMIs with metrics (in `ns` when given) that pass `filter`, with their objects.
fn vmis_with_metrics(
    st: &AppState,
    ms: &MetricsState,
    ns: Option<&str>,
) -> Vec<(VmMetrics, Arc<Value>)> {
    let mut out: Vec<(VmMetrics, Arc<Value>)> = ms
        .sampler
        .all()
        .into_iter()
        .filter(|m| ns.is_none_or(|n| m.vm.namespace == n))
        .filter_map(|m| {
            let obj = st
                .store
                .get(&ObjectKey::new(Kind::Vmi, &m.vm.namespace, &m.vm.name))?;
            (meta::uid(&obj) == m.vm.uid).then_some((m, obj))
        })
        .collect();
    out.sort_by(|a, b| (&a.0.vm.namespace, &a.0.vm.name).cmp(&(&b.0.vm.namespace, &b.0.vm.name)));
    out
}

/// `GET /apis/metrics.k8s.io/v1beta1/[namespaces/{ns}/]pods[/{name}]`.
pub fn pods(
    st: &AppState,
    headers: &HeaderMap,
    q: &Query,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<Response, ApiError> {
    let ms = st.metrics.as_ref().ok_or_else(no_metrics)?;
    let enc = body::encoding(headers);
    if let Some(name) = name {
        let found = vmis_with_metrics(st, ms, ns)
            .into_iter()
            .find(|(m, _)| m.vm.name == name);
        return match found {
            Some((m, obj)) => Ok(body::respond(
                StatusCode::OK,
                &pod_entry(&m, &obj),
                enc,
                &[],
            )),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("podmetrics.metrics.k8s.io \"{name}\" not found"),
            )),
        };
    }
    let filter = Filter::from_query(q)?;
    let items: Vec<Value> = vmis_with_metrics(st, ms, ns)
        .into_iter()
        .filter(|(_, obj)| filter.matches(obj))
        .map(|(m, obj)| pod_entry(&m, &obj))
        .collect();
    let list = json!({"kind": "PodMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items});
    Ok(body::respond(StatusCode::OK, &list, enc, &[]))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes[/{name}]`: the host.
pub fn nodes(st: &AppState, headers: &HeaderMap, name: Option<&str>) -> Result<Response, ApiError> {
    let ms = st.metrics.as_ref().ok_or_else(no_metrics)?;
    let host = supervisor::host::node_name();
    let entry = ms.sampler.node().map(|u| {
        json!({
            "kind": "NodeMetrics",
            "apiVersion": API_VERSION,
            "metadata": {"name": host, "creationTimestamp": stamp(chrono::Utc::now()),
                "labels": {"kubernetes.io/hostname": host}},
            "timestamp": stamp(u.timestamp),
            "window": go_duration(u.window),
            "usage": {
                "cpu": format_cpu_millis(u.cpu_nanocores.div_ceil(1_000_000)),
                "memory": format_memory(u.memory_working_set),
            },
        })
    });
    let enc = body::encoding(headers);
    match name {
        Some(n) => match entry.filter(|_| n == host) {
            Some(e) => Ok(body::respond(StatusCode::OK, &e, enc, &[])),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("nodemetrics.metrics.k8s.io \"{n}\" not found"),
            )),
        },
        None => Ok(body::respond(
            StatusCode::OK,
            &json!({"kind": "NodeMetricsList", "apiVersion": API_VERSION, "metadata": {},
                "items": entry.into_iter().collect::<Vec<_>>()}),
            enc,
            &[],
        )),
    }
}

/// `GET /api/v1/namespaces/{ns}/pods`: corral has no pods (kubectl's `top pod` fallback).
pub async fn empty_pods(Path(_ns): Path<String>) -> Response {
    axum::Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "0"}, "items": []}))
        .into_response()
}

/// `GET /api/v1/nodes`: the host as the only node (what `kubectl top node` lists).
pub async fn node_list(State(_st): State<AppState>) -> Response {
    let host = supervisor::host::node_name();
    let (total, _) = supervisor::host::memory();
    let cpus = supervisor::metrics::node::cpus();
    let res = json!({"cpu": cpus.to_string(), "memory": format_memory(total)});
    axum::Json(json!({
        "kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "0"},
        "items": [{"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": host, "labels": {"kubernetes.io/hostname": host}},
            "status": {"capacity": res.clone(), "allocatable": res,
                "conditions": [{"type": "Ready", "status": "True"}]}}],
    }))
    .into_response()
}

// ---- Prometheus ---------------------------------------------------------------------------

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

fn guest_memory(vmi: &Value) -> Option<u64> {
    let spec = decode::<VmiSpec>(vmi.get("spec")?, "spec").ok()?.value;
    Some(spec.validate("spec").ok()?.0.guest_memory)
}

fn vmi_families(p: &mut Prom, st: &AppState) {
    let node = supervisor::host::node_name();
    let (vmis, _) = st.store.list(Kind::Vmi, None, |_| true);
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    for v in &vmis {
        let ph = v
            .get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("Pending")
            .to_ascii_lowercase();
        *phases.entry(ph).or_default() += 1;
    }
    p.family(
        "kubevirt_vmi_phase_count",
        "gauge",
        "Sum of VMIs per phase and node.",
    );
    for (ph, n) in &phases {
        p.sample(
            "kubevirt_vmi_phase_count",
            &[
                ("node", node),
                ("phase", ph),
                ("os", "<none>"),
                ("workload", "<none>"),
                ("flavor", "<none>"),
                ("instance_type", "<none>"),
                ("preference", "<none>"),
            ],
            n,
        );
    }
    p.family(
        "kubevirt_vmi_memory_domain_bytes",
        "gauge",
        "The amount of memory in bytes allocated to the domain.",
    );
    for v in &vmis {
        if let Some(g) = guest_memory(v) {
            p.sample(
                "kubevirt_vmi_memory_domain_bytes",
                &[
                    ("namespace", meta::namespace(v)),
                    ("name", meta::name(v)),
                    ("node", node),
                ],
                g,
            );
        }
    }
    let Some(ms) = &st.metrics else { return };
    let all = vmis_with_metrics(st, ms, None);
    p.family(
        "kubevirt_vmi_cpu_usage_seconds_total",
        "counter",
        "Total CPU time spent in all modes (vCPUs and the VMM), from the VM's cgroup.",
    );
    for (m, _) in &all {
        p.sample(
            "kubevirt_vmi_cpu_usage_seconds_total",
            &[
                ("namespace", &m.vm.namespace),
                ("name", &m.vm.name),
                ("node", node),
            ],
            format!("{:.6}", m.cpu_total_ns as f64 / 1e9),
        );
    }
    p.family(
        "kubevirt_vmi_memory_resident_bytes",
        "gauge",
        "Resident set size of the process running the domain.",
    );
    for (m, _) in &all {
        p.sample(
            "kubevirt_vmi_memory_resident_bytes",
            &[
                ("namespace", &m.vm.namespace),
                ("name", &m.vm.name),
                ("node", node),
            ],
            m.rss,
        );
    }
    p.family(
        "kubevirt_vmi_launcher_memory_overhead_bytes",
        "gauge",
        "Memory counted per VM beyond its guest memory (the VMM process).",
    );
    for (m, _) in &all {
        p.sample(
            "kubevirt_vmi_launcher_memory_overhead_bytes",
            &[("namespace", &m.vm.namespace), ("name", &m.vm.name)],
            ms.vmm_overhead,
        );
    }
    p.family(
        "corral_vmi_cpu_usage_millicores",
        "gauge",
        "CPU usage over the sampling window, as served to kubectl top and the autoscaler.",
    );
    p.family(
        "corral_vmi_memory_working_set_bytes",
        "gauge",
        "Working set of the VM's cgroup (usage minus inactive file cache).",
    );
    for (m, _) in &all {
        let l = [
            ("namespace", m.vm.namespace.as_str()),
            ("name", m.vm.name.as_str()),
        ];
        p.sample("corral_vmi_cpu_usage_millicores", &l, m.cpu_millis());
        p.sample(
            "corral_vmi_memory_working_set_bytes",
            &l,
            m.memory_working_set,
        );
    }
}

fn hpa_families(p: &mut Prom, st: &AppState) {
    let (hpas, _) = st.store.list(Kind::Hpa, None, |_| true);
    let gauges = [
        (
            "kube_horizontalpodautoscaler_status_current_replicas",
            "status",
            "currentReplicas",
            "Current number of replicas of VMIs managed by this autoscaler.",
        ),
        (
            "kube_horizontalpodautoscaler_status_desired_replicas",
            "status",
            "desiredReplicas",
            "Desired number of replicas of VMIs managed by this autoscaler.",
        ),
        (
            "kube_horizontalpodautoscaler_spec_min_replicas",
            "spec",
            "minReplicas",
            "Lower limit for the number of VMIs that can be set by the autoscaler.",
        ),
        (
            "kube_horizontalpodautoscaler_spec_max_replicas",
            "spec",
            "maxReplicas",
            "Upper limit for the number of VMIs that can be set by the autoscaler.",
        ),
    ];
    for (name, part, field, help) in gauges {
        p.family(name, "gauge", help);
        for h in &hpas {
            if let Some(v) = h
                .get(part)
                .and_then(|s| s.get(field))
                .and_then(Value::as_i64)
            {
                p.sample(
                    name,
                    &[
                        ("namespace", meta::namespace(h)),
                        ("horizontalpodautoscaler", meta::name(h)),
                    ],
                    v,
                );
            }
        }
    }
}

fn corral_families(p: &mut Prom) {
    p.family(
        "corral_reconciles_total",
        "counter",
        "Reconciles run by corral's controllers, by kind.",
    );
    for (k, label) in ReconcileKind::ALL {
        p.sample(
            "corral_reconciles_total",
            &[("kind", label)],
            get(&COUNTERS.reconciles[k as usize]),
        );
    }
    p.family(
        "corral_reconcile_errors_total",
        "counter",
        "Reconciles that failed and were retried, by kind.",
    );
    for (k, label) in ReconcileKind::ALL {
        p.sample(
            "corral_reconcile_errors_total",
            &[("kind", label)],
            get(&COUNTERS.reconcile_errors[k as usize]),
        );
    }
    let plain = [
        (
            "corral_vm_starts_total",
            "VMM processes started.",
            get(&COUNTERS.vm_starts),
        ),
        (
            "corral_vm_start_failures_total",
            "VMM processes that could not be started.",
            get(&COUNTERS.vm_start_failures),
        ),
        (
            "corral_image_pull_bytes_total",
            "Bytes pulled from registries.",
            get(&COUNTERS.image_pull_bytes),
        ),
        (
            "corral_metrics_samples_total",
            "Sampling rounds of VM metrics.",
            get(&COUNTERS.metric_samples),
        ),
    ];
    for (name, help, v) in plain {
        p.family(name, "counter", help);
        p.sample(name, &[], v);
    }
    p.family(
        "corral_hpa_rescales_total",
        "counter",
        "Rescales made by the autoscaler, by direction.",
    );
    p.sample(
        "corral_hpa_rescales_total",
        &[("direction", "up")],
        get(&COUNTERS.hpa_scale_ups),
    );
    p.sample(
        "corral_hpa_rescales_total",
        &[("direction", "down")],
        get(&COUNTERS.hpa_scale_downs),
    );
    p.family(
        "corral_metrics_sample_seconds_total",
        "counter",
        "Time spent sampling VM metrics.",
    );
    p.sample(
        "corral_metrics_sample_seconds_total",
        &[],
        format!("{:.6}", get(&COUNTERS.sample_nanos) as f64 / 1e9),
    );
    p.family(
        "corral_hpa_sync_seconds_total",
        "counter",
        "Time spent in autoscaler syncs.",
    );
    p.sample(
        "corral_hpa_sync_seconds_total",
        &[],
        format!("{:.6}", get(&COUNTERS.hpa_nanos) as f64 / 1e9),
    );
}

/// `GET /metrics`: Prometheus text format 0.0.4.
pub fn prometheus(st: &AppState) -> Response {
    let mut p = Prom(String::with_capacity(4096));
    vmi_families(&mut p, st);
    hpa_families(&mut p, st);
    corral_families(&mut p);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.0,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            (15_000, "15s"),
            (15_002, "15.002s"),
            (15_200, "15.2s"),
            (60_000, "1m0s"),
            (90_500, "1m30.5s"),
            (400, "400ms"),
        ];
        for (ms, want) in cases {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
        assert_eq!(format_memory(1), "1Ki");
        assert_eq!(format_memory(229 << 20), "234496Ki");
    }

    #[test]
    fn prometheus_text() {
        let mut p = Prom(String::new());
        p.family("x_total", "counter", "help");
        p.sample("x_total", &[("name", "a\"b")], 3);
        p.sample("x_total", &[], 4);
        assert_eq!(
            p.0,
            "# HELP x_total help\n# TYPE x_total counter\nx_total{name=\"a\\\"b\"} 3\nx_total 4\n"
        );
    }
}
