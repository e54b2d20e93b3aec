//! Copy-on-write overlay over a shared read-only base image.
//!
//! The base is opened `O_RDONLY` and never written, so every VM of an image can share it. Writes go
//! to a private overlay file of the same size: sparse, unnamed (created in the scratch directory
//! with `O_TMPFILE`, or created and unlinked at once), so the kernel frees it when the VMM exits,
//! however it exits. A bitmap in memory records which 4 KiB clusters the overlay holds; reads of
//! the others come from the base. A write that covers part of a cluster not yet in the overlay
//! first copies that cluster from the base (read, merge, write); whole-cluster writes go straight
//! to the overlay. Nothing is copied at open: start cost does not depend on the base size.
//!
//! Reads may also run on other threads ([`DiskBackend::shared_reader`]): the bitmap is atomic and
//! the block device never runs them concurrently with a write.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::VolatileSlice;

use super::raw::{file_size, open_image};
use super::{
    DiskBackend, DiskError, SECTOR_SIZE, SharedRead, check_range, io, sub_slices, total_len,
};

/// Granularity of the copy-on-write bitmap.
pub const CLUSTER_SIZE: u64 = 4096;

/// One bit per cluster.
#[derive(Debug)]
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    /// All clear. The allocation is a zeroed one (calloc → fresh pages from the kernel), so even
    /// a terabyte disk costs nothing until written.
    fn new(bits: u64) -> Self {
        let mut words = std::mem::ManuallyDrop::new(vec![0u64; bits.div_ceil(64) as usize]);
        let (ptr, len, cap) = (words.as_mut_ptr(), words.len(), words.capacity());
        // SAFETY: AtomicU64 has the same size, alignment and bit validity as u64 (documented), so
        // the allocation of `len` zeroed u64s is `len` valid AtomicU64s; `words` is not dropped,
        // so the new Vec owns the allocation alone.
        Bitmap(unsafe { Vec::from_raw_parts(ptr.cast::<AtomicU64>(), len, cap) })
    }

    fn get(&self, bit: u64) -> bool {
        self.0[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
    }

    fn set(&self, bit: u64) {
        self.0[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
    }
}

/// The read side of an overlay, shared with reader threads.
#[derive(Debug)]
struct Files {
    base: File,
    overlay: File,
    capacity: u64,
    allocated: Bitmap,
}

/// A base image plus a private overlay.
#[derive(Debug)]
pub struct Overlay {
    files: Arc<Files>,
    /// Scratch space for one cluster (copy-on-write of partial writes).
    cluster: Vec<u8>,
}

impl Overlay {
    /// Opens `base` read-only and creates an unnamed sparse overlay in `scratch_dir`.
    pub fn open(base: &Path, scratch_dir: &Path) -> Result<Self, DiskError> {
        let base_file = open_image(base, true)?;
        let size = file_size(&base_file).map_err(|source| DiskError::Open {
            path: base.to_path_buf(),
            source,
        })?;
        let scratch = |source| DiskError::Scratch {
            dir: scratch_dir.to_path_buf(),
            source,
        };
        let overlay = tempfile::tempfile_in(scratch_dir).map_err(scratch)?;
        let capacity = size / SECTOR_SIZE * SECTOR_SIZE;
        overlay.set_len(capacity).map_err(scratch)?;
        Ok(Self::from_files(base_file, overlay, capacity))
    }

    /// Builds an overlay from open files (`overlay` must be at least `capacity` long and read as
    /// zero; its content is ignored until written).
    pub fn from_files(base: File, overlay: File, capacity: u64) -> Self {
        Overlay {
            files: Arc::new(Files {
                base,
                overlay,
                capacity,
                allocated: Bitmap::new(capacity.div_ceil(CLUSTER_SIZE)),
            }),
            cluster: vec![0; CLUSTER_SIZE as usize],
        }
    }

    /// Bytes `[start, end)` of cluster `c` (the last cluster may be short).
    fn bounds(&self, c: u64) -> (u64, u64) {
        self.files.bounds(c)
    }

    /// Number of clusters the overlay holds (for tests and diagnostics).
    pub fn allocated_clusters(&self) -> u64 {
        let words = &self.files.allocated.0;
        words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }

    fn mark(&mut self, start: u64, end: u64) {
        for c in start / CLUSTER_SIZE..end.div_ceil(CLUSTER_SIZE) {
            self.files.allocated.set(c);
        }
    }

    /// Copies cluster `c` from the base, lets `fill` change bytes `[from, to)` of it (offsets
    /// within the cluster), writes it to the overlay and marks it.
    fn copy_on_write(
        &mut self,
        c: u64,
        from: usize,
        to: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), DiskError> {
        let (start, end) = self.bounds(c);
        let len = (end - start) as usize;
        let mut buf = std::mem::take(&mut self.cluster);
        let result = (|| {
            io::read_at(
                &self.files.base,
                start,
                &[VolatileSlice::from(&mut buf[..len])],
            )
            .map_err(|source| DiskError::Read {
                offset: start,
                source,
            })?;
            fill(&mut buf[from..to]);
            io::write_at(
                &self.files.overlay,
                start,
                &[VolatileSlice::from(&mut buf[..len])],
            )
            .map_err(|source| DiskError::Write {
                offset: start,
                source,
            })
        })();
        self.cluster = buf;
        result?;
        self.files.allocated.set(c);
        Ok(())
    }

    /// Splits `[offset, end)` at cluster boundaries and calls `direct(start, end)` for runs that
    /// can be written to the overlay as they are (already allocated, or covering whole clusters)
    /// and `partial(cluster, start, end)` for pieces of unallocated clusters.
    fn for_each_piece(
        &mut self,
        offset: u64,
        end: u64,
        mut direct: impl FnMut(&mut Self, u64, u64) -> Result<(), DiskError>,
        mut partial: impl FnMut(&mut Self, u64, u64, u64) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        let goes_direct = |me: &Self, pos: u64| {
            let c = pos / CLUSTER_SIZE;
            let (_, ce) = me.bounds(c);
            me.files.allocated.get(c) || (pos % CLUSTER_SIZE == 0 && end >= ce)
        };
        let mut pos = offset;
        while pos < end {
            let c = pos / CLUSTER_SIZE;
            let piece_end = self.bounds(c).1.min(end);
            if goes_direct(self, pos) {
                let mut run_end = piece_end;
                while run_end < end && goes_direct(self, run_end) {
                    run_end = self.bounds(run_end / CLUSTER_SIZE).1.min(end);
                }
                direct(self, pos, run_end)?;
                self.mark(pos, run_end);
                pos = run_end;
            } else {
                partial(self, c, pos, piece_end)?;
                pos = piece_end;
            }
        }
        Ok(())
    }
}

impl Files {
    fn bounds(&self, c: u64) -> (u64, u64) {
        let start = c * CLUSTER_SIZE;
        (start, (start + CLUSTER_SIZE).min(self.capacity))
    }
}

impl SharedRead for Files {
    /// Splits the range into runs of clusters in the same place (base or overlay).
    fn read(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let len = total_len(bufs);
        check_range(offset, len, self.capacity)?;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let in_overlay = self.allocated.get(pos / CLUSTER_SIZE);
            let mut run_end = self.bounds(pos / CLUSTER_SIZE).1.min(end);
            while run_end < end && self.allocated.get(run_end / CLUSTER_SIZE) == in_overlay {
                run_end = self.bounds(run_end / CLUSTER_SIZE).1.min(end);
            }
            let file = if in_overlay {
                &self.overlay
            } else {
                &self.base
            };
            let parts = sub_slices(bufs, (pos - offset) as usize, (run_end - pos) as usize);
            io::read_at(file, pos, &parts).map_err(|source| DiskError::Read {
                offset: pos,
                source,
            })?;
            pos = run_end;
        }
        Ok(())
    }
}

