//! virtio-blk (virtio 1.2 §5.2): one request queue served on the device event loop.
//!
//! * [`request`] — parses a descriptor chain into a [`request::Request`], checking everything a
//!   hostile driver controls (framing, lengths, sector ranges, guest addresses);
//! * [`handler`] — pops chains, executes them against the [`crate::disk::DiskBackend`], fills
//!   the used ring and raises the interrupt (with `RING_EVENT_IDX` suppression);
//! * [`pool`] — [`READ_THREADS`] threads per disk serving reads in parallel;
//! * [`device`] — the [`super::VirtioDevice`] side: features, config space, activation/reset.
//!
//! Requests are parsed on the device event loop; reads are copied by [`READ_THREADS`] threads per
//! disk in parallel, everything else runs on the event loop once the reads in flight finished.
//!
//! Offered features: VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC, SEG_MAX, BLK_SIZE, FLUSH,
//! and RO for read-only disks or DISCARD + WRITE_ZEROES for writable ones. `GET_ID` returns the
//! disk's serial. Requests a disk cannot serve end with `VIRTIO_BLK_S_IOERR` (bad range, write to
//! a read-only disk, host I/O error) or `VIRTIO_BLK_S_UNSUPP` (unknown type); a chain the device
//! cannot even answer (no writable status byte) is returned with length 0; a broken ring stops
//! the device and the transport reports `NEEDS_RESET`.

pub mod device;
pub mod handler;
pub mod pool;
pub mod request;

pub use device::{Block, BlockError};

/// Largest queue (descriptors).
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments per request (`seg_max`): the queue size minus header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes of the `GET_ID` answer.
pub const ID_BYTES: usize = 20;
/// Threads serving each disk's reads in parallel.
pub const READ_THREADS: usize = 2;
/// Most sectors per discard / write-zeroes segment (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;

/// Request types (`virtio_blk_outhdr.type`).
pub mod types {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
    pub const DISCARD: u32 = 11;
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status byte values.
pub mod status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// virtio-blk feature bits.
pub mod features {
    pub const SEG_MAX: u64 = 1 << 2;
    pub const RO: u64 = 1 << 5;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
    pub const DISCARD: u64 = 1 << 13;
    pub const WRITE_ZEROES: u64 = 1 << 14;
}
