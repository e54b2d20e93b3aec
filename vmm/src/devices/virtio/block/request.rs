//! Parsing one virtio-blk request from a descriptor chain.
//!
//! Layout (any framing: the driver may split or merge buffers freely): a 16-byte header
//! `{type: u32, reserved: u32, sector: u64}` in the readable part, then the data (readable for
//! OUT/DISCARD/WRITE_ZEROES, writable for IN/GET_ID), then a one-byte status as the very last
//! writable byte. Readable descriptors must come before writable ones.
//!
//! Everything here is guest-controlled. The chain walk itself (`virtio_queue::DescriptorChain`)
//! bounds loops and indirect tables and stops at descriptors outside the table; this module checks
//! the rest: that a status byte exists and lies in guest memory, the header length, data lengths
//! (whole sectors), the sector range against the capacity (no overflow), that every data buffer
//! lies in guest memory, and discard/write-zeroes segments. Nothing here touches the disk.

use std::ops::Deref;

use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::{ID_BYTES, MAX_DISCARD_SECTORS, status, types};
use crate::disk::SECTOR_SIZE;

/// Size of `virtio_blk_outhdr`.
pub const HEADER_SIZE: usize = 16;
/// Size of one discard / write-zeroes segment.
pub const SEGMENT_SIZE: usize = 16;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
}

/// One discard / write-zeroes range, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// A well-formed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    /// Byte offset on the disk (`sector * 512`).
    pub offset: u64,
    /// Data buffers in guest memory, in order (all checked to lie in guest memory).
    pub data: Vec<(GuestAddress, u32)>,
    /// Total bytes of `data`.
    pub data_len: u64,
    /// Ranges of a discard / write-zeroes request.
    pub segments: Vec<Segment>,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a request the disk can serve.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the chain has no writable status byte in guest memory")]
    NoStatus,
    #[error("a readable descriptor follows a writable one")]
    ReadableAfterWritable,
    #[error("the header is {0} bytes, not 16")]
    ShortHeader(usize),
    #[error("cannot read the request from guest memory at {0:#x}")]
    Unreadable(u64),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("data of {0} bytes is not a whole number of sectors")]
    PartialSector(u64),
    #[error("sectors {sector}+{sectors} are beyond the capacity of {capacity} sectors")]
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("a data buffer at {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("{0} bytes of discard/write-zeroes segments (one 16-byte segment expected)")]
    Segments(u64),
    #[error("unsupported discard/write-zeroes flags {0:#x}")]
    SegmentFlags(u32),
}

impl RequestError {
    /// The status the guest gets for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::SegmentFlags(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// A chain the device rejects: answer `error.status()` at `status` if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub status: Option<GuestAddress>,
    pub error: RequestError,
}

/// A byte range of guest memory described by descriptors.
#[derive(Clone, Copy, Debug)]
struct Piece {
    addr: GuestAddress,
    len: u32,
}

/// Cuts the first `n` bytes off `pieces`; returns them.
fn take(pieces: &mut Vec<Piece>, mut n: usize) -> Vec<Piece> {
    let mut out = Vec::new();
    while n > 0 && !pieces.is_empty() {
        let p = pieces[0];
        if (p.len as usize) <= n {
            n -= p.len as usize;
            out.push(p);
            pieces.remove(0);
        } else {
            out.push(Piece {
                addr: p.addr,
                len: n as u32,
            });
            pieces[0] = Piece {
                // May wrap for a hostile address; every use checks the range in guest memory.
                addr: GuestAddress(p.addr.raw_value().wrapping_add(n as u64)),
                len: p.len - n as u32,
            };
            n = 0;
        }
    }
    out
}

/// Reads exactly `buf.len()` bytes from `pieces` (consuming them).
fn read_bytes<M: GuestMemory + ?Sized>(
    mem: &M,
    pieces: &mut Vec<Piece>,
    buf: &mut [u8],
) -> Result<(), RequestError> {
    let got = take(pieces, buf.len());
    let total: usize = got.iter().map(|p| p.len as usize).sum();
    if total < buf.len() {
        return Err(RequestError::ShortHeader(total));
    }
    let mut at = 0;
    for p in got {
        let len = p.len as usize;
        mem.read_slice(&mut buf[at..at + len], p.addr)
            .map_err(|_| RequestError::Unreadable(p.addr.raw_value()))?;
        at += len;
    }
    Ok(())
}

