//! Table tests with the figures of Kubernetes' `horizontal_test.go` (normalization,
//! stabilization, scaling rules and scale events).

use super::*;
use crate::kinds::hpa::policy::{Policy, default_scale_down, default_scale_up};

/// "Now": far enough from the controller's start for every window in the tables.
const NOW: Tick = Duration::from_secs(100_000);

fn ago(secs: f64) -> Tick {
    NOW - Duration::from_secs_f64(secs)
}

fn rec(replicas: i32, secs_ago: f64) -> Recommendation {
    Recommendation {
        replicas,
        at: ago(secs_ago),
    }
}

/// `generateScalingRules(pods, podsPeriod, percent, percentPeriod, stabilizationWindow)`.
fn rules(pods: i32, pods_period: u32, percent: i32, percent_period: u32, window: u32) -> Rules {
    let mut policies = Vec::new();
    if pods != 0 {
        policies.push(Policy {
            kind: PolicyKind::Pods,
            value: pods,
            period_seconds: pods_period,
        });
    }
    if percent != 0 {
        policies.push(Policy {
            kind: PolicyKind::Percent,
            value: percent,
            period_seconds: percent_period,
        });
    }
    Rules {
        stabilization_window_seconds: Some(window),
        select: Select::Max,
        policies,
    }
}

/// `generateEventsUniformDistribution`: events spread evenly over the last `period` seconds.
fn uniform(changes: &[i32], period: f64) -> Vec<ScaleEvent> {
    let seg = period / changes.len() as f64;
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| ScaleEvent {
            change: *c,
            at: ago(period - seg * (i as f64 + 1.0) + seg / 2.0),
            outdated: false,
        })
        .collect()
}

#[test]
fn convert_desired_replicas_with_rules() {
    // (current, desired, min, max) → (replicas, reason)
    let cases = [
        ((5, 7, 3, 8), (7, "DesiredWithinRange")),
        ((3, 1, 2, 8), (2, "TooFewReplicas")),
        ((1, 0, 0, 10), (0, "DesiredWithinRange")),
        ((20, 1000, 1, 10), (10, "TooManyReplicas")),
        (
            (3, 1000, 1, 2000),
            (legacy_scale_up_limit(3), "ScaleUpLimit"),
        ),
    ];
    for ((c, d, min, max), (want, reason)) in cases {
        let (got, why) = convert_with_rules(c, d, min, max);
        assert_eq!((got, why.0), (want, reason), "{c} {d} {min} {max}");
    }
    assert_eq!(legacy_scale_up_limit(1), 4);
    assert_eq!(legacy_scale_up_limit(3), 6);
}

#[test]
fn scale_limits_with_min_select() {
    let mut r = rules(2, 60, 50, 60, 300);
    r.select = Select::Min;
    assert_eq!(scale_up_limit(1, &[], &[], &r, NOW), 2);
    assert_eq!(scale_down_limit(5, &[], &[], &r, NOW), 3);
    r.select = Select::Disabled;
    assert_eq!(scale_up_limit(1, &[], &[], &r, NOW), 1);
}

#[test]
fn legacy_stabilization() {
    // (recommendations, desired, stabilized, log length); window 5 min.
    let cases = vec![
        (vec![], 5, 5, 1),
        (vec![rec(4, 120.0), rec(5, 60.0)], 3, 5, 3),
        (vec![rec(1, 120.0), rec(2, 60.0)], 3, 3, 3),
        (vec![rec(10, 600.0), rec(9, 540.0)], 3, 3, 2),
        (
            vec![rec(10, 600.0), rec(4, 60.0), rec(5, 120.0), rec(9, 540.0)],
            3,
            5,
            4,
        ),
    ];
    for (recs, desired, want, len) in cases {
        let mut m = Memory {
            recommendations: recs.clone(),
            ..Default::default()
        };
        let got = m.stabilize_legacy(desired, Duration::from_secs(300), NOW);
        assert_eq!(
            (got, m.recommendations.len()),
            (want, len),
            "{recs:?} {desired}"
        );
    }
}

