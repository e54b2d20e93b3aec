//! virtio-pci, modern (virtio 1.2 §4.1): a PCI function of vendor 0x1af4 with device id
//! 0x1040 + type (or a transitional 0x1000..=0x103f, its type in the subsystem id). Its register
//! blocks are found through the vendor-specific capabilities (common configuration, notify, ISR,
//! device configuration; each at an offset in a memory BAR) and its interrupts are MSI-X only:
//! table entry 0 signals configuration changes, entry 1 + q queue q, each a fixed, edge message
//! to this CPU's local APIC with its own IDT vector ([`super::msix_vector`]). The ISR register
//! is not read (MSI-X needs no acknowledgement); the handler only counts and EOIs.

use core::fmt;

use super::{MAX_QUEUES, Transport};
use crate::interrupts;
use crate::io::{mmio_read8, mmio_read16, mmio_read32, mmio_write8, mmio_write16, mmio_write32};
use crate::pci::{self, CAP_MSIX, CAP_VENDOR, Function};

pub const VENDOR_VIRTIO: u16 = 0x1af4;

// virtio_pci_cap cfg_type values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

// Common configuration (virtio 1.2 §4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// VIRTIO_MSI_NO_VECTOR: no vector (also the device's answer when it refuses a mapping).
const NO_VECTOR: u16 = 0xffff;

// MSI-X capability: message control at +2, table and PBA (offset | BIR) at +4 and +8.
const MSIX_CONTROL: u16 = 2;
const MSIX_TABLE: u16 = 4;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const MSIX_ENTRY_MASKED: u32 = 1;

/// One virtio-pci function's register blocks (addresses) and MSI-X table.
#[derive(Clone, Copy)]
pub struct Pci {
    pub function: Function,
    /// The BAR holding the common configuration (the device's register window).
    pub base: u64,
    common: u64,
    device: u64,
    notify: u64,
    notify_multiplier: u32,
    /// Notify address of each queue set up.
    queue_notify: [u64; MAX_QUEUES],
    msix_cap: u16,
    msix_table: u64,
    msix_size: u16,
    /// MSI-X entries programmed (config + queues).
    vectors: u16,
}

/// The virtio device type of a virtio-pci function (None: not virtio, or a type we cannot know).
pub fn device_type(f: &Function) -> Option<u32> {
    if f.vendor() != VENDOR_VIRTIO {
        return None;
    }
    match f.device() {
        id @ 0x1040..=0x107f => Some(u32::from(id - 0x1040)),
        0x1000..=0x103f => Some(u32::from(f.read16(pci::SUBSYSTEM_ID))),
        _ => None,
    }
}

/// `bar` + `offset` of a capability, if the BAR is (or could be made) a usable memory BAR.
fn cap_addr(f: &Function, cap: u16) -> Option<u64> {
    Some(f.bar_or_assign(f.read8(cap + 4))? + u64::from(f.read32(cap + 8)))
}

