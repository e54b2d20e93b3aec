//! The pull pipeline: resolve the manifest (HEAD first when the tag's image is cached), fetch
//! missing blobs into staging with digest checks, build artifacts, commit atomically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;

use crate::build::{self, BuildError};
use crate::digest::Digest;
use crate::error::ImageError;
use crate::layout::{FileLock, Layout, Staging, StoreError, install, sync_dir, write_atomic};
use crate::manifest::{ImageConfig, ImageManifest, Manifest, choose_platform};
use crate::progress::{Phase, ProgressHub, PullEvent};
use crate::reference::ImageRef;
use crate::refs::{RefEntry, Refs, now};
use crate::registry::RegistryError;
use crate::store::{Inner, Pulled};
use crate::unpack::{LayerInput, Limits};

/// What a pull produces.
#[derive(Clone, Debug)]
pub(crate) enum Want {
    Disk {
        kernel_optional: bool,
    },
    Kernel {
        kernel_path: Option<String>,
        initrd_path: Option<String>,
    },
}

impl Want {
    pub fn key(&self) -> String {
        match self {
            Want::Disk { kernel_optional } => format!("disk:{kernel_optional}"),
            Want::Kernel {
                kernel_path,
                initrd_path,
            } => format!("kernel:{kernel_path:?}:{initrd_path:?}"),
        }
    }

    /// The artifact directory name under `images/` for image `id`.
    pub fn artifact(&self, id: &Digest) -> String {
        match self {
            Want::Disk { .. } => id.hex().to_string(),
            Want::Kernel {
                kernel_path,
                initrd_path,
            } => {
                let d = Digest::of(format!("{id}\n{kernel_path:?}\n{initrd_path:?}").as_bytes());
                format!("kb-{}", &d.hex()[..32])
            }
        }
    }
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    r: ImageRef,
    want: Want,
    hub: Arc<ProgressHub>,
) -> Result<Pulled, ImageError> {
    let reference = r.to_string();
    let reg_err = |source: RegistryError| ImageError::Registry {
        reference: reference.clone(),
        source: Box::new(source),
    };
    let man_err = |source| ImageError::Manifest {
        reference: reference.clone(),
        source: Box::new(source),
    };
    let _store_lock = lock_shared(&inner).await?;

    // Cached: a digest reference needs no network; a tag needs a HEAD to see whether it moved.
    let refs = Refs::load(&inner.layout.refs_file()).map_err(|e| inner.store_err(e))?;
    let cached = refs.refs.get(&reference).cloned().or_else(|| {
        let d = r.digest()?;
        refs.refs
            .values()
            .find(|e| e.digest == d || e.manifest.as_ref() == Some(&d))
            .cloned()
    });
    if let Some(entry) =
        cached.filter(|e| inner.layout.artifact_dir(&want.artifact(&e.id)).exists())
    {
        let unchanged = match r.digest() {
            Some(_) => true,
            None => inner.client.head_digest(&r).await.map_err(reg_err)? == entry.digest,
        };
        if unchanged {
            hub.emit(PullEvent::Cached {
                reference: reference.clone(),
                digest: entry.digest.clone(),
            });
            let mut entry = entry;
            entry.artifacts.insert(want.artifact(&entry.id));
            commit(&inner, None, Vec::new(), &reference, entry.clone()).await?;
            return finish(&inner, &reference, &entry, &want);
        }
    }

    let (top_bytes, top) = inner.client.manifest(&r).await.map_err(reg_err)?;
    let mut small = vec![(top.clone(), top_bytes.clone())];
    let (manifest_digest, manifest) = match Manifest::parse(&top_bytes, None).map_err(man_err)? {
        Manifest::Image(m) => (top.clone(), m),
        Manifest::Index(entries) => {
            let e = choose_platform(&entries).map_err(man_err)?;
            let (bytes, d) = inner
                .client
                .manifest(&r.pinned(&e.digest))
                .await
                .map_err(reg_err)?;
            small.push((d.clone(), bytes.clone()));
            match Manifest::parse(&bytes, None).map_err(man_err)? {
                Manifest::Image(m) => (d, m),
                Manifest::Index(_) => {
                    return Err(man_err(crate::manifest::ManifestError::MediaType(
                        "nested index".into(),
                    )));
                }
            }
        }
    };
    let id = manifest.config.digest.clone();
    let mut entry = RefEntry {
        digest: top.clone(),
        manifest: Some(manifest_digest),
        id: id.clone(),
        blobs: small
            .iter()
            .map(|(d, _)| d.clone())
            .chain(std::iter::once(id.clone()))
            .chain(manifest.layers.iter().map(|l| l.digest.clone()))
            .collect(),
        artifacts: BTreeSet::from([want.artifact(&id)]),
        updated: now(),
    };
    if let Some(old) = refs.refs.get(&reference).filter(|o| o.id == id) {
        entry.artifacts.extend(old.artifacts.iter().cloned());
    }

    // Same image under a new tag or digest: artifacts exist, nothing to transfer or convert.
    if inner.layout.artifact_dir(&want.artifact(&id)).exists() {
        let pulled = finish(&inner, &reference, &entry, &want)?;
        hub.emit(PullEvent::Cached {
            reference: reference.clone(),
            digest: top,
        });
        commit(&inner, None, small, &reference, entry).await?;
        return Ok(pulled);
    }

    let staging = inner.layout.staging().map_err(|e| inner.store_err(e))?;
    let config_bytes = fetch_small(&inner, &r, &manifest.config, &staging)
        .await
        .map_err(reg_err)?;
    small.push((id.clone(), config_bytes.clone()));
    let config = ImageConfig::parse(&config_bytes).map_err(man_err)?;
    let total = manifest.layers.iter().map(|l| l.size).sum();
    hub.emit(PullEvent::Resolved {
        reference: reference.clone(),
        digest: top.clone(),
        layers: manifest.layers.len(),
        total,
    });

    let layer_paths = fetch_layers(&inner, &r, &manifest, &staging, &hub)
        .await
        .map_err(reg_err)?;
    build_and_commit(
        &inner,
        &reference,
        entry,
        &want,
        &manifest,
        &config,
        layer_paths,
        staging,
        small,
        &hub,
    )
    .await
}

