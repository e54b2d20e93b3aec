//! What a driver's descriptor chains may describe, checked before any byte moves.
//!
//! * a **transmit** chain is device-readable only: the 12-byte `virtio_net_hdr_v1` then the frame,
//!   split over descriptors any way the driver likes; its buffers are collected ([`tx_buffers`])
//!   and written to the tap straight from guest memory, or gathered into one host buffer
//!   ([`gather`]) when they are too many for one `writev`;
//! * a **receive** chain is device-writable only; its buffers are collected with their total
//!   capacity ([`rx_buffers`]) and filled later as one byte stream ([`scatter`]).
//!
//! Everything here is guest-controlled: a write-only descriptor in a transmit chain, a readable
//! one in a receive chain, buffers outside guest memory (or wrapping the address space), chains
//! with nothing in them or longer than a frame can be, are [`ChainError`]s, never panics.

use std::ops::Deref;

use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::{MAX_FRAME, VNET_HDR_LEN};

/// A chain the device cannot use (it goes back to the driver with length 0).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("a device-writable descriptor in a transmit chain")]
    WriteOnlyTx,
    #[error("a device-readable descriptor in a receive chain")]
    ReadableRx,
    #[error("a buffer at {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("{0} bytes is shorter than the 12-byte virtio-net header")]
    Short(usize),
    #[error("more than {MAX_FRAME} bytes")]
    TooLong,
    #[error("a receive chain with no room")]
    Empty,
}

fn in_memory<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    len: u32,
    p: Permissions,
) -> bool {
    addr.0.checked_add(u64::from(len)).is_some() && mem.check_range(addr, len as usize, p)
}

/// The readable buffers of one transmit chain: the header then the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxChain {
    pub buffers: Vec<(GuestAddress, u32)>,
    /// Total bytes (header included), at most [`MAX_FRAME`].
    pub len: usize,
}

/// Collects and checks a transmit chain's buffers (nothing is copied).
pub fn tx_buffers<M>(chain: DescriptorChain<M>) -> Result<TxChain, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut buffers = Vec::new();
    let mut len = 0usize;
    for desc in chain.clone() {
        if desc.is_write_only() {
            return Err(ChainError::WriteOnlyTx);
        }
        if desc.len() == 0 {
            continue;
        }
        len = len
            .checked_add(desc.len() as usize)
            .filter(|e| *e <= MAX_FRAME)
            .ok_or(ChainError::TooLong)?;
        if !in_memory(mem, desc.addr(), desc.len(), Permissions::Read) {
            return Err(ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
        buffers.push((desc.addr(), desc.len()));
    }
    if len < VNET_HDR_LEN {
        return Err(ChainError::Short(len));
    }
    Ok(TxChain { buffers, len })
}

/// Copies a checked transmit chain into `buf` (at least `chain.len` bytes); returns how many
/// bytes it copied (fewer only if guest memory went away).
pub fn gather<M: GuestMemory + ?Sized>(mem: &M, chain: &TxChain, buf: &mut [u8]) -> usize {
    let mut at = 0;
    for &(addr, len) in &chain.buffers {
        let end = at + len as usize;
        if end > buf.len() || mem.read_slice(&mut buf[at..end], addr).is_err() {
            break;
        }
        at = end;
    }
    at
}

/// The writable buffers of one receive chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxChain {
    pub head: u16,
    pub buffers: Vec<(GuestAddress, u32)>,
    /// Total bytes (at most [`MAX_FRAME`] counted: a frame never needs more).
    pub capacity: usize,
}

/// Collects a receive chain's buffers.
pub fn rx_buffers<M>(chain: DescriptorChain<M>) -> Result<RxChain, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let head = chain.head_index();
    let mut buffers = Vec::new();
    let mut capacity = 0usize;
    for desc in chain.clone() {
        if !desc.is_write_only() {
            return Err(ChainError::ReadableRx);
        }
        if desc.len() == 0 {
            continue;
        }
        if !in_memory(mem, desc.addr(), desc.len(), Permissions::Write) {
            return Err(ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
        if capacity < MAX_FRAME {
            buffers.push((desc.addr(), desc.len()));
            capacity = capacity.saturating_add(desc.len() as usize).min(MAX_FRAME);
        }
    }
    if capacity == 0 {
        return Err(ChainError::Empty);
    }
    Ok(RxChain {
        head,
        buffers,
        capacity,
    })
}

/// Writes the front of `bytes` into `chain`'s buffers; returns how many bytes it took.
pub fn scatter<M: GuestMemory + ?Sized>(mem: &M, chain: &RxChain, bytes: &[u8]) -> usize {
    let mut at = 0;
    for &(addr, len) in &chain.buffers {
        if at == bytes.len() {
            break;
        }
        let n = (len as usize).min(bytes.len() - at);
        // Checked by `rx_buffers`; a failure here (memory gone) leaves the rest unwritten.
        if mem.write_slice(&bytes[at..at + n], addr).is_err() {
            break;
        }
        at += n;
    }
    at
}
