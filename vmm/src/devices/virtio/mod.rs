//! Virtio devices (virtio 1.x, modern only) over either transport: virtio-pci (the default: every
//! cloud kernel has the driver built in or in its initramfs) or virtio-mmio (found through the
//! DSDT's `LNRO0005` devices). Device code does not know which ([`Transport`]).
//!
//! * [`common::Core`] — what both transports share: device status state machine, feature
//!   negotiation, queue setup (validated at `DRIVER_OK`), activation and reset;
//! * [`mmio::MmioTransport`] — the virtio-mmio register window a vCPU thread reads and writes;
//! * [`pci::PciTransport`] — a PCI function whose BAR0 holds the common configuration, ISR,
//!   device configuration, notification area and MSI-X table;
//! * [`queue::QueueRegs`] — what the driver programmed for one virtqueue, turned into a
//!   `virtio_queue::Queue` at activation;
//! * [`interrupt::VirtioInterrupt`] — the interrupt status and how a signal is delivered (the
//!   mmio device's irqfd on an IOAPIC pin, or the MSI-X vector of the queue);
//! * [`block`] — virtio-blk on top of a [`crate::disk::DiskBackend`];
//! * [`net`] — virtio-net on top of a tap;
//! * `testing` (tests only: unit tests, and `vmm/tests` through the `testing` feature) — a
//!   driver-side ring writer for device tests.
//!
//! Queue notifications arrive on an EventFd registered as an ioeventfd (a guest write to
//! `QueueNotify` never leaves the kernel) and are served on the device event loop (block reads
//! are then copied by a small thread pool); interrupts go to the guest through an irqfd: an
//! IOAPIC pin (edge) for mmio, a GSI routed to the vector's MSI message for pci. Devices are
//! long-lived: each boot gets the new guest memory and a reset (`attach`).

pub mod block;
pub mod common;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod queue;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;

use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use interrupt::VirtioInterrupt;
use mmio::MmioTransport;
use pci::PciTransport;

/// Which transport the VM's virtio devices use (`corral vmm --transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// virtio-pci (modern) on a PCIe host bridge, MSI-X interrupts.
    #[default]
    Pci,
    /// virtio-mmio windows described in the DSDT, one IOAPIC pin each.
    Mmio,
}

impl TransportKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Pci => "pci",
            TransportKind::Mmio => "mmio",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pci" => Some(TransportKind::Pci),
            "mmio" => Some(TransportKind::Mmio),
            _ => None,
        }
    }
}

/// A device on its transport.
#[derive(Clone, Debug)]
pub enum Transport {
    Mmio(Arc<MmioTransport>),
    Pci(Arc<PciTransport>),
}

impl Transport {
    /// Puts `device` (with its interrupt and queue-notify EventFd) on a `kind` transport.
    pub fn new(
        kind: TransportKind,
        device: Arc<dyn VirtioDevice>,
        interrupt: Arc<VirtioInterrupt>,
        notify: EventFd,
    ) -> std::io::Result<Self> {
        Ok(match kind {
            TransportKind::Mmio => {
                Transport::Mmio(Arc::new(MmioTransport::new(device, interrupt, notify)))
            }
            TransportKind::Pci => {
                Transport::Pci(Arc::new(PciTransport::new(device, interrupt, notify)?))
            }
        })
    }
}

/// A new device before it has a transport: what the transport needs, and the event-loop
/// handler that serves its queues.
pub struct DeviceParts<H> {
    pub device: Arc<dyn VirtioDevice>,
    pub interrupt: Arc<VirtioInterrupt>,
    pub notify: EventFd,
    pub handler: H,
}

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Feature bits every device of ours offers or understands.
pub mod features {
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.x ("modern") device; legacy drivers are refused.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Why a device could not start.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ActivateError {
    #[error("queue {0}: {1}")]
    Queue(u16, queue::QueueError),
    #[error("no guest memory attached")]
    NoMemory,
    #[error("the device is already active")]
    AlreadyActive,
}

/// What a device type adds to the transport.
pub trait VirtioDevice: Send + Sync {
    /// Virtio device id (2 = block).
    fn device_type(&self) -> u32;
    /// Largest size of each queue (the number of queues is the length).
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Reads the device config space (`offset` from its start); bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device config space (ignored unless the device has writable fields).
    fn write_config(&self, _offset: u64, _data: &[u8]) {}
    /// Starts serving `queues` (all ready, validated) in `mem` with the negotiated features.
    fn activate(
        &self,
        mem: GuestMemoryMmap,
        queues: Vec<virtio_queue::Queue>,
        features: u64,
    ) -> Result<(), ActivateError>;
    /// Stops using the queues and guest memory (returns once no request is in flight).
    fn reset(&self);
    /// The device hit a broken ring and stopped; the transport reports `NEEDS_RESET`.
    fn needs_reset(&self) -> bool {
        false
    }
}

/// Copies `data.len()` bytes of a device's config space from `offset`; bytes past its end read
/// as 0 (a guest may read any offset).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}