#[test]
fn scaling_with_rules() {
    struct C {
        name: &'static str,
        up_events: Vec<ScaleEvent>,
        down_events: Vec<ScaleEvent>,
        min: i32,
        max: i32,
        up: Option<Rules>,
        down: Option<Rules>,
        current: i32,
        desired: i32,
        want: i32,
        reason: &'static str,
    }
    let c = |name, min, max, current, desired, want, reason| C {
        name,
        up_events: vec![],
        down_events: vec![],
        min,
        max,
        up: None,
        down: None,
        current,
        desired,
        want,
        reason,
    };
    let cases = vec![
        c("within range", 3, 8, 5, 7, 7, "DesiredWithinRange"),
        c("< minReplicas", 2, 8, 3, 1, 2, "TooFewReplicas"),
        c(
            "within range when minReplicas is 0",
            0,
            10,
            1,
            0,
            0,
            "DesiredWithinRange",
        ),
        c(
            "maxReplicas < scaleUpLimit",
            1,
            10,
            20,
            1000,
            10,
            "TooManyReplicas",
        ),
        c(
            "more than the maximum",
            100,
            150,
            100,
            1000,
            150,
            "TooManyReplicas",
        ),
        C {
            up: Some(rules(0, 0, 1, 60, 0)),
            ..c(
                "scaleUpLimit < maxReplicas with user policies",
                1,
                2000,
                3,
                1000,
                4,
                "ScaleUpLimit",
            )
        },
        C {
            down: Some(rules(20, 60, 0, 0, 0)),
            ..c(
                "scaleDownLimit > minReplicas with user policies",
                3,
                2000,
                1000,
                3,
                980,
                "ScaleDownLimit",
            )
        },
        c(
            "scaleUp with default behavior",
            1,
            1000,
            10,
            50,
            20,
            "ScaleUpLimit",
        ),
        C {
            up: Some(rules(100, 60, 100, 60, 0)),
            ..c(
                "pods policy larger than percent",
                1,
                1000,
                10,
                500,
                110,
                "ScaleUpLimit",
            )
        },
        C {
            up: Some(rules(2, 60, 100, 60, 0)),
            ..c(
                "percent policy larger than pods",
                1,
                1000,
                10,
                500,
                20,
                "ScaleUpLimit",
            )
        },
        C {
            up: Some(rules(100, 60, 0, 0, 0)),
            ..c(
                "large pod policy",
                1,
                1000,
                10,
                50,
                50,
                "DesiredWithinRange",
            )
        },
        C {
            up: Some(rules(10000, 60, 0, 0, 0)),
            ..c(
                "large percent policy",
                1,
                1000,
                10,
                50,
                50,
                "DesiredWithinRange",
            )
        },
        C {
            up: Some(rules(30, 60, 0, 0, 0)),
            ..c("pod policy limitation", 1, 1000, 10, 50, 40, "ScaleUpLimit")
        },
        C {
            up: Some(rules(0, 0, 200, 60, 0)),
            ..c(
                "percent policy limitation",
                1,
                1000,
                10,
                50,
                30,
                "ScaleUpLimit",
            )
        },
        C {
            down: Some(rules(20, 60, 1, 60, 300)),
            ..c(
                "down: percent larger than pods",
                1,
                1000,
                100,
                2,
                80,
                "ScaleDownLimit",
            )
        },
        C {
            down: Some(rules(2, 60, 1, 60, 300)),
            ..c(
                "down: pods larger than percent",
                1,
                1000,
                100,
                2,
                98,
                "ScaleDownLimit",
            )
        },
        C {
            down: Some(rules(100, 60, 0, 0, 300)),
            ..c(
                "down: MinReplicas with large pod policy",
                1,
                1000,
                10,
                0,
                1,
                "TooFewReplicas",
            )
        },
        C {
            down: Some(rules(0, 0, 100, 60, 300)),
            ..c(
                "down: MinReplicas with large percent policy",
                5,
                1000,
                10,
                2,
                5,
                "TooFewReplicas",
            )
        },
        C {
            down: Some(rules(5, 60, 0, 0, 300)),
            ..c(
                "down: pod policy limitation",
                1,
                1000,
                10,
                2,
                5,
                "ScaleDownLimit",
            )
        },
        C {
            down: Some(rules(0, 0, 50, 60, 300)),
            ..c(
                "down: percent policy limitation",
                1,
                1000,
                10,
                5,
                5,
                "DesiredWithinRange",
            )
        },
        C {
            up_events: uniform(&[1, 5, 9], 120.0),
            up: Some(rules(300, 60, 0, 0, 0)),
            ..c(
                "up: max with large pod policy and events",
                1,
                200,
                100,
                500,
                200,
                "TooManyReplicas",
            )
        },
        C {
            up_events: uniform(&[1, 5, 9], 120.0),
            up: Some(rules(0, 0, 10000, 60, 0)),
            ..c(
                "up: max with large percent policy and events",
                1,
                200,
                100,
                500,
                200,
                "TooManyReplicas",
            )
        },
        C {
            up_events: uniform(&[1, 5, 9], 120.0),
            up: Some(rules(5, 120, 0, 0, 0)),
            ..c(
                "up: recent events forbid more",
                1,
                1000,
                100,
                500,
                100,
                "ScaleUpLimit",
            )
        },
        C {
            up_events: uniform(&[1, 5, 9], 120.0),
            up: Some(rules(150, 120, 0, 0, 0)),
            ..c(
                "up: pod policy and previous events",
                1,
                1000,
                100,
                500,
                235,
                "ScaleUpLimit",
            )
        },
        C {
            up_events: uniform(&[1, 5, 9], 120.0),
            up: Some(rules(0, 0, 200, 120, 0)),
            ..c(
                "up: percent policy and previous events",
                1,
                1000,
                100,
                500,
                255,
                "ScaleUpLimit",
            )
        },
        C {
            down_events: uniform(&[1, 5, 9], 120.0),
            ..c(
                "down: default policy and previous events",
                1,
                1000,
                10,
                5,
                5,
                "DesiredWithinRange",
            )
        },
        C {
            down_events: uniform(&[1, 5, 9], 120.0),
            down: Some(rules(115, 120, 0, 0, 300)),
            ..c(
                "down: MinReplicas with large pod policy and events",
                1,
                1000,
                100,
                0,
                1,
                "TooFewReplicas",
            )
        },
        C {
            down_events: uniform(&[1, 5, 9], 120.0),
            down: Some(rules(130, 120, 0, 0, 300)),
            ..c(
                "down: MinReplicas 5 with large pod policy and events",
                5,
                1000,
                100,
                0,
                5,
                "TooFewReplicas",
            )
        },
        C {
            down_events: uniform(&[1, 5, 9], 120.0),
            down: Some(rules(0, 0, 100, 120, 300)),
            ..c(
                "down: MinReplicas with large percent policy and events",
                5,
                1000,
                100,
                2,
                5,
                "TooFewReplicas",
            )
        },
        C {
            down_events: uniform(&[1, 5, 9], 120.0),
            down: Some(rules(5, 120, 0, 0, 300)),
            ..c(
                "down: pod policy and previous events",
                1,
                1000,
                100,
                2,
                100,
                "ScaleDownLimit",
            )
        },
        C {
            down_events: uniform(&[2, 4, 6], 120.0),
            down: Some(rules(0, 0, 50, 120, 300)),
            ..c(
                "down: percent policy and previous events",
                1,
                1000,
                100,
                0,
                56,
                "ScaleDownLimit",
            )
        },
        C {
            down_events: uniform(&[10, 10, 10], 120.0),
            down: Some(rules(0, 0, 10, 120, 300)),
            ..c(
                "down: previous events prevent more",
                1,
                1000,
                100,
                0,
                100,
                "ScaleDownLimit",
            )
        },
        C {
            down_events: uniform(&[10, 10, 10], 120.0),
            down: Some(rules(0, 0, 1000, 120, 300)),
            ..c(
                "down: previous events still allow more",
                1,
                1000,
                10,
                5,
                5,
                "DesiredWithinRange",
            )
        },
        C {
            up_events: uniform(&[8, 12, 9, 11], 120.0),
            up: Some(rules(1000, 60, 0, 0, 0)),
            ..c(
                "up: outdated flag, one policy",
                1,
                1000,
                100,
                200,
                200,
                "DesiredWithinRange",
            )
        },
        C {
            up_events: uniform(&[8, 12, 9, 11], 120.0),
            up: Some(rules(1000, 120, 100, 60, 0)),
            ..c(
                "up: two policies, events kept",
                1,
                1000,
                100,
                200,
                200,
                "DesiredWithinRange",
            )
        },
        C {
            up_events: uniform(&[8, 12, 9, 11], 120.0),
            up: Some(rules(1000, 30, 100, 60, 0)),
            ..c(
                "up: two policies, events outdated",
                1,
                1000,
                100,
                200,
                200,
                "DesiredWithinRange",
            )
        },
        C {
            down_events: uniform(&[8, 12, 9, 11], 120.0),
            down: Some(rules(1000, 60, 0, 0, 300)),
            ..c(
                "down: outdated flag, one policy",
                1,
                1000,
                100,
                5,
                5,
                "DesiredWithinRange",
            )
        },
        C {
            down_events: uniform(&[8, 12, 9, 11], 120.0),
            down: Some(rules(1000, 120, 100, 60, 300)),
            ..c(
                "down: two policies, events kept",
                1,
                1000,
                100,
                5,
                5,
                "DesiredWithinRange",
            )
        },
        C {
            down_events: uniform(&[8, 12, 9, 11], 120.0),
            down: Some(rules(1000, 30, 100, 60, 300)),
            ..c(
                "down: two policies, events outdated",
                1,
                1000,
                100,
                5,
                5,
                "DesiredWithinRange",
            )
        },
    ];
    for t in cases {
        let mem = Memory {
            scale_up_events: t.up_events,
            scale_down_events: t.down_events,
            ..Default::default()
        };
        let b = Behaviors {
            scale_up: t.up.unwrap_or_else(default_scale_up),
            scale_down: t.down.unwrap_or_else(default_scale_down),
        };
        let bounds = Bounds {
            current: t.current,
            min: t.min,
            max: t.max,
        };
        let (got, why) = convert_with_behavior_rate(&mem, &b, bounds, t.desired, NOW);
        assert_eq!((got, why.0), (t.want, t.reason), "{}", t.name);
    }
}

