//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): one 4 KiB register window per
//! device, served on the vCPU threads.
//!
//! State machine: the driver resets (status 0), sets ACKNOWLEDGE and DRIVER, reads the device
//! features and writes its own (only while DRIVER is set and FEATURES_OK is not), sets
//! FEATURES_OK — kept only if its features are a subset of ours and include VERSION_1 — programs
//! the queues (only while a queue is not ready and DRIVER_OK is not set), and sets DRIVER_OK.
//! Then every ready queue is validated against guest memory; if one is bad the device sets
//! NEEDS_RESET and raises a config-change interrupt instead of starting. Writing 0 resets the
//! device at any time. Status bits never go away except through a reset.
//!
//! Registers are 32-bit: other widths and unaligned offsets below the config space read as 0 and
//! writes to them are ignored. The config space (from 0x100) is the device's, any width.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_mmio::*;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::{CONFIG_CHANGE, VirtioInterrupt};
use super::queue::{QueueRegs, set_half};
use super::{VirtioDevice, features, status};
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

#[derive(Debug)]
struct State {
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    config_generation: u32,
    mem: Option<GuestMemoryMmap>,
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Arc<dyn VirtioDevice>,
    interrupt: Arc<VirtioInterrupt>,
    notify: EventFd,
    state: Mutex<State>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("state", &*self.lock())
            .finish()
    }
}

impl MmioTransport {
    /// A transport for `device`; `notify` is the EventFd the device's handler waits on (queue
    /// notifications) and `interrupt` the line it raises.
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        interrupt: Arc<VirtioInterrupt>,
        notify: EventFd,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueRegs::new(*m))
            .collect();
        MmioTransport {
            device,
            interrupt,
            notify,
            state: Mutex::new(State {
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                queues,
                config_generation: 0,
                mem: None,
            }),
        }
    }

    /// The queue-notify EventFd (register it as ioeventfd at `base + NOTIFY_OFFSET`).
    pub fn notify_fd(&self) -> &EventFd {
        &self.notify
    }

    /// The interrupt EventFd (register it as irqfd).
    pub fn irq_fd(&self) -> &EventFd {
        self.interrupt.irq_fd()
    }

    /// A new boot: reset the device and use `mem` from now on.
    pub fn attach(&self, mem: GuestMemoryMmap) {
        let mut s = self.lock();
        self.reset(&mut s);
        s.mem = Some(mem);
    }

    /// Current device status (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.lock().status
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reset(&self, s: &mut State) {
        self.device.reset();
        self.interrupt.reset();
        s.status = 0;
        s.device_features_sel = 0;
        s.driver_features_sel = 0;
        s.driver_features = 0;
        s.queue_sel = 0;
        for q in &mut s.queues {
            *q = QueueRegs::new(q.max_size);
        }
    }

    fn selected_queue(s: &mut State) -> Option<&mut QueueRegs> {
        let sel = s.queue_sel as usize;
        s.queues.get_mut(sel)
    }

    fn read_register(&self, offset: u32) -> u32 {
        let mut s = self.lock();
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match s.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => {
                Self::selected_queue(&mut s).map_or(0, |q| q.max_size.into())
            }
            VIRTIO_MMIO_QUEUE_READY => Self::selected_queue(&mut s).map_or(0, |q| q.ready.into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS if self.device.needs_reset() => s.status | status::NEEDS_RESET,
            VIRTIO_MMIO_STATUS => s.status,
            // No shared memory regions: length all ones.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => s.config_generation,
            _ => 0,
        }
    }

    fn write_register(&self, offset: u32, value: u32) {
        let mut s = self.lock();
        let features_open = s.status & status::DRIVER != 0 && s.status & status::FEATURES_OK == 0;
        let queue_open = s.status & status::DRIVER_OK == 0;
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => s.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => s.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES if features_open => match s.driver_features_sel {
                0 => set_half(&mut s.driver_features, false, value),
                1 => set_half(&mut s.driver_features, true, value),
                _ => {}
            },
            VIRTIO_MMIO_QUEUE_SEL => s.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Normally caught by the ioeventfd; a plain MMIO exit lands here.
                let _ = self.notify.write(1);
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.set_status(&mut s, value),
            _ if queue_open => {
                let Some(q) = Self::selected_queue(&mut s) else {
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

    fn set_status(&self, s: &mut State, value: u32) {
        if value == 0 {
            self.reset(s);
            return;
        }
        let old = s.status;
        if value & old != old {
            tracing::debug!("virtio-mmio: status {old:#x} -> {value:#x} clears bits; ignored");
            return;
        }
        let added = value & !old;
        let mut new = value;
        if added & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok =
                s.driver_features & !offered == 0 && s.driver_features & features::VERSION_1 != 0;
            if !ok {
                tracing::debug!(
                    "virtio-mmio: driver features {:#x} refused (offered {offered:#x})",
                    s.driver_features
                );
                new &= !status::FEATURES_OK;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if new & status::FEATURES_OK == 0 || new & status::NEEDS_RESET != 0 {
                new &= !status::DRIVER_OK;
            } else if let Err(e) = self.activate(s) {
                tracing::warn!("virtio-mmio: device not started: {e}");
                new |= status::NEEDS_RESET;
                s.status = new;
                self.interrupt.signal(CONFIG_CHANGE);
                return;
            }
        }
        s.status = new;
    }

    fn activate(&self, s: &State) -> Result<(), super::ActivateError> {
        let Some(mem) = s.mem.clone() else {
            return Err(super::ActivateError::NoMemory);
        };
        let event_idx = s.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(s.queues.len());
        for (i, regs) in s.queues.iter().enumerate() {
            // A queue the driver left unready stays unready: the device ignores it.
            let q = if regs.ready {
                regs.build(&mem, event_idx)
            } else {
                regs.idle()
            };
            queues.push(q.map_err(|e| super::ActivateError::Queue(i as u16, e))?);
        }
        self.device.activate(mem, queues, s.driver_features)?;
        // Pick up anything the driver queued before DRIVER_OK.
        let _ = self.notify.write(1);
        Ok(())
    }
}

impl MmioDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
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
            self.device
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