impl Pci {
    /// Finds the register blocks and the MSI-X table of a virtio function, then enables its
    /// memory decoding and bus mastering. Fails (with the reason) if one is missing.
    pub fn new(function: Function) -> Result<Pci, &'static str> {
        let f = function;
        let mut p = Pci {
            function,
            base: 0,
            common: 0,
            device: 0,
            notify: 0,
            notify_multiplier: 0,
            queue_notify: [0; MAX_QUEUES],
            msix_cap: 0,
            msix_table: 0,
            msix_size: 0,
            vectors: 0,
        };
        let mut isr = 0;
        for (id, at) in f.capabilities() {
            match id {
                CAP_MSIX if p.msix_cap == 0 => {
                    let table = f.read32(at + MSIX_TABLE);
                    let bar = f
                        .bar_or_assign((table & 7) as u8)
                        .ok_or("MSI-X table BAR unusable")?;
                    p.msix_cap = at;
                    p.msix_table = bar + u64::from(table & !7);
                    p.msix_size = (f.read16(at + MSIX_CONTROL) & 0x7ff) + 1;
                }
                // The first capability of each type the driver can use is the one to use.
                CAP_VENDOR => {
                    let Some(addr) = cap_addr(&f, at) else {
                        continue;
                    };
                    match f.read8(at + 3) {
                        CFG_COMMON if p.common == 0 => {
                            p.common = addr;
                            p.base = f.bar(f.read8(at + 4)).unwrap_or(0);
                        }
                        CFG_NOTIFY if p.notify == 0 => {
                            p.notify = addr;
                            p.notify_multiplier = f.read32(at + 16);
                        }
                        CFG_ISR if isr == 0 => isr = addr,
                        CFG_DEVICE if p.device == 0 => p.device = addr,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if p.common == 0 || p.notify == 0 || isr == 0 {
            return Err("no common/notify/ISR capability in a memory BAR below 4 GiB");
        }
        if p.msix_cap == 0 {
            return Err("no MSI-X capability (INTx is not supported)");
        }
        f.enable(pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER | pci::COMMAND_INTX_DISABLE);
        Ok(p)
    }

    fn read8(&self, off: u64) -> u8 {
        mmio_read8(self.common + off)
    }

    fn write8(&self, off: u64, v: u8) {
        mmio_write8(self.common + off, v);
    }

    fn read16(&self, off: u64) -> u16 {
        mmio_read16(self.common + off)
    }

    fn write16(&self, off: u64, v: u16) {
        mmio_write16(self.common + off, v);
    }

    fn read32(&self, off: u64) -> u32 {
        mmio_read32(self.common + off)
    }

    fn write32(&self, off: u64, v: u32) {
        mmio_write32(self.common + off, v);
    }

    fn write64(&self, off: u64, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    /// The MSI-X entry used for queue `qi` (entry 0 is configuration changes; a table too small
    /// for one entry per queue shares its last entry).
    fn queue_entry(&self, qi: u16) -> u16 {
        (1 + qi).min(self.msix_size - 1)
    }

    /// Writes MSI-X table entry `entry`: a fixed, edge message with IDT `vector` to this CPU.
    fn program_entry(&self, entry: u16, vector: u8) {
        let e = self.msix_table + 16 * u64::from(entry);
        mmio_write32(e + 12, MSIX_ENTRY_MASKED);
        mmio_write32(e, 0xfee0_0000 | (u32::from(interrupts::apic_id()) << 12));
        mmio_write32(e + 4, 0);
        mmio_write32(e + 8, u32::from(vector));
        mmio_write32(e + 12, 0);
    }
}

impl Transport for Pci {
    fn status(&self) -> u8 {
        self.read8(DEVICE_STATUS)
    }

    fn set_status(&self, status: u8) {
        self.write8(DEVICE_STATUS, status);
    }

    fn device_features(&self) -> u64 {
        self.write32(DEVICE_FEATURE_SELECT, 0);
        let low = self.read32(DEVICE_FEATURE);
        self.write32(DEVICE_FEATURE_SELECT, 1);
        u64::from(low) | (u64::from(self.read32(DEVICE_FEATURE)) << 32)
    }

    fn set_driver_features(&self, features: u64) {
        self.write32(DRIVER_FEATURE_SELECT, 0);
        self.write32(DRIVER_FEATURE, features as u32);
        self.write32(DRIVER_FEATURE_SELECT, 1);
        self.write32(DRIVER_FEATURE, (features >> 32) as u32);
    }

    /// Enables MSI-X (function masked while the table is written), points entry 0 and one
    /// entry per queue at this device's IDT vectors and maps configuration changes to entry 0.
    fn enable_interrupts(&mut self, slot: usize, queues: usize) -> Result<(), &'static str> {
        let f = &self.function;
        let control = self.msix_cap + MSIX_CONTROL;
        f.write16(
            control,
            f.read16(control) | MSIX_ENABLE | MSIX_FUNCTION_MASK,
        );
        self.vectors = (1 + queues as u16).min(self.msix_size);
        for entry in 0..self.vectors {
            self.program_entry(entry, super::msix_vector(slot, usize::from(entry)));
        }
        f.write16(
            control,
            (f.read16(control) | MSIX_ENABLE) & !MSIX_FUNCTION_MASK,
        );
        self.write16(CONFIG_MSIX_VECTOR, 0);
        if self.read16(CONFIG_MSIX_VECTOR) == NO_VECTOR {
            return Err("config_msix_vector refused");
        }
        Ok(())
    }

    fn queue_max(&self, qi: u16) -> u16 {
        self.write16(QUEUE_SELECT, qi);
        self.read16(QUEUE_SIZE)
    }

    fn queue_enable(&mut self, qi: u16, size: u16, rings: [u64; 3]) -> Result<(), &'static str> {
        self.write16(QUEUE_SELECT, qi);
        self.write16(QUEUE_SIZE, size);
        let entry = self.queue_entry(qi);
        self.write16(QUEUE_MSIX_VECTOR, entry);
        if self.read16(QUEUE_MSIX_VECTOR) != entry {
            return Err("queue_msix_vector refused");
        }
        self.write64(QUEUE_DESC, rings[0]);
        self.write64(QUEUE_DRIVER, rings[1]);
        self.write64(QUEUE_DEVICE, rings[2]);
        let off = u64::from(self.read16(QUEUE_NOTIFY_OFF));
        self.queue_notify[usize::from(qi)] = self.notify + off * u64::from(self.notify_multiplier);
        self.write16(QUEUE_ENABLE, 1);
        Ok(())
    }

    fn notify(&self, qi: u16) {
        mmio_write16(self.queue_notify[usize::from(qi)], qi);
    }

    fn config_generation(&self) -> u32 {
        u32::from(self.read8(CONFIG_GENERATION))
    }

    /// Reads 0 without a device configuration capability.
    fn config8(&self, off: u64) -> u8 {
        if self.device == 0 {
            0
        } else {
            mmio_read8(self.device + off)
        }
    }

    fn config32(&self, off: u64) -> u32 {
        if self.device == 0 {
            0
        } else {
            mmio_read32(self.device + off)
        }
    }

    fn interrupt_vectors(&self) -> usize {
        usize::from(self.vectors)
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "base={:#x} msix={} via=pci:{}",
            self.base, self.vectors, self.function
        )
    }
}
