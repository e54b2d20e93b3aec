//! The virtio-pci transport, modern only (virtio 1.2 §4.1): a PCI function whose BAR0 holds the
//! common configuration, ISR, device configuration, notification area and MSI-X table; the
//! capabilities in its configuration space point at each. The shared state machine is
//! [`Core`]; this file maps registers onto it.
//!
//! BAR0 layout (each structure found by the driver through its capability):
//!
//! | offset | structure |
//! |---|---|
//! | 0x0000 | common configuration (`virtio_pci_common_cfg`) |
//! | 0x1000 | ISR status (read clears) |
//! | 0x2000 | device configuration |
//! | 0x3000 | notifications: `notify_off_multiplier` 0, every queue writes its index here (an ioeventfd) |
//! | 0x4000 | MSI-X table (one vector per queue + one for config changes) |
//! | 0x5000 | MSI-X pending bits |
//!
//! Interrupts are MSI-X only (no INTx pin): Linux's virtio_pci uses MSI-X whenever it exists.
//! The `VIRTIO_PCI_CAP_PCI_CFG` window is implemented (BAR access through config space).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::VirtioDevice;
use super::common::Core;
use super::interrupt::VirtioInterrupt;
use super::queue::set_half;
use crate::devices::MmioDevice;
use crate::devices::pci::PciFunction;
use crate::devices::pci::config::{ConfigSpace, PciId};
use crate::devices::pci::msi::MsiRoutes;
use crate::devices::pci::msix::MsixVectors;

/// Vendor id of virtio devices.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern device ids are 0x1040 + the virtio device type.
pub const DEVICE_ID_BASE: u16 = 0x1040;
pub const COMMON_OFFSET: u64 = 0x0000;
/// Length of the common configuration structure (virtio 1.2, up to `queue_device`).
pub const COMMON_LEN: u32 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const DEVICE_LEN: u32 = 0x1000;
/// Offset of the notification area in BAR0 (register the ioeventfd at BAR0 + this).
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;

/// Capability ids and virtio `cfg_type`s.
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// PCI class of a virtio device type (what QEMU reports).
fn class_of(device_type: u32) -> u32 {
    match device_type {
        1 => 0x02_00_00, // network controller, ethernet
        2 => 0x01_80_00, // mass storage, other
        _ => 0xff_00_00,
    }
}

/// What the `VIRTIO_PCI_CAP_PCI_CFG` window currently targets.
#[derive(Debug, Default, Clone, Copy)]
struct CfgWindow {
    at: usize,
}

/// One virtio device as a PCI function.
pub struct PciTransport {
    core: Core,
    msix: Arc<MsixVectors>,
    config: Mutex<ConfigSpace>,
    msix_cap: usize,
    cfg_window: CfgWindow,
}

impl std::fmt::Debug for PciTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciTransport")
            .field("core", &self.core)
            .finish()
    }
}

