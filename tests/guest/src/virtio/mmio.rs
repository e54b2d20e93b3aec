//! virtio-mmio, modern (version 2): windows from the DSDT's `LNRO0005` devices and from
//! `virtio_mmio.device=SIZE@ADDR:IRQ` on the command line, each with its own GSI. Every device's
//! line is routed to [`VIRTIO_VECTOR`]; that handler acknowledges InterruptStatus at each device
//! (which also lowers a level-triggered line).

use core::fmt;

use super::Transport;
use crate::acpi::AcpiInfo;
use crate::interrupts::{self, VIRTIO_VECTOR};
use crate::io::{mmio_read8, mmio_read32, mmio_write32};
use crate::println;

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_AVAIL: u64 = 0x090;
const QUEUE_USED: u64 = 0x0a0;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

/// Where a window was found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Dsdt,
    Cmdline,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Dsdt => "dsdt",
            Source::Cmdline => "cmdline",
        }
    }
}

/// A virtio-mmio window and its interrupt line.
#[derive(Clone, Copy)]
pub struct Mmio {
    pub base: u64,
    pub gsi: u32,
    level: bool,
    active_low: bool,
    pub source: Source,
}

impl Mmio {
    fn reg(&self, off: u64) -> u32 {
        mmio_read32(self.base + off)
    }

    fn set_reg(&self, off: u64, v: u32) {
        mmio_write32(self.base + off, v);
    }

    /// The device id of a modern window, None for an empty slot or another version.
    fn device_id(&self) -> Option<u32> {
        if self.reg(MAGIC) != 0x7472_6976 {
            return None;
        }
        let (version, id) = (self.reg(VERSION), self.reg(DEVICE_ID));
        if id == 0 {
            return None; // an empty transport slot (QEMU microvm lists all of them)
        }
        if version != 2 {
            println!(
                "testguest: virtio base={:#x} version={version}: only modern (2) is supported",
                self.base
            );
            return None;
        }
        Some(id)
    }
}

/// Parses `virtio_mmio.device=<size>@<addr>:<irq>` tokens.
fn cmdline_devices(cmdline: &str, mut f: impl FnMut(u64, u32)) {
    for token in cmdline.split_ascii_whitespace() {
        let Some(spec) = token.strip_prefix("virtio_mmio.device=") else {
            continue;
        };
        let Some((_, rest)) = spec.split_once('@') else {
            continue;
        };
        let Some((addr, irq)) = rest.split_once(':') else {
            continue;
        };
        let irq = irq.split(':').next().unwrap_or("");
        let addr = addr.trim_start_matches("0x");
        if let (Ok(addr), Ok(irq)) = (u64::from_str_radix(addr, 16), irq.parse::<u32>()) {
            f(addr, irq);
        }
    }
}

/// Calls `found` with every modern window of the DSDT and the command line (the same window
/// found twice counts once) and its device id.
pub fn discover(acpi: Option<&AcpiInfo>, cmdline: &str, mut found: impl FnMut(Mmio, u32)) {
    let none = Mmio {
        base: 0,
        gsi: 0,
        level: false,
        active_low: false,
        source: Source::Dsdt,
    };
    let mut windows = [none; 40];
    let mut n = 0;
    let mut add = |m: Mmio| {
        if n < windows.len() && !windows[..n].iter().any(|w| w.base == m.base) {
            windows[n] = m;
            n += 1;
        }
    };
    if let Some(a) = acpi {
        for m in a.mmio_devices() {
            let (level, active_low) = (m.level, m.active_low);
            add(Mmio {
                base: m.base,
                gsi: m.gsi,
                level,
                active_low,
                source: Source::Dsdt,
            });
        }
    }
    cmdline_devices(cmdline, |base, gsi| {
        add(Mmio {
            base,
            gsi,
            level: false,
            active_low: false,
            source: Source::Cmdline,
        })
    });
    for m in &windows[..n] {
        if let Some(id) = m.device_id() {
            found(*m, id);
        }
    }
}

impl Transport for Mmio {
    fn status(&self) -> u8 {
        self.reg(STATUS) as u8
    }

    fn set_status(&self, status: u8) {
        self.set_reg(STATUS, u32::from(status));
    }

    fn device_features(&self) -> u64 {
        self.set_reg(DEVICE_FEATURES_SEL, 0);
        let low = self.reg(DEVICE_FEATURES);
        self.set_reg(DEVICE_FEATURES_SEL, 1);
        u64::from(low) | (u64::from(self.reg(DEVICE_FEATURES)) << 32)
    }

    fn set_driver_features(&self, features: u64) {
        self.set_reg(DRIVER_FEATURES_SEL, 0);
        self.set_reg(DRIVER_FEATURES, features as u32);
        self.set_reg(DRIVER_FEATURES_SEL, 1);
        self.set_reg(DRIVER_FEATURES, (features >> 32) as u32);
    }

    /// Routes the line now: the device cannot interrupt before DRIVER_OK.
    fn enable_interrupts(&mut self, _slot: usize, _queues: usize) -> Result<(), &'static str> {
        interrupts::route(self.gsi, VIRTIO_VECTOR, self.level, self.active_low);
        Ok(())
    }

    fn queue_max(&self, qi: u16) -> u16 {
        self.set_reg(QUEUE_SEL, u32::from(qi));
        self.reg(QUEUE_NUM_MAX).min(0xffff) as u16
    }

    fn queue_enable(&mut self, qi: u16, size: u16, rings: [u64; 3]) -> Result<(), &'static str> {
        self.set_reg(QUEUE_SEL, u32::from(qi));
        self.set_reg(QUEUE_NUM, u32::from(size));
        for (off, addr) in [QUEUE_DESC, QUEUE_AVAIL, QUEUE_USED].into_iter().zip(rings) {
            self.set_reg(off, addr as u32);
            self.set_reg(off + 4, (addr >> 32) as u32);
        }
        self.set_reg(QUEUE_READY, 1);
        Ok(())
    }

    fn notify(&self, qi: u16) {
        self.set_reg(QUEUE_NOTIFY, u32::from(qi));
    }

    fn config_generation(&self) -> u32 {
        self.reg(CONFIG_GENERATION)
    }

    fn config8(&self, off: u64) -> u8 {
        mmio_read8(self.base + CONFIG + off)
    }

    fn config32(&self, off: u64) -> u32 {
        self.reg(CONFIG + off)
    }

    fn interrupt_vectors(&self) -> usize {
        0
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "base={:#x} gsi={} via={}",
            self.base,
            self.gsi,
            self.source.name()
        )
    }
}

impl Mmio {
    /// Acknowledges a pending interrupt at the device; whether there was one.
    pub fn acknowledge(&self) -> bool {
        let status = self.reg(INTERRUPT_STATUS);
        if status != 0 {
            self.set_reg(INTERRUPT_ACK, status);
        }
        status != 0
    }
}