fn in_memory<M: GuestMemory + ?Sized>(mem: &M, p: &Piece, access: Permissions) -> bool {
    p.addr.checked_add(u64::from(p.len)).is_some()
        && mem.check_range(p.addr, p.len as usize, access)
}

impl Request {
    /// Parses the chain of one request for a disk of `capacity` bytes.
    pub fn parse<M>(chain: DescriptorChain<M>, capacity: u64) -> Result<Request, Rejected>
    where
        M: Deref + Clone,
        M::Target: GuestMemory,
    {
        let mem = chain.memory();
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        let mut order_ok = true;
        for desc in chain.clone() {
            let piece = Piece {
                addr: desc.addr(),
                len: desc.len(),
            };
            if desc.is_write_only() {
                writable.push(piece);
            } else {
                order_ok &= writable.is_empty();
                readable.push(piece);
            }
        }
        // The status byte: the last byte of the last writable descriptor.
        let status = writable
            .iter()
            .rev()
            .find(|p| p.len > 0)
            .and_then(|p| p.addr.checked_add(u64::from(p.len) - 1))
            .map(|addr| Piece { addr, len: 1 })
            .filter(|p| in_memory(mem, p, Permissions::Write))
            .map(|p| p.addr);
        let Some(status_addr) = status else {
            return Err(Rejected {
                status: None,
                error: RequestError::NoStatus,
            });
        };
        let reject = |error| Rejected {
            status: Some(status_addr),
            error,
        };
        if !order_ok {
            return Err(reject(RequestError::ReadableAfterWritable));
        }
        // Drop the status byte (and the empty descriptors) from the writable pieces.
        while writable.last().is_some_and(|p| p.len == 0) {
            writable.pop();
        }
        if let Some(last) = writable.last_mut() {
            last.len -= 1;
            if last.len == 0 {
                writable.pop();
            }
        }
        let mut header = [0u8; HEADER_SIZE];
        read_bytes(mem, &mut readable, &mut header).map_err(reject)?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let kind = match kind {
            types::IN => RequestType::In,
            types::OUT => RequestType::Out,
            types::FLUSH => RequestType::Flush,
            types::GET_ID => RequestType::GetId,
            types::DISCARD => RequestType::Discard,
            types::WRITE_ZEROES => RequestType::WriteZeroes,
            other => return Err(reject(RequestError::Unsupported(other))),
        };
        let mut data = match kind {
            RequestType::In | RequestType::GetId => writable,
            RequestType::Out => readable,
            RequestType::Flush => Vec::new(),
            RequestType::Discard | RequestType::WriteZeroes => {
                let segments = parse_segments(mem, readable, capacity).map_err(reject)?;
                return Ok(Request {
                    kind,
                    offset: 0,
                    data: Vec::new(),
                    data_len: 0,
                    segments,
                    status: status_addr,
                });
            }
        };
        data.retain(|p| p.len > 0);
        let access = if kind == RequestType::Out {
            Permissions::Read
        } else {
            Permissions::Write
        };
        if let Some(p) = data.iter().find(|p| !in_memory(mem, p, access)) {
            return Err(reject(RequestError::OutsideMemory {
                addr: p.addr.raw_value(),
                len: p.len,
            }));
        }
        let data_len: u64 = data.iter().map(|p| u64::from(p.len)).sum();
        let mut offset = 0;
        if matches!(kind, RequestType::In | RequestType::Out) {
            if data_len % SECTOR_SIZE != 0 {
                return Err(reject(RequestError::PartialSector(data_len)));
            }
            offset = check_sectors(sector, data_len / SECTOR_SIZE, capacity).map_err(reject)?;
        }
        if kind == RequestType::GetId {
            // Only the serial's bytes are written.
            data = take(&mut data, ID_BYTES);
        }
        let data_len = data.iter().map(|p| u64::from(p.len)).sum();
        Ok(Request {
            kind,
            offset,
            data: data.iter().map(|p| (p.addr, p.len)).collect(),
            data_len,
            segments: Vec::new(),
            status: status_addr,
        })
    }
}

/// Byte offset of `sectors` sectors at `sector`, if they fit in `capacity` bytes.
fn check_sectors(sector: u64, sectors: u64, capacity: u64) -> Result<u64, RequestError> {
    let cap_sectors = capacity / SECTOR_SIZE;
    match sector.checked_add(sectors) {
        Some(end) if end <= cap_sectors => Ok(sector * SECTOR_SIZE),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity: cap_sectors,
        }),
    }
}

