//! The replica calculation of Kubernetes' podautoscaler for a CPU `Utilization` target
//! (`replica_calculator.go`: `GetResourceReplicas`, `groupPods`, `calculatePodRequests` and
//! `metrics.GetResourceUtilizationRatio`), as pure functions over VMIs-as-pods.
//!
//! * utilization = ⌊Σ usage × 100 / Σ request⌋ over ready pods with metrics; ratio =
//!   utilization / target;
//! * within the tolerance (0.1) nothing changes; otherwise desired = ⌈ratio × ready pods⌉;
//! * pods without metrics count as 100% of their request on a scale-down and 0% on a scale-up,
//!   not-ready pods as 0% on a scale-up only; if that flips the direction, nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A pod's phase (a VMI's phase mapped: Pending/Scheduling/Scheduled → Pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub last_transition: DateTime<Utc>,
}

/// One pod (one VMI) as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub phase: PodPhase,
    pub deleting: bool,
    pub readiness: Option<Readiness>,
    pub start_time: Option<DateTime<Utc>>,
    /// CPU request in millicores; `None` fails the calculation (as a container without request).
    pub request_millis: Option<u64>,
}

/// One CPU sample (metrics-server's `PodMetrics`): usage over `window` ending at `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub millis: u64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

/// Controller tunables (kube-controller-manager's `--horizontal-pod-autoscaler-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    pub tolerance: f64,
    pub cpu_initialization_period: Duration,
    pub initial_readiness_delay: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// Why no proposal could be computed (each becomes `ScalingActive=False`
/// `FailedGetResourceMetric` with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error(
        "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    )]
    NoMetricsAtAll,
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("missing request for cpu in container compute of Pod {0}")]
    MissingRequest(String),
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    #[error("no metrics returned matched known pods")]
    NoMatchingRequests,
}

/// A proposal for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Utilization in percent of request, before missing/unready pods were filled in.
    pub utilization: i32,
    /// Average usage per pod in millicores (the `averageValue` of the current metric).
    pub average_millis: u64,
}

/// Pods sorted by how they count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    pub ready: usize,
    pub unready: BTreeSet<String>,
    pub missing: BTreeSet<String>,
    pub ignored: BTreeSet<String>,
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `groupPods`: deleting or failed pods are ignored; pending ones are unready; pods without a
/// sample are missing; for CPU a pod is also unready when it has no Ready condition or start
/// time, when within the initialization period it is not ready or its sample began before it
/// became ready, or when after that period it is not ready and never was.
pub fn group_pods(
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    now: DateTime<Utc>,
    t: &Tuning,
) -> Groups {
    let mut g = Groups::default();
    for p in pods {
        if p.deleting || p.phase == PodPhase::Failed {
            g.ignored.insert(p.name.clone());
            continue;
        }
        if p.phase == PodPhase::Pending {
            g.unready.insert(p.name.clone());
            continue;
        }
        let Some(sample) = samples.get(&p.name) else {
            g.missing.insert(p.name.clone());
            continue;
        };
        let unready = match (p.readiness, p.start_time) {
            (Some(c), Some(start)) => {
                if plus(start, t.cpu_initialization_period) > now {
                    !c.ready || sample.timestamp < plus(c.last_transition, sample.window)
                } else {
                    !c.ready && plus(start, t.initial_readiness_delay) > c.last_transition
                }
            }
            _ => true,
        };
        if unready {
            g.unready.insert(p.name.clone());
            continue;
        }
        g.ready += 1;
    }
    g
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, average usage) over the pods in
/// `usage` that have a request.
fn utilization_ratio(
    usage: &BTreeMap<String, u64>,
    requests: &BTreeMap<String, u64>,
    target: i32,
) -> Result<(f64, i32, u64), CalcError> {
    let (mut total, mut req, mut n) = (0u64, 0u64, 0u64);
    for (name, u) in usage {
        let Some(r) = requests.get(name) else {
            continue;
        };
        total += u;
        req += r;
        n += 1;
    }
    if req == 0 {
        return Err(CalcError::NoMatchingRequests);
    }
    let utilization = i32::try_from(total * 100 / req).unwrap_or(i32::MAX);
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        total / n,
    ))
}

/// `GetResourceReplicas` for CPU: the replica count `target` % utilization asks for.
pub fn cpu_replicas(
    current: i32,
    target: i32,
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    now: DateTime<Utc>,
    t: &Tuning,
) -> Result<Proposal, CalcError> {
    if !pods.iter().any(|p| samples.contains_key(&p.name)) {
        return Err(CalcError::NoMetricsAtAll);
    }
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, samples, now, t);
    let mut requests = BTreeMap::new();
    for p in pods {
        let r = p
            .request_millis
            .ok_or_else(|| CalcError::MissingRequest(p.name.clone()))?;
        requests.insert(p.name.clone(), r);
    }
    let mut usage: BTreeMap<String, u64> = pods
        .iter()
        .filter(|p| !g.ignored.contains(&p.name) && !g.unready.contains(&p.name))
        .filter_map(|p| Some((p.name.clone(), samples.get(&p.name)?.millis)))
        .collect();
    if usage.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let (ratio, utilization, average_millis) = utilization_ratio(&usage, &requests, target)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average_millis,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= t.tolerance {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.ready as f64).ceil() as i32));
    }
    if !g.missing.is_empty() {
        for name in &g.missing {
            if ratio < 1.0 {
                usage.insert(name.clone(), requests[name]);
            } else if ratio > 1.0 {
                usage.insert(name.clone(), 0);
            }
        }
    }
    if scale_up_with_unready {
        for name in &g.unready {
            usage.insert(name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&usage, &requests, target)?;
    if (1.0 - new_ratio).abs() <= t.tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let new_replicas = (new_ratio * usage.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(new_replicas))
}

#[cfg(test)]
#[path = "algorithm_tests.rs"]
mod tests;
