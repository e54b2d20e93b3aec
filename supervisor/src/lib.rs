//! corral's supervisor: desired state, reconcile loops and VM processes.
//!
//! Threads: everything runs on the daemon's tokio runtime. The [`store::Store`] is shared state
//! (std locks, short critical sections; redb commits happen under a writer lock only). The
//! controller manager is one task draining a work queue; each VM process is watched by one task.

pub mod autoscaler;
pub mod boot;
pub mod capacity;
pub mod cgroups;
pub mod controller;
pub mod events;
pub mod host;
pub mod kinds;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod network;
pub mod proxy;
pub mod quantity;
pub mod runtime;
pub mod selector;
pub mod storage;
pub mod store;

/// An error and its sources, joined with `: ` (the one place a chain is flattened for humans).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
pub mod service;
