//! Table tests with the figures of Kubernetes' `replica_calculator_test.go` (each pod requests
//! one core unless a case says otherwise; levels are millicores; a pod past the end of `levels`
//! has no sample).

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ago(secs: i64) -> DateTime<Utc> {
    now() - chrono::Duration::seconds(secs)
}

/// Started long before the CPU initialization period.
const COOL: i64 = 3600;
/// Started 30 s ago, ready 20 s ago: its 60 s sample began before it was ready.
const HOT: i64 = 30;

#[derive(Clone)]
struct Case {
    name: &'static str,
    current: i32,
    target: i32,
    requests: Vec<u64>,
    levels: Vec<u64>,
    ready: Vec<bool>,
    phase: Vec<PodPhase>,
    deleting: Vec<bool>,
    start: Vec<i64>,
    want: Result<(i32, i32), CalcError>,
}

fn case(name: &'static str, current: i32, target: i32, levels: &[u64]) -> Case {
    Case {
        name,
        current,
        target,
        requests: vec![1000; current as usize],
        levels: levels.to_vec(),
        ready: Vec::new(),
        phase: Vec::new(),
        deleting: Vec::new(),
        start: Vec::new(),
        want: Err(CalcError::NoPods),
    }
}

impl Case {
    fn pods(mut self, n: usize) -> Self {
        self.requests = vec![1000; n];
        self
    }
    fn ready(mut self, r: &[bool]) -> Self {
        self.ready = r.to_vec();
        self
    }
    fn phase(mut self, p: &[PodPhase]) -> Self {
        self.phase = p.to_vec();
        self
    }
    fn deleting(mut self, d: &[bool]) -> Self {
        self.deleting = d.to_vec();
        self
    }
    fn start(mut self, s: &[i64]) -> Self {
        self.start = s.to_vec();
        self
    }
    fn requests(mut self, r: &[u64]) -> Self {
        self.requests = r.to_vec();
        self
    }
    fn want(mut self, replicas: i32, utilization: i32) -> Self {
        self.want = Ok((replicas, utilization));
        self
    }
    fn fails(mut self, e: CalcError) -> Self {
        self.want = Err(e);
        self
    }

    fn run(&self) {
        let mut pods = Vec::new();
        let mut samples = BTreeMap::new();
        for (i, req) in self.requests.iter().enumerate() {
            let name = format!("test-pod-{i}");
            let started = self.start.get(i).copied().unwrap_or(COOL);
            let ready = self.ready.get(i).copied().unwrap_or(true);
            // A hot pod became ready 20 s ago; others transitioned when they started.
            let transition = if started == HOT {
                ago(20)
            } else {
                ago(started)
            };
            pods.push(Pod {
                name: name.clone(),
                phase: self.phase.get(i).copied().unwrap_or(PodPhase::Running),
                deleting: self.deleting.get(i).copied().unwrap_or(false),
                readiness: Some(Readiness {
                    ready,
                    last_transition: transition,
                }),
                start_time: Some(ago(started)),
                request_millis: (*req > 0).then_some(*req),
            });
            if let Some(l) = self.levels.get(i) {
                samples.insert(
                    name,
                    Sample {
                        millis: *l,
                        timestamp: now(),
                        window: Duration::from_secs(60),
                    },
                );
            }
        }
        let got = cpu_replicas(
            self.current,
            self.target,
            &pods,
            &samples,
            now(),
            &Tuning::default(),
        )
        .map(|p| (p.replicas, p.utilization));
        assert_eq!(got, self.want, "{}", self.name);
    }
}

