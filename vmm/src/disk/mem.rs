//! A disk held in memory, for unit tests and the fuzz targets (the VMM itself always uses files).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use vm_memory::VolatileSlice;

use super::{DiskBackend, DiskError, SharedRead, check_range};

/// A byte vector as a disk; its reads can also be served from other threads.
#[derive(Debug, Clone)]
pub struct MemDisk {
    data: Arc<RwLock<Vec<u8>>>,
    read_only: bool,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl MemDisk {
    /// `data.len()` must be a multiple of 512.
    pub fn new(data: Vec<u8>, read_only: bool) -> Self {
        MemDisk {
            data: Arc::new(RwLock::new(data)),
            read_only,
            flushes: 0,
        }
    }

    /// A copy of the disk's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        read_lock(&self.data).clone()
    }

    fn writable(&self, offset: u64, len: u64) -> Result<RwLockWriteGuard<'_, Vec<u8>>, DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(offset, len, data.len() as u64)?;
        Ok(data)
    }
}

fn read_lock(data: &RwLock<Vec<u8>>) -> RwLockReadGuard<'_, Vec<u8>> {
    data.read().unwrap_or_else(|p| p.into_inner())
}

impl SharedRead for RwLock<Vec<u8>> {
    fn read(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let data = read_lock(self);
        check_range(offset, super::total_len(bufs), data.len() as u64)?;
        let mut at = offset as usize;
        for b in bufs {
            b.copy_from(&data[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }
}

impl DiskBackend for MemDisk {
    fn capacity(&self) -> u64 {
        read_lock(&self.data).len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        SharedRead::read(&*self.data, offset, bufs)
    }

    fn write(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let mut data = self.writable(offset, super::total_len(bufs))?;
        let mut at = offset as usize;
        for b in bufs {
            at += b.copy_to(&mut data[at..at + b.len()]);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.flushes += 1;
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        let mut data = self.writable(offset, len)?;
        data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.write_zeroes(offset, len)
    }

    fn shared_reader(&self) -> Option<Arc<dyn SharedRead>> {
        Some(self.data.clone())
    }
}
