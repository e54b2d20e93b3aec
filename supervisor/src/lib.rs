//! corral's supervisor: desired state, reconcile loops and VM processes.