#[test]
fn replica_calculator_figures() {
    use PodPhase::{Failed, Pending, Running};
    let (t, f) = (true, false);
    let cases = vec![
        case("ScaleUp", 3, 30, &[300, 500, 700]).want(5, 50),
        case("ScaleUpUnreadyLessScale", 3, 30, &[300, 500, 700])
            .ready(&[f, t, t])
            .want(4, 60),
        case("ScaleUpHotCpuLessScale", 3, 30, &[300, 500, 700])
            .start(&[HOT, COOL, COOL])
            .want(4, 60),
        case("ScaleUpUnreadyNoScale", 3, 30, &[400, 500, 700])
            .ready(&[t, f, f])
            .want(3, 40),
        case("ScaleHotCpuNoScale", 3, 30, &[400, 500, 700])
            .ready(&[t, f, f])
            .start(&[COOL, HOT, HOT])
            .want(3, 40),
        case("ScaleUpIgnoresFailedPods", 2, 30, &[500, 700])
            .pods(4)
            .ready(&[t, t, f, f])
            .phase(&[Running, Running, Failed, Failed])
            .want(4, 60),
        case("ScaleUpIgnoresDeletionPods", 2, 30, &[500, 700])
            .pods(4)
            .ready(&[t, t, f, f])
            .deleting(&[f, f, t, t])
            .want(4, 60),
        case("ScaleDown", 5, 50, &[100, 300, 500, 250, 250]).want(3, 28),
        case(
            "ScaleDownIncludeUnreadyPods",
            5,
            50,
            &[100, 300, 500, 250, 250],
        )
        .ready(&[t, t, t, f, f])
        .want(2, 30),
        case("ScaleDownExcludeUnscheduledPods", 5, 50, &[100])
            .ready(&[t, f, f, f, f])
            .phase(&[Running, Pending, Pending, Pending, Pending])
            .want(1, 10),
        case(
            "ScaleDownIgnoreHotCpuPods",
            5,
            50,
            &[100, 300, 500, 250, 250],
        )
        .start(&[COOL, COOL, COOL, HOT, HOT])
        .want(2, 30),
        case(
            "ScaleDownIgnoresFailedPods",
            5,
            50,
            &[100, 300, 500, 250, 250],
        )
        .pods(7)
        .ready(&[t, t, t, t, t, f, f])
        .phase(&[Running, Running, Running, Running, Running, Failed, Failed])
        .want(3, 28),
        case(
            "ScaleDownIgnoresDeletionPods",
            5,
            50,
            &[100, 300, 500, 250, 250],
        )
        .pods(7)
        .ready(&[t, t, t, t, t, f, f])
        .deleting(&[f, f, f, f, f, t, t])
        .want(3, 28),
        case("Tolerance", 3, 100, &[1010, 1030, 1020])
            .requests(&[900, 1000, 1100])
            .want(3, 102),
        case("MissingMetrics", 4, 100, &[400, 95]).want(3, 24),
        case("EmptyMetrics", 4, 100, &[]).fails(CalcError::NoMetricsAtAll),
        case("EmptyCPURequest", 1, 100, &[200])
            .requests(&[0])
            .fails(CalcError::MissingRequest("test-pod-0".into())),
        case("MissingMetricsNoChangeEq", 2, 100, &[1000]).want(2, 100),
        case("MissingMetricsNoChangeGt", 2, 100, &[1900]).want(2, 190),
        case("MissingMetricsNoChangeLt", 2, 100, &[600]).want(2, 60),
        case("MissingMetricsUnreadyChange", 3, 50, &[100, 450])
            .ready(&[f, t, t])
            .want(3, 45),
        case("MissingMetricsHotCpuNoChange", 3, 50, &[100, 450])
            .start(&[HOT, COOL, COOL])
            .want(3, 45),
        case("MissingMetricsUnreadyScaleUp", 3, 50, &[100, 2000])
            .ready(&[f, t, t])
            .want(4, 200),
        case("MissingMetricsHotCpuScaleUp", 3, 50, &[100, 2000])
            .ready(&[f, t, t])
            .start(&[HOT, COOL, COOL])
            .want(4, 200),
        case("MissingMetricsUnreadyScaleDown", 4, 50, &[100, 100, 100])
            .ready(&[f, t, t, t])
            .want(3, 10),
        case("AllUnready", 2, 50, &[100, 100])
            .ready(&[f, f])
            .fails(CalcError::NoReadyMetrics),
        // horizontal_test.go, controller-level figures that reduce to the calculation:
        case(
            "MinReplicas (proposal before clamping)",
            3,
            90,
            &[10, 95, 10],
        )
        .requests(&[900, 1000, 1100])
        .want(1, 3),
        case(
            "MaxReplicas (proposal before clamping)",
            3,
            90,
            &[8000, 9500, 1000],
        )
        .requests(&[900, 1000, 1100])
        .want(21, 616),
        case(
            "UpscaleCap (proposal before the rate limit)",
            3,
            10,
            &[100, 200, 300],
        )
        .requests(&[100, 100, 100])
        .want(60, 200),
        case("EventCreated", 1, 50, &[200])
            .requests(&[200])
            .want(2, 100),
        case("EventNotCreated", 2, 50, &[200, 200])
            .requests(&[400, 400])
            .want(2, 50),
        // The seed lab: one VMI requesting 100m spinning at its 300m limit, target 75%.
        case("Lab 283%", 1, 75, &[283])
            .requests(&[100])
            .want(4, 283),
    ];
    for c in cases {
        c.run();
    }
}

/// `TestReplicaCalcComputedToleranceAlgImplementation`: 10 pods using 150m each while
/// requesting twice that (with jitter), a target just past / just inside the tolerance.
#[test]
fn computed_tolerance() {
    let base = 300u64;
    let reqs = [
        base + 100,
        base - 100,
        base + 10,
        base - 10,
        base + 2,
        base - 2,
        base + 1,
        base - 1,
        base,
        base,
    ];
    let used_to_requested = 2.0_f64;
    let target = (1.0 / (used_to_requested * (1.0 - 0.1))).abs() + 0.01;
    let pct = (target * 100.0) as i32;
    let used_ratio = 1500.0 / (3000.0 * target);
    let final_pods = (used_ratio * 10.0).ceil() as i32;
    assert_eq!((pct, final_pods), (56, 9));
    case("ComputedTolerance", 10, pct, &[150; 10])
        .requests(&reqs)
        .want(final_pods, 50)
        .run();
    let pct = (((1.0 / (used_to_requested * (1.0 - 0.1))).abs() + 0.004) * 100.0) as i32;
    case("ComputedToleranceNoScale", 10, pct, &[150; 10])
        .requests(&reqs)
        .want(10, 50)
        .run();
}

