//! Opening `/dev/kvm` and telling what provides it (hardware VMX/SVM or PVM).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm};
use thiserror::Error;

/// Environment variable that overrides the KVM device path (tests use it to simulate a host
/// without KVM).
pub const KVM_DEVICE_ENV: &str = "CORRAL_KVM_DEVICE";
/// The usual KVM device.
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";

/// Errors while opening KVM.
#[derive(Debug, Error)]
pub enum KvmError {
    #[error("cannot open {path} (is KVM available and are you allowed to use it?)")]
    Open {
        path: PathBuf,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{path}: KVM lacks the {cap} capability")]
    MissingCap { path: PathBuf, cap: &'static str },
}

/// Opens the KVM device and checks the capabilities corral needs.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    let open_err = |source| KvmError::Open {
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| open_err(kvm_ioctls::Error::new(libc::EINVAL)))?;
    let kvm = Kvm::new_with_path(c_path).map_err(open_err)?;
    for (cap, name) in [
        (Cap::Irqchip, "IRQCHIP"),
        (Cap::Irqfd, "IRQFD"),
        (Cap::Pit2, "PIT2"),
        (Cap::UserMemory, "USER_MEMORY"),
        (Cap::ImmediateExit, "IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap {
                path: path.to_path_buf(),
                cap: name,
            });
        }
    }
    Ok(kvm)
}

/// What implements KVM on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKvm {
    /// Intel VMX or AMD SVM: any guest kernel runs.
    Hardware,
    /// PVM (`kvm_pvm`, no vmx/svm): only PVM-aware kernels run natively; everything else goes
    /// through KVM's instruction emulator and unmodified kernels do not finish booting.
    Pvm,
    /// Neither was detected.
    Unknown,
}

/// Classifies the host from `/proc/cpuinfo` flags and loaded modules.
pub fn host_kvm() -> HostKvm {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(&cpuinfo, Path::new("/sys/module/kvm_pvm").exists())
}

fn classify(cpuinfo: &str, pvm_module: bool) -> HostKvm {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (hw, pvm_module) {
        (true, _) => HostKvm::Hardware,
        (false, true) => HostKvm::Pvm,
        (false, false) => HostKvm::Unknown,
    }
}

/// The one-line warning printed at start on a PVM host.
pub const PVM_WARNING: &str = "corral vmm: warning: /dev/kvm is PVM (kvm_pvm, no vmx/svm): guest code is emulated and unmodified Linux kernels will not finish booting";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let plain = "flags\t\t: fpu vme sse\n";
        assert_eq!(classify(vmx, false), HostKvm::Hardware);
        assert_eq!(classify(vmx, true), HostKvm::Hardware);
        assert_eq!(classify(plain, true), HostKvm::Pvm);
        assert_eq!(classify(plain, false), HostKvm::Unknown);
        assert_eq!(classify("flags : svmx\n", false), HostKvm::Unknown);
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let err = open(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kvm"));
    }
}