#[test]
fn store_scale_events() {
    let ev = |change, secs_ago: f64, outdated| ScaleEvent {
        change,
        at: ago(secs_ago),
        outdated,
    };
    // (prev events, behavior rules, change in the last 60 s before, new (change, outdated) list)
    type EventCase = (
        &'static str,
        Vec<ScaleEvent>,
        Option<Rules>,
        i32,
        Vec<(i32, bool)>,
    );
    let cases: Vec<EventCase> = vec![
        ("empty, no behavior", vec![], None, 0, vec![]),
        (
            "empty, two policies",
            vec![],
            Some(rules(10, 60, 100, 60, 0)),
            0,
            vec![(5, false)],
        ),
        (
            "outdated kept without behavior",
            vec![ev(7, 61.0, false)],
            None,
            0,
            vec![(7, false)],
        ),
        (
            "outdated replaced",
            vec![ev(7, 61.0, false)],
            Some(rules(10, 60, 100, 60, 0)),
            0,
            vec![(5, false)],
        ),
        (
            "actual kept",
            vec![ev(7, 58.0, false)],
            Some(rules(10, 60, 100, 60, 0)),
            7,
            vec![(7, false), (5, false)],
        ),
        (
            "two entries, one replaced",
            vec![ev(7, 61.0, false), ev(6, 59.0, false)],
            Some(rules(10, 60, 0, 0, 0)),
            6,
            vec![(5, false), (6, false)],
        ),
        (
            "policies with different periods",
            vec![
                ev(8, 29.0, false),
                ev(6, 59.0, false),
                ev(7, 61.0, false),
                ev(9, 61.0, false),
            ],
            Some(rules(10, 60, 100, 30, 0)),
            14,
            vec![(8, false), (6, false), (7, true), (5, false)],
        ),
        (
            "two entries, both actual",
            vec![ev(7, 58.0, false), ev(6, 59.0, false)],
            Some(rules(10, 120, 100, 30, 0)),
            13,
            vec![(7, false), (6, false), (5, false)],
        ),
    ];
    for (name, prev, r, before_change, want) in cases {
        for up in [true, false] {
            let b = r.clone().map(|r| Behaviors {
                scale_up: r.clone(),
                scale_down: r,
            });
            let mut m = Memory::default();
            if up {
                m.scale_up_events = prev.clone();
            } else {
                m.scale_down_events = prev.clone();
            }
            let events = |m: &Memory| {
                if up {
                    m.scale_up_events.clone()
                } else {
                    m.scale_down_events.clone()
                }
            };
            assert_eq!(
                change_in_period(Duration::from_secs(60), &events(&m), NOW),
                before_change,
                "{name}"
            );
            let new = if up { 15 } else { 5 };
            m.store_scale_event(b.as_ref(), 10, new, NOW);
            let got: Vec<(i32, bool)> = events(&m).iter().map(|e| (e.change, e.outdated)).collect();
            assert_eq!(got, want, "{name} (up: {up})");
        }
    }
}

