//! Start-up warnings about the host's KVM.

/// Logs one warning when /dev/kvm is missing or is PVM (unmodified guest kernels will not boot).
pub fn warn_about_kvm() {
    if !std::path::Path::new("/dev/kvm").exists() {
        tracing::warn!(
            "/dev/kvm is missing: VMs cannot start on this host (load kvm_intel or kvm_amd)"
        );
        return;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw && std::path::Path::new("/sys/module/kvm_pvm").exists() {
        tracing::warn!(
            "/dev/kvm is provided by PVM (kvm_pvm) without VMX/SVM: every guest instruction is emulated and unmodified Linux kernels will not boot"
        );
    }
}
