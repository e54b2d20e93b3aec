//! corral's supervisor: desired state, reconcile loops and VM processes.
//!
//! Threads: everything runs on the daemon's tokio runtime. The [`store::Store`] is shared state
//! (std locks, short critical sections; redb commits happen under a writer lock only). The
//! controller manager is one task draining a work queue; each VM process is watched by one task.

pub mod kinds;
pub mod meta;
pub mod names;
pub mod quantity;
pub mod selector;
pub mod store;
