//! The interrupt of one virtio device: the interrupt status (virtio-mmio `InterruptStatus`,
//! virtio-pci ISR) and how a signal reaches the guest — the device's one irqfd on an IOAPIC pin
//! (virtio-mmio), or the MSI-X vector the driver chose for the queue or for config changes
//! (virtio-pci, [`MsixVectors`]). Devices say *what* happened ([`VirtioInterrupt::signal_used`]
//! with the queues, [`VirtioInterrupt::signal_config`]); the transport decides how it is delivered.
//!
//! Every signal sets its status bit *and* raises the line: nothing is deduplicated on the
//! status bit, so an interrupt raised while the guest is still acknowledging the previous one
//! gives a new edge instead of being lost (the trap vm-superio's UART sets for its IIR).
//!
//! Deduplicating ("raise only when a bit goes clear→set", as QEMU's truly level-triggered line
//! can) was tried and reverted: the irqfd makes an *edge*, and an edge that meets a masked IOAPIC
//! pin (early boot, a driver rebinding) is gone while the status bit stays set; every later
//! signal was then swallowed and the guest waited forever (nested `boot` scenario, 2026-12-05).

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::pci::msix::MsixVectors;

/// `InterruptStatus` bit: a queue's used ring changed.
pub const USED_BUFFER: u32 = 1;
/// `InterruptStatus` bit: the config space changed (or the device needs a reset).
pub const CONFIG_CHANGE: u32 = 2;
/// `VIRTIO_MSI_NO_VECTOR`: the driver assigned no vector.
pub const NO_VECTOR: u16 = 0xffff;
/// Most queues a device can route to MSI-X vectors.
pub const MAX_QUEUES: usize = 8;

/// Interrupt status plus the irqfd or MSI-X vectors behind it.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq: EventFd,
    msix: OnceLock<Arc<MsixVectors>>,
    config_vector: AtomicU16,
    queue_vectors: [AtomicU16; MAX_QUEUES],
}

impl VirtioInterrupt {
    pub fn new() -> io::Result<Self> {
        Ok(VirtioInterrupt {
            status: AtomicU32::new(0),
            irq: EventFd::new(libc::EFD_NONBLOCK)?,
            msix: OnceLock::new(),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: std::array::from_fn(|_| AtomicU16::new(NO_VECTOR)),
        })
    }

    /// The EventFd to register as irqfd (virtio-mmio).
    pub fn irq_fd(&self) -> &EventFd {
        &self.irq
    }

    /// From now on signals go to `msix` vectors (the virtio-pci transport calls this once).
    pub fn use_msix(&self, msix: Arc<MsixVectors>) {
        let _ = self.msix.set(msix);
    }

    /// `queues` (bit `i` = queue `i`) have new used buffers.
    pub fn signal_used(&self, queues: u32) {
        self.status.fetch_or(USED_BUFFER, Ordering::AcqRel);
        match self.msix.get() {
            None => self.raise_line(),
            Some(msix) => {
                for (q, vector) in self.queue_vectors.iter().enumerate() {
                    if queues & (1 << q) != 0 {
                        msix.trigger(vector.load(Ordering::Acquire));
                    }
                }
            }
        }
    }

    /// The config space changed or the device needs a reset.
    pub fn signal_config(&self) {
        self.status.fetch_or(CONFIG_CHANGE, Ordering::AcqRel);
        match self.msix.get() {
            None => self.raise_line(),
            Some(msix) => msix.trigger(self.config_vector.load(Ordering::Acquire)),
        }
    }

    fn raise_line(&self) {
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

    /// The ISR read (virtio-pci): returns the status and clears it.
    pub fn take_status(&self) -> u32 {
        self.status.swap(0, Ordering::AcqRel)
    }

    /// The MSI-X vector of config changes.
    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::Acquire)
    }

    /// The driver's choice of config vector; a vector the table lacks reads back as NO_VECTOR.
    pub fn set_config_vector(&self, vector: u16) {
        self.config_vector
            .store(self.checked(vector), Ordering::Release);
    }

    /// The MSI-X vector of queue `q` (NO_VECTOR for a queue we cannot route).
    pub fn queue_vector(&self, q: usize) -> u16 {
        self.queue_vectors
            .get(q)
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    /// The driver's choice of vector for queue `q`.
    pub fn set_queue_vector(&self, q: usize, vector: u16) {
        if let Some(v) = self.queue_vectors.get(q) {
            v.store(self.checked(vector), Ordering::Release);
        }
    }

    fn checked(&self, vector: u16) -> u16 {
        match self.msix.get() {
            Some(m) if usize::from(vector) < m.len() => vector,
            _ => NO_VECTOR,
        }
    }

    /// Clears everything (device reset); vectors go back to NO_VECTOR.
    pub fn reset(&self) {
        self.status.store(0, Ordering::Release);
        self.config_vector.store(NO_VECTOR, Ordering::Release);
        for v in &self.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_raises_the_line() {
        let i = VirtioInterrupt::new().unwrap();
        i.signal_used(1);
        i.signal_used(1);
        assert_eq!(i.irq_fd().read().unwrap(), 2, "no dedupe on the status bit");
        assert_eq!(i.status(), USED_BUFFER);
        i.signal_config();
        i.ack(USED_BUFFER);
        assert_eq!(i.status(), CONFIG_CHANGE);
        assert_eq!(i.take_status(), CONFIG_CHANGE);
        assert_eq!(i.status(), 0);
        i.reset();
        assert_eq!(i.status(), 0);
    }

    #[test]
    fn without_msix_no_vector_can_be_chosen() {
        let i = VirtioInterrupt::new().unwrap();
        i.set_queue_vector(0, 1);
        i.set_config_vector(0);
        assert_eq!(i.queue_vector(0), NO_VECTOR);
        assert_eq!(i.config_vector(), NO_VECTOR);
        assert_eq!(i.queue_vector(MAX_QUEUES), NO_VECTOR);
    }
}