impl DiskBackend for Overlay {
    fn capacity(&self) -> u64 {
        self.files.capacity
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        self.files.read(offset, bufs)
    }

    fn shared_reader(&self) -> Option<Arc<dyn SharedRead>> {
        Some(self.files.clone())
    }

    fn write(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<(), DiskError> {
        let len = total_len(bufs);
        check_range(offset, len, self.files.capacity)?;
        self.for_each_piece(
            offset,
            offset + len,
            |me, start, end| {
                let parts = sub_slices(bufs, (start - offset) as usize, (end - start) as usize);
                io::write_at(&me.files.overlay, start, &parts).map_err(|source| DiskError::Write {
                    offset: start,
                    source,
                })
            },
            |me, c, start, end| {
                let cs = c * CLUSTER_SIZE;
                let parts = sub_slices(bufs, (start - offset) as usize, (end - start) as usize);
                me.copy_on_write(c, (start - cs) as usize, (end - cs) as usize, |dst| {
                    let mut at = 0;
                    for p in &parts {
                        at += p.copy_to(&mut dst[at..]);
                    }
                })
            },
        )
    }

    /// The overlay dies with the VM: there is nothing to make durable.
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        check_range(offset, len, self.files.capacity)?;
        self.for_each_piece(
            offset,
            offset + len,
            |me, start, end| {
                io::zero_range(&me.files.overlay, start, end - start).map_err(|source| {
                    DiskError::Write {
                        offset: start,
                        source,
                    }
                })
            },
            |me, c, start, end| {
                let cs = c * CLUSTER_SIZE;
                me.copy_on_write(c, (start - cs) as usize, (end - cs) as usize, |dst| {
                    dst.fill(0);
                })
            },
        )
    }

