//! Pure replica-set arithmetic: which VMIs count, how many to create, which to delete.
//! No I/O; unit-tested table-style.

use std::cmp::Ordering;

/// VMI phases (kubevirt.io/v1 `VirtualMachineInstancePhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Pending,
    Scheduling,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    /// Parses `status.phase`; an absent phase is `Pending` (KubeVirt's "" phase is pre-Pending).
    pub fn parse(s: Option<&str>) -> Phase {
        match s {
            Some("Scheduling") => Phase::Scheduling,
            Some("Scheduled") => Phase::Scheduled,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        }
    }

    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduling => "Scheduling",
            Phase::Scheduled => "Scheduled",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }

    /// Succeeded or Failed: the VM is over and will never run again.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// Not yet placed on the host.
    pub fn is_unscheduled(self) -> bool {
        matches!(self, Phase::Pending | Phase::Scheduling)
    }
}

/// What the replica-set controller needs to know about one VMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmiView {
    pub name: String,
    pub phase: Phase,
    pub ready: bool,
    pub deleting: bool,
    /// Creation time in seconds (any monotonic scale); newer = larger.
    pub created: i64,
}

impl VmiView {
    /// Counts toward `status.replicas`: not final, not being deleted.
    pub fn is_active(&self) -> bool {
        !self.phase.is_final() && !self.deleting
    }
}

/// What one sync should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many VMIs to create.
    pub create: usize,
    /// Active VMIs to delete (scale down), in deletion order.
    pub delete: Vec<String>,
    /// Finished VMIs to delete (they were already replaced).
    pub cleanup: Vec<String>,
}

/// Orders VMIs by how cheap they are to lose: unscheduled first, then not ready, then newest
/// first (KubeVirt deletes in arbitrary order; this keeps long-running ready VMs).
pub fn deletion_order(a: &VmiView, b: &VmiView) -> Ordering {
    b.phase
        .is_unscheduled()
        .cmp(&a.phase.is_unscheduled())
        .then(a.ready.cmp(&b.ready))
        .then(b.created.cmp(&a.created))
        .then(a.name.cmp(&b.name))
}

/// Computes one sync's plan: the difference between desired and active replicas, capped at
/// `burst` operations per sync, plus cleanup of finished VMIs (also capped).
pub fn plan(desired: usize, vmis: &[VmiView], burst: usize) -> Plan {
    let mut active: Vec<&VmiView> = vmis.iter().filter(|v| v.is_active()).collect();
    let mut p = Plan::default();
    if active.len() < desired {
        p.create = (desired - active.len()).min(burst);
    } else if active.len() > desired {
        active.sort_by(|a, b| deletion_order(a, b));
        p.delete = active
            .iter()
            .take((active.len() - desired).min(burst))
            .map(|v| v.name.clone())
            .collect();
    }
    p.cleanup = vmis
        .iter()
        .filter(|v| v.phase.is_final() && !v.deleting)
        .take(burst)
        .map(|v| v.name.clone())
        .collect();
    p
}

/// `status.replicas` and `status.readyReplicas`.
pub fn counts(vmis: &[VmiView]) -> (usize, usize) {
    let active = vmis.iter().filter(|v| v.is_active());
    let ready = vmis.iter().filter(|v| v.is_active() && v.ready).count();
    (active.count(), ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, phase: Phase, ready: bool, deleting: bool, created: i64) -> VmiView {
        VmiView {
            name: name.into(),
            phase,
            ready,
            deleting,
            created,
        }
    }

    #[test]
    fn plan_table() {
        use Phase::*;
        struct Case {
            name: &'static str,
            desired: usize,
            vmis: Vec<VmiView>,
            burst: usize,
            want: Plan,
        }
        let cases = vec![
            Case {
                name: "create from zero",
                desired: 2,
                vmis: vec![],
                burst: 250,
                want: Plan {
                    create: 2,
                    ..Default::default()
                },
            },
            Case {
                name: "steady",
                desired: 1,
                vmis: vec![v("a", Running, true, false, 1)],
                burst: 250,
                want: Plan::default(),
            },
            Case {
                name: "burst caps creates",
                desired: 10,
                vmis: vec![],
                burst: 3,
                want: Plan {
                    create: 3,
                    ..Default::default()
                },
            },
            Case {
                name: "failed is replaced and cleaned",
                desired: 1,
                vmis: vec![v("a", Failed, false, false, 1)],
                burst: 250,
                want: Plan {
                    create: 1,
                    delete: vec![],
                    cleanup: vec!["a".into()],
                },
            },
            Case {
                name: "succeeded is replaced and cleaned",
                desired: 1,
                vmis: vec![v("a", Succeeded, false, false, 1)],
                burst: 250,
                want: Plan {
                    create: 1,
                    delete: vec![],
                    cleanup: vec!["a".into()],
                },
            },
            Case {
                name: "deleting does not count",
                desired: 1,
                vmis: vec![v("a", Running, true, true, 1)],
                burst: 250,
                want: Plan {
                    create: 1,
                    ..Default::default()
                },
            },
            Case {
                name: "scale down deletes pending first",
                desired: 1,
                vmis: vec![
                    v("old", Running, true, false, 1),
                    v("p", Pending, false, false, 0),
                ],
                burst: 250,
                want: Plan {
                    delete: vec!["p".into()],
                    ..Default::default()
                },
            },
            Case {
                name: "scale down deletes scheduling before not-ready",
                desired: 2,
                vmis: vec![
                    v("nr", Running, false, false, 1),
                    v("s", Scheduling, false, false, 0),
                    v("r", Running, true, false, 5),
                ],
                burst: 250,
                want: Plan {
                    delete: vec!["s".into()],
                    ..Default::default()
                },
            },
            Case {
                name: "then not-ready",
                desired: 1,
                vmis: vec![
                    v("r", Running, true, false, 9),
                    v("nr", Scheduled, false, false, 1),
                ],
                burst: 250,
                want: Plan {
                    delete: vec!["nr".into()],
                    ..Default::default()
                },
            },
            Case {
                name: "then newest",
                desired: 1,
                vmis: vec![
                    v("a", Running, true, false, 1),
                    v("b", Running, true, false, 3),
                    v("c", Running, true, false, 2),
                ],
                burst: 250,
                want: Plan {
                    delete: vec!["b".into(), "c".into()],
                    ..Default::default()
                },
            },
            Case {
                name: "scale to zero",
                desired: 0,
                vmis: vec![
                    v("a", Running, true, false, 1),
                    v("b", Failed, false, false, 2),
                ],
                burst: 250,
                want: Plan {
                    delete: vec!["a".into()],
                    cleanup: vec!["b".into()],
                    ..Default::default()
                },
            },
        ];
        for c in cases {
            assert_eq!(plan(c.desired, &c.vmis, c.burst), c.want, "{}", c.name);
        }
    }

    #[test]
    fn counts_only_active() {
        use Phase::*;
        let vmis = [
            v("a", Running, true, false, 1),
            v("b", Running, false, false, 1),
            v("c", Failed, false, false, 1),
            v("d", Running, true, true, 1),
        ];
        assert_eq!(counts(&vmis), (2, 1));
    }
}
