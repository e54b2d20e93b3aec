//! Imports without a registry: `docker save` / `podman save` archives (legacy docker-archive
//! with `manifest.json`, or the OCI-layout form newer docker writes) and OCI image layouts, as a
//! directory or a tar file. Every blob is verified against its digest (legacy layers against the
//! config's diff_ids) and the result goes through the same build and commit as a pull.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::digest::{Digest, HashingWriter};
use crate::error::ImageError;
use crate::layout::{FileLock, Staging};
use crate::manifest::{
    Descriptor, ImageConfig, ImageManifest, Manifest, ManifestError, choose_platform,
};
use crate::progress::{ProgressHub, PullEvent};
use crate::pull::{Want, build_and_commit};
use crate::reference::{ImageRef, ReferenceError};
use crate::refs::{RefEntry, now};
use crate::store::{Image, Inner, PullOptions, Pulled};

/// Why an archive or layout could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive entry {0:?} is absolute or contains \"..\"")]
    UnsafePath(String),
    #[error("archive entry {entry:?} is {size} bytes, over the size limit")]
    TooLarge { entry: String, size: u64 },
    #[error("neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)")]
    Unknown,
    #[error("malformed {file}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file} is referenced but missing")]
    Missing { file: String },
    #[error("{file}: digest mismatch, expected {expected}, got {actual}")]
    Digest {
        file: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{file}")]
    Manifest {
        file: String,
        #[source]
        source: ManifestError,
    },
    #[error("the archive holds no image")]
    Empty,
    #[error("--tag names one image, but the archive holds {0}")]
    TagAmbiguous(usize),
    #[error("invalid image name {0:?} in the archive")]
    Name(String, #[source] ReferenceError),
}

/// One image found in the input, with its blobs staged and verified.
struct Found {
    name: String,
    top: Digest,
    manifest_digest: Option<Digest>,
    manifest: ImageManifest,
    config: ImageConfig,
    /// Small documents to keep as blobs (manifests, config).
    small: Vec<(Digest, Vec<u8>)>,
    layers: Vec<PathBuf>,
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    path: PathBuf,
    tag: Option<String>,
    opts: PullOptions,
) -> Result<Vec<Image>, ImageError> {
    let imp_err = |source| ImageError::Import {
        path: path.clone(),
        source: Box::new(source),
    };
    if let Some(t) = &tag {
        ImageRef::parse(t)?;
    }
    let lock_path = inner.layout.lock_file();
    let _lock = tokio::task::spawn_blocking(move || FileLock::acquire(&lock_path, false))
        .await
        .map_err(ImageError::Task)?
        .map_err(|e| inner.store_err(e))?;
    let source = inner.layout.staging().map_err(|e| inner.store_err(e))?;
    let (p, lim, src_dir) = (
        path.clone(),
        inner.config.size_limit.saturating_add(1 << 30),
        source.dir.clone(),
    );
    let found = tokio::task::spawn_blocking(move || scan(&p, &src_dir, lim))
        .await
        .map_err(ImageError::Task)?
        .map_err(imp_err)?;
    if found.is_empty() {
        return Err(imp_err(ImportError::Empty));
    }
    if tag.is_some() && found.len() > 1 {
        return Err(imp_err(ImportError::TagAmbiguous(found.len())));
    }
    let hub = Arc::new(ProgressHub::default());
    hub.add(opts.progress.clone());
    let stem = file_stem(&path);
    let mut out = Vec::new();
    for f in found {
        let name = match &tag {
            Some(t) => t.clone(),
            None if f.name.is_empty() => format!("localhost/{stem}:latest"),
            None => f.name.clone(),
        };
        let reference = ImageRef::parse(&name)
            .map_err(|e| imp_err(ImportError::Name(name.clone(), e)))?
            .to_string();
        let want = Want::Disk {
            kernel_optional: opts.kernel_optional,
        };
        let id = f.manifest.config.digest.clone();
        let entry = RefEntry {
            digest: f.top.clone(),
            manifest: f.manifest_digest.clone(),
            id: id.clone(),
            blobs: f
                .small
                .iter()
                .map(|(d, _)| d.clone())
                .chain(f.manifest.layers.iter().map(|l| l.digest.clone()))
                .collect(),
            artifacts: BTreeSet::from([want.artifact(&id)]),
            updated: now(),
        };
        hub.emit(PullEvent::Resolved {
            reference: reference.clone(),
            digest: f.top.clone(),
            layers: f.manifest.layers.len(),
            total: f.manifest.layers.iter().map(|l| l.size).sum(),
        });
        if inner.layout.artifact_dir(&want.artifact(&id)).exists() {
            hub.emit(PullEvent::Cached {
                reference: reference.clone(),
                digest: f.top.clone(),
            });
            crate::pull::commit(&inner, None, f.small, &reference, entry.clone()).await?;
            out.push(inner.load_image(&reference, &entry)?);
            continue;
        }
        // Each image gets its own staging; layers are hard-linked from the import's staging.
        let staging = inner.layout.staging().map_err(|e| inner.store_err(e))?;
        let layer_paths = link_layers(&inner, &f, &staging).map_err(imp_err)?;
        match build_and_commit(
            &inner,
            &reference,
            entry,
            &want,
            &f.manifest,
            &f.config,
            layer_paths,
            staging,
            f.small,
            &hub,
        )
        .await?
        {
            Pulled::Disk(i) => out.push(*i),
            Pulled::Kernel(_) => unreachable!("import builds disks"),
        }
    }
    drop(source);
    Ok(out)
}

fn link_layers(inner: &Inner, f: &Found, staging: &Staging) -> Result<Vec<PathBuf>, ImportError> {
    let mut out = Vec::new();
    for (desc, src) in f.manifest.layers.iter().zip(&f.layers) {
        let have = inner.layout.blob(&desc.digest);
        if have.exists() {
            out.push(have);
            continue;
        }
        let dst = staging.blob(&desc.digest);
        if !dst.exists() {
            std::fs::hard_link(src, &dst)
                .or_else(|_| std::fs::copy(src, &dst).map(|_| ()))
                .map_err(|source| ImportError::Read {
                    path: src.clone(),
                    source,
                })?;
        }
        out.push(dst);
    }
    Ok(out)
}

fn file_stem(p: &Path) -> String {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("imported");
    let stem = name.split('.').next().unwrap_or(name);
    let clean: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "imported".into()
    } else {
        clean
    }
}