/// Builds artifacts from fetched layers (blocking work off the runtime), then commits.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn build_and_commit(
    inner: &Arc<Inner>,
    reference: &str,
    entry: RefEntry,
    want: &Want,
    manifest: &ImageManifest,
    config: &ImageConfig,
    layer_paths: Vec<PathBuf>,
    staging: Staging,
    small: Vec<(Digest, Vec<u8>)>,
    hub: &Arc<ProgressHub>,
) -> Result<Pulled, ImageError> {
    let limits = Limits {
        file: inner.config.size_limit,
        layer: inner.config.size_limit.saturating_add(1 << 30),
    };
    let digests: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    let diff_ids: Vec<Option<Digest>> = (0..digests.len())
        .map(|i| config.diff_id(i).cloned())
        .collect();
    let id = entry.id.clone();
    let (artifact, work) = (staging.artifact(), staging.work());
    let want_c = want.clone();
    let hub_c = hub.clone();
    let built = tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
        let inputs: Vec<LayerInput<'_>> = digests
            .iter()
            .zip(&layer_paths)
            .zip(&diff_ids)
            .map(|((d, p), diff)| LayerInput {
                digest: d,
                path: p,
                diff_id: diff.as_ref(),
            })
            .collect();
        match &want_c {
            Want::Disk { kernel_optional } => build::build_disk(
                &id,
                &inputs,
                &artifact,
                &work,
                limits,
                !kernel_optional,
                &hub_c,
            )
            .map(|_| ()),
            Want::Kernel {
                kernel_path,
                initrd_path,
            } => build::build_kernel_boot(
                &id,
                &inputs,
                kernel_path.as_deref(),
                initrd_path.as_deref(),
                &artifact,
                &work,
                limits,
            )
            .map(|_| ()),
        }
    })
    .await
    .map_err(ImageError::Task)?;
    built.map_err(|source| ImageError::Build {
        reference: reference.to_string(),
        source: Box::new(source),
    })?;
    hub.emit(PullEvent::Phase(Phase::Committing));
    commit(
        inner,
        Some((&staging, want.artifact(&entry.id))),
        small,
        reference,
        entry.clone(),
    )
    .await?;
    drop(staging);
    finish(inner, reference, &entry, want)
}

/// Loads what the pull produced; a kernel-less disk is an error unless allowed.
fn finish(
    inner: &Inner,
    reference: &str,
    entry: &RefEntry,
    want: &Want,
) -> Result<Pulled, ImageError> {
    match want {
        Want::Disk { kernel_optional } => {
            let image = inner.load_image(reference, entry)?;
            if image.kernel.is_none() && !kernel_optional {
                return Err(ImageError::Build {
                    reference: reference.to_string(),
                    source: Box::new(BuildError::Kernel(crate::kernel::KernelError::NoKernel(
                        image.boot.searched,
                    ))),
                });
            }
            Ok(Pulled::Disk(Box::new(image)))
        }
        Want::Kernel { .. } => inner
            .load_kernel(reference, &want.artifact(&entry.id))
            .map(Pulled::Kernel),
    }
}

async fn lock_shared(inner: &Arc<Inner>) -> Result<FileLock, ImageError> {
    let path = inner.layout.lock_file();
    let lock = tokio::task::spawn_blocking(move || FileLock::acquire(&path, false))
        .await
        .map_err(ImageError::Task)?;
    lock.map_err(|e| inner.store_err(e))
}

