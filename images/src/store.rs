//! `ImageStore`: the API the supervisor and the CLI call: pull, import, resolve, list, remove, gc.
//!
//! Concurrency: one store value is shared by a daemon's tasks (it is `Clone`). Concurrent pulls
//! of one reference run once (the others await the same result and see its progress). Pulls and
//! imports hold the store lock shared; `remove` and `gc` take it exclusively, so they wait for
//! running pulls (in this process or another one, e.g. the CLI next to the daemon).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;

use crate::auth::Credentials;
use crate::build::{IMAGE_JSON, ImageMeta, KERNEL_JSON, KernelMeta};
use crate::convert::DiskFormat;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::kernel::DiskBoot;
use crate::kernel_boot::KernelBoot;
use crate::layout::{FileLock, Layout, StoreError, io_err};
use crate::progress::{ProgressFn, ProgressHub};
use crate::reference::ImageRef;
use crate::refs::{RefEntry, Refs};
use crate::registry::RegistryClient;

/// Default largest disk (virtual size) and layer accepted: 64 GiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 64 << 30;

/// How a store reaches registries and how much it accepts.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` / podman `auth.json` with registry credentials.
    pub auth_file: Option<PathBuf>,
    /// Largest disk (virtual size) and uncompressed layer accepted, in bytes.
    pub size_limit: u64,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            auth_file: None,
            size_limit: DEFAULT_SIZE_LIMIT,
            max_concurrent_downloads: 3,
        }
    }
}

/// Options of one pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Accept a disk without a kernel (a `kernelBoot.container` will supply it).
    pub kernel_optional: bool,
    pub progress: Option<ProgressFn>,
}

/// A stored container disk, ready to boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The normalised reference, e.g. `127.0.0.1:5000/corral/testguest:latest`.
    pub reference: String,
    /// What the reference resolved to (index or manifest digest; the image id for a
    /// docker-archive import, which has no manifest).
    pub digest: Digest,
    /// The image id (config digest); artifacts are shared by every reference with this id.
    pub id: Digest,
    /// The artifact directory.
    pub dir: PathBuf,
    /// The sparse raw disk. Boot copies or overlays it: the store's file must stay unmodified.
    pub disk_raw: PathBuf,
    /// Virtual size of the disk in bytes.
    pub disk_size: u64,
    /// The disk's path in the image, e.g. `/disk/disk.qcow2`.
    pub disk_name: String,
    pub disk_format: DiskFormat,
    /// The qcow2 version (2 or 3) the disk was converted from; None for a raw disk.
    pub qcow2_version: Option<u32>,
    /// The kernel as an ELF vmlinux (`None` only for `kernel_optional` pulls of kernel-less disks).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Default kernel command line, e.g. `root=LABEL=cirros-rootfs ro console=ttyS0`.
    pub cmdline: String,
    /// Where `cmdline` came from, e.g. `/boot/grub/menu.lst (partition 1)`.
    pub cmdline_source: String,
    pub rootfs_label: Option<String>,
    /// Where kernel and initrd came from in the disk, and what was searched.
    pub boot: DiskBoot,
}

/// A kernel-boot container's artifacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelArtifacts {
    pub reference: String,
    pub id: Digest,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub meta: KernelMeta,
}

/// What a VM boots: kernel, initrd, command line and disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootArtifacts {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub disk_raw: PathBuf,
}

/// One reference in the store (for `corral image ls`).
#[derive(Clone, Debug, Serialize)]
pub struct StoredRef {
    pub reference: String,
    pub digest: Digest,
    pub id: Digest,
    pub updated: u64,
    /// The disk image, unless the reference was only used as a kernel-boot container.
    pub image: Option<Image>,
    pub kernel_boots: Vec<KernelArtifacts>,
    /// Bytes on disk of this reference's artifacts (allocated blocks).
    pub artifact_bytes: u64,
}

/// What gc removed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub artifacts: usize,
    pub staging: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum Pulled {
    Disk(Box<Image>),
    Kernel(KernelArtifacts),
}

type SharedPull = Shared<BoxFuture<'static, Result<Pulled, Arc<ImageError>>>>;

pub(crate) struct Inner {
    pub layout: Layout,
    pub config: StoreConfig,
    pub client: RegistryClient,
    pub refs_mutex: tokio::sync::Mutex<()>,
    inflight: Mutex<HashMap<String, (SharedPull, Arc<ProgressHub>)>>,
}

