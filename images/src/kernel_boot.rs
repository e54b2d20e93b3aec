//! KubeVirt's `spec.domain.firmware.kernelBoot`, the override of the disk's own kernel:
//!
//! ```yaml
//! firmware:
//!   kernelBoot:
//!     kernelArgs: "console=ttyS0 root=/dev/vda1"
//!     container:
//!       image: registry/kernels:6.1
//!       kernelPath: /boot/vmlinuz
//!       initrdPath: /boot/initrd.img
//! ```
//! The types deserialize that YAML/JSON directly. `ImageStore::boot_artifacts` applies them:
//! `container` supplies the kernel and/or initrd from that image's filesystem, `kernelArgs`
//! replaces the default command line. (KubeVirt only accepts `kernelArgs` together with a
//! container; corral always boots kernels directly, so it also honours `kernelArgs` alone.)

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBoot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KernelBootContainer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBootContainer {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Accepted for compatibility; corral pulls if the tag moved (like `IfNotPresent` + check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_kubevirt_json() {
        let kb: KernelBoot = serde_json::from_str(
            r#"{"kernelArgs":"console=ttyS0","container":{"image":"r/k:1","kernelPath":"/boot/vmlinuz","initrdPath":"/boot/initrd.img","imagePullPolicy":"Always"}}"#,
        )
        .unwrap();
        assert_eq!(kb.kernel_args.as_deref(), Some("console=ttyS0"));
        let c = kb.container.unwrap();
        assert_eq!(c.kernel_path.as_deref(), Some("/boot/vmlinuz"));
        assert_eq!(c.initrd_path.as_deref(), Some("/boot/initrd.img"));
    }
}
