//! PCI configuration space through the ECAM window of the ACPI MCFG table: a scan of its first
//! bus (functions 1..7 only on multi-function devices), memory BAR addresses and capability
//! lists. BARs are used where the firmware or the VMM put them: nothing is assigned or moved.
//!
//! Output lines (at the scan):
//! ```text
//! testguest: pci ecam=0xe0000000 segment=0 buses=0-0
//! testguest: pci 00:01.0 id=1af4:1042 class=0x018000 rev=1    (one per function)
//! ```

use core::fmt;

use crate::acpi::Ecam;
use crate::io::{mmio_read8, mmio_read16, mmio_read32, mmio_write16};
use crate::println;

pub const VENDOR: u16 = 0x00;
pub const DEVICE: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION: u16 = 0x08;
pub const HEADER_TYPE: u16 = 0x0e;
pub const BAR0: u16 = 0x10;
pub const SUBSYSTEM_ID: u16 = 0x2e;
pub const CAPABILITIES: u16 = 0x34;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Capability ids.
pub const CAP_VENDOR: u8 = 0x09;
pub const CAP_MSIX: u8 = 0x11;

/// Most capabilities followed in one list (a loop in a hostile list ends here).
const MAX_CAPS: usize = 48;

/// One function's configuration space (4 KiB in the ECAM window).
#[derive(Clone, Copy)]
pub struct Function {
    cfg: u64,
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Function {
    pub fn read8(&self, reg: u16) -> u8 {
        mmio_read8(self.cfg + u64::from(reg))
    }

    pub fn read16(&self, reg: u16) -> u16 {
        mmio_read16(self.cfg + u64::from(reg))
    }

    pub fn read32(&self, reg: u16) -> u32 {
        mmio_read32(self.cfg + u64::from(reg))
    }

    pub fn write16(&self, reg: u16, value: u16) {
        mmio_write16(self.cfg + u64::from(reg), value);
    }

    pub fn vendor(&self) -> u16 {
        self.read16(VENDOR)
    }

    pub fn device(&self) -> u16 {
        self.read16(DEVICE)
    }

    /// Class code, subclass and programming interface (24 bits).
    pub fn class(&self) -> u32 {
        self.read32(REVISION) >> 8
    }

    /// Sets `bits` in the command register.
    pub fn enable(&self, bits: u16) {
        let cmd = self.read16(COMMAND);
        self.write16(COMMAND, cmd | bits);
    }

    /// Where memory BAR `bar` (0..5) is, if it is assigned and inside the identity-mapped
    /// 4 GiB (a 64-bit BAR takes slots `bar` and `bar + 1`). IO BARs are not used.
    pub fn bar(&self, bar: u8) -> Option<u64> {
        if bar > 5 {
            return None;
        }
        let reg = BAR0 + 4 * u16::from(bar);
        let low = self.read32(reg);
        if low & 1 != 0 {
            return None;
        }
        let high = match (low >> 1) & 3 {
            2 if bar < 5 => self.read32(reg + 4),
            2 => return None,
            _ => 0,
        };
        let addr = (u64::from(high) << 32) | u64::from(low & !0xf);
        (addr != 0 && addr < (1 << 32)).then_some(addr)
    }

    /// The capability list: (id, offset) pairs, in list order.
    pub fn capabilities(&self) -> Capabilities {
        let next = if self.read16(STATUS) & STATUS_CAPABILITIES != 0 {
            self.read8(CAPABILITIES) & 0xfc
        } else {
            0
        };
        Capabilities {
            f: *self,
            next,
            left: MAX_CAPS,
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Iterator over a function's capability list.
pub struct Capabilities {
    f: Function,
    next: u8,
    left: usize,
}

impl Iterator for Capabilities {
    type Item = (u8, u16);

    fn next(&mut self) -> Option<(u8, u16)> {
        if self.next < 0x40 || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = u16::from(self.next);
        self.next = self.f.read8(at + 1) & 0xfc;
        Some((self.f.read8(at), at))
    }
}

/// Prints the ECAM window and every function of its first bus and calls `found` with each.
pub fn scan(ecam: &Ecam, mut found: impl FnMut(Function)) {
    println!(
        "testguest: pci ecam={:#x} segment={} buses={}-{}",
        ecam.base, ecam.segment, ecam.start_bus, ecam.end_bus
    );
    let bus = ecam.start_bus;
    let bus_base = ecam.base + (u64::from(bus) << 20);
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let f = Function {
                cfg: bus_base + (u64::from(dev) << 15) + (u64::from(func) << 12),
                bus,
                dev,
                func,
            };
            let vendor = f.vendor();
            if vendor == 0xffff {
                if func == 0 {
                    break; // no device: its other functions are absent too
                }
                continue;
            }
            println!(
                "testguest: pci {f} id={vendor:04x}:{:04x} class={:#08x} rev={}",
                f.device(),
                f.class(),
                f.read8(REVISION)
            );
            found(f);
            if func == 0 && f.read8(HEADER_TYPE) & 0x80 == 0 {
                break; // single-function device
            }
        }
    }
}
