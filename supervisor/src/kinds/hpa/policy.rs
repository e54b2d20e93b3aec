//! What the autoscaler needs from an HPA, resolved from its (validated, defaulted) v2 spec:
//! bounds, the CPU targets and the scaling behavior. Kubernetes' defaults live here
//! (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules` in `pkg/apis/autoscaling/v2`).

use super::types::{Behavior, ScalingPolicy, ScalingRules, SpecV2};

/// Default CPU target when an HPA names none (`autoscaling.DefaultCPUUtilization`).
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// `HPAScalingPolicyType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: u32,
}

/// One direction's rules. `stabilization_window_seconds: None` means "the controller's default"
/// (only possible for scale-down: `--horizontal-pod-autoscaler-downscale-stabilization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_window_seconds: Option<u32>,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// Both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviors {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

/// The scale target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTarget {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// A resolved HPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaling {
    pub target: ScaleTarget,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// One entry per `Resource cpu Utilization` metric (percent of request).
    pub cpu_targets: Vec<i32>,
    /// `None`: the legacy (autoscaling/v1 style) normalization.
    pub behavior: Option<Behaviors>,
}

fn pods(value: i32, period_seconds: u32) -> Policy {
    Policy {
        kind: PolicyKind::Pods,
        value,
        period_seconds,
    }
}

fn percent(value: i32, period_seconds: u32) -> Policy {
    Policy {
        kind: PolicyKind::Percent,
        value,
        period_seconds,
    }
}

/// Kubernetes' default scale-up rules: no stabilization, the larger of +4 pods or +100% per 15 s.
pub fn default_scale_up() -> Rules {
    Rules {
        stabilization_window_seconds: Some(0),
        select: Select::Max,
        policies: vec![pods(4, 15), percent(100, 15)],
    }
}

/// Kubernetes' default scale-down rules: the controller's window, -100% per 15 s.
pub fn default_scale_down() -> Rules {
    Rules {
        stabilization_window_seconds: None,
        select: Select::Max,
        policies: vec![percent(100, 15)],
    }
}

fn select_of(s: Option<&str>) -> Select {
    match s {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    }
}

fn policy_of(p: &ScalingPolicy) -> Policy {
    Policy {
        kind: if p.type_.as_deref() == Some("Pods") {
            PolicyKind::Pods
        } else {
            PolicyKind::Percent
        },
        value: p.value.unwrap_or(0).clamp(0, i64::from(i32::MAX)) as i32,
        period_seconds: p.period_seconds.unwrap_or(0).clamp(0, 1800) as u32,
    }
}

/// Fills absent parts of `rules` from `defaults` (the API server's defaulting).
pub fn resolve_rules(rules: Option<&ScalingRules>, defaults: Rules) -> Rules {
    let Some(r) = rules else { return defaults };
    Rules {
        stabilization_window_seconds: match r.stabilization_window_seconds {
            Some(s) => Some(s.clamp(0, 3600) as u32),
            None => defaults.stabilization_window_seconds,
        },
        select: match &r.select_policy {
            Some(s) => select_of(Some(s)),
            None => defaults.select,
        },
        policies: match &r.policies {
            Some(ps) if !ps.is_empty() => ps.iter().map(policy_of).collect(),
            _ => defaults.policies,
        },
    }
}

fn rules_json(r: &Rules) -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: r.stabilization_window_seconds.map(i64::from),
        select_policy: Some(
            match r.select {
                Select::Max => "Max",
                Select::Min => "Min",
                Select::Disabled => "Disabled",
            }
            .to_string(),
        ),
        policies: Some(
            r.policies
                .iter()
                .map(|p| ScalingPolicy {
                    type_: Some(
                        match p.kind {
                            PolicyKind::Pods => "Pods",
                            PolicyKind::Percent => "Percent",
                        }
                        .to_string(),
                    ),
                    value: Some(i64::from(p.value)),
                    period_seconds: Some(i64::from(p.period_seconds)),
                })
                .collect(),
        ),
    }
}

/// A behavior with every absent field filled in, as the API server stores it.
pub fn default_behavior(b: &Behavior) -> Behavior {
    Behavior {
        scale_up: Some(rules_json(&resolve_rules(
            b.scale_up.as_ref(),
            default_scale_up(),
        ))),
        scale_down: Some(rules_json(&resolve_rules(
            b.scale_down.as_ref(),
            default_scale_down(),
        ))),
    }
}

impl Autoscaling {
    /// Resolves a validated v2 spec (absent fields take Kubernetes' defaults).
    pub fn from_spec(spec: &SpecV2) -> Autoscaling {
        let t = spec.scale_target_ref.clone().unwrap_or_default();
        let cpu_targets: Vec<i32> = spec
            .metrics
            .iter()
            .flatten()
            .filter_map(|m| {
                let r = m.resource.as_ref()?;
                if r.name.as_deref() != Some("cpu") {
                    return None;
                }
                r.target.as_ref()?.average_utilization
            })
            .map(|u| u.clamp(1, i64::from(i32::MAX)) as i32)
            .collect();
        Autoscaling {
            target: ScaleTarget {
                api_version: t.api_version.unwrap_or_default(),
                kind: t.kind.unwrap_or_default(),
                name: t.name.unwrap_or_default(),
            },
            min_replicas: spec.min_replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX)) as i32,
            max_replicas: spec.max_replicas.unwrap_or(0).clamp(0, i64::from(i32::MAX)) as i32,
            cpu_targets: if cpu_targets.is_empty() {
                vec![DEFAULT_CPU_UTILIZATION]
            } else {
                cpu_targets
            },
            behavior: spec.behavior.as_ref().map(|b| Behaviors {
                scale_up: resolve_rules(b.scale_up.as_ref(), default_scale_up()),
                scale_down: resolve_rules(b.scale_down.as_ref(), default_scale_down()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_rules_take_defaults() {
        let r = resolve_rules(
            Some(&ScalingRules {
                stabilization_window_seconds: Some(30),
                ..Default::default()
            }),
            default_scale_down(),
        );
        assert_eq!(r.stabilization_window_seconds, Some(30));
        assert_eq!(r.select, Select::Max);
        assert_eq!(r.policies, vec![percent(100, 15)]);
        let up = resolve_rules(None, default_scale_up());
        assert_eq!(up, default_scale_up());
    }

    #[test]
    fn empty_behavior_is_fully_defaulted() {
        let b = default_behavior(&Behavior::default());
        let up = b.scale_up.unwrap();
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert_eq!(up.policies.unwrap().len(), 2);
        let down = b.scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, None);
        assert_eq!(down.select_policy.as_deref(), Some("Max"));
    }
}