/// The input as a directory tree: the user's directory, or a tar extracted into staging.
struct Source {
    root: PathBuf,
    /// Symlinks from the tar (docker's legacy format links duplicate layers).
    links: HashMap<String, String>,
    /// Blob copies go here (staging of the import).
    blobs: PathBuf,
    limit: u64,
}

fn scan(input: &Path, staging: &Path, limit: u64) -> Result<Vec<Found>, ImportError> {
    let read_err = |source| ImportError::Read {
        path: input.into(),
        source,
    };
    let meta = std::fs::metadata(input).map_err(read_err)?;
    let blobs = staging.join("blobs");
    let src = if meta.is_dir() {
        Source {
            root: input.to_path_buf(),
            links: HashMap::new(),
            blobs,
            limit,
        }
    } else {
        let root = staging.join("work").join("archive");
        let links = extract_tar(input, &root, limit)?;
        Source {
            root,
            links,
            blobs,
            limit,
        }
    };
    if src.exists("index.json") {
        scan_oci(&src)
    } else if src.exists("manifest.json") {
        scan_docker(&src)
    } else {
        Err(ImportError::Unknown)
    }
}

/// Extracts regular files of a tar into `root`, refusing unsafe names; returns its symlinks.
fn extract_tar(
    input: &Path,
    root: &Path,
    limit: u64,
) -> Result<HashMap<String, String>, ImportError> {
    let read_err = |source| ImportError::Read {
        path: input.into(),
        source,
    };
    let file = File::open(input).map_err(read_err)?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
    let mut links = HashMap::new();
    std::fs::create_dir_all(root).map_err(read_err)?;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_rel(&name)?;
        if rel.is_empty() {
            continue;
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if entry.size() > limit {
                    return Err(ImportError::TooLarge {
                        entry: name,
                        size: entry.size(),
                    });
                }
                let dst = root.join(&rel);
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(read_err)?;
                }
                let mut out = File::create(&dst).map_err(read_err)?;
                io::copy(&mut entry, &mut out).map_err(read_err)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    safe_rel(&format!("{parent}/{target}"))
                        .or_else(|_| resolve_up(parent, &target))?
                } else {
                    safe_rel(&target)?
                };
                links.insert(rel, resolved);
            }
            _ => {}
        }
    }
    Ok(links)
}