#[test]
fn stabilization_with_behaviors() {
    // (recommendations, current, desired, up window, down window, stabilized, stored)
    type StabCase = (
        &'static str,
        Vec<Recommendation>,
        i32,
        i32,
        u64,
        u64,
        i32,
        Vec<i32>,
    );
    let cases: Vec<StabCase> = vec![
        ("empty, scaling down", vec![], 100, 5, 0, 0, 5, vec![5]),
        (
            "simple scale down stabilization",
            vec![rec(4, 120.0), rec(5, 60.0)],
            100,
            3,
            0,
            180,
            5,
            vec![4, 5, 3],
        ),
        (
            "simple scale up stabilization",
            vec![rec(4, 120.0), rec(5, 60.0)],
            1,
            7,
            300,
            0,
            4,
            vec![4, 5, 7],
        ),
        (
            "no scale down stabilization",
            vec![rec(1, 120.0), rec(2, 60.0)],
            100,
            3,
            300,
            0,
            3,
            vec![1, 2, 3],
        ),
        (
            "no scale up stabilization",
            vec![rec(4, 120.0), rec(5, 60.0)],
            1,
            3,
            0,
            300,
            3,
            vec![4, 5, 3],
        ),
        (
            "reuse element, down",
            vec![rec(10, 600.0), rec(9, 540.0)],
            100,
            3,
            0,
            0,
            3,
            vec![10, 3],
        ),
        (
            "reuse element, up",
            vec![rec(10, 600.0), rec(9, 540.0)],
            1,
            100,
            0,
            0,
            100,
            vec![10, 100],
        ),
        (
            "scale down stabilization, reuse an obsolete element",
            vec![rec(10, 600.0), rec(4, 60.0), rec(5, 120.0), rec(9, 540.0)],
            100,
            3,
            0,
            180,
            5,
            vec![10, 4, 5, 3],
        ),
        (
            "scale up stabilization, reuse an obsolete element",
            vec![rec(10, 6000.0), rec(6, 60.0), rec(5, 120.0), rec(9, 180.0)],
            1,
            100,
            300,
            0,
            5,
            vec![100, 6, 5, 9],
        ),
    ];
    for (name, recs, current, desired, up_w, down_w, want, stored) in cases {
        let mut m = Memory {
            recommendations: recs,
            ..Default::default()
        };
        let (got, _) = m.stabilize_with_behaviors(
            current,
            desired,
            Duration::from_secs(up_w),
            Duration::from_secs(down_w),
            NOW,
        );
        let kept: Vec<i32> = m.recommendations.iter().map(|r| r.replicas).collect();
        assert_eq!((got, kept), (want, stored), "{name}");
    }
}

