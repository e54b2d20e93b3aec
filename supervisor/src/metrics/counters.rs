//! corral's own controller counters, incremented where the work happens and rendered as
//! Prometheus text by the API. Plain atomics: no registry, no locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Work-queue key kinds, for per-kind reconcile counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileKind {
    ReplicaSet = 0,
    Vmi = 1,
    Hpa = 2,
    Gc = 3,
}

impl ReconcileKind {
    /// Every kind with its label value.
    pub const ALL: [(ReconcileKind, &'static str); 4] = [
        (
            ReconcileKind::ReplicaSet,
            "virtualmachineinstancereplicaset",
        ),
        (ReconcileKind::Vmi, "virtualmachineinstance"),
        (ReconcileKind::Hpa, "horizontalpodautoscaler"),
        (ReconcileKind::Gc, "gc"),
    ];
}

/// The counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub reconciles: [AtomicU64; 4],
    pub reconcile_errors: [AtomicU64; 4],
    pub vm_starts: AtomicU64,
    pub vm_start_failures: AtomicU64,
    pub image_pull_bytes: AtomicU64,
    pub hpa_scale_ups: AtomicU64,
    pub hpa_scale_downs: AtomicU64,
    pub metric_samples: AtomicU64,
    /// Time spent sampling, in nanoseconds.
    pub sample_nanos: AtomicU64,
    /// Time spent in HPA reconciles, in nanoseconds.
    pub hpa_nanos: AtomicU64,
}

/// The process-wide counters.
pub static COUNTERS: Counters = Counters {
    reconciles: [const { AtomicU64::new(0) }; 4],
    reconcile_errors: [const { AtomicU64::new(0) }; 4],
    vm_starts: AtomicU64::new(0),
    vm_start_failures: AtomicU64::new(0),
    image_pull_bytes: AtomicU64::new(0),
    hpa_scale_ups: AtomicU64::new(0),
    hpa_scale_downs: AtomicU64::new(0),
    metric_samples: AtomicU64::new(0),
    sample_nanos: AtomicU64::new(0),
    hpa_nanos: AtomicU64::new(0),
};

/// Adds `n` to `c`.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts one reconcile of `kind`, and an error if it failed.
pub fn reconciled(kind: ReconcileKind, failed: bool) {
    add(&COUNTERS.reconciles[kind as usize], 1);
    if failed {
        add(&COUNTERS.reconcile_errors[kind as usize], 1);
    }
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
