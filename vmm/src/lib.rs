//! corral's embedded microVMM.
//!
//! Role: run exactly one KVM guest in the calling process (`corral vmm`). Knows nothing of replica
//! sets, OCI images or the daemon.
