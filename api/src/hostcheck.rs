//! Start-up warnings about the host's KVM.

use vmm::kvm::{DEFAULT_KVM_DEVICE, HostKvm, host_kvm};

/// Logs one warning when /dev/kvm is missing or is PVM (unmodified guest kernels will not boot).
pub fn warn_about_kvm() {
    if !std::path::Path::new(DEFAULT_KVM_DEVICE).exists() {
        tracing::warn!(
            "/dev/kvm is missing: VMs cannot start on this host (load kvm_intel or kvm_amd)"
        );
        return;
    }
    if host_kvm() == HostKvm::Pvm {
        tracing::warn!(
            "/dev/kvm is provided by PVM (kvm_pvm) without VMX/SVM: every guest instruction is emulated and unmodified Linux kernels will not boot"
        );
    }
}
