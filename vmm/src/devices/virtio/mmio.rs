//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): one 4 KiB register window per
//! device, served on the vCPU threads.
//!
//! The state machine (status, features, queues, activation) is [`Core`]'s, shared with the
//! virtio-pci transport; this file maps the registers onto it.
//!
//! Registers are 32-bit: other widths and unaligned offsets below the config space read as 0 and
//! writes to them are ignored. The config space (from 0x100) is the device's, any width.

use std::sync::Arc;

use virtio_bindings::virtio_mmio::*;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::VirtioDevice;
use super::common::Core;
use super::interrupt::VirtioInterrupt;
use super::queue::set_half;
use crate::devices::MmioDevice;

/// `MagicValue`: "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Transport version (modern).
pub const VERSION: u32 = 2;
/// `VendorID` we report ("CRRL").
pub const VENDOR_ID: u32 = 0x4c52_5243;
/// Size of each device's register window.
pub const WINDOW_SIZE: u64 = 0x1000;
/// Offset of `QueueNotify`, where the ioeventfd is registered.
pub const NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

/// One virtio device behind its MMIO register window.
#[derive(Debug)]
pub struct MmioTransport {
    core: Core,
}

impl MmioTransport {
    /// A transport for `device`; `notify` is the EventFd the device's handler waits on (queue
    /// notifications) and `interrupt` the line it raises.
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        interrupt: Arc<VirtioInterrupt>,
        notify: EventFd,
    ) -> Self {
        MmioTransport {
            core: Core::new(device, interrupt, notify),
        }
    }

    /// The queue-notify EventFd (register it as ioeventfd at `base + NOTIFY_OFFSET`).
    pub fn notify_fd(&self) -> &EventFd {
        &self.core.notify
    }

    /// The interrupt EventFd (register it as irqfd).
    pub fn irq_fd(&self) -> &EventFd {
        self.core.interrupt.irq_fd()
    }

    /// A new boot: reset the device and use `mem` from now on.
    pub fn attach(&self, mem: GuestMemoryMmap) {
        self.core.attach(mem);
    }

    /// Current device status (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.core.lock().status
    }

    fn read_register(&self, offset: u32) -> u32 {
        let mut s = self.core.lock();
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.core.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => self.core.device_features(&s),
            VIRTIO_MMIO_QUEUE_NUM_MAX => s.selected_queue().map_or(0, |q| q.max_size.into()),
            VIRTIO_MMIO_QUEUE_READY => s.selected_queue().map_or(0, |q| q.ready.into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.core.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.core.status(&s),
            // No shared memory regions: length all ones.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => s.config_generation,
            _ => 0,
        }
    }

    fn write_register(&self, offset: u32, value: u32) {
        let mut s = self.core.lock();
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => s.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => s.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => s.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => s.queue_sel = value,
            // Normally caught by the ioeventfd; a plain MMIO exit lands here.
            VIRTIO_MMIO_QUEUE_NOTIFY => self.core.kick(),
            VIRTIO_MMIO_INTERRUPT_ACK => self.core.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.core.set_status(&mut s, value),
            _ if s.queues_open() => {
                let Some(q) = s.selected_queue() else {
                    return;
                };
                match offset {
                    VIRTIO_MMIO_QUEUE_READY => q.ready = value == 1,
                    _ if q.ready => {} // a ready queue's registers are frozen
                    VIRTIO_MMIO_QUEUE_NUM => q.size = value as u16,
                    VIRTIO_MMIO_QUEUE_DESC_LOW => set_half(&mut q.desc, false, value),
                    VIRTIO_MMIO_QUEUE_DESC_HIGH => set_half(&mut q.desc, true, value),
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_half(&mut q.avail, false, value),
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_half(&mut q.avail, true, value),
                    VIRTIO_MMIO_QUEUE_USED_LOW => set_half(&mut q.used, false, value),
                    VIRTIO_MMIO_QUEUE_USED_HIGH => set_half(&mut q.used, true, value),
                    _ => {}
                }
            }
            _ => tracing::debug!("virtio-mmio: ignored write {value:#x} at {offset:#x}"),
        }
    }
}

