//! virtio-mmio (modern, version 2) driver side: finds the devices (ACPI `LNRO0005` devices in the
//! DSDT, and `virtio_mmio.device=SIZE@ADDR:IRQ` on the command line), brings each block device up
//! (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, one queue, DRIVER_OK) and runs its single
//! split virtqueue.
//!
//! All interrupts of all devices arrive on one vector; the handler only acknowledges them at the
//! device (InterruptStatus → InterruptACK, which also lowers a level-triggered line). Waiting for
//! a completion is `cli; check the used ring; sti; hlt`, so an idle guest never spins.

use core::sync::atomic::{Ordering, fence};

use crate::acpi::AcpiInfo;
use crate::interrupts::{self, VIRTIO_VECTOR};
use crate::io::{cli, mmio_read32, mmio_write32, sti, sti_hlt};
use crate::println;

/// Most devices driven.
pub const MAX_DEVICES: usize = 8;
/// Queue size used (the device may offer more).
pub const QUEUE_SIZE: u16 = 128;

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
pub const CONFIG: u64 = 0x100;

const S_ACKNOWLEDGE: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 0x80;

/// Feature bit VIRTIO_F_VERSION_1 (in the high word).
const F_VERSION_1_HIGH: u32 = 1;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// Where a device was found.
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

/// One virtqueue's memory: descriptor table (2 KiB), available ring, used ring (own page).
#[repr(C, align(4096))]
struct QueueMem {
    desc: [u64; 2 * QUEUE_SIZE as usize],
    avail: [u16; 3 + QUEUE_SIZE as usize],
    _pad: [u8; 4096 - 16 * QUEUE_SIZE as usize - 2 * (3 + QUEUE_SIZE as usize)],
    used: [u32; 1 + 2 * QUEUE_SIZE as usize + 1],
}

static mut QUEUES: [QueueMem; MAX_DEVICES] = [const {
    QueueMem {
        desc: [0; 2 * QUEUE_SIZE as usize],
        avail: [0; 3 + QUEUE_SIZE as usize],
        _pad: [0; 4096 - 16 * QUEUE_SIZE as usize - 2 * (3 + QUEUE_SIZE as usize)],
        used: [0; 1 + 2 * QUEUE_SIZE as usize + 1],
    }
}; MAX_DEVICES];

/// A device that answered with the virtio magic.
#[derive(Clone, Copy)]
pub struct Device {
    pub base: u64,
    pub gsi: u32,
    pub source: Source,
    pub device_id: u32,
    /// Device feature bits (low 32, high 32).
    pub features: u64,
    /// Queue size in use.
    pub qsize: u16,
    /// Our copy of the available index.
    avail_idx: u16,
    /// Used entries consumed so far.
    last_used: u16,
    slot: usize,
}

static mut DEVICES: [Option<Device>; MAX_DEVICES] = [None; MAX_DEVICES];
static mut COUNT: usize = 0;

fn reg(d: &Device, off: u64) -> u32 {
    mmio_read32(d.base + off)
}

fn set_reg(d: &Device, off: u64, v: u32) {
    mmio_write32(d.base + off, v);
}

/// Every device found, in discovery order.
pub fn devices() -> &'static mut [Option<Device>] {
    // SAFETY: only the boot CPU runs driver code; the interrupt handler reads `base` only.
    unsafe {
        let n = *(&raw const COUNT);
        &mut (&mut *(&raw mut DEVICES))[..n]
    }
}

/// Parses `virtio_mmio.device=<size>@<addr>:<irq>` tokens.
fn cmdline_devices(cmdline: &str, mut f: impl FnMut(u64, u32)) {
    for token in cmdline.split_ascii_whitespace() {
        let Some(spec) = token.strip_prefix("virtio_mmio.device=") else { continue };
        let Some((_, rest)) = spec.split_once('@') else { continue };
        let Some((addr, irq)) = rest.split_once(':') else { continue };
        let irq = irq.split(':').next().unwrap_or("");
        let addr = addr.trim_start_matches("0x");
        if let (Ok(addr), Ok(irq)) = (u64::from_str_radix(addr, 16), irq.parse::<u32>()) {
            f(addr, irq);
        }
    }
}

