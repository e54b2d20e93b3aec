//! The supervisor's [`ImageSource`] on top of the `images` store.

use supervisor::boot::{BootImage, BoxFuture, ImageSource, KernelArtifacts, PullPolicy};

use crate::daemon::DaemonConfig;

/// Boot images from the on-disk image store.
pub struct StoreSource {}

impl StoreSource {
    /// Opens the store under the daemon's state directory.
    pub fn open(_cfg: &DaemonConfig) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(StoreSource {})
    }
}

impl ImageSource for StoreSource {
    fn boot_image(&self, image: &str, _policy: PullPolicy) -> BoxFuture<Result<BootImage, String>> {
        let image = image.to_string();
        Box::pin(async move { Err(format!("{image}: the image store is not wired in yet")) })
    }
    fn kernel_from(
        &self,
        image: &str,
        _k: Option<&str>,
        _i: Option<&str>,
        _p: PullPolicy,
    ) -> BoxFuture<Result<KernelArtifacts, String>> {
        let image = image.to_string();
        Box::pin(async move { Err(format!("{image}: the image store is not wired in yet")) })
    }
}
