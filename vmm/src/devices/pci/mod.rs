//! A PCI Express root complex with one bus: a host bridge at 00:00.0 and the VMM's functions
//! (virtio-pci devices) at 00:01.0 onwards, function 0 only.
//!
//! Configuration space is reached through ECAM ([`PciBus`] as an MMIO device at
//! `layout::PCI_MMCONFIG_START`, described by the MCFG table) and through the legacy type-1
//! ports 0xCF8/0xCFC (Linux probes them first). Both run on the vCPU threads. Interrupts are
//! MSI-X only ([`msix`], routed by [`msi`]); no function has an INTx pin.

pub mod config;
pub mod msi;
pub mod msix;

use std::sync::{Arc, Mutex};

use config::{CONFIG_SIZE, ConfigSpace, PciId};

use super::MmioDevice;
use crate::arch::x86_64::layout::{PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT};

/// Device numbers on the bus.
pub const MAX_DEVICES: usize = 32;

/// A function's configuration space as the bus sees it (`offset` < 256).
pub trait PciFunction: Send + Sync {
    fn config_read(&self, offset: usize, data: &mut [u8]);
    fn config_write(&self, offset: usize, data: &[u8]);
}

/// The host bridge (QEMU's PCIe host bridge identity: guests know it needs no driver).
#[derive(Debug)]
pub struct HostBridge(Mutex<ConfigSpace>);

impl HostBridge {
    pub fn new() -> Self {
        HostBridge(Mutex::new(ConfigSpace::new(PciId {
            vendor: 0x1b36,
            device: 0x0008,
            class: 0x06_00_00,
            revision: 0,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        })))
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config_read(&self, offset: usize, data: &mut [u8]) {
        lock(&self.0).read(offset, data);
    }
    fn config_write(&self, offset: usize, data: &[u8]) {
        lock(&self.0).write(offset, data);
    }
}

/// Bus 0: functions by device number, and the type-1 address latch.
pub struct PciBus {
    devices: Vec<Option<Arc<dyn PciFunction>>>,
    config_address: Mutex<u32>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present: Vec<usize> = (0..MAX_DEVICES)
            .filter(|d| self.devices[*d].is_some())
            .collect();
        f.debug_struct("PciBus").field("devices", &present).finish()
    }
}

impl PciBus {
    /// A bus holding only the host bridge.
    pub fn new() -> Self {
        let mut devices: Vec<Option<Arc<dyn PciFunction>>> = vec![None; MAX_DEVICES];
        devices[0] = Some(Arc::new(HostBridge::new()));
        PciBus {
            devices,
            config_address: Mutex::new(0),
        }
    }

    /// Puts `function` at device number `device` (1..32); false if taken or out of range.
    pub fn insert(&mut self, device: u8, function: Arc<dyn PciFunction>) -> bool {
        match self.devices.get_mut(usize::from(device)) {
            Some(slot @ None) => {
                *slot = Some(function);
                true
            }
            _ => false,
        }
    }

