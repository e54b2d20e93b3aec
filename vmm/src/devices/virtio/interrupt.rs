//! The interrupt line of one virtio-mmio device: the `InterruptStatus` register and the irqfd
//! (an EventFd KVM turns into an edge on the device's IOAPIC pin).
//!
//! Every signal sets its status bit *and* writes the EventFd: nothing is deduplicated on the
//! status bit, so an interrupt raised while the guest is still acknowledging the previous one
//! gives a new edge instead of being lost (the trap vm-superio's UART sets for its IIR).
//!
//! Deduplicating ("raise only when a bit goes clear→set", as QEMU's truly level-triggered line
//! can) was tried and reverted: the irqfd makes an *edge*, and an edge that meets a masked IOAPIC
//! pin (early boot, a driver rebinding) is gone while the status bit stays set; every later
//! signal was then swallowed and the guest waited forever (nested `boot` scenario, 2026-12-05).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// `InterruptStatus` bit: a queue's used ring changed.
pub const USED_BUFFER: u32 = 1;
/// `InterruptStatus` bit: the config space changed (or the device needs a reset).
pub const CONFIG_CHANGE: u32 = 2;

/// Interrupt status plus the irqfd.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq: EventFd,
}

impl VirtioInterrupt {
    pub fn new() -> io::Result<Self> {
        Ok(VirtioInterrupt {
            status: AtomicU32::new(0),
            irq: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// The EventFd to register as irqfd.
    pub fn irq_fd(&self) -> &EventFd {
        &self.irq
    }

    /// Sets `bits` in the status and raises the line.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::AcqRel);
        if let Err(e) = self.irq.write(1) {
            tracing::warn!("virtio interrupt: {e}");
        }
    }

    /// `InterruptStatus`.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// `InterruptACK`: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Clears everything (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_raises_the_line() {
        let i = VirtioInterrupt::new().unwrap();
        i.signal(USED_BUFFER);
        i.signal(USED_BUFFER);
        assert_eq!(i.irq_fd().read().unwrap(), 2, "no dedupe on the status bit");
        assert_eq!(i.status(), USED_BUFFER);
        i.signal(CONFIG_CHANGE);
        i.ack(USED_BUFFER);
        assert_eq!(i.status(), CONFIG_CHANGE);
        i.reset();
        assert_eq!(i.status(), 0);
    }
}
