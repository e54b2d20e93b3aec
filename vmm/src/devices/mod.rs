//! Emulated devices and the buses the vCPU threads dispatch port-IO and MMIO exits to.
//!
//! The port bus is fixed (serial, i8042, ACPI PM, and the PCI type-1 configuration ports when
//! the VM has a PCI bus). The MMIO bus holds devices registered by the builder at boot (the
//! virtio-mmio windows of [`virtio`], or the PCI ECAM and the BARs of virtio-pci functions); an
//! access that hits no device reads as all ones.

pub mod acpi_pm;
pub mod i8042;
pub mod pci;
pub mod power_button;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

use crate::arch::x86_64::layout::{I8042_PORT, SERIAL_PORT};
use acpi_pm::AcpiPm;
use serial::Serial;

/// The port-IO devices of one boot.
#[derive(Debug)]
pub struct PioBus {
    pub serial: Arc<Serial>,
    pub i8042: Mutex<i8042::I8042>,
    pub acpi_pm: AcpiPm,
    /// The PCI bus behind 0xCF8/0xCFC (virtio-pci VMs).
    pub pci: Option<Arc<pci::PciBus>>,
}

impl PioBus {
    /// A guest `in` from `port`; unclaimed ports read as all ones (like an empty ISA bus).
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(pci) = self
            .pci
            .as_ref()
            .filter(|_| pci::PciBus::handles_port(port))
        {
            pci.pio_read(port, data);
            return;
        }
        match port {
            SERIAL_PORT..=0x3ff if data.len() == 1 => {
                data[0] = self.serial.read((port - SERIAL_PORT) as u8);
            }
            p if (p == I8042_PORT || p == I8042_PORT + 4) && data.len() == 1 => {
                data[0] = lock(&self.i8042).read((p - I8042_PORT) as u8);
            }
            p if AcpiPm::handles(p) && data.len() == 1 => data[0] = self.acpi_pm.read(p),
            _ => {}
        }
    }

    /// A guest `out` to `port`; unclaimed ports ignore writes (Linux's 0x80 delay port, PCI probes).
    pub fn write(&self, port: u16, data: &[u8]) {
        if let Some(pci) = self
            .pci
            .as_ref()
            .filter(|_| pci::PciBus::handles_port(port))
        {
            pci.pio_write(port, data);
            return;
        }
        let [value] = *data else { return };
        match port {
            SERIAL_PORT..=0x3ff => self.serial.write((port - SERIAL_PORT) as u8, value),
            p if p == I8042_PORT || p == I8042_PORT + 4 => {
                let _ = lock(&self.i8042).write((p - I8042_PORT) as u8, value);
            }
            p if AcpiPm::handles(p) => self.acpi_pm.write(p, value),
            _ => {}
        }
    }
}

/// A device on the MMIO bus. Offsets are relative to the device's base address.
pub trait MmioDevice: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

/// MMIO devices by address range.
#[derive(Default)]
pub struct MmioBus {
    devices: Vec<(u64, u64, Arc<dyn MmioDevice>)>,
}

/// Why an MMIO device could not be added.
#[derive(Debug, thiserror::Error)]
#[error("MMIO range {base:#x}+{len:#x} overlaps another device")]
pub struct MmioOverlap {
    pub base: u64,
    pub len: u64,
}

impl MmioBus {
    /// Adds `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn MmioDevice>,
    ) -> Result<(), MmioOverlap> {
        if self
            .devices
            .iter()
            .any(|(b, l, _)| base < b + l && *b < base + len)
        {
            return Err(MmioOverlap { base, len });
        }
        self.devices.push((base, len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<dyn MmioDevice>)> {
        self.devices
            .iter()
            .find(|(b, l, _)| addr >= *b && addr < b + l)
            .map(|(b, _, d)| (addr - b, d))
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((offset, dev)) => dev.read(offset, data),
            None => data.fill(0xff),
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((offset, dev)) = self.find(addr) {
            dev.write(offset, data);
        }
    }
}

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(b, l, _)| (b, l)))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Reg(AtomicU64);
    impl MmioDevice for Reg {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, _offset: u64, data: &[u8]) {
            self.0.store(u64::from(data[0]), Ordering::SeqCst);
        }
    }

    #[test]
    fn mmio_dispatch_by_range() {
        let mut bus = MmioBus::default();
        let dev = Arc::new(Reg(AtomicU64::new(0)));
        bus.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        assert!(bus.insert(0xd000_0800, 0x1000, dev.clone()).is_err());
        let mut buf = [0u8; 4];
        bus.read(0xd000_0010, &mut buf);
        assert_eq!(buf, [0x10; 4]);
        bus.read(0xd000_1000, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        bus.write(0xd000_0004, &[9]);
        assert_eq!(dev.0.load(Ordering::SeqCst), 9);
    }
}