/// A virtio capability body (after id and next): cap_len, cfg_type, bar, id, padding, offset,
/// length, then `extra`.
fn virtio_cap(cfg_type: u8, offset: u64, length: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

impl PciTransport {
    /// A function for `device`; `notify` is the EventFd its handler waits on and `interrupt`
    /// the status it raises (switched to MSI-X here).
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        interrupt: Arc<VirtioInterrupt>,
        notify: EventFd,
    ) -> io::Result<Self> {
        let queues = device.queue_max_sizes().len() as u16;
        let vectors = queues + 1;
        let msix = Arc::new(MsixVectors::new(vectors)?);
        interrupt.use_msix(msix.clone());
        let device_type = device.device_type();
        let mut config = ConfigSpace::new(PciId {
            vendor: VIRTIO_VENDOR,
            device: DEVICE_ID_BASE + device_type as u16,
            class: class_of(device_type),
            revision: 1,
            subsystem_vendor: VIRTIO_VENDOR,
            subsystem: 0x1100,
        });
        // MSI-X: message control (table size - 1; enable and function mask writable), table
        // and PBA in BAR0.
        let mut msix_body = Vec::new();
        msix_body.extend_from_slice(&(vectors - 1).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let msix_cap = config.add_capability(CAP_MSIX, &msix_body, &[0, 0xc0]);
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(CFG_COMMON, COMMON_OFFSET, COMMON_LEN, &[]),
            &[],
        );
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(CFG_NOTIFY, NOTIFY_OFFSET, 4, &0u32.to_le_bytes()),
            &[],
        );
        config.add_capability(CAP_VENDOR, &virtio_cap(CFG_ISR, ISR_OFFSET, 4, &[]), &[]);
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(CFG_DEVICE, DEVICE_OFFSET, DEVICE_LEN, &[]),
            &[],
        );
        // The PCI configuration access window: bar, offset, length and data are the driver's.
        let writable = [
            0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff,
        ];
        let at = config.add_capability(CAP_VENDOR, &virtio_cap(CFG_PCI, 0, 0, &[0; 4]), &writable);
        Ok(PciTransport {
            core: Core::new(device, interrupt, notify),
            msix,
            config: Mutex::new(config),
            msix_cap,
            cfg_window: CfgWindow { at },
        })
    }

    /// The queue-notify EventFd (register it as ioeventfd at BAR0 + [`NOTIFY_OFFSET`]).
    pub fn notify_fd(&self) -> &EventFd {
        &self.core.notify
    }

    /// The MSI-X vectors (their irqfds go on the GSIs `attach` was given).
    pub fn msix(&self) -> &MsixVectors {
        &self.msix
    }

    /// A new boot: reset, use `mem`, put BAR0 at `bar0`, route vectors through `routes` from
    /// its GSI (tests pass none).
    pub fn attach(&self, mem: GuestMemoryMmap, bar0: u32, routes: Option<(Arc<MsiRoutes>, u32)>) {
        self.core.attach(mem);
        self.msix.attach(routes);
        let mut c = self.lock_config();
        c.set_bar0(
            bar0,
            crate::arch::x86_64::layout::VIRTIO_PCI_BAR_SIZE as u32,
        );
        // Command register and the MSI-X control back to reset values.
        c.write(4, &[0, 0]);
        c.write(self.msix_cap + 2, &[0, 0]);
    }

    fn lock_config(&self) -> MutexGuard<'_, ConfigSpace> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current device status (tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.core.lock().status
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let s = self.core.lock();
        let i = &self.core.interrupt;
        let sel = s.queue_sel as usize;
        let q = s.queues.get(sel).cloned();
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(s.device_features_sel),
            (0x04, 4) => u64::from(self.core.device_features(&s)),
            (0x08, 4) => u64::from(s.driver_features_sel),
            (0x0c, 4) => match s.driver_features_sel {
                0 => s.driver_features & 0xffff_ffff,
                1 => s.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(i.config_vector()),
            (0x12, 2) => s.queues.len() as u64,
            (0x14, 1) => u64::from(self.core.status(&s) as u8),
            (0x15, 1) => u64::from(s.config_generation as u8),
            (0x16, 2) => u64::from(s.queue_sel as u16),
            (0x18, 2) => q.map_or(0, |q| u64::from(q.size)),
            (0x1a, 2) => u64::from(i.queue_vector(sel)),
            (0x1c, 2) => q.map_or(0, |q| u64::from(q.ready)),
            (0x1e, 2) => 0, // queue_notify_off: every queue notifies at the same address
            (0x20, 4) => q.map_or(0, |q| q.desc & 0xffff_ffff),
            (0x24, 4) => q.map_or(0, |q| q.desc >> 32),
            (0x28, 4) => q.map_or(0, |q| q.avail & 0xffff_ffff),
            (0x2c, 4) => q.map_or(0, |q| q.avail >> 32),
            (0x30, 4) => q.map_or(0, |q| q.used & 0xffff_ffff),
            (0x34, 4) => q.map_or(0, |q| q.used >> 32),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write_common(&self, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(raw);
        let mut s = self.core.lock();
        let i = &self.core.interrupt;
        match (offset, data.len()) {
            (0x00, 4) => s.device_features_sel = v as u32,
            (0x08, 4) => s.driver_features_sel = v as u32,
            (0x0c, 4) => s.write_driver_features(v as u32),
            (0x10, 2) => i.set_config_vector(v as u16),
            (0x14, 1) => self.core.set_status(&mut s, v as u32),
            (0x16, 2) => s.queue_sel = u32::from(v as u16),
            (0x1a, 2) => i.set_queue_vector(s.queue_sel as usize, v as u16),
            _ if s.queues_open() => {
                let Some(q) = s.selected_queue() else {
                    return;
                };
                match (offset, data.len()) {
                    // Only 1 may be written (virtio 1.2 §4.1.4.3.2).
                    (0x1c, 2) if v == 1 => q.ready = true,
                    _ if q.ready => {} // an enabled queue's registers are frozen
                    (0x18, 2) => q.size = v as u16,
                    (0x20, 4) => set_half(&mut q.desc, false, v as u32),
                    (0x24, 4) => set_half(&mut q.desc, true, v as u32),
                    (0x28, 4) => set_half(&mut q.avail, false, v as u32),
                    (0x2c, 4) => set_half(&mut q.avail, true, v as u32),
                    (0x30, 4) => set_half(&mut q.used, false, v as u32),
                    (0x34, 4) => set_half(&mut q.used, true, v as u32),
                    _ => {}
                }
            }
            _ => tracing::debug!("virtio-pci: ignored write {v:#x} at common {offset:#x}"),
        }
    }

    /// A BAR0 read at `offset`.
    fn bar_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_OFFSET + u64::from(COMMON_LEN) => self.read_common(o, data),
            ISR_OFFSET => {
                if let Some(b) = data.first_mut() {
                    *b = self.core.interrupt.take_status() as u8;
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + u64::from(DEVICE_LEN)).contains(&o) => {
                self.core.device.read_config(o - DEVICE_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.read_table(o - MSIX_TABLE_OFFSET, data);
            }
            o if o >= MSIX_PBA_OFFSET => self.msix.read_pba(o - MSIX_PBA_OFFSET, data),
            _ => {}
        }
    }

    /// A BAR0 write at `offset`.
    fn bar_write(&self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + u64::from(COMMON_LEN) => self.write_common(o, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + u64::from(DEVICE_LEN)).contains(&o) => {
                self.core.device.write_config(o - DEVICE_OFFSET, data);
            }
            // Normally caught by the ioeventfd; a plain MMIO exit lands here.
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + 4).contains(&o) => self.core.kick(),
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.write_table(o - MSIX_TABLE_OFFSET, data);
            }
            _ => {}
        }
    }

    /// The BAR access the `VIRTIO_PCI_CAP_PCI_CFG` window describes: (offset, length), if it
    /// targets BAR0 with a length of 1, 2 or 4.
    fn window_target(c: &ConfigSpace, at: usize) -> Option<(u64, usize)> {
        let mut b = [0u8; 12];
        c.read(at + 4, &mut b);
        let bar = b[0];
        let offset = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let length = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
        (bar == 0 && matches!(length, 1 | 2 | 4)).then_some((u64::from(offset), length))
    }
}

impl PciFunction for PciTransport {
    fn config_read(&self, offset: usize, data: &mut [u8]) {
        let c = self.lock_config();
        let data_at = self.cfg_window.at + 16;
        if offset == data_at {
            if let Some((bar_off, len)) = Self::window_target(&c, self.cfg_window.at) {
                drop(c);
                data.fill(0);
                let n = len.min(data.len());
                self.bar_read(bar_off, &mut data[..n]);
                return;
            }
        }
        c.read(offset, data);
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        let mut c = self.lock_config();
        let data_at = self.cfg_window.at + 16;
        if offset == data_at {
            if let Some((bar_off, len)) = Self::window_target(&c, self.cfg_window.at) {
                drop(c);
                let n = len.min(data.len());
                self.bar_write(bar_off, &data[..n]);
                return;
            }
        }
        c.write(offset, data);
        let ctl = self.msix_cap + 2;
        if offset < ctl + 2 && ctl < offset + data.len() {
            let mut mc = [0u8; 2];
            c.read(ctl, &mut mc);
            drop(c);
            self.msix.set_control(u16::from_le_bytes(mc));
        }
    }
}

impl MmioDevice for PciTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.bar_read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.bar_write(offset, data);
    }
}

#[cfg(test)]
mod tests;