/// A small blob (config): from the store if present, else downloaded into staging.
async fn fetch_small(
    inner: &Inner,
    r: &ImageRef,
    desc: &crate::manifest::Descriptor,
    staging: &Staging,
) -> Result<Vec<u8>, RegistryError> {
    let have = inner.layout.blob(&desc.digest);
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RegistryError::Write { path: p, source }
    };
    if have.exists() {
        return std::fs::read(&have).map_err(write_err(&have));
    }
    let dst = staging.blob(&desc.digest);
    inner
        .client
        .blob_to_file(r, desc, &dst, 64 << 20, &|_| {})
        .await?;
    std::fs::read(&dst).map_err(write_err(&dst))
}

/// Downloads the layers not yet in the store (a few at a time) and returns every layer's path.
async fn fetch_layers(
    inner: &Arc<Inner>,
    r: &ImageRef,
    manifest: &ImageManifest,
    staging: &Staging,
    hub: &Arc<ProgressHub>,
) -> Result<Vec<PathBuf>, RegistryError> {
    let limit = inner.config.size_limit;
    let jobs = manifest
        .layers
        .iter()
        .cloned()
        .map(|layer: crate::manifest::Descriptor| {
            let have = inner.layout.blob(&layer.digest);
            let dst = staging.blob(&layer.digest);
            let hub = hub.clone();
            async move {
                if have.exists() {
                    hub.emit(PullEvent::LayerStart {
                        digest: layer.digest.clone(),
                        size: layer.size,
                        cached: true,
                    });
                    hub.emit(PullEvent::LayerDone {
                        digest: layer.digest.clone(),
                    });
                    return Ok(have);
                }
                if dst.exists() {
                    return Ok(dst); // the same layer twice in one manifest
                }
                hub.emit(PullEvent::LayerStart {
                    digest: layer.digest.clone(),
                    size: layer.size,
                    cached: false,
                });
                let progress = |done| {
                    hub.emit(PullEvent::LayerProgress {
                        digest: layer.digest.clone(),
                        done,
                        size: layer.size,
                    });
                };
                inner
                    .client
                    .blob_to_file(r, &layer, &dst, limit, &progress)
                    .await?;
                hub.emit(PullEvent::LayerDone {
                    digest: layer.digest.clone(),
                });
                Ok(dst)
            }
        });
    let results: Vec<Result<PathBuf, RegistryError>> = futures_util::stream::iter(jobs)
        .buffered(inner.config.max_concurrent_downloads.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Moves staged blobs and the artifact directory `artifact` (built by this pull) into place,
/// then records the reference: atomically, under the refs lock.
pub(crate) async fn commit(
    inner: &Arc<Inner>,
    staging: Option<(&Staging, String)>,
    small: Vec<(Digest, Vec<u8>)>,
    reference: &str,
    entry: RefEntry,
) -> Result<(), ImageError> {
    let _guard = inner.refs_mutex.lock().await;
    let layout = inner.layout.clone();
    let staged = staging.map(|(s, name)| (s.dir.join("blobs"), s.artifact(), name));
    let reference = reference.to_string();
    tokio::task::spawn_blocking(move || commit_blocking(&layout, staged, small, &reference, entry))
        .await
        .map_err(ImageError::Task)?
        .map_err(|e| inner.store_err(e))
}

fn commit_blocking(
    layout: &Layout,
    staged: Option<(PathBuf, PathBuf, String)>,
    small: Vec<(Digest, Vec<u8>)>,
    reference: &str,
    mut entry: RefEntry,
) -> Result<(), StoreError> {
    let _refs_lock = FileLock::acquire(&layout.refs_lock_file(), true)?;
    if let Some((blobs, artifact, name)) = &staged {
        for e in std::fs::read_dir(blobs).map_err(crate::layout::io_err("cannot list", blobs))? {
            let p = e
                .map_err(crate::layout::io_err("cannot list", blobs))?
                .path();
            let Some(d) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            install(&p, &layout.blob(&d))?;
        }
        if artifact.join(crate::build::IMAGE_JSON).exists()
            || artifact.join(crate::build::KERNEL_JSON).exists()
        {
            install(artifact, &layout.artifact_dir(name))?;
            sync_dir(&layout.images_dir())?;
        }
    }
    for (d, bytes) in small {
        let p = layout.blob(&d);
        if !p.exists() {
            write_atomic(&p, &bytes)?;
        }
    }
    sync_dir(&layout.blobs_dir())?;
    entry.blobs.retain(|d| layout.blob(d).exists());
    entry.artifacts.retain(|a| layout.artifact_dir(a).exists());
    let mut refs = Refs::load(&layout.refs_file())?;
    refs.version = 1;
    refs.refs.insert(reference.to_string(), entry);
    refs.save(&layout.refs_file())
}