impl MmioDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.core
                .device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let value = if data.len() == 4 && offset % 4 == 0 {
            self.read_register(offset as u32)
        } else {
            0
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.core
                .device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::interrupt::CONFIG_CHANGE;
    use crate::devices::virtio::{features, status};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use vm_memory::GuestAddress;

    /// A device that records activations and resets.
    #[derive(Default)]
    struct Probe {
        activations: AtomicU32,
        resets: AtomicU32,
        last_queue: Mutex<Option<(u16, u64, bool)>>,
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            2
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256]
        }
        fn features(&self) -> u64 {
            features::VERSION_1 | features::RING_EVENT_IDX | 1 << 9
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn activate(
            &self,
            _mem: GuestMemoryMmap,
            queues: Vec<virtio_queue::Queue>,
            _features: u64,
        ) -> Result<(), super::super::ActivateError> {
            use virtio_queue::QueueT;
            let q = &queues[0];
            *self.last_queue.lock().unwrap() =
                Some((q.size(), q.desc_table(), q.event_idx_enabled()));
            self.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn transport() -> (Arc<Probe>, MmioTransport) {
        let probe = Arc::new(Probe::default());
        let t = MmioTransport::new(
            probe.clone(),
            Arc::new(VirtioInterrupt::new().unwrap()),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        );
        t.attach(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        (probe, t)
    }

    fn r(t: &MmioTransport, off: u32) -> u32 {
        let mut b = [0u8; 4];
        t.read(u64::from(off), &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &MmioTransport, off: u32, v: u32) {
        t.write(u64::from(off), &v.to_le_bytes());
    }

    /// The Linux driver's sequence up to FEATURES_OK, then a queue at 0x1000/0x2000/0x3000.
    fn negotiate(t: &MmioTransport, driver_features: u64) {
        w(t, VIRTIO_MMIO_STATUS, 0);
        w(t, VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
        w(t, VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        w(t, VIRTIO_MMIO_DRIVER_FEATURES, driver_features as u32);
        w(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w(
            t,
            VIRTIO_MMIO_DRIVER_FEATURES,
            (driver_features >> 32) as u32,
        );
        w(
            t,
            VIRTIO_MMIO_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &MmioTransport, size: u32, desc: u64) {
        w(t, VIRTIO_MMIO_QUEUE_SEL, 0);
        w(t, VIRTIO_MMIO_QUEUE_NUM, size);
        w(t, VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
        w(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (desc >> 32) as u32);
        w(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        w(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        w(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }

    const GOOD: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

    #[test]
    fn identification_and_features() {
        let (_, t) = transport();
        assert_eq!(r(&t, VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(r(&t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(r(&t, VIRTIO_MMIO_DEVICE_ID), 2);
        assert_eq!(r(&t, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        w(&t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&t, VIRTIO_MMIO_DEVICE_FEATURES), 1);
        w(&t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&t, VIRTIO_MMIO_DEVICE_FEATURES), (1 << 29) | (1 << 9));
        w(&t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(&t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
        w(&t, VIRTIO_MMIO_QUEUE_SEL, 5);
        assert_eq!(r(&t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no such queue");
        // Narrow and unaligned register accesses read as zero.
        let mut two = [0xffu8; 2];
        t.read(0, &mut two);
        assert_eq!(two, [0, 0]);
        let mut b = [0u8; 4];
        t.read(2, &mut b);
        assert_eq!(b, [0; 4]);
        // Config space: any width, offset relative to 0x100.
        let mut c = [0u8; 3];
        t.read(0x104, &mut c);
        assert_eq!(c, [4, 5, 6]);
        assert_eq!(r(&t, VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    }

    #[test]
    fn full_negotiation_activates_with_the_programmed_queue() {
        let (probe, t) = transport();
        negotiate(&t, features::VERSION_1 | features::RING_EVENT_IDX);
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS), GOOD);
        setup_queue(&t, 128, 0x1000);
        assert_eq!(r(&t, VIRTIO_MMIO_QUEUE_READY), 1);
        w(&t, VIRTIO_MMIO_STATUS, GOOD | status::DRIVER_OK);
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS), GOOD | status::DRIVER_OK);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
        assert_eq!(*probe.last_queue.lock().unwrap(), Some((128, 0x1000, true)));
        assert_eq!(
            t.notify_fd().read().unwrap(),
            1,
            "kicked once at activation"
        );
        // After DRIVER_OK, queue registers and features are frozen.
        w(&t, VIRTIO_MMIO_QUEUE_NUM, 64);
        w(&t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
        // The fallback notify path (no ioeventfd).
        w(&t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_eq!(t.notify_fd().read().unwrap(), 1);
        // Reset.
        w(&t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(r(&t, VIRTIO_MMIO_QUEUE_READY), 0);
        assert!(probe.resets.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn features_we_do_not_offer_or_legacy_drivers_are_refused() {
        let (_, t) = transport();
        negotiate(&t, features::VERSION_1 | (1 << 5)); // RO is not offered by the probe
        assert_eq!(
            r(&t, VIRTIO_MMIO_STATUS),
            status::ACKNOWLEDGE | status::DRIVER
        );
        negotiate(&t, 1 << 9); // no VERSION_1
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS) & status::FEATURES_OK, 0);
        // DRIVER_OK without FEATURES_OK does not start the device.
        w(
            &t,
            VIRTIO_MMIO_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS) & status::DRIVER_OK, 0);
    }

    #[test]
    fn a_bad_queue_sets_needs_reset_instead_of_starting() {
        let (probe, t) = transport();
        negotiate(&t, features::VERSION_1);
        setup_queue(&t, 256, 0xf_fff0); // descriptor table runs past the end of memory
        w(&t, VIRTIO_MMIO_STATUS, GOOD | status::DRIVER_OK);
        let st = r(&t, VIRTIO_MMIO_STATUS);
        assert_ne!(st & status::NEEDS_RESET, 0);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);
        assert_eq!(r(&t, VIRTIO_MMIO_INTERRUPT_STATUS), CONFIG_CHANGE);
        w(&t, VIRTIO_MMIO_INTERRUPT_ACK, CONFIG_CHANGE);
        assert_eq!(r(&t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        // Size not a power of two.
        negotiate(&t, features::VERSION_1);
        setup_queue(&t, 100, 0x1000);
        w(&t, VIRTIO_MMIO_STATUS, GOOD | status::DRIVER_OK);
        assert_ne!(r(&t, VIRTIO_MMIO_STATUS) & status::NEEDS_RESET, 0);
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_reset() {
        let (_, t) = transport();
        negotiate(&t, features::VERSION_1);
        w(&t, VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
        assert_eq!(r(&t, VIRTIO_MMIO_STATUS), GOOD);
        assert_eq!(r(&t, VIRTIO_MMIO_CONFIG_GENERATION), 0);
    }
}