#[test]
fn normalization_paths() {
    // TestScaleDownStabilizeInitialSize: seeded with the current 5, a proposal of 3 waits.
    let mut m = Memory::default();
    m.record_initial(5, NOW);
    let b = Bounds {
        current: 5,
        min: 2,
        max: 6,
    };
    let n = normalize_legacy(&mut m, b, 3, Duration::from_secs(300), NOW);
    assert_eq!((n.replicas, n.able.0), (5, "ScaleDownStabilized"));
    assert_eq!(n.limited, (false, WITHIN_RANGE));
    // TestMinReplicas: a proposal of 1 with min 2.
    let mut m = Memory::default();
    let n = normalize_legacy(
        &mut m,
        Bounds {
            current: 3,
            min: 2,
            max: 5,
        },
        1,
        Duration::from_secs(300),
        NOW,
    );
    assert_eq!(
        (n.replicas, n.limited.0, n.limited.1.0),
        (2, true, "TooFewReplicas")
    );
    // TestMaxReplicas: a proposal of 21 with max 5 (below the legacy cap of 6).
    let n = normalize_legacy(
        &mut Memory::default(),
        Bounds {
            current: 3,
            min: 2,
            max: 5,
        },
        21,
        Duration::from_secs(300),
        NOW,
    );
    assert_eq!((n.replicas, n.limited.1.0), (5, "TooManyReplicas"));
    // TestUpscaleCap / ...GreaterThanMaxReplicas: +700% per minute from 3, proposal 60.
    let beh = Behaviors {
        scale_up: rules(0, 0, 700, 60, 0),
        scale_down: default_scale_down(),
    };
    for (max, want, reason) in [(100, 24, "ScaleUpLimit"), (20, 20, "TooManyReplicas")] {
        let mut m = Memory::default();
        m.record_initial(3, NOW);
        let n = normalize_with_behaviors(
            &mut m,
            &beh,
            Bounds {
                current: 3,
                min: 1,
                max,
            },
            60,
            Duration::from_secs(300),
            NOW,
        );
        assert_eq!(
            (n.replicas, n.limited.0, n.limited.1.0),
            (want, true, reason)
        );
    }
    // Default behavior from 1: +4 pods beats +100%, so 1 → 5 where the legacy path allows 4.
    let beh = Behaviors {
        scale_up: default_scale_up(),
        scale_down: default_scale_down(),
    };
    let n = normalize_with_behaviors(
        &mut Memory::default(),
        &beh,
        Bounds {
            current: 1,
            min: 1,
            max: 10,
        },
        10,
        Duration::from_secs(300),
        NOW,
    );
    assert_eq!(n.replicas, 5);
    let n = normalize_legacy(
        &mut Memory::default(),
        Bounds {
            current: 1,
            min: 1,
            max: 10,
        },
        10,
        Duration::from_secs(300),
        NOW,
    );
    assert_eq!(n.replicas, 4);
    // Default behavior scale-down waits out the (daemon's) window, then goes straight down.
    let mut m = Memory::default();
    m.record_initial(4, NOW - Duration::from_secs(100));
    let b4 = Bounds {
        current: 4,
        min: 1,
        max: 10,
    };
    let n = normalize_with_behaviors(&mut m, &beh, b4, 1, Duration::from_secs(300), NOW);
    assert_eq!((n.replicas, n.able.0), (4, "ScaleDownStabilized"));
    let n = normalize_with_behaviors(
        &mut m,
        &beh,
        b4,
        1,
        Duration::from_secs(300),
        NOW + Duration::from_secs(201),
    );
    assert_eq!((n.replicas, n.able.0), (1, "ReadyForNewScale"));
}
