//! Disk backends behind virtio-blk.
//!
//! Every backend serves byte ranges that the block device has already checked against the
//! capacity (a whole number of 512-byte sectors). Data moves straight between the host file and
//! guest memory (`preadv`/`pwritev` on [`VolatileSlice`]s), without a bounce buffer.
//!
//! * [`raw::RawDisk`] — a raw image file, writable or read-only (also the seed and `empty=` disks);
//! * [`overlay::Overlay`] — a shared read-only base plus a private copy-on-write overlay file
//!   (sparse, 4 KiB clusters tracked in an in-memory bitmap);
//! * [`empty`] — sparse scratch disks of a given capacity;
//! * [`mem::MemDisk`] — in memory, for unit tests and the fuzz target.
//!
//! Ephemeral files (overlays, scratch, seeds) are created unnamed (`O_TMPFILE`, or created and
//! unlinked at once where the filesystem lacks it) in the VM's scratch directory, so the kernel
//! frees them when the VMM process ends, however it ends (SIGKILL included).
//!
//! [`spec`] parses the `--disk` forms and [`open`] turns them into backends.

pub mod empty;
pub mod io;
pub mod mem;
pub mod overlay;
pub mod raw;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use vm_memory::VolatileSlice;

pub use spec::{DiskSource, DiskSpec};

/// The sector size of every disk (virtio-blk addresses 512-byte sectors).
pub const SECTOR_SIZE: u64 = 512;

/// An I/O failure of a backend (the guest sees `VIRTIO_BLK_S_IOERR`).
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a regular file or block device")]
    NotAFile { path: PathBuf },
    #[error("creating an unnamed file in {dir}")]
    Scratch {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("range {offset:#x}+{len:#x} is beyond the capacity {capacity:#x}")]
    OutOfRange {
        offset: u64,
        len: u64,
        capacity: u64,
    },
    #[error("read at {offset:#x}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("write at {offset:#x}")]
    Write {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("flush")]
    Flush(#[source] std::io::Error),
    #[error("building the seed disk")]
    Seed(#[source] crate::seed::SeedError),
}

/// Storage for one virtio-blk device. Offsets and lengths are in bytes; callers keep
/// `offset + len <= capacity()`.
pub trait DiskBackend: Send {
    /// Size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn capacity(&self) -> u64;
    /// Whether the guest may not write.
    fn read_only(&self) -> bool;
    /// Fills `bufs` (in order) with the bytes at `offset`.
    fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError>;
    /// Stores the bytes of `bufs` (in order) at `offset`.
    fn write(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError>;
    /// Makes completed writes durable (a no-op for ephemeral disks: they die with the VM).
    fn flush(&mut self) -> Result<(), DiskError>;
    /// Makes `len` bytes at `offset` read as zeroes.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// Tells the backend that `len` bytes at `offset` are unused. Their content is unspecified
    /// afterwards (each backend documents what it reads back).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// A handle that serves reads from other threads, concurrently with each other (never with
    /// this backend's writes: the block device lets reads in flight finish before any write).
    fn shared_reader(&self) -> Option<Arc<dyn SharedRead>> {
        None
    }
}

/// Reads that may run on several threads at once (see [`DiskBackend::shared_reader`]).
pub trait SharedRead: Send + Sync {
    /// Fills `bufs` (in order) with the bytes at `offset`.
    fn read(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError>;
}

/// Checks `offset + len <= capacity` without overflow.
pub fn check_range(offset: u64, len: u64, capacity: u64) -> Result<(), DiskError> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(DiskError::OutOfRange {
            offset,
            len,
            capacity,
        }),
    }
}

/// Opens the backend for `spec`; ephemeral files go to `scratch_dir`.
pub fn open(spec: &DiskSpec, scratch_dir: &Path) -> Result<Box<dyn DiskBackend>, DiskError> {
    Ok(match &spec.source {
        DiskSource::Raw { path, read_only } => Box::new(raw::RawDisk::open(path, *read_only)?),
        DiskSource::Overlay { base } => Box::new(overlay::Overlay::open(base, scratch_dir)?),
        DiskSource::Empty { capacity } => Box::new(empty::create(scratch_dir, *capacity)?),
        DiskSource::Seed { dir } => {
            let file = crate::seed::build(dir, scratch_dir).map_err(DiskError::Seed)?;
            Box::new(raw::RawDisk::from_file(file, true, true).map_err(|source| {
                DiskError::Open {
                    path: dir.clone(),
                    source,
                }
            })?)
        }
    })
}

/// Total length of `bufs`.
pub fn total_len(bufs: &[VolatileSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// The part `[start, start + len)` of the concatenation of `bufs`.
pub fn sub_slices<'a>(
    bufs: &[VolatileSlice<'a>],
    mut start: usize,
    mut len: usize,
) -> Vec<VolatileSlice<'a>> {
    let mut out = Vec::new();
    for b in bufs {
        if len == 0 {
            break;
        }
        if start >= b.len() {
            start -= b.len();
            continue;
        }
        let take = (b.len() - start).min(len);
        // In range by construction: start < b.len() and start + take <= b.len().
        if let Ok(s) = b.subslice(start, take) {
            out.push(s);
        }
        len -= take;
        start = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks_do_not_overflow() {
        assert!(check_range(0, 512, 512).is_ok());
        assert!(check_range(512, 1, 512).is_err());
        assert!(check_range(u64::MAX, 2, u64::MAX).is_err());
    }

    #[test]
    fn sub_slices_cut_across_buffers() {
        let mut a = [1u8; 3];
        let mut b = [2u8; 5];
        let bufs = [
            VolatileSlice::from(&mut a[..]),
            VolatileSlice::from(&mut b[..]),
        ];
        let parts = sub_slices(&bufs, 2, 4);
        assert_eq!(
            parts.iter().map(|s| s.len()).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let mut out = [0u8; 4];
        parts[0].copy_to(&mut out[..1]);
        parts[1].copy_to(&mut out[1..]);
        assert_eq!(out, [1, 2, 2, 2]);
        assert!(sub_slices(&bufs, 8, 1).is_empty());
        assert_eq!(total_len(&bufs), 8);
    }
}