/// Finds the devices from the DSDT and the command line (the same window found twice counts
/// once), routes their interrupts and brings up every block device. Returns how many answered.
pub fn probe(acpi: Option<&AcpiInfo>, cmdline: &str) -> usize {
    let mut found: [(u64, u32, bool, bool, Source); 40] = [(0, 0, false, false, Source::Dsdt); 40];
    let mut n = 0;
    let mut add = |base: u64, gsi: u32, level: bool, low: bool, src: Source| {
        if n < found.len() && !found[..n].iter().any(|f| f.0 == base) {
            found[n] = (base, gsi, level, low, src);
            n += 1;
        }
    };
    if let Some(a) = acpi {
        for m in a.mmio_devices() {
            add(m.base, m.gsi, m.level, m.active_low, Source::Dsdt);
        }
    }
    cmdline_devices(cmdline, |base, gsi| add(base, gsi, false, false, Source::Cmdline));
    let mut count = 0;
    for &(base, gsi, level, low, source) in &found[..n] {
        if mmio_read32(base + MAGIC) != 0x7472_6976 {
            continue;
        }
        let version = mmio_read32(base + VERSION);
        let device_id = mmio_read32(base + DEVICE_ID);
        if device_id == 0 {
            continue; // an empty transport slot (QEMU microvm lists all of them)
        }
        if version != 2 {
            println!("testguest: virtio base={base:#x} version={version}: only modern (2) is supported");
            continue;
        }
        if count == MAX_DEVICES {
            break;
        }
        let mut dev = Device {
            base,
            gsi,
            source,
            device_id,
            features: 0,
            qsize: 0,
            avail_idx: 0,
            last_used: 0,
            slot: count,
        };
        if device_id == 2 && !start(&mut dev) {
            println!("testguest: virtio base={base:#x} failed to start");
            continue;
        }
        interrupts::route(gsi, VIRTIO_VECTOR, level, low);
        // SAFETY: single-threaded set-up; slot `count` is ours.
        unsafe {
            (*(&raw mut DEVICES))[count] = Some(dev);
            *(&raw mut COUNT) = count + 1;
        }
        count += 1;
    }
    count
}

/// The driver's initialisation sequence (virtio 1.2 §3.1.1) with one queue.
fn start(d: &mut Device) -> bool {
    set_reg(d, STATUS, 0);
    set_reg(d, STATUS, S_ACKNOWLEDGE);
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER);
    set_reg(d, DEVICE_FEATURES_SEL, 0);
    let low = reg(d, DEVICE_FEATURES);
    set_reg(d, DEVICE_FEATURES_SEL, 1);
    let high = reg(d, DEVICE_FEATURES);
    d.features = u64::from(low) | (u64::from(high) << 32);
    if high & F_VERSION_1_HIGH == 0 {
        set_reg(d, STATUS, S_FAILED);
        return false;
    }
    set_reg(d, DRIVER_FEATURES_SEL, 0);
    set_reg(d, DRIVER_FEATURES, 0);
    set_reg(d, DRIVER_FEATURES_SEL, 1);
    set_reg(d, DRIVER_FEATURES, F_VERSION_1_HIGH);
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if reg(d, STATUS) & S_FEATURES_OK == 0 {
        set_reg(d, STATUS, S_FAILED);
        return false;
    }
    set_reg(d, QUEUE_SEL, 0);
    let max = reg(d, QUEUE_NUM_MAX);
    if max == 0 {
        set_reg(d, STATUS, S_FAILED);
        return false;
    }
    d.qsize = QUEUE_SIZE.min(max as u16);
    let q = queue_mem(d.slot);
    let (desc, avail, used) = (
        q.desc.as_ptr() as u64,
        q.avail.as_ptr() as u64,
        q.used.as_ptr() as u64,
    );
    q.avail.fill(0);
    q.used.fill(0);
    set_reg(d, QUEUE_NUM, u32::from(d.qsize));
    for (off, addr) in [(QUEUE_DESC, desc), (QUEUE_AVAIL, avail), (QUEUE_USED, used)] {
        set_reg(d, off, addr as u32);
        set_reg(d, off + 4, (addr >> 32) as u32);
    }
    set_reg(d, QUEUE_READY, 1);
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    reg(d, STATUS) & S_DRIVER_OK != 0
}