/// `TestGroupPods`.
#[test]
fn group_pods_table() {
    let sample = |ts: DateTime<Utc>, window: u64| Sample {
        millis: 1,
        timestamp: ts,
        window: Duration::from_secs(window),
    };
    let pod = |name: &str, start: Option<i64>, ready: Option<(bool, i64)>| Pod {
        name: name.into(),
        phase: PodPhase::Succeeded,
        deleting: false,
        readiness: ready.map(|(r, at)| Readiness {
            ready: r,
            last_transition: ago(at),
        }),
        start_time: start.map(ago),
        request_millis: Some(1),
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    struct G {
        name: &'static str,
        pods: Vec<Pod>,
        samples: Vec<(&'static str, Sample)>,
        ready: usize,
        unready: BTreeSet<String>,
        missing: BTreeSet<String>,
    }
    let cases = vec![
        G {
            name: "void",
            pods: vec![],
            samples: vec![],
            ready: 0,
            unready: set(&[]),
            missing: set(&[]),
        },
        G {
            name: "a pod without ready condition",
            pods: vec![pod("lucretius", Some(0), None)],
            samples: vec![("lucretius", sample(now(), 60))],
            ready: 0,
            unready: set(&["lucretius"]),
            missing: set(&[]),
        },
        G {
            name: "ready with fresh metrics during initialization",
            pods: vec![pod("bentham", Some(60), Some((true, 30)))],
            samples: vec![("bentham", sample(now(), 30))],
            ready: 1,
            unready: set(&[]),
            missing: set(&[]),
        },
        G {
            name: "ready without fresh metrics during initialization",
            pods: vec![pod("bentham", Some(60), Some((true, 30)))],
            samples: vec![("bentham", sample(now(), 60))],
            ready: 0,
            unready: set(&["bentham"]),
            missing: set(&[]),
        },
        G {
            name: "unready during initialization",
            pods: vec![pod("lucretius", Some(10 * 60), Some((false, 9 * 60 + 54)))],
            samples: vec![("lucretius", sample(now(), 60))],
            ready: 0,
            unready: set(&["lucretius"]),
            missing: set(&[]),
        },
        G {
            name: "ready without fresh metrics after initialization",
            pods: vec![pod("bentham", Some(3 * 60), Some((true, 3 * 60)))],
            samples: vec![("bentham", sample(ago(2 * 60), 60))],
            ready: 1,
            unready: set(&[]),
            missing: set(&[]),
        },
        G {
            name: "unready that was ready after initialization",
            pods: vec![pod("lucretius", Some(10 * 60), Some((false, 9 * 60)))],
            samples: vec![("lucretius", sample(now(), 60))],
            ready: 1,
            unready: set(&[]),
            missing: set(&[]),
        },
        G {
            // Kubernetes' figure: a transition exactly at start + delay is not "never ready".
            name: "unready at the readiness-delay boundary after initialization",
            pods: vec![pod("lucretius", Some(10 * 60), Some((false, 9 * 60 + 50)))],
            samples: vec![("lucretius", sample(now(), 60))],
            ready: 1,
            unready: set(&[]),
            missing: set(&[]),
        },
        G {
            name: "a missing pod",
            pods: vec![pod("epicurus", Some(3 * 60), None)],
            samples: vec![],
            ready: 0,
            unready: set(&[]),
            missing: set(&["epicurus"]),
        },
        G {
            name: "several pods",
            pods: vec![
                pod("lucretius", Some(0), None),
                pod("niccolo", Some(3 * 60), Some((true, 3 * 60))),
                pod("epicurus", Some(3 * 60), None),
            ],
            samples: vec![
                ("lucretius", sample(now(), 60)),
                ("niccolo", sample(now(), 60)),
            ],
            ready: 1,
            unready: set(&["lucretius"]),
            missing: set(&["epicurus"]),
        },
        G {
            name: "pending pods are unready",
            pods: vec![Pod {
                phase: PodPhase::Pending,
                ..pod("unscheduled", None, None)
            }],
            samples: vec![],
            ready: 0,
            unready: set(&["unscheduled"]),
            missing: set(&[]),
        },
    ];
    // Kubernetes' tests use a 2 min CPU initialization period and a 10 s readiness delay.
    let tuning = Tuning {
        cpu_initialization_period: Duration::from_secs(120),
        initial_readiness_delay: Duration::from_secs(10),
        ..Tuning::default()
    };
    for c in cases {
        let samples = c.samples.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        let g = group_pods(&c.pods, &samples, now(), &tuning);
        assert_eq!(
            (g.ready, g.unready, g.missing),
            (c.ready, c.unready, c.missing),
            "{}",
            c.name
        );
    }
}