    fn function(&self, bus: u32, device: u32, function: u32) -> Option<&Arc<dyn PciFunction>> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.devices.get(device as usize)?.as_ref()
    }

    fn read_at(&self, bus: u32, device: u32, func: u32, reg: usize, data: &mut [u8]) {
        match self.function(bus, device, func) {
            Some(f) if reg + data.len() <= CONFIG_SIZE => f.config_read(reg, data),
            // The extended space of a present function: no extended capabilities.
            Some(_) => data.fill(0),
            None => data.fill(0xff),
        }
    }

    fn write_at(&self, bus: u32, device: u32, func: u32, reg: usize, data: &[u8]) {
        if let Some(f) = self.function(bus, device, func) {
            if reg + data.len() <= CONFIG_SIZE {
                f.config_write(reg, data);
            }
        }
    }

    /// Whether `port` is one of the type-1 configuration ports.
    pub fn handles_port(port: u16) -> bool {
        (PCI_CONFIG_ADDRESS_PORT..PCI_CONFIG_ADDRESS_PORT + 4).contains(&port)
            || (PCI_CONFIG_DATA_PORT..PCI_CONFIG_DATA_PORT + 4).contains(&port)
    }

    /// A port read of 0xCF8 (the latch, dword only) or 0xCFC–0xCFF (data).
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if port == PCI_CONFIG_ADDRESS_PORT && data.len() == 4 {
            data.copy_from_slice(&lock(&self.config_address).to_le_bytes());
            return;
        }
        match self.latched(port) {
            Some((bus, dev, func, reg)) => self.read_at(bus, dev, func, reg, data),
            None => data.fill(0xff),
        }
    }

    /// A port write of 0xCF8 or 0xCFC–0xCFF.
    pub fn pio_write(&self, port: u16, data: &[u8]) {
        if port == PCI_CONFIG_ADDRESS_PORT {
            if let Ok(v) = <[u8; 4]>::try_from(data) {
                *lock(&self.config_address) = u32::from_le_bytes(v);
            }
            return;
        }
        if let Some((bus, dev, func, reg)) = self.latched(port) {
            self.write_at(bus, dev, func, reg, data);
        }
    }

    /// The target of a data-port access, if the latch is enabled.
    fn latched(&self, port: u16) -> Option<(u32, u32, u32, usize)> {
        let a = *lock(&self.config_address);
        if a & (1 << 31) == 0 || !(PCI_CONFIG_DATA_PORT..PCI_CONFIG_DATA_PORT + 4).contains(&port) {
            return None;
        }
        let reg = (a & 0xfc) as usize + usize::from(port - PCI_CONFIG_DATA_PORT);
        Some(((a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7, reg))
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

/// ECAM: offset = bus << 20 | device << 15 | function << 12 | register.
impl MmioDevice for PciBus {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let (bus, dev, func, reg) = ecam(offset);
        self.read_at(bus, dev, func, reg, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (bus, dev, func, reg) = ecam(offset);
        self.write_at(bus, dev, func, reg, data);
    }
}

fn ecam(offset: u64) -> (u32, u32, u32, usize) {
    (
        (offset >> 20) as u32,
        ((offset >> 15) & 0x1f) as u32,
        ((offset >> 12) & 7) as u32,
        (offset & 0xfff) as usize,
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(bus: &PciBus, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        bus.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn ecam_and_type1_reach_the_same_functions() {
        let mut bus = PciBus::new();
        assert!(bus.insert(1, Arc::new(HostBridge::new())));
        assert!(!bus.insert(1, Arc::new(HostBridge::new())), "taken");
        assert!(
            !bus.insert(32, Arc::new(HostBridge::new())),
            "no such device"
        );
        assert_eq!(r32(&bus, 0), 0x0008_1b36);
        assert_eq!(r32(&bus, 1 << 15), 0x0008_1b36);
        assert_eq!(r32(&bus, 2 << 15), u32::MAX, "absent device");
        assert_eq!(r32(&bus, (1 << 15) | (1 << 12)), u32::MAX, "function 1");
        assert_eq!(r32(&bus, 1 << 20), u32::MAX, "bus 1");
        assert_eq!(r32(&bus, 0x100), 0, "extended space");
        // Type 1: latch device 1, register 8 (class), read the data port.
        bus.pio_write(0xcf8, &(0x8000_0000u32 | (1 << 11) | 8).to_le_bytes());
        let mut b = [0u8; 4];
        bus.pio_read(0xcf8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0808);
        bus.pio_read(0xcfc, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0600_0000);
        let mut hi = [0u8; 2];
        bus.pio_read(0xcfe, &mut hi);
        assert_eq!(u16::from_le_bytes(hi), 0x0600);
        // Disabled latch: all ones.
        bus.pio_write(0xcf8, &8u32.to_le_bytes());
        bus.pio_read(0xcfc, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert!(PciBus::handles_port(0xcfd) && !PciBus::handles_port(0xd00));
    }
}
