//! A disk held in memory, for unit tests and the fuzz target (the VMM itself always uses files).

use vm_memory::VolatileSlice;

use super::{DiskBackend, DiskError, check_range};

/// A byte vector as a disk.
#[derive(Debug, Clone)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub read_only: bool,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl MemDisk {
    /// `data.len()` must be a multiple of 512.
    pub fn new(data: Vec<u8>, read_only: bool) -> Self {
        MemDisk {
            data,
            read_only,
            flushes: 0,
        }
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, DiskError> {
        check_range(offset, len, self.data.len() as u64)?;
        Ok(offset as usize..(offset + len) as usize)
    }

    fn writable(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        self.range(offset, len)
    }
}

impl DiskBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let mut at = self.range(offset, super::total_len(bufs))?.start;
        for b in bufs {
            b.copy_from(&self.data[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let mut at = self.writable(offset, super::total_len(bufs))?.start;
        for b in bufs {
            at += b.copy_to(&mut self.data[at..at + b.len()]);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.flushes += 1;
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        let r = self.writable(offset, len)?;
        self.data[r].fill(0);
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.write_zeroes(offset, len)
    }
}