/// The single segment of a discard / write-zeroes request.
fn parse_segments<M: GuestMemory + ?Sized>(
    mem: &M,
    mut readable: Vec<Piece>,
    capacity: u64,
) -> Result<Vec<Segment>, RequestError> {
    let len: u64 = readable.iter().map(|p| u64::from(p.len)).sum();
    if len != SEGMENT_SIZE as u64 {
        return Err(RequestError::Segments(len));
    }
    let mut raw = [0u8; SEGMENT_SIZE];
    read_bytes(mem, &mut readable, &mut raw)?;
    let sector = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
    let sectors = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
    let flags = u32::from_le_bytes(raw[12..16].try_into().unwrap_or_default());
    // Bit 0 is `unmap` (write-zeroes may deallocate: we always may); others are reserved.
    if flags & !1 != 0 {
        return Err(RequestError::SegmentFlags(flags));
    }
    if sectors > MAX_DISCARD_SECTORS {
        return Err(RequestError::OutOfRange {
            sector,
            sectors: u64::from(sectors),
            capacity: capacity / SECTOR_SIZE,
        });
    }
    let offset = check_sectors(sector, u64::from(sectors), capacity)?;
    Ok(vec![Segment {
        offset,
        len: u64::from(sectors) * SECTOR_SIZE,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const CAP: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn header(m: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        m.write_slice(&h, GuestAddress(at)).unwrap();
    }

    fn parse(m: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Result<Request, Rejected> {
        let q = MockSplitQueue::new(m, 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .map(|&(a, l, f)| RawDescriptor::from(Descriptor::new(a, l, f, 0)))
            .collect();
        let chain = q.build_desc_chain(&raw).unwrap();
        Request::parse(chain, CAP)
    }

    #[test]
    fn read_request() {
        let m = mem();
        header(&m, 0x1000, types::IN, 3);
        let r = parse(&m, &[(0x1000, 16, 0), (0x2000, 1024, W), (0x3000, 1, W)]).unwrap();
        assert_eq!(r.kind, RequestType::In);
        assert_eq!(r.offset, 3 * 512);
        assert_eq!(r.data, vec![(GuestAddress(0x2000), 1024)]);
        assert_eq!(r.status, GuestAddress(0x3000));
    }

    #[test]
    fn any_layout_header_split_and_status_merged_with_data() {
        let m = mem();
        header(&m, 0x1000, types::IN, 1);
        // Header in two pieces; data and status share one descriptor.
        let r = parse(&m, &[(0x1000, 8, 0), (0x1008, 8, 0), (0x2000, 513, W)]).unwrap();
        assert_eq!(r.data, vec![(GuestAddress(0x2000), 512)]);
        assert_eq!(r.status, GuestAddress(0x2200));
        // Header and write data in one descriptor.
        header(&m, 0x4000, types::OUT, 0);
        let r = parse(&m, &[(0x4000, 16 + 512, 0), (0x3000, 1, W)]).unwrap();
        assert_eq!(
            (r.kind, r.data.clone()),
            (RequestType::Out, vec![(GuestAddress(0x4010), 512)])
        );
    }

    #[test]
    fn hostile_chains_are_rejected_with_the_right_status() {
        let m = mem();
        header(&m, 0x1000, types::IN, 0);
        let err = |descs: &[(u64, u32, u16)]| parse(&m, descs).unwrap_err();
        // No writable byte at all: nothing to answer.
        assert_eq!(err(&[(0x1000, 16, 0)]).status, None);
        // Status outside guest memory.
        assert_eq!(err(&[(0x1000, 16, 0), (0x20_0000, 1, W)]).status, None);
        // Short header.
        assert_eq!(
            err(&[(0x1000, 8, 0), (0x3000, 1, W)]).error,
            RequestError::ShortHeader(8)
        );
        // Header outside memory.
        assert!(matches!(
            err(&[(0xfff_0000, 16, 0), (0x3000, 1, W)]).error,
            RequestError::Unreadable(_)
        ));
        // Readable after writable.
        assert_eq!(
            err(&[
                (0x1000, 16, 0),
                (0x2000, 512, W),
                (0x1000, 16, 0),
                (0x3000, 1, W)
            ])
            .error,
            RequestError::ReadableAfterWritable
        );
        // Data beyond guest memory, or wrapping the address space.
        assert!(matches!(
            err(&[(0x1000, 16, 0), (0xff000, 0x2000, W), (0x3000, 1, W)]).error,
            RequestError::OutsideMemory { .. }
        ));
        assert!(matches!(
            err(&[
                (0x1000, 16, 0),
                (u64::MAX - 0x100, 0x200, W),
                (0x3000, 1, W)
            ])
            .error,
            RequestError::OutsideMemory { .. }
        ));
        // Partial sector.
        assert_eq!(
            err(&[(0x1000, 16, 0), (0x2000, 100, W), (0x3000, 1, W)]).error,
            RequestError::PartialSector(100)
        );
        // Beyond capacity, and sector arithmetic that would overflow.
        header(&m, 0x1000, types::IN, CAP / 512);
        assert!(matches!(
            err(&[(0x1000, 16, 0), (0x2000, 512, W), (0x3000, 1, W)]).error,
            RequestError::OutOfRange { .. }
        ));
        header(&m, 0x1000, types::IN, u64::MAX);
        let e = err(&[(0x1000, 16, 0), (0x2000, 512, W), (0x3000, 1, W)]);
        assert!(matches!(e.error, RequestError::OutOfRange { .. }));
        assert_eq!(e.error.status(), status::IOERR);
        // Unknown type.
        header(&m, 0x1000, 99, 0);
        let e = err(&[(0x1000, 16, 0), (0x3000, 1, W)]);
        assert_eq!(
            (e.error.clone(), e.error.status()),
            (RequestError::Unsupported(99), status::UNSUPP)
        );
    }

    #[test]
    fn get_id_flush_and_segments() {
        let m = mem();
        header(&m, 0x1000, types::GET_ID, 0);
        let r = parse(&m, &[(0x1000, 16, 0), (0x2000, 64, W), (0x3000, 1, W)]).unwrap();
        assert_eq!((r.kind, r.data_len), (RequestType::GetId, 20));
        header(&m, 0x1000, types::FLUSH, 0);
        let r = parse(&m, &[(0x1000, 16, 0), (0x3000, 1, W)]).unwrap();
        assert_eq!((r.kind, r.data_len), (RequestType::Flush, 0));

        header(&m, 0x1000, types::WRITE_ZEROES, 0);
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&8u64.to_le_bytes());
        seg[8..12].copy_from_slice(&16u32.to_le_bytes());
        seg[12..16].copy_from_slice(&1u32.to_le_bytes());
        m.write_slice(&seg, GuestAddress(0x5000)).unwrap();
        let r = parse(&m, &[(0x1000, 16, 0), (0x5000, 16, 0), (0x3000, 1, W)]).unwrap();
        assert_eq!(
            r.segments,
            vec![Segment {
                offset: 4096,
                len: 8192
            }]
        );
        seg[12..16].copy_from_slice(&2u32.to_le_bytes());
        m.write_slice(&seg, GuestAddress(0x5000)).unwrap();
        let e = parse(&m, &[(0x1000, 16, 0), (0x5000, 16, 0), (0x3000, 1, W)]).unwrap_err();
        assert_eq!(e.error.status(), status::UNSUPP);
        let e = parse(&m, &[(0x1000, 16, 0), (0x5000, 8, 0), (0x3000, 1, W)]).unwrap_err();
        assert_eq!(e.error, RequestError::Segments(8));
    }

    #[test]
    fn loops_end_at_the_queue_size() {
        let m = mem();
        header(&m, 0x1000, types::IN, 0);
        let q = MockSplitQueue::new(&m, 16);
        // Descriptor 0 -> 1 -> 0 -> ... (a loop); the walk stops after 16 descriptors.
        let d0 = Descriptor::new(0x1000, 16, VRING_DESC_F_NEXT as u16, 1);
        let d1 = Descriptor::new(
            0x2000,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            0,
        );
        q.desc_table().store(0, RawDescriptor::from(d0)).unwrap();
        q.desc_table().store(1, RawDescriptor::from(d1)).unwrap();
        q.avail().ring().ref_at(0).unwrap().store(0);
        q.avail().idx().store(1);
        let mut queue: virtio_queue::Queue = q.create_queue().unwrap();
        use virtio_queue::QueueT;
        let chain = queue.pop_descriptor_chain(&m).unwrap();
        let e = Request::parse(chain, CAP).unwrap_err();
        assert_eq!(e.error, RequestError::ReadableAfterWritable);
    }
}