fn queue_mem(slot: usize) -> &'static mut QueueMem {
    // SAFETY: each device owns its slot; only the boot CPU touches the rings.
    unsafe { &mut (*(&raw mut QUEUES))[slot] }
}

/// Reads a config-space u32 (at `CONFIG + off`) consistently (config generation check).
pub fn config32(d: &Device, off: u64) -> u32 {
    mmio_read32(d.base + CONFIG + off)
}

/// Reads a config-space u64 as two u32 halves, retried until the generation is stable.
pub fn config64(d: &Device, off: u64) -> u64 {
    loop {
        let g = reg(d, CONFIG_GENERATION);
        let v = u64::from(config32(d, off)) | (u64::from(config32(d, off + 4)) << 32);
        if reg(d, CONFIG_GENERATION) == g {
            return v;
        }
    }
}

/// Writes descriptor `i`.
pub fn set_desc(d: &Device, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let q = queue_mem(d.slot);
    let i = usize::from(i % d.qsize);
    // SAFETY: in-bounds volatile writes to our own ring memory (the device reads it).
    unsafe {
        let p = q.desc.as_mut_ptr().add(2 * i);
        p.write_volatile(addr);
        p.add(1)
            .write_volatile(u64::from(len) | (u64::from(flags) << 32) | (u64::from(next) << 48));
    }
}

/// Makes the chain starting at descriptor `head` available (does not notify).
pub fn push_avail(d: &mut Device, head: u16) {
    let q = queue_mem(d.slot);
    let slot = 2 + usize::from(d.avail_idx % d.qsize);
    // SAFETY: in-bounds volatile writes to our available ring.
    unsafe { q.avail.as_mut_ptr().add(slot).write_volatile(head) };
    d.avail_idx = d.avail_idx.wrapping_add(1);
    fence(Ordering::SeqCst);
    // SAFETY: as above (the index field).
    unsafe { q.avail.as_mut_ptr().add(1).write_volatile(d.avail_idx) };
}

/// Tells the device about new available buffers.
pub fn notify(d: &Device) {
    fence(Ordering::SeqCst);
    set_reg(d, QUEUE_NOTIFY, 0);
}

/// The next used entry (descriptor head, length), if the device returned one.
pub fn pop_used(d: &mut Device) -> Option<(u16, u32)> {
    let q = queue_mem(d.slot);
    // SAFETY: volatile reads of the used ring the device writes.
    let idx = unsafe { (q.used.as_ptr() as *const u16).add(1).read_volatile() };
    if idx == d.last_used {
        return None;
    }
    fence(Ordering::SeqCst);
    let e = 1 + 2 * usize::from(d.last_used % d.qsize);
    // SAFETY: in-bounds volatile reads of used element `e`.
    let (id, len) = unsafe { (q.used.as_ptr().add(e).read_volatile(), q.used.as_ptr().add(e + 1).read_volatile()) };
    d.last_used = d.last_used.wrapping_add(1);
    Some((id as u16, len))
}

/// Whether the device has returned buffers we have not consumed.
pub fn has_used(d: &Device) -> bool {
    let q = queue_mem(d.slot);
    // SAFETY: volatile read of the used index.
    let idx = unsafe { (q.used.as_ptr() as *const u16).add(1).read_volatile() };
    idx != d.last_used
}

/// Sleeps (`sti; hlt`) until the device has used buffers; the power button still powers off.
pub fn wait_used(d: &Device, acpi: Option<&AcpiInfo>) {
    loop {
        cli();
        crate::power::check_button(acpi);
        if has_used(d) {
            sti();
            return;
        }
        sti_hlt();
    }
}

/// Interrupt handler body: acknowledge every device's pending interrupt.
pub fn on_interrupt() {
    // SAFETY: plain copies of the device records (written only during probe, before the vector
    // is routed); the main code may hold a reference, so no reference is formed here.
    let n = unsafe { *(&raw const COUNT) };
    for i in 0..n {
        // SAFETY: as above; i < COUNT <= MAX_DEVICES.
        let Some(d) = (unsafe { (*(&raw const DEVICES))[i] }) else { continue };
        let status = reg(&d, INTERRUPT_STATUS);
        if status != 0 {
            set_reg(&d, INTERRUPT_ACK, status);
        }
    }
}
