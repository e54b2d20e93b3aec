//! A raw image file (or block device): sector N is at byte N × 512.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use vm_memory::VolatileSlice;

use super::{DiskBackend, DiskError, SECTOR_SIZE, SharedRead, check_range, io};

/// A raw disk. The capacity is the file size rounded down to whole sectors.
#[derive(Debug)]
pub struct RawDisk {
    file: Arc<File>,
    capacity: u64,
    read_only: bool,
    /// The file dies with the VM (scratch, seed): flush has nothing to make durable.
    ephemeral: bool,
}

/// Size of an open file or block device.
pub fn file_size(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        use std::io::Seek;
        let mut f = file;
        return f.seek(std::io::SeekFrom::End(0));
    }
    Ok(meta.len())
}

/// Opens `path` read-only or read-write; only regular files and block devices qualify.
pub fn open_image(path: &Path, read_only: bool) -> Result<File, DiskError> {
    let meta = std::fs::metadata(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return Err(DiskError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl RawDisk {
    /// Opens the image at `path`.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let file = open_image(path, read_only)?;
        Self::from_file(file, read_only, false).map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Wraps an open file.
    pub fn from_file(file: File, read_only: bool, ephemeral: bool) -> std::io::Result<Self> {
        let capacity = file_size(&file)? / SECTOR_SIZE * SECTOR_SIZE;
        Ok(RawDisk {
            file: Arc::new(file),
            capacity,
            read_only,
            ephemeral,
        })
    }

    fn writable(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, len, self.capacity)
    }
}

impl DiskBackend for RawDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        read_file(&self.file, self.capacity, offset, bufs)
    }

    fn write(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        self.writable(offset, super::total_len(bufs))?;
        io::write_at(&self.file, offset, bufs).map_err(|source| DiskError::Write { offset, source })
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        if self.read_only || self.ephemeral {
            return Ok(());
        }
        self.file.sync_data().map_err(DiskError::Flush)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.writable(offset, len)?;
        io::zero_range(&self.file, offset, len)
            .map_err(|source| DiskError::Write { offset, source })
    }

    /// Punches a hole: discarded sectors read as zero.
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.write_zeroes(offset, len)
    }

    fn shared_reader(&self) -> Option<Arc<dyn SharedRead>> {
        Some(Arc::new(RawReader {
            file: self.file.clone(),
            capacity: self.capacity,
        }))
    }
}

fn read_file(
    file: &File,
    capacity: u64,
    offset: u64,
    bufs: &[VolatileSlice<'_>],
) -> Result<(), DiskError> {
    check_range(offset, super::total_len(bufs), capacity)?;
    io::read_at(file, offset, bufs).map_err(|source| DiskError::Read { offset, source })
}

/// Reads of a [`RawDisk`] from other threads (`pread` needs no lock).
struct RawReader {
    file: Arc<File>,
    capacity: u64,
}

impl SharedRead for RawReader {
    fn read(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        read_file(&self.file, self.capacity, offset, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(disk: &mut RawDisk, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        disk.read(offset, &[VolatileSlice::from(&mut buf[..])])
            .unwrap();
        buf
    }

    #[test]
    fn read_write_zero_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut content = vec![7u8; 4096 + 100];
        content[512] = 1;
        std::fs::write(&path, &content).unwrap();
        let mut disk = RawDisk::open(&path, false).unwrap();
        assert_eq!(
            disk.capacity(),
            4096,
            "partial trailing sector is not exposed"
        );
        assert_eq!(bytes(&mut disk, 512, 2), vec![1, 7]);
        let mut w = [9u8; 512];
        disk.write(1024, &[VolatileSlice::from(&mut w[..])])
            .unwrap();
        assert_eq!(bytes(&mut disk, 1024, 512), vec![9; 512]);
        disk.write_zeroes(1024, 512).unwrap();
        assert_eq!(bytes(&mut disk, 1024, 512), vec![0; 512]);
        disk.flush().unwrap();
        let mut buf = [0u8; 512];
        assert!(matches!(
            disk.read(4096, &[VolatileSlice::from(&mut buf[..])]),
            Err(DiskError::OutOfRange { .. })
        ));

        let mut ro = RawDisk::open(&path, true).unwrap();
        assert!(ro.read_only());
        assert!(matches!(
            ro.write(0, &[VolatileSlice::from(&mut w[..])]),
            Err(DiskError::ReadOnly)
        ));
        assert!(matches!(ro.write_zeroes(0, 512), Err(DiskError::ReadOnly)));
        assert!(matches!(ro.discard(0, 512), Err(DiskError::ReadOnly)));
    }

    #[test]
    fn rejects_directories_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            RawDisk::open(dir.path(), true),
            Err(DiskError::NotAFile { .. })
        ));
        assert!(matches!(
            RawDisk::open(&dir.path().join("nope"), true),
            Err(DiskError::Open { .. })
        ));
    }
}
