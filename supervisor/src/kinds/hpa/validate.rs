//! Validation of HorizontalPodAutoscaler specs, with the API server's messages
//! (`pkg/apis/autoscaling/validation`), plus corral's own limits: the target must be a
//! VirtualMachineInstanceReplicaSet and the only metric is `Resource` cpu `Utilization`.

use super::types::{Behavior, MetricSpec, ScalingRules, SpecV1, SpecV2, TargetRef};
use crate::kinds::Kind;
use crate::kinds::validation::{FieldError, Invalid};
use crate::kinds::vmirs::MAX_REPLICAS;

const MAX_STABILIZATION_SECONDS: i64 = 3600;
const MAX_PERIOD_SECONDS: i64 = 1800;
const I32_MAX: i64 = i32::MAX as i64;

fn check_int32(inv: &mut Invalid, field: &str, v: i64) -> bool {
    if v > I32_MAX {
        inv.push(FieldError::invalid(
            field,
            v,
            "must be less than or equal to 2147483647",
        ));
        return false;
    }
    true
}

fn validate_target(t: Option<&TargetRef>, inv: &mut Invalid) {
    let base = "spec.scaleTargetRef";
    let Some(t) = t else {
        inv.push(FieldError::required(base, "scaleTargetRef is required"));
        return;
    };
    let want = Kind::ReplicaSet.info().kind;
    match t.kind.as_deref() {
        None | Some("") => inv.push(FieldError::required(format!("{base}.kind"), "")),
        Some(k) if k != want => inv.push(FieldError::unsupported(
            format!("{base}.kind"),
            &format!("\"{k}\": corral scales only \"{want}\" (kubevirt.io/v1)"),
        )),
        _ => {}
    }
    match t.name.as_deref() {
        None | Some("") => inv.push(FieldError::required(format!("{base}.name"), "")),
        Some(n) if n.contains('/') || n.contains('%') || n == "." || n == ".." => {
            inv.push(FieldError::invalid(
                format!("{base}.name"),
                format!("\"{n}\""),
                "may not contain '/' or '%' and may not be '.' or '..'",
            ));
        }
        _ => {}
    }
    if let Some(av) = t.api_version.as_deref().filter(|s| !s.is_empty()) {
        let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if group != Kind::ReplicaSet.info().group {
            inv.push(FieldError::invalid(
                format!("{base}.apiVersion"),
                format!("\"{av}\""),
                "the target of a corral HPA lives in the kubevirt.io group (kubevirt.io/v1)",
            ));
        }
    }
}

/// corral's bound on replicas (a set's `spec.replicas` has the same).
fn check_replicas(inv: &mut Invalid, field: &str, v: i64) -> bool {
    if v > MAX_REPLICAS {
        inv.push(FieldError::invalid(
            field,
            v,
            "must be less than or equal to 10000",
        ));
        return false;
    }
    true
}

fn validate_bounds(min: Option<i64>, max: Option<i64>, inv: &mut Invalid) {
    if let Some(m) = min {
        if m < 1 {
            inv.push(FieldError::invalid(
                "spec.minReplicas",
                m,
                "must be greater than or equal to 1",
            ));
        } else {
            check_replicas(inv, "spec.minReplicas", m);
        }
    }
    let max = max.unwrap_or(0);
    if max < 1 {
        inv.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        ));
    } else if check_replicas(inv, "spec.maxReplicas", max) && max < min.unwrap_or(1) {
        inv.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
}

