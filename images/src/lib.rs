//! corral's container-disk store.
//!
//! Role: turn an OCI reference or archive into boot artifacts (raw disk, vmlinux, initrd, cmdline).
//! Knows nothing of KVM.
