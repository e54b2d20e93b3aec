//! The supervisor's [`ImageSource`] on top of the `images` store (`<state-dir>/images`).
//!
//! Pull policies: `IfNotPresent` uses the stored image without touching the network, `Always`
//! asks the registry (a HEAD for a cached tag; no transfer for an unchanged digest), `Never`
//! only uses the store. Kernel-boot containers are always resolved through the registry check
//! (cheap when cached).

use images::{Image, ImageStore, PullOptions, StoreConfig};
use supervisor::boot::{BootImage, BoxFuture, ImageSource, KernelArtifacts, PullPolicy};

use crate::daemon::DaemonConfig;

/// Boot images from the on-disk image store.
pub struct StoreSource {
    store: ImageStore,
}

fn boot_image(i: Image) -> BootImage {
    BootImage {
        digest: i.digest.to_string(),
        disk: i.disk_raw,
        kernel: i.kernel,
        initrd: i.initrd,
        cmdline: i.cmdline,
    }
}

impl StoreSource {
    /// Opens the store under the daemon's state directory.
    pub fn open(cfg: &DaemonConfig) -> Result<Self, images::ImageError> {
        let config = StoreConfig {
            insecure_registries: cfg.insecure_registries.clone(),
            auth_file: cfg.registry_auth_file.clone(),
            ..StoreConfig::default()
        };
        Ok(StoreSource {
            store: ImageStore::open(&cfg.state_dir.join("images"), config)?,
        })
    }
}

impl ImageSource for StoreSource {
    fn boot_image(
        &self,
        image: &str,
        policy: PullPolicy,
        kernel_optional: bool,
    ) -> BoxFuture<Result<BootImage, String>> {
        let store = self.store.clone();
        let image = image.to_string();
        Box::pin(async move {
            if policy != PullPolicy::Always {
                if let Some(i) = store.resolve_cached(&image) {
                    if i.kernel.is_some() || kernel_optional {
                        return Ok(boot_image(i));
                    }
                }
                if policy == PullPolicy::Never {
                    return Err(format!(
                        "image \"{image}\" is not in the store and its imagePullPolicy is Never"
                    ));
                }
            }
            let opts = PullOptions {
                kernel_optional,
                progress: None,
            };
            store
                .pull(&image, opts)
                .await
                .map(boot_image)
                .map_err(|e| supervisor::error_chain(&e))
        })
    }

    fn kernel_from(
        &self,
        image: &str,
        kernel_path: Option<&str>,
        initrd_path: Option<&str>,
        _policy: PullPolicy,
    ) -> BoxFuture<Result<KernelArtifacts, String>> {
        let store = self.store.clone();
        let (image, k, i) = (
            image.to_string(),
            kernel_path.map(str::to_string),
            initrd_path.map(str::to_string),
        );
        Box::pin(async move {
            store
                .pull_kernel_boot(&image, k.as_deref(), i.as_deref(), None)
                .await
                .map(|a| KernelArtifacts {
                    kernel: a.kernel,
                    initrd: a.initrd,
                })
                .map_err(|e| supervisor::error_chain(&e))
        })
    }
}