/// The image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`. Staging left by a crashed process is
    /// removed when no other process is using the store.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Self, ImageError> {
        let layout = Layout::new(root);
        let store_err = |source| ImageError::Store {
            root: root.into(),
            source: Box::new(source),
        };
        layout.create().map_err(store_err)?;
        if let Some(_l) = FileLock::try_exclusive(&layout.lock_file()).map_err(store_err)? {
            sweep_staging(&layout).map_err(store_err)?;
        }
        let creds = match &config.auth_file {
            Some(p) => Credentials::load(p)?,
            None => Credentials::anonymous(),
        };
        let client = RegistryClient::new(&config.insecure_registries, creds);
        Ok(Self {
            inner: Arc::new(Inner {
                layout,
                config,
                client,
                refs_mutex: tokio::sync::Mutex::new(()),
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Pulls `reference` (network: a HEAD for a tag whose image is cached, nothing for a cached
    /// digest reference; manifests and missing layers otherwise) and returns its boot artifacts.
    /// A second pull of an unchanged digest transfers no layer and converts nothing.
    pub async fn pull(&self, reference: &str, opts: PullOptions) -> Result<Image, ImageError> {
        let r = ImageRef::parse(reference)?;
        let want = crate::pull::Want::Disk {
            kernel_optional: opts.kernel_optional,
        };
        match self.pull_shared(r, want, opts.progress).await? {
            Pulled::Disk(i) => Ok(*i),
            Pulled::Kernel(_) => unreachable!("disk pull returned kernel artifacts"),
        }
    }

    /// Pulls a KubeVirt kernel-boot container and extracts `kernel_path` / `initrd_path` from
    /// its filesystem (at least one of them).
    pub async fn pull_kernel_boot(
        &self,
        reference: &str,
        kernel_path: Option<&str>,
        initrd_path: Option<&str>,
        progress: Option<ProgressFn>,
    ) -> Result<KernelArtifacts, ImageError> {
        if kernel_path.is_none() && initrd_path.is_none() {
            return Err(ImageError::KernelBootPaths);
        }
        let r = ImageRef::parse(reference)?;
        let want = crate::pull::Want::Kernel {
            kernel_path: kernel_path.map(str::to_string),
            initrd_path: initrd_path.map(str::to_string),
        };
        match self.pull_shared(r, want, progress).await? {
            Pulled::Kernel(k) => Ok(k),
            Pulled::Disk(_) => unreachable!("kernel pull returned a disk"),
        }
    }

    async fn pull_shared(
        &self,
        r: ImageRef,
        want: crate::pull::Want,
        progress: Option<ProgressFn>,
    ) -> Result<Pulled, ImageError> {
        let key = format!("{r}#{}", want.key());
        let fut = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((fut, hub)) = inflight.get(&key) {
                hub.add(progress);
                fut.clone()
            } else {
                let hub = Arc::new(ProgressHub::default());
                hub.add(progress);
                let inner = self.inner.clone();
                let task_hub = hub.clone();
                let task_key = key.clone();
                let handle = tokio::spawn(async move {
                    let out = crate::pull::run(inner.clone(), r, want, task_hub)
                        .await
                        .map_err(Arc::new);
                    inner
                        .inflight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&task_key);
                    out
                });
                let fut: SharedPull = async move {
                    match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(Arc::new(ImageError::Task(e))),
                    }
                }
                .boxed()
                .shared();
                inflight.insert(key, (fut.clone(), hub));
                fut
            }
        };
        fut.await.map_err(ImageError::from_shared)
    }

    /// The stored image for `reference`, without touching the network (`None` if absent).
    pub fn resolve_cached(&self, reference: &str) -> Option<Image> {
        let r = ImageRef::parse(reference).ok()?;
        let refs = Refs::load(&self.inner.layout.refs_file()).ok()?;
        let key = r.to_string();
        let entry = refs.refs.get(&key).cloned().or_else(|| {
            let d = r.digest()?;
            refs.refs
                .values()
                .find(|e| e.digest == d || e.manifest.as_ref() == Some(&d))
                .cloned()
        })?;
        self.inner.load_image(&key, &entry).ok()
    }

    /// Imports a `docker save`/`podman save` archive or an OCI layout (directory or tar).
    /// `tag` names the result (else the archive's own name, else `localhost/<file name>`).
    pub async fn import(
        &self,
        path: &Path,
        tag: Option<&str>,
        opts: PullOptions,
    ) -> Result<Vec<Image>, ImageError> {
        crate::import::run(
            self.inner.clone(),
            path.to_path_buf(),
            tag.map(str::to_string),
            opts,
        )
        .await
    }

    /// Every reference in the store.
    pub fn list(&self) -> Result<Vec<StoredRef>, ImageError> {
        let layout = &self.inner.layout;
        let refs = Refs::load(&layout.refs_file()).map_err(|e| self.store_err(e))?;
        let mut out = Vec::new();
        for (name, e) in &refs.refs {
            let image = e
                .artifacts
                .contains(e.id.hex())
                .then(|| self.inner.load_image(name, e).ok())
                .flatten();
            let kernel_boots = e
                .artifacts
                .iter()
                .filter(|a| a.starts_with("kb-"))
                .filter_map(|a| self.inner.load_kernel(name, a).ok())
                .collect();
            let artifact_bytes = e
                .artifacts
                .iter()
                .map(|a| du(&layout.artifact_dir(a)))
                .sum();
            out.push(StoredRef {
                reference: name.clone(),
                digest: e.digest.clone(),
                id: e.id.clone(),
                updated: e.updated,
                image,
                kernel_boots,
                artifact_bytes,
            });
        }
        Ok(out)
    }

    /// Removes `reference`, then everything no other reference keeps alive.
    pub async fn remove(&self, reference: &str) -> Result<GcReport, ImageError> {
        let r = ImageRef::parse(reference)?;
        let key = r.to_string();
        let inner = self.inner.clone();
        let _guard = self.inner.refs_mutex.lock().await;
        let report =
            tokio::task::spawn_blocking(move || -> Result<Option<GcReport>, StoreError> {
                let layout = &inner.layout;
                let _lock = FileLock::acquire(&layout.lock_file(), true)?;
                let _refs_lock = FileLock::acquire(&layout.refs_lock_file(), true)?;
                let mut refs = Refs::load(&layout.refs_file())?;
                if refs.refs.remove(&key).is_none() {
                    return Ok(None);
                }
                refs.save(&layout.refs_file())?;
                sweep(layout, &refs).map(Some)
            })
            .await
            .map_err(ImageError::Task)?
            .map_err(|e| self.store_err(e))?;
        report.ok_or_else(|| ImageError::NotFound(r.to_string()))
    }

    /// Removes unreferenced blobs and artifacts, and staging left by crashed pulls.
    /// Waits for running pulls and imports.
    pub async fn gc(&self) -> Result<GcReport, ImageError> {
        let inner = self.inner.clone();
        let _guard = self.inner.refs_mutex.lock().await;
        tokio::task::spawn_blocking(move || -> Result<GcReport, StoreError> {
            let layout = &inner.layout;
            let _lock = FileLock::acquire(&layout.lock_file(), true)?;
            let refs = Refs::load(&layout.refs_file())?;
            let mut report = sweep(layout, &refs)?;
            let (n, bytes) = sweep_staging(layout)?;
            report.staging = n;
            report.bytes += bytes;
            Ok(report)
        })
        .await
        .map_err(ImageError::Task)?
        .map_err(|e| self.store_err(e))
    }

    /// Resolves what a VM boots, applying KubeVirt's `spec.domain.firmware.kernelBoot`: its
    /// `container` supplies kernel and/or initrd (pulled like any image), `kernelArgs` replaces
    /// the default command line. Without an override, the disk's own kernel is used.
    pub async fn boot_artifacts(
        &self,
        image: &Image,
        kernel_boot: Option<&KernelBoot>,
        progress: Option<ProgressFn>,
    ) -> Result<BootArtifacts, ImageError> {
        let mut kernel = image.kernel.clone();
        let mut initrd = image.initrd.clone();
        let mut cmdline = image.cmdline.clone();
        if let Some(kb) = kernel_boot {
            if let Some(c) = &kb.container {
                let k = self
                    .pull_kernel_boot(
                        &c.image,
                        c.kernel_path.as_deref(),
                        c.initrd_path.as_deref(),
                        progress,
                    )
                    .await?;
                if k.kernel.is_some() {
                    kernel = k.kernel;
                    // KubeVirt: the container's initrd goes with the container's kernel.
                    initrd = k.initrd;
                } else {
                    initrd = k.initrd;
                }
            }
            if let Some(args) = kb.kernel_args.as_deref().filter(|a| !a.trim().is_empty()) {
                cmdline = args.trim().to_string();
            }
        }
        let kernel = kernel.ok_or_else(|| ImageError::NoKernel {
            reference: image.reference.clone(),
        })?;
        Ok(BootArtifacts {
            kernel,
            initrd,
            cmdline,
            disk_raw: image.disk_raw.clone(),
        })
    }

    fn store_err(&self, source: StoreError) -> ImageError {
        ImageError::Store {
            root: self.inner.layout.root.clone(),
            source: Box::new(source),
        }
    }
}

impl Inner {
    pub(crate) fn store_err(&self, source: StoreError) -> ImageError {
        ImageError::Store {
            root: self.layout.root.clone(),
            source: Box::new(source),
        }
    }

    /// Builds an `Image` from a ref entry and the artifact directory's `image.json`.
    pub(crate) fn load_image(&self, reference: &str, e: &RefEntry) -> Result<Image, ImageError> {
        let dir = self.layout.artifact_dir(e.id.hex());
        let path = dir.join(IMAGE_JSON);
        let bytes =
            std::fs::read(&path).map_err(|e| self.store_err(io_err("cannot read", &path)(e)))?;
        let meta: ImageMeta = serde_json::from_slice(&bytes).map_err(|source| {
            self.store_err(StoreError::Json {
                path: path.clone(),
                source,
            })
        })?;
        Ok(image_from_meta(reference, &e.digest, &dir, meta))
    }

    pub(crate) fn load_kernel(
        &self,
        reference: &str,
        artifact: &str,
    ) -> Result<KernelArtifacts, ImageError> {
        let dir = self.layout.artifact_dir(artifact);
        let path = dir.join(KERNEL_JSON);
        let bytes =
            std::fs::read(&path).map_err(|e| self.store_err(io_err("cannot read", &path)(e)))?;
        let meta: KernelMeta = serde_json::from_slice(&bytes).map_err(|source| {
            self.store_err(StoreError::Json {
                path: path.clone(),
                source,
            })
        })?;
        let kernel = dir.join("vmlinux");
        let initrd = dir.join("initrd");
        Ok(KernelArtifacts {
            reference: reference.to_string(),
            id: meta.id.clone(),
            kernel: kernel.exists().then_some(kernel),
            initrd: initrd.exists().then_some(initrd),
            meta,
        })
    }
}

pub(crate) fn image_from_meta(
    reference: &str,
    digest: &Digest,
    dir: &Path,
    meta: ImageMeta,
) -> Image {
    let kernel = meta.boot.kernel_path.is_some().then(|| dir.join("vmlinux"));
    let initrd = meta.boot.initrd_path.is_some().then(|| dir.join("initrd"));
    Image {
        reference: reference.to_string(),
        digest: digest.clone(),
        id: meta.id,
        dir: dir.to_path_buf(),
        disk_raw: dir.join("disk.raw"),
        disk_size: meta.disk_size,
        disk_name: meta.disk_name,
        disk_format: meta.disk_format,
        qcow2_version: meta.qcow2_version,
        kernel,
        initrd,
        cmdline: meta.boot.cmdline.clone(),
        cmdline_source: meta.boot.cmdline_source.clone(),
        rootfs_label: meta.boot.root_label.clone(),
        boot: meta.boot,
    }
}

/// Deletes blobs and artifact directories no reference keeps alive.
fn sweep(layout: &Layout, refs: &Refs) -> Result<GcReport, StoreError> {
    let (live_blobs, live_dirs) = refs.live();
    let mut report = GcReport::default();
    let blobs = layout.blobs_dir();
    for e in std::fs::read_dir(&blobs).map_err(io_err("cannot list", &blobs))? {
        let e = e.map_err(io_err("cannot list", &blobs))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let live = Digest::from_hex(&name).is_ok_and(|d| live_blobs.contains(&d));
        if !live {
            report.bytes += du(&e.path());
            std::fs::remove_file(e.path()).map_err(io_err("cannot remove", &e.path()))?;
            report.blobs += 1;
        }
    }
    let images = layout.images_dir();
    for e in std::fs::read_dir(&images).map_err(io_err("cannot list", &images))? {
        let e = e.map_err(io_err("cannot list", &images))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !live_dirs.contains(&name) {
            report.bytes += du(&e.path());
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
            .map_err(io_err("cannot remove", &p))?;
            report.artifacts += 1;
        }
    }
    Ok(report)
}

/// Removes every staging directory. Callers hold the store lock exclusively.
fn sweep_staging(layout: &Layout) -> Result<(usize, u64), StoreError> {
    let tmp = layout.tmp_dir();
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(&tmp).map_err(io_err("cannot list", &tmp))? {
        let p = e.map_err(io_err("cannot list", &tmp))?.path();
        bytes += du(&p);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .map_err(io_err("cannot remove", &p))?;
        n += 1;
    }
    if n > 0 {
        tracing::info!(
            dirs = n,
            bytes,
            "removed staging left by an interrupted pull"
        );
    }
    Ok((n, bytes))
}

/// Allocated bytes of a file or directory tree.
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}