const SOURCE_TYPES: [&str; 5] = [
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn validate_metric(i: usize, m: &MetricSpec, inv: &mut Invalid) {
    let base = format!("spec.metrics[{i}]");
    let t = match m.type_.as_deref() {
        None | Some("") => {
            inv.push(FieldError::required(
                format!("{base}.type"),
                "must specify a metric source type",
            ));
            return;
        }
        Some(t) => t,
    };
    if !SOURCE_TYPES.contains(&t) {
        inv.push(FieldError::unsupported(
            format!("{base}.type"),
            &format!("\"{t}\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\""),
        ));
        return;
    }
    if t != "Resource" {
        inv.push(FieldError::unsupported(
            format!("{base}.type"),
            &format!(
                "\"{t}\": corral's autoscaler supports only \"Resource\" metrics (cpu utilization)"
            ),
        ));
        return;
    }
    let Some(r) = &m.resource else {
        inv.push(FieldError::required(
            format!("{base}.resource"),
            "must populate information for the given metric source",
        ));
        return;
    };
    match r.name.as_deref() {
        None | Some("") => inv.push(FieldError::required(
            format!("{base}.resource.name"),
            "must specify a resource name",
        )),
        Some("cpu") => {}
        Some(n) => inv.push(FieldError::unsupported(
            format!("{base}.resource.name"),
            &format!("\"{n}\": corral's autoscaler supports only \"cpu\""),
        )),
    }
    let Some(target) = &r.target else {
        inv.push(FieldError::required(
            format!("{base}.resource.target"),
            "must specify a metric target",
        ));
        return;
    };
    match target.type_.as_deref() {
        None | Some("") => inv.push(FieldError::required(
            format!("{base}.resource.target.type"),
            "must specify a metric target type",
        )),
        Some("Utilization") => match target.average_utilization {
            None => inv.push(FieldError::required(
                format!("{base}.resource.target.averageUtilization"),
                "must set either a target raw value or a target utilization",
            )),
            Some(u) if u < 1 => inv.push(FieldError::invalid(
                format!("{base}.resource.target.averageUtilization"),
                u,
                "must be greater than 0",
            )),
            Some(u) => {
                check_int32(
                    inv,
                    &format!("{base}.resource.target.averageUtilization"),
                    u,
                );
            }
        },
        Some(t @ ("Value" | "AverageValue")) => inv.push(FieldError::unsupported(
            format!("{base}.resource.target.type"),
            &format!("\"{t}\": corral's autoscaler supports only \"Utilization\" targets"),
        )),
        Some(t) => inv.push(FieldError::unsupported(
            format!("{base}.resource.target.type"),
            &format!("\"{t}\": supported values: \"AverageValue\", \"Utilization\", \"Value\""),
        )),
    }
}

fn validate_rules(field: &str, r: &ScalingRules, inv: &mut Invalid) {
    if let Some(p) = r.select_policy.as_deref() {
        if !matches!(p, "Max" | "Min" | "Disabled") {
            inv.push(FieldError::unsupported(
                format!("{field}.selectPolicy"),
                &format!("\"{p}\": supported values: \"Disabled\", \"Max\", \"Min\""),
            ));
        }
    }
    if let Some(s) = r.stabilization_window_seconds {
        if s < 0 {
            inv.push(FieldError::invalid(
                format!("{field}.stabilizationWindowSeconds"),
                s,
                "must be greater than or equal to zero",
            ));
        } else if s > MAX_STABILIZATION_SECONDS {
            inv.push(FieldError::invalid(
                format!("{field}.stabilizationWindowSeconds"),
                s,
                "must be less than or equal to 3600",
            ));
        }
    }
    for (i, p) in r.policies.iter().flatten().enumerate() {
        let pf = format!("{field}.policies[{i}]");
        match p.type_.as_deref() {
            Some("Pods" | "Percent") => {}
            None | Some("") => inv.push(FieldError::required(
                format!("{pf}.type"),
                "must specify a policy type",
            )),
            Some(t) => inv.push(FieldError::unsupported(
                format!("{pf}.type"),
                &format!("\"{t}\": supported values: \"Percent\", \"Pods\""),
            )),
        }
        let v = p.value.unwrap_or(0);
        if v <= 0 {
            inv.push(FieldError::invalid(
                format!("{pf}.value"),
                v,
                "must be greater than zero",
            ));
        } else {
            check_int32(inv, &format!("{pf}.value"), v);
        }
        let ps = p.period_seconds.unwrap_or(0);
        if ps <= 0 {
            inv.push(FieldError::invalid(
                format!("{pf}.periodSeconds"),
                ps,
                "must be greater than zero",
            ));
        } else if ps > MAX_PERIOD_SECONDS {
            inv.push(FieldError::invalid(
                format!("{pf}.periodSeconds"),
                ps,
                "must be less than or equal to 1800",
            ));
        }
    }
}

fn validate_behavior(b: &Behavior, inv: &mut Invalid) {
    if let Some(r) = &b.scale_up {
        validate_rules("spec.behavior.scaleUp", r, inv);
    }
    if let Some(r) = &b.scale_down {
        validate_rules("spec.behavior.scaleDown", r, inv);
    }
}

/// Validates an `autoscaling/v2` spec (before defaulting: absent metrics are allowed).
pub fn validate_v2(spec: &SpecV2, inv: &mut Invalid) {
    validate_target(spec.scale_target_ref.as_ref(), inv);
    validate_bounds(spec.min_replicas, spec.max_replicas, inv);
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        validate_metric(i, m, inv);
    }
    if let Some(b) = &spec.behavior {
        validate_behavior(b, inv);
    }
}

/// Validates an `autoscaling/v1` spec.
pub fn validate_v1(spec: &SpecV1, inv: &mut Invalid) {
    validate_target(spec.scale_target_ref.as_ref(), inv);
    validate_bounds(spec.min_replicas, spec.max_replicas, inv);
    if let Some(t) = spec.target_cpu_utilization_percentage {
        if t < 1 {
            inv.push(FieldError::invalid(
                "spec.targetCPUUtilizationPercentage",
                t,
                "must be greater than 0",
            ));
        } else {
            check_int32(inv, "spec.targetCPUUtilizationPercentage", t);
        }
    }
}