    /// Discarded sectors read as zero (the same as write-zeroes: the base stays hidden).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A base of `len` bytes where byte i is (i * 7 + i / 4096) as u8.
    fn base_bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn setup(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Overlay) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.raw");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&base_bytes(len))
            .unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let ov = Overlay::open(&path, &scratch).unwrap();
        (dir, path, ov)
    }

    fn read(ov: &mut Overlay, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        // Two buffers to exercise splitting across slices.
        let (a, b) = buf.split_at_mut(len / 3);
        ov.read(offset, &[VolatileSlice::from(a), VolatileSlice::from(b)])
            .unwrap();
        buf
    }

    fn write(ov: &mut Overlay, offset: u64, data: &[u8]) {
        let mut data = data.to_vec();
        ov.write(offset, &[VolatileSlice::from(&mut data[..])])
            .unwrap();
    }

    #[test]
    fn reads_come_from_the_base_until_written() {
        let len = 5 * 4096 + 512; // last cluster is short
        let (dir, path, mut ov) = setup(len);
        let mut expect = base_bytes(len);
        assert_eq!(read(&mut ov, 0, len), expect);
        assert!(
            std::fs::read_dir(dir.path().join("scratch"))
                .unwrap()
                .next()
                .is_none(),
            "overlay is unnamed"
        );

        // Partial write inside cluster 1 (copy-on-write), whole cluster 3, the short last cluster.
        write(&mut ov, 4096 + 512, &[0xaa; 1024]);
        expect[4096 + 512..4096 + 1536].fill(0xaa);
        write(&mut ov, 3 * 4096, &[0xbb; 4096]);
        expect[3 * 4096..4 * 4096].fill(0xbb);
        write(&mut ov, 5 * 4096, &[0xcc; 512]);
        expect[5 * 4096..].fill(0xcc);
        // A write spanning an allocated and an unallocated cluster, unaligned at both ends.
        write(&mut ov, 2 * 4096 - 512, &[0xdd; 1024]);
        expect[2 * 4096 - 512..2 * 4096 + 512].fill(0xdd);
        assert_eq!(read(&mut ov, 0, len), expect);
        assert_eq!(
            read(&mut ov, 4096 + 500, 40),
            expect[4096 + 500..4096 + 540]
        );
        assert_eq!(ov.allocated_clusters(), 4); // clusters 1, 2, 3, 5

        ov.write_zeroes(512, 4096).unwrap();
        expect[512..4096 + 512].fill(0);
        ov.discard(3 * 4096, 4096).unwrap();
        expect[3 * 4096..4 * 4096].fill(0);
        assert_eq!(read(&mut ov, 0, len), expect);

        // The base never changes.
        assert_eq!(std::fs::read(&path).unwrap(), base_bytes(len));
        let mut buf = [0u8; 512];
        assert!(
            ov.read(len as u64, &[VolatileSlice::from(&mut buf[..])])
                .is_err()
        );
    }

    #[test]
    fn two_overlays_of_one_base_are_independent() {
        let (dir, path, mut a) = setup(8192);
        let mut b = Overlay::open(&path, &dir.path().join("scratch")).unwrap();
        write(&mut a, 0, &[1; 512]);
        assert_eq!(read(&mut a, 0, 512), vec![1; 512]);
        assert_eq!(read(&mut b, 0, 512), base_bytes(512));
    }
}
