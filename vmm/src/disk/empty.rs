//! Scratch disks (`emptyDisk`): a sparse, unnamed file of the given capacity in the scratch
//! directory. It reads as zeroes until written, costs no space until then, and the kernel frees
//! it when the VMM exits.

use std::path::Path;

use super::raw::RawDisk;
use super::{DiskError, SECTOR_SIZE};

/// Creates a scratch disk of `capacity` bytes (rounded up to whole sectors).
pub fn create(scratch_dir: &Path, capacity: u64) -> Result<RawDisk, DiskError> {
    let err = |source| DiskError::Scratch {
        dir: scratch_dir.to_path_buf(),
        source,
    };
    let file = tempfile::tempfile_in(scratch_dir).map_err(err)?;
    file.set_len(capacity.div_ceil(SECTOR_SIZE) * SECTOR_SIZE)
        .map_err(err)?;
    RawDisk::from_file(file, false, true).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskBackend;
    use vm_memory::VolatileSlice;

    #[test]
    fn sparse_unnamed_and_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = create(dir.path(), 10 << 30).unwrap();
        assert_eq!(disk.capacity(), 10 << 30);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        let mut buf = [0xffu8; 512];
        disk.read((10 << 30) - 512, &[VolatileSlice::from(&mut buf[..])])
            .unwrap();
        assert_eq!(buf, [0; 512]);
        assert_eq!(create(dir.path(), 1000).unwrap().capacity(), 1024);
    }
}