/// `a/b` + `../c/d` → `a/c/d`, refusing to leave the archive.
fn resolve_up(parent: &str, target: &str) -> Result<String, ImportError> {
    let mut stack: Vec<&str> = parent.split('/').filter(|c| !c.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack
                    .pop()
                    .ok_or_else(|| ImportError::UnsafePath(target.to_string()))?;
            }
            c => stack.push(c),
        }
    }
    Ok(stack.join("/"))
}

fn safe_rel(name: &str) -> Result<String, ImportError> {
    if name.starts_with('/') || name.split('/').any(|c| c == "..") {
        return Err(ImportError::UnsafePath(name.to_string()));
    }
    Ok(name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/"))
}

impl Source {
    fn path(&self, rel: &str) -> Result<PathBuf, ImportError> {
        let mut rel = safe_rel(rel)?;
        for _ in 0..8 {
            match self.links.get(&rel) {
                Some(t) => rel = t.clone(),
                None => break,
            }
        }
        Ok(self.root.join(rel))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_ok_and(|p| p.is_file())
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, ImportError> {
        let p = self.path(rel)?;
        let meta = std::fs::metadata(&p).map_err(|_| ImportError::Missing {
            file: rel.to_string(),
        })?;
        if meta.len() > 64 << 20 {
            return Err(ImportError::TooLarge {
                entry: rel.to_string(),
                size: meta.len(),
            });
        }
        std::fs::read(&p).map_err(|source| ImportError::Read { path: p, source })
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<T, ImportError> {
        serde_json::from_slice(&self.read(rel)?).map_err(|source| ImportError::Json {
            file: rel.to_string(),
            source,
        })
    }

    /// Copies (or moves, for an extracted tar) a blob into staging, verifying its digest when
    /// `expected` is given; returns the staged path and the digest.
    fn stage_blob(
        &self,
        rel: &str,
        expected: Option<&Digest>,
    ) -> Result<(PathBuf, Digest), ImportError> {
        let src = self.path(rel)?;
        let mut input = File::open(&src).map_err(|_| ImportError::Missing {
            file: rel.to_string(),
        })?;
        if input.metadata().map(|m| m.len()).unwrap_or(0) > self.limit {
            return Err(ImportError::TooLarge {
                entry: rel.to_string(),
                size: input.metadata().map(|m| m.len()).unwrap_or(0),
            });
        }
        let tmp = self
            .blobs
            .join(format!(".in-{}", Digest::of(rel.as_bytes()).short()));
        let write_err = |source| ImportError::Read {
            path: tmp.clone(),
            source,
        };
        let mut w = HashingWriter::new(File::create(&tmp).map_err(write_err)?);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(|source| ImportError::Read {
                path: src.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            io::Write::write_all(&mut w, &buf[..n]).map_err(write_err)?;
        }
        let (_, actual, _) = w.finish();
        if let Some(expected) = expected
            && *expected != actual
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImportError::Digest {
                file: rel.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        let dst = self.blobs.join(actual.hex());
        std::fs::rename(&tmp, &dst).map_err(write_err)?;
        Ok((dst, actual))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn scan_oci(src: &Source) -> Result<Vec<Found>, ImportError> {
    let index: OciIndex = src.json("index.json")?;
    let mut out = Vec::new();
    for desc in &index.manifests {
        let name = desc
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                desc.annotations
                    .get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains('/'))
            })
            .cloned()
            .unwrap_or_default();
        let top_bytes = src.read(&blob_rel(&desc.digest))?;
        check(&blob_rel(&desc.digest), &desc.digest, &top_bytes)?;
        let mut small = vec![(desc.digest.clone(), top_bytes.clone())];
        let man_err = |file: String| move |source| ImportError::Manifest { file, source };
        let (mdigest, manifest) = match Manifest::parse(&top_bytes, Some(&desc.media_type))
            .map_err(man_err(blob_rel(&desc.digest)))?
        {
            Manifest::Image(m) => (desc.digest.clone(), m),
            Manifest::Index(entries) => {
                let e = choose_platform(&entries).map_err(man_err(blob_rel(&desc.digest)))?;
                let bytes = src.read(&blob_rel(&e.digest))?;
                check(&blob_rel(&e.digest), &e.digest, &bytes)?;
                small.push((e.digest.clone(), bytes.clone()));
                match Manifest::parse(&bytes, Some(&e.media_type))
                    .map_err(man_err(blob_rel(&e.digest)))?
                {
                    Manifest::Image(m) => (e.digest.clone(), m),
                    Manifest::Index(_) => {
                        return Err(ImportError::Manifest {
                            file: blob_rel(&e.digest),
                            source: ManifestError::MediaType("nested index".into()),
                        });
                    }
                }
            }
        };
        let config_bytes = src.read(&blob_rel(&manifest.config.digest))?;
        check(
            &blob_rel(&manifest.config.digest),
            &manifest.config.digest,
            &config_bytes,
        )?;
        let config = ImageConfig::parse(&config_bytes)
            .map_err(man_err(blob_rel(&manifest.config.digest)))?;
        small.push((manifest.config.digest.clone(), config_bytes));
        let mut layers = Vec::new();
        for l in &manifest.layers {
            layers.push(src.stage_blob(&blob_rel(&l.digest), Some(&l.digest))?.0);
        }
        out.push(Found {
            name,
            top: desc.digest.clone(),
            manifest_digest: Some(mdigest),
            manifest,
            config,
            small,
            layers,
        });
    }
    Ok(out)
}

fn check(file: &str, expected: &Digest, bytes: &[u8]) -> Result<(), ImportError> {
    let actual = Digest::of(bytes);
    if actual != *expected {
        return Err(ImportError::Digest {
            file: file.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn scan_docker(src: &Source) -> Result<Vec<Found>, ImportError> {
    let entries: Vec<DockerEntry> = src.json("manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config_bytes = src.read(&e.config)?;
        let id = Digest::of(&config_bytes);
        let config = ImageConfig::parse(&config_bytes).map_err(|source| ImportError::Manifest {
            file: e.config.clone(),
            source,
        })?;
        let mut descs = Vec::new();
        let mut layers = Vec::new();
        for rel in &e.layers {
            // Layers named by digest (blobs/sha256/<hex>, <hex>.tar) are checked against the name;
            // every layer is later checked against the config's diff_id when unpacked.
            let named = rel
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::from_hex(h).ok());
            let (path, digest) = src.stage_blob(rel, named.as_ref())?;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            descs.push(Descriptor {
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                digest,
                size,
                platform: None,
                annotations: Default::default(),
            });
            layers.push(path);
        }
        if descs.is_empty() {
            return Err(ImportError::Manifest {
                file: "manifest.json".into(),
                source: ManifestError::NoLayers,
            });
        }
        let config_desc = Descriptor {
            media_type: "application/vnd.docker.container.image.v1+json".into(),
            digest: id.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let name = e
            .repo_tags
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        out.push(Found {
            name,
            top: id.clone(),
            manifest_digest: None,
            manifest: ImageManifest {
                config: config_desc,
                layers: descs,
            },
            config,
            small: vec![(id, config_bytes)],
            layers,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_archive_names() {
        assert!(safe_rel("../x").is_err());
        assert!(safe_rel("/etc/passwd").is_err());
        assert_eq!(safe_rel("./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(resolve_up("a/b", "../c").unwrap(), "a/c");
        assert!(resolve_up("a", "../../c").is_err());
    }

    #[test]
    fn stems() {
        assert_eq!(file_stem(Path::new("/x/CirrOS Like.tar")), "cirros-like");
        assert_eq!(file_stem(Path::new("/x/oci")), "oci");
    }
}
