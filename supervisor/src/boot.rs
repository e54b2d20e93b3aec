//! What the supervisor needs from the image store: boot artifacts for a containerDisk image.
//! The real implementation sits on the `images` crate; controller tests use a fake.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Everything needed to boot a VM from a container disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    /// Image digest (for status and events).
    pub digest: String,
    /// Raw disk file, shared read-only by every VM of the image.
    pub disk: PathBuf,
    /// Uncompressed kernel (ELF vmlinux) found in the disk (`None` only when the pull allowed a
    /// kernel-less disk because `kernelBoot.container` supplies the kernel).
    pub kernel: Option<PathBuf>,
    /// Initrd found in the disk, if any.
    pub initrd: Option<PathBuf>,
    /// Default kernel command line derived from the image.
    pub cmdline: String,
}

/// Kernel and initrd taken from a container image's filesystem (`kernelBoot.container`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// `None` when only an initrd was asked for (the disk's kernel is kept).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

/// Kubernetes image pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy for `image` given the field value: the Kubernetes default is `Always` for
    /// `:latest` or untagged references and `IfNotPresent` otherwise.
    pub fn for_image(image: &str, field: Option<&str>) -> PullPolicy {
        match field {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                if image.contains('@') {
                    return PullPolicy::IfNotPresent;
                }
                let last = image.rsplit('/').next().unwrap_or(image);
                match last.split_once(':') {
                    None => PullPolicy::Always,
                    Some((_, "latest")) => PullPolicy::Always,
                    Some(_) => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

/// Source of boot images.
pub trait ImageSource: Send + Sync + 'static {
    /// Boot artifacts of `image`, pulled according to `policy`.
    /// `kernel_optional` accepts a disk without a kernel (a kernel-boot container supplies one).
    fn boot_image(
        &self,
        image: &str,
        policy: PullPolicy,
        kernel_optional: bool,
    ) -> BoxFuture<Result<BootImage, String>>;
    /// Kernel and initrd at the given paths inside `image`'s filesystem.
    fn kernel_from(
        &self,
        image: &str,
        kernel_path: Option<&str>,
        initrd_path: Option<&str>,
        policy: PullPolicy,
    ) -> BoxFuture<Result<KernelArtifacts, String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policies() {
        let cases = [
            (
                "quay.io/kubevirt/cirros-container-disk-demo",
                None,
                PullPolicy::Always,
            ),
            (
                "127.0.0.1:5000/corral/testguest:latest",
                None,
                PullPolicy::Always,
            ),
            (
                "127.0.0.1:5000/corral/testguest:v1",
                None,
                PullPolicy::IfNotPresent,
            ),
            ("127.0.0.1:5000/corral/testguest", None, PullPolicy::Always),
            ("reg/x@sha256:abc", None, PullPolicy::IfNotPresent),
            ("reg/x:v1", Some("Always"), PullPolicy::Always),
            ("reg/x", Some("Never"), PullPolicy::Never),
        ];
        for (img, field, want) in cases {
            assert_eq!(PullPolicy::for_image(img, field), want, "{img}");
        }
    }
}
