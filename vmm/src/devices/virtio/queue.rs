//! What the driver programmed for one virtqueue through the transport registers, and its
//! validation when the driver sets `DRIVER_OK`.
//!
//! The registers are kept raw (the driver may write them in any order, 32 bits at a time); only
//! [`QueueRegs::build`] checks them — size a power of two within the maximum, ring alignment
//! (16/2/4 bytes), every ring wholly inside guest memory — and produces the
//! `virtio_queue::Queue` the device then uses.

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Why a ready queue cannot be used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("size {size} is not a power of two in 1..={max}")]
    Size { size: u16, max: u16 },
    #[error("{ring} at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        ring: &'static str,
        addr: u64,
        align: u64,
    },
    #[error("the available ring cannot be at guest address 0")]
    AvailAtZero,
    #[error("{ring} at {addr:#x} (+{len:#x}) is outside guest memory")]
    OutsideMemory {
        ring: &'static str,
        addr: u64,
        len: u64,
    },
}

/// One queue's registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueRegs {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// Replaces the low or high 32 bits of `reg`.
pub fn set_half(reg: &mut u64, high: bool, value: u32) {
    *reg = if high {
        (*reg & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (*reg & !0xffff_ffff) | u64::from(value)
    };
}

/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver asks for no interrupts (without `RING_EVENT_IDX`).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the driver wants an interrupt for the chains used since the last check: its
/// `used_event` with `RING_EVENT_IDX` (`Queue::needs_notification`), else the available ring's
/// `NO_INTERRUPT` flag, which `virtio-queue` does not read. Linux sets that flag while its NAPI
/// poll is draining the ring; a device that signals every chain must honour it.
pub fn wants_interrupt(mem: &GuestMemoryMmap, q: &mut Queue) -> Result<bool, virtio_queue::Error> {
    if !q.event_idx_enabled() {
        // Order the used-ring writes before reading the driver's flag (as `needs_notification`).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // An unreadable flag (the ring was checked at activation) counts as "interrupt".
        if let Ok(flags) = mem.read_obj::<u16>(GuestAddress(q.avail_ring())) {
            if u16::from_le(flags) & AVAIL_F_NO_INTERRUPT != 0 {
                return Ok(false);
            }
        }
    }
    q.needs_notification(mem)
}

impl QueueRegs {
    /// Reset state: not ready, size = maximum, addresses 0.
    pub fn new(max_size: u16) -> Self {
        QueueRegs {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }

    /// A queue the driver did not make ready (the device never touches it).
    pub fn idle(&self) -> Result<Queue, QueueError> {
        Queue::new(self.max_size).map_err(|_| QueueError::Size {
            size: self.max_size,
            max: self.max_size,
        })
    }

    /// Checks the registers against `mem` and builds the queue.
    pub fn build(&self, mem: &GuestMemoryMmap, event_idx: bool) -> Result<Queue, QueueError> {
        let size = self.size;
        if size == 0 || size > self.max_size || !size.is_power_of_two() {
            return Err(QueueError::Size {
                size,
                max: self.max_size,
            });
        }
        let n = u64::from(size);
        for (ring, addr, align, len) in [
            ("descriptor table", self.desc, 16, 16 * n),
            ("available ring", self.avail, 2, 6 + 2 * n),
            ("used ring", self.used, 4, 6 + 8 * n),
        ] {
            if addr % align != 0 {
                return Err(QueueError::Misaligned { ring, addr, align });
            }
            if !mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite) {
                return Err(QueueError::OutsideMemory { ring, addr, len });
            }
        }
        // virtio-queue treats an available ring at 0 as "not set up" and never walks it.
        if self.avail == 0 {
            return Err(QueueError::AvailAtZero);
        }
        // The checks above are stricter than Queue's own, so these cannot fail; map anyway.
        let size_err = |_| QueueError::Size {
            size,
            max: self.max_size,
        };
        let mut q = Queue::new(self.max_size).map_err(size_err)?;
        q.try_set_size(size).map_err(size_err)?;
        let misaligned = |ring, addr, align| move |_| QueueError::Misaligned { ring, addr, align };
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(misaligned("descriptor table", self.desc, 16))?;
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .map_err(misaligned("available ring", self.avail, 2))?;
        q.try_set_used_ring_address(GuestAddress(self.used))
            .map_err(misaligned("used ring", self.used, 4))?;
        q.set_event_idx(event_idx);
        q.set_ready(true);
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn regs() -> QueueRegs {
        QueueRegs {
            size: 256,
            ready: true,
            desc: 0x1000,
            avail: 0x2000,
            used: 0x3000,
            ..QueueRegs::new(256)
        }
    }

    /// Without `RING_EVENT_IDX` the available ring's `NO_INTERRUPT` flag decides; with it,
    /// `used_event` does (and the flag is ignored, as the spec says).
    #[test]
    fn interrupts_follow_the_drivers_suppression() {
        let mem = mem();
        let mut plain = regs().build(&mem, false).unwrap();
        plain.add_used(&mem, 0, 0).unwrap();
        assert!(wants_interrupt(&mem, &mut plain).unwrap());
        mem.write_obj(AVAIL_F_NO_INTERRUPT, GuestAddress(0x2000))
            .unwrap();
        plain.add_used(&mem, 1, 0).unwrap();
        assert!(!wants_interrupt(&mem, &mut plain).unwrap());

        let mut event = regs().build(&mem, true).unwrap();
        // used_event (after the 256 ring entries) = 1: an interrupt when used entry 1 is
        // written, not before, not after; the NO_INTERRUPT flag still set is ignored.
        mem.write_obj(1u16, GuestAddress(0x2000 + 4 + 2 * 256))
            .unwrap();
        event.add_used(&mem, 0, 0).unwrap();
        assert!(!wants_interrupt(&mem, &mut event).unwrap(), "not yet");
        event.add_used(&mem, 1, 0).unwrap();
        assert!(
            wants_interrupt(&mem, &mut event).unwrap(),
            "used_event crossed"
        );
        event.add_used(&mem, 2, 0).unwrap();
        assert!(!wants_interrupt(&mem, &mut event).unwrap(), "not again");
    }

    #[test]
    fn valid_queue_builds() {
        let q = regs().build(&mem(), true).unwrap();
        assert_eq!(
            (q.size(), q.ready(), q.event_idx_enabled()),
            (256, true, true)
        );
        assert_eq!(
            (q.desc_table(), q.avail_ring(), q.used_ring()),
            (0x1000, 0x2000, 0x3000)
        );
    }

    #[test]
    fn bad_registers_are_refused() {
        let m = mem();
        for (regs, want) in [
            (QueueRegs { size: 0, ..regs() }, "size 0"),
            (
                QueueRegs {
                    size: 100,
                    ..regs()
                },
                "size 100",
            ),
            (
                QueueRegs {
                    size: 512,
                    ..regs()
                },
                "size 512",
            ),
            (
                QueueRegs {
                    desc: 0x1008,
                    ..regs()
                },
                "descriptor table at 0x1008 is not 16",
            ),
            (
                QueueRegs {
                    avail: 0x2001,
                    ..regs()
                },
                "available ring at 0x2001",
            ),
            (
                QueueRegs {
                    used: 0x3002,
                    ..regs()
                },
                "used ring at 0x3002",
            ),
            (
                QueueRegs {
                    used: (1 << 20) - 16,
                    ..regs()
                },
                "outside guest memory",
            ),
            (
                QueueRegs {
                    desc: u64::MAX - 15,
                    ..regs()
                },
                "outside guest memory",
            ),
        ] {
            let e = regs.build(&m, false).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn halves() {
        let mut r = 0u64;
        set_half(&mut r, true, 1);
        set_half(&mut r, false, 0xdead_beef);
        assert_eq!(r, 0x1_dead_beef);
    }
}
