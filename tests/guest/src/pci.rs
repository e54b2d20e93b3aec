//! PCI configuration space through the ECAM window of the ACPI MCFG table (or the host bridge's
//! `_CBA`): a scan of its first bus (functions 1..7 only on multi-function devices), memory BAR
//! addresses and capability lists. BARs are used where the firmware or the VMM put them; only a
//! BAR a driver needs that nobody assigned (QEMU microvm has no firmware that does) is sized and
//! placed in the host bridge's window, as firmware would. Nothing is moved.
//!
//! Output lines (at the scan):
//! ```text
//! testguest: pci ecam=0xe0000000 segment=0 buses=0-0
//! testguest: pci 00:01.0 id=1af4:1042 class=0x018000 rev=1    (one per function)
//! ```

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::acpi::Ecam;
use crate::io::{mmio_read8, mmio_read16, mmio_read32, mmio_write16, mmio_write32};
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

    fn write32(&self, reg: u16, value: u32) {
        mmio_write32(self.cfg + u64::from(reg), value);
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

    /// Like [`Function::bar`], but an unassigned memory BAR (address 0) is first sized and
    /// placed in the host bridge's window (memory decoding must still be off).
    pub fn bar_or_assign(&self, bar: u8) -> Option<u64> {
        if bar > 5 {
            return None;
        }
        if let Some(addr) = self.bar(bar) {
            return Some(addr);
        }
        let reg = BAR0 + 4 * u16::from(bar);
        let low = self.read32(reg);
        let wide = (low >> 1) & 3 == 2;
        if low & 1 != 0 || low & !0xf != 0 || (wide && (bar == 5 || self.read32(reg + 4) != 0)) {
            return None; // IO, or assigned where we cannot reach it
        }
        self.write32(reg, 0xffff_ffff);
        let mask = self.read32(reg) & !0xf;
        let high_mask = if wide {
            self.write32(reg + 4, 0xffff_ffff);
            self.read32(reg + 4)
        } else {
            0xffff_ffff
        };
        let size = u64::from((!mask).wrapping_add(1));
        let addr = (mask != 0 && high_mask == 0xffff_ffff)
            .then(|| allocate(size))
            .flatten();
        self.write32(reg, addr.unwrap_or(0) as u32 | (low & 0xf));
        if wide {
            self.write32(reg + 4, 0);
        }
        addr.and_then(|_| self.bar(bar))
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

/// Next free address and end of the host bridge's window, for BARs nobody assigned.
static WINDOW_NEXT: AtomicU64 = AtomicU64::new(0);
static WINDOW_END: AtomicU64 = AtomicU64::new(0);

/// `size` bytes (a power of two), naturally aligned, from the window; None when it is full.
fn allocate(size: u64) -> Option<u64> {
    let at = WINDOW_NEXT
        .load(Ordering::Relaxed)
        .checked_next_multiple_of(size)?;
    let end = at.checked_add(size)?;
    if at == 0 || end > WINDOW_END.load(Ordering::Relaxed) {
        return None;
    }
    WINDOW_NEXT.store(end, Ordering::Relaxed);
    Some(at)
}

/// Most functions remembered from one scan.
const MAX_FUNCTIONS: usize = 64;

/// Prints the ECAM window and every function of its first bus, then calls `found` with each.
/// If no function has a BAR assigned (no firmware ran), `window` (first, last address: the host
/// bridge's) is where [`Function::bar_or_assign`] may place them.
pub fn scan(ecam: &Ecam, window: Option<(u64, u64)>, mut found: impl FnMut(Function)) {
    println!(
        "testguest: pci ecam={:#x} segment={} buses={}-{}",
        ecam.base, ecam.segment, ecam.start_bus, ecam.end_bus
    );
    let none = Function {
        cfg: 0,
        bus: 0,
        dev: 0,
        func: 0,
    };
    let mut functions = [none; MAX_FUNCTIONS];
    let mut n = 0;
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
            if n < MAX_FUNCTIONS {
                functions[n] = f;
                n += 1;
            }
            if func == 0 && f.read8(HEADER_TYPE) & 0x80 == 0 {
                break; // single-function device
            }
        }
    }
    let functions = &functions[..n];
    // BARs of a type-0 header: 6; of a bridge (type 1): 2.
    let bars = |f: &Function| {
        if f.read8(HEADER_TYPE) & 0x7f == 0 {
            6u16
        } else {
            2
        }
    };
    let assigned = functions
        .iter()
        .any(|f| (0..bars(f)).any(|b| f.read32(BAR0 + 4 * b) & !0xf != 0));
    if let (false, Some((first, last))) = (assigned, window) {
        WINDOW_NEXT.store(first, Ordering::Relaxed);
        WINDOW_END.store(last + 1, Ordering::Relaxed);
    }
    for f in functions {
        found(*f);
    }
}
