//! Test helper: the driver's side of a split virtqueue, written into guest memory by hand.
//!
//! Built for this crate's unit tests and, with the `testing` feature, for its integration tests
//! (`vmm/tests`, which turn the feature on through the crate's dev-dependency on itself); never
//! part of a production build.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{RawDescriptor, split::Descriptor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::queue::QueueRegs;

/// Descriptor flag: the device writes this buffer.
pub const W: u16 = VRING_DESC_F_WRITE as u16;

/// One split virtqueue as a driver lays it out: a descriptor table, an available ring and a used
/// ring at fixed guest addresses. Chains take consecutive descriptor slots (wrapping at the
/// queue size).
#[derive(Debug)]
pub struct GuestRing {
    mem: GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    used_seen: u16,
}

impl GuestRing {
    /// A ring of `size` entries with its descriptor table, available and used rings at
    /// `(desc, avail, used)` in `mem` (which the device under test shares).
    pub fn new(mem: &GuestMemoryMmap, size: u16, (desc, avail, used): (u64, u64, u64)) -> Self {
        GuestRing {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            used_seen: 0,
        }
    }

    /// The transport registers for this ring (ready; maximum size 256).
    pub fn regs(&self) -> QueueRegs {
        QueueRegs {
            size: self.size,
            ready: true,
            desc: self.desc,
            avail: self.avail,
            used: self.used,
            ..QueueRegs::new(256)
        }
    }

    /// The head descriptor index the next [`push`](Self::push) uses.
    pub fn next_head(&self) -> u16 {
        self.next_desc
    }

    /// Writes one chain of `(addr, len, flags)` descriptors (`NEXT` and the links are added) and
    /// publishes its head in the available ring; returns the head. An empty chain publishes a
    /// head whose descriptor is left as it was.
    pub fn push(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let (flags, next) = if i == descs.len() - 1 {
                (flags, 0)
            } else {
                (flags | VRING_DESC_F_NEXT as u16, (idx + 1) % self.size)
            };
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(d, GuestAddress(self.desc + 16 * u64::from(idx)))
                .unwrap();
        }
        self.next_desc = (head + descs.len().max(1) as u16) % self.size;
        let idx: u16 = self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
        let slot = GuestAddress(self.avail + 4 + 2 * u64::from(idx % self.size));
        self.mem.write_obj(head, slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// Used ring entry `i` (counted from the start, modulo the size): (head, length).
    pub fn used_entry(&self, i: u16) -> (u32, u32) {
        let e = self.used + 4 + 8 * u64::from(i % self.size);
        (
            self.mem.read_obj(GuestAddress(e)).unwrap(),
            self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
        )
    }

    /// The used entries (head, length) the device added since the last call.
    pub fn used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            out.push(self.used_entry(self.used_seen));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_linked_published_and_wrap() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mut ring = GuestRing::new(&mem, 4, (0, 0x1000, 0x2000));
        assert_eq!(ring.push(&[(0x100, 1, 0)]), 0);
        assert_eq!(ring.push(&[(0x200, 2, 0), (0x300, 3, W), (0x400, 4, W)]), 1);
        assert_eq!(ring.next_head(), 0, "wrapped");
        let desc = |i: u64| -> RawDescriptor { mem.read_obj(GuestAddress(16 * i)).unwrap() };
        let d = Descriptor::from(desc(1));
        assert_eq!((d.addr().0, d.len(), d.next()), (0x200, 2, 2));
        assert!(d.has_next() && !d.is_write_only());
        let d = Descriptor::from(desc(3));
        assert_eq!((d.addr().0, d.len()), (0x400, 4));
        assert!(!d.has_next() && d.is_write_only());
        let avail = |off: u64| -> u16 { mem.read_obj(GuestAddress(0x1000 + off)).unwrap() };
        assert_eq!((avail(2), avail(4), avail(6)), (2, 0, 1));

        assert!(ring.used().is_empty());
        mem.write_obj(7u32, GuestAddress(0x2000 + 4)).unwrap();
        mem.write_obj(9u32, GuestAddress(0x2000 + 8)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x2000 + 2)).unwrap();
        assert_eq!(ring.used(), [(7, 9)]);
        assert!(ring.used().is_empty());
        assert_eq!(ring.used_entry(4), (7, 9), "modulo the size");
        let regs = ring.regs();
        assert_eq!((regs.size, regs.avail, regs.used), (4, 0x1000, 0x2000));
        assert!(regs.build(&mem, false).is_ok());
    }
}
