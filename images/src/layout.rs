//! The store's on-disk layout, its locks, staging directories and atomic writes.
//!
//! ```text
//! <root>/
//!   lock                    flock: shared while a pull/import runs, exclusive for rm and gc
//!   refs.lock               flock: exclusive while refs.json is rewritten
//!   refs.json               reference -> {digest, manifest, image id, blobs, artifact dirs}
//!   blobs/sha256/<hex>      verified manifests, configs and layers
//!   images/<id-hex>/        disk.raw, vmlinux, initrd, image.json (complete, or absent)
//!   images/kb-<hash>/       a kernel-boot container's vmlinux/initrd (kernel.json)
//!   tmp/<pid>-<n>/          staging of a running pull; removed on failure, swept by gc
//! ```
//! Everything under `blobs/` and `images/` appears by `rename(2)` of a complete, fsynced file or
//! directory, and `refs.json` is replaced the same way last, so a crash or `kill -9` at any point
//! leaves either the old state or the new one, plus garbage that gc removes.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;

/// A filesystem problem in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt store file {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Paths inside a store root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn create(&self) -> Result<(), StoreError> {
        for d in [
            self.root.clone(),
            self.blobs_dir(),
            self.images_dir(),
            self.tmp_dir(),
        ] {
            fs::create_dir_all(&d).map_err(io_err("cannot create", &d))?;
        }
        Ok(())
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn refs_lock_file(&self) -> PathBuf {
        self.root.join("refs.lock")
    }
    pub fn refs_file(&self) -> PathBuf {
        self.root.join("refs.json")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn artifact_dir(&self, name: &str) -> PathBuf {
        self.images_dir().join(name)
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh staging directory, removed when the guard drops (unless committed away).
    pub fn staging(&self) -> Result<Staging, StoreError> {
        let n = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = self
            .tmp_dir()
            .join(format!("{}-{n}-{nanos:x}", std::process::id()));
        fs::create_dir_all(dir.join("blobs")).map_err(io_err("cannot create", &dir))?;
        fs::create_dir_all(dir.join("artifact")).map_err(io_err("cannot create", &dir))?;
        fs::create_dir_all(dir.join("work")).map_err(io_err("cannot create", &dir))?;
        Ok(Staging { dir })
    }
}

/// A pull's private scratch space under `tmp/`.
pub struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join(d.hex())
    }
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("artifact")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An advisory lock on a file (`flock`), released on drop.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock is held.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<Self, StoreError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .map_err(io_err("cannot lock", path))?;
        Ok(Self { _file: file })
    }

    /// Takes the lock only if nobody holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>, StoreError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err("cannot lock", path)(e)),
        }
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        f.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        f.sync_all().map_err(io_err("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Moves a complete file or directory into place unless something already is there.
/// Returns false when the destination existed (the source is then removed).
pub fn install(src: &Path, dst: &Path) -> Result<bool, StoreError> {
    if dst.exists() {
        if src.is_dir() {
            let _ = fs::remove_dir_all(src);
        } else {
            let _ = fs::remove_file(src);
        }
        return Ok(false);
    }
    fs::rename(src, dst).map_err(io_err("cannot rename into", dst))?;
    Ok(true)
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", dir))
}

/// Fsyncs every regular file directly inside `dir`, then `dir` itself.
pub fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for e in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let p = e.map_err(io_err("cannot list", dir))?.path();
        if p.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err("cannot sync", &p))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        l.create().unwrap();
        let s = l.staging().unwrap();
        std::fs::write(s.work().join("x"), b"x").unwrap();
        let p = s.dir.clone();
        drop(s);
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(l.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("refs.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn exclusive_lock_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let shared = FileLock::acquire(&p, false).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(shared);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn install_keeps_existing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        assert!(!install(&a, &b).unwrap());
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
    }
}
